//! Orders: create, list, show and cancel (classic cases O1–O19 as visible effects), with the
//! ticket's reservation and release.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Auth, TestApp, User, assert_not_held, is_object_id, parse_time, random_id};

const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// A seller with one ticket and a buyer.
async fn seller_ticket_buyer(app: &TestApp) -> (User, Value, User) {
    let seller = app.new_user().await;
    let ticket = app.create_ticket(&seller, "concert", json!(20)).await;
    let buyer = app.new_user().await;
    (seller, ticket, buyer)
}

fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

// O5
#[tokio::test]
async fn ordering_requires_a_session() {
    let app = TestApp::spawn().await;
    let (_, ticket, _) = seller_ticket_buyer(&app).await;
    let response = app
        .post(
            "/api/orders",
            &Auth::None,
            &json!({"ticketId": id_of(&ticket)}),
        )
        .await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    assert_not_held(&app.ticket_json(id_of(&ticket)).await);
}

// O5
#[tokio::test]
async fn a_missing_or_malformed_ticket_id_is_refused() {
    let app = TestApp::spawn().await;
    let buyer = app.new_user().await;
    for body in [json!({}), json!({"ticketId": ""})] {
        let response = app.post("/api/orders", &buyer.bearer(), &body).await;
        response.assert_field_error(
            StatusCode::BAD_REQUEST,
            "TicketId must be provided",
            "ticketId",
        );
    }
    for ticket_id in ["not-an-id", "123", "zzzzzzzzzzzzzzzzzzzzzzzz"] {
        let response = app.order(&buyer, ticket_id).await;
        response.assert_field(StatusCode::BAD_REQUEST, "ticketId");
    }
}

// O1
#[tokio::test]
async fn ordering_an_unknown_ticket_is_404() {
    let app = TestApp::spawn().await;
    let buyer = app.new_user().await;
    let response = app.order(&buyer, &random_id()).await;
    response.assert_error(StatusCode::NOT_FOUND, "Not Found");
}

// O2
#[tokio::test]
async fn a_reserved_ticket_cannot_be_ordered() {
    let app = TestApp::spawn().await;
    let (_, ticket, buyer) = seller_ticket_buyer(&app).await;
    let first = app.order_ok(&buyer, id_of(&ticket)).await;
    let other = app.new_user().await;
    for user in [&other, &buyer] {
        let response = app.order(user, id_of(&ticket)).await;
        response.assert_error(StatusCode::BAD_REQUEST, "Ticket is already reserved");
    }
    assert_eq!(
        app.ticket_json(id_of(&ticket)).await["orderId"],
        first["id"]
    );
}

// O3, O4, T20, T22
#[tokio::test]
async fn reserves_a_ticket() {
    let app = TestApp::spawn().await;
    let (_, ticket, buyer) = seller_ticket_buyer(&app).await;
    let before = time::OffsetDateTime::now_utc();
    let response = app.order(&buyer, id_of(&ticket)).await;
    let after = time::OffsetDateTime::now_utc();
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    let order = &response.body;
    assert!(is_object_id(&order["id"]), "{order}");
    assert_eq!(order["userId"], buyer.id.as_str());
    assert_eq!(order["status"], "created");
    assert_eq!(order["version"], 0);
    assert_eq!(order["ticket"]["id"], ticket["id"]);
    assert_eq!(order["ticket"]["title"], "concert");
    assert_eq!(order["ticket"]["price"].as_f64(), Some(20.0));
    assert!(order["ticket"]["version"].is_u64(), "{order}");

    // The default order TTL is 15 minutes; the clocks are the same machine's.
    let expires_at_text = order["expiresAt"].as_str().expect("expiresAt string");
    assert!(expires_at_text.ends_with('Z'), "UTC: {expires_at_text}");
    let expires_at = parse_time(&order["expiresAt"]);
    let ttl = time::Duration::minutes(15);
    let slack = time::Duration::seconds(5);
    assert!(
        expires_at >= before + ttl - slack && expires_at <= after + ttl + slack,
        "expiresAt {expires_at} is creation + 15m (created between {before} and {after})"
    );

    let held = app.ticket_json(id_of(&ticket)).await;
    assert_eq!(held["orderId"], order["id"]);
    assert_eq!(
        held["version"].as_u64(),
        Some(ticket["version"].as_u64().unwrap() + 1),
        "a reservation increments the ticket's version"
    );

    let shown = app.order_json(&buyer, id_of(order)).await;
    assert_eq!(&shown, order);

    let events = app.events().await;
    let created = events
        .iter()
        .filter(|e| e["name"] == "order.created" && e["data"]["id"] == order["id"])
        .count();
    assert_eq!(created, 1, "{events:?}");
}

