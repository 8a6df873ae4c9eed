//! The event log (`/admin/api/events`): every state change publishes its event exactly once,
//! with the contract's name and payload, unique ids, increasing `seq`, and per-entity versions
//! in order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{AppOptions, TestApp, parse_time};

const NAMES: [&str; 7] = [
    "ticket.created",
    "ticket.updated",
    "order.created",
    "order.cancelled",
    "order.completed",
    "expiration.complete",
    "payment.created",
];

fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

/// JSON equality where numbers compare by value (`20` == `20.0`) and a `null` member equals an
/// absent one (`orderId` on a released ticket may be either).
fn same_json(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Object(a), Value::Object(b)) => {
            let keys: HashSet<&String> = a
                .iter()
                .chain(b.iter())
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect();
            keys.into_iter().all(|k| {
                same_json(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_json(x, y))
        }
        _ => left == right,
    }
}

#[track_caller]
fn assert_payload(event: &Value, expected: Value) {
    assert!(
        same_json(&event["data"], &expected),
        "{} payload\n  got      {}\n  expected {expected}",
        event["name"],
        event["data"]
    );
}

/// The events named `name` whose payload `key` is `id`.
fn find<'a>(events: &'a [Value], name: &str, key: &str, id: &Value) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["name"] == name && e["data"][key] == *id)
        .collect()
}

/// The one event named `name` whose payload `key` is `id`.
#[track_caller]
fn only<'a>(events: &'a [Value], name: &str, key: &str, id: &Value) -> &'a Value {
    let found = find(events, name, key, id);
    assert_eq!(found.len(), 1, "exactly one {name} for {id}: {events:#?}");
    found[0]
}

