//! Bulk seeding and checking for the expiry storm at scale (`bench/expiry-storm`): COUNT unpaid
//! orders that all expire at the same instant, too many to create over HTTP in time.
//!
//! `seed DATA_DIR COUNT DUE_IN_SECS IDS_FILE` writes COUNT tickets, each reserved by its own
//! unpaid order, straight into an embedded data directory through the `Store` port: the same
//! records, transitions and events the actors would write, every order due at one instant
//! DUE_IN_SECS from the start of the seeding. The store keeps their deadlines, so the server
//! started on the directory arms the timers itself. IDS_FILE gets the due instant (ms since the
//! epoch) and the order ids.
//!
//! `check DATA_DIR IDS_FILE` (after the server has stopped) reads every seeded order and its
//! ticket back and prints how many were cancelled by expiry, when (the expiry transition's time
//! after the due instant: p50, p99, max), and whether every ticket was freed. Exit code 1 when an
//! order is not cancelled or a ticket is still held.
//!
//! `cargo run --release --example seed_orders -- seed DATA_DIR 100000 60 ids.txt`

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use boxoffice::domain::{
    DomainEvent, Order, OrderId, OrderStatus, Price, ReserveDecision, Ticket, TicketId,
    TicketSnapshot, Timestamp, Title, UserId,
};
use boxoffice::ids::IdGenerator;
use boxoffice::store::{EmbeddedStore, EntityWrite, Store, Stored, Transition, UnitOfWork};

/// Orders (with their tickets) per commit.
const BATCH: usize = 5_000;
/// Distinct buyers the orders are spread over (the lists per user stay short).
const BUYERS: usize = 1_000;

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["seed", directory, count, due_in, ids] => {
            seed(
                Path::new(directory),
                count.parse()?,
                Duration::from_secs(due_in.parse()?),
                Path::new(ids),
            )
            .await
        }
        ["check", directory, ids] => check(Path::new(directory), Path::new(ids)).await,
        _ => {
            eprintln!("usage: seed_orders seed DATA_DIR COUNT DUE_IN_SECS IDS_FILE");
            eprintln!("       seed_orders check DATA_DIR IDS_FILE");
            std::process::exit(2);
        }
    }
}

/// A transition as the actors record it.
fn transition(
    message: &str,
    from: &str,
    to: &str,
    version: u64,
    events: &[DomainEvent],
) -> Transition {
    Transition {
        at: boxoffice::clock::now(),
        message: message.into(),
        request_id: None,
        from: from.into(),
        to: to.into(),
        version,
        events: events.iter().map(DomainEvent::id).collect(),
    }
}

