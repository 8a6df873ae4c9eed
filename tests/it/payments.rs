//! Payments through the built-in sandbox gateway (classic cases P1–P4, P8 as visible effects):
//! who may pay, which orders can be paid, Stripe's test tokens, and what a payment leaves behind.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Auth, TestApp, User, is_object_id, random_id};

/// A buyer with an order (status `created`) for a fresh ticket; returns (buyer, order).
async fn buyer_with_order(app: &TestApp) -> (User, Value) {
    let seller = app.new_user().await;
    let ticket = app.create_ticket(&seller, "concert", json!(20)).await;
    let buyer = app.new_user().await;
    let order = app.order_ok(&buyer, ticket["id"].as_str().unwrap()).await;
    (buyer, order)
}

fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

fn ticket_id_of(order: &Value) -> &str {
    order["ticket"]["id"].as_str().expect("a ticket id")
}

// P1
#[tokio::test]
async fn paying_an_unknown_order_is_404() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let response = app.pay(&user, &random_id(), "tok_visa").await;
    response.assert_error(StatusCode::NOT_FOUND, "Not Found");
}

// P2
#[tokio::test]
async fn only_the_owner_can_pay() {
    let app = TestApp::spawn().await;
    let (buyer, order) = buyer_with_order(&app).await;
    let other = app.new_user().await;
    let response = app.pay(&other, id_of(&order), "tok_visa").await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");

    let response = app
        .post(
            "/api/payments",
            &Auth::None,
            &json!({"orderId": id_of(&order), "token": "tok_visa"}),
        )
        .await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "created"
    );
}

#[tokio::test]
async fn a_missing_token_or_order_id_is_refused_by_name() {
    let app = TestApp::spawn().await;
    let (buyer, order) = buyer_with_order(&app).await;
    let cases = [
        (json!({"orderId": id_of(&order)}), vec!["token"]),
        (
            json!({"orderId": id_of(&order), "token": ""}),
            vec!["token"],
        ),
        (json!({"token": "tok_visa"}), vec!["orderId"]),
        (json!({"token": "tok_visa", "orderId": ""}), vec!["orderId"]),
        (json!({}), vec!["token", "orderId"]),
    ];
    for (body, fields) in cases {
        let response = app.post("/api/payments", &buyer.bearer(), &body).await;
        for field in fields {
            response.assert_field(StatusCode::BAD_REQUEST, field);
        }
    }
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "created"
    );
}

// P3, P8
#[tokio::test]
async fn a_cancelled_order_cannot_be_paid() {
    let app = TestApp::spawn().await;
    let (buyer, order) = buyer_with_order(&app).await;
    let cancel = app
        .delete(&format!("/api/orders/{}", id_of(&order)), &buyer.bearer())
        .await;
    assert_eq!(cancel.status, StatusCode::NO_CONTENT, "{cancel:?}");

    let response = app.pay(&buyer, id_of(&order), "tok_visa").await;
    response.assert_error(StatusCode::BAD_REQUEST, "Cannot pay for a cancelled order");
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "cancelled"
    );
    let events = app.events().await;
    assert!(
        !events.iter().any(|e| e["name"] == "payment.created"),
        "{events:?}"
    );
}

// P4
#[tokio::test]
async fn a_valid_token_pays_the_order_and_sells_the_ticket() {
    let app = TestApp::spawn().await;
    let (buyer, order) = buyer_with_order(&app).await;
    let response = app.pay(&buyer, id_of(&order), "tok_visa").await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert!(is_object_id(&response.body["id"]), "{response:?}");
    let payment_id = response.body["id"].clone();

    // When 201 is returned the order is already complete and its ticket sold.
    let paid = app.order_json(&buyer, id_of(&order)).await;
    assert_eq!(paid["status"], "complete");
    let ticket = app.ticket_json(ticket_id_of(&order)).await;
    assert_eq!(ticket["orderId"], order["id"], "a sold ticket stays held");
    assert!(
        !app.all_listed_tickets()
            .await
            .iter()
            .any(|t| t["id"] == ticket["id"]),
        "a sold ticket is not listed"
    );
    let someone = app.new_user().await;
    let response = app.order(&someone, ticket_id_of(&order)).await;
    response.assert_error(StatusCode::BAD_REQUEST, "Ticket is already reserved");

    let events = app.events().await;
    let payments: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "payment.created")
        .collect();
    assert_eq!(payments.len(), 1, "{events:?}");
    assert_eq!(payments[0]["data"]["id"], payment_id);
    assert_eq!(payments[0]["data"]["orderId"], order["id"]);
    assert!(payments[0]["data"]["stripeId"].is_string(), "{events:?}");
}

#[tokio::test]
async fn every_succeeding_test_token_pays() {
    let app = TestApp::spawn().await;
    for token in ["tok_visa", "tok_mastercard", "tok_amex"] {
        let (buyer, order) = buyer_with_order(&app).await;
        let response = app.pay(&buyer, id_of(&order), token).await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "{token}: {response:?}"
        );
        assert_eq!(
            app.order_json(&buyer, id_of(&order)).await["status"],
            "complete"
        );
    }
}

#[tokio::test]
async fn paying_twice_is_refused() {
    let app = TestApp::spawn().await;
    let (buyer, order) = buyer_with_order(&app).await;
    let first = app.pay(&buyer, id_of(&order), "tok_visa").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let second = app.pay(&buyer, id_of(&order), "tok_visa").await;
    second.assert_error(StatusCode::BAD_REQUEST, "Order is already paid");
    let events = app.events().await;
    let payments = events
        .iter()
        .filter(|e| e["name"] == "payment.created")
        .count();
    assert_eq!(payments, 1, "{events:?}");
}

#[tokio::test]
async fn a_declined_card_is_402_and_leaves_the_order_payable() {
    let app = TestApp::spawn().await;
    let (buyer, order) = buyer_with_order(&app).await;
    let response = app.pay(&buyer, id_of(&order), "tok_chargeDeclined").await;
    response.assert_error(StatusCode::PAYMENT_REQUIRED, "Your card was declined.");
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "created"
    );
    assert_eq!(
        app.ticket_json(ticket_id_of(&order)).await["orderId"],
        order["id"],
        "a declined payment keeps the reservation"
    );

    let response = app
        .pay(&buyer, id_of(&order), "tok_chargeDeclinedInsufficientFunds")
        .await;
    assert_eq!(
        response.status,
        StatusCode::PAYMENT_REQUIRED,
        "{response:?}"
    );
    response.assert_error_format();
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "created"
    );

    let response = app.pay(&buyer, id_of(&order), "tok_visa").await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "complete"
    );

    let events = app.events().await;
    let payments = events
        .iter()
        .filter(|e| e["name"] == "payment.created")
        .count();
    assert_eq!(
        payments, 1,
        "only the successful charge is a payment: {events:?}"
    );
}

#[tokio::test]
async fn an_unknown_token_is_refused() {
    let app = TestApp::spawn().await;
    let (buyer, order) = buyer_with_order(&app).await;
    let response = app.pay(&buyer, id_of(&order), "tok_unknown_thing").await;
    response.assert_error(StatusCode::BAD_REQUEST, "Invalid payment token");
    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "created"
    );
    let response = app.pay(&buyer, id_of(&order), "tok_visa").await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
}
