//! Crashes and stops with requests in flight: every acknowledged (2xx) write survives a SIGKILL
//! or a SIGTERM and a restart on the same data directory, and nothing is half-applied (a ticket
//! and the order holding it always agree).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Api, Auth, Response, TestApp, User};

/// One write of the storm.
#[derive(Clone, Debug)]
enum Operation {
    Create {
        user: usize,
        title: String,
        price: u64,
    },
    Update {
        user: usize,
        ticket: String,
        title: String,
        price: u64,
    },
    Order {
        user: usize,
        ticket: String,
    },
    Cancel {
        user: usize,
        order: String,
    },
}

/// What the client saw: a response, or a transport error (the server died under it).
#[derive(Debug)]
struct Outcome {
    operation: Operation,
    response: Option<Response>,
}

impl Outcome {
    /// The response when it was a success (2xx).
    fn acknowledged(&self) -> Option<&Response> {
        self.response.as_ref().filter(|r| r.status.is_success())
    }
}

/// The state made before the storm.
struct Seed {
    users: Vec<User>,
    /// Tickets the storm updates, with their owner and original title.
    update_targets: Vec<(String, usize, String)>,
    /// Tickets the storm orders, with their owner.
    order_targets: Vec<(String, usize)>,
    /// Orders made before the storm that it cancels: (buyer, order id, ticket id, ticket owner).
    preorders: Vec<(usize, String, String, usize)>,
}

const USERS: usize = 6;

async fn seed(app: &TestApp, tickets_per_group: usize) -> Seed {
    let users = app.new_users(USERS).await;
    let mut update_targets = Vec::new();
    let mut order_targets = Vec::new();
    let mut preorders = Vec::new();
    for index in 0..tickets_per_group {
        let owner = index % USERS;
        let title = format!("updatable {index}");
        let ticket = app.create_ticket(&users[owner], &title, json!(10)).await;
        update_targets.push((id(&ticket), owner, title));

        let ticket = app
            .create_ticket(&users[owner], &format!("orderable {index}"), json!(20))
            .await;
        order_targets.push((id(&ticket), owner));

        let ticket = app
            .create_ticket(&users[owner], &format!("preordered {index}"), json!(30))
            .await;
        let buyer = (owner + 1) % USERS;
        let order = app.order_ok(&users[buyer], &id(&ticket)).await;
        preorders.push((buyer, id(&order), id(&ticket), owner));
    }
    Seed {
        users,
        update_targets,
        order_targets,
        preorders,
    }
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_string()
}

