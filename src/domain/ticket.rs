//! Tickets: title, price, owner and who holds it, with every transition a ticket may make.
//!
//! Owns the rules: only the owner edits, a held ticket cannot be edited, one order at a time
//! holds a ticket, a reservation carries its order's deadline, and a reservation past its deadline
//! is only freed after asking the holding order (ARCHITECTURE.md rule 9). It must not do I/O:
//! the ticket actor fetches what a decision needs and persists what it returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Change;
use super::event::DomainEvent;
use super::id::{OrderId, TicketId, UserId};
use super::time::Timestamp;
use super::validation::FieldError;

/// Highest price accepted, in cents (one million dollars).
pub const MAX_PRICE_CENTS: u64 = 100_000_000;
/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 256;

/// A ticket's title: at least one visible character, no control characters, bounded length.
/// Deserialising parses too, so an invalid title cannot arrive from storage or the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Title(String);

impl TryFrom<String> for Title {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Title::parse(&text).map_err(|error| error.message)
    }
}

impl From<Title> for String {
    fn from(title: Title) -> String {
        title.0
    }
}

impl Title {
    /// Parses a title; it is kept exactly as given.
    pub fn parse(text: &str) -> Result<Title, FieldError> {
        if text.trim().is_empty() {
            return Err(FieldError::new("title", "Title is required"));
        }
        if text.chars().count() > MAX_TITLE_CHARS {
            return Err(FieldError::new(
                "title",
                format!("Title must be at most {MAX_TITLE_CHARS} characters"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(FieldError::new(
                "title",
                "Title must not contain control characters",
            ));
        }
        Ok(Title(text.to_string()))
    }

    /// The title text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A price in whole cents, above zero and at most `MAX_PRICE_CENTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Price(u64);

const PRICE_POSITIVE: &str = "Price must be greater than 0";
const PRICE_FORMAT: &str = "Price must be a number with at most 2 decimals";

impl Price {
    /// A price of `cents` cents.
    pub fn from_cents(cents: u64) -> Result<Price, FieldError> {
        if cents == 0 {
            Err(FieldError::new("price", PRICE_POSITIVE))
        } else if cents > MAX_PRICE_CENTS {
            Err(FieldError::new("price", "Price must be at most 1000000"))
        } else {
            Ok(Price(cents))
        }
    }

    /// Parses a JSON price: a number, or a decimal string as the classic client sends
    /// (`"12.50"`); `null`/absent counts as missing.
    pub fn parse_json(value: Option<&Value>) -> Result<Price, FieldError> {
        match value {
            None | Some(Value::Null) => Err(FieldError::new("price", PRICE_POSITIVE)),
            Some(Value::Number(number)) => {
                if let Some(whole) = number.as_u64() {
                    Price::from_cents(whole.saturating_mul(100))
                } else if number.as_i64().is_some() {
                    Err(FieldError::new("price", PRICE_POSITIVE))
                } else {
                    match number.as_f64() {
                        Some(float) if float.is_finite() => {
                            Price::parse_decimal(&float.to_string())
                        }
                        _ => Err(FieldError::new("price", PRICE_FORMAT)),
                    }
                }
            }
            Some(Value::String(text)) => Price::parse_decimal(text),
            Some(_) => Err(FieldError::new("price", PRICE_FORMAT)),
        }
    }

    /// Parses `123`, `12.5` or `12.50`; signs other than a leading minus, exponents and more
    /// than two decimals are refused.
    pub fn parse_decimal(text: &str) -> Result<Price, FieldError> {
        let text = text.trim();
        let format_error = || FieldError::new("price", PRICE_FORMAT);
        if let Some(rest) = text.strip_prefix('-') {
            // A well-formed negative number is "not greater than 0"; anything else is malformed.
            return match Price::split_decimal(rest) {
                Some(_) => Err(FieldError::new("price", PRICE_POSITIVE)),
                None => Err(format_error()),
            };
        }
        let (whole, fraction) = Price::split_decimal(text).ok_or_else(format_error)?;
        if whole.len() > 9 {
            return Price::from_cents(MAX_PRICE_CENTS + 1);
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| format_error())?
        };
        let mut cents_text = fraction.to_string();
        while cents_text.len() < 2 {
            cents_text.push('0');
        }
        let cents: u64 = cents_text.parse().map_err(|_| format_error())?;
        Price::from_cents(whole * 100 + cents)
    }

    /// Splits an unsigned decimal into whole and fraction digits; `None` when it is not one.
    fn split_decimal(text: &str) -> Option<(&str, &str)> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        let valid = digits(whole)
            && digits(fraction)
            && !(whole.is_empty() && fraction.is_empty())
            && fraction.len() <= 2
            && !text.ends_with('.');
        valid.then_some((whole, fraction))
    }

    /// The price in cents.
    pub fn cents(self) -> u64 {
        self.0
    }

    /// The price as the API shows it: a JSON number of dollars (`12.5`, `10`).
    pub fn as_json(self) -> Value {
        if self.0.is_multiple_of(100) {
            Value::from(self.0 / 100)
        } else {
            serde_json::Number::from_f64(self.0 as f64 / 100.0)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
    }
}

impl TryFrom<u64> for Price {
    type Error = String;
    fn try_from(cents: u64) -> Result<Self, Self::Error> {
        Price::from_cents(cents).map_err(|error| error.message)
    }
}

impl From<Price> for u64 {
    fn from(price: Price) -> u64 {
        price.0
    }
}

/// Which order holds a ticket, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Hold {
    /// An unpaid order holds it until `expires_at` (the order's own deadline).
    Reserved {
        order_id: OrderId,
        expires_at: Timestamp,
    },
    /// A paid order holds it for good.
    Sold { order_id: OrderId },
}

impl Hold {
    /// The holding order.
    pub fn order_id(self) -> OrderId {
        match self {
            Hold::Reserved { order_id, .. } | Hold::Sold { order_id } => order_id,
        }
    }
}

/// What the holding order's stored state says, when a reservation is past its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderStatus {
    /// No such order was ever saved (a crash between reserving and saving the order).
    Missing,
    /// The order is still unpaid.
    Created,
    /// A charge is in flight: the order decides after it.
    AwaitingPayment,
    /// The order is paid: the ticket is sold.
    Complete,
    /// The order was cancelled.
    Cancelled,
}

/// A refusal of a ticket operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TicketRefusal {
    /// Only the owner may edit a ticket.
    #[error("Not authorized")]
    NotOwner,
    /// A held ticket cannot be edited.
    #[error("Cannot edit a reserved ticket")]
    EditWhileHeld,
    /// Another live order holds the ticket.
    #[error("Ticket is already reserved")]
    AlreadyReserved,
}

