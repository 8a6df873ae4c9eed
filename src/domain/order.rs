//! Orders: who ordered which ticket, until when, and how the order ends.
//!
//! Owns the order's state machine: created -> (awaiting:payment) -> complete, or cancelled by
//! its owner or by expiry. Payment and expiry never both win: a charge can only start before the
//! deadline, and an expiry that falls due during a charge is decided after it. It must not do
//! I/O: the order actor persists each change before it acts on it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Change;
use super::event::DomainEvent;
use super::id::{OrderId, PaymentId, TicketId, UserId};
use super::ticket::{HolderStatus, Price};
use super::time::Timestamp;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Holding its ticket, waiting for payment.
    #[serde(rename = "created")]
    Created,
    /// Cancelled by its owner or by expiry; holds nothing.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// A charge is in flight.
    #[serde(rename = "awaiting:payment")]
    AwaitingPayment,
    /// Paid; the ticket is sold to it.
    #[serde(rename = "complete")]
    Complete,
}

impl OrderStatus {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::AwaitingPayment => "awaiting:payment",
            OrderStatus::Complete => "complete",
        }
    }

    /// Whether no operation can change an order in this status any more (cancelled or paid).
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Cancelled | OrderStatus::Complete)
    }

    /// What a ticket held by an order in this status should conclude about its reservation.
    pub fn as_holder_status(self) -> HolderStatus {
        match self {
            OrderStatus::Created => HolderStatus::Created,
            OrderStatus::Cancelled => HolderStatus::Cancelled,
            OrderStatus::AwaitingPayment => HolderStatus::AwaitingPayment,
            OrderStatus::Complete => HolderStatus::Complete,
        }
    }
}

/// The ticket as it was when the order reserved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketSnapshot {
    pub id: TicketId,
    pub title: String,
    pub price: Price,
    pub version: u64,
}

/// A charge the order has started; persisted before the gateway is called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAttempt {
    /// 1 for the first attempt, then 2, ...
    pub number: u32,
    /// The card token to charge (needed to ask the gateway again after a crash).
    pub token: String,
    /// Sent to the gateway so the same attempt never charges twice.
    pub idempotency_key: String,
    /// The amount to charge.
    pub amount: Price,
}

/// The payment made for a completed order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: PaymentId,
    pub order_id: OrderId,
    /// The gateway's charge id.
    pub stripe_id: String,
}

/// A refusal of an order operation, in the contract's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OrderRefusal {
    /// Someone other than the owner asked.
    #[error("Not authorized")]
    NotOwner,
    /// A paid order cannot be cancelled.
    #[error("Cannot cancel a completed order")]
    CannotCancelCompleted,
    /// A charge is in flight; try again when it is decided.
    #[error("Payment is in progress")]
    PaymentInProgress,
    /// The order was cancelled (by its owner or by expiry).
    #[error("Cannot pay for a cancelled order")]
    CannotPayCancelled,
    /// The order was paid already.
    #[error("Order is already paid")]
    AlreadyPaid,
}

/// The outcome of an expiry timer firing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpireOutcome {
    /// The order was unpaid at its deadline: it is cancelled.
    Expired(Change<Order>),
    /// The deadline has not come yet (the timer fired early).
    NotDue(Timestamp),
    /// A charge is in flight: the charge's outcome decides.
    Deferred,
    /// The order is already complete or cancelled.
    Settled,
}

/// The outcome of asking to pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginPayment {
    /// Persist this change (`awaiting:payment`), then charge with this attempt.
    Charge(Change<Order>, PaymentAttempt),
    /// The deadline has passed: persist this cancellation and refuse the payment.
    ExpiredFirst(Change<Order>),
    /// A charge was left in flight (the gateway was unreachable, or the node stopped): ask the
    /// gateway again with the same attempt, whose idempotency key prevents a second charge.
    Resume(PaymentAttempt),
}

