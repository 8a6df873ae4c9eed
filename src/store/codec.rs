//! How the embedded store encodes an entity record (state and recent transitions) and an outbox
//! event as bytes.
//!
//! Owns the value formats of the embedded store's entity and event tables. An entity value is
//! the version (8 bytes, big endian, so a compare-and-set reads it without decoding the record),
//! a format byte, then the record. Records are written in a compact binary form (`BINARY`): ids as their 12 bytes,
//! instants and numbers as fixed-width integers, text length-prefixed, the state before the
//! transitions so the writer can decode the state alone. Records written by earlier versions hold
//! JSON after the version (its first byte is `{`) and stay readable. Decoding validates as parsing
//! the API's input does (a title, a price), so a corrupt record is an error, never a panic or an
//! invalid entity. It must not know about tables or transactions: `embedded` stores the bytes.

use serde::de::DeserializeOwned;

use super::{Stored, StoredEvent, Transition};
use crate::domain::{
    DomainEvent, Hold, ObjectId, Order, OrderId, OrderStatus, PaymentAttempt, PaymentId, Price,
    Ticket, TicketId, TicketSnapshot, Timestamp, Title, UserId,
};

/// The format byte of the binary encoding.
const BINARY: u8 = 1;
/// The first byte of a JSON record (earlier versions).
const JSON: u8 = b'{';

/// An entity the embedded store keeps in the binary encoding.
pub(super) trait Record: DeserializeOwned {
    /// Appends the entity's encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one entity from `input`.
    fn decode(input: &mut Reader<'_>) -> Result<Self, String>;
}

/// The stored value of `record` at `version`.
pub(super) fn encode<T: Record>(version: u64, record: &Stored<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend(version.to_be_bytes());
    out.push(BINARY);
    record.state.encode(&mut out);
    put_list(&mut out, &record.transitions, encode_transition);
    out
}

/// The version a stored value was written at.
pub(super) fn version(bytes: &[u8]) -> Result<u64, String> {
    let prefix: [u8; 8] = bytes
        .get(..8)
        .and_then(|slice| slice.try_into().ok())
        .ok_or("entity shorter than its version")?;
    Ok(u64::from_be_bytes(prefix))
}

/// The whole record of a stored value.
pub(super) fn decode<T: Record>(bytes: &[u8]) -> Result<Stored<T>, String> {
    match body(bytes)? {
        (BINARY, body) => {
            let mut input = Reader(body);
            let state = T::decode(&mut input)?;
            let transitions = input.list(decode_transition)?;
            input.finish()?;
            Ok(Stored { state, transitions })
        }
        (JSON, _) => serde_json::from_slice(&bytes[8..]).map_err(|error| error.to_string()),
        (other, _) => Err(format!("unknown record format {other}")),
    }
}

/// The state of a stored value without its history: what the writer needs of the record a write
/// replaces, without allocating every transition it has recorded.
pub(super) fn decode_state<T: Record>(bytes: &[u8]) -> Result<T, String> {
    #[derive(serde::Deserialize)]
    struct StateOf<T> {
        state: T,
    }
    match body(bytes)? {
        (BINARY, body) => T::decode(&mut Reader(body)),
        (JSON, _) => serde_json::from_slice::<StateOf<T>>(&bytes[8..])
            .map(|record| record.state)
            .map_err(|error| error.to_string()),
        (other, _) => Err(format!("unknown record format {other}")),
    }
}

/// The format byte and what follows it.
fn body(bytes: &[u8]) -> Result<(u8, &[u8]), String> {
    match bytes.get(8..) {
        Some([format, rest @ ..]) => Ok((*format, rest)),
        _ => Err("entity without a record".to_string()),
    }
}

impl Record for Ticket {
    fn encode(&self, out: &mut Vec<u8>) {
        let Ticket {
            id,
            title,
            price,
            owner,
            version,
            hold,
        } = self;
        put_id(out, id.0);
        put_str(out, title.as_str());
        put_u64(out, price.cents());
        put_id(out, owner.0);
        put_u64(out, *version);
        match hold {
            None => out.push(0),
            Some(Hold::Reserved {
                order_id,
                expires_at,
            }) => {
                out.push(1);
                put_id(out, order_id.0);
                put_time(out, *expires_at);
            }
            Some(Hold::Sold { order_id }) => {
                out.push(2);
                put_id(out, order_id.0);
            }
        }
    }

