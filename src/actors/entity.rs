//! The actor directory: finds, activates, admits, supervises and passivates entity actors.
//!
//! Owns the life cycle every ticket and order actor shares, as virtual actors: an actor is
//! activated by the first message to its id (it loads its state in `pre_start`), is linked to
//! its shard's supervisor, and is passivated when idle. Admission is bounded per actor: a request
//! beyond `mailbox_limit` gets `Overloaded` with a `Retry-After` computed from the depth and the
//! actor's recent service time. A crash restarts the actor from the store, within a restart
//! budget; an entity that exhausts it is quarantined for a cool-down.
//!
//! Invariant (passivation is a hand-over in miniature): an entry is removed from its shard only
//! while holding the shard lock with a depth of zero, and depth is raised under the same lock,
//! so a message is never handed to an actor that is stopping; the next message activates a
//! fresh copy that loads what the old one persisted.
//!
//! It must not know what a ticket or an order is: entity actors implement `EntityActor`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};

use super::{ActorError, Runtime};
use crate::domain::ObjectId;
use crate::metrics::Metrics;

/// The kinds of entity actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Ticket,
    Order,
}

impl EntityKind {
    /// The lowercase name used in paths, metrics and NATS subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Ticket => "ticket",
            EntityKind::Order => "order",
        }
    }
}

impl std::fmt::Display for EntityKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for EntityKind {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "ticket" => Ok(EntityKind::Ticket),
            "order" => Ok(EntityKind::Order),
            _ => Err(()),
        }
    }
}

/// Crashes allowed per entity within `RESTART_WINDOW` before it is quarantined.
pub const MAX_RESTARTS: u32 = 3;
/// The window restarts are counted in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// How long an entity that exhausted its restarts refuses requests.
pub const QUARANTINE: Duration = Duration::from_secs(10);

/// What an actor shows the directory about itself, updated after each transition. Reading it
/// never touches the actor, so inspection cannot stall it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Whether the entity exists in the store.
    pub exists: bool,
    /// The entity's status (`available`, `reserved`, `created`, ...).
    pub status: String,
    pub version: Option<u64>,
    /// Whether no request can change the entity any more (a cancelled or paid order). Such an
    /// actor only answers reads, so it is passivated after a second idle, like an absent one.
    #[serde(skip)]
    pub is_final: bool,
}

/// Per-activation bookkeeping shared between the directory and the actor.
pub struct EntityCell {
    pub kind: EntityKind,
    pub id: ObjectId,
    pub shard: usize,
    depth: AtomicUsize,
    last_active_ms: AtomicU64,
    service_micros: AtomicU64,
    started: Instant,
    snapshot: std::sync::Mutex<Snapshot>,
    /// Set before the activation is stopped on purpose (stale, handed over): the requests still
    /// queued in its mailbox are dropped unanswered, and that is not a crash.
    retired: AtomicBool,
    /// Set once a client's request reached this activation. One that only did the platform's
    /// own work (an expiry's release, a timer, a reconciliation) is stopped once it has nothing
    /// queued, so an expiry storm does not keep an actor per expired order in memory.
    asked_by_client: AtomicBool,
}

impl EntityCell {
    fn new(kind: EntityKind, id: ObjectId, shard: usize, started: Instant) -> EntityCell {
        EntityCell {
            kind,
            id,
            shard,
            depth: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(elapsed_ms(started)),
            service_micros: AtomicU64::new(1000),
            started,
            snapshot: std::sync::Mutex::new(Snapshot::default()),
            retired: AtomicBool::new(false),
            asked_by_client: AtomicBool::new(false),
        }
    }

    /// Records that a client's request reached the actor, so it stays live for
    /// `passivate_after` once idle.
    pub fn note_client_request(&self) {
        self.asked_by_client.store(true, Ordering::Relaxed);
    }

    fn was_asked_by_client(&self) -> bool {
        self.asked_by_client.load(Ordering::Relaxed)
    }

