//! Payments through the Stripe adapter (`--stripe-key`), against the fake Stripe Charges API.
//!
//! Checks what the contract promises about the adapter: one `POST /v1/charges` per payment
//! attempt with the price in cents, the token as `source` and an `Idempotency-Key` made of the
//! order id and the attempt (or the client's own key), declines as 402 that leave the order
//! payable, and never two charges for one order.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_stripe::{ExpectedCharge, FakeOutcome, FakeStripe, RecordedCall};
use crate::harness::{AppOptions, Response, TestApp, User};

/// The Stripe secret key the server is started with and the fake accepts.
const STRIPE_KEY: &str = "sk_test_boxoffice_fake_0123456789";

/// Starts a fake Stripe and a server that charges through it.
async fn spawn_with_fake_stripe() -> (TestApp, FakeStripe) {
    let fake = FakeStripe::start(STRIPE_KEY).await;
    let app = TestApp::spawn_with(AppOptions::with_args(&[
        "--stripe-key",
        STRIPE_KEY,
        "--stripe-api-base",
        &fake.base_url,
    ]))
    .await;
    (app, fake)
}

/// Creates a ticket at `price` as `user`, orders it and returns the order id.
async fn order_ticket(app: &TestApp, user: &User, price: Value) -> String {
    let ticket = app.create_ticket(user, "Concert", price).await;
    let order = app
        .order_ok(user, ticket["id"].as_str().expect("ticket id"))
        .await;
    order["id"].as_str().expect("order id").to_string()
}

async fn order_status(app: &TestApp, user: &User, order_id: &str) -> Value {
    app.order_json(user, order_id).await["status"].clone()
}

fn expected_charge(amount_cents: u64, source: &str, outcome: FakeOutcome) -> ExpectedCharge {
    ExpectedCharge {
        amount_cents,
        source: source.to_string(),
        idempotency_key: None,
        outcome,
    }
}

/// Pays like `TestApp::pay`, with the client's own `Idempotency-Key` header.
async fn pay_with_idempotency_key(
    app: &TestApp,
    user: &User,
    order_id: &str,
    token: &str,
    idempotency_key: &str,
) -> Response {
    let response = app
        .client
        .post(app.url("/api/payments"))
        .bearer_auth(&user.token)
        .header("Idempotency-Key", idempotency_key)
        .json(&json!({"orderId": order_id, "token": token}))
        .send()
        .await
        .expect("request sent");
    Response::read(response).await
}

/// The idempotency key of a recorded call, which the fake has checked is present.
fn idempotency_key(call: &RecordedCall) -> &str {
    call.idempotency_key.as_deref().unwrap_or_default()
}

#[tokio::test]
async fn purchase_charges_the_price_in_cents_through_stripe() {
    let (app, fake) = spawn_with_fake_stripe().await;
    let user = app.new_user().await;
    let order_id = order_ticket(&app, &user, json!("12.50")).await;
    fake.expect_charge(expected_charge(1250, "tok_visa", FakeOutcome::Succeed));

    let response = app.pay(&user, &order_id, "tok_visa").await;

    assert_eq!(
        response.status,
        StatusCode::CREATED,
        "{response:?}\nserver log:\n{}",
        app.log()
    );
    assert!(
        response.body["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "payment id: {response:?}"
    );
    assert_eq!(order_status(&app, &user, &order_id).await, "complete");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].amount_cents, Some(1250));
    assert_eq!(calls[0].source.as_deref(), Some("tok_visa"));
    assert!(!idempotency_key(&calls[0]).is_empty(), "{calls:?}");
    fake.verify();
}

#[tokio::test]
async fn declined_card_gets_402_and_the_order_stays_payable_under_a_new_key() {
    let (app, fake) = spawn_with_fake_stripe().await;
    let user = app.new_user().await;
    let order_id = order_ticket(&app, &user, json!("12.50")).await;
    fake.expect_charge(expected_charge(
        1250,
        "tok_chargeDeclined",
        FakeOutcome::Decline("Your card was declined.".to_string()),
    ));
    fake.expect_charge(expected_charge(1250, "tok_visa", FakeOutcome::Succeed));

    let declined = app.pay(&user, &order_id, "tok_chargeDeclined").await;

    declined.assert_error(StatusCode::PAYMENT_REQUIRED, "Your card was declined.");
    assert_eq!(order_status(&app, &user, &order_id).await, "created");

    let paid = app.pay(&user, &order_id, "tok_visa").await;

    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    assert_eq!(order_status(&app, &user, &order_id).await, "complete");
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (first_key, second_key) = (idempotency_key(&calls[0]), idempotency_key(&calls[1]));
    assert_ne!(first_key, second_key, "each attempt has its own key");
    for key in [first_key, second_key] {
        assert!(key.contains(&order_id), "key {key:?} names the order");
    }
    fake.verify();
}

#[tokio::test]
async fn retry_with_the_clients_idempotency_key_never_charges_twice() {
    let (app, fake) = spawn_with_fake_stripe().await;
    let user = app.new_user().await;
    let order_id = order_ticket(&app, &user, json!("12.50")).await;
    let client_key = format!("client-{}", uuid::Uuid::new_v4().simple());
    fake.expect_charge(expected_charge(1250, "tok_visa", FakeOutcome::Succeed));

    let first = pay_with_idempotency_key(&app, &user, &order_id, "tok_visa", &client_key).await;
    let retry = pay_with_idempotency_key(&app, &user, &order_id, "tok_visa", &client_key).await;

    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    retry.assert_error(StatusCode::BAD_REQUEST, "Order is already paid");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "one charge reaches stripe: {calls:?}");
    assert!(
        idempotency_key(&calls[0]).contains(&client_key),
        "stripe's key carries the client's: {calls:?}"
    );
    fake.verify();
}