    fn decode(input: &mut Reader<'_>) -> Result<Ticket, String> {
        Ok(Ticket {
            id: TicketId(input.id()?),
            title: Title::parse(&input.string()?).map_err(|error| error.message)?,
            price: input.price()?,
            owner: UserId(input.id()?),
            version: input.u64()?,
            hold: match input.u8()? {
                0 => None,
                1 => Some(Hold::Reserved {
                    order_id: OrderId(input.id()?),
                    expires_at: input.time()?,
                }),
                2 => Some(Hold::Sold {
                    order_id: OrderId(input.id()?),
                }),
                other => return Err(format!("unknown hold {other}")),
            },
        })
    }
}

impl Record for Order {
    fn encode(&self, out: &mut Vec<u8>) {
        let Order {
            id,
            user_id,
            ticket,
            status,
            expires_at,
            version,
            created_at,
            attempts,
            payment,
        } = self;
        let TicketSnapshot {
            id: ticket_id,
            title,
            price,
            version: ticket_version,
        } = ticket;
        put_id(out, id.0);
        put_id(out, user_id.0);
        put_id(out, ticket_id.0);
        put_str(out, title);
        put_u64(out, price.cents());
        put_u64(out, *ticket_version);
        put_status(out, *status);
        put_time(out, *expires_at);
        put_u64(out, *version);
        put_time(out, *created_at);
        put_u32(out, *attempts);
        put_option(out, payment.as_ref(), |out, payment| {
            let PaymentAttempt {
                number,
                token,
                idempotency_key,
                amount,
            } = payment;
            put_u32(out, *number);
            put_str(out, token);
            put_str(out, idempotency_key);
            put_u64(out, amount.cents());
        });
    }

