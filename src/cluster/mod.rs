//! Cluster coordination over NATS JetStream: the KV buckets that membership and shard leases
//! are built on (ARCHITECTURE.md, "Cluster").
//!
//! Owns how buckets are made on nats-server 2.9 (rule 3). It must not route actor messages or
//! decide placement yet: membership, leases and routing build on `kv` in the next increment.

pub mod kv;
