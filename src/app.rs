//! Starting and stopping a node: builds the ports, the runtime and the HTTP server in
//! dependency order, and stops them in reverse.
//!
//! Owns start-up (secrets, adapters, timers rebuilt, listener bound) and graceful shutdown:
//! readiness flips, HTTP stops accepting and finishes in-flight requests, actors drain, the
//! background loops stop, and the store closes last.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actors::{DirectoryConfig, Runtime, RuntimeConfig};
use crate::bus::{Bus, MemoryBus, NatsBus};
use crate::cluster::membership::ClusterError;
use crate::cluster::node::{ClusterNode, ClusterSettings};
use crate::config::ServeArgs;
use crate::http::auth::PasswordHashing;
use crate::http::session::SessionKeys;
use crate::http::{AppState, Lifecycle, NodeInfo};
use crate::metrics::Metrics;
use crate::payments::{PaymentGateway, SandboxGateway, StripeGateway};
use crate::store::{EmbeddedStore, MongoStore, Store, StoreError};
use crate::timers::{EmbeddedTimers, RedisTimers, Timers};

/// Why a node could not start; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("data directory {0} is in use by another process")]
    DataDirInUse(String),
    #[error("cannot open the store: {0}")]
    Store(String),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("{0}")]
    Secret(String),
    #[error("cannot reach {0}")]
    Unreachable(String),
}

impl StartError {
    /// The process exit code: 2 for configuration errors, 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The log filter when `RUST_LOG` is not set. ractor opens an info-level span for every actor it
/// starts (with its id formatted into the span's fields, kept for the actor's life); at a
/// hundred thousand activations that cost about a seventh of an expiry storm's CPU and some
/// 100 MiB, and our own actor logs name the entity anyway (docs/performance.md).
pub const DEFAULT_LOG_FILTER: &str = "info,ractor=warn";
/// How long a stopping server waits for the embedded store's last handles to go.
const STORE_CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the actors may hold a reservation past its deadline before asking the order.
const HOLD_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A started node.
pub struct Server {
    /// The address the HTTP server is bound to.
    pub address: SocketAddr,
    shutdown: CancellationToken,
    finished: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops the node gracefully and waits until everything is persisted and closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.finished.await;
    }

    /// Waits until the node has stopped (after `signal` resolves).
    pub async fn wait(self) {
        let _ = self.finished.await;
    }
}

/// Reads a secret from `path`, or generates one there (mode 0600) and says so in the log.
fn load_or_generate_secret(path: &Path, what: &str) -> Result<String, StartError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(StartError::Secret(format!(
                "cannot read the {what} at {}: {error}",
                path.display()
            )));
        }
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    write_private(path, &secret).map_err(|error| {
        StartError::Secret(format!(
            "cannot write the {what} to {}: {error}",
            path.display()
        ))
    })?;
    tracing::info!(path = %path.display(), "generated {what}; it is kept in this file", what = what);
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn node_id(args: &ServeArgs) -> String {
    args.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|name| name.trim().to_string())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "node".into());
        let suffix: u32 = rand::random();
        format!("{host}-{:06x}", suffix & 0x00ff_ffff)
    })
}

/// The adapters a node runs with, chosen by its flags.
struct Ports {
    store: Arc<dyn Store>,
    /// The embedded store, closed last at shutdown (embedded mode only).
    embedded: Option<EmbeddedStore>,
    timers: Arc<dyn Timers>,
    bus: Arc<dyn Bus>,
    /// The NATS connection cluster coordination shares (cluster mode only).
    nats: Option<async_nats::Client>,
    jwt_key: String,
    admin_token: String,
    mode: &'static str,
}

