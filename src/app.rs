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
use crate::bus::{Bus, MemoryBus};
use crate::config::ServeArgs;
use crate::http::auth::PasswordHashing;
use crate::http::session::SessionKeys;
use crate::http::{AppState, Lifecycle, NodeInfo};
use crate::metrics::Metrics;
use crate::payments::{PaymentGateway, SandboxGateway, StripeGateway};
use crate::store::{EmbeddedStore, Store, StoreError};
use crate::timers::EmbeddedTimers;

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

/// Starts a node and returns once it listens; it stops when `signal` resolves or `stop` is
/// called.
pub async fn start(
    args: ServeArgs,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, StartError> {
    if args.is_cluster() {
        return Err(StartError::Config(
            "cluster mode (--nats, --mongo, --redis) is not available in this build yet; run without them for the embedded single-node default".into(),
        ));
    }
    let roles = args.roles();
    if roles.is_empty() {
        return Err(StartError::Config("--roles selects no role".into()));
    }

    let store = match EmbeddedStore::open(&args.data_dir) {
        Ok(store) => Arc::new(store),
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

    let metrics = Arc::new(Metrics::new());
    let gateway: Arc<dyn PaymentGateway> = match &args.stripe_key {
        Some(key) => Arc::new(
            StripeGateway::new(key.clone(), args.stripe_api_base.clone()).map_err(|error| {
                StartError::Config(format!("--stripe-key/--stripe-api-base: {error}"))
            })?,
        ),
        None => Arc::new(SandboxGateway::new()),
    };
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let store_port: Arc<dyn Store> = store.clone();
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
    };
    let (runtime, background) = Runtime::new(
        config,
        store_port.clone(),
        Arc::new(EmbeddedTimers::new()),
        gateway.clone(),
        metrics.clone(),
    );

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    background
        .spawn(
            runtime.clone(),
            bus.clone(),
            shutdown.child_token(),
            &tracker,
        )
        .await
        .map_err(|error| StartError::Store(error.to_string()))?;

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
    let hashing_slots = std::thread::available_parallelism().map_or(2, usize::from);
    let state = AppState {
        runtime: runtime.clone(),
        store: store_port,
        bus,
        sessions: Arc::new(SessionKeys::new(
            jwt_key.as_bytes(),
            args.session_ttl,
            args.secure_cookies,
        )),
        hashing: Arc::new(
            PasswordHashing::new(hashing_slots, metrics.clone())
                .map_err(|error| StartError::Secret(error.to_string()))?,
        ),
        metrics,
        admin_token: admin_token.into(),
        node: Arc::new(NodeInfo {
            id: node_id(&args),
            address: args
                .advertise
                .clone()
                .unwrap_or_else(|| address.to_string()),
            roles: roles.iter().map(ToString::to_string).collect(),
            started_at: crate::clock::now(),
        }),
        lifecycle: Arc::new(Lifecycle::default()),
    };
    let lifecycle = state.lifecycle.clone();
    let router = crate::http::router(state, &roles);

    tracing::info!(
        mode = "embedded single node",
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
        runtime.shutdown().await;
        tracker.close();
        tracker.wait().await;
        drop(runtime);
        drop(store);
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
