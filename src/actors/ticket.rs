//! `TicketActor`: serialises every transition of one ticket.
//!
//! Competing `Reserve`s queue in its mailbox, so exactly one wins. Each transition is decided by
//! the domain, persisted (version compare-and-set, events in the outbox, deadline indexed) and
//! only then answered. A reservation past its deadline is settled by reading the holding order's
//! stored state (never by calling the order actor, so two actors never wait on each other).

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::entity::{EntityActor, EntityArgs, EntityCell, EntityKind};
use super::held::{Held, Staleable};
use super::request::{Answer, TicketRequest};
use super::{ActorError, RequestContext, Runtime};
use crate::domain::{
    Change, Hold, HolderStatus, OrderId, Price, ReserveDecision, Ticket, TicketId, TicketRefusal,
    Timestamp, Title, UserId,
};
use crate::store::{DeadlineKind, UnitOfWork};

type Reply = RpcReplyPort<Result<Answer, ActorError>>;

/// Messages a ticket actor handles.
pub enum TicketMsg {
    /// A request, from this node or routed from another.
    Request {
        request: TicketRequest,
        context: RequestContext,
        reply: Reply,
    },
}

/// The actor of one ticket.
pub struct TicketActor;

/// A ticket actor's state: the stored record, if the ticket exists.
pub struct TicketState {
    id: TicketId,
    cell: Arc<EntityCell>,
    runtime: Arc<Runtime>,
    held: Held<Ticket>,
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
            held: Held::new(record),
        };
        state.cell.set_snapshot(state.held.snapshot());
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
        let TicketMsg::Request {
            request,
            context,
            reply,
        } = message;
        if request.is_from_client() {
            state.cell.note_client_request();
        }
        let result = match state
            .runtime
            .check_serving(EntityKind::Ticket, state.cell.shard)
        {
            // Boxed: the handler's future is large, and ractor keeps the processing loop's
            // future (which would hold it inline) for as long as the actor lives.
            Ok(()) => Box::pin(state.handle_request(request, &context)).await,
            Err(error) => Err(error.into()),
        };
        let stale = answer(reply, result);
        state.cell.record_service_time(started.elapsed());
        if stale {
            // Another activation wrote this ticket: this copy must not serve it any more.
            state.cell.retire();
            myself.stop(Some("stale: version conflict".into()));
        }
        Ok(())
    }
}

/// Sends the answer and says whether it was a version conflict (the actor is stale).
pub(crate) fn answer(
    reply: RpcReplyPort<Result<Answer, ActorError>>,
    result: Result<Answer, Staleable>,
) -> bool {
    let (result, stale) = match result {
        Ok(value) => (Ok(value), false),
        Err(Staleable { error, stale }) => (Err(error), stale),
    };
    let _ = reply.send(result);
    stale
}

impl TicketState {
    async fn handle_request(
        &mut self,
        request: TicketRequest,
        context: &RequestContext,
    ) -> Result<Answer, Staleable> {
        let name = request.name();
        let ticket = |ticket: Ticket| Answer::Ticket(Box::new(ticket));
        match request {
            TicketRequest::Create {
                title,
                price,
                owner,
            } => self.create(title, price, owner, context).await.map(ticket),
            TicketRequest::Get => self.current().cloned().map(ticket),
            TicketRequest::Update { by, title, price } => {
                let change = self.current()?.update(by, title, price)?;
                self.persist(name, context, change).await.map(ticket)
            }
            TicketRequest::Reserve {
                order_id,
                expires_at,
            } => self
                .reserve(order_id, expires_at, context)
                .await
                .map(ticket),
            TicketRequest::Release { order_id } => {
                if let Some(change) = self.current()?.release(order_id) {
                    self.persist(name, context, change).await?;
                }
                Ok(Answer::Done)
            }
            TicketRequest::MarkSold { order_id } => {
                let current = self.current()?;
                match current.mark_sold(order_id) {
                    Ok(Some(change)) => {
                        self.persist(name, context, change).await?;
                    }
                    Ok(None) => {}
                    Err(refusal) => {
                        tracing::error!(ticket = %self.id, order = %order_id, holder = ?current.order_id(), "a paid order's ticket is held by another order");
                        return Err(refusal.into());
                    }
                }
                Ok(Answer::Done)
            }
            TicketRequest::ResolveHold => self.resolve_hold(context).await.map(|()| Answer::Done),
            TicketRequest::ReconcileHold => {
                self.reconcile_hold(context).await.map(|()| Answer::Done)
            }
        }
    }

    fn current(&self) -> Result<&Ticket, Staleable> {
        self.held.current()
    }

    async fn create(
        &mut self,
        title: Title,
        price: Price,
        owner: UserId,
        context: &RequestContext,
    ) -> Result<Ticket, Staleable> {
        if let Some(existing) = self.held.get() {
            // Ids are new for each request, so an existing ticket is this request's own earlier
            // attempt (a routed request asked again after a timeout): answer it again.
            if existing.owner == owner && existing.title == title && existing.price == price {
                return Ok(existing.clone());
            }
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
        Ok(self.runtime.holder_status(holder).await?)
    }

    /// Persists a change (compare-and-set on the current version) and adopts it.
    async fn persist(
        &mut self,
        message: &str,
        context: &RequestContext,
        change: Change<Ticket>,
    ) -> Result<Ticket, Staleable> {
        let fence = self.runtime.fence(EntityKind::Ticket, self.cell.shard)?;
        let staged = self.held.stage(message, context, &change);
        self.runtime
            .persist(UnitOfWork {
                writes: vec![staged.write()],
                events: change.events,
                fence,
                ..UnitOfWork::default()
            })
            .await?;
        self.held.adopt(staged);
        self.cell.set_snapshot(self.held.snapshot());
        self.runtime
            .announce(EntityKind::Ticket, self.id.0, self.held.latest());
        self.sync_timer().await;
        Ok(change.state)
    }

    async fn sync_timer(&self) {
        let due = self
            .held
            .get()
            .and_then(Ticket::deadline)
            .map(|deadline| deadline.plus(self.runtime.config.hold_grace));
        self.runtime
            .sync_timer(DeadlineKind::TicketReservation, self.id.0, due)
            .await;
    }
}
