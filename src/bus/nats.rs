//! The cluster `Bus`: NATS, with JetStream as the transport of domain events.
//!
//! Owns the events stream (created if missing), the wire format of an event on NATS and the
//! de-duplicating consumer helper. An event is published on `<subject prefix>.<name>` with the
//! contract's payload as JSON, `Nats-Msg-Id` = the event id (so the stream drops a re-publication
//! inside its duplicate window), `traceparent`, and `BoxOffice-Seq` / `BoxOffice-At` (outbox
//! sequence and time); `publish` returns once JetStream acknowledged it. Subscribers of the `Bus`
//! trait get a core NATS subscription (best effort, like the memory bus); whatever must not be
//! missed reads the stream through `EventConsumer`, which de-duplicates by event id beyond the
//! duplicate window (rule 10). It must not be the durable record of events: the store's outbox
//! is, and the relay re-publishes from it. Only nats-server 2.9 features are used (rule 3).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, stream};
use async_nats::{HeaderMap, connection::State};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lru::LruCache;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Bus, BusError, BusEvent, EVENTS_PREFIX, Subscription};
use crate::domain::Timestamp;

/// The header carrying the event id; JetStream de-duplicates on it.
pub const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";
/// The W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The header carrying the event's outbox sequence number.
pub const SEQ_HEADER: &str = "BoxOffice-Seq";
/// The header carrying when the event was committed (Unix milliseconds).
pub const AT_HEADER: &str = "BoxOffice-At";

/// The contract's stream name for the default subject prefix.
pub const DEFAULT_STREAM: &str = "BOXOFFICE_EVENTS";
/// How long the stream keeps events (the contract: 7 days).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How long the stream remembers message ids to drop re-publications.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Where the bus publishes and how long the stream keeps what it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsBusOptions {
    /// Replaces `boxoffice.events` on the wire (tests use a unique one so they never collide).
    pub subject_prefix: String,
    /// The JetStream stream capturing `<subject_prefix>.>`.
    pub stream_name: String,
    pub max_age: Duration,
    pub duplicate_window: Duration,
}

