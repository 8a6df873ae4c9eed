//! The admin API answers for the whole cluster, whichever node is asked: live actors are
//! gathered from every member and page across them by id, an actor's live part comes from the
//! node serving its shard and its history from the store, the tail carries every node's
//! transitions, the shard moves of every node are listed newest first, and a member that does
//! not answer in time is named in `unreachable` rather than left out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{TRANSITION_KEYS, assert_keys, open_tail, read_tail_until};
use crate::cluster_mode::TestCluster;
use crate::harness::{Auth, TestApp};

/// The keys of a shard move.
const MOVE_KEYS: [&str; 11] = [
    "kind",
    "shard",
    "from",
    "to",
    "reason",
    "fromEpoch",
    "toEpoch",
    "at",
    "drainMs",
    "drained",
    "refused",
];

async fn admin_get(node: &TestApp, path: &str) -> Value {
    let response = node.get(path, &Auth::Admin).await;
    assert_eq!(response.status, StatusCode::OK, "{path}: {response:?}");
    response.body
}

/// The owner of each ticket shard, as the leases show it.
async fn ticket_shard_owners(node: &TestApp) -> BTreeMap<u64, String> {
    let view = admin_get(node, "/admin/api/cluster").await;
    view["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|shard| shard["kind"] == "ticket")
        .map(|shard| {
            (
                shard["shard"].as_u64().unwrap(),
                shard["owner"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every live actor of `kind` as `node` lists them, following `next` with pages of `limit`.
async fn all_live_actors(node: &TestApp, kind: &str, limit: usize) -> Vec<Value> {
    let mut actors = Vec::new();
    let mut after = String::new();
    loop {
        let page = admin_get(
            node,
            &format!("/admin/api/actors?kind={kind}&limit={limit}&after={after}"),
        )
        .await;
        assert_eq!(page["unreachable"], json!([]), "{page:#}");
        let items = page["actors"].as_array().unwrap();
        assert!(items.len() <= limit, "{page:#}");
        actors.extend(items.iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => return actors,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_lists_and_shows_actors_that_live_on_the_others() {
    let cluster = TestCluster::start(3, &[]).await;
    let seller = cluster.node(0).new_user().await;
    let buyer = cluster.node(0).new_user().await;
    let owners = ticket_shard_owners(cluster.node(0)).await;
    let mut tail = open_tail(cluster.node(1)).await;

    // Tickets created through node 0, one living on node 1 and one on node 2.
    let mut remote = Vec::new();
    for host in ["node-1", "node-2"] {
        let ticket = ticket_on(&cluster, &seller, host).await;
        let id = ticket["id"].as_str().unwrap().to_string();
        let view = admin_get(cluster.node(1), &format!("/admin/api/actors/ticket/{id}")).await;
        assert_eq!(
            owners[&view["shard"].as_u64().unwrap()],
            host,
            "the view names the owner of the shard's lease"
        );
        remote.push((host.to_string(), id));
    }

    // Reserved through node 0.
    let mut orders = BTreeMap::new();
    for (_, ticket_id) in &remote {
        let order = cluster.node(0).order(&buyer, ticket_id).await;
        assert_eq!(order.status, StatusCode::CREATED, "{order:?}");
        orders.insert(
            ticket_id.clone(),
            order.body["id"].as_str().unwrap().to_string(),
        );
    }

    // Node 1 lists both, each with the node that hosts it, paging across the nodes by id.
    let listed = all_live_actors(cluster.node(1), "ticket", 1000).await;
    let listed_ids: Vec<&str> = listed
        .iter()
        .map(|actor| actor["id"].as_str().unwrap())
        .collect();
    let mut sorted = listed_ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(listed_ids, sorted, "ordered by id, each once");
    let hosts: BTreeSet<&str> = listed
        .iter()
        .map(|actor| actor["node"].as_str().unwrap())
        .collect();
    assert!(hosts.len() >= 2, "gathered from several nodes: {hosts:?}");
    for (host, ticket_id) in &remote {
        let actor = listed
            .iter()
            .find(|actor| actor["id"] == ticket_id.as_str())
            .unwrap_or_else(|| panic!("{ticket_id} (on {host}) not listed: {listed:#?}"));
        assert_eq!(actor["node"], host.as_str(), "{actor}");
        assert_eq!(actor["status"], "reserved", "{actor}");
        assert_eq!(actor["version"], json!(1), "{actor}");
    }
    let paged = all_live_actors(cluster.node(1), "ticket", 1).await;
    assert_eq!(paged, listed, "pages of one give the same list");
    let listed_orders: BTreeSet<String> = all_live_actors(cluster.node(2), "order", 1000)
        .await
        .iter()
        .map(|actor| actor["id"].as_str().unwrap().to_string())
        .collect();
    for order_id in orders.values() {
        assert!(listed_orders.contains(order_id), "{order_id} not listed");
    }

    // Node 2 shows each: the live part from its host, state and history from the store.
    for (host, ticket_id) in &remote {
        let view = admin_get(
            cluster.node(2),
            &format!("/admin/api/actors/ticket/{ticket_id}"),
        )
        .await;
        assert_eq!(view["node"], host.as_str(), "{view:#}");
        assert_eq!(view["status"], "active", "{view:#}");
        assert_eq!(view["unreachable"], json!([]));
        assert_eq!(view["mailboxDepth"], json!(0));
        assert_eq!(view["quarantined"], json!(false));
        assert_eq!(view["state"]["orderId"], orders[ticket_id].as_str());
        assert_eq!(view["version"], json!(1));
        let steps: Vec<(Value, Value)> = view["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|transition| {
                assert_keys(transition, &TRANSITION_KEYS);
                (transition["message"].clone(), transition["version"].clone())
            })
            .collect();
        assert_eq!(
            steps,
            [(json!("Create"), json!(0)), (json!("Reserve"), json!(1))],
            "{view:#}"
        );
    }

    // Node 1's tail carried the transitions of the actors on node 2 as well as its own.
    read_tail_until(&mut tail, "both reservations on node 1's tail", |frames| {
        remote.iter().all(|(_, ticket_id)| {
            frames.iter().any(|(event, data)| {
                event == "transition"
                    && data["id"] == ticket_id.as_str()
                    && data["transition"]["message"] == "Reserve"
                    && data["transition"]["version"] == json!(1)
            })
        })
    })
    .await;
}

/// A ticket created through node 0 whose shard `host` serves.
async fn ticket_on(cluster: &TestCluster, seller: &crate::harness::User, host: &str) -> Value {
    for n in 0..60 {
        let ticket = cluster
            .node(0)
            .create_ticket(seller, &format!("on {host} {n}"), json!(6))
            .await;
        let path = format!(
            "/admin/api/actors/ticket/{}",
            ticket["id"].as_str().unwrap()
        );
        if admin_get(cluster.node(0), &path).await["node"] == host {
            return ticket;
        }
    }
    panic!("no ticket landed on {host}");
}

/// Waits until `node` lists moves satisfying `is_done`, then checks their shape and order.
async fn moves_until(node: &TestApp, what: &str, is_done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let moves = node
        .eventually(what, Duration::from_secs(60), || async {
            let body = admin_get(node, "/admin/api/shard-moves?limit=500").await;
            let moves = body["moves"].as_array().unwrap().clone();
            (body["unreachable"] == json!([]) && is_done(&moves)).then_some(moves)
        })
        .await;
    for shard_move in &moves {
        assert_keys(shard_move, &MOVE_KEYS);
    }
    let times: Vec<_> = moves
        .iter()
        .map(|shard_move| crate::harness::parse_time(&shard_move["at"]))
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first: {moves:#?}"
    );
    moves
}

fn has_move(moves: &[Value], reason: &str, from: Option<&str>, to: Option<&str>) -> bool {
    moves.iter().any(|shard_move| {
        shard_move["reason"] == reason
            && shard_move["from"] == json!(from)
            && shard_move["to"] == json!(to)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_nodes_shard_moves_and_passivated_actors_show_from_any_node() {
    let mut cluster = TestCluster::start(2, &["--passivate-after", "1s"]).await;

    // Each node recorded its own acquisitions; either node lists both nodes'.
    for asked in 0..2 {
        moves_until(cluster.node(asked), "both nodes' acquisitions", |moves| {
            has_move(moves, "acquired", None, Some("node-0"))
                && has_move(moves, "acquired", None, Some("node-1"))
        })
        .await;
    }

    // A passivated actor is shown as such, from the store, without being activated.
    let seller = cluster.node(0).new_user().await;
    let ticket = cluster
        .node(0)
        .create_ticket(&seller, "idle", json!(4))
        .await;
    let ticket_id = ticket["id"].as_str().unwrap().to_string();
    let path = format!("/admin/api/actors/ticket/{ticket_id}");
    let view = cluster
        .node(1)
        .eventually(
            "the actor to be passivated",
            Duration::from_secs(30),
            || async {
                let view = admin_get(cluster.node(1), &path).await;
                (view["status"] == "passivated").then_some(view)
            },
        )
        .await;
    assert_eq!(view["state"], ticket);
    assert_eq!(view["transitions"].as_array().unwrap().len(), 1, "{view:#}");
    assert_eq!(view["unreachable"], json!([]));
    let listed = admin_get(cluster.node(0), "/admin/api/actors?kind=ticket").await;
    assert!(
        !listed["actors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|actor| actor["id"] == ticket_id.as_str()),
        "looking did not activate it: {listed:#}"
    );

    // A node joins: the others hand shards over to it, and every node lists every side.
    cluster.add_node().await;
    cluster.until_ready().await;
    for asked in 0..3 {
        moves_until(cluster.node(asked), "the hand-overs to node 2", |moves| {
            has_move(moves, "acquired", None, Some("node-2"))
                && has_move(moves, "rebalance", Some("node-0"), Some("node-2"))
                && has_move(moves, "rebalance", Some("node-1"), Some("node-2"))
        })
        .await;
    }
    let moves = moves_until(cluster.node(2), "a hand-over's epochs", |moves| {
        moves
            .iter()
            .any(|shard_move| shard_move["reason"] == "rebalance")
    })
    .await;
    let handed = moves
        .iter()
        .find(|shard_move| shard_move["reason"] == "rebalance")
        .unwrap();
    assert!(handed["fromEpoch"].as_u64().unwrap() >= 1, "{handed}");
    assert!(handed["drainMs"].is_u64(), "{handed}");

    // A frozen member is named, and the others still answer.
    let on_node_1 = ticket_on(&cluster, &seller, "node-1").await;
    // (Asked at once, well before its membership and leases expire.)
    cluster.nodes[1].pause();
    let view_path = format!(
        "/admin/api/actors/ticket/{}",
        on_node_1["id"].as_str().unwrap()
    );
    let (listed, moves, view) = tokio::join!(
        cluster.node(0).get("/admin/api/actors", &Auth::Admin),
        cluster.node(2).get("/admin/api/shard-moves", &Auth::Admin),
        cluster.node(2).get(&view_path, &Auth::Admin),
    );
    cluster.nodes[1].resume();
    assert_eq!(view.status, StatusCode::OK, "{view:?}");
    assert_eq!(view.body["unreachable"], json!(["node-1"]), "{view:?}");
    assert_eq!(view.body["node"], "node-1");
    assert_eq!(view.body["status"], "unknown", "{view:?}");
    assert_eq!(view.body["mailboxDepth"], Value::Null);
    assert_eq!(
        view.body["state"], on_node_1,
        "the stored part is still shown"
    );
    assert_eq!(view.body["transitions"].as_array().unwrap().len(), 1);
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(listed.body["unreachable"], json!(["node-1"]), "{listed:?}");
    assert_eq!(moves.status, StatusCode::OK, "{moves:?}");
    assert_eq!(moves.body["unreachable"], json!(["node-1"]), "{moves:?}");
    assert!(
        has_move(
            moves.body["moves"].as_array().unwrap(),
            "acquired",
            None,
            Some("node-2")
        ),
        "the answering nodes' moves are still listed: {moves:?}"
    );
}
