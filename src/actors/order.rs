//! `OrderActor`: serialises every transition of one order, payment and expiry included.
//!
//! Because `Pay` and `Expire` queue in the same mailbox, one of them wins, never both. A
//! charge is persisted as `awaiting:payment` before the gateway is called and decided after it
//! answers. What the order owes its ticket (release, sale) is written to the outbox in the same
//! commit and delivered at once, then redelivered until done if that fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::entity::{EntityActor, EntityArgs, EntityCell, EntityKind};
use super::held::{Held, Staleable};
use super::request::{Answer, OrderRequest, TicketRequest};
use super::ticket::answer;
use super::{ActorError, RequestContext, Runtime};
use crate::domain::{
    BeginPayment, Change, ExpireOutcome, Order, OrderId, OrderRefusal, OrderStatus, Payment,
    PaymentAttempt, PaymentId, TicketId, TicketSnapshot, UserId,
};
use crate::payments::{Charge, ChargeRequest, PaymentError};
use crate::store::{Command, DeadlineKind, UnitOfWork};

type Reply = RpcReplyPort<Result<Answer, ActorError>>;

/// How often a charge is asked again when the gateway is unreachable, before giving up for now.
const CHARGE_ATTEMPTS: u32 = 3;

/// Messages an order actor handles.
pub enum OrderMsg {
    /// A request, from this node or routed from another.
    Request {
        request: OrderRequest,
        context: RequestContext,
        reply: Reply,
    },
    /// The gateway answered the charge in flight (sent by the task that asked it).
    ChargeFinished {
        attempt: PaymentAttempt,
        outcome: Result<Charge, PaymentError>,
    },
}

/// A request waiting for the charge in flight to be decided.
enum Waiter {
    Pay {
        by: UserId,
        token: String,
        client_key: Option<String>,
        context: RequestContext,
        reply: Reply,
    },
    Reconcile {
        context: RequestContext,
        reply: Reply,
    },
}

/// The actor of one order.
pub struct OrderActor;

/// An order actor's state: the stored record, if the order exists.
pub struct OrderState {
    id: OrderId,
    cell: Arc<EntityCell>,
    runtime: Arc<Runtime>,
    held: Held<Order>,
    /// Requests waiting for the charge in flight, the one that started it first. While a charge
    /// is in flight the actor keeps answering (`Get` shows `awaiting:payment`).
    charge_waiters: Option<Vec<Waiter>>,
}

impl EntityActor for OrderActor {
    const KIND: EntityKind = EntityKind::Order;
    fn create() -> Self {
        OrderActor
    }
}

impl Actor for OrderActor {
    type Msg = OrderMsg;
    type State = OrderState;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let id = OrderId(args.cell.id);
        let record = args.runtime.store.load_order(id).await?;
        let state = OrderState {
            id,
            cell: args.cell,
            runtime: args.runtime,
            held: Held::new(record),
            charge_waiters: None,
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
        state.runtime.crash_if_armed(EntityKind::Order, state.id.0);
        if let OrderMsg::Request { request, .. } = &message
            && request.is_from_client()
        {
            state.cell.note_client_request();
        }
        // Boxed: the handlers' futures are large, and ractor keeps the processing loop's future
        // (which would hold them inline) for as long as the actor lives.
        let stale = Box::pin(state.handle_message(&myself, message)).await;
        state.cell.record_service_time(started.elapsed());
        if stale {
            state.cell.retire();
            myself.stop(Some("stale: version conflict".into()));
        }
        Ok(())
    }
}

impl OrderState {
    /// Handles one message; true when it met a version conflict (this copy is stale).
    async fn handle_message(&mut self, myself: &ActorRef<OrderMsg>, message: OrderMsg) -> bool {
        let order = |order: Order| Answer::Order(Box::new(order));
        match message {
            // A request queued while this node still served the shard (`check_serving`).
            OrderMsg::Request { reply, .. }
                if self
                    .runtime
                    .check_serving(EntityKind::Order, self.cell.shard)
                    .is_err() =>
            {
                answer(reply, Err(ActorError::NotServedHere.into()))
            }
            OrderMsg::Request {
                request,
                context,
                reply,
            } => match request {
                OrderRequest::Create { user, ticket_id } => answer(
                    reply,
                    self.create(user, ticket_id, &context).await.map(order),
                ),
                OrderRequest::Get => answer(reply, self.current().cloned().map(order)),
                OrderRequest::Cancel { by } => {
                    answer(reply, self.cancel(by, &context).await.map(order))
                }
                OrderRequest::Expire => {
                    answer(reply, self.expire(&context).await.map(|()| Answer::Done))
                }
                OrderRequest::Pay {
                    by,
                    token,
                    client_key,
                } => {
                    let waiter = Waiter::Pay {
                        by,
                        token,
                        client_key,
                        context,
                        reply,
                    };
                    self.begin(myself, waiter).await
                }
                OrderRequest::Reconcile => {
                    self.begin(myself, Waiter::Reconcile { context, reply })
                        .await
                }
            },
            OrderMsg::ChargeFinished { attempt, outcome } => {
                self.finish_charge(myself, attempt, outcome).await
            }
        }
    }