impl NatsBusOptions {
    /// The contract's defaults for `subject_prefix`; the stream is named after the prefix
    /// (upper case, other characters as `_`): `boxoffice.events` gives `BOXOFFICE_EVENTS`.
    pub fn for_prefix(subject_prefix: &str) -> NatsBusOptions {
        let stream_name = subject_prefix
            .chars()
            .map(|character| {
                if character.is_ascii_alphanumeric() {
                    character.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        NatsBusOptions {
            subject_prefix: subject_prefix.to_string(),
            stream_name,
            max_age: DEFAULT_MAX_AGE,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }
}

impl Default for NatsBusOptions {
    fn default() -> Self {
        NatsBusOptions::for_prefix(EVENTS_PREFIX)
    }
}

/// Maps the bus's subjects (`boxoffice.events.<name>`) to the wire's (`<prefix>.<name>`).
#[derive(Clone, Debug)]
struct SubjectMap {
    prefix: String,
}

impl SubjectMap {
    fn to_wire(&self, subject: &str) -> Result<String, BusError> {
        subject
            .strip_prefix(EVENTS_PREFIX)
            .filter(|rest| rest.starts_with('.'))
            .map(|rest| format!("{}{rest}", self.prefix))
            .ok_or_else(|| BusError::Unavailable(format!("{subject} is not under {EVENTS_PREFIX}")))
    }

    fn to_bus(&self, subject: &str) -> Option<String> {
        subject
            .strip_prefix(self.prefix.as_str())
            .filter(|rest| rest.starts_with('.'))
            .map(|rest| format!("{EVENTS_PREFIX}{rest}"))
    }
}

/// Publishes events on JetStream and subscribes on core NATS.
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    options: NatsBusOptions,
    subjects: SubjectMap,
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

impl NatsBus {
    /// Connects to `url` and ensures the events stream for `subject_prefix` exists
    /// (`boxoffice.events` in production: stream `BOXOFFICE_EVENTS`).
    pub async fn connect(url: &str, subject_prefix: &str) -> Result<NatsBus, BusError> {
        NatsBus::connect_with(url, NatsBusOptions::for_prefix(subject_prefix)).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(url: &str, options: NatsBusOptions) -> Result<NatsBus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("boxoffice")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|error| BusError::Unavailable(format!("NATS unreachable: {error}")))?;
        let jetstream = jetstream::new(client.clone());
        let config = stream::Config {
            name: options.stream_name.clone(),
            subjects: vec![format!("{}.>", options.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: options.max_age,
            duplicate_window: options.duplicate_window,
            num_replicas: 1,
            ..Default::default()
        };
        ensure_stream(&jetstream, config).await.map_err(|error| {
            BusError::Unavailable(format!(
                "cannot create stream {}: {error}",
                options.stream_name
            ))
        })?;
        tracing::info!(stream = %options.stream_name, prefix = %options.subject_prefix, "nats bus ready");
        let subjects = SubjectMap {
            prefix: options.subject_prefix.clone(),
        };
        Ok(NatsBus {
            client,
            jetstream,
            options,
            subjects,
        })
    }

    /// The NATS connection (shared with the cluster node's routing).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (for KV buckets and stream inspection).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The options the bus runs with.
    pub fn options(&self) -> &NatsBusOptions {
        &self.options
    }

    /// Publishes one event and returns JetStream's acknowledgement (`duplicate` is true when
    /// the stream already had this event id inside its duplicate window).
    pub async fn publish_acknowledged(
        &self,
        event: &BusEvent,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        let subject = self.subjects.to_wire(&event.subject)?;
        let payload = serde_json::to_vec(&event.data).map_err(unavailable)?;
        let message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(&event.id)
            .header(TRACEPARENT_HEADER, event.traceparent.as_str())
            .header(SEQ_HEADER, event.seq.to_string().as_str())
            .header(AT_HEADER, event.at.millis().to_string().as_str());
        let acknowledgement = self
            .jetstream
            .send_publish(subject, message)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        if acknowledgement.duplicate {
            tracing::debug!(event_id = %event.id, "event already in the stream");
        }
        Ok(acknowledgement)
    }

    /// Subscribes like `Bus::subscribe`, but returns only once the subscription is registered
    /// with this client's connection, so anything published after it returns is delivered.
    pub async fn subscribe_ready(
        &self,
        pattern: &str,
        capacity: usize,
    ) -> Result<Subscription, BusError> {
        let wire = self.subjects.to_wire(pattern)?;
        let subscriber = self.client.subscribe(wire).await.map_err(unavailable)?;
        self.client.flush().await.map_err(unavailable)?;
        Ok(self.forward(subscriber, capacity))
    }

    fn forward(&self, subscriber: async_nats::Subscriber, capacity: usize) -> Subscription {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(forward_events(
            subscriber,
            self.subjects.clone(),
            sender,
            dropped.clone(),
        ));
        Subscription { receiver, dropped }
    }

    /// Binds a de-duplicating durable consumer of the events stream (created if missing).
    pub async fn event_consumer(
        &self,
        options: EventConsumerOptions,
    ) -> Result<EventConsumer, BusError> {
        let filter_subject = self.subjects.to_wire(&options.subject)?;
        let stream = self
            .jetstream
            .get_stream(&self.options.stream_name)
            .await
            .map_err(unavailable)?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &options.durable_name,
                pull::Config {
                    durable_name: Some(options.durable_name.clone()),
                    // One filter subject: `filter_subjects` is silently ignored by 2.9.
                    filter_subject,
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        let capacity = NonZeroUsize::new(options.remembered_ids).unwrap_or(NonZeroUsize::MIN);
        Ok(EventConsumer {
            messages,
            seen: LruCache::new(capacity),
            subjects: self.subjects.clone(),
            retry_delay: options.retry_delay,
            duplicates: 0,
        })
    }
}

/// Hands core NATS messages to a bounded channel; never blocks on a slow subscriber.
async fn forward_events(
    mut subscriber: async_nats::Subscriber,
    subjects: SubjectMap,
    sender: mpsc::Sender<BusEvent>,
    dropped: Arc<AtomicU64>,
) {
    loop {
        let message = tokio::select! {
            () = sender.closed() => break,
            message = subscriber.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let event = match decode(
            &subjects,
            &message.subject,
            message.headers.as_ref(),
            &message.payload,
        ) {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(subject = %message.subject, reason = %reason, "undecodable event dropped");
                dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match sender.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    if let Err(error) = subscriber.unsubscribe().await {
        tracing::debug!(error = %error, "unsubscribing failed");
    }
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str())
}

/// Rebuilds a `BusEvent` from its wire form.
fn decode(
    subjects: &SubjectMap,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<BusEvent, String> {
    let bus_subject = subjects
        .to_bus(subject)
        .ok_or_else(|| format!("subject {subject} is outside the bus prefix"))?;
    let name = bus_subject
        .strip_prefix(EVENTS_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or_default()
        .to_string();
    let id = header(headers, MESSAGE_ID_HEADER)
        .ok_or("no Nats-Msg-Id header")?
        .to_string();
    let seq = header(headers, SEQ_HEADER)
        .and_then(|seq| seq.parse().ok())
        .ok_or("no BoxOffice-Seq header")?;
    let at = header(headers, AT_HEADER)
        .and_then(|at| at.parse().ok())
        .map(Timestamp::from_millis)
        .ok_or("no BoxOffice-At header")?;
    let traceparent = header(headers, TRACEPARENT_HEADER)
        .unwrap_or_default()
        .to_string();
    let data = serde_json::from_slice(payload).map_err(|error| error.to_string())?;
    Ok(BusEvent {
        subject: bus_subject,
        id,
        name,
        seq,
        at,
        data,
        traceparent,
    })
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        self.publish_acknowledged(&event).await.map(|_| ())
    }

    /// Best effort, as core NATS is: the subscription is registered in the background, so an
    /// event published before it is in place is not seen (use `subscribe_ready` to wait).
    fn subscribe(&self, pattern: &str, capacity: usize) -> Subscription {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let subscription = Subscription {
            receiver,
            dropped: dropped.clone(),
        };
        let wire = match self.subjects.to_wire(pattern) {
            Ok(wire) => wire,
            Err(error) => {
                tracing::warn!(pattern, error = %error, "subscription outside the bus");
                return subscription;
            }
        };
        let client = self.client.clone();
        let subjects = self.subjects.clone();
        tokio::spawn(async move {
            match client.subscribe(wire).await {
                Ok(subscriber) => forward_events(subscriber, subjects, sender, dropped).await,
                Err(error) => tracing::warn!(error = %error, "subscribing failed"),
            }
        });
        subscription
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

/// Which events an `EventConsumer` reads and how it remembers them.
#[derive(Clone, Debug)]
pub struct EventConsumerOptions {
    /// The durable consumer's name: consumers with one name share the work.
    pub durable_name: String,
    /// ONE bus subject or pattern (`boxoffice.events.order.created`); 2.9 has no multi-filter.
    pub subject: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// How many handled event ids are remembered (least recently seen forgotten first); keep
    /// it above the events a consumer handles in `ack_wait` plus the duplicate window.
    pub remembered_ids: usize,
    /// How long the server waits before redelivering an event the handler failed.
    pub retry_delay: Duration,
}

impl EventConsumerOptions {
    /// Options with a 30 s ack wait, 100 000 remembered ids and a 1 s retry delay.
    pub fn new(durable_name: &str, subject: &str) -> EventConsumerOptions {
        EventConsumerOptions {
            durable_name: durable_name.to_string(),
            subject: subject.to_string(),
            ack_wait: Duration::from_secs(30),
            remembered_ids: 100_000,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// What `EventConsumer::handle_next` did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// A new event: the handler took it and it was acknowledged.
    Handled,
    /// An event id handled before (a redelivery or a re-publication): acknowledged, skipped.
    Duplicate,
    /// The handler failed: the server redelivers it after the retry delay.
    Failed,
    /// Not a BoxOffice event: terminated, never redelivered.
    Rejected,
    /// Nothing arrived in time.
    Idle,
}

/// A durable pull consumer with explicit acks that hands each event id to its handler once per
/// process, whether it comes back as a redelivery (an ack lost or late) or as a re-publication
/// after the stream's duplicate window. Handlers must still be idempotent: after a restart the
/// memory is empty.
pub struct EventConsumer {
    messages: pull::Stream,
    seen: LruCache<String, ()>,
    subjects: SubjectMap,
    retry_delay: Duration,
    duplicates: u64,
}

impl EventConsumer {
    /// Takes the next message (waiting at most `wait`) and hands it to `handler` unless its
    /// event id was handled before.
    pub async fn handle_next<F, Fut, E>(
        &mut self,
        wait: Duration,
        handler: F,
    ) -> Result<Handling, BusError>
    where
        F: FnOnce(BusEvent) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let message = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => return Ok(Handling::Idle),
            Ok(None) => return Err(BusError::Unavailable("consumer closed".into())),
            Ok(Some(Err(error))) => return Err(unavailable(error)),
            Ok(Some(Ok(message))) => message,
        };
        let event = match decode(
            &self.subjects,
            &message.subject,
            message.headers.as_ref(),
            &message.payload,
        ) {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(subject = %message.subject, reason = %reason, "undecodable event terminated");
                message.ack_with(AckKind::Term).await.map_err(unavailable)?;
                return Ok(Handling::Rejected);
            }
        };
        if self.seen.get(&event.id).is_some() {
            self.duplicates += 1;
            tracing::debug!(event_id = %event.id, "duplicate event skipped");
            message.ack().await.map_err(unavailable)?;
            return Ok(Handling::Duplicate);
        }
        let id = event.id.clone();
        match handler(event).await {
            Ok(()) => {
                // Remember first: if the ack is lost, the redelivery is recognised.
                self.seen.put(id, ());
                message.ack().await.map_err(unavailable)?;
                Ok(Handling::Handled)
            }
            Err(error) => {
                tracing::warn!(event_id = %id, error = %error, "event handler failed; redelivering later");
                message
                    .ack_with(AckKind::Nak(Some(self.retry_delay)))
                    .await
                    .map_err(unavailable)?;
                Ok(Handling::Failed)
            }
        }
    }

    /// Handles events until `shutdown` is cancelled.
    pub async fn run<F, Fut, E>(&mut self, shutdown: CancellationToken, mut handler: F)
    where
        F: FnMut(BusEvent) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        while !shutdown.is_cancelled() {
            let handled = tokio::select! {
                () = shutdown.cancelled() => return,
                handled = self.handle_next(Duration::from_secs(1), &mut handler) => handled,
            };
            if let Err(error) = handled {
                tracing::warn!(error = %error, "event consumer failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// How many duplicates were skipped so far.
    pub fn duplicates_skipped(&self) -> u64 {
        self.duplicates
    }
}

/// Binds the stream `config` names, creating it when it is missing. Processes that start
/// together race to create it, and nats-server 2.9.10 can answer the loser's create with an
/// error ("subjects overlap with an existing stream", 10065) instead of the stream: after a
/// failed create, the stream the winner made is bound by name.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, String> {
    let name = config.name.clone();
    match jetstream.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(error) => jetstream
            .get_stream(&name)
            .await
            .map_err(|_| error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_prefix() {
        assert_eq!(NatsBusOptions::default().stream_name, DEFAULT_STREAM);
        assert_eq!(
            NatsBusOptions::for_prefix("t_1a.events").stream_name,
            "T_1A_EVENTS"
        );
    }

    #[test]
    fn subjects_map_both_ways() {
        let map = SubjectMap {
            prefix: "test1.events".into(),
        };
        assert_eq!(
            map.to_wire("boxoffice.events.ticket.created").unwrap(),
            "test1.events.ticket.created"
        );
        assert_eq!(map.to_wire("boxoffice.events.>").unwrap(), "test1.events.>");
        assert!(map.to_wire("boxoffice.eventsx.a").is_err());
        assert!(map.to_wire("other.subject").is_err());
        assert_eq!(
            map.to_bus("test1.events.order.created").as_deref(),
            Some("boxoffice.events.order.created")
        );
        assert_eq!(map.to_bus("test1.eventsx"), None);
    }
}
