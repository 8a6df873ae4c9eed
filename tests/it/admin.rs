//! The admin API and the admin page's serving: every endpoint refuses a missing or wrong token
//! with the contract's body, each response has the contract's shape, a reservation, a payment
//! and an expiry show in both the ticket's and the order's transition history with the versions
//! the entities have after them, the tail streams events and transitions, nothing returned
//! carries a secret, and `/admin` serves a data-free shell under a strict security policy.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Api, AppOptions, Auth, JWT_KEY, TestApp, User, parse_time, shards_per_kind,
};

/// The Content-Security-Policy the page is served with (the wording, exactly).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Every file of the page, as the shell and its modules name them.
const ASSETS: [&str; 9] = [
    "style.css",
    "app.js",
    "api.js",
    "dom.js",
    "event_stream.js",
    "cluster.js",
    "actors.js",
    "actor.js",
    "tail.js",
];

/// The keys of a transition, in the history and on the tail.
pub(crate) const TRANSITION_KEYS: [&str; 7] = [
    "at",
    "message",
    "requestId",
    "from",
    "to",
    "version",
    "events",
];

/// The keys of an event, in the log and on the tail.
const EVENT_KEYS: [&str; 5] = ["seq", "id", "name", "at", "data"];

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object, got {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[track_caller]
pub(crate) fn assert_keys(value: &Value, expected: &[&str]) {
    assert_eq!(
        keys(value),
        expected.iter().copied().collect::<BTreeSet<&str>>(),
        "{value:#}"
    );
}

/// The actor view, as the node hosting the actor shows it (another node shows it passivated).
async fn actor_view(app: &Api, kind: &str, id: &str) -> Value {
    let response = app
        .owner(kind, id)
        .await
        .get(&format!("/admin/api/actors/{kind}/{id}"), &Auth::Admin)
        .await;
    assert_eq!(response.status, StatusCode::OK, "{kind} {id}: {response:?}");
    response.body
}

/// A GET with a raw `Authorization` header (or none).
async fn get_with_authorization(
    app: &TestApp,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut request = app.client.get(app.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string());
    // An accepted tail never ends: read only its head.
    let body = if content_type.as_deref() == Some("text/event-stream") {
        String::new()
    } else {
        response.text().await.expect("body")
    };
    (status, body, content_type)
}

#[tokio::test]
async fn every_admin_endpoint_refuses_a_missing_or_wrong_token_with_the_contract_body() {
    let app = TestApp::spawn().await;
    let owner = app.new_user().await;
    let ticket = app.create_ticket(&owner, "guarded", json!(5)).await;
    let ticket_id = ticket["id"].as_str().unwrap();
    let order = app.order_ok(&app.new_user().await, ticket_id).await;
    let order_id = order["id"].as_str().unwrap();
    // Each path with what it answers to the right token.
    let paths = [
        ("/admin/api/cluster".to_string(), StatusCode::OK),
        ("/admin/api/shard-moves?limit=5".to_string(), StatusCode::OK),
        (
            "/admin/api/events?after=0&limit=10".to_string(),
            StatusCode::OK,
        ),
        ("/admin/api/tail".to_string(), StatusCode::OK),
        (
            "/admin/api/actors?kind=ticket&limit=10".to_string(),
            StatusCode::OK,
        ),
        (
            format!("/admin/api/actors/ticket/{ticket_id}"),
            StatusCode::OK,
        ),
        (
            format!("/admin/api/actors/order/{order_id}"),
            StatusCode::OK,
        ),
        // An id that does not exist: 401 first, so nothing is learnt without the token.
        (
            format!("/admin/api/actors/order/{}", crate::harness::random_id()),
            StatusCode::NOT_FOUND,
        ),
    ];
    let almost = format!("{ADMIN_TOKEN}x");
    let truncated = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    let wrong_authorizations = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {almost}")),
        Some(format!("Bearer {truncated}")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_string()),
        Some("Bearer ".to_string()),
        // A user's session token is not the admin token.
        Some(format!("Bearer {}", owner.token)),
    ];
    for (path, allowed) in &paths {
        for authorization in &wrong_authorizations {
            let (status, body, _) =
                get_with_authorization(&app, path, authorization.as_deref()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} with {authorization:?}"
            );
            let body: Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(
                body,
                json!({"errors": [{"message": "Not authorized"}]}),
                "{path} with {authorization:?}"
            );
        }
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let (status, _, content_type) = get_with_authorization(&app, path, Some(&bearer)).await;
        assert_eq!(status, *allowed, "{path} with the admin token");
        let expected_type = if path == "/admin/api/tail" {
            "text/event-stream"
        } else {
            "application/json"
        };
        assert_eq!(content_type.as_deref(), Some(expected_type), "{path}");
    }
}