    fn current(&self) -> Result<&Order, Staleable> {
        self.held.current()
    }

    async fn create(
        &mut self,
        user: UserId,
        ticket_id: TicketId,
        context: &RequestContext,
    ) -> Result<Order, Staleable> {
        if let Some(existing) = self.held.get() {
            // Ids are new for each request: an existing order is this request's own earlier
            // attempt (asked again after a timeout), so answer it again.
            if existing.user_id == user && existing.ticket.id == ticket_id {
                return Ok(existing.clone());
            }
            return Err(ActorError::Internal(format!("order {} already exists", self.id)).into());
        }
        let now = crate::clock::now();
        let ttl = self.runtime.config.order_ttl;
        let expires_at = now.plus(ttl);
        let order_id = self.id;
        let ticket = self
            .runtime
            .ask_ticket(
                ticket_id,
                TicketRequest::Reserve {
                    order_id,
                    expires_at,
                },
                context.clone(),
            )
            .await?
            .into_ticket()?;
        let snapshot = TicketSnapshot {
            id: ticket.id,
            title: ticket.title.as_str().to_string(),
            price: ticket.price,
            version: ticket.version,
        };
        // The order expires when its reservation does. The reservation may be older than this
        // attempt (the runtime reserved first, or an earlier attempt did, and reaching this
        // shard took a fail-over): an order outliving its reservation past the grace would
        // find its ticket freed while it still holds it.
        let held_for = ticket.deadline().unwrap_or(expires_at).since(now);
        let change = Order::create(self.id, user, snapshot, now, held_for);
        // No compensating release when this write fails: another attempt of the same request
        // (routed again after a timeout, to this shard's next owner) may have saved the order,
        // and releasing its ticket then would let a second order take it. The reservation
        // carries the order's deadline and frees itself if no order is ever saved (rule 9).
        self.persist("Create", context, change, None)
            .await
            .map(|(order, _)| order)
    }

    async fn cancel(&mut self, by: UserId, context: &RequestContext) -> Result<Order, Staleable> {
        let order = self.current()?.clone();
        match order.cancel(by)? {
            Some(change) => {
                let release = self.release_command();
                let (order, _) = self
                    .persist("Cancel", context, change, Some(release))
                    .await?;
                Ok(order)
            }
            None => Ok(order),
        }
    }

    async fn expire(&mut self, context: &RequestContext) -> Result<(), Staleable> {
        let outcome = self.current()?.expire(crate::clock::now());
        match outcome {
            ExpireOutcome::Expired(change) => {
                let release = self.release_command();
                self.persist("Expire", context, change, Some(release))
                    .await?;
            }
            ExpireOutcome::NotDue(_) | ExpireOutcome::Deferred | ExpireOutcome::Settled => {
                self.sync_timer().await;
            }
        }
        Ok(())
    }

    /// Handles a payment or a reconciliation: it waits behind the charge in flight, if any,
    /// else it is answered at once (refused, or nothing to do) or starts a charge and is
    /// answered when the gateway has decided (`finish_charge`). Returns whether the actor is
    /// stale.
    async fn begin(&mut self, myself: &ActorRef<OrderMsg>, waiter: Waiter) -> bool {
        if let Some(waiters) = &mut self.charge_waiters {
            waiters.push(waiter);
            return false;
        }
        match waiter {
            Waiter::Pay {
                by,
                token,
                client_key,
                context,
                reply,
            } => {
                self.pay(myself, by, token, client_key, context, reply)
                    .await
            }
            Waiter::Reconcile { context, reply } => self.reconcile(myself, context, reply),
        }
    }

