//! `TicketActor`: serialises every transition of one ticket.
//!
//! Competing `Reserve`s queue in its mailbox, so exactly one wins. Each transition is decided by
//! the domain, persisted (version compare-and-set, events in the outbox, deadline indexed) and
//! only then answered. A reservation past its deadline is settled by reading the holding order's
//! stored state (never by calling the order actor, so two actors never wait on each other).

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::entity::{EntityActor, EntityArgs, EntityCell, EntityKind, Snapshot};
use super::{ActorError, RequestContext, Runtime, transition};
use crate::domain::{
    Change, Hold, HolderStatus, OrderId, Price, ReserveDecision, Ticket, TicketId, TicketRefusal,
    Timestamp, Title, UserId,
};
use crate::store::{DeadlineKind, EntityWrite, StoreError, Stored, UnitOfWork};

type Reply<T> = RpcReplyPort<Result<T, ActorError>>;

/// Messages a ticket actor handles.
pub enum TicketMsg {
    /// Puts the ticket on sale (the actor's id is the new ticket's id).
    Create {
        title: Title,
        price: Price,
        owner: UserId,
        context: RequestContext,
        reply: Reply<Ticket>,
    },
    /// Answers the current state.
    Get { reply: Reply<Ticket> },
    /// Changes title and price.
    Update {
        by: UserId,
        title: Title,
        price: Price,
        context: RequestContext,
        reply: Reply<Ticket>,
    },
    /// Holds the ticket for an order until `expires_at`.
    Reserve {
        order_id: OrderId,
        expires_at: Timestamp,
        context: RequestContext,
        reply: Reply<Ticket>,
    },
    /// Frees the ticket if `order_id` holds it.
    Release {
        order_id: OrderId,
        context: RequestContext,
        reply: Reply<()>,
    },
    /// Sells the ticket to `order_id`.
    MarkSold {
        order_id: OrderId,
        context: RequestContext,
        reply: Reply<()>,
    },
    /// The reservation's timer fired: settle it if it is past its deadline.
    ResolveHold {
        context: RequestContext,
        reply: Reply<()>,
    },
    /// At start-up: settle a reservation whose order was never saved, was cancelled or paid.
    ReconcileHold {
        context: RequestContext,
        reply: Reply<()>,
    },
}

impl TicketMsg {
    fn name(&self) -> &'static str {
        match self {
            TicketMsg::Create { .. } => "Create",
            TicketMsg::Get { .. } => "Get",
            TicketMsg::Update { .. } => "Update",
            TicketMsg::Reserve { .. } => "Reserve",
            TicketMsg::Release { .. } => "Release",
            TicketMsg::MarkSold { .. } => "MarkSold",
            TicketMsg::ResolveHold { .. } => "ResolveHold",
            TicketMsg::ReconcileHold { .. } => "ReconcileHold",
        }
    }
}

/// The actor of one ticket.
pub struct TicketActor;

/// A ticket actor's state: the stored record, if the ticket exists.
pub struct TicketState {
    id: TicketId,
    cell: Arc<EntityCell>,
    runtime: Arc<Runtime>,
    record: Option<Stored<Ticket>>,
}

/// The status word shown in transitions and the admin view.
pub fn ticket_status(ticket: Option<&Ticket>) -> &'static str {
    match ticket.map(|ticket| ticket.hold) {
        None => "absent",
        Some(None) => "available",
        Some(Some(Hold::Reserved { .. })) => "reserved",
        Some(Some(Hold::Sold { .. })) => "sold",
    }
}

impl EntityActor for TicketActor {
    const KIND: EntityKind = EntityKind::Ticket;
    fn create() -> Self {
        TicketActor
    }
}

