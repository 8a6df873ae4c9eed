//! `boxoffice serve --nats --mongo --redis`: three node processes on real NATS, Redis and
//! MongoDB-wire servers form one platform.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Auth, TestApp, User, start_cluster_nodes};
use crate::servers::{nats_url, unique_name};

/// A cluster of node processes sharing one cluster name and database, each its own `TestApp`
/// (so a fault test can kill, pause or restart one). The behavioural suite's cluster deployment
/// (`BOXOFFICE_TEST_DEPLOYMENT=cluster`) starts its nodes the same way (`start_cluster_nodes`).
pub struct TestCluster {
    pub nodes: Vec<TestApp>,
    name: String,
    nats: String,
    extra: Vec<String>,
}

impl TestCluster {
    /// Starts `count` nodes and waits until every one is ready (joined, serving its shards).
    pub async fn start(count: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_on(count, &nats_url(), extra).await
    }

    /// Starts `count` nodes on the NATS server at `nats` (a fault test's own server).
    pub async fn start_on(count: usize, nats: &str, extra: &[&str]) -> TestCluster {
        let name = unique_name("it");
        let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let nodes = start_cluster_nodes(&name, nats, 0, count, &extra)
            .into_iter()
            .map(|node| TestApp::from_nodes(vec![node]))
            .collect();
        let cluster = TestCluster {
            nodes,
            name,
            nats: nats.to_string(),
            extra,
        };
        cluster.until_ready().await;
        cluster
    }

    /// Starts one more node, `node-<n>`, in the same cluster (it joins and takes its shards).
    pub async fn add_node(&mut self) {
        let node = start_cluster_nodes(&self.name, &self.nats, self.nodes.len(), 1, &self.extra);
        self.nodes
            .extend(node.into_iter().map(|node| TestApp::from_nodes(vec![node])));
    }

    /// Waits until every node answers `/readyz` with 200.
    pub async fn until_ready(&self) {
        for node in &self.nodes {
            node.until_ready().await;
        }
    }

    pub fn node(&self, index: usize) -> &TestApp {
        &self.nodes[index % self.nodes.len()]
    }

    /// Writes every node's whole log to `target/test-artifacts/cluster/<label>-<cluster>/` and
    /// returns the directory, for a failure message to point at.
    pub fn save_logs(&self, label: &str) -> String {
        let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-artifacts/cluster")
            .join(format!("{label}-{}", self.name));
        std::fs::create_dir_all(&directory).expect("create the log directory");
        for (index, node) in self.nodes.iter().enumerate() {
            std::fs::write(directory.join(format!("node-{index}.log")), node.log())
                .expect("write a node log");
        }
        directory.display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_created_on_one_node_is_read_reserved_and_paid_through_the_others() {
    let cluster = TestCluster::start(3, &[]).await;
    let seller = cluster.node(0).new_user().await;
    let buyer = cluster.node(1).new_user().await;
    // The session made on one node is honoured by every node (shared JWT key and users).
    let current = cluster
        .node(2)
        .get("/api/users/currentuser", &buyer.cookie())
        .await;
    assert_eq!(current.body["currentUser"]["id"], json!(buyer.id));

    for n in 0..6 {
        let ticket = cluster
            .node(0)
            .create_ticket(&seller, &format!("cluster show {n}"), json!(20 + n))
            .await;
        let id = ticket["id"].as_str().unwrap();
        let seen = cluster
            .node(1)
            .get(&format!("/api/tickets/{id}"), &Auth::None)
            .await;
        assert_eq!(seen.body, ticket, "read through another node");
        let order = cluster.node(2).order(&buyer, id).await;
        assert_eq!(order.status, StatusCode::CREATED, "{order:?}");
        let order_id = order.body["id"].as_str().unwrap().to_string();
        let paid = cluster.node(1).pay(&buyer, &order_id, "tok_visa").await;
        assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
        let shown = cluster
            .node(0)
            .get(&format!("/api/orders/{order_id}"), &buyer.bearer())
            .await;
        assert_eq!(shown.body["status"], "complete");
        let sold = cluster
            .node(2)
            .get(&format!("/api/tickets/{id}"), &Auth::None)
            .await;
        assert_eq!(sold.body["orderId"], json!(order_id));
    }
    let listed = cluster.node(2).get("/api/orders", &buyer.bearer()).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 6);

    let view = cluster
        .node(1)
        .get("/admin/api/cluster", &Auth::Admin)
        .await;
    assert_eq!(view.body["nodes"].as_array().unwrap().len(), 3, "{view:?}");
    let shards = view.body["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 64, "every shard of both kinds is leased");
    let owners: std::collections::BTreeSet<_> = shards
        .iter()
        .map(|shard| shard["owner"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "the shards are spread over the three nodes: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_across_three_nodes_has_one_winner_per_ticket() {
    let cluster = TestCluster::start(3, &[]).await;
    let seller = cluster.node(0).new_user().await;
    let mut tickets = Vec::new();
    for n in 0..5 {
        let ticket = cluster
            .node(n)
            .create_ticket(&seller, "hot", json!(50))
            .await;
        tickets.push(ticket["id"].as_str().unwrap().to_string());
    }
    let buyers: Vec<User> =
        futures::future::join_all((0..24).map(|n| cluster.node(n).new_user())).await;
    let attempts = buyers.iter().enumerate().flat_map(|(index, buyer)| {
        let cluster = &cluster;
        tickets.iter().map(move |ticket| async move {
            let response = cluster.node(index).order(buyer, ticket).await;
            (ticket.clone(), response)
        })
    });
    let results = futures::future::join_all(attempts).await;
    for ticket in &tickets {
        let winners: Vec<_> = results
            .iter()
            .filter(|(id, response)| id == ticket && response.status == StatusCode::CREATED)
            .collect();
        assert_eq!(winners.len(), 1, "exactly one winner for {ticket}");
        for (_, response) in results
            .iter()
            .filter(|(id, r)| id == ticket && r.status != StatusCode::CREATED)
        {
            response.assert_error(StatusCode::BAD_REQUEST, "Ticket is already reserved");
        }
        let shown = cluster
            .node(1)
            .get(&format!("/api/tickets/{ticket}"), &Auth::None)
            .await;
        assert_eq!(shown.body["orderId"], winners[0].1.body["id"]);
    }
}
