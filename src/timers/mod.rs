//! The `Timers` port: an index of deadlines (order expiry, stale reservations) that tells the
//! timer worker what is due.
//!
//! Owns claiming due timers. It is an index, not the truth: each deadline lives in its entity
//! (`expires_at`) and the index is rebuilt from the store at start, so a lost timer is re-armed
//! and firing is at least once; the receiving actor treats repeats as no-ops (ARCHITECTURE.md
//! rule 9). It must not decide what a deadline means: the worker hands each to its actor.

mod embedded;
mod redis;

pub use embedded::EmbeddedTimers;
pub use redis::RedisTimers;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{ObjectId, Timestamp};
use crate::store::DeadlineKind;

/// Which entity a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerKey {
    pub kind: DeadlineKind,
    pub entity: ObjectId,
}

/// Why a timer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("timers unavailable: {0}")]
    Unavailable(String),
}

/// The deadline index.
#[async_trait]
pub trait Timers: Send + Sync + 'static {
    /// Arms (or moves) the timer of `key` to fire at `due`.
    async fn arm(&self, key: TimerKey, due: Timestamp) -> Result<(), TimerError>;
    /// Disarms the timer of `key`, if armed.
    async fn disarm(&self, key: TimerKey) -> Result<(), TimerError>;
    /// Takes up to `limit` timers due at `now`; a taken timer is not handed out again unless
    /// re-armed, or (in an index shared by several nodes) unless its claimer does not `complete`
    /// it within the claim's lease, as when the claiming node died mid-fire.
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(TimerKey, Timestamp)>, TimerError>;
    /// Records that a claimed timer was delivered to its actor, so it is never handed out again.
    async fn complete(&self, key: TimerKey) -> Result<(), TimerError>;
    /// Waits until a timer may be due, an earlier timer is armed, or `at_most` passes.
    async fn wait(&self, at_most: Duration);
    /// How many timers are armed.
    fn len(&self) -> usize;
    /// True when no timer is armed.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