impl Actor for TicketActor {
    type Msg = TicketMsg;
    type State = TicketState;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let id = TicketId(args.cell.id);
        let record = args.runtime.store.load_ticket(id).await?;
        let state = TicketState {
            id,
            cell: args.cell,
            runtime: args.runtime,
            record,
        };
        state.publish_snapshot();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let started = Instant::now();
        state.runtime.crash_if_armed(EntityKind::Ticket, state.id.0);
        let name = message.name();
        let stale = match message {
            TicketMsg::Create {
                title,
                price,
                owner,
                context,
                reply,
            } => {
                let result = state.create(title, price, owner, &context).await;
                answer(reply, result)
            }
            TicketMsg::Get { reply } => answer(reply, state.current().cloned()),
            TicketMsg::Update {
                by,
                title,
                price,
                context,
                reply,
            } => {
                let result = match state.current() {
                    Ok(ticket) => match ticket.update(by, title, price) {
                        Ok(change) => state.persist(name, &context, change).await,
                        Err(refusal) => Err(refusal.into()),
                    },
                    Err(error) => Err(error),
                };
                answer(reply, result)
            }
            TicketMsg::Reserve {
                order_id,
                expires_at,
                context,
                reply,
            } => {
                let result = state.reserve(order_id, expires_at, &context).await;
                answer(reply, result)
            }
            TicketMsg::Release {
                order_id,
                context,
                reply,
            } => {
                let result = match state.current() {
                    Ok(ticket) => match ticket.release(order_id) {
                        Some(change) => state.persist(name, &context, change).await.map(|_| ()),
                        None => Ok(()),
                    },
                    Err(error) => Err(error),
                };
                answer(reply, result)
            }
            TicketMsg::MarkSold {
                order_id,
                context,
                reply,
            } => {
                let result = match state.current() {
                    Ok(ticket) => match ticket.mark_sold(order_id) {
                        Ok(Some(change)) => state.persist(name, &context, change).await.map(|_| ()),
                        Ok(None) => Ok(()),
                        Err(refusal) => {
                            tracing::error!(ticket = %state.id, order = %order_id, holder = ?ticket.order_id(), "a paid order's ticket is held by another order");
                            Err(refusal.into())
                        }
                    },
                    Err(error) => Err(error),
                };
                answer(reply, result)
            }
            TicketMsg::ResolveHold { context, reply } => {
                let result = state.resolve_hold(&context).await;
                answer(reply, result)
            }
            TicketMsg::ReconcileHold { context, reply } => {
                let result = state.reconcile_hold(&context).await;
                answer(reply, result)
            }
        };
        state.cell.record_service_time(started.elapsed());
        if stale {
            // Another activation wrote this ticket: this copy must not serve it any more.
            myself.stop(Some("stale: version conflict".into()));
        }
        Ok(())
    }
}

/// Sends the answer and says whether it was a version conflict (the actor is stale).
fn answer<T>(reply: Reply<T>, result: Result<T, Staleable>) -> bool {
    let (result, stale) = match result {
        Ok(value) => (Ok(value), false),
        Err(Staleable { error, stale }) => (Err(error), stale),
    };
    let _ = reply.send(result);
    stale
}

/// An error that may mean this activation is stale.
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

