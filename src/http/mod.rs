//! The HTTP layer: one axum router per resource, merged by role, with the layers every request
//! passes (request id, body limit, panic catcher, metrics) and JSON errors for everything,
//! axum's own rejections and unknown routes included.
//!
//! Owns `AppState` and the mapping of requests to the runtime. It must not decide anything:
//! handlers parse input into domain types and ask the actors.

pub mod admin;
pub mod admin_page;
pub mod auth;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod payments;
pub mod session;
pub mod tickets;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::actors::Runtime;
use crate::bus::Bus;
use crate::config::Role;
use crate::domain::Timestamp;
use crate::metrics::{HttpLabels, Metrics};
use crate::store::Store;
use auth::PasswordHashing;
use error::ApiError;
use session::SessionKeys;

/// This node as the admin view shows it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    pub roles: Vec<String>,
    pub started_at: Timestamp,
}

/// Whether the node has finished starting and whether it is draining.
#[derive(Default)]
pub struct Lifecycle {
    started: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }
    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub sessions: Arc<SessionKeys>,
    pub hashing: Arc<PasswordHashing>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Arc<str>,
    pub node: Arc<NodeInfo>,
    pub lifecycle: Arc<Lifecycle>,
    /// This node's part in the cluster (cluster mode only).
    pub cluster: Option<Arc<crate::cluster::node::ClusterNode>>,
}

/// The whole HTTP surface for the given roles.
pub fn router(state: AppState, roles: &[Role]) -> Router {
    let mut router = Router::new()
        .merge(health::router())
        .merge(admin::router(state.clone()))
        .merge(admin_page::router());
    for role in roles {
        router = match role {
            Role::Auth => router.merge(auth::router()),
            Role::Tickets => router.merge(tickets::router()),
            Role::Orders => router.merge(orders::router()),
            Role::Payments => router.merge(payments::router()),
            Role::Expiration => router,
        };
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            },
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
