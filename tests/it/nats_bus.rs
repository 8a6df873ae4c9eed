//! The NATS `Bus` adapter, the KV bucket workaround and the de-duplicating event consumer,
//! against a real nats-server (2.9.10 on the project's machines). Each test uses its own
//! subject prefix and stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use boxoffice::bus::nats::{EventConsumerOptions, Handling, NatsBus, NatsBusOptions};
use boxoffice::bus::{Bus, BusEvent, event_subject, new_traceparent};
use boxoffice::cluster::kv::ensure_kv_bucket;
use boxoffice::domain::Timestamp;
use bytes::Bytes;
use serde_json::json;

use crate::servers;

fn event(name: &str, seq: u64) -> BusEvent {
    BusEvent {
        subject: event_subject(name),
        id: format!("{name}:{}:{seq}", servers::unique_name("entity")),
        name: name.to_string(),
        seq,
        at: Timestamp::from_millis(1_800_000_000_000 + seq as i64),
        data: json!({"id": "abc", "version": seq, "price": 12.5, "orderId": null}),
        traceparent: new_traceparent(),
    }
}

async fn bus() -> NatsBus {
    let prefix = format!("{}.events", servers::unique_name("test"));
    NatsBus::connect(&servers::nats_url(), &prefix)
        .await
        .unwrap()
}

async fn stream_messages(bus: &NatsBus) -> u64 {
    let mut stream = bus
        .jetstream()
        .get_stream(&bus.options().stream_name)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

/// Polls `check` every 50 ms until it holds or `deadline` passes.
async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn receive(subscription: &mut boxoffice::bus::Subscription) -> BusEvent {
    tokio::time::timeout(Duration::from_secs(10), subscription.receiver.recv())
        .await
        .expect("an event within 10 s")
        .expect("subscription open")
}

#[tokio::test]
async fn publishes_on_the_stream_and_to_matching_subscribers() {
    let bus = bus().await;
    assert!(bus.is_connected());
    assert_eq!(
        bus.options().stream_name,
        bus.options()
            .subject_prefix
            .to_uppercase()
            .replace('.', "_")
    );
    let mut tickets = bus
        .subscribe_ready("boxoffice.events.ticket.*", 10)
        .await
        .unwrap();
    let created = event("ticket.created", 1);
    let ordered = event("order.created", 2);
    let updated = event("ticket.updated", 3);
    for event in [&created, &ordered, &updated] {
        bus.publish(event.clone()).await.unwrap();
    }
    assert_eq!(
        receive(&mut tickets).await,
        created,
        "the event survives the wire"
    );
    assert_eq!(
        receive(&mut tickets).await,
        updated,
        "order events do not match ticket.*"
    );
    assert_eq!(
        stream_messages(&bus).await,
        3,
        "JetStream captured all three"
    );
    assert_eq!(tickets.dropped(), 0);

    // The trait's subscription registers in the background: probe until it is in place.
    let mut everything = bus.subscribe("boxoffice.events.>", 100);
    let started = Instant::now();
    loop {
        let probe = event("expiration.complete", 9);
        bus.publish(probe.clone()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), everything.receiver.recv()).await {
            Ok(Some(received)) => {
                assert_eq!(received.name, "expiration.complete");
                break;
            }
            Ok(None) => panic!("subscription closed"),
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "the background subscription never started"
            ),
        }
    }
}

#[tokio::test]
async fn a_full_subscriber_loses_events_and_counts_them() {
    let bus = bus().await;
    let mut slow = bus.subscribe_ready("boxoffice.events.>", 1).await.unwrap();
    let events: Vec<BusEvent> = (1..=3).map(|seq| event("ticket.created", seq)).collect();
    for event in &events {
        bus.publish(event.clone()).await.unwrap();
    }
    eventually("two drops", Duration::from_secs(10), || async {
        slow.dropped() == 2
    })
    .await;
    assert_eq!(receive(&mut slow).await, events[0]);
}