    async fn pay(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        by: UserId,
        token: String,
        client_key: Option<String>,
        context: RequestContext,
        reply: Reply,
    ) -> bool {
        let order = match self.current() {
            Ok(order) => order.clone(),
            Err(error) => return answer(reply, Err(error)),
        };
        let attempt =
            match order.begin_payment(by, &token, client_key.as_deref(), crate::clock::now()) {
                Err(refusal) => return answer(reply, Err(refusal.into())),
                Ok(BeginPayment::ExpiredFirst(change)) => {
                    let release = self.release_command();
                    let result = self
                        .persist("Expire", &context, change, Some(release))
                        .await
                        .and_then(|_| Err(OrderRefusal::CannotPayCancelled.into()));
                    return answer(reply, result);
                }
                Ok(BeginPayment::Charge(change, attempt)) => {
                    if let Err(error) = self.persist("Pay", &context, change, None).await {
                        return answer(reply, Err(error));
                    }
                    attempt
                }
                Ok(BeginPayment::Resume(attempt)) => attempt,
            };
        self.start_charge(myself, attempt);
        self.charge_waiters = Some(vec![Waiter::Pay {
            by,
            token,
            client_key,
            context,
            reply,
        }]);
        false
    }

    /// Settles a charge left in flight by asking the gateway again with the same attempt.
    fn reconcile(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        context: RequestContext,
        reply: Reply,
    ) -> bool {
        let attempt = match self.current() {
            Ok(Order {
                status: OrderStatus::AwaitingPayment,
                payment: Some(attempt),
                ..
            }) => attempt.clone(),
            Ok(_) => return answer(reply, Ok(Answer::Done)),
            Err(error) => return answer(reply, Err(error)),
        };
        self.start_charge(myself, attempt);
        self.charge_waiters = Some(vec![Waiter::Reconcile { context, reply }]);
        false
    }

