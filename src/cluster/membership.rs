//! Membership and shard leases on NATS JetStream KV buckets.
//!
//! Owns the two buckets of a cluster: `<cluster>_members` (one key per node, kept alive by
//! compare-and-set heartbeats; the bucket's `max_age` forgets a silent node) and
//! `<cluster>_shards` (one lease per shard: acquired by `create`, renewed by `update` against
//! its revision, released by a revision-checked delete; `max_age` expires an abandoned lease),
//! plus `<cluster>_config`, which pins the shard count when the cluster is created. Every
//! decision is taken from the result of a compare-and-set write, never from a read (KV reads may
//! be stale, ARCHITECTURE.md rule 2); reads only list who is alive and who owns what. Expiry is
//! noticed by scanning, since nats-server 2.9 sends no event when `max_age` removes a key.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::kv::{KvError, ensure_kv_bucket};
use super::lease::RenewFailure;
use crate::actors::EntityKind;

/// KV reads in flight at once when a whole bucket is read.
const READS_AT_ONCE: usize = 32;

/// Why a membership or lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS did not answer or refused; the operation may be retried.
    #[error("nats unavailable: {0}")]
    Unavailable(String),
    /// Another live process has this node's id.
    #[error("node id {0} is already used by another live node")]
    IdentityTaken(String),
    /// The cluster was created with another shard count.
    #[error("this node has --shards {ours} but the cluster was created with {theirs}")]
    ShardCountMismatch { ours: u32, theirs: u32 },
    #[error("malformed record in {bucket}: {reason}")]
    Malformed { bucket: String, reason: String },
}

impl From<KvError> for ClusterError {
    fn from(error: KvError) -> Self {
        ClusterError::Unavailable(error.to_string())
    }
}

fn unavailable(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(error.to_string())
}

/// A node as the members bucket shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    pub id: String,
    /// Unique per process start, so a restarted node is told apart from its earlier self.
    pub incarnation: String,
    pub address: String,
    pub roles: Vec<String>,
    /// ISO 8601.
    pub started_at: String,
    /// ISO 8601, the sender's clock (the skew between nodes shows in the admin view).
    pub heartbeat_at: String,
}

impl MemberRecord {
    /// True when the node runs the role that owns shards of `kind`.
    pub fn serves_kind(&self, kind: EntityKind) -> bool {
        let role = match kind {
            EntityKind::Ticket => "tickets",
            EntityKind::Order => "orders",
        };
        self.roles.iter().any(|candidate| candidate == role)
    }
}

/// The value of a shard lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub owner: String,
    pub incarnation: String,
    /// The fencing epoch of the holder's tenure (0 in the acquiring write, which does not know
    /// its own revision yet; renewals carry it).
    #[serde(default)]
    pub epoch: u64,
}

/// A lease as read from the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub owner: String,
    pub incarnation: String,
    pub revision: u64,
    /// The holder's fencing epoch, once a renewal has recorded it.
    pub epoch: u64,
}

/// The key of a shard's lease.
pub fn lease_key(kind: EntityKind, shard: u32) -> String {
    format!("{}.{shard}", kind.as_str())
}

fn parse_lease_key(key: &str) -> Option<(EntityKind, u32)> {
    let (kind, shard) = key.split_once('.')?;
    Some((kind.parse().ok()?, shard.parse().ok()?))
}

fn member_key(node_id: &str) -> String {
    format!("node.{node_id}")
}

/// The buckets of one cluster.
#[derive(Clone)]
pub struct ClusterBuckets {
    members: kv::Store,
    shards: kv::Store,
    config: kv::Store,
    members_bucket: String,
    generation: u64,
    /// How long listing a bucket may take (see `read_all`).
    list_timeout: Duration,
}

impl ClusterBuckets {
    /// Makes (or binds) the buckets of cluster `name`: members forgotten after `member_ttl`
    /// without a heartbeat, leases expired after `lease_ttl` without a renewal.
    pub async fn open(
        jetstream: &jetstream::Context,
        name: &str,
        member_ttl: Duration,
        lease_ttl: Duration,
    ) -> Result<ClusterBuckets, ClusterError> {
        let members_bucket = format!("{name}_members");
        let shards_bucket = format!("{name}_shards");
        let shards = ensure_kv_bucket(jetstream, &shards_bucket, 1, lease_ttl).await?;
        let created = jetstream
            .get_stream(format!("KV_{shards_bucket}"))
            .await
            .map_err(unavailable)?
            .info()
            .await
            .map_err(unavailable)?
            .created;
        Ok(ClusterBuckets {
            members: ensure_kv_bucket(jetstream, &members_bucket, 1, member_ttl).await?,
            shards,
            config: ensure_kv_bucket(jetstream, &format!("{name}_config"), 1, Duration::ZERO)
                .await?,
            members_bucket,
            generation: u64::try_from(created.unix_timestamp()).unwrap_or(0),
            // A round lists both buckets between two renewals (every TTL/3): a listing that
            // takes longer fails the round, which the next tick retries.
            list_timeout: lease_ttl / 3,
        })
    }