// O13: the order's ticket shows the ticket as it was updated before the order.
#[tokio::test]
async fn the_order_carries_the_tickets_current_title_and_price() {
    let app = TestApp::spawn().await;
    let (seller, ticket, buyer) = seller_ticket_buyer(&app).await;
    let updated = app
        .put(
            &format!("/api/tickets/{}", id_of(&ticket)),
            &seller.cookie(),
            &json!({"title": "renamed", "price": 35.5}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    assert_eq!(order["ticket"]["title"], "renamed");
    assert_eq!(order["ticket"]["price"].as_f64(), Some(35.5));
}

// O6
#[tokio::test]
async fn lists_only_the_callers_orders_in_creation_order() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let mut tickets = Vec::new();
    for title in ["one", "two", "three"] {
        tickets.push(app.create_ticket(&seller, title, json!(10)).await);
    }
    let user_one = app.new_user().await;
    let user_two = app.new_user().await;
    app.order_ok(&user_one, id_of(&tickets[0])).await;
    let first = app.order_ok(&user_two, id_of(&tickets[1])).await;
    let second = app.order_ok(&user_two, id_of(&tickets[2])).await;

    let response = app.get("/api/orders", &user_two.cookie()).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let orders = response.body.as_array().expect("array");
    assert_eq!(orders.len(), 2, "{response:?}");
    assert_eq!(orders[0]["id"], first["id"]);
    assert_eq!(orders[1]["id"], second["id"]);
    assert_eq!(orders[0]["ticket"]["id"], tickets[1]["id"]);
    assert_eq!(orders[1]["ticket"]["id"], tickets[2]["id"]);

    let response = app.get("/api/orders", &user_one.bearer()).await;
    assert_eq!(response.body.as_array().unwrap().len(), 1, "{response:?}");

    let response = app.get("/api/orders", &seller.bearer()).await;
    assert_eq!(response.body, json!([]), "{response:?}");

    let response = app.get("/api/orders", &Auth::None).await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
}

// O7, O8
#[tokio::test]
async fn only_the_owner_can_see_an_order() {
    let app = TestApp::spawn().await;
    let (seller, ticket, buyer) = seller_ticket_buyer(&app).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let path = format!("/api/orders/{}", id_of(&order));

    let response = app.get(&path, &buyer.cookie()).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body["id"], order["id"]);

    for auth in [seller.cookie(), app.new_user().await.bearer()] {
        let response = app.get(&path, &auth).await;
        response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    }
    let response = app.get(&path, &Auth::None).await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");

    for id in [random_id(), "not-an-id".to_string()] {
        let response = app.get(&format!("/api/orders/{id}"), &buyer.cookie()).await;
        response.assert_error(StatusCode::NOT_FOUND, "Not Found");
    }
}

// O9, O10, T23
#[tokio::test]
async fn cancelling_marks_the_order_cancelled_and_releases_the_ticket() {
    let app = TestApp::spawn().await;
    let (_, ticket, buyer) = seller_ticket_buyer(&app).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let reserved_version = app.ticket_json(id_of(&ticket)).await["version"]
        .as_u64()
        .unwrap();

    let response = app
        .delete(&format!("/api/orders/{}", id_of(&order)), &buyer.cookie())
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{response:?}");
    assert!(response.text.is_empty(), "204 has no body: {response:?}");

    let cancelled = app.order_json(&buyer, id_of(&order)).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["version"], 1);

    let released = app
        .wait_for_ticket_released(id_of(&ticket), RELEASE_DEADLINE)
        .await;
    assert_eq!(
        released["version"].as_u64(),
        Some(reserved_version + 1),
        "a release increments the ticket's version"
    );

    // Orderable again, by someone else.
    let other = app.new_user().await;
    let again = app.order_ok(&other, id_of(&ticket)).await;
    assert_eq!(
        app.ticket_json(id_of(&ticket)).await["orderId"],
        again["id"]
    );

    let events = app.events().await;
    let cancelled_events = events
        .iter()
        .filter(|e| e["name"] == "order.cancelled" && e["data"]["id"] == order["id"])
        .count();
    assert_eq!(cancelled_events, 1, "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| e["name"] == "expiration.complete" && e["data"]["orderId"] == order["id"]),
        "a cancellation is not an expiry: {events:?}"
    );
}

#[tokio::test]
async fn only_the_owner_can_cancel() {
    let app = TestApp::spawn().await;
    let (seller, ticket, buyer) = seller_ticket_buyer(&app).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let path = format!("/api/orders/{}", id_of(&order));

    for auth in [seller.cookie(), Auth::None] {
        let response = app.delete(&path, &auth).await;
        response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    }
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "created"
    );
    assert_eq!(
        app.ticket_json(id_of(&ticket)).await["orderId"],
        order["id"]
    );

    for id in [random_id(), "not-an-id".to_string()] {
        let response = app
            .delete(&format!("/api/orders/{id}"), &buyer.cookie())
            .await;
        response.assert_error(StatusCode::NOT_FOUND, "Not Found");
    }
}

// O19
#[tokio::test]
async fn a_completed_order_cannot_be_cancelled() {
    let app = TestApp::spawn().await;
    let (_, ticket, buyer) = seller_ticket_buyer(&app).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let paid = app.pay(&buyer, id_of(&order), "tok_visa").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");

    let response = app
        .delete(&format!("/api/orders/{}", id_of(&order)), &buyer.bearer())
        .await;
    response.assert_error(StatusCode::BAD_REQUEST, "Cannot cancel a completed order");
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "complete"
    );
    assert_eq!(
        app.ticket_json(id_of(&ticket)).await["orderId"],
        order["id"]
    );
}
