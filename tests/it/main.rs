//! The behavioural suite: black-box tests over HTTP against the real `boxoffice` binary.

mod actors;
mod admin;
mod auth;
mod bad_input;
mod browser;
mod cluster_membership;
mod cluster_routing;
mod concurrency;
mod durability;
mod events;
mod expiry;
mod fake_stripe;
mod harness;
mod operations;
mod orders;
mod payments;
mod servers;
mod stripe;
mod tickets;
