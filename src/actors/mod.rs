//! The actor runtime: one supervised ractor actor per ticket and per order, found through the
//! directory, deciding through the domain, persisting through the `Store` before replying.
//!
//! Owns the `Runtime` (directory, ports, background workers) and the operations the HTTP layer
//! calls. It must not speak HTTP: it returns `ActorError`s that map to an `ErrorKind`.

mod background;
pub mod entity;
mod held;
mod order;
pub mod request;
mod ticket;

pub use background::BackgroundTasks;
pub use entity::{DirectoryConfig, EntityInfo, EntityKind, LiveActor, Snapshot};
pub use order::{OrderActor, OrderMsg};
pub use request::{Answer, Envelope, OrderRequest, Routed, TicketRequest, WireError};
pub use ticket::{TicketActor, TicketMsg};

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::domain::{
    HolderStatus, ObjectId, Order, OrderId, OrderRefusal, Payment, Price, Ticket, TicketId,
    TicketRefusal, Timestamp, Title, UserId,
};
use crate::error::ErrorKind;
use crate::ids::IdGenerator;
use crate::metrics::Metrics;
use crate::payments::{PaymentError, PaymentGateway};
use crate::store::{
    Command, CommitReceipt, DeadlineKind, Fence, Store, StoreError, Transition, UnitOfWork,
};
use crate::timers::{TimerKey, Timers};
use entity::EntityTable;

/// Why an actor operation did not succeed. Serialisable: it is also the error reply of a
/// request routed to another node.
#[derive(Debug, Clone, Serialize, serde::Deserialize, thiserror::Error)]
pub enum ActorError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Ticket(#[from] TicketRefusal),
    #[error(transparent)]
    Order(#[from] OrderRefusal),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error("actor mailbox full")]
    Overloaded { retry_after: Duration },
    #[error("entity quarantined after repeated crashes")]
    Quarantined { retry_after: Duration },
    #[error("temporarily unavailable")]
    Unavailable { retry_after: Duration },
    #[error("actor did not answer in time")]
    Timeout,
    #[error("actor crashed while handling the request")]
    Crashed,
    #[error("shutting down")]
    ShuttingDown,
    /// A routed request reached a node that no longer serves the entity's shard: the sender
    /// retries, the shard's new owner answers.
    #[error("the shard is not served here")]
    NotServedHere,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ActorError {
    /// The kind of failure, which picks the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ActorError::NotFound => ErrorKind::NotFound,
            ActorError::Ticket(TicketRefusal::NotOwner)
            | ActorError::Order(OrderRefusal::NotOwner) => ErrorKind::Unauthorized,
            ActorError::Ticket(_) | ActorError::Order(_) => ErrorKind::BadRequest,
            ActorError::Payment(PaymentError::Declined(_)) => ErrorKind::PaymentRequired,
            ActorError::Payment(PaymentError::InvalidToken | PaymentError::Rejected(_)) => {
                ErrorKind::BadRequest
            }
            ActorError::Payment(PaymentError::Unavailable(_)) => ErrorKind::Unavailable {
                retry_after: Duration::from_secs(5),
            },
            ActorError::Overloaded { retry_after }
            | ActorError::Quarantined { retry_after }
            | ActorError::Unavailable { retry_after } => ErrorKind::Unavailable {
                retry_after: *retry_after,
            },
            ActorError::Timeout | ActorError::ShuttingDown | ActorError::NotServedHere => {
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                }
            }
            ActorError::Crashed | ActorError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message a client may see (internal causes are never shown).
    pub fn public_message(&self) -> String {
        match self {
            ActorError::NotFound => "Not Found".into(),
            ActorError::Ticket(refusal) => refusal.to_string(),
            ActorError::Order(refusal) => refusal.to_string(),
            ActorError::Payment(
                PaymentError::Declined(message) | PaymentError::Rejected(message),
            ) => message.clone(),
            ActorError::Payment(PaymentError::InvalidToken) => "Invalid payment token".into(),
            ActorError::Payment(PaymentError::Unavailable(_))
            | ActorError::Overloaded { .. }
            | ActorError::Quarantined { .. }
            | ActorError::Unavailable { .. }
            | ActorError::Timeout
            | ActorError::ShuttingDown
            | ActorError::NotServedHere => "Service unavailable".into(),
            ActorError::Crashed | ActorError::Internal(_) => "Something went wrong".into(),
        }
    }
}

impl From<StoreError> for ActorError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::VersionConflict { .. }
            | StoreError::Fenced { .. }
            | StoreError::Unavailable(_)
            | StoreError::InUse(_) => ActorError::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            StoreError::EmailTaken | StoreError::Corrupt(_) => {
                ActorError::Internal(error.to_string())
            }
        }
    }
}

