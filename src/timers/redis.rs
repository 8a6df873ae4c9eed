//! The cluster `Timers`: a Redis sorted set shared by every node, claimed atomically by a Lua
//! script so a due timer is handed to exactly one node at a time.
//!
//! Owns the key layout (`docs/cluster.md`, "Adapters") and the claim, complete and reap
//! protocol. `<prefix>:timers` holds armed timers (score = due time in Unix milliseconds,
//! member = `<kind>:<24 hex id>`); a claim moves due members to `<prefix>:timers:processing`
//! with score = the claim's lease deadline; `complete` removes them from there. A claim whose
//! lease ran out (its node died mid-fire) is moved back to the armed set by the next claim, so
//! firing is at least once, which the receiving actors tolerate (rule 9). Like the embedded
//! index, this is an index, not the truth: deadlines live in the store. It must not decide what
//! a timer means.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::{TimerError, TimerKey, Timers};
use crate::domain::{ObjectId, Timestamp};
use crate::store::DeadlineKind;

/// How long a claimed timer may stay unfinished before another claim takes it again. Longer
/// than a batch of deliveries can take (each is bounded by the actor call timeout).
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);
/// How often `wait` lets the worker poll: Redis cannot cheaply tell us a timer became due.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The most expired claims one claim call re-queues (the rest wait for the next call).
const REAP_LIMIT: usize = 1000;

/// Re-queues expired claims, then moves up to `limit` due timers to the processing set.
/// KEYS: armed set, processing set. ARGV: now (ms), limit, lease deadline (ms), reap limit.
/// Returns `{ {member, due, member, due, ...}, armed count }`.
const CLAIM_SCRIPT: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZADD', KEYS[1], 'NX', ARGV[1], member)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
  redis.call('ZADD', KEYS[2], ARGV[3], due[i])
end
return {due, redis.call('ZCARD', KEYS[1])}
";

/// Timers in Redis, shared by the nodes of one deployment (one key prefix).
pub struct RedisTimers {
    connection: ConnectionManager,
    armed_key: String,
    processing_key: String,
    lease: Duration,
    claim: redis::Script,
    /// ZCARD of the armed set as last seen (for `len`, which cannot wait for Redis).
    armed: AtomicUsize,
}