    /// The leases bucket's generation: when its stream was created (seconds since the epoch).
    /// A re-created stream starts its revisions at 1 again, but with a later generation, so
    /// `fencing_epoch` keeps growing.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The store fence of a lease acquired at `revision`: the generation in the high 32 bits
    /// and the revision in the low ones, so it grows across acquisitions and across a re-created
    /// leases bucket.
    pub fn fencing_epoch(&self, revision: u64) -> u64 {
        (self.generation << 32) | (revision & 0xffff_ffff)
    }

    /// Pins the shard count on first use; refuses a node whose count differs.
    ///
    /// Right after another node of a new cluster created the config bucket, nats-server 2.9.10
    /// can answer a read of it with "no stream found for given subject": the node exited at
    /// start. Such a failure is retried a few times before it counts.
    pub async fn check_shard_count(&self, shards: u32) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            match self.pin_shard_count(shards).await {
                Err(ClusterError::Unavailable(reason)) if attempt < 5 => {
                    tracing::debug!(reason, attempt, "reading the shard count failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn pin_shard_count(&self, shards: u32) -> Result<(), ClusterError> {
        let value = bytes::Bytes::from(shards.to_string());
        match self.config.create("shards", value).await {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                let stored = self.config.get("shards").await.map_err(unavailable)?;
                let theirs = stored
                    .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse::<u32>().ok())
                    .ok_or_else(|| ClusterError::Malformed {
                        bucket: "config".into(),
                        reason: "shards is not a number".into(),
                    })?;
                if theirs == shards {
                    Ok(())
                } else {
                    Err(ClusterError::ShardCountMismatch {
                        ours: shards,
                        theirs,
                    })
                }
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Announces this node; refuses when a live node already has its id. Returns the revision
    /// to heartbeat against.
    pub async fn join(&self, record: &MemberRecord) -> Result<u64, ClusterError> {
        let value = bytes::Bytes::from(serde_json::to_vec(record).map_err(unavailable)?);
        match self.members.create(member_key(&record.id), value).await {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(ClusterError::IdentityTaken(record.id.clone()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Renews this node's membership (compare-and-set on `revision`); `IdentityTaken` when
    /// someone else wrote the key meanwhile (or it expired and was taken).
    pub async fn heartbeat(
        &self,
        record: &MemberRecord,
        revision: u64,
    ) -> Result<u64, ClusterError> {
        let value = bytes::Bytes::from(serde_json::to_vec(record).map_err(unavailable)?);
        match self
            .members
            .update(member_key(&record.id), value, revision)
            .await
        {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(ClusterError::IdentityTaken(record.id.clone()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Removes this node's membership (graceful leave).
    pub async fn leave(&self, node_id: &str, revision: u64) -> Result<(), ClusterError> {
        self.members
            .delete_expect_revision(member_key(node_id), Some(revision))
            .await
            .map_err(unavailable)
    }

    /// The live members, by id.
    pub async fn members(&self) -> Result<BTreeMap<String, MemberRecord>, ClusterError> {
        let mut members = BTreeMap::new();
        for (key, value, _) in read_all(&self.members, self.list_timeout).await? {
            if !key.starts_with("node.") {
                continue;
            }
            let record: MemberRecord =
                serde_json::from_slice(&value).map_err(|error| ClusterError::Malformed {
                    bucket: self.members_bucket.clone(),
                    reason: error.to_string(),
                })?;
            members.insert(record.id.clone(), record);
        }
        Ok(members)
    }

    /// Takes the lease of a shard if nobody holds it: `Some(epoch)` (the write's revision, the
    /// shard's fencing epoch) on success, `None` when it is held.
    pub async fn acquire(
        &self,
        kind: EntityKind,
        shard: u32,
        record: &LeaseRecord,
    ) -> Result<Option<u64>, ClusterError> {
        let value = bytes::Bytes::from(serde_json::to_vec(record).map_err(unavailable)?);
        match self.shards.create(lease_key(kind, shard), value).await {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Renews a lease held at `revision`.
    pub async fn renew(
        &self,
        kind: EntityKind,
        shard: u32,
        record: &LeaseRecord,
        revision: u64,
    ) -> Result<u64, RenewFailure> {
        let value = match serde_json::to_vec(record) {
            Ok(value) => bytes::Bytes::from(value),
            Err(_) => return Err(RenewFailure::Unreachable),
        };
        match self
            .shards
            .update(lease_key(kind, shard), value, revision)
            .await
        {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(RenewFailure::Lost)
            }
            Err(_) => Err(RenewFailure::Unreachable),
        }
    }

    /// Gives a lease up (only if still at `revision`), so the next owner need not wait for it
    /// to expire.
    pub async fn release(
        &self,
        kind: EntityKind,
        shard: u32,
        revision: u64,
    ) -> Result<(), ClusterError> {
        self.shards
            .delete_expect_revision(lease_key(kind, shard), Some(revision))
            .await
            .map_err(unavailable)
    }

    /// The lease of one shard, when somebody holds it.
    pub async fn lease(
        &self,
        kind: EntityKind,
        shard: u32,
    ) -> Result<Option<LeaseView>, ClusterError> {
        let Some(entry) = self
            .shards
            .entry(lease_key(kind, shard))
            .await
            .map_err(unavailable)?
            .filter(|entry| entry.operation == kv::Operation::Put)
        else {
            return Ok(None);
        };
        let record: LeaseRecord =
            serde_json::from_slice(&entry.value).map_err(|error| ClusterError::Malformed {
                bucket: "shards".into(),
                reason: error.to_string(),
            })?;
        Ok(Some(LeaseView {
            owner: record.owner,
            incarnation: record.incarnation,
            revision: entry.revision,
            epoch: record.epoch,
        }))
    }

    /// Every held lease.
    pub async fn leases(&self) -> Result<BTreeMap<(EntityKind, u32), LeaseView>, ClusterError> {
        let mut leases = BTreeMap::new();
        for (key, value, revision) in read_all(&self.shards, self.list_timeout).await? {
            let Some(shard) = parse_lease_key(&key) else {
                continue;
            };
            let record: LeaseRecord =
                serde_json::from_slice(&value).map_err(|error| ClusterError::Malformed {
                    bucket: "shards".into(),
                    reason: error.to_string(),
                })?;
            leases.insert(
                shard,
                LeaseView {
                    owner: record.owner,
                    incarnation: record.incarnation,
                    revision,
                    epoch: record.epoch,
                },
            );
        }
        Ok(leases)
    }
}

/// Every live key of a bucket with its value and revision (deleted keys left out).
///
/// Listing the keys (an ordered consumer that ends once it has delivered everything) sometimes
/// never ends: seen on a node's first round when three nodes start together on nats-server
/// 2.9.10 (nats-server#3481 reports listings hanging while keys expire by `max_age`). Unbounded,
/// it held the control loop forever: the node took no shard, stopped heartbeating and was never
/// ready. The listing gets `timeout`; the next round lists again with a new consumer.
async fn read_all(
    store: &kv::Store,
    timeout: Duration,
) -> Result<Vec<(String, bytes::Bytes, u64)>, ClusterError> {
    let list = async {
        let mut keys = store.keys().await.map_err(unavailable)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(unavailable)?);
        }
        Ok::<_, ClusterError>(names)
    };
    let names = tokio::time::timeout(timeout, list).await.map_err(|_| {
        ClusterError::Unavailable(format!("listing the keys took longer than {timeout:?}"))
    })??;
    // One get per key, many in flight: a cluster of 256 shards per kind reads 512 leases a round.
    let entries: Vec<Option<(String, bytes::Bytes, u64)>> = futures::stream::iter(names)
        .map(|key| async move {
            let entry = store.entry(key.clone()).await.map_err(unavailable)?;
            Ok::<_, ClusterError>(
                entry
                    .filter(|entry| entry.operation == kv::Operation::Put)
                    .map(|entry| (key, entry.value, entry.revision)),
            )
        })
        .buffer_unordered(READS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(entries.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_round_trip() {
        assert_eq!(lease_key(EntityKind::Order, 17), "order.17");
        assert_eq!(parse_lease_key("order.17"), Some((EntityKind::Order, 17)));
        assert_eq!(parse_lease_key("ticket.x"), None);
        assert_eq!(parse_lease_key("user.1"), None);
    }
}