/// Who asked, for the transition history.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub request_id: Option<String>,
}

/// One entry of the admin live tail: a transition as it happens.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionNotice {
    pub kind: EntityKind,
    pub id: ObjectId,
    pub transition: Transition,
}

/// Tuning of the runtime.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeConfig {
    pub order_ttl: Duration,
    pub directory: DirectoryConfig,
    /// How long an actor call may take before the caller gets 503.
    pub call_timeout: Duration,
    /// How long past its deadline a reservation is trusted before the ticket asks its order.
    pub hold_grace: Duration,
    /// Whether the test-only crash hook is enabled.
    pub test_hooks: bool,
    /// True for the embedded single node: only then may start-up assume that no order is being
    /// created anywhere, and settle at once a reservation whose order does not exist (in a
    /// cluster, another node may be saving that order right now; the reservation's deadline
    /// settles it there).
    pub is_single_node: bool,
}

/// The actor system of one node and the ports it uses.
pub struct Runtime {
    pub config: RuntimeConfig,
    pub store: Arc<dyn Store>,
    pub timers: Arc<dyn Timers>,
    pub gateway: Arc<dyn PaymentGateway>,
    pub metrics: Arc<Metrics>,
    pub ids: IdGenerator,
    pub tickets: EntityTable<TicketActor>,
    pub orders: EntityTable<OrderActor>,
    pub tail: broadcast::Sender<TransitionNotice>,
    outbox_written: Notify,
    commands_done: mpsc::UnboundedSender<u64>,
    crash_hooks: Mutex<HashSet<(EntityKind, ObjectId)>>,
    started: Instant,
    router: OnceLock<Arc<dyn ShardRouter>>,
}

/// Sends requests for shards this node does not serve to the node that does (cluster mode).
#[async_trait::async_trait]
pub trait ShardRouter: Send + Sync + 'static {
    /// True while this node serves `shard` of `kind` (requests for it stay local).
    fn serves(&self, kind: EntityKind, shard: usize) -> bool;

    /// The fencing epoch this node serves `shard` with, or `None` when it does not serve it
    /// (then nothing of the shard may be written here).
    fn epoch(&self, kind: EntityKind, shard: usize) -> Option<u64>;

    /// A write of `shard` met a higher fence in the store: another node owns it now.
    fn fenced(&self, kind: EntityKind, shard: usize);

    /// Sends a request to the owner of `shard` and waits up to `timeout` for its answer.
    async fn forward(
        &self,
        kind: EntityKind,
        shard: usize,
        request: Envelope<Routed>,
        timeout: Duration,
    ) -> Result<Answer, ActorError>;
}

impl Runtime {
    /// Builds the runtime and the background work it needs (started by `BackgroundTasks::spawn`).
    pub fn new(
        config: RuntimeConfig,
        store: Arc<dyn Store>,
        timers: Arc<dyn Timers>,
        gateway: Arc<dyn PaymentGateway>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Runtime>, BackgroundTasks) {
        let (commands_done, completed_commands) = mpsc::unbounded_channel();
        let runtime = Arc::new_cyclic(|weak| Runtime {
            config,
            store,
            timers,
            gateway,
            tickets: EntityTable::new(weak.clone(), config.directory, metrics.clone()),
            orders: EntityTable::new(weak.clone(), config.directory, metrics.clone()),
            metrics,
            ids: IdGenerator::new(),
            tail: broadcast::channel(1024).0,
            outbox_written: Notify::new(),
            commands_done,
            crash_hooks: Mutex::new(HashSet::new()),
            started: Instant::now(),
            router: OnceLock::new(),
        });
        (runtime, BackgroundTasks::new(completed_commands))
    }

    /// How long the runtime has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    // ---- asking actors ---------------------------------------------------------------------

    /// Routes requests for shards this node does not serve (cluster mode). Set once, at start.
    /// Every shard starts closed then: the router opens those this node acquires
    /// (`open_shard`), and closes them again when it stops serving them.
    pub fn set_router(&self, router: Arc<dyn ShardRouter>) {
        if self.router.set(router).is_err() {
            tracing::warn!("the shard router was set twice; keeping the first");
            return;
        }
        self.tickets.close_all();
        self.orders.close_all();
    }

