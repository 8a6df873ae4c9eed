//! The history checker: a pure function from a recorded history and the observed final state
//! (the API's view of every order and ticket, and the event log) to the violations found.
//!
//! Owns the safety properties BoxOffice promises under load: no ticket held by two live orders,
//! no acknowledged order lost, what the client saw is what the server kept (paid means
//! complete), never both paid and expired, every ticket sold at most once, strictly increasing
//! versions per entity in the event log, and (liveness) no unpaid order left long past its
//! deadline. It must not do I/O or read the clock, so every rule is unit-tested on planted
//! histories.
//!
//! Indeterminate operations (transport errors, 5xx) are never held against the server: the
//! client does not know whether they happened.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::history::{Operation, OperationKind};

/// An order as `GET /api/orders/:id` showed it to its owner at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedOrder {
    /// The contract's status (`created`, `awaiting:payment`, `complete`, `cancelled`).
    pub status: String,
    /// The ticket the order holds or held.
    pub ticket_id: String,
    /// Milliseconds since the epoch.
    pub expires_at_millis: i64,
}

/// A ticket as `GET /api/tickets/:id` showed it at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedTicket {
    /// The live order holding it, if any.
    pub order_id: Option<String>,
    /// The ticket's version.
    pub version: u64,
}

/// One entry of the event log (`GET /admin/api/events`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    /// Position in the log.
    pub seq: u64,
    /// Unique per event (`<name>:<entity>:<version>`); a re-publication repeats it.
    pub id: String,
    /// The contract's event name, e.g. `order.created`.
    pub name: String,
    /// Milliseconds since the epoch.
    pub at_millis: i64,
    /// The payload, as the contract's event table gives it.
    pub data: Value,
}

/// What the server showed once the load stopped.
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    /// Every order the checker asked about: `None` when it answered 404.
    pub orders: BTreeMap<String, Option<ObservedOrder>>,
    /// Every ticket the checker asked about: `None` when it answered 404.
    pub tickets: BTreeMap<String, Option<ObservedTicket>>,
    /// The event log, in sequence order, when the admin token was known.
    pub events: Option<Vec<LoggedEvent>>,
    /// When the final state was read (milliseconds since the epoch).
    pub observed_at_millis: i64,
}

/// Which rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// Two live orders hold one ticket.
    DoubleBooking,
    /// An order acknowledged with 201 does not exist.
    LostOrder,
    /// The server kept something other than what it told the client.
    InconsistentOrder,
    /// One order was both paid and expired.
    PaidAndExpired,
    /// A ticket was sold to more than one order.
    SoldTwice,
    /// An entity's versions in the event log do not strictly increase.
    VersionNotIncreasing,
    /// An unpaid order is still not cancelled long after its deadline.
    ExpiryMissed,
}

/// A broken rule, with the operations that led to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// The rule broken.
    pub kind: ViolationKind,
    /// The ticket or order concerned.
    pub entity: String,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Ids of the recorded operations on the entities concerned.
    pub operations: Vec<u64>,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Every violation found, by kind and entity.
    pub violations: Vec<Violation>,
    /// Orders read back.
    pub orders_checked: usize,
    /// Tickets read back.
    pub tickets_checked: usize,
    /// `None` when the event log could not be read (no admin token).
    pub events_checked: Option<usize>,
    /// Operations whose outcome the client does not know (transport errors, 5xx).
    pub indeterminate_operations: usize,
}

const LIVE_STATUSES: [&str; 3] = ["created", "awaiting:payment", "complete"];

/// How long past its deadline an unpaid order may still show `created` (the contract says
/// "within a second"; the margin absorbs a loaded machine and clock reads on two sides).
pub const EXPIRY_GRACE_MILLIS: i64 = 30_000;

/// Checks `history` against `state` and returns every violation found.
pub fn check(history: &[Operation], state: &FinalState) -> Verdict {
    let index = HistoryIndex::new(history);
    let mut violations = Vec::new();
    check_acknowledged_orders(&index, state, &mut violations);
    check_final_holders(&index, state, &mut violations);
    if let Some(events) = &state.events {
        check_event_log(&index, events, &mut violations);
    }
    violations.sort_by(|left, right| (left.kind, &left.entity).cmp(&(right.kind, &right.entity)));
    violations.dedup();
    Verdict {
        violations,
        orders_checked: state.orders.len(),
        tickets_checked: state.tickets.len(),
        events_checked: state.events.as_ref().map(Vec::len),
        indeterminate_operations: history
            .iter()
            .filter(|operation| is_indeterminate(operation))
            .count(),
    }
}

