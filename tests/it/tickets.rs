//! Tickets: create, show, list (with paging), update (classic cases T1–T23 as visible effects),
//! price rules, versions, and server-owned fields the client cannot set.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Auth, TestApp, assert_not_held, is_object_id, random_id};

async fn post_ticket(app: &TestApp, auth: &Auth, body: Value) -> crate::harness::Response {
    app.post("/api/tickets", auth, &body).await
}

// T1, T2
#[tokio::test]
async fn creating_requires_a_session() {
    let app = TestApp::spawn().await;
    let response = post_ticket(&app, &Auth::None, json!({})).await;
    assert_ne!(response.status, StatusCode::NOT_FOUND, "the route exists");
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");

    let response = post_ticket(&app, &Auth::None, json!({"title": "concert", "price": 10})).await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    assert!(app.all_listed_tickets().await.is_empty());
}

// T3
#[tokio::test]
async fn a_signed_in_user_gets_past_authorization() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let response = post_ticket(&app, &user.cookie(), json!({})).await;
    assert_ne!(response.status, StatusCode::UNAUTHORIZED, "{response:?}");
    response.assert_field_error(StatusCode::BAD_REQUEST, "Title is required", "title");
    response.assert_field_error(
        StatusCode::BAD_REQUEST,
        "Price must be greater than 0",
        "price",
    );
}

// T4
#[tokio::test]
async fn an_empty_or_missing_title_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    for body in [json!({"title": "", "price": 10}), json!({"price": 10})] {
        let response = post_ticket(&app, &user.cookie(), body).await;
        response.assert_field_error(StatusCode::BAD_REQUEST, "Title is required", "title");
    }
    assert!(app.all_listed_tickets().await.is_empty());
}

// T5
#[tokio::test]
async fn a_price_not_greater_than_zero_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    for body in [
        json!({"title": "concert", "price": -10}),
        json!({"title": "concert", "price": 0}),
        json!({"title": "concert"}),
    ] {
        let response = post_ticket(&app, &user.cookie(), body).await;
        response.assert_field_error(
            StatusCode::BAD_REQUEST,
            "Price must be greater than 0",
            "price",
        );
    }
    assert!(app.all_listed_tickets().await.is_empty());
}

#[tokio::test]
async fn malformed_or_out_of_range_prices_are_refused_on_price() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    for price in [
        json!(12.345),
        json!("12.345"),
        json!("abc"),
        json!("NaN"),
        json!("Infinity"),
        json!(""),
        json!(1000000.01),
        json!(1000001),
        json!("1000000.01"),
    ] {
        let response = post_ticket(
            &app,
            &user.cookie(),
            json!({"title": "concert", "price": price}),
        )
        .await;
        response.assert_field(StatusCode::BAD_REQUEST, "price");
    }
    assert!(app.all_listed_tickets().await.is_empty());
}

#[tokio::test]
async fn prices_are_numbers_or_decimal_strings_returned_as_numbers() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    for (given, returned) in [
        (json!("12.50"), json!(12.5)),
        (json!("7"), json!(7)),
        (json!(19.99), json!(19.99)),
        (json!(0.01), json!(0.01)),
        (json!(1000000), json!(1000000)),
        (json!("1000000.00"), json!(1000000)),
    ] {
        let response = post_ticket(
            &app,
            &user.cookie(),
            json!({"title": "concert", "price": given}),
        )
        .await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "{given}: {response:?}"
        );
        assert_eq!(
            response.body["price"].as_f64(),
            returned.as_f64(),
            "{given}: {response:?}"
        );
        assert!(response.body["price"].is_number(), "{response:?}");
        let shown = app.ticket_json(response.body["id"].as_str().unwrap()).await;
        assert_eq!(shown["price"].as_f64(), returned.as_f64(), "{shown}");
    }
}

// T6, T7
#[tokio::test]
async fn creates_a_ticket_with_valid_inputs() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    assert!(app.all_listed_tickets().await.is_empty());

    let response = post_ticket(
        &app,
        &user.cookie(),
        json!({"title": "asldkfj", "price": 20}),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    let ticket = &response.body;
    assert!(is_object_id(&ticket["id"]), "{ticket}");
    assert_eq!(ticket["title"], "asldkfj");
    assert_eq!(ticket["price"].as_f64(), Some(20.0));
    assert_eq!(ticket["userId"], user.id.as_str());
    assert_eq!(ticket["version"], 0);
    assert_not_held(ticket);

    let listed = app.all_listed_tickets().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["title"], "asldkfj");
    assert_eq!(listed[0]["price"].as_f64(), Some(20.0));

    let events = app.events().await;
    let created: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "ticket.created" && e["data"]["id"] == ticket["id"])
        .collect();
    assert_eq!(created.len(), 1, "one ticket.created: {events:?}");
}

// T8
#[tokio::test]
async fn showing_an_unknown_or_malformed_id_is_404() {
    let app = TestApp::spawn().await;
    for id in [random_id(), "not-an-id".to_string(), "123".to_string()] {
        let response = app.ticket(&id).await;
        response.assert_error(StatusCode::NOT_FOUND, "Not Found");
    }
}

