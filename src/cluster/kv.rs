//! JetStream KV buckets made the way nats-server 2.9.10 accepts.
//!
//! Owns `ensure_kv_bucket`, the only way the code base makes a bucket: async-nats's
//! `create_key_value` always fails on 2.9.10 (its account-info check cannot decode the 2.9
//! answer), so the bucket's `KV_<bucket>` stream is created by hand and then bound with
//! `get_key_value`, which works. Expiry is the bucket-wide `max_age`; per-key TTLs are silently
//! ignored by 2.9, so `clippy.toml` bans them. It must not decide what the keys mean.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::bus::nats::ensure_stream;

/// The longest duplicate window a bucket gets (and never more than its `max_age`).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why a bucket could not be made or bound.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Bucket names are letters, digits, `-` and `_`.
    #[error("invalid bucket name {0:?}")]
    InvalidName(String),
    /// NATS refused or did not answer.
    #[error("kv bucket unavailable: {0}")]
    Unavailable(String),
}

/// Makes (or updates) the stream behind bucket `bucket`, keeping `history` values per key
/// (at least 1) for `max_age` (zero: forever), then binds the bucket.
pub async fn ensure_kv_bucket(
    jetstream: &jetstream::Context,
    bucket: &str,
    history: i64,
    max_age: Duration,
) -> Result<kv::Store, KvError> {
    let is_valid = !bucket.is_empty()
        && bucket
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_".contains(character));
    if !is_valid {
        return Err(KvError::InvalidName(bucket.to_string()));
    }
    // ADR-8: the duplicate window must not exceed max_age (2.9.10 refuses the stream).
    let duplicate_window = if max_age.is_zero() {
        DUPLICATE_WINDOW
    } else {
        max_age.min(DUPLICATE_WINDOW)
    };
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history.max(1),
        max_age,
        duplicate_window,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    };
    let mut existing = ensure_stream(jetstream, config.clone())
        .await
        .map_err(KvError::Unavailable)?;
    let info = existing
        .info()
        .await
        .map_err(|error| KvError::Unavailable(error.to_string()))?;
    if info.config.max_age != config.max_age
        || info.config.max_messages_per_subject != config.max_messages_per_subject
    {
        tracing::info!(bucket, ?max_age, history, "updating kv bucket limits");
        jetstream
            .update_stream(config)
            .await
            .map_err(|error| KvError::Unavailable(error.to_string()))?;
    }
    jetstream
        .get_key_value(bucket)
        .await
        .map_err(|error| KvError::Unavailable(error.to_string()))
}
