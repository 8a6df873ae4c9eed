//! The actor promises made observable: bounded admission (503 + Retry-After, nothing changed),
//! passivation (the live count drops, a re-activated actor keeps its version), and supervision
//! (a crash answers an error, the actor restarts from its persisted state, and an entity that
//! keeps crashing is quarantined). In a cluster each of these is a promise of the node hosting
//! the actor, so the tests ask that node for live actors, actor views, metrics and crash hooks.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Api, AppOptions, Auth, TestApp};

async fn live_ids(app: &Api, kind: &str) -> Vec<String> {
    let response = app
        .get(
            &format!("/admin/api/actors?kind={kind}&limit=1000"),
            &Auth::Admin,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    response.body["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|actor| actor["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_mailbox_answers_503_with_retry_after_and_changes_nothing() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--mailbox-limit", "2"])).await;
    let owner = app.new_user().await;
    let ticket = app.create_ticket(&owner, "popular", json!(10)).await;
    let id = ticket["id"].as_str().unwrap().to_string();

    let updates = (0..60).map(|n| {
        let app = &app;
        let owner = &owner;
        let id = &id;
        async move {
            app.put(
                &format!("/api/tickets/{id}"),
                &owner.bearer(),
                &json!({"title": format!("title {n}"), "price": 10 + n}),
            )
            .await
        }
    });
    let responses = futures::future::join_all(updates).await;
    let accepted = responses
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused: Vec<_> = responses
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(
        accepted + refused.len(),
        60,
        "only 200 or 503: {responses:?}"
    );
    assert!(
        !refused.is_empty(),
        "60 concurrent writes never exceeded a mailbox of 2"
    );
    for response in &refused {
        response.assert_error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        let retry_after: u64 = response.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry_after));
    }
    // Refused requests changed nothing: the version counts exactly the accepted updates.
    let current = app.get(&format!("/api/tickets/{id}"), &Auth::None).await;
    assert_eq!(current.body["version"], json!(accepted));
    let updated = app
        .events()
        .await
        .into_iter()
        .filter(|event| event["name"] == "ticket.updated" && event["data"]["id"] == json!(id))
        .count();
    assert_eq!(updated, accepted);
    let host = app.owner("ticket", &id).await;
    let metrics = host.get("/metrics", &Auth::None).await.text;
    assert!(
        metrics.contains(
            "boxoffice_actor_admission_refusals_total{kind=\"ticket\",reason=\"mailbox_full\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_actors_are_passivated_and_come_back_with_their_version() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--passivate-after", "500ms"])).await;
    let owner = app.new_user().await;
    let ticket = app.create_ticket(&owner, "quiet", json!(5)).await;
    let id = ticket["id"].as_str().unwrap().to_string();
    let updated = app
        .put(
            &format!("/api/tickets/{id}"),
            &owner.cookie(),
            &json!({"title": "quieter", "price": 6}),
        )
        .await;
    assert_eq!(updated.body["version"], json!(1));
    let host = app.owner("ticket", &id).await;
    assert!(live_ids(&host, "ticket").await.contains(&id));

    app.eventually(
        "the ticket actor to be passivated",
        Duration::from_secs(30),
        || async { (!live_ids(&host, "ticket").await.contains(&id)).then_some(()) },
    )
    .await;
    let detail = host
        .get(&format!("/admin/api/actors/ticket/{id}"), &Auth::Admin)
        .await;
    assert_eq!(detail.body["status"], "passivated");
    assert_eq!(
        detail.body["version"],
        json!(1),
        "inspection reads the store"
    );
    assert!(
        !live_ids(&host, "ticket").await.contains(&id),
        "looking at a passivated actor does not activate it"
    );
    let metrics = host.get("/metrics", &Auth::None).await.text;
    assert!(
        metrics.contains("boxoffice_actors_live{kind=\"ticket\"} 0"),
        "{metrics}"
    );

    let again = app.get(&format!("/api/tickets/{id}"), &Auth::None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["version"], json!(1));
    assert_eq!(again.body["title"], "quieter");
    let next = app
        .put(
            &format!("/api/tickets/{id}"),
            &owner.cookie(),
            &json!({"title": "awake", "price": 7}),
        )
        .await;
    assert_eq!(
        next.body["version"],
        json!(2),
        "the re-activated actor continues from its version"
    );
}

