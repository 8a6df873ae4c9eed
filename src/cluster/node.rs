//! One cluster node: keeps its membership alive, takes and keeps the shard leases placement
//! gives it, serves those shards on their NATS subjects, hands shards over when placement
//! moves them, and routes requests for shards it does not serve to their owners.
//!
//! Owns the control loop (every `tick`: heartbeat, renew, acquire, hand over), the serving
//! subscriptions (`<cluster>.actor.<kind>.<shard>` in the queue group `<cluster>-actors`, so the
//! subjects are the routing table), the record of shard moves, and the inspection protocol's
//! transport (`inspect`: answering on its own admin subject, asking the other members, relaying
//! its actors' transitions for the tails). Decisions come from
//! compare-and-set results and the monotonic clock (`lease`), never from reads alone. It must not
//! decide entity transitions: it hands requests to the runtime's actors.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::RequestErrorKind;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::inspect::{self, Gathered, INSPECT_TIMEOUT, InspectReply, InspectRequest};
use super::lease::{HeldLease, LeaseAction, LeaseTiming, RenewFailure};
use super::membership::{ClusterBuckets, ClusterError, LeaseRecord, MemberRecord};
use super::placement::{Candidate, owner_of};
use crate::actors::{
    ActorError, Answer, EntityKind, Envelope, RequestContext, Routed, Runtime, ShardRouter,
    TransitionNotice,
};

/// Moves kept for the admin view.
const MOVES_KEPT: usize = 500;
/// Shards acquired per round at most.
const ACQUIRES_PER_ROUND: usize = 64;
/// Shards handed over per round at most (Akka's bounded rebalance).
const HANDOVERS_PER_ROUND: usize = 16;
/// Lease renewals in flight at once.
const RENEWALS_AT_ONCE: usize = 32;
/// How long a shard's actors may take to drain when it is handed over.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// The cluster's name: prefix of its buckets and subjects (`boxoffice` by default).
    pub name: String,
    pub node_id: String,
    /// The address other nodes and the admin view show.
    pub address: String,
    pub roles: Vec<String>,
    pub shards: u32,
    pub lease_ttl: Duration,
    /// Live members to wait for at start before taking shards.
    pub min_members: usize,
}

/// A recorded change of a shard's owner, as this node saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardMove {
    pub kind: EntityKind,
    pub shard: u32,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    pub from_epoch: Option<u64>,
    pub to_epoch: Option<u64>,
    pub at: String,
    pub drain_ms: u64,
    pub drained: usize,
    pub refused: usize,
}

struct Served {
    lease: HeldLease,
    /// The store fence of this tenure (`ClusterBuckets::fencing_epoch`).
    fence: u64,
    stop: CancellationToken,
    /// A write met a higher fence: stop serving at the next round.
    is_fenced: bool,
}

/// A running cluster node.
pub struct ClusterNode {
    settings: ClusterSettings,
    client: async_nats::Client,
    buckets: ClusterBuckets,
    runtime: Arc<Runtime>,
    incarnation: String,
    timing: LeaseTiming,
    origin: Instant,
    served: RwLock<HashMap<(EntityKind, u32), Served>>,
    moves: Mutex<VecDeque<ShardMove>>,
    /// Shards whose fence could not be raised in time (a former owner's transaction holds the
    /// fence document), left alone until the instant given so the others are taken meanwhile.
    fence_waits: Mutex<HashMap<(EntityKind, u32), Instant>>,
    members: RwLock<BTreeMap<String, MemberRecord>>,
    is_ready: AtomicBool,
    /// The membership has reached `min_members` once (see `round`).
    has_had_min_members: AtomicBool,
    /// Another live process has this node's id: it serves nothing and reports unhealthy.
    identity_conflict: AtomicBool,
    member_record: Mutex<MemberRecord>,
}

fn now_iso() -> String {
    crate::clock::now().to_iso8601()
}