/// True when the client cannot know whether the operation took effect.
fn is_indeterminate(operation: &Operation) -> bool {
    operation.status.is_none_or(|status| status >= 500)
}

/// The history, looked up by order and by ticket.
struct HistoryIndex<'history> {
    by_order: HashMap<&'history str, Vec<&'history Operation>>,
    by_ticket: HashMap<&'history str, Vec<&'history Operation>>,
    /// The ticket each acknowledged order was for, as the client asked.
    ticket_of_order: HashMap<&'history str, &'history str>,
}

impl<'history> HistoryIndex<'history> {
    fn new(history: &'history [Operation]) -> HistoryIndex<'history> {
        let mut index = HistoryIndex {
            by_order: HashMap::new(),
            by_ticket: HashMap::new(),
            ticket_of_order: HashMap::new(),
        };
        for operation in history {
            if let Some(order) = operation.order_id.as_deref() {
                index.by_order.entry(order).or_default().push(operation);
            }
            if let Some(ticket) = operation.ticket_id.as_deref() {
                index.by_ticket.entry(ticket).or_default().push(operation);
                if let (OperationKind::Order, Some(order)) =
                    (operation.kind, operation.order_id.as_deref())
                {
                    index.ticket_of_order.insert(order, ticket);
                }
            }
        }
        index
    }

    /// Ids of the operations on these orders and on their tickets.
    fn operations_on(&self, orders: &[&str], tickets: &[&str]) -> Vec<u64> {
        let mut ids = BTreeSet::new();
        for order in orders {
            ids.extend(
                self.by_order
                    .get(order)
                    .into_iter()
                    .flatten()
                    .map(|op| op.id),
            );
            if let Some(ticket) = self.ticket_of_order.get(order) {
                ids.extend(
                    self.by_ticket
                        .get(ticket)
                        .into_iter()
                        .flatten()
                        .filter(|op| op.kind == OperationKind::Order && op.answered(201))
                        .map(|op| op.id),
                );
            }
        }
        for ticket in tickets {
            ids.extend(
                self.by_ticket
                    .get(ticket)
                    .into_iter()
                    .flatten()
                    .filter(|op| op.kind == OperationKind::Order && op.answered(201))
                    .map(|op| op.id),
            );
        }
        ids.into_iter().collect()
    }
}

/// Every 201 order exists, for the ticket asked, with a status consistent with what the client
/// saw afterwards: a 201 payment means complete, a 204 cancel means cancelled.
fn check_acknowledged_orders(
    index: &HistoryIndex<'_>,
    state: &FinalState,
    violations: &mut Vec<Violation>,
) {
    for (order_id, operations) in &index.by_order {
        let created = operations
            .iter()
            .any(|op| op.kind == OperationKind::Order && op.answered(201));
        let paid = operations
            .iter()
            .any(|op| op.kind == OperationKind::Pay && op.answered(201));
        let cancelled = operations
            .iter()
            .any(|op| op.kind == OperationKind::Cancel && op.answered(204));
        if !created {
            continue;
        }
        let mut found = |kind: ViolationKind, message: String| {
            violations.push(Violation {
                kind,
                entity: (*order_id).to_string(),
                message,
                operations: index.operations_on(&[order_id], &[]),
            });
        };
        let observed = match state.orders.get(*order_id) {
            Some(Some(observed)) => observed,
            Some(None) => {
                found(
                    ViolationKind::LostOrder,
                    format!("order {order_id} was acknowledged with 201 but answers 404"),
                );
                continue;
            }
            None => {
                found(
                    ViolationKind::LostOrder,
                    format!("order {order_id} was acknowledged with 201 but never read back"),
                );
                continue;
            }
        };
        if let Some(asked) = index.ticket_of_order.get(order_id)
            && *asked != observed.ticket_id
        {
            found(
                ViolationKind::InconsistentOrder,
                format!(
                    "order {order_id} was placed for ticket {asked} but holds ticket {}",
                    observed.ticket_id
                ),
            );
        }
        for (acknowledged, what, expected) in [
            (paid, "paid (201)", "complete"),
            (cancelled, "cancelled (204)", "cancelled"),
        ] {
            if acknowledged && observed.status != expected {
                found(
                    ViolationKind::InconsistentOrder,
                    format!(
                        "order {order_id} was {what} but its status is {}",
                        observed.status
                    ),
                );
            }
        }
    }
}

/// In the final state: at most one live order per ticket (an unpaid order past its deadline no
/// longer counts: it can never be paid), at most one complete order per ticket, and a complete
/// order's ticket names it.
fn check_final_holders(
    index: &HistoryIndex<'_>,
    state: &FinalState,
    violations: &mut Vec<Violation>,
) {
    let mut live_by_ticket: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut complete_by_ticket: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (order_id, observed) in &state.orders {
        let Some(observed) = observed else { continue };
        let lapsed =
            observed.status != "complete" && observed.expires_at_millis <= state.observed_at_millis;
        if observed.status == "created"
            && observed
                .expires_at_millis
                .saturating_add(EXPIRY_GRACE_MILLIS)
                < state.observed_at_millis
        {
            violations.push(Violation {
                kind: ViolationKind::ExpiryMissed,
                entity: order_id.clone(),
                message: format!(
                    "order {order_id} is still created {} ms after its deadline",
                    state.observed_at_millis - observed.expires_at_millis
                ),
                operations: index.operations_on(&[order_id], &[]),
            });
        }
        if LIVE_STATUSES.contains(&observed.status.as_str()) && !lapsed {
            live_by_ticket
                .entry(&observed.ticket_id)
                .or_default()
                .push(order_id);
        }
        if observed.status == "complete" {
            complete_by_ticket
                .entry(&observed.ticket_id)
                .or_default()
                .push(order_id);
            if let Some(Some(ticket)) = state.tickets.get(&observed.ticket_id)
                && ticket.order_id.as_deref() != Some(order_id.as_str())
            {
                violations.push(Violation {
                    kind: ViolationKind::InconsistentOrder,
                    entity: order_id.clone(),
                    message: format!(
                        "order {order_id} is complete but its ticket {} is held by {}",
                        observed.ticket_id,
                        ticket.order_id.as_deref().unwrap_or("no order")
                    ),
                    operations: index.operations_on(&[order_id], &[&observed.ticket_id]),
                });
            }
        }
    }
    for (ticket, orders) in live_by_ticket.iter().filter(|(_, orders)| orders.len() > 1) {
        violations.push(Violation {
            kind: ViolationKind::DoubleBooking,
            entity: (*ticket).to_string(),
            message: format!(
                "ticket {ticket} is held by {} live orders: {}",
                orders.len(),
                orders.join(", ")
            ),
            operations: index.operations_on(orders, &[ticket]),
        });
    }
    for (ticket, orders) in complete_by_ticket
        .iter()
        .filter(|(_, orders)| orders.len() > 1)
    {
        violations.push(Violation {
            kind: ViolationKind::SoldTwice,
            entity: (*ticket).to_string(),
            message: format!(
                "ticket {ticket} was sold to {} orders: {}",
                orders.len(),
                orders.join(", ")
            ),
            operations: index.operations_on(orders, &[ticket]),
        });
    }
}

/// Replays the event log (first copy of each event id, in sequence order): a ticket never gains
/// a second live order, is completed by at most one order, no order is both paid and expired,
/// and versions per entity strictly increase.
fn check_event_log(
    index: &HistoryIndex<'_>,
    events: &[LoggedEvent],
    violations: &mut Vec<Violation>,
) {
    struct LiveOrder {
        order: String,
        expires_at_millis: i64,
        complete: bool,
    }
    let mut seen_ids = BTreeSet::new();
    let mut versions: HashMap<String, (u64, u64)> = HashMap::new();
    let mut live: HashMap<String, Vec<LiveOrder>> = HashMap::new();
    let mut ticket_of: HashMap<String, String> = HashMap::new();
    let mut completed_by_ticket: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut paid = BTreeSet::new();
    let mut expired = BTreeSet::new();
    for event in events {
        if !seen_ids.insert(event.id.as_str()) {
            continue;
        }
        let entity = event.data["id"].as_str().unwrap_or_default().to_string();
        let version = event.data["version"].as_u64();
        if let (false, Some(version)) = (entity.is_empty(), version)
            && !matches!(
                event.name.as_str(),
                "payment.created" | "expiration.complete"
            )
        {
            let kind = event.name.split('.').next().unwrap_or_default();
            let key = format!("{kind}:{entity}");
            match versions.get(&key) {
                Some((previous, previous_seq)) if *previous >= version => {
                    let (orders, tickets): (Vec<&str>, Vec<&str>) = if kind == "order" {
                        (vec![entity.as_str()], vec![])
                    } else {
                        (vec![], vec![entity.as_str()])
                    };
                    violations.push(Violation {
                        kind: ViolationKind::VersionNotIncreasing,
                        entity: entity.clone(),
                        message: format!(
                            "{kind} {entity} has version {version} at event {} after version {previous} at event {previous_seq}",
                            event.seq
                        ),
                        operations: index.operations_on(&orders, &tickets),
                    });
                }
                _ => {}
            }
            versions.insert(key, (version, event.seq));
        }
        match event.name.as_str() {
            "order.created" => {
                let ticket = event.data["ticket"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let expires_at_millis = event.data["expiresAt"]
                    .as_str()
                    .and_then(crate::domain::Timestamp::parse_iso8601)
                    .map_or(i64::MAX, crate::domain::Timestamp::millis);
                let holders = live.entry(ticket.clone()).or_default();
                // An unpaid order past its deadline can never be paid, so it no longer holds.
                holders
                    .retain(|holder| holder.complete || holder.expires_at_millis > event.at_millis);
                if !holders.is_empty() {
                    let mut orders: Vec<&str> =
                        holders.iter().map(|holder| holder.order.as_str()).collect();
                    orders.push(&entity);
                    violations.push(Violation {
                        kind: ViolationKind::DoubleBooking,
                        entity: ticket.clone(),
                        message: format!(
                            "event {}: order {entity} took ticket {ticket} while {} still held it",
                            event.seq,
                            orders[..orders.len() - 1].join(", ")
                        ),
                        operations: index.operations_on(&orders, &[&ticket]),
                    });
                }
                holders.push(LiveOrder {
                    order: entity.clone(),
                    expires_at_millis,
                    complete: false,
                });
                ticket_of.insert(entity, ticket);
            }
            "order.cancelled" => {
                if let Some(holders) = ticket_of
                    .get(&entity)
                    .and_then(|ticket| live.get_mut(ticket))
                {
                    holders.retain(|holder| holder.order != entity);
                }
            }
            "order.completed" => {
                let ticket = event.data["ticket"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if let Some(holder) = live
                    .get_mut(&ticket)
                    .and_then(|holders| holders.iter_mut().find(|holder| holder.order == entity))
                {
                    holder.complete = true;
                }
                completed_by_ticket
                    .entry(ticket)
                    .or_default()
                    .insert(entity);
            }
            "payment.created" => {
                if let Some(order) = event.data["orderId"].as_str() {
                    paid.insert(order.to_string());
                }
            }
            "expiration.complete" => {
                if let Some(order) = event.data["orderId"].as_str() {
                    expired.insert(order.to_string());
                }
            }
            _ => {}
        }
    }
    for order in paid.intersection(&expired) {
        violations.push(Violation {
            kind: ViolationKind::PaidAndExpired,
            entity: order.clone(),
            message: format!("order {order} has both payment.created and expiration.complete"),
            operations: index.operations_on(&[order], &[]),
        });
    }
    for (ticket, orders) in completed_by_ticket
        .iter()
        .filter(|(_, orders)| orders.len() > 1)
    {
        let orders: Vec<&str> = orders.iter().map(String::as_str).collect();
        violations.push(Violation {
            kind: ViolationKind::SoldTwice,
            entity: ticket.clone(),
            message: format!(
                "the event log completes ticket {ticket} for {} orders: {}",
                orders.len(),
                orders.join(", ")
            ),
            operations: index.operations_on(&orders, &[ticket]),
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const T1: &str = "aaaaaaaaaaaaaaaaaaaaaaa1";
    const T2: &str = "aaaaaaaaaaaaaaaaaaaaaaa2";
    const O1: &str = "bbbbbbbbbbbbbbbbbbbbbbb1";
    const O2: &str = "bbbbbbbbbbbbbbbbbbbbbbb2";
    const O3: &str = "bbbbbbbbbbbbbbbbbbbbbbb3";
    const NOW: i64 = 1_800_000_000_000;
    const LATER: i64 = NOW + 900_000;

    /// Builds a history one operation at a time, with increasing ids and times.
    #[derive(Default)]
    struct Script {
        operations: Vec<Operation>,
    }

    impl Script {
        fn push(
            &mut self,
            kind: OperationKind,
            ticket: Option<&str>,
            order: Option<&str>,
            status: Option<u16>,
        ) -> &mut Self {
            let id = self.operations.len() as u64;
            self.operations.push(Operation {
                id,
                kind,
                step: 0,
                user: Some(id as usize % 3),
                ticket_id: ticket.map(str::to_string),
                order_id: order.map(str::to_string),
                intended_micros: id * 1000,
                invoked_micros: id * 1000 + 10,
                completed_micros: id * 1000 + 500,
                status,
                error: status.is_none().then(|| "connection reset".to_string()),
                retries: 0,
            });
            self
        }
        fn order(&mut self, ticket: &str, order: &str) -> &mut Self {
            self.push(OperationKind::Order, Some(ticket), Some(order), Some(201))
        }
        fn refused(&mut self, ticket: &str) -> &mut Self {
            self.push(OperationKind::Order, Some(ticket), None, Some(400))
        }
        fn pay(&mut self, order: &str) -> &mut Self {
            self.push(OperationKind::Pay, None, Some(order), Some(201))
        }
        fn cancel(&mut self, order: &str) -> &mut Self {
            self.push(OperationKind::Cancel, None, Some(order), Some(204))
        }
    }

    fn order(status: &str, ticket: &str) -> Option<ObservedOrder> {
        Some(ObservedOrder {
            status: status.to_string(),
            ticket_id: ticket.to_string(),
            expires_at_millis: LATER,
        })
    }

    fn ticket(holder: Option<&str>, version: u64) -> Option<ObservedTicket> {
        Some(ObservedTicket {
            order_id: holder.map(str::to_string),
            version,
        })
    }

    /// An event log builder: ids as the server makes them, `at` = NOW + seq.
    #[derive(Default)]
    struct Log {
        events: Vec<LoggedEvent>,
    }

    impl Log {
        fn push(&mut self, name: &str, entity: &str, version: u64, data: Value) -> &mut Self {
            let seq = self.events.len() as u64 + 1;
            self.events.push(LoggedEvent {
                seq,
                id: format!("{name}:{entity}:{version}"),
                name: name.to_string(),
                at_millis: NOW + seq as i64,
                data,
            });
            self
        }
        fn ticket(&mut self, ticket: &str, version: u64, holder: Option<&str>) -> &mut Self {
            let name = if version == 0 {
                "ticket.created"
            } else {
                "ticket.updated"
            };
            let mut data = json!({"id": ticket, "version": version, "title": "t", "price": 10});
            if let Some(holder) = holder {
                data["orderId"] = json!(holder);
            }
            self.push(name, ticket, version, data)
        }
        fn order_created(&mut self, order: &str, ticket: &str) -> &mut Self {
            self.push(
                "order.created",
                order,
                0,
                json!({"id": order, "version": 0, "status": "created", "userId": "u",
                       "expiresAt": crate::domain::Timestamp::from_millis(LATER).to_iso8601(),
                       "ticket": {"id": ticket, "price": 10}}),
            )
        }
        fn order_cancelled(&mut self, order: &str, ticket: &str, version: u64) -> &mut Self {
            self.push(
                "order.cancelled",
                order,
                version,
                json!({"id": order, "version": version, "ticket": {"id": ticket}}),
            )
        }
        fn order_completed(&mut self, order: &str, ticket: &str, version: u64) -> &mut Self {
            self.push(
                "order.completed",
                order,
                version,
                json!({"id": order, "version": version, "ticket": {"id": ticket}}),
            )
        }
        fn paid(&mut self, order: &str, version: u64) -> &mut Self {
            self.push(
                "payment.created",
                order,
                version,
                json!({"id": "p", "orderId": order, "stripeId": "ch_1"}),
            )
        }
        fn expired(&mut self, order: &str, version: u64) -> &mut Self {
            self.push(
                "expiration.complete",
                order,
                version,
                json!({"orderId": order}),
            )
        }
    }

    fn state(
        orders: &[(&str, Option<ObservedOrder>)],
        tickets: &[(&str, Option<ObservedTicket>)],
        log: Option<&Log>,
    ) -> FinalState {
        FinalState {
            orders: orders
                .iter()
                .map(|(id, order)| (id.to_string(), order.clone()))
                .collect(),
            tickets: tickets
                .iter()
                .map(|(id, ticket)| (id.to_string(), ticket.clone()))
                .collect(),
            events: log.map(|log| log.events.clone()),
            observed_at_millis: NOW + 1000,
        }
    }

    fn kinds(verdict: &Verdict) -> Vec<ViolationKind> {
        verdict
            .violations
            .iter()
            .map(|violation| violation.kind)
            .collect()
    }

    /// A flash sale: O1 wins T1 and pays, two buyers are refused, O2 wins T2 and cancels, O3
    /// then takes T2 and is left unpaid; one request was lost in transport.
    fn clean_run() -> (Script, Log, FinalState) {
        let mut script = Script::default();
        script
            .order(T1, O1)
            .refused(T1)
            .refused(T1)
            .pay(O1)
            .order(T2, O2)
            .cancel(O2)
            .order(T2, O3)
            .push(OperationKind::Order, Some(T1), None, None);
        let mut log = Log::default();
        log.ticket(T1, 0, None)
            .ticket(T2, 0, None)
            .ticket(T1, 1, Some(O1))
            .order_created(O1, T1)
            .order_completed(O1, T1, 2)
            .paid(O1, 2)
            .ticket(T1, 2, Some(O1))
            .ticket(T2, 1, Some(O2))
            .order_created(O2, T2)
            .order_cancelled(O2, T2, 1)
            .ticket(T2, 2, None)
            .ticket(T2, 3, Some(O3))
            .order_created(O3, T2);
        let state = state(
            &[
                (O1, order("complete", T1)),
                (O2, order("cancelled", T2)),
                (O3, order("created", T2)),
            ],
            &[(T1, ticket(Some(O1), 2)), (T2, ticket(Some(O3), 3))],
            Some(&log),
        );
        (script, log, state)
    }

    #[test]
    fn a_clean_history_passes() {
        let (script, _, state) = clean_run();
        let verdict = check(&script.operations, &state);
        assert_eq!(verdict.violations, vec![]);
        assert_eq!(verdict.orders_checked, 3);
        assert_eq!(verdict.tickets_checked, 2);
        assert_eq!(verdict.events_checked, Some(13));
        assert_eq!(verdict.indeterminate_operations, 1);
    }

    #[test]
    fn a_repeated_event_is_not_a_version_regression() {
        let (script, mut log, mut state) = clean_run();
        let repeat = log.events[4].clone();
        log.events.push(LoggedEvent { seq: 99, ..repeat });
        state.events = Some(log.events);
        assert_eq!(check(&script.operations, &state).violations, vec![]);
    }

    #[test]
    fn a_double_booking_is_found_in_the_final_state_and_the_log() {
        let mut script = Script::default();
        script.order(T1, O1).order(T1, O2);
        let mut log = Log::default();
        log.ticket(T1, 0, None)
            .ticket(T1, 1, Some(O1))
            .order_created(O1, T1)
            .order_created(O2, T1);
        let state = state(
            &[(O1, order("created", T1)), (O2, order("created", T1))],
            &[(T1, ticket(Some(O1), 1))],
            Some(&log),
        );
        let verdict = check(&script.operations, &state);
        assert_eq!(
            kinds(&verdict),
            vec![ViolationKind::DoubleBooking, ViolationKind::DoubleBooking]
        );
        for violation in &verdict.violations {
            assert_eq!(violation.entity, T1);
            assert_eq!(violation.operations, vec![0, 1], "{violation:?}");
        }
    }

    #[test]
    fn an_order_past_its_deadline_no_longer_holds_its_ticket() {
        let mut script = Script::default();
        script.order(T1, O1).order(T1, O2);
        let lapsed = ObservedOrder {
            expires_at_millis: NOW,
            ..order("created", T1).unwrap()
        };
        let state = state(
            &[(O1, Some(lapsed)), (O2, order("created", T1))],
            &[(T1, ticket(Some(O2), 3))],
            None,
        );
        assert_eq!(check(&script.operations, &state).violations, vec![]);
    }

    #[test]
    fn an_order_never_expired_is_found() {
        let mut script = Script::default();
        script.order(T1, O1);
        let forgotten = ObservedOrder {
            expires_at_millis: NOW - EXPIRY_GRACE_MILLIS,
            ..order("created", T1).unwrap()
        };
        let state = state(&[(O1, Some(forgotten))], &[(T1, ticket(Some(O1), 1))], None);
        let verdict = check(&script.operations, &state);
        assert_eq!(kinds(&verdict), vec![ViolationKind::ExpiryMissed]);
        assert_eq!(verdict.violations[0].operations, vec![0]);
    }

    #[test]
    fn a_lost_order_is_found() {
        let (script, _, mut state) = clean_run();
        state.orders.insert(O3.to_string(), None);
        let verdict = check(&script.operations, &state);
        assert_eq!(kinds(&verdict), vec![ViolationKind::LostOrder]);
        assert_eq!(verdict.violations[0].entity, O3);
        assert!(verdict.violations[0].operations.contains(&6), "{verdict:?}");
    }

    #[test]
    fn a_payment_the_server_forgot_is_found() {
        let (script, _, mut state) = clean_run();
        state.orders.insert(O1.to_string(), order("cancelled", T1));
        let verdict = check(&script.operations, &state);
        assert!(
            kinds(&verdict).contains(&ViolationKind::InconsistentOrder),
            "{verdict:?}"
        );
        let violation = &verdict.violations[0];
        assert_eq!(violation.entity, O1);
        assert!(
            violation.operations.contains(&3),
            "the payment is named: {violation:?}"
        );
    }

    #[test]
    fn pay_and_expire_of_one_order_is_found() {
        let mut script = Script::default();
        script.order(T1, O1).pay(O1);
        let mut log = Log::default();
        log.ticket(T1, 0, None)
            .ticket(T1, 1, Some(O1))
            .order_created(O1, T1)
            .order_completed(O1, T1, 2)
            .paid(O1, 2)
            .expired(O1, 3);
        let state = state(
            &[(O1, order("complete", T1))],
            &[(T1, ticket(Some(O1), 2))],
            Some(&log),
        );
        let verdict = check(&script.operations, &state);
        assert_eq!(kinds(&verdict), vec![ViolationKind::PaidAndExpired]);
        assert_eq!(verdict.violations[0].operations, vec![0, 1]);
    }

    #[test]
    fn a_ticket_sold_twice_is_found() {
        let mut script = Script::default();
        script.order(T1, O1).pay(O1).order(T1, O2).pay(O2);
        let mut log = Log::default();
        log.order_created(O1, T1)
            .order_completed(O1, T1, 2)
            .order_cancelled(O1, T1, 3)
            .order_created(O2, T1)
            .order_completed(O2, T1, 2);
        let state = state(
            &[(O1, order("complete", T1)), (O2, order("complete", T1))],
            &[(T1, ticket(Some(O2), 4))],
            Some(&log),
        );
        let verdict = check(&script.operations, &state);
        let found = kinds(&verdict);
        assert!(found.contains(&ViolationKind::SoldTwice), "{verdict:?}");
        assert!(found.contains(&ViolationKind::DoubleBooking), "{verdict:?}");
        assert!(
            found.contains(&ViolationKind::InconsistentOrder),
            "O1's ticket names O2: {verdict:?}"
        );
        // O1's log goes 0, 2, 3: increasing, so no version violation.
        assert!(
            !found.contains(&ViolationKind::VersionNotIncreasing),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_version_that_does_not_increase_is_found() {
        let (script, mut log, _) = clean_run();
        // Another event of O3 that claims its creation's version again.
        log.order_cancelled(O3, T2, 0);
        let (_, _, mut state) = clean_run();
        state.events = Some(log.events);
        let verdict = check(&script.operations, &state);
        assert_eq!(kinds(&verdict), vec![ViolationKind::VersionNotIncreasing]);
        assert_eq!(verdict.violations[0].entity, O3);
        assert!(verdict.violations[0].operations.contains(&6), "{verdict:?}");
    }

    #[test]
    fn indeterminate_operations_are_not_held_against_the_server() {
        let mut script = Script::default();
        script
            .push(OperationKind::Order, Some(T1), None, None)
            .push(OperationKind::Order, Some(T1), None, Some(503));
        let state = state(&[], &[(T1, ticket(None, 0))], None);
        let verdict = check(&script.operations, &state);
        assert_eq!(verdict.violations, vec![]);
        assert_eq!(verdict.indeterminate_operations, 2);
        assert_eq!(verdict.events_checked, None);
    }
}
