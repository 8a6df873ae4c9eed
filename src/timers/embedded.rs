//! The embedded `Timers`: an in-memory ordered index, rebuilt from the store's deadline table at
//! start (the store writes that table in the same transaction as the entity, so it is durable).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{TimerError, TimerKey, Timers};
use crate::domain::Timestamp;

#[derive(Default)]
struct Index {
    by_due: BTreeSet<(Timestamp, TimerKey)>,
    by_key: HashMap<TimerKey, Timestamp>,
}

/// In-memory deadline index with a wake-up for the worker.
#[derive(Default)]
pub struct EmbeddedTimers {
    index: Mutex<Index>,
    changed: Notify,
}

impl EmbeddedTimers {
    /// An empty index.
    pub fn new() -> EmbeddedTimers {
        EmbeddedTimers::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Index>, TimerError> {
        self.index
            .lock()
            .map_err(|_| TimerError::Unavailable("timer index poisoned".into()))
    }

    fn next_due(&self) -> Option<Timestamp> {
        self.lock()
            .ok()
            .and_then(|index| index.by_due.first().map(|(due, _)| *due))
    }
}

#[async_trait]
impl Timers for EmbeddedTimers {
    async fn arm(&self, key: TimerKey, due: Timestamp) -> Result<(), TimerError> {
        let is_earliest = {
            let mut index = self.lock()?;
            if let Some(previous) = index.by_key.insert(key, due) {
                index.by_due.remove(&(previous, key));
            }
            index.by_due.insert((due, key));
            index.by_due.first().is_some_and(|(first, _)| *first == due)
        };
        if is_earliest {
            self.changed.notify_one();
        }
        Ok(())
    }

    async fn disarm(&self, key: TimerKey) -> Result<(), TimerError> {
        let mut index = self.lock()?;
        if let Some(previous) = index.by_key.remove(&key) {
            index.by_due.remove(&(previous, key));
        }
        Ok(())
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(TimerKey, Timestamp)>, TimerError> {
        let mut index = self.lock()?;
        let mut claimed = Vec::new();
        while claimed.len() < limit {
            match index.by_due.first().copied() {
                Some((due, key)) if due <= now => {
                    index.by_due.remove(&(due, key));
                    index.by_key.remove(&key);
                    claimed.push((key, due));
                }
                _ => break,
            }
        }
        Ok(claimed)
    }

    async fn complete(&self, _key: TimerKey) -> Result<(), TimerError> {
        // A claim removed the timer from the index already: a process that dies mid-fire
        // rebuilds the index from the store at start, so there is no lease to release.
        Ok(())
    }

    async fn wait(&self, at_most: Duration) {
        let notified = self.changed.notified();
        let sleep_for = match self.next_due() {
            Some(due) => {
                let until_due = due.since(crate::clock::now());
                until_due.min(at_most)
            }
            None => at_most,
        };
        if sleep_for.is_zero() {
            return;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(sleep_for) => {}
        }
    }

    fn len(&self) -> usize {
        self.lock().map(|index| index.by_key.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ObjectId;
    use crate::store::DeadlineKind;

    fn key(n: u32) -> TimerKey {
        TimerKey {
            kind: DeadlineKind::OrderExpiry,
            entity: ObjectId::from_parts(n, [0; 5], n),
        }
    }

    #[tokio::test]
    async fn claims_only_what_is_due_once_and_in_order() {
        let timers = EmbeddedTimers::new();
        timers
            .arm(key(1), Timestamp::from_millis(30))
            .await
            .unwrap();
        timers
            .arm(key(2), Timestamp::from_millis(10))
            .await
            .unwrap();
        timers
            .arm(key(3), Timestamp::from_millis(99))
            .await
            .unwrap();
        timers
            .arm(key(1), Timestamp::from_millis(20))
            .await
            .unwrap();
        let due = timers
            .claim_due(Timestamp::from_millis(50), 10)
            .await
            .unwrap();
        assert_eq!(
            due,
            vec![
                (key(2), Timestamp::from_millis(10)),
                (key(1), Timestamp::from_millis(20))
            ]
        );
        assert!(
            timers
                .claim_due(Timestamp::from_millis(50), 10)
                .await
                .unwrap()
                .is_empty()
        );
        timers.disarm(key(3)).await.unwrap();
        assert!(timers.is_empty());
    }
}
