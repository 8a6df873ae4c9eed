//! What actors are asked and what they answer, as plain serialisable data: the same values
//! travel in-process to a local actor and, in cluster mode, over NATS to the node that owns the
//! entity's shard.
//!
//! Owns the wire format of actor messages: versioned envelopes (`WIRE_VERSION`), so nodes of
//! two releases can run side by side during a rolling upgrade. It must not carry reply ports
//! or anything else that only makes sense inside one process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ActorError;
use super::entity::EntityKind;
use crate::domain::{
    ObjectId, Order, OrderId, Payment, Price, Ticket, TicketId, Timestamp, Title, UserId,
};

/// The format version of envelopes this release writes; it reads this one and older ones.
pub const WIRE_VERSION: u16 = 1;

/// A request to a ticket actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TicketRequest {
    /// Puts the ticket on sale (the actor's id is the new ticket's id).
    Create {
        title: Title,
        price: Price,
        owner: UserId,
    },
    /// Answers the current state.
    Get,
    /// Changes title and price.
    #[serde(rename_all = "camelCase")]
    Update {
        by: UserId,
        title: Title,
        price: Price,
    },
    /// Holds the ticket for an order until `expires_at`.
    #[serde(rename_all = "camelCase")]
    Reserve {
        order_id: OrderId,
        expires_at: Timestamp,
    },
    /// Frees the ticket if `order_id` holds it.
    #[serde(rename_all = "camelCase")]
    Release { order_id: OrderId },
    /// Sells the ticket to `order_id`.
    #[serde(rename_all = "camelCase")]
    MarkSold { order_id: OrderId },
    /// The reservation's timer fired: settle it if it is past its deadline.
    ResolveHold,
    /// After a restart or a shard take-over: settle a reservation whose order was never saved,
    /// was cancelled or was paid.
    ReconcileHold,
}

impl TicketRequest {
    /// The message's name in transition histories.
    pub fn name(&self) -> &'static str {
        match self {
            TicketRequest::Create { .. } => "Create",
            TicketRequest::Get => "Get",
            TicketRequest::Update { .. } => "Update",
            TicketRequest::Reserve { .. } => "Reserve",
            TicketRequest::Release { .. } => "Release",
            TicketRequest::MarkSold { .. } => "MarkSold",
            TicketRequest::ResolveHold => "ResolveHold",
            TicketRequest::ReconcileHold => "ReconcileHold",
        }
    }

    /// Whether a client's request causes it, rather than the platform's own work (an order's
    /// release or sale, a timer, a reconciliation): only those keep an idle actor live.
    pub fn is_from_client(&self) -> bool {
        match self {
            TicketRequest::Create { .. }
            | TicketRequest::Get
            | TicketRequest::Update { .. }
            | TicketRequest::Reserve { .. } => true,
            TicketRequest::Release { .. }
            | TicketRequest::MarkSold { .. }
            | TicketRequest::ResolveHold
            | TicketRequest::ReconcileHold => false,
        }
    }
}

/// A request to an order actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum OrderRequest {
    /// Reserves the ticket and creates the order (the actor's id is the new order's id).
    #[serde(rename_all = "camelCase")]
    Create { user: UserId, ticket_id: TicketId },
    /// Answers the current state.
    Get,
    /// Cancels the order at its owner's request.
    Cancel { by: UserId },
    /// The expiry timer fired.
    Expire,
    /// Charges the order's price and completes it.
    #[serde(rename_all = "camelCase")]
    Pay {
        by: UserId,
        token: String,
        client_key: Option<String>,
    },
    /// Settles a charge left in flight (start-up reconciliation).
    Reconcile,
}

impl OrderRequest {
    /// How long the caller waits for the answer: a payment may take the gateway's time, twice.
    pub fn timeout(&self, base: Duration) -> Duration {
        match self {
            OrderRequest::Pay { .. } | OrderRequest::Reconcile => base * 4,
            OrderRequest::Create { .. } | OrderRequest::Cancel { .. } => base * 2,
            OrderRequest::Get | OrderRequest::Expire => base,
        }
    }

    /// Whether a client's request causes it, rather than a timer or a reconciliation: only
    /// those keep an idle actor live.
    pub fn is_from_client(&self) -> bool {
        match self {
            OrderRequest::Create { .. }
            | OrderRequest::Get
            | OrderRequest::Cancel { .. }
            | OrderRequest::Pay { .. } => true,
            OrderRequest::Expire | OrderRequest::Reconcile => false,
        }
    }
}

/// A request addressed to one entity: what travels to the node that owns the entity's shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Routed {
    Ticket {
        id: TicketId,
        request: TicketRequest,
    },
    Order {
        id: OrderId,
        request: OrderRequest,
    },
}