    /// Lets the directory activate the entities of a shard this node has just acquired.
    pub async fn open_shard(&self, kind: EntityKind, shard: usize) {
        match kind {
            EntityKind::Ticket => self.tickets.open_shard(shard).await,
            EntityKind::Order => self.orders.open_shard(shard).await,
        }
    }

    /// Closes a shard this node stops serving and drains its actors (`EntityTable::drain_shard`).
    pub async fn drain_shard(
        &self,
        kind: EntityKind,
        shard: usize,
        deadline: Duration,
    ) -> (usize, bool) {
        match kind {
            EntityKind::Ticket => self.tickets.drain_shard(shard, deadline).await,
            EntityKind::Order => self.orders.drain_shard(shard, deadline).await,
        }
    }

    /// Whether an actor of `shard` may act on a request now: always on a single node; in a
    /// cluster, only while this node's lease on the shard is within its deadline. An actor
    /// answers reads from memory, and that memory is the truth only while nobody else can
    /// own the shard: a node resuming from a pause must not answer what it held before.
    pub(crate) fn check_serving(&self, kind: EntityKind, shard: usize) -> Result<(), ActorError> {
        match self.router.get() {
            Some(router) if router.epoch(kind, shard).is_none() => Err(ActorError::NotServedHere),
            _ => Ok(()),
        }
    }

    /// Asks the actor of ticket `id`, wherever it lives.
    pub async fn ask_ticket(
        &self,
        id: TicketId,
        request: TicketRequest,
        context: RequestContext,
    ) -> Result<Answer, ActorError> {
        self.ask(Routed::Ticket { id, request }, context).await
    }

    /// Asks the actor of order `id`, wherever it lives.
    pub async fn ask_order(
        &self,
        id: OrderId,
        request: OrderRequest,
        context: RequestContext,
    ) -> Result<Answer, ActorError> {
        self.ask(Routed::Order { id, request }, context).await
    }

    /// Asks here when this node serves the entity's shard, else the node that does. A shard
    /// can stop being served here between the check and the actor taking the request (a lease
    /// deadline, a hand-over): the local answer is then `NotServedHere` and the request goes
    /// to the owner.
    async fn ask(&self, routed: Routed, context: RequestContext) -> Result<Answer, ActorError> {
        let kind = routed.kind();
        let shard = self.shard_of(kind, routed.entity());
        let Some(router) = self.router.get() else {
            return self.ask_local(routed, context).await;
        };
        if router.serves(kind, shard) {
            match self.ask_local(routed.clone(), context.clone()).await {
                Err(ActorError::NotServedHere) => {}
                answer => return answer,
            }
        }
        let timeout = routed.timeout(self.config.call_timeout);
        router
            .forward(
                kind,
                shard,
                Envelope::new(context.request_id, routed),
                timeout,
            )
            .await
    }

    /// The shard entity `id` of `kind` lives on (every node has the same shard count).
    pub fn shard_of(&self, kind: EntityKind, id: ObjectId) -> usize {
        match kind {
            EntityKind::Ticket => self.tickets.shard_of(id),
            EntityKind::Order => self.orders.shard_of(id),
        }
    }

    /// Answers a request routed to this node by another.
    pub async fn ask_local(
        &self,
        routed: Routed,
        context: RequestContext,
    ) -> Result<Answer, ActorError> {
        match routed {
            Routed::Ticket { id, request } => self.ask_local_ticket(id, request, context).await,
            Routed::Order { id, request } => self.ask_local_order(id, request, context).await,
        }
    }

    async fn ask_local_ticket(
        &self,
        id: TicketId,
        request: TicketRequest,
        context: RequestContext,
    ) -> Result<Answer, ActorError> {
        self.tickets
            .call(
                id.0,
                |reply| TicketMsg::Request {
                    request,
                    context,
                    reply,
                },
                self.config.call_timeout,
            )
            .await
    }

    async fn ask_local_order(
        &self,
        id: OrderId,
        request: OrderRequest,
        context: RequestContext,
    ) -> Result<Answer, ActorError> {
        let timeout = request.timeout(self.config.call_timeout);
        self.orders
            .call(
                id.0,
                |reply| OrderMsg::Request {
                    request,
                    context,
                    reply,
                },
                timeout,
            )
            .await
    }

    // ---- operations the HTTP layer calls -------------------------------------------------

