//! The pure domain: users, tickets, orders and payments, their rules and their events.
//!
//! Everything here is plain data and functions: no I/O, no async, no clock, no randomness.
//! Actors decide by calling these functions and persist what they return.

pub mod event;
pub mod id;
pub mod order;
pub mod ticket;
pub mod time;
pub mod user;
pub mod validation;

pub use event::DomainEvent;
pub use id::{InvalidId, ObjectId, OrderId, PaymentId, TicketId, UserId};
pub use order::{
    BeginPayment, ExpireOutcome, Order, OrderRefusal, OrderStatus, Payment, PaymentAttempt,
    TicketSnapshot,
};
pub use ticket::{Hold, HolderStatus, Price, ReserveDecision, Ticket, TicketRefusal, Title};
pub use time::Timestamp;
pub use user::{Email, Password, User};
pub use validation::{FieldError, ValidationErrors};

/// A new state of an entity and the events its transition produced, to be persisted together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<T> {
    /// The entity after the transition.
    pub state: T,
    /// The events, in order; their versions are the versions the transition produced.
    pub events: Vec<DomainEvent>,
}

impl<T> Change<T> {
    /// Pairs a new state with its events.
    pub fn new(state: T, events: Vec<DomainEvent>) -> Change<T> {
        Change { state, events }
    }

    /// Applies a further change to this one's state, keeping both sets of events.
    pub fn then(self, next: impl FnOnce(&T) -> Option<Change<T>>) -> Change<T> {
        match next(&self.state) {
            Some(mut later) => {
                let mut events = self.events;
                events.append(&mut later.events);
                Change::new(later.state, events)
            }
            None => self,
        }
    }
}
