//! Races the contract settles: many buyers for one ticket, many tickets at once, two payments of
//! one order, and a payment racing the order's expiry. Requests are launched together and only
//! outcomes are asserted, never timings.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{AppOptions, Response, TestApp, User, parse_time};

fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

/// Splits order responses into the winners and asserts every other one is the refusal.
#[track_caller]
fn winners(responses: &[(usize, Response)]) -> Vec<&(usize, Response)> {
    let mut won = Vec::new();
    for entry in responses {
        let (_, response) = entry;
        if response.status == StatusCode::CREATED {
            won.push(entry);
        } else {
            response.assert_error(StatusCode::BAD_REQUEST, "Ticket is already reserved");
        }
    }
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_ticket_two_hundred_concurrent_orders_one_winner() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let ticket = app.create_ticket(&seller, "flash sale", json!(50)).await;
    let buyers = app.new_users(50).await;

    let requests = buyers
        .iter()
        .enumerate()
        .flat_map(|(index, buyer)| (0..4).map(move |_| (index, buyer)));
    let responses: Vec<(usize, Response)> = join_all(requests.map(|(index, buyer)| {
        let app = &app;
        let ticket_id = id_of(&ticket);
        async move { (index, app.order(buyer, ticket_id).await) }
    }))
    .await;
    assert_eq!(responses.len(), 200);

    let won = winners(&responses);
    assert_eq!(won.len(), 1, "exactly one winner");
    let (winner_index, winning) = won[0];
    assert_eq!(winning.body["userId"], buyers[*winner_index].id.as_str());
    let held = app.ticket_json(id_of(&ticket)).await;
    assert_eq!(held["orderId"], winning.body["id"]);
    assert_eq!(held["version"], 1, "one reservation, one version");

    let events = app.events().await;
    let created = events
        .iter()
        .filter(|e| e["name"] == "order.created")
        .count();
    assert_eq!(created, 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_tickets_fifty_buyers_each_one_winner_per_ticket() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let mut tickets = Vec::new();
    for index in 0..20 {
        tickets.push(
            app.create_ticket(&seller, &format!("seat {index}"), json!(10 + index))
                .await,
        );
    }
    let buyers = app.new_users(50).await;

    let requests: Vec<(usize, usize)> = (0..buyers.len())
        .flat_map(|buyer| (0..tickets.len()).map(move |ticket| (buyer, ticket)))
        .collect();
    let responses: Vec<(usize, usize, Response)> =
        join_all(requests.iter().map(|&(buyer, ticket)| {
            let app = &app;
            let buyers = &buyers;
            let tickets = &tickets;
            async move {
                let response = app.order(&buyers[buyer], id_of(&tickets[ticket])).await;
                (buyer, ticket, response)
            }
        }))
        .await;
    assert_eq!(responses.len(), 1000);

    let mut winners_by_ticket: HashMap<usize, Vec<(usize, &Response)>> = HashMap::new();
    for (buyer, ticket, response) in &responses {
        if response.status == StatusCode::CREATED {
            winners_by_ticket
                .entry(*ticket)
                .or_default()
                .push((*buyer, response));
        } else {
            response.assert_error(StatusCode::BAD_REQUEST, "Ticket is already reserved");
        }
    }
    assert_eq!(winners_by_ticket.len(), 20, "every ticket has a winner");
    for (ticket, won) in &winners_by_ticket {
        assert_eq!(won.len(), 1, "ticket {ticket} has exactly one winner");
        let (buyer, response) = won[0];
        assert_eq!(response.body["userId"], buyers[buyer].id.as_str());
        assert_eq!(response.body["ticket"]["id"], tickets[*ticket]["id"]);
        let held = app.ticket_json(id_of(&tickets[*ticket])).await;
        assert_eq!(held["orderId"], response.body["id"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_payments_of_one_order_one_succeeds() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    // Repeat a few times: a single race can be won by luck.
    for round in 0..5 {
        let ticket = app
            .create_ticket(&seller, &format!("round {round}"), json!(30))
            .await;
        let order = app.order_ok(&buyer, id_of(&ticket)).await;
        let (first, second) = tokio::join!(
            app.pay(&buyer, id_of(&order), "tok_visa"),
            app.pay(&buyer, id_of(&order), "tok_visa"),
        );
        let (won, lost) = match (first.status, second.status) {
            (StatusCode::CREATED, _) => (first, second),
            (_, StatusCode::CREATED) => (second, first),
            _ => panic!("one payment succeeds: {first:?} {second:?}"),
        };
        assert_eq!(won.status, StatusCode::CREATED);
        lost.assert_error(StatusCode::BAD_REQUEST, "Order is already paid");
        assert_eq!(
            app.order_json(&buyer, id_of(&order)).await["status"],
            "complete"
        );

        let events = app.events().await;
        let payments: Vec<&Value> = events
            .iter()
            .filter(|e| e["name"] == "payment.created" && e["data"]["orderId"] == order["id"])
            .collect();
        assert_eq!(payments.len(), 1, "{events:?}");
        assert_eq!(payments[0]["data"]["id"], won.body["id"]);
        let completed = events
            .iter()
            .filter(|e| e["name"] == "order.completed" && e["data"]["id"] == order["id"])
            .count();
        assert_eq!(completed, 1, "{events:?}");
    }
}

/// How one payment raced its order's expiry.
#[derive(Debug)]
enum RaceOutcome {
    Paid,
    Expired,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_and_expiry_never_both_win() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--order-ttl", "1s"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let offsets_ms: [i64; 10] = [-400, -250, -150, -80, -30, 0, 20, 60, 150, 300];

    let mut tickets = Vec::new();
    for index in 0..offsets_ms.len() {
        tickets.push(
            app.create_ticket(&seller, &format!("race {index}"), json!(15))
                .await,
        );
    }
    // Ordered together, so that every order's expiry instant is still ahead when it is paid.
    let orders: Vec<Value> = join_all(
        tickets
            .iter()
            .map(|ticket| app.order_ok(&buyer, id_of(ticket))),
    )
    .await;

    // Pay each order at its own offset around its expiry instant: that instant is what is raced.
    let results: Vec<(Value, Response)> =
        join_all(orders.iter().zip(offsets_ms).map(|(order, offset)| {
            let app = &app;
            let buyer: &User = &buyer;
            async move {
                let at = parse_time(&order["expiresAt"]) + time::Duration::milliseconds(offset);
                let wait = at - time::OffsetDateTime::now_utc();
                if wait.is_positive() {
                    tokio::time::sleep(wait.unsigned_abs()).await;
                }
                (
                    order.clone(),
                    app.pay(buyer, id_of(order), "tok_visa").await,
                )
            }
        }))
        .await;

    let mut outcomes = Vec::new();
    for (order, response) in &results {
        let outcome = match response.status {
            StatusCode::CREATED => RaceOutcome::Paid,
            _ => {
                response.assert_error(StatusCode::BAD_REQUEST, "Cannot pay for a cancelled order");
                RaceOutcome::Expired
            }
        };
        outcomes.push((order, outcome));
    }

    // A sentinel order created after every payment returned: once it has expired, every earlier
    // expiry has had its chance to (wrongly) cancel a paid order.
    let ticket = app.create_ticket(&seller, "sentinel", json!(1)).await;
    let sentinel = app.order_ok(&buyer, id_of(&ticket)).await;
    app.wait_for_order_status(
        &buyer,
        id_of(&sentinel),
        "cancelled",
        Duration::from_secs(20),
    )
    .await;

    let events = app.events().await;
    let count = |name: &str, key: &str, order: &Value| {
        events
            .iter()
            .filter(|e| e["name"] == name && e["data"][key] == order["id"])
            .count()
    };
    for (order, outcome) in outcomes {
        let current = app.order_json(&buyer, id_of(order)).await;
        let ticket_id = order["ticket"]["id"].as_str().unwrap();
        match outcome {
            RaceOutcome::Paid => {
                assert_eq!(
                    current["status"], "complete",
                    "paid, never cancelled: {current}"
                );
                assert_eq!(app.ticket_json(ticket_id).await["orderId"], order["id"]);
                assert_eq!(
                    count("expiration.complete", "orderId", order),
                    0,
                    "{events:?}"
                );
                assert_eq!(count("order.cancelled", "id", order), 0, "{events:?}");
                assert_eq!(count("order.completed", "id", order), 1, "{events:?}");
                assert_eq!(count("payment.created", "orderId", order), 1, "{events:?}");
            }
            RaceOutcome::Expired => {
                assert_eq!(current["status"], "cancelled", "{current}");
                app.wait_for_ticket_released(ticket_id, Duration::from_secs(10))
                    .await;
                assert_eq!(
                    count("expiration.complete", "orderId", order),
                    1,
                    "{events:?}"
                );
                assert_eq!(count("order.cancelled", "id", order), 1, "{events:?}");
                assert_eq!(count("order.completed", "id", order), 0, "{events:?}");
                assert_eq!(count("payment.created", "orderId", order), 0, "{events:?}");
            }
        }
    }
}