/// An order for one ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub ticket: TicketSnapshot,
    pub status: OrderStatus,
    pub expires_at: Timestamp,
    /// Incremented by exactly one on every persisted change.
    pub version: u64,
    pub created_at: Timestamp,
    /// How many charges were started.
    pub attempts: u32,
    /// The charge in flight, while `awaiting:payment`.
    pub payment: Option<PaymentAttempt>,
}

impl Order {
    /// A new order holding `ticket` until `now + ttl`, at version 0.
    pub fn create(
        id: OrderId,
        user_id: UserId,
        ticket: TicketSnapshot,
        now: Timestamp,
        ttl: Duration,
    ) -> Change<Order> {
        let order = Order {
            id,
            user_id,
            status: OrderStatus::Created,
            expires_at: now.plus(ttl),
            version: 0,
            created_at: now,
            attempts: 0,
            payment: None,
            ticket,
        };
        let event = DomainEvent::OrderCreated {
            id,
            version: 0,
            status: OrderStatus::Created,
            user_id,
            expires_at: order.expires_at,
            ticket_id: order.ticket.id,
            price: order.ticket.price,
        };
        Change::new(order, vec![event])
    }

    /// When the expiry timer should fire, while one should be armed.
    pub fn deadline(&self) -> Option<Timestamp> {
        (self.status == OrderStatus::Created).then_some(self.expires_at)
    }

    /// True while the order holds its ticket (created, awaiting payment or complete).
    pub fn holds_ticket(&self) -> bool {
        self.status != OrderStatus::Cancelled
    }

    /// Cancels the order at its owner's request. Cancelling twice changes nothing.
    pub fn cancel(&self, by: UserId) -> Result<Option<Change<Order>>, OrderRefusal> {
        if by != self.user_id {
            return Err(OrderRefusal::NotOwner);
        }
        match self.status {
            OrderStatus::Created => Ok(Some(self.cancelled(false))),
            OrderStatus::Cancelled => Ok(None),
            OrderStatus::AwaitingPayment => Err(OrderRefusal::PaymentInProgress),
            OrderStatus::Complete => Err(OrderRefusal::CannotCancelCompleted),
        }
    }

    /// Cancels the order if it is still unpaid at its deadline; idempotent.
    pub fn expire(&self, now: Timestamp) -> ExpireOutcome {
        match self.status {
            OrderStatus::Created if now >= self.expires_at => {
                ExpireOutcome::Expired(self.cancelled(true))
            }
            OrderStatus::Created => ExpireOutcome::NotDue(self.expires_at),
            OrderStatus::AwaitingPayment => ExpireOutcome::Deferred,
            OrderStatus::Cancelled | OrderStatus::Complete => ExpireOutcome::Settled,
        }
    }

    /// Starts a charge. The key is the order id with the client's own idempotency key when it
    /// sent one, else with the attempt number, so a retried request never charges twice.
    pub fn begin_payment(
        &self,
        by: UserId,
        token: &str,
        client_key: Option<&str>,
        now: Timestamp,
    ) -> Result<BeginPayment, OrderRefusal> {
        if by != self.user_id {
            return Err(OrderRefusal::NotOwner);
        }
        match self.status {
            OrderStatus::Cancelled => Err(OrderRefusal::CannotPayCancelled),
            OrderStatus::Complete => Err(OrderRefusal::AlreadyPaid),
            OrderStatus::AwaitingPayment => match &self.payment {
                Some(attempt) => Ok(BeginPayment::Resume(attempt.clone())),
                None => Err(OrderRefusal::PaymentInProgress),
            },
            OrderStatus::Created if now >= self.expires_at => {
                Ok(BeginPayment::ExpiredFirst(self.cancelled(true)))
            }
            OrderStatus::Created => {
                let number = self.attempts + 1;
                let idempotency_key = match client_key {
                    Some(key) => format!("{}-{key}", self.id),
                    None => format!("{}-{number}", self.id),
                };
                let attempt = PaymentAttempt {
                    number,
                    token: token.to_string(),
                    idempotency_key,
                    amount: self.ticket.price,
                };
                let mut order = self.clone();
                order.status = OrderStatus::AwaitingPayment;
                order.attempts = number;
                order.payment = Some(attempt.clone());
                order.version += 1;
                Ok(BeginPayment::Charge(
                    Change::new(order, Vec::new()),
                    attempt,
                ))
            }
        }
    }