/// A cancelled order can no longer change, so its actor is stopped after a second idle instead
/// of `--passivate-after` (two minutes here); an open order's actor stays live. Reading the
/// cancelled order afterwards activates it again from the store. (It was live: it served the
/// cancellation. Asserting so right after it could fail on a machine stalled for a second.)
#[tokio::test]
async fn a_cancelled_order_is_passivated_soon_and_an_open_one_is_not() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--passivate-after", "2m"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let mut orders = Vec::new();
    for title in ["kept", "cancelled"] {
        let ticket = app.create_ticket(&seller, title, json!(5)).await;
        let order = app.order(&buyer, ticket["id"].as_str().unwrap()).await;
        assert_eq!(order.status, StatusCode::CREATED, "{order:?}");
        orders.push(order.body["id"].as_str().unwrap().to_string());
    }
    let (open, cancelled) = (&orders[0], &orders[1]);
    let response = app
        .delete(&format!("/api/orders/{cancelled}"), &buyer.bearer())
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{response:?}");
    let open_host = app.owner("order", open).await;
    let cancelled_host = app.owner("order", cancelled).await;

    app.eventually(
        "the cancelled order's actor to be passivated",
        Duration::from_secs(30),
        || async { (!live_ids(&cancelled_host, "order").await.contains(cancelled)).then_some(()) },
    )
    .await;
    assert!(
        live_ids(&open_host, "order").await.contains(open),
        "an order that can still change keeps its actor"
    );
    let read = app
        .get(&format!("/api/orders/{cancelled}"), &buyer.bearer())
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["status"], "cancelled");
}

/// Arms the crash hook of the `kind` actor `id` on the node hosting it.
async fn arm_crash(app: &Api, kind: &str, id: &str) {
    let armed = app
        .owner(kind, id)
        .await
        .post(
            &format!("/admin/api/test/crash/{kind}/{id}"),
            &Auth::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(armed.status, StatusCode::NO_CONTENT, "{armed:?}");
}

#[tokio::test]
async fn a_crash_answers_an_error_and_the_actor_restarts_from_its_persisted_state() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--enable-test-hooks"])).await;
    let owner = app.new_user().await;
    let ticket = app.create_ticket(&owner, "fragile", json!(5)).await;
    let id = ticket["id"].as_str().unwrap().to_string();

    arm_crash(&app, "ticket", &id).await;
    let crashed = app
        .put(
            &format!("/api/tickets/{id}"),
            &owner.cookie(),
            &json!({"title": "never written", "price": 9}),
        )
        .await;
    crashed.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong");

    let after = app.get(&format!("/api/tickets/{id}"), &Auth::None).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body["version"], json!(0));
    assert_eq!(after.body["title"], "fragile");
    let detail = app
        .owner("ticket", &id)
        .await
        .get(&format!("/admin/api/actors/ticket/{id}"), &Auth::Admin)
        .await;
    assert_eq!(detail.body["restarts"], json!(1));
    assert_eq!(detail.body["status"], "active");

    // An order crashing mid-payment: the payment is refused with 500, the order is untouched
    // and can be paid afterwards.
    let buyer = app.new_user().await;
    let order = app.order(&buyer, &id).await;
    assert_eq!(order.status, StatusCode::CREATED);
    let order_id = order.body["id"].as_str().unwrap().to_string();
    arm_crash(&app, "order", &order_id).await;
    app.pay(&buyer, &order_id, "tok_visa")
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong");
    let order_now = app
        .get(&format!("/api/orders/{order_id}"), &buyer.bearer())
        .await;
    assert_eq!(order_now.body["status"], "created");
    assert_eq!(order_now.body["version"], json!(0));
    assert_eq!(
        app.pay(&buyer, &order_id, "tok_visa").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn an_entity_that_keeps_crashing_is_quarantined() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--enable-test-hooks"])).await;
    let owner = app.new_user().await;
    let ticket = app.create_ticket(&owner, "cursed", json!(5)).await;
    let id = ticket["id"].as_str().unwrap().to_string();
    let path = format!("/api/tickets/{id}");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        arm_crash(&app, "ticket", &id).await;
        statuses.push(app.get(&path, &Auth::None).await.status);
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::INTERNAL_SERVER_ERROR),
        "{statuses:?}"
    );
    let refused = app.get(&path, &Auth::None).await;
    refused.assert_error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
    assert!(refused.headers.contains_key("retry-after"));
    let detail = app
        .owner("ticket", &id)
        .await
        .get(&format!("/admin/api/actors/ticket/{id}"), &Auth::Admin)
        .await;
    assert_eq!(detail.body["quarantined"], Value::Bool(true));
    assert_eq!(detail.body["restarts"], json!(4));
    // After the cool-down the ticket answers again, unchanged.
    let back = app
        .eventually("the quarantine to end", Duration::from_secs(60), || async {
            let response = app.get(&path, &Auth::None).await;
            (response.status == StatusCode::OK).then_some(response)
        })
        .await;
    assert_eq!(back.body["version"], json!(0));
}

#[tokio::test]
async fn the_crash_hook_does_not_exist_without_the_flag() {
    let app = TestApp::spawn().await;
    let response = app
        .post(
            &format!(
                "/admin/api/test/crash/ticket/{}",
                crate::harness::random_id()
            ),
            &Auth::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
}