/// The outcome of a reservation request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveDecision {
    /// The ticket is now held by the order.
    Reserved(Change<Ticket>),
    /// The same order already holds it (a repeated request): nothing changes.
    AlreadyHeld,
    /// Another live order holds it.
    Refused,
    /// The holder's reservation is past its deadline: ask the holder's stored status, then call
    /// `resolve_stale_hold` and reserve again.
    AskHolder(OrderId),
}

/// A ticket on sale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: TicketId,
    pub title: Title,
    pub price: Price,
    pub owner: UserId,
    /// Incremented by exactly one on every persisted change.
    pub version: u64,
    pub hold: Option<Hold>,
}

impl Ticket {
    /// Puts a new ticket on sale at version 0.
    pub fn create(id: TicketId, title: Title, price: Price, owner: UserId) -> Change<Ticket> {
        let ticket = Ticket {
            id,
            title,
            price,
            owner,
            version: 0,
            hold: None,
        };
        let event = DomainEvent::TicketCreated {
            id,
            version: 0,
            title: ticket.title.as_str().to_string(),
            price,
            user_id: owner,
        };
        Change::new(ticket, vec![event])
    }

    /// The order holding the ticket, if any.
    pub fn order_id(&self) -> Option<OrderId> {
        self.hold.map(Hold::order_id)
    }

    /// True when no order holds the ticket (it is listed and can be ordered).
    pub fn is_available(&self) -> bool {
        self.hold.is_none()
    }

    /// When the ticket should check whether its reservation is still wanted.
    pub fn deadline(&self) -> Option<Timestamp> {
        match self.hold {
            Some(Hold::Reserved { expires_at, .. }) => Some(expires_at),
            _ => None,
        }
    }