#[tokio::test]
async fn the_cluster_shows_its_nodes_and_an_owner_for_every_shard_of_each_kind() {
    let app = TestApp::spawn().await;
    let response = app.get("/admin/api/cluster", &Auth::Admin).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_keys(&response.body, &["nodes", "shards"]);
    let nodes = response.body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), app.node_count(), "{nodes:?}");
    let mut node_ids = HashSet::new();
    for node in nodes {
        assert_keys(
            node,
            &["id", "address", "roles", "startedAt", "lastHeartbeat"],
        );
        let node_id = node["id"].as_str().unwrap();
        assert!(!node_id.is_empty());
        assert!(node_ids.insert(node_id), "node ids are unique: {nodes:?}");
        assert!(!node["address"].as_str().unwrap().is_empty());
        let roles: HashSet<&str> = node["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|role| role.as_str().unwrap())
            .collect();
        for role in ["auth", "tickets", "orders", "payments", "expiration"] {
            assert!(roles.contains(role), "{roles:?} lacks {role}");
        }
        let started = parse_time(&node["startedAt"]);
        let heartbeat = parse_time(&node["lastHeartbeat"]);
        assert!(heartbeat >= started, "{node}");
    }
    let shard_count = shards_per_kind();

    let shards = response.body["shards"].as_array().unwrap();
    for kind in ["ticket", "order"] {
        let of_kind: Vec<&Value> = shards
            .iter()
            .filter(|shard| shard["kind"] == kind)
            .collect();
        let numbers: BTreeSet<u64> = of_kind
            .iter()
            .map(|shard| shard["shard"].as_u64().unwrap())
            .collect();
        assert_eq!(
            numbers,
            (0..shard_count).collect::<BTreeSet<u64>>(),
            "{kind} shards"
        );
        for shard in of_kind {
            assert_keys(shard, &["kind", "shard", "owner", "epoch"]);
            assert!(
                node_ids.contains(shard["owner"].as_str().unwrap()),
                "a listed node owns {shard}"
            );
            assert!(shard["epoch"].as_u64().unwrap() >= 1);
        }
    }
    assert_eq!(shards.len() as u64, 2 * shard_count);
}

#[tokio::test]
async fn the_shard_count_follows_the_flag_and_one_node_records_no_moves() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--shards", "16"])).await;
    let cluster = app.get("/admin/api/cluster", &Auth::Admin).await;
    assert_eq!(cluster.body["shards"].as_array().unwrap().len(), 32);
    for path in ["/admin/api/shard-moves", "/admin/api/shard-moves?limit=3"] {
        let moves = app.get(path, &Auth::Admin).await;
        assert_eq!(moves.status, StatusCode::OK, "{moves:?}");
        assert_eq!(moves.body, json!({"moves": [], "unreachable": []}));
    }
}

