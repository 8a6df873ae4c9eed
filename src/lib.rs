//! BoxOffice: a ticketing platform where every ticket and every order is a supervised actor
//! that serialises its own state transitions.
//!
//! Layers, top to bottom: `http` (axum routers) -> `actors` (ticket and order actors, the
//! directory, supervision) -> `domain` (pure state machines). The ports `store`, `bus`, `timers`
//! and `payments` are traits with their adapters beside them; `cluster` is the cluster protocol
//! (membership, leases, placement, the node that serves shards); `app` wires them in dependency
//! order and `config` is the command line. `loadtest` is the load-test harness, a client of the
//! HTTP API only.

pub mod actors;
pub mod app;
pub mod bus;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod ids;
pub mod loadtest;
pub mod metrics;
pub mod payments;
pub mod store;
pub mod timers;
