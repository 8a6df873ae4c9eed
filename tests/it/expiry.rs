//! Order expiry (classic O16–O19 end to end): unpaid orders are cancelled at `expiresAt` and
//! their tickets released, paid orders never are, and expiries that fell due while the server
//! was down happen after it restarts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{AppOptions, TestApp, parse_time};

const EXPIRY_DEADLINE: Duration = Duration::from_secs(20);

fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

fn count(events: &[Value], name: &str, key: &str, id: &Value) -> usize {
    events
        .iter()
        .filter(|e| e["name"] == name && e["data"][key] == *id)
        .count()
}

// O16, O17
#[tokio::test]
async fn an_unpaid_order_expires_and_releases_its_ticket() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--order-ttl", "2s"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "expiring", json!(12)).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let reserved_version = app.ticket_json(id_of(&ticket)).await["version"]
        .as_u64()
        .unwrap();

    let expired = app
        .wait_for_order_status(&buyer, id_of(&order), "cancelled", EXPIRY_DEADLINE)
        .await;
    assert_eq!(expired["version"], 1, "{expired}");
    let released = app
        .wait_for_ticket_released(id_of(&ticket), Duration::from_secs(10))
        .await;
    assert_eq!(released["version"].as_u64(), Some(reserved_version + 1));

    let other = app.new_user().await;
    let again = app.order_ok(&other, id_of(&ticket)).await;
    assert_eq!(again["status"], "created");

    let events = app.events().await;
    assert_eq!(
        count(&events, "expiration.complete", "orderId", &order["id"]),
        1,
        "{events:#?}"
    );
    assert_eq!(
        count(&events, "order.cancelled", "id", &order["id"]),
        1,
        "{events:#?}"
    );

    // Paying the expired order is refused.
    let response = app.pay(&buyer, id_of(&order), "tok_visa").await;
    response.assert_error(StatusCode::BAD_REQUEST, "Cannot pay for a cancelled order");
}