    /// The charge succeeded: the order is complete and a payment exists.
    pub fn complete_payment(
        &self,
        payment_id: PaymentId,
        charge_id: &str,
    ) -> (Change<Order>, Payment) {
        debug_assert_eq!(self.status, OrderStatus::AwaitingPayment);
        let mut order = self.clone();
        order.status = OrderStatus::Complete;
        order.payment = None;
        order.version += 1;
        let events = vec![
            DomainEvent::OrderCompleted {
                id: order.id,
                version: order.version,
                ticket_id: order.ticket.id,
            },
            DomainEvent::PaymentCreated {
                id: payment_id,
                order_id: order.id,
                order_version: order.version,
                stripe_id: charge_id.to_string(),
            },
        ];
        let payment = Payment {
            id: payment_id,
            order_id: order.id,
            stripe_id: charge_id.to_string(),
        };
        (Change::new(order, events), payment)
    }

    /// The charge did not happen: the order is payable again, or cancelled if its deadline
    /// passed meanwhile.
    pub fn fail_payment(&self, now: Timestamp) -> Change<Order> {
        debug_assert_eq!(self.status, OrderStatus::AwaitingPayment);
        if now >= self.expires_at {
            return self.cancelled(true);
        }
        let mut order = self.clone();
        order.status = OrderStatus::Created;
        order.payment = None;
        order.version += 1;
        Change::new(order, Vec::new())
    }