async fn seed(
    directory: &Path,
    count: usize,
    due_in: Duration,
    ids_file: &Path,
) -> Result<(), Failure> {
    std::fs::create_dir_all(directory)?;
    let store = EmbeddedStore::open(directory)?;
    let ids = IdGenerator::new();
    let seller = UserId::parse("5eed5eed5eed5eed5eed5eed")?;
    let buyers: Vec<UserId> = (0..BUYERS).map(|_| UserId(ids.next())).collect();
    let price = Price::parse_decimal("12.50").map_err(|error| error.message)?;
    let started = Instant::now();
    let now = boxoffice::clock::now();
    let due = now.plus(due_in);
    let mut out = std::io::BufWriter::new(std::fs::File::create(ids_file)?);
    writeln!(out, "{}", due.millis())?;
    let mut written = 0;
    let mut last_event_seq = 0;
    while written < count {
        let mut unit = UnitOfWork::default();
        for index in written..(written + BATCH).min(count) {
            let order_id = OrderId(ids.next());
            let title =
                Title::parse(&format!("Storm seat {index}")).map_err(|error| error.message)?;
            let created = Ticket::create(TicketId(ids.next()), title, price, seller);
            let mut ticket = Stored::new(created.state.clone());
            ticket.advance(
                created.state.clone(),
                transition("Create", "absent", "available", 0, &created.events),
            );
            let ReserveDecision::Reserved(reserved) =
                created.state.reserve(order_id, due, now, Duration::ZERO)
            else {
                return Err("a new ticket refused its first reservation".into());
            };
            let version = reserved.state.version;
            ticket.advance(
                reserved.state.clone(),
                transition(
                    "Reserve",
                    "available",
                    "reserved",
                    version,
                    &reserved.events,
                ),
            );
            let snapshot = TicketSnapshot {
                id: reserved.state.id,
                title: reserved.state.title.as_str().to_string(),
                price,
                version,
            };
            let placed = Order::create(order_id, buyers[index % BUYERS], snapshot, now, due_in);
            let mut order = Stored::new(placed.state.clone());
            order.advance(
                placed.state,
                transition("Create", "absent", "created", 0, &placed.events),
            );
            unit.writes.push(EntityWrite::Ticket {
                expected_version: None,
                record: ticket,
            });
            unit.writes.push(EntityWrite::Order {
                expected_version: None,
                record: order,
            });
            unit.events.extend(created.events);
            unit.events.extend(reserved.events);
            unit.events.extend(placed.events);
            writeln!(out, "{order_id}")?;
        }
        written += unit.writes.len() / 2;
        last_event_seq = store.commit(unit).await?.last_event_seq;
        eprint!("\rseeded {written} of {count} orders");
    }
    out.flush()?;
    // As after a while of serving: the seeding's events are already relayed.
    store.set_published_seq(last_event_seq).await?;
    if !store.close(std::time::Duration::from_secs(10)) {
        return Err("the store did not close within 10 s".into());
    }
    let left = due.since(boxoffice::clock::now());
    eprintln!(
        "\nseeded {count} orders in {:.1} s, all due at {due} ({:.1} s from now)",
        started.elapsed().as_secs_f64(),
        left.as_secs_f64()
    );
    Ok(())
}

async fn check(directory: &Path, ids_file: &Path) -> Result<(), Failure> {
    let mut lines = std::io::BufReader::new(std::fs::File::open(ids_file)?).lines();
    let due = Timestamp::from_millis(lines.next().ok_or("empty ids file")??.parse()?);
    let order_ids = lines
        .map(|line| Ok(OrderId::parse(&line?)?))
        .collect::<Result<Vec<OrderId>, Failure>>()?;
    let store = EmbeddedStore::open(directory)?;
    let mut lags = Vec::with_capacity(order_ids.len());
    let mut not_cancelled = 0;
    let mut still_held = 0;
    for id in &order_ids {
        let Some(order) = store.load_order(*id).await? else {
            not_cancelled += 1;
            continue;
        };
        let expired = order
            .transitions
            .iter()
            .find(|transition| transition.message == "Expire" && transition.to == "cancelled");
        match (order.state.status, expired) {
            (OrderStatus::Cancelled, Some(expired)) => {
                lags.push(expired.at.millis() - due.millis());
            }
            _ => not_cancelled += 1,
        }
        let ticket = store.load_ticket(order.state.ticket.id).await?;
        if ticket.is_none_or(|ticket| ticket.state.order_id() == Some(*id)) {
            still_held += 1;
        }
    }
    if !store.close(std::time::Duration::from_secs(10)) {
        return Err("the store did not close within 10 s".into());
    }
    lags.sort_unstable();
    let percentile = |share: f64| -> i64 {
        lags.get(((lags.len() as f64 * share).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} of {} orders cancelled by expiry; after the due instant: first {} ms, p50 {} ms, p99 {} ms, last {} ms",
        lags.len(),
        order_ids.len(),
        lags.first().copied().unwrap_or(0),
        percentile(0.5),
        percentile(0.99),
        lags.last().copied().unwrap_or(0),
    );
    println!(
        "orders not cancelled: {not_cancelled}; tickets still held by their order: {still_held}"
    );
    if not_cancelled > 0 || still_held > 0 {
        std::process::exit(1);
    }
    Ok(())
}