#[tokio::test]
async fn the_event_log_pages_in_sequence_order_with_iso_times() {
    let app = TestApp::spawn().await;
    let owner = app.new_user().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let ticket = app
            .create_ticket(&owner, &format!("logged {n}"), json!(5))
            .await;
        ids.push(ticket["id"].clone());
    }
    let first = app.get("/admin/api/events?limit=2", &Auth::Admin).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_keys(&first.body, &["events", "next"]);
    let page = first.body["events"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    for event in page {
        assert_keys(event, &EVENT_KEYS);
        parse_time(&event["at"]);
        assert_eq!(event["name"], "ticket.created");
    }
    assert_eq!(first.body["next"], page[1]["seq"]);
    let after = page[1]["seq"].as_u64().unwrap();
    let second = app
        .get(
            &format!("/admin/api/events?after={after}&limit=2"),
            &Auth::Admin,
        )
        .await;
    let rest = second.body["events"].as_array().unwrap();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(second.body["next"], Value::Null);
    assert!(rest[0]["seq"].as_u64().unwrap() > after);
    let logged: Vec<Value> = page
        .iter()
        .chain(rest)
        .map(|event| event["data"]["id"].clone())
        .collect();
    assert_eq!(logged, ids, "in the order the tickets were created");
}

#[tokio::test]
async fn live_actors_page_by_id_with_their_mailbox_and_health() {
    let app = TestApp::spawn().await;
    let owner = app.new_user().await;
    // Any node lists the whole deployment's actors (it asks the others): three tickets,
    // wherever they live, paged through from one node in id order.
    let mut ids = BTreeSet::new();
    for _ in 0..3 {
        let ticket = app.create_ticket(&owner, "live", json!(5)).await;
        ids.insert(ticket["id"].as_str().unwrap().to_string());
    }
    let node = app.node(app.node_count() - 1);
    let first = node
        .get("/admin/api/actors?kind=ticket&limit=2", &Auth::Admin)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_keys(&first.body, &["actors", "next", "unreachable"]);
    assert_eq!(first.body["unreachable"], json!([]));
    let page = first.body["actors"].as_array().unwrap();
    assert_eq!(page.len(), 2);
    for actor in page {
        assert_keys(
            actor,
            &[
                "kind",
                "id",
                "node",
                "shard",
                "status",
                "version",
                "mailboxDepth",
                "restarts",
                "quarantined",
                "overloaded",
            ],
        );
        assert_eq!(actor["kind"], "ticket");
        assert_eq!(actor["status"], "available");
        assert_eq!(actor["version"], json!(0));
        assert_eq!(actor["mailboxDepth"], json!(0));
        assert_eq!(actor["restarts"], json!(0));
        assert_eq!(actor["quarantined"], json!(false));
        assert_eq!(actor["overloaded"], json!(false));
        assert!(actor["shard"].as_u64().unwrap() < 256);
    }
    assert_eq!(first.body["next"], page[1]["id"]);
    let after = page[1]["id"].as_str().unwrap();
    let second = node
        .get(
            &format!("/admin/api/actors?kind=ticket&limit=2&after={after}"),
            &Auth::Admin,
        )
        .await;
    let rest = second.body["actors"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(second.body["next"], Value::Null);
    let listed: Vec<String> = page
        .iter()
        .chain(rest)
        .map(|actor| actor["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        ids.iter().cloned().collect::<Vec<_>>(),
        "ordered by id"
    );

    let orders = app.get("/admin/api/actors?kind=order", &Auth::Admin).await;
    assert_eq!(orders.body["actors"], json!([]));
    let bad_kind = app.get("/admin/api/actors?kind=user", &Auth::Admin).await;
    bad_kind.assert_error(StatusCode::BAD_REQUEST, "kind must be ticket or order");
    let bad_after = app.get("/admin/api/actors?after=nope", &Auth::Admin).await;
    bad_after.assert_error(StatusCode::BAD_REQUEST, "after must be an id");
}

/// Checks one transition history against what the REST API said after each step: `steps` are
/// `(message, from, to, version)`, oldest first; every entity event id a transition lists ends
/// with its version, and the view's version is the last transition's.
#[track_caller]
fn assert_history(view: &Value, steps: &[(&str, &str, &str, u64)]) {
    let transitions = view["transitions"].as_array().expect("transitions");
    let seen: Vec<(&str, &str, &str, u64)> = transitions
        .iter()
        .map(|transition| {
            assert_keys(transition, &TRANSITION_KEYS);
            parse_time(&transition["at"]);
            (
                transition["message"].as_str().unwrap(),
                transition["from"].as_str().unwrap(),
                transition["to"].as_str().unwrap(),
                transition["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, steps, "{view:#}");
    let times: Vec<_> = transitions
        .iter()
        .map(|transition| parse_time(&transition["at"]))
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "newest last"
    );
    let entity = format!(":{}:", view["id"].as_str().unwrap());
    for transition in transitions {
        for event in transition["events"].as_array().unwrap() {
            let event = event.as_str().unwrap();
            if event.contains(&entity) {
                assert!(
                    event.ends_with(&format!(":{}", transition["version"])),
                    "{event} in {transition}"
                );
            }
        }
    }
    assert_eq!(view["version"], transitions.last().unwrap()["version"]);
}

#[tokio::test]
async fn a_reservation_and_a_payment_appear_in_the_ticket_and_order_histories() {
    let app = TestApp::spawn().await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "history", json!("12.50")).await;
    let ticket_id = ticket["id"].as_str().unwrap().to_string();
    assert_eq!(ticket["version"], json!(0));
    let view = actor_view(&app, "ticket", &ticket_id).await;
    assert_keys(
        &view,
        &[
            "kind",
            "id",
            "node",
            "shard",
            "status",
            "version",
            "state",
            "mailboxDepth",
            "mailboxLimit",
            "overloaded",
            "restarts",
            "quarantined",
            "transitions",
            "unreachable",
        ],
    );
    assert_eq!(view["kind"], "ticket");
    assert_eq!(view["unreachable"], json!([]));
    assert_eq!(view["status"], "active");
    assert_eq!(
        view["state"], ticket,
        "the state is the ticket as the API shows it"
    );
    assert_history(&view, &[("Create", "absent", "available", 0)]);
    let created = &view["transitions"][0];
    assert_eq!(
        created["events"],
        json!([format!("ticket.created:{ticket_id}:0")])
    );

    // The reservation, with a request id of the client's choosing.
    let request_id = format!("admin-test-{}", uuid::Uuid::new_v4().simple());
    let ordered = app
        .client
        .post(app.url("/api/orders"))
        .bearer_auth(&buyer.token)
        .header("x-request-id", &request_id)
        .json(&json!({"ticketId": ticket_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(ordered.status(), StatusCode::CREATED);
    let order: Value = ordered.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_string();
    let reserved_version = app.ticket_json(&ticket_id).await["version"].clone();
    assert_eq!(reserved_version, json!(1));
    let ticket_view = actor_view(&app, "ticket", &ticket_id).await;
    assert_history(
        &ticket_view,
        &[
            ("Create", "absent", "available", 0),
            ("Reserve", "available", "reserved", 1),
        ],
    );
    assert_eq!(
        ticket_view["transitions"][1]["requestId"],
        request_id.as_str()
    );
    let order_view = actor_view(&app, "order", &order_id).await;
    assert_eq!(order_view["kind"], "order");
    assert_eq!(order_view["state"]["status"], "created");
    assert_history(&order_view, &[("Create", "absent", "created", 0)]);
    assert_eq!(
        order_view["transitions"][0]["requestId"],
        request_id.as_str()
    );
    assert_eq!(
        order_view["transitions"][0]["events"],
        json!([format!("order.created:{order_id}:0")])
    );

    // The payment.
    let paid = app.pay(&buyer, &order_id, "tok_visa").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let order_now = app.order_json(&buyer, &order_id).await;
    assert_eq!(order_now["status"], "complete");
    let ticket_now = app.ticket_json(&ticket_id).await;
    let order_view = actor_view(&app, "order", &order_id).await;
    assert_history(
        &order_view,
        &[
            ("Create", "absent", "created", 0),
            ("Pay", "created", "awaiting:payment", 1),
            ("PaymentSucceeded", "awaiting:payment", "complete", 2),
        ],
    );
    assert_eq!(order_view["version"], order_now["version"]);
    assert_eq!(order_view["state"], order_now);
    let completed = order_view["transitions"][2]["events"].as_array().unwrap();
    assert!(
        completed.contains(&json!(format!("order.completed:{order_id}:2"))),
        "{completed:?}"
    );
    let ticket_view = actor_view(&app, "ticket", &ticket_id).await;
    assert_history(
        &ticket_view,
        &[
            ("Create", "absent", "available", 0),
            ("Reserve", "available", "reserved", 1),
            ("MarkSold", "reserved", "sold", 2),
        ],
    );
    assert_eq!(ticket_view["version"], ticket_now["version"]);
}

#[tokio::test]
async fn an_expiry_appears_in_the_ticket_and_order_histories() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--order-ttl", "1s"])).await;
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "fleeting", json!(3)).await;
    let ticket_id = ticket["id"].as_str().unwrap().to_string();
    let order = app.order_ok(&buyer, &ticket_id).await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let cancelled = app
        .wait_for_order_status(&buyer, &order_id, "cancelled", Duration::from_secs(20))
        .await;
    let order_view = actor_view(&app, "order", &order_id).await;
    assert_history(
        &order_view,
        &[
            ("Create", "absent", "created", 0),
            ("Expire", "created", "cancelled", 1),
        ],
    );
    assert_eq!(order_view["version"], cancelled["version"]);
    assert!(
        order_view["transitions"][1]["events"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("order.cancelled:{order_id}:1"))),
        "{order_view:#}"
    );
    // The ticket is released by the order's command right after the order's change is durable.
    let released = app
        .eventually(
            "the ticket to be released",
            Duration::from_secs(20),
            || async {
                let ticket = app.ticket_json(&ticket_id).await;
                ticket["orderId"].is_null().then_some(ticket)
            },
        )
        .await;
    assert_eq!(released["version"], json!(2));
    let ticket_view = actor_view(&app, "ticket", &ticket_id).await;
    assert_history(
        &ticket_view,
        &[
            ("Create", "absent", "available", 0),
            ("Reserve", "available", "reserved", 1),
            ("Release", "reserved", "available", 2),
        ],
    );
    assert_eq!(ticket_view["state"], released);
}

/// Reads the tail until `is_done` holds for the frames seen so far, or panics after a deadline.
/// Frames are `(event, data)`.
pub(crate) async fn read_tail_until(
    response: &mut reqwest::Response,
    what: &str,
    mut is_done: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buffer = String::new();
    let mut frames = Vec::new();
    while !is_done(&frames) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; frames: {frames:#?}"))
            .expect("the stream stays open")
            .expect("the stream does not end");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut event = String::from("message");
            let mut data = Vec::new();
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                let data = serde_json::from_str(&data.join("\n")).expect("JSON data");
                frames.push((event, data));
            }
        }
    }
    frames
}

pub(crate) async fn open_tail(app: &Api) -> reqwest::Response {
    let response = app
        .client
        .get(app.url("/admin/api/tail"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

/// Opens the tail on every node (each carries every node's events and transitions).
async fn open_tails(app: &Api) -> Vec<reqwest::Response> {
    let mut tails = Vec::new();
    for node in app.nodes() {
        tails.push(open_tail(&node).await);
    }
    tails
}

/// Reads the tail of the node hosting the ticket until it has shown the ticket's creation
/// (its event and its transition).
async fn ticket_creation_frames(
    app: &Api,
    tails: &mut [reqwest::Response],
    ticket_id: &str,
) -> Vec<(String, Value)> {
    let host = app.owner_index("ticket", ticket_id).await;
    read_tail_until(
        &mut tails[host],
        "the ticket's event and transition",
        |frames| is_created_ticket_frame(frames, ticket_id),
    )
    .await
}

fn is_created_ticket_frame(frames: &[(String, Value)], ticket_id: &str) -> bool {
    let has_event = frames.iter().any(|(event, data)| {
        event == "event" && data["name"] == "ticket.created" && data["data"]["id"] == ticket_id
    });
    let has_transition = frames.iter().any(|(event, data)| {
        event == "transition"
            && data["id"] == ticket_id
            && data["transition"]["message"] == "Create"
    });
    has_event && has_transition
}

#[tokio::test]
async fn the_tail_streams_events_and_transitions_as_they_happen() {
    let app = TestApp::spawn().await;
    let owner = app.new_user().await;
    let mut tails = open_tails(&app).await;
    let ticket = app.create_ticket(&owner, "streamed", json!(8)).await;
    let ticket_id = ticket["id"].as_str().unwrap().to_string();
    let frames = ticket_creation_frames(&app, &mut tails, &ticket_id).await;
    let (_, event) = frames
        .iter()
        .find(|(event, data)| event == "event" && data["data"]["id"] == ticket_id.as_str())
        .unwrap();
    assert_keys(event, &EVENT_KEYS);
    parse_time(&event["at"]);
    assert_eq!(event["id"], format!("ticket.created:{ticket_id}:0"));
    assert_eq!(event["data"]["title"], "streamed");
    let (_, notice) = frames
        .iter()
        .find(|(event, data)| event == "transition" && data["id"] == ticket_id.as_str())
        .unwrap();
    assert_keys(notice, &["kind", "id", "transition"]);
    assert_eq!(notice["kind"], "ticket");
    let transition = &notice["transition"];
    assert_keys(transition, &TRANSITION_KEYS);
    parse_time(&transition["at"]);
    assert_eq!(transition["version"], json!(0));
    assert_eq!(
        transition,
        &actor_view(&app, "ticket", &ticket_id).await["transitions"][0],
        "the tail shows the transition as the history keeps it"
    );
}

/// On one embedded process, events committed while no tail is open are passed over by the relay
/// (the in-process bus has nobody to deliver them to); a tail opened afterwards streams what
/// happens after it, and nothing from before. (In a cluster every node relays the outbox, so a
/// later node's re-publication of an older event can reach a new tail: embedded-only.)
#[tokio::test]
async fn a_tail_opened_later_streams_only_what_happens_after_it() {
    let app = TestApp::spawn().await;
    let owner = app.new_user().await;
    let before = app.create_ticket(&owner, "before", json!(8)).await;
    app.eventually(
        "the relay to pass the first event",
        Duration::from_secs(30),
        || async {
            let mut published = 0;
            for node in app.nodes() {
                let metrics = node.get("/metrics", &Auth::None).await.text;
                published += metrics
                    .lines()
                    .find_map(|line| line.strip_prefix("boxoffice_events_published_total "))
                    .and_then(|count| count.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
            (published >= 1).then_some(())
        },
    )
    .await;
    let mut tails = open_tails(&app).await;
    let after = app.create_ticket(&owner, "after", json!(9)).await;
    let after_id = after["id"].as_str().unwrap();
    let frames = ticket_creation_frames(&app, &mut tails, after_id).await;
    assert!(
        !frames
            .iter()
            .any(|(_, data)| data["data"]["id"] == before["id"] || data["id"] == before["id"]),
        "nothing from before the tail opened: {frames:?}"
    );
}

/// The body of every admin API answer about the given ticket and order, and of the page's files.
async fn admin_texts(app: &TestApp, ticket_id: &str, order_id: &str) -> Vec<(String, String)> {
    let mut paths = vec![
        "/admin/api/cluster".to_string(),
        "/admin/api/shard-moves".to_string(),
        "/admin/api/events?limit=1000".to_string(),
        "/admin/api/actors".to_string(),
        format!("/admin/api/actors/ticket/{ticket_id}"),
        format!("/admin/api/actors/order/{order_id}"),
        "/admin".to_string(),
    ];
    paths.extend(ASSETS.iter().map(|asset| format!("/admin/assets/{asset}")));
    let mut texts = Vec::new();
    for path in paths {
        let response = app.get(&path, &Auth::Admin).await;
        assert_eq!(response.status, StatusCode::OK, "{path}: {response:?}");
        texts.push((path, response.text));
    }
    texts
}

#[tokio::test]
async fn admin_responses_carry_no_secrets() {
    let app = TestApp::spawn_with(AppOptions::with_args(&[
        "--stripe-key",
        "sk_test_x",
        "--stripe-api-base",
        "http://127.0.0.1:9",
    ]))
    .await;
    let mut tails = open_tails(&app).await;
    let password = "correct-horse-1";
    let seller: User = app
        .signup(
            &format!("seller-{}@example.com", uuid::Uuid::new_v4().simple()),
            password,
        )
        .await;
    let buyer = app.new_user().await;
    let ticket = app.create_ticket(&seller, "secretive", json!(10)).await;
    let ticket_id = ticket["id"].as_str().unwrap().to_string();
    let order = app.order_ok(&buyer, &ticket_id).await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let frames = ticket_creation_frames(&app, &mut tails, &ticket_id).await;

    let mut texts = admin_texts(&app, &ticket_id, &order_id).await;
    texts.push((
        "/admin/api/tail".to_string(),
        frames
            .iter()
            .map(|(event, data)| format!("{event} {data}"))
            .collect::<Vec<_>>()
            .join("\n"),
    ));
    let secrets = [
        ("a password hash", "$argon2".to_string()),
        ("a password hash", "argon2id".to_string()),
        ("the password", password.to_string()),
        ("the JWT key", JWT_KEY.to_string()),
        ("the admin token", ADMIN_TOKEN.to_string()),
        ("the Stripe key", "sk_test_x".to_string()),
        ("a session token", seller.token.clone()),
        ("a session token", buyer.token.clone()),
        ("a session cookie", seller.session.clone()),
    ];
    for (path, text) in &texts {
        assert!(!text.is_empty(), "{path} answered nothing");
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{path} shows {what}:\n{text}"
            );
        }
    }
    let log = app.log();
    assert!(!log.contains("sk_test_x"), "the Stripe key is never logged");
}

#[tokio::test]
async fn the_page_is_a_data_free_shell_under_a_strict_security_policy() {
    let app = TestApp::spawn().await;
    let owner = app.new_user().await;
    app.create_ticket(&owner, "Only through the API", json!(10))
        .await;
    let node_id = app.get("/admin/api/cluster", &Auth::Admin).await.body["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut files = vec![
        ("/admin".to_string(), "text/html; charset=utf-8"),
        ("/admin/".to_string(), "text/html; charset=utf-8"),
    ];
    for asset in ASSETS {
        let content_type = if asset.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        files.push((format!("/admin/assets/{asset}"), content_type));
    }
    for (path, content_type) in &files {
        // No token: the page and its assets are public, and hold nothing worth a token.
        let response = app.get(path, &Auth::None).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers
                .get(name)
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("{path} has no {name}"))
        };
        assert_eq!(header("content-type"), *content_type, "{path}");
        assert_eq!(
            header("content-security-policy"),
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        for data in [
            "Only through the API",
            node_id.as_str(),
            ADMIN_TOKEN,
            &owner.id,
        ] {
            assert!(!response.text.contains(data), "{path} embeds {data}");
        }

        // Revalidation is a 304 without a body, still under the policy.
        let etag = header("etag");
        let revalidated = app
            .client
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(
            revalidated.headers()["content-security-policy"],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(revalidated.headers()["etag"], etag.as_str());
        assert!(revalidated.bytes().await.unwrap().is_empty());
    }

    let shell = app.get("/admin", &Auth::None).await.text;
    for asset in ["/admin/assets/app.js", "/admin/assets/style.css"] {
        assert!(shell.contains(asset), "the shell loads {asset}");
    }
    assert!(
        !shell.contains("<script>") && !shell.contains("<style"),
        "nothing inline"
    );

    for missing in [
        "/admin/assets/nope.js",
        "/admin/assets/..%2FCargo.toml",
        "/admin/assets/index.html",
    ] {
        let response = app.get(missing, &Auth::None).await;
        response.assert_error(StatusCode::NOT_FOUND, "Not Found");
        assert_eq!(
            response.headers["content-security-policy"], CONTENT_SECURITY_POLICY,
            "{missing}"
        );
    }
}