// T9
#[tokio::test]
async fn shows_the_ticket() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let created = app.create_ticket(&user, "concert", json!(20)).await;
    let response = app.ticket(created["id"].as_str().unwrap()).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body, created);
}

// T10
#[tokio::test]
async fn lists_the_tickets() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    for title in ["one", "two", "three"] {
        app.create_ticket(&user, title, json!(10)).await;
    }
    let response = app.get("/api/tickets", &Auth::None).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body.as_array().unwrap().len(), 3, "{response:?}");
}

// T20-T23 as visible effects: a held ticket leaves the list and comes back when released.
#[tokio::test]
async fn the_list_shows_only_tickets_no_order_holds() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let mut ids = Vec::new();
    for title in ["one", "two", "three"] {
        let ticket = app.create_ticket(&seller, title, json!(10)).await;
        ids.push(ticket["id"].as_str().unwrap().to_string());
    }
    let order = app.order_ok(&buyer, &ids[1]).await;

    let listed: Vec<Value> = app.all_listed_tickets().await;
    let listed_ids: HashSet<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(
        listed_ids,
        HashSet::from([ids[0].as_str(), ids[2].as_str()])
    );

    let cancel = app
        .delete(
            &format!("/api/orders/{}", order["id"].as_str().unwrap()),
            &buyer.bearer(),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NO_CONTENT, "{cancel:?}");
    app.wait_for_ticket_released(&ids[1], std::time::Duration::from_secs(10))
        .await;
    assert_eq!(app.all_listed_tickets().await.len(), 3);
}

#[tokio::test]
async fn paging_visits_every_ticket_once_in_id_order() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let mut created = HashSet::new();
    for index in 0..7 {
        let ticket = app
            .create_ticket(&user, &format!("ticket {index}"), json!(5))
            .await;
        created.insert(ticket["id"].as_str().unwrap().to_string());
    }

    let first = app.get("/api/tickets?limit=2", &Auth::None).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.body.as_array().unwrap().len(), 2, "{first:?}");
    assert!(first.next_link().is_some(), "a Link rel=next: {first:?}");

    let mut seen = Vec::new();
    let mut path = "/api/tickets?limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = app.get(&path, &Auth::None).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        let items = page.body.as_array().unwrap();
        assert!(items.len() <= 2, "{page:?}");
        seen.extend(items.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        pages += 1;
        assert!(pages <= 10, "paging does not end");
        match page.next_link() {
            Some(next) => path = next,
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages are ordered by id");
    assert_eq!(seen.len(), 7, "every ticket exactly once: {seen:?}");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), created);

    // Without a limit, one page holds them all and there is no next link.
    let all = app.get("/api/tickets", &Auth::None).await;
    assert_eq!(all.body.as_array().unwrap().len(), 7);
    assert!(all.next_link().is_none(), "{all:?}");
}

// T11
#[tokio::test]
async fn updating_an_unknown_or_malformed_id_is_404() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    for id in [random_id(), "not-an-id".to_string()] {
        let response = app
            .put(
                &format!("/api/tickets/{id}"),
                &user.cookie(),
                &json!({"title": "concert", "price": 20}),
            )
            .await;
        response.assert_error(StatusCode::NOT_FOUND, "Not Found");
    }
}

// T12
#[tokio::test]
async fn updating_requires_a_session() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let ticket = app.create_ticket(&user, "concert", json!(20)).await;
    let response = app
        .put(
            &format!("/api/tickets/{}", ticket["id"].as_str().unwrap()),
            &Auth::None,
            &json!({"title": "changed", "price": 30}),
        )
        .await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    let unchanged = app.ticket_json(ticket["id"].as_str().unwrap()).await;
    assert_eq!(unchanged, ticket);
}

// T13
#[tokio::test]
async fn only_the_owner_can_update() {
    let app = TestApp::spawn().await;
    let owner = app.new_user().await;
    let other = app.new_user().await;
    let ticket = app.create_ticket(&owner, "concert", json!(20)).await;
    let response = app
        .put(
            &format!("/api/tickets/{}", ticket["id"].as_str().unwrap()),
            &other.cookie(),
            &json!({"title": "stolen", "price": 1}),
        )
        .await;
    response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    let unchanged = app.ticket_json(ticket["id"].as_str().unwrap()).await;
    assert_eq!(unchanged, ticket);
}

// T14
#[tokio::test]
async fn updating_with_an_invalid_title_or_price_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let ticket = app.create_ticket(&user, "concert", json!(20)).await;
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());

    let response = app
        .put(&path, &user.cookie(), &json!({"title": "", "price": 20}))
        .await;
    response.assert_field_error(StatusCode::BAD_REQUEST, "Title is required", "title");

    let response = app
        .put(
            &path,
            &user.cookie(),
            &json!({"title": "concert", "price": -10}),
        )
        .await;
    response.assert_field_error(
        StatusCode::BAD_REQUEST,
        "Price must be greater than 0",
        "price",
    );

    let response = app
        .put(
            &path,
            &user.cookie(),
            &json!({"title": "concert", "price": "abc"}),
        )
        .await;
    response.assert_field(StatusCode::BAD_REQUEST, "price");

    let unchanged = app.ticket_json(ticket["id"].as_str().unwrap()).await;
    assert_eq!(unchanged, ticket);
}

