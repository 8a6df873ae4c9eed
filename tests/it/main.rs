//! The behavioural suite: black-box tests over HTTP against the real `boxoffice` binary.

mod actors;
mod auth;
mod bad_input;
mod concurrency;
mod durability;
mod events;
mod expiry;
mod fake_stripe;
mod harness;
mod loadtest;
mod operations;
mod orders;
mod payments;
mod stripe;
mod tickets;
