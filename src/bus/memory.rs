//! The embedded `Bus`: an in-process subject router.
//!
//! Owns the subscriber list and fan-out. Like core NATS it never blocks a publisher on a slow
//! subscriber: a full subscriber loses the event and its drop counter says so.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Bus, BusError, BusEvent, Subscription, subject_matches};

struct Subscriber {
    pattern: String,
    sender: mpsc::Sender<BusEvent>,
    dropped: Arc<AtomicU64>,
}

/// In-process publish/subscribe.
#[derive(Default)]
pub struct MemoryBus {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl MemoryBus {
    /// A bus with no subscribers.
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let mut subscribers = self
            .subscribers
            .lock()
            .map_err(|_| BusError::Unavailable("subscriber list poisoned".into()))?;
        subscribers.retain(|subscriber| !subscriber.sender.is_closed());
        for subscriber in subscribers.iter() {
            if subject_matches(&subscriber.pattern, &event.subject)
                && subscriber.sender.try_send(event.clone()).is_err()
            {
                subscriber.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn subscribe(&self, pattern: &str, capacity: usize) -> Subscription {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.push(Subscriber {
                pattern: pattern.to_string(),
                sender,
                dropped: dropped.clone(),
            });
        }
        Subscription { receiver, dropped }
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn has_subscribers(&self) -> bool {
        self.subscribers.lock().is_ok_and(|mut subscribers| {
            subscribers.retain(|subscriber| !subscriber.sender.is_closed());
            !subscribers.is_empty()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    fn event(subject: &str, seq: u64) -> BusEvent {
        BusEvent {
            subject: subject.into(),
            id: format!("e{seq}"),
            name: "x".into(),
            seq,
            at: Timestamp::from_millis(0),
            data: serde_json::Value::Null,
            traceparent: String::new(),
        }
    }

    #[test]
    fn has_subscribers_while_a_subscription_is_open() {
        let bus = MemoryBus::new();
        assert!(!bus.has_subscribers());
        let first = bus.subscribe("boxoffice.events.>", 1);
        let second = bus.subscribe("boxoffice.events.ticket.*", 1);
        assert!(bus.has_subscribers());
        drop(first);
        assert!(bus.has_subscribers());
        drop(second);
        assert!(!bus.has_subscribers());
    }

    #[tokio::test]
    async fn routes_by_pattern_and_never_blocks_on_a_full_subscriber() {
        let bus = MemoryBus::new();
        let mut tickets = bus.subscribe("boxoffice.events.ticket.*", 1);
        let mut all = bus.subscribe("boxoffice.events.>", 10);
        bus.publish(event("boxoffice.events.ticket.created", 1))
            .await
            .unwrap();
        bus.publish(event("boxoffice.events.ticket.updated", 2))
            .await
            .unwrap();
        bus.publish(event("boxoffice.events.order.created", 3))
            .await
            .unwrap();
        assert_eq!(tickets.receiver.recv().await.unwrap().seq, 1);
        assert_eq!(tickets.dropped(), 1, "the second ticket event did not fit");
        for seq in 1..=3 {
            assert_eq!(all.receiver.recv().await.unwrap().seq, seq);
        }
    }
}
