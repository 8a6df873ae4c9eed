//! Records as the actors would have written them, for bulk seeding through the `Store` port
//! (`examples/seed_tickets.rs`, `examples/seed_orders.rs`, `benches/store.rs`): data sets too
//! large to create over HTTP.

use std::time::Duration;

use super::{EntityWrite, Stored, Transition, UnitOfWork};
use crate::domain::{
    DomainEvent, Order, OrderId, Price, ReserveDecision, Ticket, TicketId, TicketSnapshot,
    Timestamp, Title, UserId,
};
use crate::ids::IdGenerator;

/// Ticket `id` just put on sale by `seller`: its record with the `Create` transition, and the
/// event of that transition.
pub fn created_ticket(
    id: TicketId,
    title: Title,
    price: Price,
    seller: UserId,
) -> (Stored<Ticket>, Vec<DomainEvent>) {
    let created = Ticket::create(id, title, price, seller);
    let mut record = Stored::new(created.state.clone());
    record.advance(
        created.state,
        Transition::new("Create", None, "absent", "available", 0, &created.events),
    );
    (record, created.events)
}

/// Reserves the stored `ticket` for `order_id` from `now` until `due`, with the `Reserve`
/// transition the ticket actor records. Returns the reservation's events, or `None` when the
/// domain refuses it (the ticket is already held).
pub fn reserve(
    ticket: &mut Stored<Ticket>,
    order_id: OrderId,
    due: Timestamp,
    now: Timestamp,
) -> Option<Vec<DomainEvent>> {
    let ReserveDecision::Reserved(reserved) =
        ticket.state.reserve(order_id, due, now, Duration::ZERO)
    else {
        return None;
    };
    let version = reserved.state.version;
    ticket.advance(
        reserved.state,
        Transition::new(
            "Reserve",
            None,
            "available",
            "reserved",
            version,
            &reserved.events,
        ),
    );
    Some(reserved.events)
}

/// A new ticket reserved by a new unpaid order: both records with their transitions, and the
/// events of the three transitions (ticket created, ticket reserved, order created).
pub struct ReservedOrder {
    pub ticket: Stored<Ticket>,
    pub order: Stored<Order>,
    pub events: Vec<DomainEvent>,
}

impl ReservedOrder {
    /// A ticket put on sale by `seller`, then ordered by `buyer` at `placed_at`, due `ttl`
    /// later; both ids from `ids`. `None` only if the domain refused a new ticket's first
    /// reservation, which it never does.
    pub fn new(
        ids: &IdGenerator,
        title: Title,
        price: Price,
        seller: UserId,
        buyer: UserId,
        placed_at: Timestamp,
        ttl: Duration,
    ) -> Option<ReservedOrder> {
        let ticket_id = TicketId(ids.next());
        let order_id = OrderId(ids.next());
        let (mut ticket, mut events) = created_ticket(ticket_id, title, price, seller);
        let reserved = reserve(&mut ticket, order_id, placed_at.plus(ttl), placed_at)?;
        let snapshot = TicketSnapshot {
            id: ticket_id,
            title: ticket.state.title.as_str().to_string(),
            price,
            version: ticket.state.version,
        };
        let placed = Order::create(order_id, buyer, snapshot, placed_at, ttl);
        let mut order = Stored::new(placed.state.clone());
        order.advance(
            placed.state,
            Transition::new("Create", None, "absent", "created", 0, &placed.events),
        );
        events.extend(reserved);
        events.extend(placed.events);
        Some(ReservedOrder {
            ticket,
            order,
            events,
        })
    }

    /// Adds the creation of both records, and their events, to `unit`.
    pub fn add_to(self, unit: &mut UnitOfWork) {
        unit.writes.push(EntityWrite::Ticket {
            expected_version: None,
            record: self.ticket.into(),
        });
        unit.writes.push(EntityWrite::Order {
            expected_version: None,
            record: self.order.into(),
        });
        unit.events.extend(self.events);
    }
}
