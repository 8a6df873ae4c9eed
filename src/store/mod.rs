//! The `Store` port: durable state of users, tickets, orders and payments, the outbox of events
//! and commands, and the deadline index the timers are rebuilt from.
//!
//! Owns the persistence contract every adapter keeps: a commit is all-or-nothing, durable
//! (fsynced) before it returns, and a compare-and-set on each written entity's version, so two
//! activations of one actor can never both write, checked against the shard's fence epoch when
//! the unit carries one (ARCHITECTURE.md rule 1). It must not decide anything: actors hand it
//! states the domain produced.

mod codec;
mod embedded;
mod mongo;
pub mod seed;

pub use embedded::EmbeddedStore;
pub use mongo::MongoStore;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{
    DomainEvent, Email, Order, OrderId, Payment, Ticket, TicketId, Timestamp, User, UserId,
};

/// How many transitions an entity keeps with its state (the admin view's history).
pub const TRANSITIONS_KEPT: usize = 50;

/// One persisted transition of an entity, kept with its state for inspection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub at: Timestamp,
    /// The message that caused it (`Reserve`, `Expire`, ...).
    pub message: String,
    pub request_id: Option<String>,
    /// Status before and after (`available`, `reserved`, `created`, ...).
    pub from: String,
    pub to: String,
    /// The version written.
    pub version: u64,
    /// Ids of the events the transition produced.
    pub events: Vec<String>,
}

impl Transition {
    /// The transition recorded now: `message` (from the request `request_id`, if any) took the
    /// entity from status `from` to `to` at `version`, producing `events`.
    pub fn new(
        message: &str,
        request_id: Option<String>,
        from: &str,
        to: &str,
        version: u64,
        events: &[DomainEvent],
    ) -> Transition {
        Transition {
            at: crate::clock::now(),
            message: message.to_string(),
            request_id,
            from: from.to_string(),
            to: to.to_string(),
            version,
            events: events.iter().map(DomainEvent::id).collect(),
        }
    }
}

/// An entity's state with its recent transitions, newest last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored<T> {
    pub state: T,
    pub transitions: Vec<Transition>,
}

impl<T> Stored<T> {
    /// A record with no history yet.
    pub fn new(state: T) -> Stored<T> {
        Stored {
            state,
            transitions: Vec::new(),
        }
    }

    /// Replaces the state and appends its transition, keeping the last `TRANSITIONS_KEPT`.
    pub fn advance(&mut self, state: T, transition: Transition) {
        self.state = state;
        self.transitions.push(transition);
        if self.transitions.len() > TRANSITIONS_KEPT {
            let excess = self.transitions.len() - TRANSITIONS_KEPT;
            self.transitions.drain(..excess);
        }
    }
}

/// A write of one entity, applied only if the stored version is still `expected_version`
/// (`None`: the entity must not exist yet). The record is shared with the actor that adopts it
/// once committed, so a write does not copy the entity's history.
#[derive(Clone, Debug)]
pub enum EntityWrite {
    Ticket {
        expected_version: Option<u64>,
        record: Arc<Stored<Ticket>>,
    },
    Order {
        expected_version: Option<u64>,
        record: Arc<Stored<Order>>,
    },
}

/// A message one actor owes another, written in the same commit as the state that owes it, and
/// delivered (at least once) until done. Receivers treat repeats as no-ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    /// The order no longer holds the ticket.
    ReleaseTicket {
        ticket_id: TicketId,
        order_id: OrderId,
    },
    /// The order paid: the ticket is sold to it.
    MarkTicketSold {
        ticket_id: TicketId,
        order_id: OrderId,
    },
}

/// The shard epoch a writer holds. A unit carrying one commits only while the store's epoch for
/// that shard is not higher, checked atomically with the unit's writes: a node paused past its
/// lease, whose shard a new owner took (and fenced with a higher epoch), cannot write even an
/// entity the new owner has not touched yet (ARCHITECTURE.md rule 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The actor kind the shard belongs to (`ticket`, `order`).
    pub kind: String,
    /// The shard number.
    pub shard: u32,
    /// The epoch the writer acquired the shard with.
    pub epoch: u64,
}

/// Everything one transition persists, atomically.
#[derive(Clone, Debug, Default)]
pub struct UnitOfWork {
    /// The writer's shard fence; `None` on a single node, which owns every shard.
    pub fence: Option<Fence>,
    pub writes: Vec<EntityWrite>,
    pub events: Vec<DomainEvent>,
    pub commands: Vec<Command>,
    pub payments: Vec<Payment>,
    /// Outbox commands this unit marks as delivered.
    pub commands_done: Vec<u64>,
}