impl ClusterNode {
    /// Joins the cluster: checks the shard count, opens the buckets and announces this node.
    pub async fn join(
        settings: ClusterSettings,
        client: async_nats::Client,
        runtime: Arc<Runtime>,
    ) -> Result<(Arc<ClusterNode>, u64), ClusterError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        let buckets = ClusterBuckets::open(
            &jetstream,
            &settings.name,
            settings.lease_ttl,
            settings.lease_ttl,
        )
        .await?;
        buckets.check_shard_count(settings.shards).await?;
        let incarnation = uuid::Uuid::new_v4().to_string();
        let record = MemberRecord {
            id: settings.node_id.clone(),
            incarnation: incarnation.clone(),
            address: settings.address.clone(),
            roles: settings.roles.clone(),
            started_at: now_iso(),
            heartbeat_at: now_iso(),
        };
        let revision = buckets.join(&record).await?;
        let node = Arc::new(ClusterNode {
            timing: LeaseTiming::new(settings.lease_ttl),
            settings,
            client,
            buckets,
            runtime,
            incarnation,
            origin: Instant::now(),
            served: RwLock::new(HashMap::new()),
            moves: Mutex::new(VecDeque::new()),
            fence_waits: Mutex::new(HashMap::new()),
            members: RwLock::new(BTreeMap::new()),
            is_ready: AtomicBool::new(false),
            has_had_min_members: AtomicBool::new(false),
            identity_conflict: AtomicBool::new(false),
            member_record: Mutex::new(record),
        });
        Ok((node, revision))
    }

    /// False when another live process has this node's id (the node stopped itself).
    pub fn is_healthy(&self) -> bool {
        !self.identity_conflict.load(Ordering::Acquire)
    }

    /// True once the node has joined and serves every shard placement gives it, and none of
    /// its leases is past its deadline: a node that was paused reads not-ready from the moment
    /// it resumes, before its loop has noticed and stopped those shards.
    pub fn is_ready(&self) -> bool {
        if !self.is_ready.load(Ordering::Acquire) {
            return false;
        }
        let now = self.elapsed();
        self.served
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .all(|served| served.lease.is_serving(now, &self.timing))
    }

    /// The shards this node serves, with their fencing epochs.
    pub fn served_shards(&self) -> Vec<(EntityKind, u32, u64)> {
        let served = self
            .served
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut shards: Vec<_> = served
            .iter()
            .map(|((kind, shard), served)| (*kind, *shard, served.lease.epoch))
            .collect();
        shards.sort();
        shards
    }

    /// The live members as last scanned.
    pub fn members(&self) -> Vec<MemberRecord> {
        self.members
            .read()
            .map(|members| members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every lease in the cluster with its owner and the fencing epoch of its last write.
    pub async fn leases(&self) -> Result<Vec<(EntityKind, u32, String, u64)>, ClusterError> {
        Ok(self
            .buckets
            .leases()
            .await?
            .into_iter()
            .map(|((kind, shard), lease)| {
                let epoch = if lease.epoch == 0 {
                    self.buckets.fencing_epoch(lease.revision)
                } else {
                    lease.epoch
                };
                (kind, shard, lease.owner, epoch)
            })
            .collect())
    }

    /// The moves this node recorded, newest first (the admin view gathers every node's).
    pub fn moves(&self, limit: usize) -> Vec<ShardMove> {
        self.moves
            .lock()
            .map(|moves| moves.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    fn subject(&self, kind: EntityKind, shard: u32) -> String {
        format!("{}.actor.{}.{shard}", self.settings.name, kind.as_str())
    }

    fn kinds(&self) -> Vec<EntityKind> {
        [EntityKind::Ticket, EntityKind::Order]
            .into_iter()
            .filter(|kind| {
                let role = match kind {
                    EntityKind::Ticket => "tickets",
                    EntityKind::Order => "orders",
                };
                self.settings
                    .roles
                    .iter()
                    .any(|candidate| candidate == role)
            })
            .collect()
    }

    fn record_move(&self, shard_move: ShardMove) {
        tracing::info!(kind = %shard_move.kind, shard = shard_move.shard, from = ?shard_move.from, to = ?shard_move.to, reason = %shard_move.reason, "shard moved");
        if let Ok(mut moves) = self.moves.lock() {
            moves.push_back(shard_move);
            while moves.len() > MOVES_KEPT {
                moves.pop_front();
            }
        }
    }

    /// The node holding the lease of a shard, if any.
    pub async fn shard_owner(
        &self,
        kind: EntityKind,
        shard: u32,
    ) -> Result<Option<String>, ClusterError> {
        Ok(self
            .buckets
            .lease(kind, shard)
            .await?
            .map(|lease| lease.owner))
    }

    /// Asks every live member (this node included) and waits for each at most
    /// `INSPECT_TIMEOUT`, all at once.
    pub async fn inspect_members(&self, request: &InspectRequest) -> Gathered {
        let mut ids: std::collections::BTreeSet<String> =
            self.members().into_iter().map(|member| member.id).collect();
        ids.insert(self.settings.node_id.clone());
        let asks = ids.into_iter().map(|id| async move {
            let reply = self.inspect_node(&id, request).await;
            (id, reply)
        });
        let mut gathered = Gathered::default();
        for (id, reply) in futures::future::join_all(asks).await {
            match reply {
                Some(reply) => gathered.answers.push((id, reply)),
                None => gathered.unreachable.push(id),
            }
        }
        gathered
    }

    /// Asks one node (itself without going through NATS); `None` when it did not answer in
    /// time or could not read the request.
    pub async fn inspect_node(&self, node: &str, request: &InspectRequest) -> Option<InspectReply> {
        if node == self.settings.node_id {
            return tokio::time::timeout(INSPECT_TIMEOUT, self.answer_inspection(request.clone()))
                .await
                .ok();
        }
        let ask = async_nats::Request::new()
            .payload(Envelope::new(None, request.clone()).encode().into())
            .timeout(Some(INSPECT_TIMEOUT));
        let subject = inspect::node_subject(&self.settings.name, node);
        let message = match self.client.send_request(subject, ask).await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(node, error = %error, "a node did not answer an inspection");
                return None;
            }
        };
        match Envelope::<Result<InspectReply, String>>::decode(&message.payload) {
            Ok(Envelope {
                body: Ok(reply), ..
            }) => Some(reply),
            Ok(Envelope {
                body: Err(error), ..
            }) => {
                tracing::warn!(node, error = %error, "a node refused an inspection");
                None
            }
            Err(error) => {
                tracing::warn!(node, error = %error, "unreadable inspection answer");
                None
            }
        }
    }

    async fn answer_inspection(&self, request: InspectRequest) -> InspectReply {
        inspect::answer(&self.runtime, request, |limit| self.moves(limit)).await
    }

    /// Answers inspections on this node's subject until `shutdown`.
    async fn serve_inspections(self: Arc<Self>, shutdown: CancellationToken) {
        let subject = inspect::node_subject(&self.settings.name, &self.settings.node_id);
        let mut subscriber = match self.client.subscribe(subject).await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::error!(error = %error, "cannot answer inspections: the admin view will report this node unreachable");
                return;
            }
        };
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = subscriber.next() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            let Some(reply_to) = message.reply else {
                continue;
            };
            let node = self.clone();
            tokio::spawn(async move {
                let answer = match Envelope::<InspectRequest>::decode(&message.payload) {
                    Ok(envelope) => Ok(node.answer_inspection(envelope.body).await),
                    Err(error) => Err(error.to_string()),
                };
                let body = Envelope::new(None, answer).encode();
                if let Err(error) = node.client.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %error, "answering an inspection failed");
                }
            });
        }
        let _ = subscriber.unsubscribe().await;
    }

    /// Publishes this node's transitions for the live tails of every node until `shutdown`
    /// (best effort, like the tail itself: a slow relay skips what it missed).
    async fn relay_transitions(self: Arc<Self>, shutdown: CancellationToken) {
        let mut notices = self.runtime.tail.subscribe();
        let subject = inspect::transitions_subject(&self.settings.name);
        loop {
            let notice = tokio::select! {
                () = shutdown.cancelled() => break,
                notice = notices.recv() => notice,
            };
            match notice {
                Ok(notice) => {
                    let body = Envelope::new(None, notice).encode();
                    if let Err(error) = self.client.publish(subject.clone(), body.into()).await {
                        tracing::debug!(error = %error, "relaying a transition failed");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    }

    /// The transitions of every node's actors, as they happen.
    pub async fn subscribe_transitions(
        &self,
    ) -> Result<impl futures::Stream<Item = TransitionNotice> + use<>, ClusterError> {
        let subscriber = self
            .client
            .subscribe(inspect::transitions_subject(&self.settings.name))
            .await
            .map_err(|error| ClusterError::Unavailable(error.to_string()))?;
        Ok(subscriber.filter_map(|message| async move {
            Envelope::<TransitionNotice>::decode(&message.payload)
                .ok()
                .map(|envelope| envelope.body)
        }))
    }

    /// Runs the control loop until `shutdown`, then hands every shard back and leaves.
    pub async fn run(self: Arc<Self>, mut member_revision: u64, shutdown: CancellationToken) {
        tokio::spawn(self.clone().serve_inspections(shutdown.clone()));
        tokio::spawn(self.clone().relay_transitions(shutdown.clone()));
        let tick = (self.settings.lease_ttl / 10)
            .clamp(Duration::from_millis(50), Duration::from_millis(500));
        let mut next_heartbeat = Duration::ZERO;
        loop {
            // Deadlines first: after a pause (SIGSTOP, a stalled runtime) the node must stop
            // serving what it may no longer own before it does anything else.
            self.renew_leases().await;
            if self.elapsed() >= next_heartbeat {
                let sent_at = self.elapsed();
                let record = {
                    let mut record = self
                        .member_record
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    record.heartbeat_at = now_iso();
                    record.clone()
                };
                match self.buckets.heartbeat(&record, member_revision).await {
                    Ok(revision) => {
                        member_revision = revision;
                        next_heartbeat = sent_at + self.settings.lease_ttl / 3;
                    }
                    Err(ClusterError::IdentityTaken(id)) => {
                        // The membership expired (the node was silent past its TTL) or another
                        // process took the id. Either way the leases cannot be trusted.
                        tracing::warn!(node = %id, "membership lost; stopping every shard and joining again");
                        self.stop_all("membership lost").await;
                        self.is_ready.store(false, Ordering::Release);
                        match self.buckets.join(&record).await {
                            Ok(revision) => {
                                member_revision = revision;
                                next_heartbeat = self.elapsed() + self.settings.lease_ttl / 3;
                                tracing::info!(node = %id, "joined the cluster again");
                            }
                            Err(ClusterError::IdentityTaken(id)) => {
                                tracing::error!(node = %id, "another live process has this node's id; leaving the cluster for good");
                                self.identity_conflict.store(true, Ordering::Release);
                                return;
                            }
                            Err(error) => {
                                tracing::warn!(error = %error, "joining again failed; retrying")
                            }
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "heartbeat failed"),
                }
            }
            // A round reads the buckets through consumers that end on the server's say-so; one
            // that never ends must not freeze the loop that renews the leases.
            match tokio::time::timeout(self.settings.lease_ttl, self.round()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "cluster round failed");
                    self.is_ready.store(false, Ordering::Release);
                }
                Err(_) => {
                    tracing::warn!(timeout = ?self.settings.lease_ttl, "cluster round timed out");
                    self.is_ready.store(false, Ordering::Release);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(tick) => {}
            }
        }
        self.is_ready.store(false, Ordering::Release);
        self.release_all("shutdown").await;
        if let Err(error) = self
            .buckets
            .leave(&self.settings.node_id, member_revision)
            .await
        {
            tracing::warn!(error = %error, "leaving the cluster failed; the membership expires by itself");
        }
    }

    /// One round (after `run` has renewed or dropped the held leases): move shards toward the
    /// desired placement.
    async fn round(&self) -> Result<(), ClusterError> {
        let members = self.buckets.members().await?;
        let leases = self.buckets.leases().await?;
        if let Ok(mut known) = self.members.write() {
            *known = members.clone();
        }
        // `--min-members` holds a starting cluster back until enough nodes have joined, so the
        // first nodes do not take every shard only to hand most over again. Once reached, it
        // is not a quorum: survivors of a failure take the dead node's shards.
        if members.len() >= self.settings.min_members {
            self.has_had_min_members.store(true, Ordering::Release);
        }
        let has_enough_members = self.has_had_min_members.load(Ordering::Acquire);
        let mut is_ready = has_enough_members;
        let mut acquired = 0;
        let mut handed_over = 0;
        // Moving shards must not delay renewals past their deadlines: a round stops moving
        // shards after a sixth of the TTL and the next round continues.
        let stop_moving_at = Instant::now() + self.settings.lease_ttl / 6;
        let mut taken = std::collections::HashSet::new();
        for kind in self.kinds() {
            let candidates: Vec<Candidate> = members
                .values()
                .filter(|member| member.serves_kind(kind))
                .map(|member| Candidate {
                    node_id: member.id.clone(),
                })
                .collect();
            for shard in 0..self.settings.shards {
                let desired = owner_of(kind, shard, &candidates).map(|owner| owner.node_id.clone());
                let is_mine = desired.as_deref() == Some(self.settings.node_id.as_str());
                let is_served = self.serves(kind, shard as usize);
                if is_mine && !is_served {
                    is_ready = false;
                    let is_free = !leases.contains_key(&(kind, shard));
                    if is_free
                        && !self.is_waiting_on_fence(kind, shard)
                        && has_enough_members
                        && acquired < ACQUIRES_PER_ROUND
                        && Instant::now() < stop_moving_at
                    {
                        acquired += 1;
                        if self.acquire(kind, shard).await? {
                            taken.insert((kind, shard));
                        }
                    }
                } else if !is_mine
                    && is_served
                    && handed_over < HANDOVERS_PER_ROUND
                    && Instant::now() < stop_moving_at
                {
                    // Hand over only to a live member (no ping-pong with a node that is gone).
                    if let Some(desired) = desired.filter(|owner| members.contains_key(owner)) {
                        handed_over += 1;
                        self.hand_over(kind, shard, desired).await;
                    }
                }
            }
        }
        if !taken.is_empty() {
            // A former owner that died between persisting a deadline and arming its timer left
            // it unarmed: re-arm the deadlines of the shards just taken.
            let rearmed = self
                .runtime
                .rearm_deadlines(|kind, shard| {
                    u32::try_from(shard).is_ok_and(|shard| taken.contains(&(kind, shard)))
                })
                .await
                .map_err(|error| ClusterError::Unavailable(format!("re-arming timers: {error}")))?;
            tracing::debug!(
                shards = taken.len(),
                timers = rearmed.len(),
                "re-armed the timers of taken shards"
            );
        }
        self.is_ready.store(is_ready, Ordering::Release);
        Ok(())
    }

    async fn renew_leases(&self) {
        let due: Vec<((EntityKind, u32), HeldLease, u64, bool)> = {
            let served = self
                .served
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            served
                .iter()
                .map(|(key, served)| (*key, served.lease, served.fence, served.is_fenced))
                .collect()
        };
        // Concurrently: with 256 shards per kind a node holds ~170 leases, and one KV round
        // trip after another would not fit into a renewal interval on a busy machine.
        futures::stream::iter(due)
            .for_each_concurrent(RENEWALS_AT_ONCE, |(key, lease, fence, is_fenced)| {
                self.renew_lease(key, lease, fence, is_fenced)
            })
            .await;
    }

    /// Renews one held lease when it is due, or stops serving its shard when it cannot be.
    async fn renew_lease(
        &self,
        (kind, shard): (EntityKind, u32),
        lease: HeldLease,
        fence: u64,
        is_fenced: bool,
    ) {
        {
            if is_fenced {
                tracing::warn!(kind = %kind, shard, "a newer owner fenced this shard in the store; stopping it");
                self.stop_serving(kind, shard, "fenced by a newer owner", None)
                    .await;
                return;
            }
            let record = self.lease_record(fence);
            match lease.next_action(self.elapsed(), &self.timing) {
                LeaseAction::Wait => {}
                LeaseAction::StopServing => {
                    tracing::warn!(kind = %kind, shard, "lease deadline passed without a renewal; stopping the shard");
                    self.stop_serving(kind, shard, "lease deadline passed", None)
                        .await;
                }
                LeaseAction::Renew { revision } => {
                    let sent_at = self.elapsed();
                    match self.buckets.renew(kind, shard, &record, revision).await {
                        Ok(revision) => {
                            let mut served = self
                                .served
                                .write()
                                .unwrap_or_else(|poisoned| poisoned.into_inner());
                            if let Some(entry) = served.get_mut(&(kind, shard)) {
                                entry.lease = entry.lease.renewed(revision, sent_at);
                            }
                        }
                        Err(RenewFailure::Lost) => {
                            tracing::warn!(kind = %kind, shard, "lease lost to another node; stopping the shard");
                            self.stop_serving(kind, shard, "lease lost", None).await;
                        }
                        Err(RenewFailure::Unreachable) => {
                            tracing::warn!(kind = %kind, shard, "lease renewal failed; retrying until the deadline");
                        }
                    }
                }
            }
        }
    }

    fn lease_record(&self, epoch: u64) -> LeaseRecord {
        LeaseRecord {
            owner: self.settings.node_id.clone(),
            incarnation: self.incarnation.clone(),
            epoch,
        }
    }

    /// Whether a recent fence raise for the shard timed out and it is not yet time to retry.
    fn is_waiting_on_fence(&self, kind: EntityKind, shard: u32) -> bool {
        let Ok(mut waits) = self.fence_waits.lock() else {
            return false;
        };
        let now = Instant::now();
        waits.retain(|_, until| *until > now);
        waits.contains_key(&(kind, shard))
    }

    /// Takes a free shard: acquires its lease, raises its fence, serves its subject. `true` when
    /// this node serves it now.
    async fn acquire(&self, kind: EntityKind, shard: u32) -> Result<bool, ClusterError> {
        let sent_at = self.elapsed();
        let Some(epoch) = self
            .buckets
            .acquire(kind, shard, &self.lease_record(0))
            .await?
        else {
            return Ok(false);
        };
        let lease = HeldLease::acquired(epoch, sent_at);
        // Raise the store's fence before serving: from now on a write by any earlier owner of
        // the shard (a paused one, say) is refused, even to entities not touched here yet.
        let fence = self.buckets.fencing_epoch(epoch);
        // The raise waits while a transaction of the former owner holds the fence document (a
        // node killed mid-commit leaves it until the store's transaction lifetime runs out).
        // The control loop must keep renewing the other leases meanwhile: give up after a
        // sixth of the TTL and try again in a later round.
        let raised = tokio::time::timeout(
            self.settings.lease_ttl / 6,
            self.runtime.store.raise_fence(kind.as_str(), shard, fence),
        )
        .await;
        match raised {
            Ok(Ok(stored)) if stored == fence => {}
            Ok(Ok(stored)) => {
                tracing::error!(kind = %kind, shard, fence, stored, "the store's fence is ahead of this lease; not serving");
                let _ = self.buckets.release(kind, shard, epoch).await;
                return Ok(false);
            }
            Err(_) => {
                tracing::warn!(kind = %kind, shard, "raising the fence is waiting on a former owner's transaction; trying again later");
                let _ = self.buckets.release(kind, shard, epoch).await;
                // The abandoned raise keeps waiting in the store; asking again every round
                // would only pile more waiters on it.
                if let Ok(mut waits) = self.fence_waits.lock() {
                    waits.insert((kind, shard), Instant::now() + self.settings.lease_ttl);
                }
                return Ok(false);
            }
            Ok(Err(error)) => {
                let _ = self.buckets.release(kind, shard, epoch).await;
                return Err(ClusterError::Unavailable(format!(
                    "raising the fence: {error}"
                )));
            }
        }
        // Fresh activations from here on: the shard was closed (drained) when this node last
        // stopped serving it, so nothing it held in an earlier tenure answers now.
        self.runtime.open_shard(kind, shard as usize).await;
        let stop = CancellationToken::new();
        let mut subscriber = match self
            .client
            .queue_subscribe(
                self.subject(kind, shard),
                format!("{}-actors", self.settings.name),
            )
            .await
        {
            Ok(subscriber) => subscriber,
            Err(error) => {
                self.runtime
                    .drain_shard(kind, shard as usize, DRAIN_DEADLINE)
                    .await;
                let _ = self.buckets.release(kind, shard, epoch).await;
                return Err(ClusterError::Unavailable(error.to_string()));
            }
        };
        let runtime = self.runtime.clone();
        let client = self.client.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = stopped.cancelled() => break,
                    message = subscriber.next() => match message {
                        Some(message) => message,
                        None => break,
                    },
                };
                let runtime = runtime.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let answer = match Envelope::<Routed>::decode(&message.payload) {
                        Ok(envelope) => {
                            let context = RequestContext {
                                request_id: envelope.request_id,
                            };
                            runtime.ask_local(envelope.body, context).await
                        }
                        Err(error) => Err(ActorError::Unavailable {
                            retry_after: Duration::from_secs(1),
                        })
                        .inspect_err(
                            |_| tracing::warn!(error = %error, "unreadable routed request"),
                        ),
                    };
                    if let Some(reply) = message.reply {
                        let body = Envelope::new(None, answer).encode();
                        if let Err(error) = client.publish(reply, body.into()).await {
                            tracing::warn!(error = %error, "answering a routed request failed");
                        }
                    }
                });
            }
            let _ = subscriber.unsubscribe().await;
        });
        if let Ok(mut served) = self.served.write() {
            served.insert(
                (kind, shard),
                Served {
                    lease,
                    fence,
                    stop,
                    is_fenced: false,
                },
            );
        }
        self.record_move(ShardMove {
            kind,
            shard,
            from: None,
            to: Some(self.settings.node_id.clone()),
            reason: "acquired".into(),
            from_epoch: None,
            to_epoch: Some(fence),
            at: now_iso(),
            drain_ms: 0,
            drained: 0,
            refused: 0,
        });
        Ok(true)
    }

    /// Stops serving a shard: no more requests are taken here, its actors drain, and the move
    /// is recorded. Returns the lease it held.
    async fn stop_serving(
        &self,
        kind: EntityKind,
        shard: u32,
        reason: &str,
        to: Option<String>,
    ) -> Option<HeldLease> {
        let served = {
            let mut served = self
                .served
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            served.remove(&(kind, shard))?
        };
        if to.is_none() {
            // Not a hand-over: a shard placement still gives this node is no longer served.
            self.is_ready.store(false, Ordering::Release);
        }
        served.stop.cancel();
        let started = Instant::now();
        let (drained, in_time) = self
            .runtime
            .drain_shard(kind, shard as usize, DRAIN_DEADLINE)
            .await;
        if !in_time {
            tracing::error!(kind = %kind, shard, "actors did not drain before the deadline");
        }
        self.record_move(ShardMove {
            kind,
            shard,
            from: Some(self.settings.node_id.clone()),
            to,
            reason: reason.into(),
            from_epoch: Some(served.fence),
            to_epoch: None,
            at: now_iso(),
            drain_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            drained,
            refused: 0,
        });
        Some(served.lease)
    }

    async fn hand_over(&self, kind: EntityKind, shard: u32, to: String) {
        if let Some(lease) = self.stop_serving(kind, shard, "rebalance", Some(to)).await
            && let Err(error) = self.buckets.release(kind, shard, lease.revision).await
        {
            tracing::warn!(kind = %kind, shard, error = %error, "releasing a lease failed; it expires by itself");
        }
    }

    async fn release_all(&self, reason: &str) {
        for (kind, shard, _) in self.served_shards() {
            if let Some(lease) = self.stop_serving(kind, shard, reason, None).await {
                let _ = self.buckets.release(kind, shard, lease.revision).await;
            }
        }
    }

    async fn stop_all(&self, reason: &str) {
        for (kind, shard, _) in self.served_shards() {
            self.stop_serving(kind, shard, reason, None).await;
        }
    }
}