    fn decode(input: &mut Reader<'_>) -> Result<Order, String> {
        Ok(Order {
            id: OrderId(input.id()?),
            user_id: UserId(input.id()?),
            ticket: TicketSnapshot {
                id: TicketId(input.id()?),
                title: input.string()?,
                price: input.price()?,
                version: input.u64()?,
            },
            status: input.status()?,
            expires_at: input.time()?,
            version: input.u64()?,
            created_at: input.time()?,
            attempts: input.u32()?,
            payment: input.option("payment", |input| {
                Ok(PaymentAttempt {
                    number: input.u32()?,
                    token: input.string()?,
                    idempotency_key: input.string()?,
                    amount: input.price()?,
                })
            })?,
        })
    }
}

/// The stored value of `event`, committed `at`.
pub(super) fn encode_event(event: &DomainEvent, at: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.push(BINARY);
    put_time(&mut out, at);
    match event {
        DomainEvent::TicketCreated {
            id,
            version,
            title,
            price,
            user_id,
        } => {
            out.push(0);
            put_ticket_event(&mut out, *id, *version, title, *price, *user_id);
        }
        DomainEvent::TicketUpdated {
            id,
            version,
            title,
            price,
            user_id,
            order_id,
        } => {
            out.push(1);
            put_ticket_event(&mut out, *id, *version, title, *price, *user_id);
            put_option(&mut out, order_id.as_ref(), |out, order_id| {
                put_id(out, order_id.0)
            });
        }
        DomainEvent::OrderCreated {
            id,
            version,
            status,
            user_id,
            expires_at,
            ticket_id,
            price,
        } => {
            out.push(2);
            put_id(&mut out, id.0);
            put_u64(&mut out, *version);
            put_status(&mut out, *status);
            put_id(&mut out, user_id.0);
            put_time(&mut out, *expires_at);
            put_id(&mut out, ticket_id.0);
            put_u64(&mut out, price.cents());
        }
        DomainEvent::OrderCancelled {
            id,
            version,
            ticket_id,
        } => {
            out.push(3);
            put_id(&mut out, id.0);
            put_u64(&mut out, *version);
            put_id(&mut out, ticket_id.0);
        }
        DomainEvent::OrderCompleted {
            id,
            version,
            ticket_id,
        } => {
            out.push(4);
            put_id(&mut out, id.0);
            put_u64(&mut out, *version);
            put_id(&mut out, ticket_id.0);
        }
        DomainEvent::ExpirationComplete { order_id, version } => {
            out.push(5);
            put_id(&mut out, order_id.0);
            put_u64(&mut out, *version);
        }
        DomainEvent::PaymentCreated {
            id,
            order_id,
            order_version,
            stripe_id,
        } => {
            out.push(6);
            put_id(&mut out, id.0);
            put_id(&mut out, order_id.0);
            put_u64(&mut out, *order_version);
            put_str(&mut out, stripe_id);
        }
    }
    out
}

/// The outbox entry numbered `seq` whose stored value is `bytes`.
pub(super) fn decode_event(seq: u64, bytes: &[u8]) -> Result<StoredEvent, String> {
    match bytes.split_first() {
        Some((&BINARY, body)) => {
            let mut input = Reader(body);
            let at = input.time()?;
            let event = match input.u8()? {
                0 => {
                    let (id, version, title, price, user_id) = input.ticket_event()?;
                    DomainEvent::TicketCreated {
                        id,
                        version,
                        title,
                        price,
                        user_id,
                    }
                }
                1 => {
                    let (id, version, title, price, user_id) = input.ticket_event()?;
                    DomainEvent::TicketUpdated {
                        id,
                        version,
                        title,
                        price,
                        user_id,
                        order_id: input.option("order id", |input| input.id().map(OrderId))?,
                    }
                }
                2 => DomainEvent::OrderCreated {
                    id: OrderId(input.id()?),
                    version: input.u64()?,
                    status: input.status()?,
                    user_id: UserId(input.id()?),
                    expires_at: input.time()?,
                    ticket_id: TicketId(input.id()?),
                    price: input.price()?,
                },
                3 => DomainEvent::OrderCancelled {
                    id: OrderId(input.id()?),
                    version: input.u64()?,
                    ticket_id: TicketId(input.id()?),
                },
                4 => DomainEvent::OrderCompleted {
                    id: OrderId(input.id()?),
                    version: input.u64()?,
                    ticket_id: TicketId(input.id()?),
                },
                5 => DomainEvent::ExpirationComplete {
                    order_id: OrderId(input.id()?),
                    version: input.u64()?,
                },
                6 => DomainEvent::PaymentCreated {
                    id: PaymentId(input.id()?),
                    order_id: OrderId(input.id()?),
                    order_version: input.u64()?,
                    stripe_id: input.string()?,
                },
                other => return Err(format!("unknown event kind {other}")),
            };
            input.finish()?;
            Ok(StoredEvent::new(seq, &event, at))
        }
        Some((&JSON, _)) => serde_json::from_slice(bytes).map_err(|error| error.to_string()),
        Some((other, _)) => Err(format!("unknown event format {other}")),
        None => Err("empty event".to_string()),
    }
}

fn put_ticket_event(
    out: &mut Vec<u8>,
    id: TicketId,
    version: u64,
    title: &str,
    price: Price,
    user_id: UserId,
) {
    put_id(out, id.0);
    put_u64(out, version);
    put_str(out, title);
    put_u64(out, price.cents());
    put_id(out, user_id.0);
}

fn encode_transition(out: &mut Vec<u8>, transition: &Transition) {
    let Transition {
        at,
        message,
        request_id,
        from,
        to,
        version,
        events,
    } = transition;
    put_time(out, *at);
    put_str(out, message);
    put_option(out, request_id.as_deref(), put_str);
    put_str(out, from);
    put_str(out, to);
    put_u64(out, *version);
    put_list(out, events, |out, event| put_str(out, event));
}

fn decode_transition(input: &mut Reader<'_>) -> Result<Transition, String> {
    Ok(Transition {
        at: input.time()?,
        message: input.string()?,
        request_id: input.option("request id", Reader::string)?,
        from: input.string()?,
        to: input.string()?,
        version: input.u64()?,
        events: input.list(Reader::string)?,
    })
}

fn put_status(out: &mut Vec<u8>, status: OrderStatus) {
    out.push(match status {
        OrderStatus::Created => 0,
        OrderStatus::Cancelled => 1,
        OrderStatus::AwaitingPayment => 2,
        OrderStatus::Complete => 3,
    });
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend(value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend(value.to_le_bytes());
}

fn put_time(out: &mut Vec<u8>, at: Timestamp) {
    out.extend(at.millis().to_le_bytes());
}

fn put_id(out: &mut Vec<u8>, id: ObjectId) {
    out.extend(id.bytes());
}

/// A count or a text length; records are far below 4 GiB.
fn put_len(out: &mut Vec<u8>, len: usize) {
    put_u32(out, u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend(text.as_bytes());
}

/// A marker byte (0: none, 1: some) and, when there is one, the value.
fn put_option<T: ?Sized>(out: &mut Vec<u8>, value: Option<&T>, put: impl Fn(&mut Vec<u8>, &T)) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put(out, value);
        }
    }
}