/// The storm's writes, interleaved: creates, updates of the update targets, orders (several
/// buyers per ticket), cancels of the pre-orders and orders racing those cancels.
fn storm(seed: &Seed, creates: usize, updates: usize) -> Vec<Operation> {
    let mut operations = Vec::new();
    for index in 0..creates {
        operations.push(Operation::Create {
            user: index % USERS,
            title: format!("created {index}"),
            price: 1 + index as u64,
        });
    }
    for index in 0..updates {
        let (ticket, owner, _) = &seed.update_targets[index % seed.update_targets.len()];
        operations.push(Operation::Update {
            user: *owner,
            ticket: ticket.clone(),
            title: format!("update {index}"),
            price: 100 + index as u64,
        });
    }
    for (ticket, owner) in &seed.order_targets {
        for step in 1..=3 {
            operations.push(Operation::Order {
                user: (owner + step) % USERS,
                ticket: ticket.clone(),
            });
        }
    }
    for (buyer, order, ticket, owner) in &seed.preorders {
        operations.push(Operation::Cancel {
            user: *buyer,
            order: order.clone(),
        });
        for step in 2..=3 {
            operations.push(Operation::Order {
                user: (owner + step) % USERS,
                ticket: ticket.clone(),
            });
        }
    }
    // A fixed permutation (multiplying by a number coprime with the length) mixes the kinds.
    let length = operations.len();
    let stride = (7919..).find(|s| gcd(*s, length) == 1).unwrap();
    (0..length)
        .map(|k| operations[(k * stride) % length].clone())
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

async fn send(api: &Api, users: &[User], operation: &Operation) -> Option<Response> {
    let (method, path, user, body) = match operation {
        Operation::Create { user, title, price } => (
            Method::POST,
            "/api/tickets".to_string(),
            user,
            Some(json!({"title": title, "price": price})),
        ),
        Operation::Update {
            user,
            ticket,
            title,
            price,
        } => (
            Method::PUT,
            format!("/api/tickets/{ticket}"),
            user,
            Some(json!({"title": title, "price": price})),
        ),
        Operation::Order { user, ticket } => (
            Method::POST,
            "/api/orders".to_string(),
            user,
            Some(json!({"ticketId": ticket})),
        ),
        Operation::Cancel { user, order } => {
            (Method::DELETE, format!("/api/orders/{order}"), user, None)
        }
    };
    api.try_request(method, &path, &users[*user].bearer(), body.as_ref())
        .await
        .ok()
}

/// Launches every operation at once and, once `stop_after` have answered, stops the server with
/// `stop` (which must not return before the process is gone); returns every outcome.
async fn storm_and_stop(
    app: &mut TestApp,
    seed: &Seed,
    operations: Vec<Operation>,
    stop_after: usize,
    stop: impl FnOnce(&mut TestApp),
) -> Vec<Outcome> {
    let api = app.api();
    let users = Arc::new(seed.users.clone());
    let answered = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = operations
        .into_iter()
        .map(|operation| {
            let api = api.clone();
            let users = users.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let response = send(&api, &users, &operation).await;
                answered.fetch_add(1, Ordering::SeqCst);
                Outcome {
                    operation,
                    response,
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::SeqCst) < stop_after {
        assert!(
            Instant::now() < deadline,
            "the storm stalled; log:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop(app);

    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("storm task"));
    }
    outcomes
}

/// Every response the server gave is one the contract allows for that request.
fn check_responses(outcomes: &[Outcome]) {
    for outcome in outcomes {
        let Some(response) = &outcome.response else {
            continue;
        };
        if response.status == StatusCode::SERVICE_UNAVAILABLE {
            response.assert_error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
            continue;
        }
        match &outcome.operation {
            Operation::Create { .. } => {
                assert_eq!(response.status, StatusCode::CREATED, "{outcome:?}")
            }
            Operation::Update { .. } => assert_eq!(response.status, StatusCode::OK, "{outcome:?}"),
            Operation::Order { .. } => {
                if response.status != StatusCode::CREATED {
                    response.assert_error(StatusCode::BAD_REQUEST, "Ticket is already reserved");
                }
            }
            Operation::Cancel { .. } => {
                assert_eq!(response.status, StatusCode::NO_CONTENT, "{outcome:?}")
            }
        }
    }
}

/// After the restart: every acknowledged write is visible, and tickets and orders agree.
async fn check_durable(app: &TestApp, seed: &Seed, outcomes: &[Outcome]) {
    check_responses(outcomes);
    // Acknowledged creates exist as created.
    for outcome in outcomes {
        if let (Operation::Create { user, title, price }, Some(response)) =
            (&outcome.operation, outcome.acknowledged())
        {
            let ticket = app.ticket_json(response.body["id"].as_str().unwrap()).await;
            assert_eq!(ticket["title"], title.as_str(), "{ticket}");
            assert_eq!(ticket["price"].as_f64(), Some(*price as f64), "{ticket}");
            assert_eq!(ticket["userId"], seed.users[*user].id.as_str());
            assert_eq!(ticket["version"], 0, "nothing else wrote it: {ticket}");
        }
    }

    // Acknowledged updates: the ticket has at least their version, and exactly their content
    // when it is at the last acknowledged version.
    for (ticket_id, _, original_title) in &seed.update_targets {
        let attempted: HashMap<&str, u64> = outcomes
            .iter()
            .filter_map(|o| match &o.operation {
                Operation::Update {
                    ticket,
                    title,
                    price,
                    ..
                } if ticket == ticket_id => Some((title.as_str(), *price)),
                _ => None,
            })
            .collect();
        let acknowledged: Vec<(u64, &str, u64)> = outcomes
            .iter()
            .filter_map(|o| match (&o.operation, o.acknowledged()) {
                (
                    Operation::Update {
                        ticket,
                        title,
                        price,
                        ..
                    },
                    Some(response),
                ) if ticket == ticket_id => {
                    assert_eq!(response.body["title"], title.as_str(), "{o:?}");
                    Some((
                        response.body["version"].as_u64().unwrap(),
                        title.as_str(),
                        *price,
                    ))
                }
                _ => None,
            })
            .collect();
        let versions: HashSet<u64> = acknowledged.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(
            versions.len(),
            acknowledged.len(),
            "no version given twice: {acknowledged:?}"
        );

        let current = app.ticket_json(ticket_id).await;
        let version = current["version"].as_u64().unwrap();
        let title = current["title"].as_str().unwrap();
        assert!(
            version as usize >= acknowledged.len() && version as usize <= attempted.len(),
            "every acknowledged update applied, none invented: {current} {acknowledged:?}"
        );
        match acknowledged.iter().max() {
            Some((last, last_title, last_price)) => {
                assert!(
                    version >= *last,
                    "acknowledged version {last} lost: {current}"
                );
                if version == *last {
                    assert_eq!(title, *last_title, "{current}");
                    assert_eq!(current["price"].as_f64(), Some(*last_price as f64));
                } else {
                    assert!(attempted.contains_key(title), "{current}");
                }
            }
            None => assert!(
                title == original_title || attempted.contains_key(title),
                "{current}"
            ),
        }
        if let Some(price) = attempted.get(title) {
            assert_eq!(current["price"].as_f64(), Some(*price as f64), "{current}");
        }
    }

    // Acknowledged orders exist (nobody pays and the TTL is long: still created unless a cancel
    // targeted them), acknowledged cancels are cancelled.
    let orders = all_orders(app, seed).await;
    for (_, order_id, _, _) in &seed.preorders {
        assert!(
            orders.contains_key(order_id),
            "pre-order {order_id} survives"
        );
    }
    for outcome in outcomes {
        match (&outcome.operation, outcome.acknowledged()) {
            (Operation::Order { user, ticket }, Some(response)) => {
                let order = orders
                    .get(response.body["id"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("acknowledged order lost: {outcome:?}"));
                assert_eq!(order["status"], "created", "{order}");
                assert_eq!(order["ticket"]["id"], ticket.as_str(), "{order}");
                assert_eq!(order["userId"], seed.users[*user].id.as_str());
            }
            (Operation::Cancel { order, .. }, Some(_)) => {
                assert_eq!(
                    orders[order]["status"], "cancelled",
                    "acknowledged cancel lost"
                );
            }
            _ => {}
        }
    }

    // Ticket and order agree, once any recovery the restart does is over: a live order's ticket
    // shows it, and no ticket points at a cancelled or unknown order. At most one live order per
    // ticket holds at every look, recovery or not.
    let tickets: Vec<String> = seed
        .order_targets
        .iter()
        .map(|(t, _)| t.clone())
        .chain(seed.preorders.iter().map(|(_, _, t, _)| t.clone()))
        .chain(seed.update_targets.iter().map(|(t, _, _)| t.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let orders = all_orders(app, seed).await;
        let mut holders: HashMap<String, Vec<String>> = HashMap::new();
        for (order_id, order) in &orders {
            assert_ne!(order["status"], "awaiting:payment", "nobody paid: {order}");
            if order["status"] != "cancelled" {
                holders
                    .entry(order["ticket"]["id"].as_str().unwrap().to_string())
                    .or_default()
                    .push(order_id.clone());
            }
        }
        for (ticket, holding) in &holders {
            assert_eq!(holding.len(), 1, "ticket {ticket} held by {holding:?}");
        }
        let mut disagreements = Vec::new();
        for ticket_id in &tickets {
            let ticket = app.ticket_json(ticket_id).await;
            let holder = holders.get(ticket_id).map(|h| h[0].as_str());
            if ticket["orderId"].as_str() != holder {
                let pointed = ticket["orderId"]
                    .as_str()
                    .map(|o| orders.get(o).map(|o| &o["status"]));
                disagreements.push(format!(
                    "{ticket}: live order {holder:?}, its orderId's order status {pointed:?}"
                ));
            }
        }
        if disagreements.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tickets and orders disagree:\n{}\nserver log:\n{}",
            disagreements.join("\n"),
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every order of every seeded user, by id.
async fn all_orders(app: &TestApp, seed: &Seed) -> HashMap<String, Value> {
    let mut orders = HashMap::new();
    for user in &seed.users {
        let response = app.get("/api/orders", &user.bearer()).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        for order in response.body.as_array().unwrap() {
            assert_eq!(order["userId"], user.id.as_str(), "{order}");
            orders.insert(id(order), order.clone());
        }
    }
    orders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_sigkill_mid_storm() {
    let mut app = TestApp::spawn().await;
    let seed = seed(&app, 20).await;
    let operations = storm(&seed, 100, 80);
    assert_eq!(operations.len(), 300);
    let half = operations.len() / 2;
    let outcomes = storm_and_stop(&mut app, &seed, operations, half, TestApp::kill).await;
    let answered = outcomes.iter().filter(|o| o.response.is_some()).count();
    assert!(answered >= half, "{answered} answered before the kill");

    app.restart(&[]).await;
    check_durable(&app, &seed, &outcomes).await;
    app.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigterm_mid_storm_exits_0_and_keeps_every_acknowledged_write() {
    let mut app = TestApp::spawn().await;
    let seed = seed(&app, 10).await;
    let operations = storm(&seed, 50, 40);
    let third = operations.len() / 3;
    let outcomes = storm_and_stop(&mut app, &seed, operations, third, |app| {
        let status = tokio::task::block_in_place(|| app.terminate());
        assert!(
            status.success(),
            "SIGTERM exits 0: {status:?}\n{}",
            app.log()
        );
    })
    .await;

    app.restart(&[]).await;
    check_durable(&app, &seed, &outcomes).await;
    app.assert_healthy().await;
}

#[tokio::test]
async fn a_sigterm_when_idle_keeps_everything() {
    let mut app = TestApp::spawn().await;
    let user = app.new_user().await;
    let ticket = app.create_ticket(&user, "persisted", json!(12.5)).await;
    let status = app.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    app.restart(&[]).await;
    assert_eq!(app.ticket_json(&id(&ticket)).await, ticket);
    // The session issued before the restart is still valid (same JWT key).
    let response = app.get("/api/users/currentuser", &user.cookie()).await;
    assert_eq!(response.body["currentUser"]["id"], user.id.as_str());
    let response = app
        .post(
            "/api/users/signin",
            &Auth::None,
            &json!({"email": user.email, "password": "password"}),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "users survive: {response:?}"
    );
}