    /// Asks the gateway in a task of its own, so the actor keeps answering meanwhile; the answer
    /// comes back as `ChargeFinished`. The same idempotency key is used for every try.
    fn start_charge(&self, myself: &ActorRef<OrderMsg>, attempt: PaymentAttempt) {
        let gateway = self.runtime.gateway.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let request = ChargeRequest {
                amount_cents: attempt.amount.cents(),
                currency: "usd".into(),
                source: attempt.token.clone(),
                idempotency_key: attempt.idempotency_key.clone(),
            };
            let mut outcome = gateway.charge(&request).await;
            let mut tries = 1;
            while matches!(outcome, Err(PaymentError::Unavailable(_))) && tries < CHARGE_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(tries * tries))).await;
                outcome = gateway.charge(&request).await;
                tries += 1;
            }
            if myself
                .cast(OrderMsg::ChargeFinished { attempt, outcome })
                .is_err()
            {
                // The actor is gone; the order stays awaiting payment and reconciliation asks
                // the gateway again with the same key.
                tracing::warn!("order actor stopped during a charge");
            }
        });
    }

    /// Persists what the gateway decided and answers everyone who waited: the request that
    /// started the charge gets its outcome; the others are handled afresh (a second payment
    /// then finds the order paid).
    async fn finish_charge(
        &mut self,
        myself: &ActorRef<OrderMsg>,
        attempt: PaymentAttempt,
        outcome: Result<Charge, PaymentError>,
    ) -> bool {
        let mut waiters = self.charge_waiters.take().unwrap_or_default().into_iter();
        let first = waiters.next();
        let context = match &first {
            Some(Waiter::Pay { context, .. } | Waiter::Reconcile { context, .. }) => {
                context.clone()
            }
            None => RequestContext::default(),
        };
        let settled = self.settle(&attempt, outcome, &context).await;
        let is_unavailable = matches!(
            settled,
            Err(Staleable {
                error: ActorError::Payment(PaymentError::Unavailable(_)),
                ..
            })
        );
        let stale = matches!(settled, Err(Staleable { stale: true, .. }));
        match first {
            Some(Waiter::Pay { reply, .. }) => {
                answer(reply, settled.map(Answer::Payment));
            }
            Some(Waiter::Reconcile { reply, .. }) => {
                let result = match settled {
                    Ok(_) => Ok(Answer::Done),
                    Err(error) if is_unavailable || error.stale => Err(error),
                    // A decline is an answer: the charge is settled.
                    Err(_) => Ok(Answer::Done),
                };
                answer(reply, result);
            }
            None => {}
        }
        for waiter in waiters {
            if is_unavailable || stale {
                let error = || {
                    Staleable::from(ActorError::Unavailable {
                        retry_after: Duration::from_secs(5),
                    })
                };
                let (Waiter::Pay { reply, .. } | Waiter::Reconcile { reply, .. }) = waiter;
                answer(reply, Err(error()));
            } else {
                self.begin(myself, waiter).await;
            }
        }
        stale
    }

    /// Persists the gateway's answer for `attempt`.
    async fn settle(
        &mut self,
        attempt: &PaymentAttempt,
        outcome: Result<Charge, PaymentError>,
        context: &RequestContext,
    ) -> Result<Payment, Staleable> {
        let order = self.current()?.clone();
        let is_current_attempt = order.status == OrderStatus::AwaitingPayment
            && order
                .payment
                .as_ref()
                .is_some_and(|current| current.idempotency_key == attempt.idempotency_key);
        if !is_current_attempt {
            return Err(ActorError::Internal(format!(
                "charge answer for {} arrived after the order moved on",
                attempt.idempotency_key
            ))
            .into());
        }
        match outcome {
            Ok(charge) => {
                let payment_id = PaymentId(self.runtime.ids.next());
                let (change, payment) = order.complete_payment(payment_id, &charge.id);
                let sold = Command::MarkTicketSold {
                    ticket_id: order.ticket.id,
                    order_id: order.id,
                };
                self.persist_with_payment(
                    "PaymentSucceeded",
                    context,
                    change,
                    sold,
                    payment.clone(),
                )
                .await?;
                Ok(payment)
            }
            Err(PaymentError::Unavailable(reason)) => {
                tracing::warn!(order = %order.id, reason = %reason, "payment gateway unreachable; the charge stays in flight");
                Err(PaymentError::Unavailable(reason).into())
            }
            Err(refusal) => {
                let change = order.fail_payment(crate::clock::now());
                let release =
                    (change.state.status == OrderStatus::Cancelled).then(|| self.release_command());
                self.persist("PaymentFailed", context, change, release)
                    .await?;
                Err(refusal.into())
            }
        }
    }

    fn release_command(&self) -> Command {
        let ticket_id = self
            .held
            .get()
            .map(|order| order.ticket.id)
            .unwrap_or(TicketId(self.id.0));
        Command::ReleaseTicket {
            ticket_id,
            order_id: self.id,
        }
    }

    async fn persist(
        &mut self,
        message: &str,
        context: &RequestContext,
        change: Change<Order>,
        command: Option<Command>,
    ) -> Result<(Order, Option<u64>), Staleable> {
        self.write(message, context, change, command, None).await
    }

    async fn persist_with_payment(
        &mut self,
        message: &str,
        context: &RequestContext,
        change: Change<Order>,
        command: Command,
        payment: Payment,
    ) -> Result<Order, Staleable> {
        self.write(message, context, change, Some(command), Some(payment))
            .await
            .map(|(order, _)| order)
    }

    /// Persists a change with what it owes the ticket (compare-and-set on the current version),
    /// adopts it, then delivers the command.
    async fn write(
        &mut self,
        message: &str,
        context: &RequestContext,
        change: Change<Order>,
        command: Option<Command>,
        payment: Option<Payment>,
    ) -> Result<(Order, Option<u64>), Staleable> {
        let fence = self.runtime.fence(EntityKind::Order, self.cell.shard)?;
        let staged = self.held.stage(message, context, &change);
        let receipt = self
            .runtime
            .persist(UnitOfWork {
                writes: vec![staged.write()],
                events: change.events,
                fence,
                commands: command.into_iter().collect(),
                payments: payment.into_iter().collect(),
                ..UnitOfWork::default()
            })
            .await?;
        self.held.adopt(staged);
        self.cell.set_snapshot(self.held.snapshot());
        self.runtime
            .announce(EntityKind::Order, self.id.0, self.held.latest());
        self.sync_timer().await;
        let command_id = receipt.command_ids.first().copied();
        if let (Some(command), Some(command_id)) = (command, command_id) {
            self.runtime.deliver(Some(command_id), command).await;
        }
        Ok((change.state, command_id))
    }

    async fn sync_timer(&self) {
        let due = self.held.get().and_then(Order::deadline);
        self.runtime
            .sync_timer(DeadlineKind::OrderExpiry, self.id.0, due)
            .await;
    }
}