    /// Changes title and price; only the owner may, and only while no order holds it.
    pub fn update(
        &self,
        by: UserId,
        title: Title,
        price: Price,
    ) -> Result<Change<Ticket>, TicketRefusal> {
        if by != self.owner {
            return Err(TicketRefusal::NotOwner);
        }
        if self.hold.is_some() {
            return Err(TicketRefusal::EditWhileHeld);
        }
        Ok(self.next(|ticket| {
            ticket.title = title;
            ticket.price = price;
        }))
    }

    /// Reserves the ticket for `order_id` until `expires_at`. A reservation more than `grace`
    /// past its deadline is not trusted blindly: the holder is asked first.
    pub fn reserve(
        &self,
        order_id: OrderId,
        expires_at: Timestamp,
        now: Timestamp,
        grace: Duration,
    ) -> ReserveDecision {
        match self.hold {
            None => ReserveDecision::Reserved(self.next(|ticket| {
                ticket.hold = Some(Hold::Reserved {
                    order_id,
                    expires_at,
                });
            })),
            Some(hold) if hold.order_id() == order_id => ReserveDecision::AlreadyHeld,
            Some(Hold::Reserved {
                order_id: holder,
                expires_at: held_until,
            }) if now > held_until.plus(grace) => ReserveDecision::AskHolder(holder),
            Some(_) => ReserveDecision::Refused,
        }
    }

    /// Settles a reservation past its deadline from what its order's stored state says: a paid
    /// order makes the ticket sold, a charge in flight keeps it held, anything else frees it.
    /// `None` when nothing changes.
    pub fn resolve_stale_hold(
        &self,
        holder: OrderId,
        status: HolderStatus,
    ) -> Option<Change<Ticket>> {
        match status {
            HolderStatus::Created => self.release(holder),
            _ => self.reconcile_hold(holder, status),
        }
    }

    /// Brings a reservation in line with its order's stored state whatever the deadline (at
    /// start-up, when no order can be half-created any more): a paid order makes the ticket sold,
    /// a missing or cancelled order frees it, a live unpaid order keeps it. `None` when nothing
    /// changes.
    pub fn reconcile_hold(&self, holder: OrderId, status: HolderStatus) -> Option<Change<Ticket>> {
        match self.hold {
            Some(Hold::Reserved { order_id, .. }) if order_id == holder => match status {
                HolderStatus::Complete => Some(self.next(|ticket| {
                    ticket.hold = Some(Hold::Sold { order_id });
                })),
                HolderStatus::Missing | HolderStatus::Cancelled => {
                    Some(self.next(|ticket| ticket.hold = None))
                }
                HolderStatus::Created | HolderStatus::AwaitingPayment => None,
            },
            _ => None,
        }
    }

    /// Frees the ticket if `order_id` reserved it; repeated or stale releases change nothing.
    /// A sold ticket is never freed.
    pub fn release(&self, order_id: OrderId) -> Option<Change<Ticket>> {
        match self.hold {
            Some(Hold::Reserved {
                order_id: holder, ..
            }) if holder == order_id => Some(self.next(|ticket| ticket.hold = None)),
            _ => None,
        }
    }

    /// Marks the ticket sold to `order_id`, which has paid. Repeats change nothing. A free
    /// ticket is taken (the paid order is the authority); a ticket held by another order is a
    /// conflict the caller must report.
    pub fn mark_sold(&self, order_id: OrderId) -> Result<Option<Change<Ticket>>, TicketRefusal> {
        match self.hold {
            Some(Hold::Sold { order_id: holder }) if holder == order_id => Ok(None),
            Some(Hold::Reserved {
                order_id: holder, ..
            }) if holder == order_id => {
                Ok(Some(self.next(|ticket| {
                    ticket.hold = Some(Hold::Sold { order_id })
                })))
            }
            None => {
                Ok(Some(self.next(|ticket| {
                    ticket.hold = Some(Hold::Sold { order_id })
                })))
            }
            Some(_) => Err(TicketRefusal::AlreadyReserved),
        }
    }

    /// The next version of this ticket after `change`, with its `ticket.updated` event.
    fn next(&self, change: impl FnOnce(&mut Ticket)) -> Change<Ticket> {
        let mut ticket = self.clone();
        change(&mut ticket);
        ticket.version = self.version + 1;
        let event = ticket.updated_event();
        Change::new(ticket, vec![event])
    }