#[async_trait::async_trait]
impl ShardRouter for ClusterNode {
    fn serves(&self, kind: EntityKind, shard: usize) -> bool {
        self.epoch(kind, shard).is_some()
    }

    fn epoch(&self, kind: EntityKind, shard: usize) -> Option<u64> {
        let shard = u32::try_from(shard).ok()?;
        let served = self
            .served
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        served
            .get(&(kind, shard))
            .filter(|served| {
                !served.is_fenced && served.lease.is_serving(self.elapsed(), &self.timing)
            })
            .map(|served| served.fence)
    }

    fn fenced(&self, kind: EntityKind, shard: usize) {
        let Ok(shard) = u32::try_from(shard) else {
            return;
        };
        let mut served = self
            .served
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(served) = served.get_mut(&(kind, shard)) {
            served.is_fenced = true;
        }
    }

    async fn forward(
        &self,
        kind: EntityKind,
        shard: usize,
        request: Envelope<Routed>,
        timeout: Duration,
    ) -> Result<Answer, ActorError> {
        let subject = self.subject(kind, u32::try_from(shard).unwrap_or(u32::MAX));
        let payload = bytes::Bytes::from(request.encode());
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(25);
        // A node that froze while subscribed (a paused process) keeps its queue subscription
        // until its lease deadline has passed and it resumes; a request it swallowed is asked
        // again after a fraction of the deadline. Requests are idempotent (rule 4), so a repeat
        // is harmless.
        let attempt_timeout = (timeout / 5).max(Duration::from_secs(1));
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ActorError::Unavailable {
                    retry_after: Duration::from_secs(1),
                });
            }
            let ask = async_nats::Request::new()
                .payload(payload.clone())
                .timeout(Some(remaining.min(attempt_timeout)));
            let retry = match self.client.send_request(subject.clone(), ask).await {
                Ok(message) => {
                    let reply = Envelope::<Result<Answer, ActorError>>::decode(&message.payload)
                        .map_err(|error| {
                            ActorError::Internal(format!("unreadable reply: {error}"))
                        })?;
                    match reply.body {
                        // It reached a former owner: the new one answers the next try.
                        Err(ActorError::NotServedHere) => true,
                        answer => return answer,
                    }
                }
                // Nobody serves the shard right now: it is between owners.
                Err(error) if error.kind() == RequestErrorKind::NoResponders => true,
                Err(error) if error.kind() == RequestErrorKind::TimedOut => true,
                Err(error) => {
                    tracing::warn!(error = %error, "routing a request failed");
                    return Err(ActorError::Unavailable {
                        retry_after: Duration::from_secs(1),
                    });
                }
            };
            if retry {
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(remaining)).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}