    /// Puts a new ticket on sale.
    pub async fn create_ticket(
        &self,
        owner: UserId,
        title: Title,
        price: Price,
        context: RequestContext,
    ) -> Result<Ticket, ActorError> {
        let id = TicketId(self.ids.next());
        let request = TicketRequest::Create {
            title,
            price,
            owner,
        };
        self.ask_ticket(id, request, context).await?.into_ticket()
    }

    /// The current state of a ticket.
    pub async fn get_ticket(&self, id: TicketId) -> Result<Ticket, ActorError> {
        self.ask_ticket(id, TicketRequest::Get, RequestContext::default())
            .await?
            .into_ticket()
    }

    /// Changes a ticket's title and price as its owner.
    pub async fn update_ticket(
        &self,
        id: TicketId,
        by: UserId,
        title: Title,
        price: Price,
        context: RequestContext,
    ) -> Result<Ticket, ActorError> {
        let request = TicketRequest::Update { by, title, price };
        self.ask_ticket(id, request, context).await?.into_ticket()
    }

    /// Orders a ticket for `user`.
    ///
    /// The ticket decides first: in a flash sale almost every order is refused, and a refusal
    /// then costs one ticket-actor call, not an order actor's activation (a task, a supervision
    /// link, a store read) for an order that never exists. Only a reservation that succeeded
    /// starts the order actor, which reserves again under the same order id (a repeat changes
    /// nothing) before it saves the order. If it never saves it, the reservation frees itself
    /// after its deadline, as when the order's commit fails (rule 9).
    pub async fn create_order(
        &self,
        user: UserId,
        ticket_id: TicketId,
        context: RequestContext,
    ) -> Result<Order, ActorError> {
        let id = OrderId(self.ids.next());
        let reserve = TicketRequest::Reserve {
            order_id: id,
            expires_at: crate::clock::now().plus(self.config.order_ttl),
        };
        self.ask_ticket(ticket_id, reserve, context.clone()).await?;
        let request = OrderRequest::Create { user, ticket_id };
        self.ask_order(id, request, context).await?.into_order()
    }

    /// The current state of an order.
    pub async fn get_order(&self, id: OrderId) -> Result<Order, ActorError> {
        self.ask_order(id, OrderRequest::Get, RequestContext::default())
            .await?
            .into_order()
    }

    /// Cancels an order as its owner.
    pub async fn cancel_order(
        &self,
        id: OrderId,
        by: UserId,
        context: RequestContext,
    ) -> Result<Order, ActorError> {
        self.ask_order(id, OrderRequest::Cancel { by }, context)
            .await?
            .into_order()
    }

    /// Pays an order as its owner.
    pub async fn pay_order(
        &self,
        id: OrderId,
        by: UserId,
        token: String,
        client_key: Option<String>,
        context: RequestContext,
    ) -> Result<Payment, ActorError> {
        let request = OrderRequest::Pay {
            by,
            token,
            client_key,
        };
        self.ask_order(id, request, context).await?.into_payment()
    }

    // ---- what actors share -----------------------------------------------------------------

