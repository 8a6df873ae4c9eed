//! The Redis `Timers` adapter against a real redis-server: atomic claims across nodes, due and
//! not due, completion, and the reaper that re-queues the claims of a node that died mid-fire.
//! Claims take `now` as an argument, so lease expiry is tested by passing a later `now`, not by
//! waiting.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use boxoffice::domain::{ObjectId, Timestamp};
use boxoffice::store::DeadlineKind;
use boxoffice::timers::{RedisTimers, TimerKey, Timers};

use crate::servers;

fn key(kind: DeadlineKind) -> TimerKey {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    TimerKey {
        kind,
        entity: ObjectId::from_parts(
            u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            [bytes[4], bytes[5], bytes[6], bytes[7], bytes[8]],
            u32::from_be_bytes([0, bytes[9], bytes[10], bytes[11]]),
        ),
    }
}

async fn timers(prefix: &str) -> RedisTimers {
    RedisTimers::connect(&servers::redis_url(), prefix)
        .await
        .unwrap()
}

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_racing_claimers_take_each_due_timer_exactly_once() {
    let prefix = servers::unique_name("timers");
    let arming = timers(&prefix).await;
    let mut due = HashSet::new();
    for index in 0..300i64 {
        let kind = if index % 2 == 0 {
            DeadlineKind::OrderExpiry
        } else {
            DeadlineKind::TicketReservation
        };
        let key = key(kind);
        arming
            .arm(key, Timestamp::from_millis(NOW.millis() - index))
            .await
            .unwrap();
        due.insert(key);
    }
    let mut later = HashSet::new();
    for _ in 0..10 {
        let key = key(DeadlineKind::OrderExpiry);
        arming
            .arm(key, NOW.plus(Duration::from_secs(3600)))
            .await
            .unwrap();
        later.insert(key);
    }
    assert_eq!(arming.len(), 310);

    // Four nodes: four connections to one deployment's keys.
    let mut claimers = Vec::new();
    for _ in 0..4 {
        let node = Arc::new(timers(&prefix).await);
        claimers.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = node.claim_due(NOW, 7).await.unwrap();
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch);
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    assert_eq!(all.len(), 300, "every due timer claimed once, none twice");
    let keys: HashSet<TimerKey> = all.iter().map(|(key, _)| *key).collect();
    assert_eq!(keys, due);
    assert!(
        all.iter().all(|(_, at)| *at <= NOW),
        "due times are returned"
    );

    assert!(arming.claim_due(NOW, 100).await.unwrap().is_empty());
    assert_eq!(arming.len(), 10, "the timers not due yet stay armed");
    for key in &keys {
        arming.complete(*key).await.unwrap();
    }
    assert_eq!(arming.claimed_len().await.unwrap(), 0);
    let rest = arming
        .claim_due(NOW.plus(Duration::from_secs(3600)), 100)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|(key, _)| *key).collect::<HashSet<_>>(),
        later
    );
}

#[tokio::test]
async fn a_timer_is_claimed_only_once_due_and_moves_when_re_armed() {
    let timers = timers(&servers::unique_name("timers")).await;
    let order = key(DeadlineKind::OrderExpiry);
    let first = NOW.plus(Duration::from_millis(500));
    timers.arm(order, first).await.unwrap();
    assert!(timers.claim_due(NOW, 10).await.unwrap().is_empty());

    let moved = NOW.plus(Duration::from_millis(900));
    timers.arm(order, moved).await.unwrap();
    assert_eq!(timers.len(), 1, "re-arming moves, it does not add");
    assert!(
        timers.claim_due(first, 10).await.unwrap().is_empty(),
        "the old due time is gone"
    );
    assert_eq!(
        timers.claim_due(moved, 10).await.unwrap(),
        vec![(order, moved)]
    );
    assert!(timers.is_empty());
    timers.complete(order).await.unwrap();

    let ticket = key(DeadlineKind::TicketReservation);
    timers.arm(ticket, NOW).await.unwrap();
    timers.disarm(ticket).await.unwrap();
    assert!(
        timers
            .claim_due(NOW.plus(Duration::from_secs(86_400)), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(timers.len(), 0);
}

#[tokio::test]
async fn completed_claims_are_gone_and_abandoned_ones_come_back_after_their_lease() {
    let prefix = servers::unique_name("timers");
    let lease = Duration::from_secs(30);
    let node = timers(&prefix).await.with_claim_lease(lease);
    let delivered = key(DeadlineKind::OrderExpiry);
    let abandoned = key(DeadlineKind::TicketReservation);
    node.arm(delivered, NOW).await.unwrap();
    node.arm(abandoned, NOW).await.unwrap();
    assert_eq!(node.claim_due(NOW, 10).await.unwrap().len(), 2);
    assert_eq!(node.claimed_len().await.unwrap(), 2);
    node.complete(delivered).await.unwrap();
    assert_eq!(node.claimed_len().await.unwrap(), 1);

    // The node that claimed `abandoned` died. Another node sees nothing while the lease runs...
    let survivor = timers(&prefix).await.with_claim_lease(lease);
    let before_expiry = NOW.plus(lease - Duration::from_millis(1));
    assert!(
        survivor
            .claim_due(before_expiry, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // ...and takes it once the lease is over.
    let after_expiry = NOW.plus(lease + Duration::from_millis(1));
    let reclaimed = survivor.claim_due(after_expiry, 10).await.unwrap();
    assert_eq!(
        reclaimed.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
        vec![abandoned]
    );
    survivor.complete(abandoned).await.unwrap();
    assert_eq!(survivor.claimed_len().await.unwrap(), 0);
    assert!(
        survivor
            .claim_due(NOW.plus(Duration::from_secs(86_400)), 10)
            .await
            .unwrap()
            .is_empty(),
        "completed timers never come back"
    );
}

#[tokio::test]
async fn re_arming_a_claimed_timer_releases_the_claim() {
    // A failed delivery re-arms the timer: it must fire at the new time, not at lease expiry.
    let lease = Duration::from_secs(60);
    let timers = timers(&servers::unique_name("timers"))
        .await
        .with_claim_lease(lease);
    let order = key(DeadlineKind::OrderExpiry);
    timers.arm(order, NOW).await.unwrap();
    assert_eq!(timers.claim_due(NOW, 10).await.unwrap().len(), 1);
    let retry_at = NOW.plus(Duration::from_secs(1));
    timers.arm(order, retry_at).await.unwrap();
    assert_eq!(timers.claimed_len().await.unwrap(), 0);
    assert_eq!(
        timers.claim_due(retry_at, 10).await.unwrap(),
        vec![(order, retry_at)]
    );
}