// O19
#[tokio::test]
async fn a_paid_order_never_expires() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--order-ttl", "2s"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "kept", json!(12)).await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let paid = app.pay(&buyer, id_of(&order), "tok_visa").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");

    // Once a later order has expired, the paid order's deadline has certainly been handled.
    let later_ticket = app.create_ticket(&seller, "sentinel", json!(1)).await;
    let later = app.order_ok(&buyer, id_of(&later_ticket)).await;
    app.wait_for_order_status(&buyer, id_of(&later), "cancelled", EXPIRY_DEADLINE)
        .await;

    assert_eq!(
        app.order_json(&buyer, id_of(&order)).await["status"],
        "complete"
    );
    assert_eq!(
        app.ticket_json(id_of(&ticket)).await["orderId"],
        order["id"]
    );
    let events = app.events().await;
    assert_eq!(
        count(&events, "expiration.complete", "orderId", &order["id"]),
        0,
        "{events:#?}"
    );
    assert_eq!(
        count(&events, "order.cancelled", "id", &order["id"]),
        0,
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_cancelled_order_is_not_expired_again() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--order-ttl", "2s"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app
        .create_ticket(&seller, "cancelled early", json!(12))
        .await;
    let order = app.order_ok(&buyer, id_of(&ticket)).await;
    let cancel = app
        .delete(&format!("/api/orders/{}", id_of(&order)), &buyer.bearer())
        .await;
    assert_eq!(cancel.status, StatusCode::NO_CONTENT, "{cancel:?}");

    let later_ticket = app.create_ticket(&seller, "sentinel", json!(1)).await;
    let later = app.order_ok(&buyer, id_of(&later_ticket)).await;
    app.wait_for_order_status(&buyer, id_of(&later), "cancelled", EXPIRY_DEADLINE)
        .await;

    let order_now = app.order_json(&buyer, id_of(&order)).await;
    assert_eq!(order_now["status"], "cancelled");
    assert_eq!(order_now["version"], 1, "no second cancellation");
    let events = app.events().await;
    assert_eq!(
        count(&events, "order.cancelled", "id", &order["id"]),
        1,
        "{events:#?}"
    );
    assert_eq!(
        count(&events, "expiration.complete", "orderId", &order["id"]),
        0,
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_that_expire_while_the_server_is_down_expire_after_restart() {
    let mut app = TestApp::spawn_with(AppOptions::with_args(&["--order-ttl", "2s"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let mut orders = Vec::new();
    for index in 0..3 {
        let ticket = app
            .create_ticket(&seller, &format!("down {index}"), json!(8))
            .await;
        orders.push(app.order_ok(&buyer, id_of(&ticket)).await);
    }

    let status = tokio::task::block_in_place(|| app.terminate());
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    // Stay down until every order is past its expiry: that is the situation under test.
    let latest = orders
        .iter()
        .map(|order| parse_time(&order["expiresAt"]))
        .max()
        .unwrap();
    let wait = latest + time::Duration::seconds(1) - time::OffsetDateTime::now_utc();
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs()).await;
    }

    app.restart(&["--order-ttl", "2s"]).await;
    for order in &orders {
        app.wait_for_order_status(&buyer, id_of(order), "cancelled", EXPIRY_DEADLINE)
            .await;
        let ticket_id = order["ticket"]["id"].as_str().unwrap();
        app.wait_for_ticket_released(ticket_id, Duration::from_secs(10))
            .await;
    }
    let events = app
        .eventually(
            "an expiration.complete per order",
            EXPIRY_DEADLINE,
            || async {
                let events = app.events().await;
                orders
                    .iter()
                    .all(|o| count(&events, "expiration.complete", "orderId", &o["id"]) >= 1)
                    .then_some(events)
            },
        )
        .await;
    for order in &orders {
        assert_eq!(
            count(&events, "expiration.complete", "orderId", &order["id"]),
            1,
            "{events:#?}"
        );
        assert_eq!(
            count(&events, "order.cancelled", "id", &order["id"]),
            1,
            "{events:#?}"
        );
    }

    // The released tickets can be ordered again.
    let other = app.new_user().await;
    for order in &orders {
        app.order_ok(&other, order["ticket"]["id"].as_str().unwrap())
            .await;
    }
}

/// Start-up reconciliation (single node): a reservation whose order was never saved (the process
/// died between reserving the ticket and saving the order) frees its ticket at start, long before
/// its deadline; a reservation whose order is live stays, and its ticket's actor is not activated
/// by the check (the check reads the store and asks an actor only when a hold must change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_a_reservation_without_its_order_is_freed_and_the_others_stay_passivated() {
    use boxoffice::domain::{ObjectId, OrderId, TicketId};
    use boxoffice::store::{EmbeddedStore, EntityWrite, Store, UnitOfWork, seed};

    let mut app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let orphaned = app.create_ticket(&seller, "orphaned", json!(8)).await;
    let held = app.create_ticket(&seller, "held", json!(8)).await;
    let order = app.order_ok(&buyer, id_of(&held)).await;
    let status = tokio::task::block_in_place(|| app.terminate());
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    // What a crash between the two writes leaves: the ticket reserved (for the default 15
    // minutes) by an order id that was never saved.
    let store = EmbeddedStore::open(app.data_dir()).expect("open the stopped server's store");
    let ticket_id = TicketId(ObjectId::parse(id_of(&orphaned)).unwrap());
    let mut record = store.load_ticket(ticket_id).await.unwrap().unwrap();
    let now = boxoffice::clock::now();
    let expected_version = Some(record.state.version);
    let events = seed::reserve(
        &mut record,
        OrderId(ObjectId::parse(&crate::harness::random_id()).unwrap()),
        now.plus(Duration::from_secs(900)),
        now,
    )
    .expect("a free ticket takes a reservation");
    let unit = UnitOfWork {
        writes: vec![EntityWrite::Ticket {
            expected_version,
            record: record.into(),
        }],
        events,
        ..UnitOfWork::default()
    };
    store.commit(unit).await.expect("reserve the ticket");
    assert!(store.close(Duration::from_secs(10)), "the store closes");

    app.restart(&[]).await;
    app.wait_for_ticket_released(id_of(&orphaned), Duration::from_secs(20))
        .await;
    // The live order keeps its ticket, and nothing activated that ticket's actor to say so.
    let view = app
        .get(
            &format!("/admin/api/actors/ticket/{}", id_of(&held)),
            &crate::harness::Auth::Admin,
        )
        .await;
    assert_eq!(view.status, StatusCode::OK, "{view:?}");
    assert_eq!(view.body["status"], "passivated", "{:#}", view.body);
    assert_eq!(
        view.body["state"]["orderId"], order["id"],
        "{:#}",
        view.body
    );
    let ticket = app.ticket_json(id_of(&held)).await;
    assert_eq!(ticket["orderId"], order["id"]);
}
