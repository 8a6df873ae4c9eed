//! What an entity actor holds: its entity's stored record, and how a change of it is staged for
//! the store (compare-and-set on the current version, the transition appended to the history).
//!
//! Owns the bookkeeping every entity actor repeats, so the ticket and order actors keep only
//! their decisions. It must not commit anything: the actor commits the staged write with the
//! events and commands of the transition, then adopts it.

use std::sync::Arc;

use super::entity::Snapshot;
use super::{ActorError, RequestContext};
use crate::domain::{Change, Order, OrderRefusal, Ticket, TicketRefusal};
use crate::payments::PaymentError;
use crate::store::{EntityWrite, StoreError, Stored, Transition};

/// An error that may mean this activation is stale (another one wrote the entity).
pub(crate) struct Staleable {
    pub error: ActorError,
    pub stale: bool,
}

impl From<ActorError> for Staleable {
    fn from(error: ActorError) -> Self {
        Staleable {
            error,
            stale: false,
        }
    }
}

impl From<TicketRefusal> for Staleable {
    fn from(refusal: TicketRefusal) -> Self {
        ActorError::from(refusal).into()
    }
}

impl From<OrderRefusal> for Staleable {
    fn from(refusal: OrderRefusal) -> Self {
        ActorError::from(refusal).into()
    }
}

impl From<PaymentError> for Staleable {
    fn from(error: PaymentError) -> Self {
        ActorError::from(error).into()
    }
}

/// A store failure; a version conflict means another activation wrote the entity, and a fenced
/// write means another node owns the shard now: either way this activation must stop.
impl From<StoreError> for Staleable {
    fn from(error: StoreError) -> Self {
        let stale = matches!(
            error,
            StoreError::VersionConflict { .. } | StoreError::Fenced { .. }
        );
        Staleable {
            error: error.into(),
            stale,
        }
    }
}

/// An entity an actor can hold and persist.
pub(crate) trait Persistent: Clone {
    /// The entity's version.
    fn version(&self) -> u64;
    /// The status word of transitions and the admin view (`absent` when it does not exist).
    fn status(entity: Option<&Self>) -> &'static str;
    /// Whether no request can change the entity any more.
    fn is_final(_entity: Option<&Self>) -> bool {
        false
    }
    /// The store write of `record`, applied only at `expected_version`.
    fn write(expected_version: Option<u64>, record: Arc<Stored<Self>>) -> EntityWrite;
}

impl Persistent for Ticket {
    fn version(&self) -> u64 {
        self.version
    }

    fn status(ticket: Option<&Ticket>) -> &'static str {
        use crate::domain::Hold;
        match ticket.map(|ticket| ticket.hold) {
            None => "absent",
            Some(None) => "available",
            Some(Some(Hold::Reserved { .. })) => "reserved",
            Some(Some(Hold::Sold { .. })) => "sold",
        }
    }

    fn write(expected_version: Option<u64>, record: Arc<Stored<Ticket>>) -> EntityWrite {
        EntityWrite::Ticket {
            expected_version,
            record,
        }
    }
}

impl Persistent for Order {
    fn version(&self) -> u64 {
        self.version
    }

    fn status(order: Option<&Order>) -> &'static str {
        order.map_or("absent", |order| order.status.as_str())
    }

    fn is_final(order: Option<&Order>) -> bool {
        order.is_some_and(|order| order.status.is_final())
    }

    fn write(expected_version: Option<u64>, record: Arc<Stored<Order>>) -> EntityWrite {
        EntityWrite::Order {
            expected_version,
            record,
        }
    }
}

/// A change ready to be committed: the record with the change applied and its transition last.
pub(crate) struct Staged<T> {
    record: Arc<Stored<T>>,
    expected_version: Option<u64>,
}

impl<T: Persistent> Staged<T> {
    /// The compare-and-set write of the staged record.
    pub fn write(&self) -> EntityWrite {
        T::write(self.expected_version, Arc::clone(&self.record))
    }
}

/// The record an actor holds, if its entity exists.
pub(crate) struct Held<T> {
    record: Option<Arc<Stored<T>>>,
}

impl<T: Persistent> Held<T> {
    /// Holds what the store returned.
    pub fn new(record: Option<Stored<T>>) -> Held<T> {
        Held {
            record: record.map(Arc::new),
        }
    }

    /// The entity, or `NotFound`.
    pub fn current(&self) -> Result<&T, Staleable> {
        self.record
            .as_ref()
            .map(|record| &record.state)
            .ok_or_else(|| ActorError::NotFound.into())
    }

    /// The entity, if it exists.
    pub fn get(&self) -> Option<&T> {
        self.record.as_ref().map(|record| &record.state)
    }

    /// What the directory shows about the entity.
    pub fn snapshot(&self) -> Snapshot {
        let entity = self.get();
        Snapshot {
            exists: entity.is_some(),
            status: T::status(entity).to_string(),
            version: entity.map(Persistent::version),
            is_final: T::is_final(entity),
        }
    }

    /// Stages `change`, caused by `message`, for the store.
    pub fn stage(&self, message: &str, context: &RequestContext, change: &Change<T>) -> Staged<T> {
        let expected_version = self.get().map(Persistent::version);
        let entry = Transition::new(
            message,
            context.request_id.clone(),
            T::status(self.get()),
            T::status(Some(&change.state)),
            change.state.version(),
            &change.events,
        );
        let mut record = self
            .record
            .as_deref()
            .cloned()
            .unwrap_or_else(|| Stored::new(change.state.clone()));
        record.advance(change.state.clone(), entry);
        Staged {
            record: Arc::new(record),
            expected_version,
        }
    }

    /// Adopts a staged change once it is committed.
    pub fn adopt(&mut self, staged: Staged<T>) {
        self.record = Some(staged.record);
    }

    /// The transition of the last change (the one just adopted), if any.
    pub fn latest(&self) -> Option<&Transition> {
        self.record
            .as_ref()
            .and_then(|record| record.transitions.last())
    }
}