/// What a commit assigned.
#[derive(Clone, Debug, Default)]
pub struct CommitReceipt {
    /// The outbox ids of the unit's commands, in order.
    pub command_ids: Vec<u64>,
    /// The sequence number of the unit's last event (0 when it had none).
    pub last_event_seq: u64,
}

/// An event as the outbox keeps it: in commit order, with the contract's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub at: Timestamp,
    pub data: Value,
}

impl StoredEvent {
    /// The outbox entry of `event`, numbered `seq`, committed at `at`.
    pub fn new(seq: u64, event: &DomainEvent, at: Timestamp) -> StoredEvent {
        StoredEvent {
            seq,
            id: event.id(),
            name: event.name().to_string(),
            at,
            data: event.payload(),
        }
    }
}

/// Which timer an entity needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeadlineKind {
    /// An unpaid order expires.
    OrderExpiry,
    /// A ticket checks whether its reservation is still wanted.
    TicketReservation,
}

/// An armed deadline, as rebuilt from the store at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Deadline {
    pub due: Timestamp,
    pub kind: DeadlineKind,
    pub entity: crate::domain::ObjectId,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the entity first (or it already exists): nothing was written.
    #[error("version conflict on {entity}: expected {expected:?}, found {found:?}")]
    VersionConflict {
        entity: String,
        expected: Option<u64>,
        found: Option<u64>,
    },
    /// The shard was fenced with a higher epoch than the writer holds: another node owns it now.
    /// Nothing was written; the writer must stop serving the shard.
    #[error("shard {kind}.{shard} is fenced at epoch {stored}; the writer holds {presented}")]
    Fenced {
        kind: String,
        shard: u32,
        stored: u64,
        presented: u64,
    },
    /// Another account has this email.
    #[error("email in use")]
    EmailTaken,
    /// The data directory is used by another process.
    #[error("data directory {0} is in use by another process")]
    InUse(String),
    /// The store failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Durable state.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies every write of `unit` or none, durably, before returning.
    async fn commit(&self, unit: UnitOfWork) -> Result<CommitReceipt, StoreError>;

    /// Raises the fence of shard `shard` of `kind` to `epoch` (a new owner does this when it
    /// acquires the shard); never lowers it. Returns the epoch now stored, which is higher than
    /// `epoch` when a later owner already raised it.
    async fn raise_fence(&self, kind: &str, shard: u32, epoch: u64) -> Result<u64, StoreError>;

    async fn load_ticket(&self, id: TicketId) -> Result<Option<Stored<Ticket>>, StoreError>;
    async fn load_order(&self, id: OrderId) -> Result<Option<Stored<Order>>, StoreError>;

    /// Creates an account; `EmailTaken` when the (normalised) email exists.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;

    /// Tickets no order holds, ordered by id, after `after`.
    async fn list_available_tickets(
        &self,
        after: Option<TicketId>,
        limit: usize,
    ) -> Result<Vec<Ticket>, StoreError>;
    /// A user's orders in creation order.
    async fn list_orders_of_user(&self, user: UserId) -> Result<Vec<Order>, StoreError>;

    /// The outbox's events with `seq > after`, in order.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    /// The highest event sequence written (0 before the first event).
    async fn last_event_seq(&self) -> Result<u64, StoreError>;
    /// The highest event sequence the relay has published.
    async fn published_seq(&self) -> Result<u64, StoreError>;
    async fn set_published_seq(&self, seq: u64) -> Result<(), StoreError>;

    /// Commands not yet delivered, oldest first.
    async fn pending_commands(&self, limit: usize) -> Result<Vec<(u64, Command)>, StoreError>;

    /// Every armed deadline (to rebuild the timers at start).
    async fn deadlines(&self) -> Result<Vec<Deadline>, StoreError>;
    /// Orders left in `awaiting:payment` (to reconcile at start).
    async fn orders_awaiting_payment(&self) -> Result<Vec<Order>, StoreError>;

    /// How many tickets and orders are stored (for metrics and the admin page).
    async fn counts(&self) -> Result<EntityCounts, StoreError>;

    /// Answers quickly when the store can serve (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Stored entity counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EntityCounts {
    pub tickets: u64,
    pub orders: u64,
}