#[tokio::test]
async fn the_same_event_id_twice_is_one_stream_message() {
    let bus = bus().await;
    let created = event("ticket.created", 1);
    let first = bus.publish_acknowledged(&created).await.unwrap();
    assert!(!first.duplicate);
    let again = bus.publish_acknowledged(&created).await.unwrap();
    assert!(
        again.duplicate,
        "Nats-Msg-Id de-duplicates inside the window"
    );
    assert_eq!(again.sequence, first.sequence);
    bus.publish(event("ticket.created", 2)).await.unwrap();
    assert_eq!(stream_messages(&bus).await, 2);
}

#[tokio::test]
async fn a_kv_bucket_made_by_hand_supports_cas_and_expires_by_max_age() {
    let bus = bus().await;
    let bucket = servers::unique_name("leases");
    let max_age = Duration::from_secs(1);
    let kv = ensure_kv_bucket(bus.jetstream(), &bucket, 5, max_age)
        .await
        .unwrap();
    let mut stream = bus
        .jetstream()
        .get_stream(format!("KV_{bucket}"))
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().config.max_age, max_age);
    // Idempotent: binding again works.
    ensure_kv_bucket(bus.jetstream(), &bucket, 5, max_age)
        .await
        .unwrap();

    let first = kv
        .create("ticket.7", Bytes::from_static(b"node-a"))
        .await
        .unwrap();
    let taken = kv
        .create("ticket.7", Bytes::from_static(b"node-b"))
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), CreateErrorKind::AlreadyExists);
    let renewed = kv
        .update("ticket.7", Bytes::from_static(b"node-a"), first)
        .await
        .unwrap();
    assert!(renewed > first);
    let stale = kv
        .update("ticket.7", Bytes::from_static(b"node-b"), first)
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), UpdateErrorKind::WrongLastRevision);
    let entry = kv.entry("ticket.7").await.unwrap().unwrap();
    assert_eq!(
        (entry.value.as_ref(), entry.revision),
        (&b"node-a"[..], renewed)
    );

    // Waiting out the bucket's max_age (the behaviour under test): the lease is gone, and a
    // new owner can take it.
    eventually("the key to expire", Duration::from_secs(15), || async {
        kv.entry("ticket.7").await.unwrap().is_none()
    })
    .await;
    let taken_over = kv
        .create("ticket.7", Bytes::from_static(b"node-b"))
        .await
        .unwrap();
    assert!(
        taken_over > renewed,
        "revisions keep growing: a fencing epoch"
    );

    // New limits for an existing bucket are applied, and its keys stay.
    let longer = Duration::from_secs(30);
    let kv = ensure_kv_bucket(bus.jetstream(), &bucket, 3, longer)
        .await
        .unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(
        (config.max_age, config.max_messages_per_subject),
        (longer, 3)
    );
    assert_eq!(
        kv.get("ticket.7").await.unwrap().as_deref(),
        Some(&b"node-b"[..])
    );

    assert!(
        ensure_kv_bucket(bus.jetstream(), "bad.name", 1, max_age)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_consumer_hands_a_redelivered_event_to_its_handler_once() {
    let bus = bus().await;
    let durable = servers::unique_name("orders");
    let ack_wait = Duration::from_secs(1);
    let mut options = EventConsumerOptions::new(&durable, "boxoffice.events.order.created");
    options.ack_wait = ack_wait;
    let mut consumer = bus.event_consumer(options).await.unwrap();
    let ordered = event("order.created", 1);
    bus.publish(ordered.clone()).await.unwrap();
    bus.publish(event("ticket.created", 2)).await.unwrap();

    let handled = Arc::new(AtomicUsize::new(0));
    let jetstream = bus.jetstream().clone();
    let stream_name = bus.options().stream_name.clone();
    let watched = durable.clone();
    let outcome = consumer
        .handle_next(Duration::from_secs(10), |received| {
            let handled = handled.clone();
            let expected = ordered.clone();
            let durable = watched;
            async move {
                assert_eq!(received, expected);
                handled.fetch_add(1, Ordering::SeqCst);
                // Outlast ack_wait: the server redelivers the unacknowledged message meanwhile
                // (the consumer's delivery counter reaches 2).
                let stream = jetstream.get_stream(&stream_name).await.unwrap();
                eventually("the redelivery", Duration::from_secs(15), || async {
                    let info = stream.consumer_info(&durable).await.unwrap();
                    info.delivered.consumer_sequence >= 2
                })
                .await;
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
    assert_eq!(outcome, Handling::Handled);

    let redelivered = consumer
        .handle_next(Duration::from_secs(10), |_| async {
            Err::<(), String>("a duplicate must not reach the handler".into())
        })
        .await
        .unwrap();
    assert_eq!(redelivered, Handling::Duplicate);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!(consumer.duplicates_skipped(), 1);

    // The filter holds ONE subject: the ticket event never comes.
    let idle = consumer
        .handle_next(ack_wait * 2, |_| async {
            Err::<(), String>("filtered out".into())
        })
        .await
        .unwrap();
    assert_eq!(idle, Handling::Idle);
    let stream = bus
        .jetstream()
        .get_stream(&bus.options().stream_name)
        .await
        .unwrap();
    let info = stream.consumer_info(&durable).await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "everything was acknowledged");
}

#[tokio::test]
async fn the_consumer_skips_a_re_publication_after_the_duplicate_window() {
    let prefix = format!("{}.events", servers::unique_name("test"));
    let mut options = NatsBusOptions::for_prefix(&prefix);
    options.duplicate_window = Duration::from_secs(1);
    let bus = NatsBus::connect_with(&servers::nats_url(), options)
        .await
        .unwrap();
    let expired = event("expiration.complete", 1);
    assert!(!bus.publish_acknowledged(&expired).await.unwrap().duplicate);
    // Waiting out the duplicate window (the behaviour under test): the relay re-publishes the
    // same event id until the stream keeps it as a second message.
    let started = Instant::now();
    while bus.publish_acknowledged(&expired).await.unwrap().duplicate {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "window never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stream_messages(&bus).await, 2);

    let mut consumer = bus
        .event_consumer(EventConsumerOptions::new(
            &servers::unique_name("expiry"),
            "boxoffice.events.expiration.complete",
        ))
        .await
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let handled = handled.clone();
        outcomes.push(
            consumer
                .handle_next(Duration::from_secs(10), |_| async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                })
                .await
                .unwrap(),
        );
    }
    assert_eq!(outcomes, vec![Handling::Handled, Handling::Duplicate]);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_handler_gets_the_event_again() {
    let bus = bus().await;
    let mut options = EventConsumerOptions::new(
        &servers::unique_name("payments"),
        "boxoffice.events.payment.created",
    );
    options.retry_delay = Duration::from_millis(100);
    let mut consumer = bus.event_consumer(options).await.unwrap();
    let paid = event("payment.created", 1);
    bus.publish(paid.clone()).await.unwrap();
    let failed = consumer
        .handle_next(Duration::from_secs(10), |_| async {
            Err::<(), String>("database down".into())
        })
        .await
        .unwrap();
    assert_eq!(failed, Handling::Failed);
    let retried = consumer
        .handle_next(Duration::from_secs(10), |received| async move {
            assert_eq!(received.id, paid.id);
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(
        retried,
        Handling::Handled,
        "a failure is not remembered as handled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_together_all_get_the_stream_and_the_buckets() {
    // Cluster nodes start side by side and each makes the event stream and the KV buckets if
    // they are missing: whoever loses the race must bind the winner's, not fail to start. The
    // race is narrow, so it is run a few times, each with new names.
    let url = servers::nats_url();
    for _ in 0..10 {
        let prefix = format!("{}.events", servers::unique_name("race"));
        let connects = (0..6).map(|_| NatsBus::connect(&url, &prefix));
        let buses: Vec<NatsBus> = futures::future::join_all(connects)
            .await
            .into_iter()
            .map(|bus| bus.expect("every process gets the stream"))
            .collect();
        let bucket = servers::unique_name("race");
        let ensures = buses.iter().map(|bus| {
            let jetstream = bus.jetstream().clone();
            let bucket = bucket.clone();
            tokio::spawn(async move {
                ensure_kv_bucket(&jetstream, &bucket, 1, Duration::from_secs(3)).await
            })
        });
        for kv in futures::future::join_all(ensures).await {
            kv.unwrap().expect("every process gets the bucket");
        }
    }
}