    fn updated_event(&self) -> DomainEvent {
        DomainEvent::TicketUpdated {
            id: self.id,
            version: self.version,
            title: self.title.as_str().to_string(),
            price: self.price,
            user_id: self.owner,
            order_id: self.order_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::id::ObjectId;
    use proptest::prelude::*;

    fn id(n: u32) -> ObjectId {
        ObjectId::from_parts(n, [1; 5], n)
    }

    fn ticket() -> Ticket {
        Ticket::create(
            TicketId(id(1)),
            Title::parse("concert").unwrap(),
            Price::from_cents(1250).unwrap(),
            UserId(id(2)),
        )
        .state
    }

    #[test]
    fn prices_parse_from_numbers_and_strings() {
        let cents = |value: Value| Price::parse_json(Some(&value)).map(Price::cents);
        assert_eq!(cents(serde_json::json!(12.5)), Ok(1250));
        assert_eq!(cents(serde_json::json!("12.50")), Ok(1250));
        assert_eq!(cents(serde_json::json!(10)), Ok(1000));
        assert_eq!(cents(serde_json::json!(0.01)), Ok(1));
        assert_eq!(cents(serde_json::json!(99.99)), Ok(9999));
        assert_eq!(cents(serde_json::json!(1_000_000)), Ok(100_000_000));
        assert_eq!(cents(serde_json::json!(".5")), Ok(50));
        for bad in [
            serde_json::json!(-10),
            serde_json::json!(0),
            serde_json::json!(-0.0),
            serde_json::json!(12.345),
            serde_json::json!(1e-9),
            serde_json::json!(1e308),
            serde_json::json!(1_000_000.01),
            serde_json::json!("abc"),
            serde_json::json!("NaN"),
            serde_json::json!("Infinity"),
            serde_json::json!("1e3"),
            serde_json::json!("12."),
            serde_json::json!("."),
            serde_json::json!(""),
            serde_json::json!(true),
            serde_json::json!({}),
            serde_json::json!(u64::MAX),
        ] {
            assert!(cents(bad.clone()).is_err(), "{bad}");
        }
        assert!(Price::parse_json(None).is_err());
    }

    #[test]
    fn prices_print_as_dollars() {
        assert_eq!(
            Price::from_cents(1250).unwrap().as_json(),
            serde_json::json!(12.5)
        );
        assert_eq!(
            Price::from_cents(1000).unwrap().as_json(),
            serde_json::json!(10)
        );
        assert_eq!(
            Price::from_cents(1999).unwrap().as_json().to_string(),
            "19.99"
        );
    }

    #[test]
    fn titles_must_be_visible_text() {
        assert!(Title::parse("").is_err());
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse("a\u{0}b").is_err());
        assert!(Title::parse(&"x".repeat(MAX_TITLE_CHARS + 1)).is_err());
        assert_eq!(Title::parse(" 🎫 שלום ").unwrap().as_str(), " 🎫 שלום ");
    }

    #[test]
    fn only_the_owner_edits_and_never_while_held() {
        let ticket = ticket();
        let title = Title::parse("new").unwrap();
        let price = Price::from_cents(100).unwrap();
        assert_eq!(
            ticket.update(UserId(id(9)), title.clone(), price),
            Err(TicketRefusal::NotOwner)
        );
        let updated = ticket.update(ticket.owner, title.clone(), price).unwrap();
        assert_eq!(updated.state.version, 1);
        let ReserveDecision::Reserved(held) = updated.state.reserve(
            OrderId(id(3)),
            Timestamp::from_millis(1000),
            Timestamp::from_millis(0),
            Duration::ZERO,
        ) else {
            panic!("free ticket must be reservable")
        };
        assert_eq!(
            held.state.update(held.state.owner, title, price),
            Err(TicketRefusal::EditWhileHeld)
        );
    }

    #[test]
    fn a_stale_reservation_asks_its_order() {
        let order = OrderId(id(3));
        let ReserveDecision::Reserved(held) = ticket().reserve(
            order,
            Timestamp::from_millis(1000),
            Timestamp::from_millis(0),
            Duration::from_millis(500),
        ) else {
            panic!()
        };
        let other = OrderId(id(4));
        let grace = Duration::from_millis(500);
        assert_eq!(
            held.state.reserve(
                other,
                Timestamp::from_millis(9000),
                Timestamp::from_millis(1400),
                grace
            ),
            ReserveDecision::Refused
        );
        assert_eq!(
            held.state.reserve(
                other,
                Timestamp::from_millis(9000),
                Timestamp::from_millis(1600),
                grace
            ),
            ReserveDecision::AskHolder(order)
        );
        assert_eq!(
            held.state
                .resolve_stale_hold(order, HolderStatus::AwaitingPayment),
            None
        );
        let sold = held
            .state
            .resolve_stale_hold(order, HolderStatus::Complete)
            .unwrap();
        assert_eq!(sold.state.hold, Some(Hold::Sold { order_id: order }));
        let freed = held
            .state
            .resolve_stale_hold(order, HolderStatus::Missing)
            .unwrap();
        assert!(freed.state.is_available());
        assert_eq!(freed.state.version, held.state.version + 1);
    }

    #[derive(Clone, Debug)]
    enum Operation {
        Update(u8),
        Reserve(u8, i64),
        Release(u8),
        MarkSold(u8),
        Resolve(u8, u8),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            (0u8..2).prop_map(Operation::Update),
            (0u8..3, 0i64..3000).prop_map(|(o, t)| Operation::Reserve(o, t)),
            (0u8..3).prop_map(Operation::Release),
            (0u8..3).prop_map(Operation::MarkSold),
            (0u8..3, 0u8..5).prop_map(|(o, s)| Operation::Resolve(o, s)),
        ]
    }