/// The embedded default: redb in the data directory, in-process bus and timers; secrets kept
/// in the data directory when not given.
async fn embedded_ports(args: &ServeArgs) -> Result<Ports, StartError> {
    let embedded = match EmbeddedStore::open(&args.data_dir) {
        Ok(store) => store,
        Err(StoreError::InUse(dir)) => return Err(StartError::DataDirInUse(dir)),
        Err(error) => return Err(StartError::Store(error.to_string())),
    };
    let jwt_key = match &args.jwt_key {
        Some(key) if !key.is_empty() => key.clone(),
        _ => load_or_generate_secret(&args.data_dir.join("jwt.key"), "a JWT key")?,
    };
    let admin_token = match &args.admin_token {
        Some(token) if !token.is_empty() => token.clone(),
        _ => load_or_generate_secret(&args.data_dir.join("admin.token"), "an admin token")?,
    };
    Ok(Ports {
        store: Arc::new(embedded.clone()),
        embedded: Some(embedded),
        timers: Arc::new(EmbeddedTimers::new()),
        bus: Arc::new(MemoryBus::new()),
        nats: None,
        jwt_key,
        admin_token,
        mode: "embedded single node",
    })
}

/// Cluster mode: MongoDB, NATS and Redis, all three required, and the secrets given (every
/// node must share them, so none may be generated).
async fn cluster_ports(args: &ServeArgs) -> Result<Ports, StartError> {
    let (Some(nats), Some(mongo), Some(redis)) = (&args.nats, &args.mongo, &args.redis) else {
        return Err(StartError::Config(
            "cluster mode needs --nats, --mongo and --redis together".into(),
        ));
    };
    let jwt_key = args
        .jwt_key
        .clone()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            StartError::Config("cluster mode needs JWT_KEY (every node must share it)".into())
        })?;
    let admin_token = args.admin_token.clone().filter(|token| !token.is_empty()).ok_or_else(|| {
        StartError::Config(
            "cluster mode needs --admin-token or BOXOFFICE_ADMIN_TOKEN (every node must share it)".into(),
        )
    })?;
    let store = MongoStore::connect(mongo, &args.mongo_db)
        .await
        .map_err(|error| {
            StartError::Unreachable(format!("MongoDB ({}): {error}", redact(mongo)))
        })?;
    let bus = NatsBus::connect(nats, &format!("{}.events", args.cluster_name))
        .await
        .map_err(|error| StartError::Unreachable(format!("NATS ({}): {error}", redact(nats))))?;
    let timers = RedisTimers::connect(redis, &args.cluster_name)
        .await
        .map_err(|error| StartError::Unreachable(format!("Redis ({}): {error}", redact(redis))))?;
    Ok(Ports {
        store: Arc::new(store),
        embedded: None,
        timers: Arc::new(timers),
        nats: Some(bus.client().clone()),
        bus: Arc::new(bus),
        jwt_key,
        admin_token,
        mode: "cluster node",
    })
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Starts a node and returns once it listens; it stops when `signal` resolves or `stop` is
/// called.
pub async fn start(
    args: ServeArgs,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, StartError> {
    let roles = args.roles();
    if roles.is_empty() {
        return Err(StartError::Config("--roles selects no role".into()));
    }
    let ports = if args.is_cluster() {
        cluster_ports(&args).await?
    } else {
        embedded_ports(&args).await?
    };

    let metrics = Arc::new(Metrics::new());
    let gateway: Arc<dyn PaymentGateway> = match &args.stripe_key {
        Some(key) => Arc::new(
            StripeGateway::new(key.clone(), args.stripe_api_base.clone()).map_err(|error| {
                StartError::Config(format!("--stripe-key/--stripe-api-base: {error}"))
            })?,
        ),
        None => Arc::new(SandboxGateway::new()),
    };
    let config = RuntimeConfig {
        order_ttl: args.order_ttl,
        directory: DirectoryConfig {
            shards: args.shards,
            mailbox_limit: args.mailbox_limit,
            passivate_after: args.passivate_after,
            max_live: args.max_live_actors,
        },
        call_timeout: std::time::Duration::from_secs(10),
        hold_grace: HOLD_GRACE,
        test_hooks: args.enable_test_hooks,
        is_single_node: !args.is_cluster(),
    };
    let (runtime, background) = Runtime::new(
        config,
        ports.store.clone(),
        ports.timers.clone(),
        gateway.clone(),
        metrics.clone(),
    );

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| StartError::Listen {
            address: args.listen,
            reason: error.to_string(),
        })?;
    let address = listener.local_addr().map_err(|error| StartError::Listen {
        address: args.listen,
        reason: error.to_string(),
    })?;
    let node = NodeInfo {
        id: node_id(&args),
        address: args
            .advertise
            .clone()
            .unwrap_or_else(|| address.to_string()),
        roles: roles.iter().map(ToString::to_string).collect(),
        started_at: crate::clock::now(),
    };

    let cluster = match &ports.nats {
        Some(client) => {
            let settings = ClusterSettings {
                name: args.cluster_name.clone(),
                node_id: node.id.clone(),
                address: node.address.clone(),
                roles: node.roles.clone(),
                shards: u32::try_from(args.shards).unwrap_or(u32::MAX),
                lease_ttl: args.lease_ttl,
                min_members: args.min_members,
            };
            let (cluster, revision) = ClusterNode::join(settings, client.clone(), runtime.clone())
                .await
                .map_err(|error| match error {
                    ClusterError::ShardCountMismatch { .. } => {
                        StartError::Config(error.to_string())
                    }
                    other => StartError::Unreachable(format!("joining the cluster: {other}")),
                })?;
            runtime.set_router(cluster.clone());
            tracker.spawn(cluster.clone().run(revision, shutdown.child_token()));
            Some(cluster)
        }
        None => None,
    };
    background
        .spawn(
            runtime.clone(),
            ports.bus.clone(),
            shutdown.child_token(),
            &tracker,
        )
        .await
        .map_err(|error| StartError::Store(error.to_string()))?;

    let hashing_slots = std::thread::available_parallelism().map_or(2, usize::from);
    let state = AppState {
        runtime: runtime.clone(),
        store: ports.store.clone(),
        bus: ports.bus.clone(),
        sessions: Arc::new(SessionKeys::new(
            ports.jwt_key.as_bytes(),
            args.session_ttl,
            args.secure_cookies,
        )),
        hashing: Arc::new(
            PasswordHashing::new(hashing_slots, metrics.clone())
                .map_err(|error| StartError::Secret(error.to_string()))?,
        ),
        metrics,
        admin_token: ports.admin_token.clone().into(),
        node: Arc::new(node),
        lifecycle: Arc::new(Lifecycle::default()),
        cluster,
    };
    let lifecycle = state.lifecycle.clone();
    let router = crate::http::router(state, &roles);

    tracing::info!(
        mode = ports.mode,
        data_dir = %args.data_dir.display(),
        gateway = gateway.name(),
        roles = %roles.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "starting"
    );
    let http_shutdown = shutdown.clone();
    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = signal => signal_shutdown.cancel(),
            () = signal_shutdown.cancelled() => {}
        }
    });
    let drain_lifecycle = lifecycle.clone();
    let stop_token = shutdown.clone();
    let store = ports.store;
    let embedded = ports.embedded;
    let finished = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            http_shutdown.cancelled().await;
            drain_lifecycle.mark_draining();
            tracing::info!("shutting down: finishing in-flight requests");
        });
        if let Err(error) = serve.await {
            tracing::error!(error = %error, "http server failed");
        }
        shutdown.cancel();
        // The cluster node hands its shards back first (tracked task), then actors drain.
        tracker.close();
        tracker.wait().await;
        runtime.shutdown().await;
        drop(runtime);
        drop(store);
        if let Some(embedded) = embedded {
            // Within a few seconds every other handle is gone (the actors and background loops
            // stopped above); a file left open would be repaired, read whole, at the next start.
            let closed = tokio::task::spawn_blocking(move || embedded.close(STORE_CLOSE_DEADLINE))
                .await
                .unwrap_or(false);
            if !closed {
                tracing::warn!("the data file was not closed in time; the next start checks it");
            }
        }
        tracing::info!("stopped");
    });
    lifecycle.mark_started();
    tracing::info!("listening on http://{address}");
    Ok(Server {
        address,
        shutdown: stop_token,
        finished,
    })
}
