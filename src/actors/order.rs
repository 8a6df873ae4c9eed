//! `OrderActor`: serialises every transition of one order, payment and expiry included.
//!
//! Because `Pay` and `Expire` queue in the same mailbox, one of them wins, never both. A
//! charge is persisted as `awaiting:payment` before the gateway is called and decided after it
//! answers. What the order owes its ticket (release, sale) is written to the outbox in the same
//! commit and delivered at once, then redelivered until done if that fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::entity::{EntityActor, EntityArgs, EntityCell, EntityKind, Snapshot};
use super::ticket::{Staleable, TicketMsg};
use super::{ActorError, RequestContext, Runtime, transition};
use crate::domain::{
    BeginPayment, Change, ExpireOutcome, Order, OrderId, OrderRefusal, OrderStatus, Payment,
    PaymentAttempt, PaymentId, TicketId, TicketSnapshot, UserId,
};
use crate::payments::{ChargeRequest, PaymentError};
use crate::store::{Command, DeadlineKind, EntityWrite, Stored, UnitOfWork};

type Reply<T> = RpcReplyPort<Result<T, ActorError>>;

/// How often a charge is asked again when the gateway is unreachable, before giving up for now.
const CHARGE_ATTEMPTS: u32 = 3;

/// Messages an order actor handles.
pub enum OrderMsg {
    /// Reserves the ticket and creates the order (the actor's id is the new order's id).
    Create {
        user: UserId,
        ticket_id: TicketId,
        context: RequestContext,
        reply: Reply<Order>,
    },
    /// Answers the current state.
    Get { reply: Reply<Order> },
    /// Cancels the order at its owner's request.
    Cancel {
        by: UserId,
        context: RequestContext,
        reply: Reply<Order>,
    },
    /// The expiry timer fired.
    Expire {
        context: RequestContext,
        reply: Reply<()>,
    },
    /// Charges the order's price and completes it.
    Pay {
        by: UserId,
        token: String,
        client_key: Option<String>,
        context: RequestContext,
        reply: Reply<Payment>,
    },
    /// Settles a charge left in flight (start-up reconciliation).
    Reconcile {
        context: RequestContext,
        reply: Reply<()>,
    },
}

/// The actor of one order.
pub struct OrderActor;

/// An order actor's state: the stored record, if the order exists.
pub struct OrderState {
    id: OrderId,
    cell: Arc<EntityCell>,
    runtime: Arc<Runtime>,
    record: Option<Stored<Order>>,
}

impl EntityActor for OrderActor {
    const KIND: EntityKind = EntityKind::Order;
    fn create() -> Self {
        OrderActor
    }
}

fn status_word(order: Option<&Order>) -> &'static str {
    order.map_or("absent", |order| order.status.as_str())
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
        state.runtime.crash_if_armed(EntityKind::Order, state.id.0);
        let stale = match message {
            OrderMsg::Create {
                user,
                ticket_id,
                context,
                reply,
            } => answer(reply, state.create(user, ticket_id, &context).await),
            OrderMsg::Get { reply } => answer(reply, state.current().cloned()),
            OrderMsg::Cancel { by, context, reply } => {
                answer(reply, state.cancel(by, &context).await)
            }
            OrderMsg::Expire { context, reply } => answer(reply, state.expire(&context).await),
            OrderMsg::Pay {
                by,
                token,
                client_key,
                context,
                reply,
            } => answer(
                reply,
                state.pay(by, &token, client_key.as_deref(), &context).await,
            ),
            OrderMsg::Reconcile { context, reply } => {
                answer(reply, state.reconcile(&context).await)
            }
        };
        state.cell.record_service_time(started.elapsed());
        if stale {
            myself.stop(Some("stale: version conflict".into()));
        }
        Ok(())
    }
}

