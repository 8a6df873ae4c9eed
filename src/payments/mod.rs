//! The `PaymentGateway` port: charging a card token for an order.
//!
//! Owns the contract between the order actor and whatever takes the money: the built-in
//! sandbox (Stripe's test-token semantics) or Stripe's Charges API. It must not decide anything
//! about orders: the order actor persists `awaiting:payment` before calling it and decides the
//! outcome from what it returns. Every charge carries an idempotency key, so asking again with the
//! same key (a retry, or start-up reconciliation) never charges twice.

mod sandbox;
mod stripe;

pub use sandbox::SandboxGateway;
pub use stripe::StripeGateway;

use async_trait::async_trait;

/// One charge to make: `amount_cents` in `currency`, paid with the card token `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The amount in the currency's smallest unit (cents).
    pub amount_cents: u64,
    /// ISO currency code, lowercase (`usd`).
    pub currency: String,
    /// The card token the client sent (`tok_visa`, ...).
    pub source: String,
    /// Makes the charge idempotent: the same key never charges twice.
    pub idempotency_key: String,
}

/// A charge the gateway accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The gateway's id for the charge (`ch_...`), kept as the payment's `stripeId`.
    pub id: String,
}

/// Why a charge was not made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum PaymentError {
    /// The card was declined; the message is the gateway's, shown to the client with 402.
    #[error("{0}")]
    Declined(String),
    /// The token is not one the gateway knows (400 `Invalid payment token`).
    #[error("invalid payment token")]
    InvalidToken,
    /// The gateway refused the request itself (e.g. an idempotency key reused with other
    /// parameters); the message is the gateway's, shown to the client with 400.
    #[error("{0}")]
    Rejected(String),
    /// The gateway could not be reached or answered with an error of its own; the outcome of the
    /// charge is unknown and must be asked again with the same idempotency key.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
}

/// Takes money for orders.
#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges the card, or returns the outcome of an earlier charge with the same
    /// idempotency key.
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, PaymentError>;

    /// A short name for logs and `/readyz` (`sandbox`, `stripe`).
    fn name(&self) -> &'static str;
}
