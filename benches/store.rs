//! The embedded store's writer thread, the one serial resource of an expiry storm on the
//! embedded default (`bench/expiry-storm` profiles it at about a whole core).
//!
//! * `embedded_store/expiry`: what one expiry asks of the store, without the actors: the
//!   order's `Expire` unit (compare-and-set on its version, its event, the release command, the
//!   deadline index), then the ticket's release unit, then the command marked done; 2,048
//!   expiries in flight at once, as the timer worker keeps them, so group commit is full. The
//!   time reported is per expiry; every iteration expires orders seeded (untimed) just before.
//!
//! Run with `cargo bench --bench store` (release profile).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;

use boxoffice::domain::{ExpireOutcome, Order, Price, Ticket, Timestamp, Title, UserId};
use boxoffice::ids::IdGenerator;
use boxoffice::store::seed::ReservedOrder;
use boxoffice::store::{
    Command, EmbeddedStore, EntityWrite, Store, Stored, Transition, UnitOfWork,
};

/// Expiries in flight at once (the timer worker's `TIMERS_IN_FLIGHT`).
const IN_FLIGHT: usize = 2048;
/// Orders (with their tickets) per seeding commit.
const SEED_BATCH: usize = 2048;

/// An unpaid order already due, and the ticket it holds.
struct Due {
    order: Stored<Order>,
    ticket: Stored<Ticket>,
}

/// Seeds `count` due orders with their tickets; returns them as the store holds them.
async fn seed(store: &EmbeddedStore, ids: &IdGenerator, count: u64) -> Vec<Due> {
    let seller = UserId(ids.next());
    let buyer = UserId(ids.next());
    let price = Price::from_cents(1250).expect("price");
    let placed_at = Timestamp::from_millis(boxoffice::clock::now().millis() - 60_000);
    let ttl = Duration::from_secs(1);
    let mut seeded = Vec::new();
    while (seeded.len() as u64) < count {
        let mut unit = UnitOfWork::default();
        let mut batch = Vec::new();
        for _ in 0..SEED_BATCH.min(usize::try_from(count).unwrap_or(usize::MAX) - seeded.len()) {
            let title = Title::parse("Bench seat").expect("title");
            let reserved = ReservedOrder::new(ids, title, price, seller, buyer, placed_at, ttl)
                .expect("a new ticket takes its first reservation");
            batch.push(Due {
                order: reserved.order.clone(),
                ticket: reserved.ticket.clone(),
            });
            reserved.add_to(&mut unit);
        }
        store.commit(unit).await.expect("seed a batch");
        seeded.extend(batch);
    }
    seeded
}

/// The three commits of one expiry, as the order and ticket actors and the command completion
/// make them.
async fn expire(store: &EmbeddedStore, due: Due) {
    let Due {
        mut order,
        mut ticket,
    } = due;
    let ExpireOutcome::Expired(change) = order.state.expire(boxoffice::clock::now()) else {
        panic!("a seeded order was not due");
    };
    let expected_version = Some(order.state.version);
    let ticket_id = order.state.ticket.id;
    let order_id = order.state.id;
    order.advance(
        change.state.clone(),
        Transition::new(
            "Expire",
            Some("timer".into()),
            "created",
            "cancelled",
            change.state.version,
            &change.events,
        ),
    );
    let receipt = store
        .commit(UnitOfWork {
            writes: vec![EntityWrite::Order {
                expected_version,
                record: order.into(),
            }],
            events: change.events,
            commands: vec![Command::ReleaseTicket {
                ticket_id,
                order_id,
            }],
            ..UnitOfWork::default()
        })
        .await
        .expect("commit the expiry");

    let release = ticket.state.release(order_id).expect("the ticket is held");
    let expected_version = Some(ticket.state.version);
    ticket.advance(
        release.state.clone(),
        Transition::new(
            "Release",
            None,
            "reserved",
            "available",
            release.state.version,
            &release.events,
        ),
    );
    store
        .commit(UnitOfWork {
            writes: vec![EntityWrite::Ticket {
                expected_version,
                record: ticket.into(),
            }],
            events: release.events,
            ..UnitOfWork::default()
        })
        .await
        .expect("commit the release");
    store
        .commit(UnitOfWork {
            commands_done: receipt.command_ids,
            ..UnitOfWork::default()
        })
        .await
        .expect("mark the command done");
}

fn expiry(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(directory.path()).expect("open the store");
    let ids = IdGenerator::new();
    let mut group = criterion.benchmark_group("embedded_store");
    group.sample_size(10);
    group.bench_function("expiry", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let seeded = seed(&store, &ids, iterations).await;
                let started = Instant::now();
                futures::stream::iter(seeded)
                    .map(|due| expire(&store, due))
                    .buffer_unordered(IN_FLIGHT)
                    .collect::<Vec<()>>()
                    .await;
                started.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, expiry);
criterion_main!(benches);