#[tokio::test]
async fn concurrent_payments_with_the_clients_key_make_one_charge() {
    let (app, fake) = spawn_with_fake_stripe().await;
    let user = app.new_user().await;
    let order_id = order_ticket(&app, &user, json!("12.50")).await;
    let client_key = format!("client-{}", uuid::Uuid::new_v4().simple());
    fake.expect_charge(expected_charge(1250, "tok_visa", FakeOutcome::Succeed));

    let (first, second) = tokio::join!(
        pay_with_idempotency_key(&app, &user, &order_id, "tok_visa", &client_key),
        pay_with_idempotency_key(&app, &user, &order_id, "tok_visa", &client_key),
    );

    let statuses = [first.status, second.status];
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == StatusCode::CREATED)
            .count(),
        1,
        "exactly one payment succeeds: {first:?} {second:?}"
    );
    let refused = if first.status == StatusCode::CREATED {
        &second
    } else {
        &first
    };
    assert!(refused.status.is_client_error(), "{refused:?}");
    assert_eq!(order_status(&app, &user, &order_id).await, "complete");
    // A second request may reach Stripe only as a replay of the same key: never a new charge.
    let calls = fake.calls();
    assert_eq!(
        calls.iter().filter(|call| !call.is_replay).count(),
        1,
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .all(|call| idempotency_key(call).contains(&client_key)),
        "{calls:?}"
    );
    fake.verify();
}

#[tokio::test]
async fn charge_amount_is_the_price_in_whole_cents() {
    let (app, fake) = spawn_with_fake_stripe().await;
    let user = app.new_user().await;
    // Numbers that binary floating point gets wrong when multiplied by 100 are included.
    let prices = [
        (json!(0.01), 1),
        (json!(99.99), 9_999),
        (json!(1000000), 100_000_000),
        (json!(0.29), 29),
        (json!(1.1), 110),
        (json!("19.99"), 1_999),
    ];

    for (price, amount_cents) in prices {
        let order_id = order_ticket(&app, &user, price.clone()).await;
        fake.expect_charge(expected_charge(
            amount_cents,
            "tok_mastercard",
            FakeOutcome::Succeed,
        ));

        let response = app.pay(&user, &order_id, "tok_mastercard").await;

        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "price {price}: {response:?}"
        );
        let calls = fake.calls();
        assert_eq!(
            calls.last().and_then(|call| call.amount_cents),
            Some(amount_cents),
            "price {price}: {calls:?}"
        );
    }
    fake.verify();
}

/// A charge in flight when the server dies leaves the order `awaiting:payment`; at start-up the
/// server asks Stripe again with the same idempotency key, learns the charge succeeded, and
/// completes the order: the money taken is never lost, and never taken twice.
#[tokio::test]
async fn a_charge_in_flight_when_the_server_dies_is_reconciled_at_start() {
    let fake = FakeStripe::start(STRIPE_KEY).await;
    let stripe_args = [
        "--stripe-key",
        STRIPE_KEY,
        "--stripe-api-base",
        &fake.base_url,
    ];
    let mut app = TestApp::spawn_with(AppOptions::with_args(&stripe_args)).await;
    let buyer = app.new_user().await;
    let order_id = order_ticket(&app, &buyer, json!(20)).await;
    fake.expect_charge(expected_charge(
        2000,
        "tok_visa",
        FakeOutcome::SucceedSlowly(std::time::Duration::from_secs(120)),
    ));
    let api = app.api();
    let payer = buyer.clone();
    let paying_order = order_id.clone();
    let payment = tokio::spawn(async move {
        api.try_request(
            reqwest::Method::POST,
            "/api/payments",
            &payer.bearer(),
            Some(&json!({"orderId": paying_order, "token": "tok_visa"})),
        )
        .await
    });
    app.eventually(
        "the charge to reach Stripe",
        std::time::Duration::from_secs(20),
        || async { (fake.calls().len() == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        order_status(&app, &buyer, &order_id).await,
        "awaiting:payment"
    );

    app.kill();
    assert!(
        payment.await.unwrap().is_err(),
        "the client never got an answer from the killed server"
    );
    app.restart(&stripe_args).await;
    app.eventually(
        "the order to be reconciled",
        std::time::Duration::from_secs(60),
        || async { (order_status(&app, &buyer, &order_id).await == "complete").then_some(()) },
    )
    .await;

    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(
        calls[0].idempotency_key, calls[1].idempotency_key,
        "asked again with the same key"
    );
    assert!(
        calls[1].is_replay,
        "Stripe answered from its idempotency record: one charge"
    );
    let payments = app
        .events()
        .await
        .into_iter()
        .filter(|event| {
            event["name"] == "payment.created" && event["data"]["orderId"] == json!(order_id)
        })
        .count();
    assert_eq!(payments, 1);
    let order = app.order_json(&buyer, &order_id).await;
    let ticket = app
        .get(
            &format!("/api/tickets/{}", order["ticket"]["id"].as_str().unwrap()),
            &crate::harness::Auth::None,
        )
        .await;
    assert_eq!(
        ticket.body["orderId"],
        json!(order_id),
        "the ticket is sold to the order"
    );
    fake.verify();
}
