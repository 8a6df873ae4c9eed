//! Cluster nodes over a real nats-server: each shard is served by exactly one node, requests for
//! a shard another node serves are routed there over NATS, and shards move to a node that joins
//! and back when it leaves.
//!
//! The nodes run in this test process, each with an embedded store (the MongoDB store is tested
//! on its own): their own where no entity changes hands, one shared where it does.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use boxoffice::actors::{
    ActorError, BackgroundTasks, DirectoryConfig, EntityKind, RequestContext, Routed, Runtime,
    RuntimeConfig, TicketRequest,
};
use boxoffice::bus::MemoryBus;
use boxoffice::cluster::node::{ClusterNode, ClusterSettings};
use boxoffice::domain::{Price, Title, UserId};
use boxoffice::metrics::Metrics;
use boxoffice::payments::SandboxGateway;
use boxoffice::store::{EmbeddedStore, Store};
use boxoffice::timers::EmbeddedTimers;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::servers::{nats_url, unique_name};

const SHARDS: u32 = 16;

struct Node {
    runtime: Arc<Runtime>,
    cluster: Arc<ClusterNode>,
    shutdown: CancellationToken,
    stopped: tokio::task::JoinHandle<()>,
}

/// The runtime of one cluster node (not a single node) on `store`, with `shards` per kind, the
/// contract's defaults, in-process timers and the sandbox gateway; its background tasks are the
/// caller's to start.
pub(crate) fn node_runtime(
    store: Arc<dyn Store>,
    shards: usize,
) -> (Arc<Runtime>, BackgroundTasks) {
    let config = RuntimeConfig {
        order_ttl: Duration::from_secs(600),
        directory: DirectoryConfig {
            shards,
            mailbox_limit: 1000,
            passivate_after: Duration::from_secs(120),
            max_live: 10_000,
        },
        call_timeout: Duration::from_secs(10),
        hold_grace: Duration::from_secs(5),
        test_hooks: false,
        is_single_node: false,
    };
    Runtime::new(
        config,
        store,
        Arc::new(EmbeddedTimers::new()),
        Arc::new(SandboxGateway::new()),
        Arc::new(Metrics::new()),
    )
}

/// An embedded store in a temporary directory, removed with the returned guard.
fn embedded_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    (Arc::new(EmbeddedStore::open(data.path()).unwrap()), data)
}

async fn start_node(
    cluster: &str,
    node_id: &str,
    min_members: usize,
    store: Arc<dyn Store>,
) -> Node {
    let (runtime, background) = node_runtime(store, SHARDS as usize);
    let shutdown = CancellationToken::new();
    background
        .spawn(
            runtime.clone(),
            Arc::new(MemoryBus::new()),
            shutdown.child_token(),
            &TaskTracker::new(),
        )
        .await
        .unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let settings = ClusterSettings {
        name: cluster.into(),
        node_id: node_id.into(),
        address: format!("{node_id}:8080"),
        roles: vec!["tickets".into(), "orders".into()],
        shards: SHARDS,
        lease_ttl: Duration::from_secs(3),
        min_members,
    };
    let (cluster, revision) = ClusterNode::join(settings, client, runtime.clone())
        .await
        .unwrap();
    runtime.set_router(cluster.clone());
    let stopped = tokio::spawn(cluster.clone().run(revision, shutdown.clone()));
    Node {
        runtime,
        cluster,
        shutdown,
        stopped,
    }
}

async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::harness::poll_until(Duration::from_secs(60), check)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

fn served(node: &Node) -> BTreeSet<(EntityKind, u32)> {
    node.cluster
        .served_shards()
        .into_iter()
        .map(|(kind, shard, _)| (kind, shard))
        .collect()
}

fn all_shards() -> BTreeSet<(EntityKind, u32)> {
    [EntityKind::Ticket, EntityKind::Order]
        .into_iter()
        .flat_map(|kind| (0..SHARDS).map(move |shard| (kind, shard)))
        .collect()
}