/// The count, then each item.
fn put_list<T>(out: &mut Vec<u8>, items: &[T], put: impl Fn(&mut Vec<u8>, &T)) {
    put_len(out, items.len());
    for item in items {
        put(out, item);
    }
}

/// Reads a binary record front to back; every read checks the bytes are there.
pub(super) struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("record cut short")?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        self.take::<1>().map(|[byte]| byte)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.take().map(u64::from_le_bytes)
    }

    fn time(&mut self) -> Result<Timestamp, String> {
        self.take()
            .map(|bytes| Timestamp::from_millis(i64::from_le_bytes(bytes)))
    }

    fn id(&mut self) -> Result<ObjectId, String> {
        self.take().map(ObjectId::from_bytes)
    }

    fn price(&mut self) -> Result<Price, String> {
        Price::from_cents(self.u64()?).map_err(|error| error.message)
    }

    fn status(&mut self) -> Result<OrderStatus, String> {
        Ok(match self.u8()? {
            0 => OrderStatus::Created,
            1 => OrderStatus::Cancelled,
            2 => OrderStatus::AwaitingPayment,
            3 => OrderStatus::Complete,
            other => return Err(format!("unknown order status {other}")),
        })
    }

    /// The fields the two ticket events share.
    fn ticket_event(&mut self) -> Result<(TicketId, u64, String, Price, UserId), String> {
        Ok((
            TicketId(self.id()?),
            self.u64()?,
            self.string()?,
            self.price()?,
            UserId(self.id()?),
        ))
    }

    fn len(&mut self) -> Result<usize, String> {
        let len = usize::try_from(self.u32()?).map_err(|error| error.to_string())?;
        if len > self.0.len() {
            // Every counted item takes at least a byte: a larger count is corrupt, and must not
            // reserve memory for it.
            return Err("record cut short".to_string());
        }
        Ok(len)
    }

    /// What `put_option` wrote; `what` names it in the error for an unknown marker.
    fn option<T>(
        &mut self,
        what: &str,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(format!("unknown {what} marker {other}")),
        }
    }

    /// What `put_list` wrote.
    fn list<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let count = self.len()?;
        // A corrupt count is bounded by the bytes left (`len`); reserve no more than a record
        // keeps.
        let mut items = Vec::with_capacity(count.min(super::TRANSITIONS_KEPT));
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.len()?;
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(text.to_vec()).map_err(|error| error.to_string())
    }

    fn finish(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes after the record", self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes([n; 12])
    }

    fn transition(request_id: Option<&str>, events: &[&str]) -> Transition {
        Transition {
            at: Timestamp::from_millis(1_764_000_000_123),
            message: "Reserve".to_string(),
            request_id: request_id.map(str::to_string),
            from: "available".to_string(),
            to: "reserved".to_string(),
            version: 7,
            events: events.iter().map(|event| event.to_string()).collect(),
        }
    }

    fn tickets() -> Vec<Stored<Ticket>> {
        let ticket = |hold| Ticket {
            id: TicketId(id(1)),
            title: Title::parse("Concert \u{e9}t\u{e9} \"live\"").unwrap(),
            price: Price::from_cents(12_345).unwrap(),
            owner: UserId(id(2)),
            version: 3,
            hold,
        };
        vec![
            Stored::new(ticket(None)),
            Stored {
                state: ticket(Some(Hold::Reserved {
                    order_id: OrderId(id(3)),
                    expires_at: Timestamp::from_millis(-5),
                })),
                transitions: vec![
                    transition(Some("req-1"), &["a", "b"]),
                    transition(None, &[]),
                ],
            },
            Stored {
                state: ticket(Some(Hold::Sold {
                    order_id: OrderId(id(4)),
                })),
                transitions: vec![transition(None, &["ticket.updated:x:4"])],
            },
        ]
    }

    fn orders() -> Vec<Stored<Order>> {
        let order = |status, payment| Order {
            id: OrderId(id(5)),
            user_id: UserId(id(6)),
            ticket: TicketSnapshot {
                id: TicketId(id(7)),
                title: "A title".to_string(),
                price: Price::from_cents(1).unwrap(),
                version: 2,
            },
            status,
            expires_at: Timestamp::from_millis(1_764_000_900_000),
            version: 9,
            created_at: Timestamp::from_millis(1_764_000_000_000),
            attempts: 2,
            payment,
        };
        let attempt = PaymentAttempt {
            number: 2,
            token: "tok_visa".to_string(),
            idempotency_key: "key-\u{1f600}".to_string(),
            amount: Price::from_cents(1).unwrap(),
        };
        vec![
            Stored::new(order(OrderStatus::Created, None)),
            Stored {
                state: order(OrderStatus::AwaitingPayment, Some(attempt)),
                transitions: vec![transition(Some("r"), &["order.created:y:0"])],
            },
            Stored::new(order(OrderStatus::Cancelled, None)),
            Stored::new(order(OrderStatus::Complete, None)),
        ]
    }

    #[test]
    fn records_round_trip_through_the_binary_encoding() {
        for record in tickets() {
            let bytes = encode(11, &record);
            assert_eq!(bytes[8], BINARY);
            assert_eq!(version(&bytes), Ok(11));
            assert_eq!(decode::<Ticket>(&bytes).unwrap(), record);
            assert_eq!(decode_state::<Ticket>(&bytes).unwrap(), record.state);
        }
        for record in orders() {
            let bytes = encode(12, &record);
            assert_eq!(decode::<Order>(&bytes).unwrap(), record);
            assert_eq!(decode_state::<Order>(&bytes).unwrap(), record.state);
        }
    }

    fn events() -> Vec<DomainEvent> {
        let price = Price::from_cents(2_050).unwrap();
        vec![
            DomainEvent::TicketCreated {
                id: TicketId(id(1)),
                version: 0,
                title: "T\u{e9}".to_string(),
                price,
                user_id: UserId(id(2)),
            },
            DomainEvent::TicketUpdated {
                id: TicketId(id(1)),
                version: 1,
                title: "T".to_string(),
                price,
                user_id: UserId(id(2)),
                order_id: Some(OrderId(id(3))),
            },
            DomainEvent::TicketUpdated {
                id: TicketId(id(1)),
                version: 2,
                title: "T".to_string(),
                price,
                user_id: UserId(id(2)),
                order_id: None,
            },
            DomainEvent::OrderCreated {
                id: OrderId(id(3)),
                version: 0,
                status: OrderStatus::Created,
                user_id: UserId(id(4)),
                expires_at: Timestamp::from_millis(1_764_000_900_000),
                ticket_id: TicketId(id(1)),
                price,
            },
            DomainEvent::OrderCancelled {
                id: OrderId(id(3)),
                version: 1,
                ticket_id: TicketId(id(1)),
            },
            DomainEvent::OrderCompleted {
                id: OrderId(id(3)),
                version: 2,
                ticket_id: TicketId(id(1)),
            },
            DomainEvent::ExpirationComplete {
                order_id: OrderId(id(3)),
                version: 1,
            },
            DomainEvent::PaymentCreated {
                id: PaymentId(id(5)),
                order_id: OrderId(id(3)),
                order_version: 2,
                stripe_id: "ch_1".to_string(),
            },
        ]
    }

    #[test]
    fn events_round_trip_and_json_events_stay_readable() {
        let at = Timestamp::from_millis(1_764_000_000_001);
        for (seq, event) in (1..).zip(events()) {
            let expected = StoredEvent::new(seq, &event, at);
            let bytes = encode_event(&event, at);
            assert_eq!(decode_event(seq, &bytes).unwrap(), expected);
            for len in 0..bytes.len() {
                assert!(decode_event(seq, &bytes[..len]).is_err(), "cut at {len}");
            }
            let json = serde_json::to_vec(&expected).unwrap();
            assert_eq!(decode_event(seq, &json).unwrap(), expected);
        }
    }

    #[test]
    fn records_written_as_json_by_earlier_versions_stay_readable() {
        for record in tickets() {
            let mut bytes = 4u64.to_be_bytes().to_vec();
            bytes.extend(serde_json::to_vec(&record).unwrap());
            assert_eq!(decode::<Ticket>(&bytes).unwrap(), record);
            assert_eq!(decode_state::<Ticket>(&bytes).unwrap(), record.state);
        }
        for record in orders() {
            let mut bytes = 4u64.to_be_bytes().to_vec();
            bytes.extend(serde_json::to_vec(&record).unwrap());
            assert_eq!(decode::<Order>(&bytes).unwrap(), record);
        }
    }

    #[test]
    fn a_truncated_or_extended_record_is_an_error_not_a_panic() {
        for record in orders() {
            let bytes = encode(1, &record);
            for len in 0..bytes.len() {
                assert!(decode::<Order>(&bytes[..len]).is_err(), "cut at {len}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode::<Order>(&longer).is_err());
        }
        let mut unknown = encode(1, &tickets()[0]);
        unknown[8] = 9;
        assert_eq!(
            decode::<Ticket>(&unknown).unwrap_err(),
            "unknown record format 9"
        );
    }

    #[test]
    fn a_record_that_does_not_parse_as_the_api_would_is_refused() {
        let record = &tickets()[0];
        let mut bytes = encode(1, record);
        // The title starts after the version, the format byte, the id and the length.
        let title_at = 8 + 1 + 12 + 4;
        let title_len = record.state.title.as_str().len();
        bytes[title_at..title_at + title_len].fill(b' ');
        assert!(decode::<Ticket>(&bytes).is_err());

        let mut free = encode(1, record);
        let price_at = title_at + title_len;
        free[price_at..price_at + 8].fill(0);
        assert!(decode::<Ticket>(&free).is_err());
    }
}