/// Checks what holds for any log: the envelope, known names, unique ids, increasing `seq`, and
/// per-entity versions (tickets: 0, 1, 2, ... with no gap since every ticket change publishes;
/// orders: from 0 and strictly increasing, since the unpublished `awaiting:payment` step also
/// takes a version).
#[track_caller]
fn check_log(events: &[Value]) {
    let mut ids = HashSet::new();
    let mut last_seq = None;
    let mut ticket_versions: HashMap<String, u64> = HashMap::new();
    let mut order_versions: HashMap<String, u64> = HashMap::new();
    for event in events {
        let seq = event["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("seq: {event}"));
        if let Some(last) = last_seq {
            assert!(seq > last, "seq strictly increases: {last} then {event}");
        }
        last_seq = Some(seq);
        let id = event["id"]
            .as_str()
            .unwrap_or_else(|| panic!("id: {event}"));
        assert!(!id.is_empty(), "{event}");
        assert!(ids.insert(id.to_string()), "event ids are unique: {event}");
        let name = event["name"]
            .as_str()
            .unwrap_or_else(|| panic!("name: {event}"));
        assert!(NAMES.contains(&name), "a contract event name: {event}");
        parse_time(&event["at"]);
        assert!(event["data"].is_object(), "{event}");

        let entity = event["data"]["id"].as_str().unwrap_or_default().to_string();
        let version = event["data"]["version"].as_u64();
        match name {
            "ticket.created" => {
                assert_eq!(version, Some(0), "{event}");
                assert!(
                    ticket_versions.insert(entity, 0).is_none(),
                    "a ticket is created once: {event}"
                );
            }
            "ticket.updated" => {
                let version = version.unwrap_or_else(|| panic!("version: {event}"));
                let previous = ticket_versions
                    .insert(entity, version)
                    .unwrap_or_else(|| panic!("ticket.updated after ticket.created: {event}"));
                assert_eq!(
                    version,
                    previous + 1,
                    "ticket versions go up by one: {event}"
                );
            }
            "order.created" => {
                assert_eq!(version, Some(0), "{event}");
                assert!(
                    order_versions.insert(entity, 0).is_none(),
                    "an order is created once: {event}"
                );
            }
            "order.cancelled" | "order.completed" => {
                let version = version.unwrap_or_else(|| panic!("version: {event}"));
                let previous = order_versions
                    .insert(entity, version)
                    .unwrap_or_else(|| panic!("{name} after order.created: {event}"));
                assert!(version > previous, "order versions increase: {event}");
            }
            _ => {}
        }
    }
}

/// Waits until the log holds `count` events, then returns it (asserting it holds no more).
async fn log_of(app: &TestApp, count: usize) -> Vec<Value> {
    let events = app
        .eventually(
            &format!("{count} events"),
            Duration::from_secs(10),
            || async {
                let events = app.events().await;
                (events.len() >= count).then_some(events)
            },
        )
        .await;
    assert_eq!(events.len(), count, "no extra events: {events:#?}");
    check_log(&events);
    events
}

#[tokio::test]
async fn a_full_flow_publishes_each_event_once_with_its_payload() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;

    // Ticket one: created, updated, ordered, paid.
    let first = app.create_ticket(&seller, "first", json!(20)).await;
    let updated = app
        .put(
            &format!("/api/tickets/{}", id_of(&first)),
            &seller.cookie(),
            &json!({"title": "first (updated)", "price": "25.50"}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    let paid_order = app.order_ok(&buyer, id_of(&first)).await;
    let payment = app.pay(&buyer, id_of(&paid_order), "tok_visa").await;
    assert_eq!(payment.status, StatusCode::CREATED, "{payment:?}");
    let completed_order = app.order_json(&buyer, id_of(&paid_order)).await;

    // Ticket two: created, ordered, cancelled.
    let second = app.create_ticket(&seller, "second", json!(7)).await;
    let cancelled_order = app.order_ok(&buyer, id_of(&second)).await;
    let cancel = app
        .delete(
            &format!("/api/orders/{}", id_of(&cancelled_order)),
            &buyer.cookie(),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NO_CONTENT, "{cancel:?}");
    app.wait_for_ticket_released(id_of(&second), Duration::from_secs(10))
        .await;

    // 12 events: the first ticket is created, edited, reserved, sold (a persisted change of
    // the ticket: it no longer expires), its order created and completed, the payment made; the
    // second ticket is created, reserved and released, its order created and cancelled.
    let events = log_of(&app, 12).await;

    let ticket_one = &first["id"];
    let ticket_two = &second["id"];
    let seller_id = json!(seller.id);
    let buyer_id = json!(buyer.id);

    let created = only(&events, "ticket.created", "id", ticket_one);
    assert_payload(
        created,
        json!({"id": ticket_one, "version": 0, "title": "first", "price": 20, "userId": seller_id}),
    );
    let updates = find(&events, "ticket.updated", "id", ticket_one);
    assert_eq!(updates.len(), 3, "edit, reservation and sale: {events:#?}");
    assert_payload(
        updates[0],
        json!({"id": ticket_one, "version": 1, "title": "first (updated)", "price": 25.5,
               "userId": seller_id}),
    );
    assert_payload(
        updates[1],
        json!({"id": ticket_one, "version": 2, "title": "first (updated)", "price": 25.5,
               "userId": seller_id, "orderId": paid_order["id"]}),
    );

    assert_payload(
        updates[2],
        json!({"id": ticket_one, "version": 3, "title": "first (updated)", "price": 25.5,
               "userId": seller_id, "orderId": paid_order["id"]}),
    );

    let order_created = only(&events, "order.created", "id", &paid_order["id"]);
    assert_eq!(
        parse_time(&order_created["data"]["expiresAt"]),
        parse_time(&paid_order["expiresAt"])
    );
    let mut expected = json!({"id": paid_order["id"], "version": 0, "status": "created",
        "userId": buyer_id, "ticket": {"id": ticket_one, "price": 25.5}});
    expected["expiresAt"] = order_created["data"]["expiresAt"].clone();
    assert_payload(order_created, expected);

    let completed = only(&events, "order.completed", "id", &paid_order["id"]);
    assert_payload(
        completed,
        json!({"id": paid_order["id"], "version": completed_order["version"],
               "ticket": {"id": ticket_one}}),
    );
    let payment_event = only(&events, "payment.created", "orderId", &paid_order["id"]);
    let stripe_id = &payment_event["data"]["stripeId"];
    assert!(
        stripe_id.as_str().is_some_and(|s| !s.is_empty()),
        "{payment_event}"
    );
    assert_payload(
        payment_event,
        json!({"id": payment.body["id"], "orderId": paid_order["id"], "stripeId": stripe_id}),
    );
    assert!(
        payment_event["seq"].as_u64() > order_created["seq"].as_u64(),
        "{events:#?}"
    );

    let created_two = only(&events, "ticket.created", "id", ticket_two);
    assert_payload(
        created_two,
        json!({"id": ticket_two, "version": 0, "title": "second", "price": 7, "userId": seller_id}),
    );
    let updates_two = find(&events, "ticket.updated", "id", ticket_two);
    assert_eq!(updates_two.len(), 2, "reservation and release: {events:#?}");
    assert_payload(
        updates_two[0],
        json!({"id": ticket_two, "version": 1, "title": "second", "price": 7,
               "userId": seller_id, "orderId": cancelled_order["id"]}),
    );
    assert_payload(
        updates_two[1],
        json!({"id": ticket_two, "version": 2, "title": "second", "price": 7,
               "userId": seller_id}),
    );
    let order_two = only(&events, "order.created", "id", &cancelled_order["id"]);
    assert_eq!(order_two["data"]["ticket"]["id"], *ticket_two);
    let cancelled = only(&events, "order.cancelled", "id", &cancelled_order["id"]);
    assert_payload(
        cancelled,
        json!({"id": cancelled_order["id"], "version": 1, "ticket": {"id": ticket_two}}),
    );
    assert!(
        find(
            &events,
            "expiration.complete",
            "orderId",
            &cancelled_order["id"]
        )
        .is_empty(),
        "a cancellation is not an expiry"
    );
}

#[tokio::test]
async fn an_expiry_publishes_cancellation_release_and_expiration_complete() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--order-ttl", "1s"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "short-lived", json!(3)).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    app.wait_for_order_status(&buyer, id_of(&order), "cancelled", Duration::from_secs(20))
        .await;
    app.wait_for_ticket_released(id_of(&ticket), Duration::from_secs(10))
        .await;

    let events = log_of(&app, 6).await;
    let expiration = only(&events, "expiration.complete", "orderId", &order["id"]);
    assert_payload(expiration, json!({"orderId": order["id"]}));
    let cancelled = only(&events, "order.cancelled", "id", &order["id"]);
    assert_payload(
        cancelled,
        json!({"id": order["id"], "version": 1, "ticket": {"id": ticket["id"]}}),
    );
    let updates = find(&events, "ticket.updated", "id", &ticket["id"]);
    assert_eq!(updates.len(), 2, "{events:#?}");
    assert_eq!(updates[0]["data"]["orderId"], order["id"]);
    assert!(updates[1]["data"]["orderId"].is_null(), "{events:#?}");
    assert!(
        find(&events, "order.completed", "id", &order["id"]).is_empty()
            && find(&events, "payment.created", "orderId", &order["id"]).is_empty()
    );
}

#[tokio::test]
async fn refused_requests_and_declined_cards_publish_nothing() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "quiet", json!(9)).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let before = log_of(&app, 3).await;

    let declined = app.pay(&buyer, id_of(&order), "tok_chargeDeclined").await;
    assert_eq!(
        declined.status,
        StatusCode::PAYMENT_REQUIRED,
        "{declined:?}"
    );
    let refused = app.order(&app.new_user().await, id_of(&ticket)).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "Ticket is already reserved");
    let not_owner = app
        .put(
            &format!("/api/tickets/{}", id_of(&ticket)),
            &buyer.cookie(),
            &json!({"title": "x", "price": 1}),
        )
        .await;
    not_owner.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");

    let after = app.events().await;
    assert_eq!(after, before, "refusals change nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_survives_a_restart() {
    let mut app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "kept", json!(4)).await;
    app.order_ok(&buyer, id_of(&ticket)).await;
    let before = log_of(&app, 3).await;

    let status = tokio::task::block_in_place(|| app.terminate());
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    app.restart(&[]).await;

    let after = app.events().await;
    assert_eq!(after, before, "same events, ids and seqs after a restart");

    // New events continue the sequence.
    let other = app.create_ticket(&seller, "after restart", json!(5)).await;
    let events = log_of(&app, 4).await;
    let created = only(&events, "ticket.created", "id", &other["id"]);
    assert!(created["seq"].as_u64() > before.last().unwrap()["seq"].as_u64());
}