/// Waits until the nodes serve every shard between them, each shard on exactly one node.
async fn until_split(nodes: &[&Node]) {
    until("every shard served by exactly one node", || async {
        let sets: Vec<_> = nodes.iter().map(|node| served(node)).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<_> = sets.iter().flatten().copied().collect();
        let every_node_serves = sets.iter().all(|set| !set.is_empty());
        let ready = nodes.iter().all(|node| node.cluster.is_ready());
        (union == all_shards() && total == union.len() && every_node_serves && ready).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_reach_the_node_that_serves_the_shard() {
    let cluster = unique_name("routing");
    let ((first_store, _first_data), (second_store, _second_data)) =
        (embedded_store(), embedded_store());
    let (first, second) = tokio::join!(
        start_node(&cluster, "node-a", 2, first_store),
        start_node(&cluster, "node-b", 2, second_store)
    );
    until_split(&[&first, &second]).await;

    let owner = UserId(first.runtime.ids.next());
    let buyer = UserId(first.runtime.ids.next());
    let mut remote_tickets = 0;
    for n in 0..12 {
        // Created through the first node, wherever its shard lives.
        let ticket = first
            .runtime
            .create_ticket(
                owner,
                Title::parse(&format!("show {n}")).unwrap(),
                Price::from_cents(1000 + n).unwrap(),
                RequestContext::default(),
            )
            .await
            .unwrap();
        let shard = first.runtime.tickets.shard_of(ticket.id.0) as u32;
        if served(&second).contains(&(EntityKind::Ticket, shard)) {
            remote_tickets += 1;
        }
        // Read, ordered and paid through the second node.
        let seen = second.runtime.get_ticket(ticket.id).await.unwrap();
        assert_eq!(seen, ticket);
        let order = second
            .runtime
            .create_order(buyer, ticket.id, RequestContext::default())
            .await
            .unwrap();
        assert_eq!(order.ticket.id, ticket.id);
        let again = first
            .runtime
            .create_order(owner, ticket.id, RequestContext::default())
            .await;
        assert!(again.is_err(), "the ticket is held: {again:?}");
        first
            .runtime
            .pay_order(
                order.id,
                buyer,
                "tok_visa".into(),
                None,
                RequestContext::default(),
            )
            .await
            .unwrap();
        let paid = second.runtime.get_order(order.id).await.unwrap();
        assert_eq!(paid.status.as_str(), "complete");
        let sold = first.runtime.get_ticket(ticket.id).await.unwrap();
        assert_eq!(sold.order_id(), Some(order.id));
    }
    assert!(remote_tickets > 0, "some tickets lived on the other node");

    first.shutdown.cancel();
    second.shutdown.cancel();
    let _ = tokio::join!(first.stopped, second.stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_move_to_a_joining_node_and_back_when_it_leaves() {
    let cluster = unique_name("handover");
    let ((first_store, _first_data), (second_store, _second_data)) =
        (embedded_store(), embedded_store());
    let first = start_node(&cluster, "node-a", 1, first_store).await;
    until("the only node to serve every shard", || async {
        (served(&first) == all_shards() && first.cluster.is_ready()).then_some(())
    })
    .await;

    let second = start_node(&cluster, "node-b", 1, second_store).await;
    until_split(&[&first, &second]).await;
    let moved = served(&second).len();
    assert!(
        moved > 4 && moved < 28,
        "about half of the 32 shards move to the newcomer, not {moved}"
    );
    let handed = first.cluster.moves(100);
    assert!(
        handed
            .iter()
            .any(|shard_move| shard_move.reason == "rebalance"
                && shard_move.to.as_deref() == Some("node-b")),
        "{handed:?}"
    );
    // A request during or after the move still reaches a server.
    let ticket = second
        .runtime
        .create_ticket(
            UserId(second.runtime.ids.next()),
            Title::parse("after the move").unwrap(),
            Price::from_cents(500).unwrap(),
            RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(first.runtime.get_ticket(ticket.id).await.unwrap(), ticket);

    second.shutdown.cancel();
    second.stopped.await.unwrap();
    until("the remaining node to serve every shard again", || async {
        (served(&first) == all_shards()).then_some(())
    })
    .await;
    first.shutdown.cancel();
    first.stopped.await.unwrap();
}

/// A node keeps no copy of an entity whose shard it stopped serving: a request that still
/// reaches it (a routed one queued before the move, say) is turned away and activates nothing.
/// Otherwise that copy, loaded while another node owned the entity, would answer from stale
/// memory once the shard came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_holds_nothing_of_a_shard_it_handed_over_and_reads_afresh_when_it_returns() {
    let cluster = unique_name("tenure");
    let (store, _data) = embedded_store();
    let first = start_node(&cluster, "node-a", 1, store.clone()).await;
    until("the only node to serve every shard", || async {
        (served(&first) == all_shards() && first.cluster.is_ready()).then_some(())
    })
    .await;
    let owner = UserId(first.runtime.ids.next());
    let mut tickets = Vec::new();
    for n in 0..16 {
        let ticket = first
            .runtime
            .create_ticket(
                owner,
                Title::parse(&format!("by node-a {n}")).unwrap(),
                Price::from_cents(100).unwrap(),
                RequestContext::default(),
            )
            .await
            .unwrap();
        tickets.push(ticket.id);
    }

    let second = start_node(&cluster, "node-b", 1, store).await;
    until_split(&[&first, &second]).await;
    let moved: Vec<_> = tickets
        .iter()
        .copied()
        .filter(|id| {
            let shard = first.runtime.tickets.shard_of(id.0) as u32;
            served(&second).contains(&(EntityKind::Ticket, shard))
        })
        .collect();
    assert!(!moved.is_empty(), "some tickets' shards moved to node-b");
    for &id in &moved {
        assert!(
            !first.runtime.tickets.info(id.0).await.active,
            "handed over"
        );
        let late = first
            .runtime
            .ask_local(
                Routed::Ticket {
                    id,
                    request: TicketRequest::Get,
                },
                RequestContext::default(),
            )
            .await;
        assert!(matches!(late, Err(ActorError::NotServedHere)), "{late:?}");
        assert!(
            !first.runtime.tickets.info(id.0).await.active,
            "a late request activated a copy on the former owner"
        );
        second
            .runtime
            .update_ticket(
                id,
                owner,
                Title::parse("by node-b").unwrap(),
                Price::from_cents(200).unwrap(),
                RequestContext::default(),
            )
            .await
            .unwrap();
    }

    second.shutdown.cancel();
    second.stopped.await.unwrap();
    until("node-a to serve every shard again", || async {
        (served(&first) == all_shards()).then_some(())
    })
    .await;
    for &id in &moved {
        let seen = first.runtime.get_ticket(id).await.unwrap();
        assert_eq!(
            seen.title.as_str(),
            "by node-b",
            "read afresh from the store"
        );
    }
    first.shutdown.cancel();
    first.stopped.await.unwrap();
}
