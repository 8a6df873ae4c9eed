//! Domain events: what happened to a ticket, an order or a payment, in the contract's words.
//!
//! Owns each event's name, payload and id. Ids are derived from the entity and its version, so a
//! transition re-published after a crash carries the same id and subscribers can de-duplicate.
//! It must not publish anything: events are written with the state (the outbox) and relayed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::id::{OrderId, PaymentId, TicketId, UserId};
use super::order::OrderStatus;
use super::ticket::Price;
use super::time::Timestamp;

/// One domain event, as written to the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "camelCase")]
pub enum DomainEvent {
    /// A ticket was put on sale.
    TicketCreated {
        id: TicketId,
        version: u64,
        title: String,
        price: Price,
        user_id: UserId,
    },
    /// A ticket's title, price or holder changed.
    TicketUpdated {
        id: TicketId,
        version: u64,
        title: String,
        price: Price,
        user_id: UserId,
        order_id: Option<OrderId>,
    },
    /// An order reserved a ticket.
    OrderCreated {
        id: OrderId,
        version: u64,
        status: OrderStatus,
        user_id: UserId,
        expires_at: Timestamp,
        ticket_id: TicketId,
        price: Price,
    },
    /// An order was cancelled by its owner or by expiry.
    OrderCancelled {
        id: OrderId,
        version: u64,
        ticket_id: TicketId,
    },
    /// An order was paid.
    OrderCompleted {
        id: OrderId,
        version: u64,
        ticket_id: TicketId,
    },
    /// An order's time ran out before it was paid.
    ExpirationComplete { order_id: OrderId, version: u64 },
    /// A charge succeeded for an order.
    PaymentCreated {
        id: PaymentId,
        order_id: OrderId,
        order_version: u64,
        stripe_id: String,
    },
}

impl DomainEvent {
    /// The contract's name, e.g. `ticket.created` (the NATS subject is `boxoffice.events.<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            DomainEvent::TicketCreated { .. } => "ticket.created",
            DomainEvent::TicketUpdated { .. } => "ticket.updated",
            DomainEvent::OrderCreated { .. } => "order.created",
            DomainEvent::OrderCancelled { .. } => "order.cancelled",
            DomainEvent::OrderCompleted { .. } => "order.completed",
            DomainEvent::ExpirationComplete { .. } => "expiration.complete",
            DomainEvent::PaymentCreated { .. } => "payment.created",
        }
    }

    /// A unique, deterministic id: name, entity and the entity version it belongs to.
    pub fn id(&self) -> String {
        use std::fmt::Write as _;
        let (entity, version) = match self {
            DomainEvent::TicketCreated { id, version, .. }
            | DomainEvent::TicketUpdated { id, version, .. } => (id.0, *version),
            DomainEvent::OrderCreated { id, version, .. }
            | DomainEvent::OrderCancelled { id, version, .. }
            | DomainEvent::OrderCompleted { id, version, .. } => (id.0, *version),
            DomainEvent::ExpirationComplete { order_id, version } => (order_id.0, *version),
            DomainEvent::PaymentCreated {
                order_id,
                order_version,
                ..
            } => (order_id.0, *order_version),
        };
        // Two ids per write: one allocation of the final size, not one per part.
        let mut text = String::with_capacity(self.name().len() + 1 + 24 + 1 + 20);
        let _ = write!(text, "{}:{entity}:{version}", self.name());
        text
    }

    /// The payload exactly as the contract's event table gives it (camelCase keys).
    pub fn payload(&self) -> Value {
        match self {
            DomainEvent::TicketCreated {
                id,
                version,
                title,
                price,
                user_id,
            } => json!({
                "id": id, "version": version, "title": title,
                "price": price.as_json(), "userId": user_id,
            }),
            DomainEvent::TicketUpdated {
                id,
                version,
                title,
                price,
                user_id,
                order_id,
            } => {
                let mut payload = json!({
                    "id": id, "version": version, "title": title,
                    "price": price.as_json(), "userId": user_id,
                });
                if let Some(order_id) = order_id {
                    payload["orderId"] = json!(order_id);
                }
                payload
            }
            DomainEvent::OrderCreated {
                id,
                version,
                status,
                user_id,
                expires_at,
                ticket_id,
                price,
            } => json!({
                "id": id, "version": version, "status": status.as_str(), "userId": user_id,
                "expiresAt": expires_at.to_iso8601(),
                "ticket": {"id": ticket_id, "price": price.as_json()},
            }),
            DomainEvent::OrderCancelled {
                id,
                version,
                ticket_id,
            }
            | DomainEvent::OrderCompleted {
                id,
                version,
                ticket_id,
            } => json!({"id": id, "version": version, "ticket": {"id": ticket_id}}),
            DomainEvent::ExpirationComplete { order_id, .. } => json!({"orderId": order_id}),
            DomainEvent::PaymentCreated {
                id,
                order_id,
                stripe_id,
                ..
            } => json!({"id": id, "orderId": order_id, "stripeId": stripe_id}),
        }
    }
}
