//! An actor that only did the platform's own work (here: the release of its ticket by an order's
//! cancellation) is stopped as soon as it has answered and nothing is queued for it; one a
//! client asked stays live for `--passivate-after`. An expiry storm activates an order and a
//! ticket per expired order, and without this every one of the tickets stayed in memory for two
//! minutes.
//!
//! The runtime is driven directly, with the passivation pass called by the test (its loop is not
//! started), so which actors it stops does not depend on when a loop happens to tick.

use std::sync::Arc;
use std::time::Duration;

use boxoffice::actors::{RequestContext, Runtime};
use boxoffice::domain::{Price, Ticket, Title, UserId};
use boxoffice::store::{EmbeddedStore, Store};

use crate::cluster_routing::node_runtime;

async fn put_on_sale(runtime: &Runtime, owner: UserId, title: &str) -> Ticket {
    runtime
        .create_ticket(
            owner,
            Title::parse(title).unwrap(),
            Price::from_cents(2500).unwrap(),
            RequestContext::default(),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_only_the_platform_asked_stops_once_it_has_answered_and_a_clients_stays_live() {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(data.path()).unwrap());
    // The first node sells both tickets, then stops: its actors are gone, the state is stored.
    let (seller, _) = node_runtime(store.clone(), 4);
    let (owner, buyer) = (UserId(seller.ids.next()), UserId(seller.ids.next()));
    let read = put_on_sale(&seller, owner, "read by a client").await;
    let released = put_on_sale(&seller, owner, "released by its order").await;
    let order = seller
        .create_order(buyer, released.id, RequestContext::default())
        .await
        .unwrap();
    seller.shutdown().await;

    // A fresh node: a client reads one ticket; the buyer cancels the order of the other, whose
    // actor is then activated only by the order's release of it.
    let (node, _) = node_runtime(store.clone(), 4);
    node.get_ticket(read.id).await.unwrap();
    node.cancel_order(order.id, buyer, RequestContext::default())
        .await
        .unwrap();
    assert!(node.tickets.info(read.id.0).await.active);
    assert!(
        !node.tickets.info(released.id.0).await.active,
        "no client asked the released ticket: its actor stopped once it had answered"
    );
    let cancelled = node.get_order(order.id).await.unwrap();
    assert_eq!(cancelled.status.as_str(), "cancelled");
    let stored = store.load_ticket(released.id).await.unwrap().unwrap();
    assert!(stored.state.hold.is_none(), "the release was persisted");

    // A pass after a second idle stops actors that are absent, final or no client's; the read
    // ticket is a client's, so it stays live for --passivate-after (two minutes).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    node.tickets.passivate_idle().await;
    assert!(node.tickets.info(read.id.0).await.active);

    // Once a client asks it, the released ticket stays live too, and is on sale again.
    let again = node.get_ticket(released.id).await.unwrap();
    assert!(again.hold.is_none(), "{again:?}");
    assert_eq!(again.version, stored.state.version);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    node.tickets.passivate_idle().await;
    assert!(node.tickets.info(released.id.0).await.active);
    node.shutdown().await;
}