    fn cancelled(&self, by_expiry: bool) -> Change<Order> {
        let mut order = self.clone();
        order.status = OrderStatus::Cancelled;
        order.payment = None;
        order.version += 1;
        let mut events = vec![DomainEvent::OrderCancelled {
            id: order.id,
            version: order.version,
            ticket_id: order.ticket.id,
        }];
        if by_expiry {
            events.push(DomainEvent::ExpirationComplete {
                order_id: order.id,
                version: order.version,
            });
        }
        Change::new(order, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::id::ObjectId;
    use proptest::prelude::*;

    fn id(n: u32) -> ObjectId {
        ObjectId::from_parts(n, [2; 5], n)
    }

    fn order() -> Order {
        let ticket = TicketSnapshot {
            id: TicketId(id(1)),
            title: "concert".into(),
            price: Price::from_cents(1250).unwrap(),
            version: 1,
        };
        Order::create(
            OrderId(id(2)),
            UserId(id(3)),
            ticket,
            Timestamp::from_millis(0),
            Duration::from_millis(1000),
        )
        .state
    }

    #[test]
    fn statuses_are_spelled_as_the_contract() {
        assert_eq!(
            serde_json::to_value(OrderStatus::AwaitingPayment).unwrap(),
            serde_json::json!("awaiting:payment")
        );
        assert_eq!(OrderStatus::Complete.as_str(), "complete");
    }

    #[test]
    fn payment_after_the_deadline_expires_the_order_instead() {
        let order = order();
        let owner = order.user_id;
        match order.begin_payment(owner, "tok_visa", None, Timestamp::from_millis(1000)) {
            Ok(BeginPayment::ExpiredFirst(change)) => {
                assert_eq!(change.state.status, OrderStatus::Cancelled);
                assert_eq!(change.events.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_expiry_during_a_charge_waits_for_it() {
        let order = order();
        let Ok(BeginPayment::Charge(awaiting, attempt)) =
            order.begin_payment(order.user_id, "tok_visa", None, Timestamp::from_millis(10))
        else {
            panic!()
        };
        assert_eq!(attempt.idempotency_key, format!("{}-1", order.id));
        assert_eq!(
            awaiting.state.expire(Timestamp::from_millis(5000)),
            ExpireOutcome::Deferred
        );
        let failed = awaiting.state.fail_payment(Timestamp::from_millis(5000));
        assert_eq!(failed.state.status, OrderStatus::Cancelled);
        let retried = awaiting.state.fail_payment(Timestamp::from_millis(20));
        assert_eq!(retried.state.status, OrderStatus::Created);
        let Ok(BeginPayment::Charge(_, second)) = retried.state.begin_payment(
            order.user_id,
            "tok_visa",
            Some("abc"),
            Timestamp::from_millis(30),
        ) else {
            panic!()
        };
        assert_eq!(second.number, 2);
        assert_eq!(second.idempotency_key, format!("{}-abc", order.id));
    }

    #[test]
    fn cancel_rules() {
        let order = order();
        assert_eq!(order.cancel(UserId(id(99))), Err(OrderRefusal::NotOwner));
        let cancelled = order.cancel(order.user_id).unwrap().unwrap();
        assert_eq!(cancelled.state.cancel(order.user_id), Ok(None));
        let Ok(BeginPayment::Charge(awaiting, _)) =
            order.begin_payment(order.user_id, "tok_visa", None, Timestamp::from_millis(10))
        else {
            panic!()
        };
        let (complete, payment) = awaiting.state.complete_payment(PaymentId(id(7)), "ch_1");
        assert_eq!(payment.stripe_id, "ch_1");
        assert_eq!(
            complete.state.cancel(order.user_id),
            Err(OrderRefusal::CannotCancelCompleted)
        );
        assert_eq!(
            complete.state.expire(Timestamp::from_millis(99_999)),
            ExpireOutcome::Settled
        );
    }

    #[derive(Clone, Debug)]
    enum Operation {
        Cancel,
        Expire(i64),
        Pay(i64),
        Succeed,
        Fail(i64),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            Just(Operation::Cancel),
            (0i64..2000).prop_map(Operation::Expire),
            (0i64..2000).prop_map(Operation::Pay),
            Just(Operation::Succeed),
            (0i64..2000).prop_map(Operation::Fail),
        ]
    }

    proptest! {
        /// Versions move by one per persisted change, a final status never changes, an order
        /// is never both paid and expired, and a charge never starts after the deadline.
        #[test]
        fn order_invariants_hold(operations in proptest::collection::vec(operation(), 1..30)) {
            let mut order = order();
            let owner = order.user_id;
            let mut completed = false;
            let mut expired = false;
            for operation in operations {
                let before = order.clone();
                let change = match operation {
                    Operation::Cancel => order.cancel(owner).ok().flatten(),
                    Operation::Expire(at) => match order.expire(Timestamp::from_millis(at)) {
                        ExpireOutcome::Expired(change) => Some(change),
                        _ => None,
                    },
                    Operation::Pay(at) => match order.begin_payment(owner, "tok_visa", None, Timestamp::from_millis(at)) {
                        Ok(BeginPayment::Charge(change, _)) => {
                            prop_assert!(at < order.expires_at.millis());
                            Some(change)
                        }
                        Ok(BeginPayment::ExpiredFirst(change)) => Some(change),
                        Ok(BeginPayment::Resume(_)) | Err(_) => None,
                    },
                    Operation::Succeed => (order.status == OrderStatus::AwaitingPayment)
                        .then(|| order.complete_payment(PaymentId(id(8)), "ch").0),
                    Operation::Fail(at) => (order.status == OrderStatus::AwaitingPayment)
                        .then(|| order.fail_payment(Timestamp::from_millis(at))),
                };
                if let Some(change) = change {
                    prop_assert_eq!(change.state.version, before.version + 1);
                    prop_assert!(!before.status.is_final());
                    for event in &change.events {
                        match event {
                            DomainEvent::OrderCompleted { .. } => completed = true,
                            DomainEvent::ExpirationComplete { .. } => expired = true,
                            _ => {}
                        }
                    }
                    order = change.state;
                }
                prop_assert!(!(completed && expired));
            }
        }
    }
}