impl RedisTimers {
    /// Connects to `url` and uses the keys under `prefix` (one prefix per deployment, and per
    /// test). Claims are leased for `DEFAULT_CLAIM_LEASE`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisTimers, TimerError> {
        let client = redis::Client::open(url)
            .map_err(|error| TimerError::Unavailable(format!("bad Redis URL: {error}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|error| TimerError::Unavailable(format!("Redis unreachable: {error}")))?;
        let timers = RedisTimers {
            connection,
            armed_key: format!("{prefix}:timers"),
            processing_key: format!("{prefix}:timers:processing"),
            lease: DEFAULT_CLAIM_LEASE,
            claim: redis::Script::new(CLAIM_SCRIPT),
            armed: AtomicUsize::new(0),
        };
        let armed: usize = redis::cmd("ZCARD")
            .arg(&timers.armed_key)
            .query_async(&mut timers.connection.clone())
            .await
            .map_err(unavailable)?;
        timers.armed.store(armed, Ordering::Relaxed);
        tracing::info!(prefix, "redis timers ready");
        Ok(timers)
    }

    /// Uses `lease` instead of `DEFAULT_CLAIM_LEASE` for claims.
    pub fn with_claim_lease(mut self, lease: Duration) -> RedisTimers {
        self.lease = lease;
        self
    }

    /// How many claims are in flight (claimed, neither completed nor re-queued).
    pub async fn claimed_len(&self) -> Result<usize, TimerError> {
        redis::cmd("ZCARD")
            .arg(&self.processing_key)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }
}

impl RedisTimers {
    /// Runs `transaction` (its replies ignored) in one `MULTI`, and records the armed count.
    async fn apply(&self, mut transaction: redis::Pipeline) -> Result<(), TimerError> {
        let (armed,): (usize,) = transaction
            .atomic()
            .zcard(&self.armed_key)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        self.armed.store(armed, Ordering::Relaxed);
        Ok(())
    }
}

fn unavailable(error: redis::RedisError) -> TimerError {
    TimerError::Unavailable(error.to_string())
}

fn kind_name(kind: DeadlineKind) -> &'static str {
    match kind {
        DeadlineKind::OrderExpiry => "orderExpiry",
        DeadlineKind::TicketReservation => "ticketReservation",
    }
}

/// The sorted-set member of a timer: `<kind>:<24 hex id>`.
fn member(key: TimerKey) -> String {
    format!("{}:{}", kind_name(key.kind), key.entity)
}

fn parse_member(member: &str) -> Result<TimerKey, TimerError> {
    let invalid = || TimerError::Unavailable(format!("unexpected timer member {member:?}"));
    let (kind, id) = member.split_once(':').ok_or_else(invalid)?;
    let kind = match kind {
        "orderExpiry" => DeadlineKind::OrderExpiry,
        "ticketReservation" => DeadlineKind::TicketReservation,
        _ => return Err(invalid()),
    };
    let entity = ObjectId::parse(id).map_err(|_| invalid())?;
    Ok(TimerKey { kind, entity })
}

#[async_trait]
impl Timers for RedisTimers {
    async fn arm(&self, key: TimerKey, due: Timestamp) -> Result<(), TimerError> {
        let member = member(key);
        // A re-armed timer is no longer claimed (a failed delivery re-arms it).
        let mut transaction = redis::pipe();
        transaction
            .zadd(&self.armed_key, &member, due.millis())
            .ignore()
            .zrem(&self.processing_key, &member)
            .ignore();
        self.apply(transaction).await
    }

    async fn disarm(&self, key: TimerKey) -> Result<(), TimerError> {
        let member = member(key);
        let mut transaction = redis::pipe();
        transaction
            .zrem(&self.armed_key, &member)
            .ignore()
            .zrem(&self.processing_key, &member)
            .ignore();
        self.apply(transaction).await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(TimerKey, Timestamp)>, TimerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease_deadline = now.plus(self.lease);
        let (due, armed): (Vec<String>, usize) = self
            .claim
            .key(&self.armed_key)
            .key(&self.processing_key)
            .arg(now.millis())
            .arg(limit)
            .arg(lease_deadline.millis())
            .arg(REAP_LIMIT)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        self.armed.store(armed, Ordering::Relaxed);
        let mut claimed = Vec::with_capacity(due.len() / 2);
        for pair in due.chunks(2) {
            let [member, score] = pair else {
                return Err(TimerError::Unavailable(
                    "claim script returned an odd list".into(),
                ));
            };
            let due_millis: f64 = score.parse().map_err(|_| {
                TimerError::Unavailable(format!("timer score {score:?} is not a number"))
            })?;
            // Scores are whole milliseconds well inside f64's exact integer range.
            claimed.push((
                parse_member(member)?,
                Timestamp::from_millis(due_millis as i64),
            ));
        }
        if !claimed.is_empty() {
            tracing::debug!(claimed = claimed.len(), "claimed due timers");
        }
        Ok(claimed)
    }

    async fn complete(&self, key: TimerKey) -> Result<(), TimerError> {
        let _: usize = redis::cmd("ZREM")
            .arg(&self.processing_key)
            .arg(member(key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn wait(&self, at_most: Duration) {
        tokio::time::sleep(at_most.min(POLL_INTERVAL)).await;
    }

    fn len(&self) -> usize {
        self.armed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip() {
        let key = TimerKey {
            kind: DeadlineKind::TicketReservation,
            entity: ObjectId::from_parts(7, [1; 5], 9),
        };
        assert_eq!(parse_member(&member(key)).unwrap(), key);
        assert!(parse_member("orderExpiry:xyz").is_err());
        assert!(parse_member("nothing").is_err());
    }
}