    proptest! {
        /// Whatever happens, versions move by exactly one per event, events carry the version
        /// they produce, a sold ticket never changes hands, and an edit never touches a held one.
        #[test]
        fn ticket_invariants_hold(operations in proptest::collection::vec(operation(), 1..40)) {
            let mut ticket = ticket();
            let grace = Duration::from_millis(100);
            for (step, operation) in operations.into_iter().enumerate() {
                let now = Timestamp::from_millis(step as i64 * 100);
                let order = |n: u8| OrderId(id(100 + u32::from(n)));
                let before = ticket.clone();
                let change = match operation {
                    Operation::Update(user) => {
                        let by = if user == 0 { ticket.owner } else { UserId(id(50)) };
                        let result = ticket.update(by, Title::parse("t").unwrap(), Price::from_cents(5).unwrap());
                        if before.hold.is_some() { prop_assert!(result.is_err()); }
                        result.ok()
                    }
                    Operation::Reserve(n, ttl) => match ticket.reserve(order(n), now.plus(Duration::from_millis(ttl as u64)), now, grace) {
                        ReserveDecision::Reserved(change) => Some(change),
                        ReserveDecision::AskHolder(holder) => {
                            let was_reserved = matches!(before.hold, Some(Hold::Reserved { .. }));
                            prop_assert!(was_reserved);
                            prop_assert_eq!(before.order_id(), Some(holder));
                            None
                        }
                        _ => None,
                    },
                    Operation::Release(n) => ticket.release(order(n)),
                    Operation::MarkSold(n) => ticket.mark_sold(order(n)).ok().flatten(),
                    Operation::Resolve(n, s) => {
                        let status = [HolderStatus::Missing, HolderStatus::Created, HolderStatus::AwaitingPayment, HolderStatus::Complete, HolderStatus::Cancelled][usize::from(s)];
                        ticket.resolve_stale_hold(order(n), status)
                    }
                };
                if let Some(change) = change {
                    prop_assert_eq!(change.state.version, before.version + change.events.len() as u64);
                    for (offset, event) in change.events.iter().enumerate() {
                        let expected = before.version + 1 + offset as u64;
                        let DomainEvent::TicketUpdated { version, .. } = event else { panic!("tickets only emit ticket.updated after creation") };
                        prop_assert_eq!(*version, expected);
                    }
                    if let Some(Hold::Sold { order_id }) = before.hold {
                        prop_assert_eq!(change.state.hold, Some(Hold::Sold { order_id }));
                    }
                    ticket = change.state;
                } else {
                    prop_assert_eq!(&ticket, &before);
                }
            }
        }
    }
}