    /// Marks the activation as stopped on purpose; call before stopping it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Requests queued or running in the actor.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// The actor's last published snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .map(|snapshot| snapshot.clone())
            .unwrap_or_default()
    }

    /// Publishes the actor's current state for inspection.
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        if let Ok(mut current) = self.snapshot.lock() {
            *current = snapshot;
        }
    }

    /// Records how long one message took (an exponential moving average).
    pub fn record_service_time(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let previous = self.service_micros.load(Ordering::Relaxed);
        self.service_micros
            .store((previous * 7 + sample) / 8, Ordering::Relaxed);
    }

    /// Whether the actor is stopped after a second idle: no client asked it anything, or its
    /// entity is absent or final.
    fn is_short_lived(&self) -> bool {
        !self.was_asked_by_client()
            || self
                .snapshot
                .lock()
                .is_ok_and(|snapshot| !snapshot.exists || snapshot.is_final)
    }

    fn idle_for(&self) -> Duration {
        let now = elapsed_ms(self.started);
        Duration::from_millis(now.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)))
    }

    /// How long a refused caller should wait: the queue ahead of it times the recent service
    /// time, at least one second and at most thirty.
    fn retry_after(&self) -> Duration {
        let queued = u64::try_from(self.depth()).unwrap_or(u64::MAX);
        let micros = queued.saturating_mul(self.service_micros.load(Ordering::Relaxed));
        Duration::from_micros(micros).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What an entity actor is started with.
pub struct EntityArgs {
    pub cell: Arc<EntityCell>,
    pub runtime: Arc<Runtime>,
}

/// An actor that lives in the directory: one per entity id, started with `EntityArgs`.
pub trait EntityActor: Actor<Arguments = EntityArgs> + Sized {
    /// Which kind of entity it serves.
    const KIND: EntityKind;
    /// A new handler (the state comes from `pre_start`).
    fn create() -> Self;
}

struct Entry<M: ractor::Message> {
    actor: ActorRef<M>,
    cell: Arc<EntityCell>,
}

impl<M: ractor::Message> Clone for Entry<M> {
    fn clone(&self) -> Self {
        Entry {
            actor: self.actor.clone(),
            cell: self.cell.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct RestartRecord {
    window_start: Instant,
    in_window: u32,
    total: u32,
    quarantined_until: Option<Instant>,
}

struct ShardState<M: ractor::Message> {
    entities: HashMap<ObjectId, Entry<M>>,
    by_actor: HashMap<ActorId, ObjectId>,
    restarts: HashMap<ObjectId, RestartRecord>,
}

impl<M: ractor::Message> ShardState<M> {
    /// Whether `actor` is the entity's current activation (not one already replaced).
    fn is_current(&self, id: ObjectId, actor: ActorId) -> bool {
        self.entities
            .get(&id)
            .is_some_and(|entry| entry.actor.get_id() == actor)
    }

    /// Records the crash of the activation `actor` once (the caller that saw it and the
    /// supervisor both report it): forgets the activation and counts the restart. Returns the
    /// entity and whether it is now quarantined, or `None` when already recorded.
    fn note_crash(
        &mut self,
        actor: ActorId,
        counters: &KindCounters,
        kind: EntityKind,
    ) -> Option<(ObjectId, bool)> {
        let id = self.by_actor.remove(&actor)?;
        if self.is_current(id, actor) {
            self.entities.remove(&id);
            counters.deactivated(kind, 1);
        }
        let now = Instant::now();
        let record = self.restarts.entry(id).or_insert(RestartRecord {
            window_start: now,
            in_window: 0,
            total: 0,
            quarantined_until: None,
        });
        if now.duration_since(record.window_start) > RESTART_WINDOW {
            record.window_start = now;
            record.in_window = 0;
        }
        record.in_window += 1;
        record.total += 1;
        counters
            .metrics
            .actor_restarts
            .get_or_create(&Metrics::kind(kind.as_str()))
            .inc();
        let is_quarantined = record.in_window > MAX_RESTARTS;
        if is_quarantined {
            record.quarantined_until = Some(now + QUARANTINE);
        }
        Some((id, is_quarantined))
    }
}

impl<M: ractor::Message> Default for ShardState<M> {
    fn default() -> Self {
        ShardState {
            entities: HashMap::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
        }
    }
}

/// Counters shared by a kind's table and its shards.
struct KindCounters {
    live: AtomicUsize,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl KindCounters {
    fn activated(&self, kind: EntityKind) {
        self.live.fetch_add(1, Ordering::Relaxed);
        let labels = Metrics::kind(kind.as_str());
        self.metrics.actor_activations.get_or_create(&labels).inc();
        self.metrics.actors_live.get_or_create(&labels).inc();
    }

    fn deactivated(&self, kind: EntityKind, count: usize) {
        if count == 0 {
            return;
        }
        self.live.fetch_sub(count, Ordering::Relaxed);
        self.metrics
            .actors_live
            .get_or_create(&Metrics::kind(kind.as_str()))
            .dec_by(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

/// One shard of a kind: its live entities and its supervisor.
pub struct Shard<A: EntityActor> {
    index: usize,
    /// Whether this node serves the shard: a closed shard activates nothing and admits nothing.
    /// Changed while holding `state`, so it is read consistently with the entities (except by
    /// `close_all`, which runs before the first request).
    is_open: AtomicBool,
    state: tokio::sync::Mutex<ShardState<A::Msg>>,
    supervisor: tokio::sync::OnceCell<ActorRef<SupervisorMsg>>,
    counters: Arc<KindCounters>,
}

impl<A: EntityActor> Shard<A> {
    fn is_open(&self) -> bool {
        self.is_open.load(Ordering::Acquire)
    }
}

/// A live actor as the admin view lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveActor {
    pub kind: EntityKind,
    pub id: ObjectId,
    pub shard: usize,
    pub mailbox_depth: usize,
    pub restarts: u32,
    /// Whether the entity exhausted its restarts and refuses requests for now.
    pub quarantined: bool,
    /// Whether its mailbox is close to the admission limit (see `DirectoryConfig::is_overloaded`).
    pub overloaded: bool,
    pub snapshot: Snapshot,
}

/// What the directory knows about one entity without asking it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityInfo {
    pub shard: usize,
    pub active: bool,
    pub mailbox_depth: usize,
    pub restarts: u32,
    pub quarantined: bool,
    /// Whether its mailbox is close to the admission limit (see `DirectoryConfig::is_overloaded`).
    pub overloaded: bool,
}

/// Tuning of a directory.
#[derive(Clone, Copy, Debug)]
pub struct DirectoryConfig {
    pub shards: usize,
    pub mailbox_limit: usize,
    pub passivate_after: Duration,
    /// Live actors per kind above which actors idle for 100 ms are passivated early.
    pub max_live: usize,
}

impl DirectoryConfig {
    /// Whether an actor with `depth` requests queued or running is overloaded: at three quarters
    /// of `mailbox_limit` it still admits requests, but it is close to refusing them with 503,
    /// which is what an operator wants to see before it happens.
    pub fn is_overloaded(&self, depth: usize) -> bool {
        depth > 0 && depth.saturating_mul(4) >= self.mailbox_limit.saturating_mul(3)
    }
}

impl RestartRecord {
    /// Whether the entity still refuses requests after exhausting its restarts.
    fn is_quarantined(&self, now: Instant) -> bool {
        self.quarantined_until.is_some_and(|until| until > now)
    }
}

/// The directory of one kind of entity actor.
pub struct EntityTable<A: EntityActor> {
    shards: Vec<Arc<Shard<A>>>,
    runtime: Weak<Runtime>,
    config: DirectoryConfig,
    counters: Arc<KindCounters>,
}

impl<A: EntityActor> EntityTable<A> {
    /// An empty directory; shard supervisors start on first use.
    pub fn new(runtime: Weak<Runtime>, config: DirectoryConfig, metrics: Arc<Metrics>) -> Self {
        let counters = Arc::new(KindCounters {
            live: AtomicUsize::new(0),
            started: Instant::now(),
            metrics,
        });
        let shards = (0..config.shards.max(1))
            .map(|index| {
                Arc::new(Shard {
                    index,
                    is_open: AtomicBool::new(true),
                    state: tokio::sync::Mutex::new(ShardState::default()),
                    supervisor: tokio::sync::OnceCell::new(),
                    counters: counters.clone(),
                })
            })
            .collect();
        EntityTable {
            shards,
            runtime,
            config,
            counters,
        }
    }

    /// The shard an id lives on.
    pub fn shard_of(&self, id: ObjectId) -> usize {
        usize::try_from(id.stable_hash() % self.shards.len() as u64).unwrap_or(0)
    }

    /// Activated actors of this kind.
    pub fn live(&self) -> usize {
        self.counters.live.load(Ordering::Relaxed)
    }

    /// Sends a request to the actor of `id` and waits for its answer, activating it if needed.
    pub async fn call<T, F>(
        &self,
        id: ObjectId,
        build: F,
        timeout: Duration,
    ) -> Result<T, ActorError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<Result<T, ActorError>>) -> A::Msg,
    {
        let shard = self.shards[self.shard_of(id)].clone();
        let entry = {
            let mut state = shard.state.lock().await;
            if !shard.is_open() {
                return Err(ActorError::NotServedHere);
            }
            if let Some(record) = state.restarts.get(&id)
                && let Some(until) = record.quarantined_until
            {
                let now = Instant::now();
                if until > now {
                    self.refuse("quarantined");
                    return Err(ActorError::Quarantined {
                        retry_after: until - now,
                    });
                }
            }
            let entry = match state.entities.get(&id) {
                Some(entry) => entry.clone(),
                None => self.activate(&shard, &mut state, id).await?,
            };
            if entry.cell.depth() >= self.config.mailbox_limit {
                self.refuse("mailbox_full");
                return Err(ActorError::Overloaded {
                    retry_after: entry.cell.retry_after(),
                });
            }
            entry.cell.depth.fetch_add(1, Ordering::AcqRel);
            entry
        };
        let metrics = &self.counters.metrics;
        let kind_labels = Metrics::kind(A::KIND.as_str());
        metrics.mailbox_depth.get_or_create(&kind_labels).inc();
        let result = entry.actor.call(build, Some(timeout)).await;
        entry
            .cell
            .last_active_ms
            .store(elapsed_ms(self.counters.started), Ordering::Relaxed);
        entry.cell.depth.fetch_sub(1, Ordering::AcqRel);
        metrics.mailbox_depth.get_or_create(&kind_labels).dec();
        match result {
            Ok(CallResult::Success(answer)) => {
                if !entry.cell.was_asked_by_client() {
                    self.passivate_if_idle(&shard, &entry).await;
                }
                answer
            }
            Ok(CallResult::Timeout) => Err(ActorError::Timeout),
            // The request was still queued when the activation was stopped on purpose (another
            // activation or a newer owner wrote the entity, or the shard was handed over): it
            // never ran, and asking again reaches the current activation or owner.
            Ok(CallResult::SenderError) if entry.cell.is_retired() => {
                Err(ActorError::Unavailable {
                    retry_after: Duration::from_secs(1),
                })
            }
            // The reply port was dropped unanswered: the handler crashed. Forget that
            // activation now, so the next request never meets the dead actor.
            Ok(CallResult::SenderError) => {
                let mut state = shard.state.lock().await;
                if let Some((id, quarantined)) =
                    state.note_crash(entry.actor.get_id(), &self.counters, A::KIND)
                {
                    log_crash(A::KIND, id, quarantined, &"handler panicked or failed");
                }
                Err(ActorError::Crashed)
            }
            // The actor had stopped (crashed or stopped itself) before taking the message.
            Err(_) => Err(ActorError::Unavailable {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    fn refuse(&self, reason: &str) {
        self.counters
            .metrics
            .admission_refusals
            .get_or_create(&crate::metrics::KindReasonLabels {
                kind: A::KIND.as_str().into(),
                reason: reason.into(),
            })
            .inc();
    }

    async fn supervisor(
        &self,
        shard: &Arc<Shard<A>>,
    ) -> Result<ActorRef<SupervisorMsg>, ActorError> {
        shard
            .supervisor
            .get_or_try_init(|| async {
                let supervisor = ShardSupervisor::<A> {
                    shard: shard.clone(),
                    runtime: self.runtime.clone(),
                };
                let (actor, _) = Actor::spawn(None, supervisor, ())
                    .await
                    .map_err(|error| ActorError::Internal(format!("supervisor spawn: {error}")))?;
                Ok(actor)
            })
            .await
            .cloned()
    }

    async fn activate(
        &self,
        shard: &Arc<Shard<A>>,
        state: &mut ShardState<A::Msg>,
        id: ObjectId,
    ) -> Result<Entry<A::Msg>, ActorError> {
        let runtime = self.runtime.upgrade().ok_or(ActorError::ShuttingDown)?;
        let supervisor = self.supervisor(shard).await?;
        let entry =
            spawn_entity::<A>(runtime, &supervisor, shard.index, id, self.counters.started).await?;
        state.by_actor.insert(entry.actor.get_id(), id);
        state.entities.insert(id, entry.clone());
        self.counters.activated(A::KIND);
        Ok(entry)
    }

    /// Stops the activation `entry` if nothing is queued for it (under the shard lock, like
    /// `passivate_idle`) and it is still the entity's current one.
    async fn passivate_if_idle(&self, shard: &Shard<A>, entry: &Entry<A::Msg>) {
        let removed = {
            let mut state = shard.state.lock().await;
            if !state.is_current(entry.cell.id, entry.actor.get_id()) || entry.cell.depth() != 0 {
                return;
            }
            state.entities.remove(&entry.cell.id)
        };
        self.stop_passivated(removed);
    }

    /// Stops activations already removed from their shard; returns how many.
    fn stop_passivated(&self, entries: impl IntoIterator<Item = Entry<A::Msg>>) -> usize {
        let mut stopped = 0;
        for entry in entries {
            // A graceful stop: the actor has nothing queued (depth was zero under the lock).
            entry.actor.stop(Some("passivated".into()));
            stopped += 1;
        }
        self.counters.deactivated(A::KIND, stopped);
        self.counters
            .metrics
            .actor_passivations
            .get_or_create(&Metrics::kind(A::KIND.as_str()))
            .inc_by(stopped as u64);
        stopped
    }

    /// Stops actors idle longer than `passivate_after` (after one second, entities that do not
    /// exist or can no longer change, and actors no client asked), and, while more than
    /// `max_live` are active, actors idle for 100 ms in the shards' order, not the idlest first.
    /// Returns how many were stopped.
    pub async fn passivate_idle(&self) -> usize {
        let mut stopped = 0;
        let over_budget = self.live().saturating_sub(self.config.max_live);
        let mut evict_budget = over_budget;
        for shard in &self.shards {
            let victims: Vec<Entry<A::Msg>> = {
                let mut state = shard.state.lock().await;
                let now = Instant::now();
                state.restarts.retain(|_, record| {
                    record.is_quarantined(now)
                        || record.window_start.elapsed() < RESTART_WINDOW
                        || record.total > 0
                });
                let ids: Vec<ObjectId> = state
                    .entities
                    .iter()
                    .filter(|(_, entry)| entry.cell.depth() == 0)
                    .filter(|(_, entry)| {
                        let idle = entry.cell.idle_for();
                        idle >= self.config.passivate_after
                            || (idle >= Duration::from_secs(1) && entry.cell.is_short_lived())
                            || (evict_budget > 0 && idle >= Duration::from_millis(100))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| {
                        let entry = state.entities.remove(&id)?;
                        evict_budget = evict_budget.saturating_sub(1);
                        Some(entry)
                    })
                    .collect()
            };
            stopped += self.stop_passivated(victims);
        }
        stopped
    }

    /// Live actors, ordered by id, after `after`, at most `limit`. Reads only snapshots.
    pub async fn list_live(&self, after: Option<ObjectId>, limit: usize) -> Vec<LiveActor> {
        let mut all = Vec::new();
        let now = Instant::now();
        for shard in &self.shards {
            let state = shard.state.lock().await;
            for (id, entry) in &state.entities {
                if after.is_some_and(|after| *id <= after) {
                    continue;
                }
                let record = state.restarts.get(id);
                let depth = entry.cell.depth();
                all.push(LiveActor {
                    kind: A::KIND,
                    id: *id,
                    shard: shard.index,
                    mailbox_depth: depth,
                    restarts: record.map_or(0, |record| record.total),
                    quarantined: record.is_some_and(|record| record.is_quarantined(now)),
                    overloaded: self.config.is_overloaded(depth),
                    snapshot: entry.cell.snapshot(),
                });
            }
        }
        all.sort_by_key(|actor| actor.id);
        all.truncate(limit);
        all
    }

    /// What the directory knows about `id`, without activating it.
    pub async fn info(&self, id: ObjectId) -> EntityInfo {
        let shard = &self.shards[self.shard_of(id)];
        let state = shard.state.lock().await;
        let entry = state.entities.get(&id);
        let record = state.restarts.get(&id);
        let depth = entry.map_or(0, |entry| entry.cell.depth());
        EntityInfo {
            shard: shard.index,
            active: entry.is_some(),
            mailbox_depth: depth,
            restarts: record.map_or(0, |record| record.total),
            quarantined: record.is_some_and(|record| record.is_quarantined(Instant::now())),
            overloaded: self.config.is_overloaded(depth),
        }
    }

    /// Closes every shard: nothing is activated until `open_shard` (a cluster node opens the
    /// shards it acquires). Called before the first request.
    pub fn close_all(&self) {
        for shard in &self.shards {
            shard.is_open.store(false, Ordering::Release);
        }
    }

    /// Opens a shard this node now serves: the next request activates a fresh copy of each
    /// entity, loaded from the store.
    pub async fn open_shard(&self, shard: usize) {
        if let Some(shard) = self.shards.get(shard) {
            let _state = shard.state.lock().await;
            shard.is_open.store(true, Ordering::Release);
        }
    }

    /// Hands a shard over: closes it (a request still on its way here gets `NotServedHere`,
    /// and nothing is activated until it is opened again, so no copy loaded now can outlive
    /// this tenure and answer from stale memory in a later one), drains its live actors (each
    /// finishes what it has queued, for at most `deadline`) and stops them. Returns how many
    /// were stopped and whether all drained in time. The caller has already stopped routing
    /// requests here.
    pub async fn drain_shard(&self, shard: usize, deadline: Duration) -> (usize, bool) {
        let Some(shard) = self.shards.get(shard) else {
            return (0, true);
        };
        let entries: Vec<Entry<A::Msg>> = {
            let mut state = shard.state.lock().await;
            shard.is_open.store(false, Ordering::Release);
            let entries: Vec<Entry<A::Msg>> =
                state.entities.drain().map(|(_, entry)| entry).collect();
            for entry in &entries {
                state.by_actor.remove(&entry.actor.get_id());
            }
            entries
        };
        let mut in_time = true;
        for entry in &entries {
            if entry.actor.drain_and_wait(Some(deadline)).await.is_err() {
                in_time = false;
                entry.cell.retire();
                entry.actor.stop(Some("hand-over deadline".into()));
            }
        }
        self.counters.deactivated(A::KIND, entries.len());
        (entries.len(), in_time)
    }

    /// Drains every live actor (each finishes what it has queued) and stops the supervisors.
    pub async fn shutdown(&self, deadline: Duration) {
        for shard in &self.shards {
            let entries: Vec<Entry<A::Msg>> = {
                let mut state = shard.state.lock().await;
                state.by_actor.clear();
                state.entities.drain().map(|(_, entry)| entry).collect()
            };
            for entry in entries {
                let _ = entry.actor.drain_and_wait(Some(deadline)).await;
            }
            if let Some(supervisor) = shard.supervisor.get() {
                supervisor.stop(None);
            }
        }
        let live = self.live();
        self.counters.deactivated(A::KIND, live);
    }
}

async fn spawn_entity<A: EntityActor>(
    runtime: Arc<Runtime>,
    supervisor: &ActorRef<SupervisorMsg>,
    shard: usize,
    id: ObjectId,
    started: Instant,
) -> Result<Entry<A::Msg>, ActorError> {
    let cell = Arc::new(EntityCell::new(A::KIND, id, shard, started));
    let args = EntityArgs {
        cell: cell.clone(),
        runtime,
    };
    match Actor::spawn_linked(None, A::create(), args, supervisor.get_cell()).await {
        Ok((actor, _)) => Ok(Entry { actor, cell }),
        Err(error) => {
            tracing::warn!(kind = %A::KIND, entity = %id, error = %error, "activation failed");
            Err(ActorError::Unavailable {
                retry_after: Duration::from_secs(1),
            })
        }
    }
}

fn log_crash(kind: EntityKind, id: ObjectId, quarantined: bool, error: &dyn std::fmt::Display) {
    if quarantined {
        tracing::error!(kind = %kind, entity = %id, error = %error, "actor crashed too often, quarantined");
    } else {
        tracing::warn!(kind = %kind, entity = %id, error = %error, "actor crashed, restarting from the store");
    }
}

/// A shard supervisor has no messages of its own; it only receives supervision events.
pub enum SupervisorMsg {}

/// Supervises the entity actors of one shard: restarts crashed ones from the store within the
/// restart budget and quarantines those that exhaust it.
struct ShardSupervisor<A: EntityActor> {
    shard: Arc<Shard<A>>,
    runtime: Weak<Runtime>,
}

impl<A: EntityActor> Actor for ShardSupervisor<A> {
    type Msg = SupervisorMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    /// Overrides ractor's default, which would stop the supervisor whenever any child exits
    /// (every passivation).
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let mut state = self.shard.state.lock().await;
                let counters = &self.shard.counters;
                let noted = state.note_crash(cell.get_id(), counters, A::KIND);
                if let Some((id, quarantined)) = noted {
                    log_crash(A::KIND, id, quarantined, &error);
                }
                // Restart eagerly from the store, unless the entity is quarantined or a request
                // already activated a fresh copy.
                let id = match noted {
                    Some((id, false)) => id,
                    _ => return Ok(()),
                };
                if state.entities.contains_key(&id) || !self.shard.is_open() {
                    return Ok(());
                }
                let Some(runtime) = self.runtime.upgrade() else {
                    return Ok(());
                };
                match spawn_entity::<A>(runtime, &myself, self.shard.index, id, counters.started)
                    .await
                {
                    Ok(entry) => {
                        state.by_actor.insert(entry.actor.get_id(), id);
                        state.entities.insert(id, entry);
                        counters.activated(A::KIND);
                    }
                    Err(error) => {
                        tracing::warn!(kind = %A::KIND, entity = %id, error = %error, "restart failed; the next request activates it");
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let mut state = self.shard.state.lock().await;
                if let Some(id) = state.by_actor.remove(&cell.get_id())
                    && state.is_current(id, cell.get_id())
                {
                    // It stopped itself (e.g. it found it was stale): forget it; the next
                    // message activates a fresh copy.
                    state.entities.remove(&id);
                    self.shard.counters.deactivated(A::KIND, 1);
                    tracing::info!(kind = %A::KIND, entity = %id, reason = ?reason, "actor stopped itself");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::DirectoryConfig;

    fn config(mailbox_limit: usize) -> DirectoryConfig {
        DirectoryConfig {
            shards: 1,
            mailbox_limit,
            passivate_after: Duration::from_secs(60),
            max_live: 10,
        }
    }

    #[test]
    fn an_actor_is_overloaded_from_three_quarters_of_its_mailbox_limit() {
        let default = config(1000);
        assert!(!default.is_overloaded(0));
        assert!(!default.is_overloaded(749));
        assert!(default.is_overloaded(750));
        assert!(default.is_overloaded(1000));
        let tiny = config(2);
        assert!(!tiny.is_overloaded(1));
        assert!(tiny.is_overloaded(2));
        assert!(
            !config(1).is_overloaded(0),
            "an idle actor is never overloaded"
        );
        assert!(config(1).is_overloaded(1));
    }
}