    /// The fence an entity write of `shard` must carry: none on a single node; in a cluster,
    /// the epoch this node serves the shard with, or `Unavailable` when it no longer serves it.
    pub(crate) fn fence(
        &self,
        kind: EntityKind,
        shard: usize,
    ) -> Result<Option<Fence>, ActorError> {
        let Some(router) = self.router.get() else {
            return Ok(None);
        };
        match router.epoch(kind, shard) {
            Some(epoch) => Ok(Some(Fence {
                kind: kind.as_str().to_string(),
                shard: u32::try_from(shard).unwrap_or(u32::MAX),
                epoch,
            })),
            None => Err(ActorError::Unavailable {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Commits a unit of work and wakes the outbox relay. A fenced write tells the router that
    /// another node owns the shard now.
    pub(crate) async fn persist(&self, unit: UnitOfWork) -> Result<CommitReceipt, StoreError> {
        let result = self.commit(unit).await;
        if let Err(StoreError::Fenced { kind, shard, .. }) = &result
            && let (Some(router), Ok(kind)) = (self.router.get(), kind.parse::<EntityKind>())
        {
            router.fenced(kind, *shard as usize);
        }
        result
    }

    async fn commit(&self, unit: UnitOfWork) -> Result<CommitReceipt, StoreError> {
        let has_events = !unit.events.is_empty();
        let started = Instant::now();
        let receipt = self.store.commit(unit).await?;
        self.metrics.store_commits.inc();
        self.metrics
            .store_commit_duration
            .observe(started.elapsed().as_secs_f64());
        if has_events {
            self.outbox_written.notify_one();
        }
        Ok(receipt)
    }

    /// Arms the timers of every stored deadline whose entity lives on a shard `wanted` selects
    /// (all at start; a shard's at take-over, in case its former owner died between persisting
    /// a deadline and arming its timer). Returns the deadlines armed.
    pub async fn rearm_deadlines(
        &self,
        wanted: impl Fn(EntityKind, usize) -> bool,
    ) -> Result<Vec<crate::store::Deadline>, StoreError> {
        let mut armed = Vec::new();
        for deadline in self.store.deadlines().await? {
            let (kind, due) = match deadline.kind {
                DeadlineKind::OrderExpiry => (EntityKind::Order, deadline.due),
                DeadlineKind::TicketReservation => (
                    EntityKind::Ticket,
                    deadline.due.plus(self.config.hold_grace),
                ),
            };
            if wanted(kind, self.shard_of(kind, deadline.entity)) {
                self.sync_timer(deadline.kind, deadline.entity, Some(due))
                    .await;
                armed.push(deadline);
            }
        }
        Ok(armed)
    }

    /// Arms or disarms an entity's timer to match its persisted deadline.
    pub(crate) async fn sync_timer(
        &self,
        kind: DeadlineKind,
        entity: ObjectId,
        due: Option<Timestamp>,
    ) {
        let key = TimerKey { kind, entity };
        let result = match due {
            Some(due) => self.timers.arm(key, due).await,
            None => self.timers.disarm(key).await,
        };
        if let Err(error) = result {
            // The deadline is in the store; the timer is re-armed when the index is rebuilt.
            tracing::warn!(entity = %entity, error = %error, "timer index update failed");
        }
    }

    /// Delivers an outbox command now; if that fails it stays pending (when it has an outbox id)
    /// and is redelivered.
    pub(crate) async fn deliver(&self, command_id: Option<u64>, command: Command) {
        let (ticket_id, request) = match command {
            Command::ReleaseTicket {
                ticket_id,
                order_id,
            } => (ticket_id, TicketRequest::Release { order_id }),
            Command::MarkTicketSold {
                ticket_id,
                order_id,
            } => (ticket_id, TicketRequest::MarkSold { order_id }),
        };
        let result = self
            .ask_ticket(ticket_id, request, RequestContext::default())
            .await;
        match result {
            Ok(_) | Err(ActorError::NotFound) => {
                if let Some(command_id) = command_id {
                    let _ = self.commands_done.send(command_id);
                }
            }
            Err(error) => {
                tracing::warn!(command = ?command, error = %error, "command delivery failed; it will be redelivered");
            }
        }
    }

    /// What the stored state of `holder` says about the ticket it holds: the order is the
    /// authority on its outcome.
    pub(crate) async fn holder_status(&self, holder: OrderId) -> Result<HolderStatus, StoreError> {
        let order = self.store.load_order(holder).await?;
        Ok(order.map_or(HolderStatus::Missing, |record| {
            record.state.status.as_holder_status()
        }))
    }

    /// Shows a transition on the live tail.
    pub(crate) fn announce(&self, kind: EntityKind, id: ObjectId, transition: Option<&Transition>) {
        let Some(transition) = transition else {
            return;
        };
        if self.tail.receiver_count() == 0 {
            // Nobody watches: do not copy the transition only for the send to drop it.
            return;
        }
        let _ = self.tail.send(TransitionNotice {
            kind,
            id,
            transition: transition.clone(),
        });
    }

    /// Arms the test-only crash hook: the next message `id` handles panics.
    pub fn arm_crash(&self, kind: EntityKind, id: ObjectId) -> bool {
        if !self.config.test_hooks {
            return false;
        }
        self.crash_hooks
            .lock()
            .map(|mut hooks| hooks.insert((kind, id)))
            .unwrap_or(false);
        true
    }

    /// Panics if the crash hook is armed for this entity (test builds of behaviour only).
    pub(crate) fn crash_if_armed(&self, kind: EntityKind, id: ObjectId) {
        if self.config.test_hooks
            && self
                .crash_hooks
                .lock()
                .map(|mut hooks| hooks.remove(&(kind, id)))
                .unwrap_or(false)
        {
            panic!("crash injected by the test hook into {kind} {id}");
        }
    }

    /// Drains and stops every actor.
    pub async fn shutdown(&self) {
        let deadline = Duration::from_secs(10);
        self.orders.shutdown(deadline).await;
        self.tickets.shutdown(deadline).await;
    }
}
