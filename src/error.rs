//! The kinds every error of every layer maps to, once: each kind picks the HTTP status (and,
//! in cluster mode, the NATS error reply).

use std::time::Duration;

/// What kind of failure an error is, as a client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is invalid or a rule refuses it (400).
    BadRequest,
    /// No valid session, or not the owner (401).
    Unauthorized,
    /// No such route or entity (404).
    NotFound,
    /// The card was declined (402).
    PaymentRequired,
    /// Overloaded, moving or briefly down: retry after the given time (503).
    Unavailable { retry_after: Duration },
    /// A bug or a broken dependency (500).
    Internal,
}