impl Routed {
    /// The kind of the addressed entity.
    pub fn kind(&self) -> EntityKind {
        match self {
            Routed::Ticket { .. } => EntityKind::Ticket,
            Routed::Order { .. } => EntityKind::Order,
        }
    }

    /// The id of the addressed entity.
    pub fn entity(&self) -> ObjectId {
        match self {
            Routed::Ticket { id, .. } => id.0,
            Routed::Order { id, .. } => id.0,
        }
    }

    /// How long the caller waits for the answer.
    pub fn timeout(&self, base: Duration) -> Duration {
        match self {
            Routed::Ticket { .. } => base,
            Routed::Order { request, .. } => request.timeout(base),
        }
    }
}

/// What an actor answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum Answer {
    Ticket(Box<Ticket>),
    Order(Box<Order>),
    Payment(Payment),
    /// Done; nothing to return.
    Done,
}

impl Answer {
    /// The ticket this answer carries.
    pub fn into_ticket(self) -> Result<Ticket, ActorError> {
        match self {
            Answer::Ticket(ticket) => Ok(*ticket),
            other => Err(ActorError::Internal(format!(
                "expected a ticket, got {other:?}"
            ))),
        }
    }

    /// The order this answer carries.
    pub fn into_order(self) -> Result<Order, ActorError> {
        match self {
            Answer::Order(order) => Ok(*order),
            other => Err(ActorError::Internal(format!(
                "expected an order, got {other:?}"
            ))),
        }
    }

    /// The payment this answer carries.
    pub fn into_payment(self) -> Result<Payment, ActorError> {
        match self {
            Answer::Payment(payment) => Ok(payment),
            other => Err(ActorError::Internal(format!(
                "expected a payment, got {other:?}"
            ))),
        }
    }
}

/// A message as it travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// The format version it was written in.
    pub v: u16,
    pub request_id: Option<String>,
    pub body: T,
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Written by a newer release: retry, an up-to-date node will answer.
    #[error("message format {0} is newer than this node understands")]
    UnsupportedVersion(u16),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl<T: Serialize + serde::de::DeserializeOwned> Envelope<T> {
    /// Wraps `body` in the current format.
    pub fn new(request_id: Option<String>, body: T) -> Envelope<T> {
        Envelope {
            v: WIRE_VERSION,
            request_id,
            body,
        }
    }

    /// The bytes sent on the wire (JSON).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an envelope, refusing formats newer than this release.
    pub fn decode(bytes: &[u8]) -> Result<Envelope<T>, WireError> {
        #[derive(Deserialize)]
        struct Version {
            v: u16,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|error| WireError::Malformed(error.to_string()))?;
        if version.v > WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(version.v));
        }
        serde_json::from_slice(bytes).map_err(|error| WireError::Malformed(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ObjectId {
        ObjectId::from_parts(n, [4; 5], n)
    }

    #[test]
    fn requests_round_trip_through_the_wire() {
        let requests = vec![
            TicketRequest::Create {
                title: Title::parse("show").unwrap(),
                price: Price::from_cents(1250).unwrap(),
                owner: UserId(id(1)),
            },
            TicketRequest::Reserve {
                order_id: OrderId(id(2)),
                expires_at: Timestamp::from_millis(99),
            },
            TicketRequest::ReconcileHold,
        ];
        for request in requests {
            let envelope = Envelope::new(Some("r-1".into()), request.clone());
            let decoded = Envelope::<TicketRequest>::decode(&envelope.encode()).unwrap();
            assert_eq!(decoded.body, request);
            assert_eq!(decoded.request_id.as_deref(), Some("r-1"));
        }
        let pay = OrderRequest::Pay {
            by: UserId(id(3)),
            token: "tok_visa".into(),
            client_key: None,
        };
        let decoded =
            Envelope::<OrderRequest>::decode(&Envelope::new(None, pay.clone()).encode()).unwrap();
        assert_eq!(decoded.body, pay);
    }

    #[test]
    fn newer_formats_and_invalid_values_are_refused() {
        let newer = br#"{"v":2,"requestId":null,"body":{"type":"get"}}"#;
        assert_eq!(
            Envelope::<TicketRequest>::decode(newer),
            Err(WireError::UnsupportedVersion(2))
        );
        let bad_title = br#"{"v":1,"requestId":null,"body":{"type":"create","title":"","price":100,"owner":"5f1d7a2b3c4d5e6f70818293"}}"#;
        assert!(matches!(
            Envelope::<TicketRequest>::decode(bad_title),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn errors_travel_too() {
        let error = ActorError::Overloaded {
            retry_after: Duration::from_secs(3),
        };
        let text =
            serde_json::to_string(&Envelope::new(None, Err::<Answer, _>(error.clone()))).unwrap();
        let decoded: Envelope<Result<Answer, ActorError>> = serde_json::from_str(&text).unwrap();
        assert!(matches!(decoded.body, Err(ActorError::Overloaded { .. })));
    }
}
