//! The behavioural suite: black-box tests over HTTP against the real `boxoffice` binary, and
//! the adapter tests (store contract, Redis timers, NATS bus) against real servers.

mod actors;
mod admin;
mod admin_cluster;
mod auth;
mod bad_input;
mod browser;
mod cluster_faults;
mod cluster_membership;
mod cluster_mode;
mod cluster_routing;
mod concurrency;
mod durability;
mod events;
mod expiry;
mod fake_stripe;
mod harness;
mod loadtest;
mod nats_bus;
mod operations;
mod orders;
mod passivation;
mod payments;
mod redis_timers;
mod servers;
mod stale_activation;
mod store_contract;
mod stripe;
mod tickets;
