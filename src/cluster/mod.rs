//! Cluster mode: shards of actors spread over nodes that coordinate through NATS.
//!
//! Owns the protocol: where shards should live (`placement`), how long a node may serve a shard
//! it leases (`lease`), and the KV buckets membership and leases are kept in (`kv`,
//! `membership`), and what nodes ask each other for the admin view (`inspect`). The MongoDB, Redis and NATS event adapters live behind the ports (`store`,
//! `timers`, `bus`). It must not decide entity transitions: actors do, through the domain.

pub mod inspect;
pub mod kv;
pub mod lease;
pub mod membership;
pub mod node;
pub mod placement;
