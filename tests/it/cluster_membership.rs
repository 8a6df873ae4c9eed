//! Membership and shard leases against a real nats-server (2.9 on CI): the compare-and-set
//! rules, expiry by the buckets' `max_age`, and fencing epochs that only grow.

use std::time::Duration;

use boxoffice::actors::EntityKind;
use boxoffice::cluster::lease::RenewFailure;
use boxoffice::cluster::membership::{ClusterBuckets, ClusterError, LeaseRecord, MemberRecord};

use crate::servers::{nats_url, unique_name};

async fn buckets(member_ttl: Duration, lease_ttl: Duration) -> ClusterBuckets {
    let client = async_nats::connect(nats_url()).await.expect("nats");
    let jetstream = async_nats::jetstream::new(client);
    ClusterBuckets::open(&jetstream, &unique_name("bo"), member_ttl, lease_ttl)
        .await
        .expect("buckets")
}

fn member(id: &str) -> MemberRecord {
    MemberRecord {
        id: id.into(),
        incarnation: uuid::Uuid::new_v4().to_string(),
        address: "127.0.0.1:1".into(),
        roles: vec!["tickets".into(), "orders".into()],
        started_at: "2026-11-27T00:00:00.000Z".into(),
        heartbeat_at: "2026-11-27T00:00:00.000Z".into(),
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

#[tokio::test]
async fn the_shard_count_is_pinned_when_the_cluster_is_created() {
    let buckets = buckets(Duration::from_secs(5), Duration::from_secs(5)).await;
    buckets.check_shard_count(256).await.unwrap();
    buckets.check_shard_count(256).await.unwrap();
    match buckets.check_shard_count(128).await {
        Err(ClusterError::ShardCountMismatch {
            ours: 128,
            theirs: 256,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn members_join_heartbeat_by_revision_and_leave() {
    let buckets = buckets(Duration::from_secs(30), Duration::from_secs(5)).await;
    let first = member("node-a");
    let revision = buckets.join(&first).await.unwrap();
    assert!(matches!(
        buckets.join(&member("node-a")).await,
        Err(ClusterError::IdentityTaken(_))
    ));
    let revision = buckets.heartbeat(&first, revision).await.unwrap();
    assert!(matches!(
        buckets.heartbeat(&first, revision - 1).await,
        Err(ClusterError::IdentityTaken(_))
    ));
    buckets.join(&member("node-b")).await.unwrap();
    let members = buckets.members().await.unwrap();
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        vec!["node-a", "node-b"]
    );
    assert_eq!(members["node-a"], first);
    buckets.leave("node-a", revision).await.unwrap();
    assert_eq!(buckets.members().await.unwrap().len(), 1);
    // A node that left may join again.
    buckets.join(&member("node-a")).await.unwrap();
}

#[tokio::test]
async fn a_silent_member_is_forgotten_after_the_member_ttl() {
    let buckets = buckets(Duration::from_secs(1), Duration::from_secs(5)).await;
    buckets.join(&member("node-quiet")).await.unwrap();
    assert_eq!(buckets.members().await.unwrap().len(), 1);
    // A listing that does not finish in time is an error the caller retries (the control loop
    // lists again on its next round): so does this loop.
    until("the member to expire", || async {
        buckets.members().await.ok()?.is_empty().then_some(())
    })
    .await;
    // Its id is free again.
    buckets.join(&member("node-quiet")).await.unwrap();
}

#[tokio::test]
async fn leases_are_taken_by_create_renewed_by_revision_and_their_epochs_only_grow() {
    let buckets = buckets(Duration::from_secs(30), Duration::from_secs(2)).await;
    let holder = LeaseRecord {
        owner: "node-a".into(),
        incarnation: "1".into(),
        epoch: 0,
    };
    let other = LeaseRecord {
        owner: "node-b".into(),
        incarnation: "1".into(),
        epoch: 0,
    };
    let epoch = buckets
        .acquire(EntityKind::Ticket, 7, &holder)
        .await
        .unwrap()
        .expect("free lease");
    assert_eq!(
        buckets
            .acquire(EntityKind::Ticket, 7, &other)
            .await
            .unwrap(),
        None
    );
    let renewed = buckets
        .renew(EntityKind::Ticket, 7, &holder, epoch)
        .await
        .unwrap();
    assert!(renewed > epoch);
    assert_eq!(
        buckets.renew(EntityKind::Ticket, 7, &other, epoch).await,
        Err(RenewFailure::Lost),
        "a stale revision never renews"
    );
    let leases = buckets.leases().await.unwrap();
    assert_eq!(leases[&(EntityKind::Ticket, 7)].owner, "node-a");
    assert_eq!(leases[&(EntityKind::Ticket, 7)].revision, renewed);

    // Released: the next owner takes it at once, with a higher epoch.
    buckets
        .release(EntityKind::Ticket, 7, renewed)
        .await
        .unwrap();
    let next = buckets
        .acquire(EntityKind::Ticket, 7, &other)
        .await
        .unwrap()
        .expect("released lease");
    assert!(next > renewed);

    // Abandoned: it expires after the lease TTL and is taken with a higher epoch again.
    let taken = until("the abandoned lease to expire", || async {
        buckets
            .acquire(EntityKind::Ticket, 7, &holder)
            .await
            .unwrap()
    })
    .await;
    assert!(taken > next);
    assert!(matches!(
        buckets.renew(EntityKind::Ticket, 7, &other, next).await,
        Err(RenewFailure::Lost)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_opening_a_new_cluster_together_all_pin_and_accept_the_shard_count() {
    // Nodes of a new cluster start side by side: each makes the buckets it finds missing and
    // pins or checks the shard count right after. The race is narrow: a few rounds, new names.
    for _ in 0..30 {
        let name = unique_name("bo");
        let opens = (0..6).map(|_| {
            let name = name.clone();
            tokio::spawn(async move {
                let client = async_nats::connect(nats_url()).await.expect("nats");
                let jetstream = async_nats::jetstream::new(client);
                let ttl = Duration::from_secs(3);
                let buckets = ClusterBuckets::open(&jetstream, &name, ttl, ttl).await?;
                buckets.check_shard_count(32).await
            })
        });
        for opened in futures::future::join_all(opens).await {
            opened.unwrap().expect("every node opens the cluster");
        }
    }
}