impl From<StoreError> for Staleable {
    fn from(error: StoreError) -> Self {
        // A fenced write means another node owns the shard now: stop like a stale activation.
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

impl TicketState {
    fn current(&self) -> Result<&Ticket, Staleable> {
        self.record
            .as_ref()
            .map(|record| &record.state)
            .ok_or_else(|| ActorError::NotFound.into())
    }

    fn publish_snapshot(&self) {
        let ticket = self.record.as_ref().map(|record| &record.state);
        self.cell.set_snapshot(Snapshot {
            exists: ticket.is_some(),
            status: ticket_status(ticket).to_string(),
            version: ticket.map(|ticket| ticket.version),
        });
    }

    async fn create(
        &mut self,
        title: Title,
        price: Price,
        owner: UserId,
        context: &RequestContext,
    ) -> Result<Ticket, Staleable> {
        if self.record.is_some() {
            return Err(ActorError::Internal(format!("ticket {} already exists", self.id)).into());
        }
        let change = Ticket::create(self.id, title, price, owner);
        self.persist("Create", context, change).await
    }

    async fn reserve(
        &mut self,
        order_id: OrderId,
        expires_at: Timestamp,
        context: &RequestContext,
    ) -> Result<Ticket, Staleable> {
        let ticket = self.current()?.clone();
        let now = crate::clock::now();
        let grace = self.runtime.config.hold_grace;
        match ticket.reserve(order_id, expires_at, now, grace) {
            ReserveDecision::Reserved(change) => self.persist("Reserve", context, change).await,
            ReserveDecision::AlreadyHeld => Ok(ticket),
            ReserveDecision::Refused => Err(TicketRefusal::AlreadyReserved.into()),
            ReserveDecision::AskHolder(holder) => {
                let status = self.holder_status(holder).await?;
                let Some(settled) = ticket.resolve_stale_hold(holder, status) else {
                    return Err(TicketRefusal::AlreadyReserved.into());
                };
                let change =
                    settled.then(
                        |freed| match freed.reserve(order_id, expires_at, now, grace) {
                            ReserveDecision::Reserved(change) => Some(change),
                            _ => None,
                        },
                    );
                let held_by_us = change.state.order_id() == Some(order_id);
                let ticket = self.persist("Reserve", context, change).await?;
                if held_by_us {
                    Ok(ticket)
                } else {
                    Err(TicketRefusal::AlreadyReserved.into())
                }
            }
        }
    }

    async fn resolve_hold(&mut self, context: &RequestContext) -> Result<(), Staleable> {
        let ticket = self.current()?.clone();
        let Some(Hold::Reserved {
            order_id,
            expires_at,
        }) = ticket.hold
        else {
            return Ok(());
        };
        if crate::clock::now() <= expires_at.plus(self.runtime.config.hold_grace) {
            // Fired early (the deadline moved): re-arm.
            self.sync_timer().await;
            return Ok(());
        }
        let status = self.holder_status(order_id).await?;
        if let Some(change) = ticket.resolve_stale_hold(order_id, status) {
            self.persist("ResolveHold", context, change).await?;
        }
        Ok(())
    }

    async fn reconcile_hold(&mut self, context: &RequestContext) -> Result<(), Staleable> {
        let ticket = self.current()?.clone();
        let Some(Hold::Reserved { order_id, .. }) = ticket.hold else {
            return Ok(());
        };
        let status = self.holder_status(order_id).await?;
        if let Some(change) = ticket.reconcile_hold(order_id, status) {
            self.persist("ReconcileHold", context, change).await?;
        }
        Ok(())
    }

    /// The holding order's status as stored: the order is the authority on its outcome.
    async fn holder_status(&self, holder: OrderId) -> Result<HolderStatus, Staleable> {
        let order = self.runtime.store.load_order(holder).await?;
        Ok(order.map_or(HolderStatus::Missing, |record| {
            record.state.status.as_holder_status()
        }))
    }

    /// Persists a change (compare-and-set on the current version) and adopts it.
    async fn persist(
        &mut self,
        message: &str,
        context: &RequestContext,
        change: Change<Ticket>,
    ) -> Result<Ticket, Staleable> {
        let expected_version = self.record.as_ref().map(|record| record.state.version);
        let from = ticket_status(self.record.as_ref().map(|record| &record.state));
        let to = ticket_status(Some(&change.state));
        let entry = transition(
            message,
            context,
            from,
            to,
            change.state.version,
            &change.events,
        );
        let mut record = self
            .record
            .clone()
            .unwrap_or_else(|| Stored::new(change.state.clone()));
        record.advance(change.state.clone(), entry.clone());
        self.runtime
            .persist(UnitOfWork {
                writes: vec![EntityWrite::Ticket {
                    expected_version,
                    record: record.clone(),
                }],
                events: change.events,
                ..UnitOfWork::default()
            })
            .await?;
        self.record = Some(record);
        self.publish_snapshot();
        self.runtime.announce(EntityKind::Ticket, self.id.0, &entry);
        self.sync_timer().await;
        Ok(change.state)
    }

    async fn sync_timer(&self) {
        let due = self
            .record
            .as_ref()
            .and_then(|record| record.state.deadline())
            .map(|deadline| deadline.plus(self.runtime.config.hold_grace));
        self.runtime
            .sync_timer(DeadlineKind::TicketReservation, self.id.0, due)
            .await;
    }
}
