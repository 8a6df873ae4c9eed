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
//! `memory DATA_DIR IDS_FILE` measures the resident memory of an active actor in isolation: it
//! reads every seeded order and ticket through the store once (so the store's cache is warm and
//! not counted), then activates a ticket actor for every ticket and an order actor for every
//! order on a runtime with passivation off, and prints the growth of the process's resident
//! memory per actor after each kind; then spawns as many actors that hold nothing and answer
//! nothing, for ractor's own share. Seed with a due instant far enough away that nothing expires
//! during the measurement (`bench/actor-memory`).
//!
//! `cargo run --release --example seed_orders -- seed DATA_DIR 100000 60 ids.txt`

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use boxoffice::actors::{DirectoryConfig, Runtime, RuntimeConfig};

use boxoffice::domain::{OrderId, OrderStatus, Price, Timestamp, Title, UserId};
use boxoffice::ids::IdGenerator;
use boxoffice::metrics::Metrics;
use boxoffice::payments::SandboxGateway;
use boxoffice::store::seed::ReservedOrder;
use boxoffice::store::{EmbeddedStore, Store, UnitOfWork};
use boxoffice::timers::EmbeddedTimers;

/// The allocator `boxoffice serve` uses, so that `memory` measures what the server would hold.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        ["memory", directory, ids] => memory(Path::new(directory), Path::new(ids)).await,
        _ => {
            eprintln!("usage: seed_orders seed DATA_DIR COUNT DUE_IN_SECS IDS_FILE");
            eprintln!("       seed_orders check DATA_DIR IDS_FILE");
            eprintln!("       seed_orders memory DATA_DIR IDS_FILE");
            std::process::exit(2);
        }
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
            let title =
                Title::parse(&format!("Storm seat {index}")).map_err(|error| error.message)?;
            let seeded = ReservedOrder::new(
                &ids,
                title,
                price,
                seller,
                buyers[index % BUYERS],
                now,
                due_in,
            )
            .ok_or("a new ticket refused its first reservation")?;
            writeln!(out, "{}", seeded.order.state.id)?;
            seeded.add_to(&mut unit);
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

/// The due instant and the order ids `seed` wrote.
fn read_ids(ids_file: &Path) -> Result<(Timestamp, Vec<OrderId>), Failure> {
    let mut lines = std::io::BufReader::new(std::fs::File::open(ids_file)?).lines();
    let due = Timestamp::from_millis(lines.next().ok_or("empty ids file")??.parse()?);
    let order_ids = lines
        .map(|line| Ok(OrderId::parse(&line?)?))
        .collect::<Result<Vec<OrderId>, Failure>>()?;
    Ok((due, order_ids))
}

async fn check(directory: &Path, ids_file: &Path) -> Result<(), Failure> {
    let (due, order_ids) = read_ids(ids_file)?;
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

/// An actor that holds nothing and answers nothing: ractor's own cost per actor.
struct Bare;

impl Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// The process's resident memory in bytes (`/proc/self/statm`, second field, in pages).
fn resident_bytes() -> Result<u64, Failure> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("unexpected /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

async fn memory(directory: &Path, ids_file: &Path) -> Result<(), Failure> {
    let (due, order_ids) = read_ids(ids_file)?;
    if due.since(boxoffice::clock::now()) < Duration::from_secs(600) {
        return Err("the orders fall due within 10 minutes: seed with a later due instant".into());
    }
    let store = Arc::new(EmbeddedStore::open(directory)?);
    // Every record read once: what the store caches is in the baseline, not in the actors.
    let mut ticket_ids = Vec::with_capacity(order_ids.len());
    for id in &order_ids {
        let order = store
            .load_order(*id)
            .await?
            .ok_or("a seeded order is missing")?;
        store
            .load_ticket(order.state.ticket.id)
            .await?
            .ok_or("a seeded ticket is missing")?;
        ticket_ids.push(order.state.ticket.id);
    }
    let count = order_ids.len();
    let config = RuntimeConfig {
        order_ttl: Duration::from_secs(900),
        directory: DirectoryConfig {
            shards: 256,
            mailbox_limit: 1000,
            passivate_after: Duration::from_secs(24 * 3600),
            max_live: 2 * count + 1,
        },
        call_timeout: Duration::from_secs(60),
        hold_grace: Duration::from_secs(5),
        test_hooks: false,
        is_single_node: true,
    };
    let (runtime, _background) = Runtime::new(
        config,
        store.clone(),
        Arc::new(EmbeddedTimers::new()),
        Arc::new(SandboxGateway::new()),
        Arc::new(Metrics::new()),
    );
    let baseline = resident_bytes()?;
    futures::stream::iter(ticket_ids.iter().map(|id| runtime.get_ticket(*id)))
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    let with_tickets = resident_bytes()?;
    futures::stream::iter(order_ids.iter().map(|id| runtime.get_order(*id)))
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    let with_orders = resident_bytes()?;
    let live = (runtime.tickets.live(), runtime.orders.live());
    let mut bare = Vec::with_capacity(count);
    for _ in 0..count {
        bare.push(Actor::spawn(None, Bare, ()).await?);
    }
    let with_bare = resident_bytes()?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let per_actor = |grown: u64, actors: usize| grown as f64 / actors.max(1) as f64;
    println!(
        "resident before activating: {:.1} MiB (store warm)",
        mib(baseline)
    );
    println!(
        "{} ticket actors live: {:.1} MiB, {:.0} bytes per ticket actor",
        live.0,
        mib(with_tickets),
        per_actor(with_tickets.saturating_sub(baseline), live.0)
    );
    println!(
        "{} order actors live: {:.1} MiB, {:.0} bytes per order actor",
        live.1,
        mib(with_orders),
        per_actor(with_orders.saturating_sub(with_tickets), live.1)
    );
    println!(
        "{count} bare ractor actors: {:.1} MiB, {:.0} bytes per actor",
        mib(with_bare),
        per_actor(with_bare.saturating_sub(with_orders), count)
    );
    for (actor, handle) in bare {
        actor.stop(None);
        handle.await?;
    }
    if live != (count, count) {
        return Err(format!("expected {count} live actors of each kind, found {live:?}").into());
    }
    // Nothing was written: the directory is thrown away without closing the store.
    runtime.shutdown().await;
    Ok(())
}
