//! The domain's hot paths, with no I/O: what a request costs before any actor or store.
//!
//! * `price/*`: parsing a price from the JSON the classic client sends (`"12.50"`) and from a
//!   number.
//! * `ticket/reserve_*`: the reservation decision a flash sale makes for every buyer: the first
//!   wins (a new version and its event), every later one is refused (no allocation).
//! * `order/*`: the order's transitions: create, begin and complete a payment, cancel, expire.
//!
//! Run with `cargo bench --bench domain`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use boxoffice::domain::{
    BeginPayment, ExpireOutcome, ObjectId, Order, OrderId, PaymentId, Price, ReserveDecision,
    Ticket, TicketId, TicketSnapshot, Timestamp, Title, UserId,
};

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
const TTL: Duration = Duration::from_secs(900);
const GRACE: Duration = Duration::from_secs(5);

fn id(counter: u32) -> ObjectId {
    ObjectId::from_parts(1_800_000_000, [1, 2, 3, 4, 5], counter)
}

fn price(criterion: &mut Criterion) {
    let text = json!("12.50");
    let number = json!(12.5);
    criterion.bench_function("price/parse_decimal_string", |bencher| {
        bencher.iter(|| Price::parse_json(Some(black_box(&text))).expect("price"));
    });
    criterion.bench_function("price/parse_number", |bencher| {
        bencher.iter(|| Price::parse_json(Some(black_box(&number))).expect("price"));
    });
}

fn ticket(criterion: &mut Criterion) {
    let owner = UserId(id(1));
    let free = Ticket::create(
        TicketId(id(2)),
        Title::parse("Seat A1").expect("title"),
        Price::from_cents(1250).expect("price"),
        owner,
    )
    .state;
    let winner = OrderId(id(3));
    let loser = OrderId(id(4));
    let ReserveDecision::Reserved(held) = free.reserve(winner, NOW.plus(TTL), NOW, GRACE) else {
        panic!("a free ticket is reserved");
    };
    let held = held.state;
    criterion.bench_function("ticket/reserve_free", |bencher| {
        bencher.iter(|| black_box(&free).reserve(winner, NOW.plus(TTL), NOW, GRACE));
    });
    criterion.bench_function("ticket/reserve_refused", |bencher| {
        bencher.iter(|| {
            let decision = black_box(&held).reserve(loser, NOW.plus(TTL), NOW, GRACE);
            debug_assert_eq!(decision, ReserveDecision::Refused);
            decision
        });
    });
}

fn order(criterion: &mut Criterion) {
    let user = UserId(id(5));
    let snapshot = TicketSnapshot {
        id: TicketId(id(6)),
        title: "Seat A1".into(),
        price: Price::from_cents(1250).expect("price"),
        version: 1,
    };
    let created = Order::create(OrderId(id(7)), user, snapshot.clone(), NOW, TTL).state;
    let BeginPayment::Charge(charging, _) = created
        .begin_payment(user, "tok_visa", None, NOW)
        .expect("payable")
    else {
        panic!("a fresh order is charged");
    };
    let charging = charging.state;
    criterion.bench_function("order/create", |bencher| {
        bencher.iter(|| Order::create(OrderId(id(7)), user, black_box(snapshot.clone()), NOW, TTL));
    });
    criterion.bench_function("order/begin_payment", |bencher| {
        bencher.iter(|| black_box(&created).begin_payment(user, "tok_visa", None, NOW));
    });
    criterion.bench_function("order/complete_payment", |bencher| {
        bencher.iter(|| black_box(&charging).complete_payment(PaymentId(id(8)), "ch_bench"));
    });
    criterion.bench_function("order/cancel", |bencher| {
        bencher.iter(|| black_box(&created).cancel(user));
    });
    criterion.bench_function("order/expire", |bencher| {
        bencher.iter(|| {
            let outcome = black_box(&created).expire(NOW.plus(TTL));
            debug_assert!(matches!(outcome, ExpireOutcome::Expired(_)));
            outcome
        });
    });
}

criterion_group!(benches, price, ticket, order);
criterion_main!(benches);
