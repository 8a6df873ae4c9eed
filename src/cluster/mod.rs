//! Cluster mode: shards of actors spread over nodes that coordinate through NATS.
//!
//! Owns the protocol pieces that are pure and shared by every transport: where shards should
//! live (`placement`) and how long a node may serve a shard it leases (`lease`). The NATS,
//! MongoDB and Redis adapters live behind the ports (`store`, `bus`, `timers`). It must not
//! decide entity transitions: actors do, through the domain.

pub mod lease;
pub mod placement;