fn answer<T>(reply: Reply<T>, result: Result<T, Staleable>) -> bool {
    let (result, stale) = match result {
        Ok(value) => (Ok(value), false),
        Err(Staleable { error, stale }) => (Err(error), stale),
    };
    let _ = reply.send(result);
    stale
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

impl OrderState {
    fn current(&self) -> Result<&Order, Staleable> {
        self.record
            .as_ref()
            .map(|record| &record.state)
            .ok_or_else(|| ActorError::NotFound.into())
    }

    fn publish_snapshot(&self) {
        let order = self.record.as_ref().map(|record| &record.state);
        self.cell.set_snapshot(Snapshot {
            exists: order.is_some(),
            status: status_word(order).to_string(),
            version: order.map(|order| order.version),
        });
    }

    async fn create(
        &mut self,
        user: UserId,
        ticket_id: TicketId,
        context: &RequestContext,
    ) -> Result<Order, Staleable> {
        if self.record.is_some() {
            return Err(ActorError::Internal(format!("order {} already exists", self.id)).into());
        }
        let now = crate::clock::now();
        let ttl = self.runtime.config.order_ttl;
        let expires_at = now.plus(ttl);
        let order_id = self.id;
        let ticket = self
            .runtime
            .tickets
            .call(
                ticket_id.0,
                |reply| TicketMsg::Reserve {
                    order_id,
                    expires_at,
                    context: context.clone(),
                    reply,
                },
                self.runtime.config.call_timeout,
            )
            .await?;
        let snapshot = TicketSnapshot {
            id: ticket.id,
            title: ticket.title.as_str().to_string(),
            price: ticket.price,
            version: ticket.version,
        };
        let change = Order::create(self.id, user, snapshot, now, ttl);
        match self.persist("Create", context, change, None).await {
            Ok((order, _)) => Ok(order),
            Err(error) => {
                // The reservation carries the order's deadline, so it frees itself even if this
                // release is lost too.
                let release = Command::ReleaseTicket {
                    ticket_id,
                    order_id,
                };
                self.runtime.deliver(None, release).await;
                Err(error)
            }
        }
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
        let order = self.current()?.clone();
        match order.expire(crate::clock::now()) {
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

    async fn pay(
        &mut self,
        by: UserId,
        token: &str,
        client_key: Option<&str>,
        context: &RequestContext,
    ) -> Result<Payment, Staleable> {
        let order = self.current()?.clone();
        match order.begin_payment(by, token, client_key, crate::clock::now())? {
            BeginPayment::ExpiredFirst(change) => {
                let release = self.release_command();
                self.persist("Expire", context, change, Some(release))
                    .await?;
                Err(OrderRefusal::CannotPayCancelled.into())
            }
            BeginPayment::Charge(change, attempt) => {
                self.persist("Pay", context, change, None).await?;
                self.charge(attempt, context).await
            }
            BeginPayment::Resume(attempt) => self.charge(attempt, context).await,
        }
    }

    async fn reconcile(&mut self, context: &RequestContext) -> Result<(), Staleable> {
        let order = self.current()?.clone();
        match (&order.status, &order.payment) {
            (OrderStatus::AwaitingPayment, Some(attempt)) => {
                let attempt = attempt.clone();
                match self.charge(attempt, context).await {
                    Ok(_) => Ok(()),
                    Err(Staleable {
                        error: ActorError::Payment(PaymentError::Unavailable(_)),
                        stale,
                    }) => Err(Staleable {
                        error: ActorError::Unavailable {
                            retry_after: Duration::from_secs(5),
                        },
                        stale,
                    }),
                    // A declined charge is an answer: the order is settled.
                    Err(Staleable { stale: false, .. }) => Ok(()),
                    Err(error) => Err(error),
                }
            }
            _ => Ok(()),
        }
    }

    /// Asks the gateway for the charge of `attempt` (the order is `awaiting:payment`) and
    /// persists what it says. When the gateway cannot be reached, the order stays awaiting
    /// payment: its outcome is unknown until the gateway is asked again with the same key.
    async fn charge(
        &mut self,
        attempt: PaymentAttempt,
        context: &RequestContext,
    ) -> Result<Payment, Staleable> {
        let request = ChargeRequest {
            amount_cents: attempt.amount.cents(),
            currency: "usd".into(),
            source: attempt.token.clone(),
            idempotency_key: attempt.idempotency_key.clone(),
        };
        let mut outcome = self.runtime.gateway.charge(&request).await;
        let mut tries = 1;
        while matches!(outcome, Err(PaymentError::Unavailable(_))) && tries < CHARGE_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(tries * tries))).await;
            outcome = self.runtime.gateway.charge(&request).await;
            tries += 1;
        }
        let order = self.current()?.clone();
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
            .record
            .as_ref()
            .map(|record| record.state.ticket.id)
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
        let expected_version = self.record.as_ref().map(|record| record.state.version);
        let from = status_word(self.record.as_ref().map(|record| &record.state));
        let entry = transition(
            message,
            context,
            from,
            change.state.status.as_str(),
            change.state.version,
            &change.events,
        );
        let mut record = self
            .record
            .clone()
            .unwrap_or_else(|| Stored::new(change.state.clone()));
        record.advance(change.state.clone(), entry.clone());
        let receipt = self
            .runtime
            .persist(UnitOfWork {
                writes: vec![EntityWrite::Order {
                    expected_version,
                    record: record.clone(),
                }],
                events: change.events,
                commands: command.into_iter().collect(),
                payments: payment.into_iter().collect(),
                ..UnitOfWork::default()
            })
            .await?;
        self.record = Some(record);
        self.publish_snapshot();
        self.runtime.announce(EntityKind::Order, self.id.0, &entry);
        self.sync_timer().await;
        let command_id = receipt.command_ids.first().copied();
        if let (Some(command), Some(command_id)) = (command, command_id) {
            self.runtime.deliver(Some(command_id), command).await;
        }
        Ok((change.state, command_id))
    }

    async fn sync_timer(&self) {
        let due = self
            .record
            .as_ref()
            .and_then(|record| record.state.deadline());
        self.runtime
            .sync_timer(DeadlineKind::OrderExpiry, self.id.0, due)
            .await;
    }
}
