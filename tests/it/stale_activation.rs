//! An activation that learns another one wrote its entity (a version conflict; in a cluster also
//! a newer owner's fence) stops itself. The requests queued behind the write that found out never
//! ran: they get a retryable 503 (`Unavailable`), not a 500, and the entity is not counted as
//! crashing (which would end in quarantine).
//!
//! Two runtimes in this process share one embedded store, as two nodes share MongoDB, so each
//! holds its own activation of the same ticket.

use std::sync::Arc;

use boxoffice::actors::{ActorError, RequestContext, Runtime};
use boxoffice::domain::{Price, Title, UserId};
use boxoffice::store::{EmbeddedStore, Store};

use crate::cluster_routing::node_runtime;

fn runtime(store: Arc<dyn Store>) -> Arc<Runtime> {
    node_runtime(store, 4).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_queued_behind_a_stale_activation_are_retryable_not_crashes() {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(data.path()).unwrap());
    let (first, second) = (runtime(store.clone()), runtime(store));
    let owner = UserId(first.ids.next());
    let title = |text: &str| Title::parse(text).unwrap();
    let ticket = first
        .create_ticket(
            owner,
            title("shared"),
            Price::from_cents(1000).unwrap(),
            RequestContext::default(),
        )
        .await
        .unwrap();
    // The second runtime's activation writes version 1: the first one's copy is stale now.
    second
        .update_ticket(
            ticket.id,
            owner,
            title("moved on"),
            Price::from_cents(1100).unwrap(),
            RequestContext::default(),
        )
        .await
        .unwrap();

    let updates = (0..40).map(|n| {
        let first = first.clone();
        async move {
            first
                .update_ticket(
                    ticket.id,
                    owner,
                    title(&format!("update {n}")),
                    Price::from_cents(1200 + n).unwrap(),
                    RequestContext::default(),
                )
                .await
        }
    });
    let answers = futures::future::join_all(updates).await;
    let crashed = answers
        .iter()
        .filter(|answer| matches!(answer, Err(ActorError::Crashed)))
        .count();
    assert_eq!(crashed, 0, "queued requests are not crashes: {answers:?}");
    assert!(
        answers
            .iter()
            .any(|answer| matches!(answer, Err(ActorError::Unavailable { .. }))),
        "the write that found the conflict stops the activation: {answers:?}"
    );
    let info = first.tickets.info(ticket.id.0).await;
    assert_eq!(info.restarts, 0, "no crash is counted");
    assert!(!info.quarantined);
}
