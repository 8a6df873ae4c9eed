//! The `Bus` port: carries the contract's domain events to whoever subscribes.
//!
//! Owns the subject scheme (`boxoffice.events.<name>`) and the envelope every published event
//! travels in (event id for de-duplication, W3C `traceparent`). It must not be the durable
//! record of events: the store's outbox is, and the relay re-publishes from it after a crash, so
//! delivery is at least once and subscribers de-duplicate by event id.

mod memory;
pub mod nats;

pub use memory::MemoryBus;
pub use nats::NatsBus;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::domain::Timestamp;

/// The subject prefix of domain events.
pub const EVENTS_PREFIX: &str = "boxoffice.events";

/// The subject an event named `name` is published on.
pub fn event_subject(name: &str) -> String {
    format!("{EVENTS_PREFIX}.{name}")
}

/// One published event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BusEvent {
    pub subject: String,
    /// The event's unique id (`Nats-Msg-Id` on NATS).
    pub id: String,
    pub name: String,
    /// The outbox sequence number.
    pub seq: u64,
    pub at: Timestamp,
    pub data: Value,
    /// W3C trace context.
    pub traceparent: String,
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Publishes events and hands them to subscribers.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes one event; returns once the bus has accepted it.
    async fn publish(&self, event: BusEvent) -> Result<(), BusError>;

    /// Subscribes to subjects matching `pattern` (`*` matches one token, `>` the rest). A
    /// subscriber that falls more than `capacity` events behind loses the excess, and is told
    /// how many through `Subscription::dropped`.
    fn subscribe(&self, pattern: &str, capacity: usize) -> Subscription;

    /// True while the bus can publish (for `/readyz`).
    fn is_connected(&self) -> bool;

    /// Whether a published event can reach anyone now. Only an in-process bus without a
    /// subscriber says no, and the relay then skips what it would have published.
    fn has_subscribers(&self) -> bool {
        true
    }
}

/// A stream of events matching a pattern.
pub struct Subscription {
    pub receiver: mpsc::Receiver<BusEvent>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Subscription {
    /// How many events were dropped because this subscriber was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A fresh W3C trace context (`00-<trace id>-<span id>-01`).
pub fn new_traceparent() -> String {
    // One per relayed event: hex digits written directly, not through the formatter.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let random: [u8; 24] = rand::random();
    let mut text = String::with_capacity(55);
    text.push_str("00-");
    for (at, byte) in random.iter().enumerate() {
        if at == 16 {
            text.push('-');
        }
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text.push_str("-01");
    text
}

/// True when `subject` matches `pattern` in NATS's token syntax.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match token {
            ">" => return subject_tokens.next().is_some(),
            "*" => {
                if subject_tokens.next().is_none() {
                    return false;
                }
            }
            literal => {
                if subject_tokens.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_w3c_version_00_and_differ() {
        let first = new_traceparent();
        let parts: Vec<&str> = first.split('-').collect();
        assert_eq!(parts.len(), 4, "{first}");
        assert_eq!((parts[0], parts[3]), ("00", "01"));
        for (part, len) in [(parts[1], 32), (parts[2], 16)] {
            assert_eq!(part.len(), len, "{first}");
            assert!(
                part.bytes()
                    .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
        assert_ne!(first, new_traceparent());
    }

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches(
            "boxoffice.events.>",
            "boxoffice.events.ticket.created"
        ));
        assert!(subject_matches(
            "boxoffice.events.ticket.*",
            "boxoffice.events.ticket.created"
        ));
        assert!(!subject_matches(
            "boxoffice.events.ticket.*",
            "boxoffice.events.order.created"
        ));
        assert!(!subject_matches("boxoffice.events.>", "boxoffice.events"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.*", "a"));
    }
}