// T15, T16
#[tokio::test]
async fn updates_the_ticket_with_valid_inputs() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let ticket = app.create_ticket(&user, "concert", json!(20)).await;
    let id = ticket["id"].as_str().unwrap();
    let response = app
        .put(
            &format!("/api/tickets/{id}"),
            &user.cookie(),
            &json!({"title": "new title", "price": "100.25"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body["id"], id);
    assert_eq!(response.body["title"], "new title");
    assert_eq!(response.body["price"].as_f64(), Some(100.25));
    assert_eq!(response.body["version"], 1);
    assert_eq!(response.body["userId"], user.id.as_str());

    let shown = app.ticket_json(id).await;
    assert_eq!(shown, response.body);

    let events = app.events().await;
    let updated: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "ticket.updated" && e["data"]["id"] == id)
        .collect();
    assert_eq!(updated.len(), 1, "{events:?}");
    assert_eq!(updated[0]["data"]["title"], "new title");
    assert_eq!(updated[0]["data"]["version"], 1);
}

// T17
#[tokio::test]
async fn a_reserved_ticket_cannot_be_edited() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "concert", json!(20)).await;
    let id = ticket["id"].as_str().unwrap();
    app.order_ok(&buyer, id).await;
    let reserved = app.ticket_json(id).await;

    let response = app
        .put(
            &format!("/api/tickets/{id}"),
            &seller.cookie(),
            &json!({"title": "changed", "price": 99}),
        )
        .await;
    response.assert_error(StatusCode::BAD_REQUEST, "Cannot edit a reserved ticket");
    assert_eq!(app.ticket_json(id).await, reserved);
}

// T18, T19
#[tokio::test]
async fn versions_go_up_by_one_on_each_update() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let ticket = app.create_ticket(&user, "concert", json!(20)).await;
    assert_eq!(ticket["version"], 0);
    let id = ticket["id"].as_str().unwrap();
    for expected in 1..=5 {
        let response = app
            .put(
                &format!("/api/tickets/{id}"),
                &user.cookie(),
                &json!({"title": format!("title {expected}"), "price": 20 + expected}),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.body["version"], expected, "{response:?}");
        assert_eq!(app.ticket_json(id).await["version"], expected);
    }
}

// T18: concurrent writers never share or skip a version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_never_skip_or_repeat_a_version() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let ticket = app.create_ticket(&user, "concert", json!(20)).await;
    let id = ticket["id"].as_str().unwrap();
    let path = format!("/api/tickets/{id}");
    let writes = 20u64;
    let responses = futures::future::join_all((0..writes).map(|index| {
        let body = json!({"title": format!("writer {index}"), "price": 1 + index});
        let auth = user.cookie();
        let path = path.clone();
        let app = &app;
        async move { app.put(&path, &auth, &body).await }
    }))
    .await;
    let mut versions: Vec<u64> = responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            r.body["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=writes).collect::<Vec<_>>());

    let last = responses
        .iter()
        .find(|r| r.body["version"] == writes)
        .unwrap();
    let shown = app.ticket_json(id).await;
    assert_eq!(shown["version"], writes);
    assert_eq!(shown["title"], last.body["title"], "the last write wins");
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_cannot_set_server_owned_fields() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let forged_id = random_id();
    let forged_order = random_id();
    let response = post_ticket(
        &app,
        &user.cookie(),
        json!({
            "title": "concert", "price": 10, "id": forged_id, "userId": other.id,
            "version": 7, "orderId": forged_order, "colour": "blue",
        }),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    let ticket = response.body;
    let id = ticket["id"].as_str().unwrap();
    assert_ne!(id, forged_id);
    assert_eq!(ticket["userId"], user.id.as_str());
    assert_eq!(ticket["version"], 0);
    assert_not_held(&ticket);
    assert!(ticket.get("colour").is_none(), "{ticket}");
    assert_eq!(app.ticket(&forged_id).await.status, StatusCode::NOT_FOUND);

    let response = app
        .put(
            &format!("/api/tickets/{id}"),
            &user.cookie(),
            &json!({
                "title": "changed", "price": 11, "id": forged_id, "userId": other.id,
                "version": 42, "orderId": forged_order,
            }),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body["id"], id);
    assert_eq!(response.body["userId"], user.id.as_str());
    assert_eq!(response.body["version"], 1);
    assert_not_held(&response.body);
    let shown = app.ticket_json(id).await;
    assert_eq!(shown, response.body);
    assert_eq!(app.all_listed_tickets().await.len(), 1, "still listed");
}
