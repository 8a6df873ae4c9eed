//! Operations routes: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
//!
//! Owns liveness and readiness. Liveness says the process answers; readiness says it can serve
//! (store open, bus connected, not draining). Neither needs a session.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;

/// The operations routes (always mounted, whatever the roles).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

async fn healthz(State(state): State<AppState>) -> Response {
    // A cluster node whose id another live process took has stopped itself: restart it.
    if state
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.is_healthy())
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "node id taken by another process"})),
        )
            .into_response();
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let is_serving = !state.lifecycle.is_draining() && state.lifecycle.is_started();
    let store_ok = state.store.ping().await.is_ok();
    let bus_ok = state.bus.is_connected();
    // In a cluster: joined, and serving every shard placement gives this node.
    let cluster_ok = state
        .cluster
        .as_ref()
        .is_none_or(|cluster| cluster.is_ready());
    let checks = json!({
        "serving": is_serving,
        "store": store_ok,
        "bus": bus_ok,
        "cluster": cluster_ok,
    });
    let status = if is_serving && store_ok && bus_ok && cluster_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({"status": if status == StatusCode::OK { "ready" } else { "not ready" }, "checks": checks})))
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .actors_live
        .get_or_create(&crate::metrics::Metrics::kind("ticket"))
        .set(i64::try_from(state.runtime.tickets.live()).unwrap_or(i64::MAX));
    state
        .metrics
        .actors_live
        .get_or_create(&crate::metrics::Metrics::kind("order"))
        .set(i64::try_from(state.runtime.orders.live()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::DOCUMENT,
    )
        .into_response()
}
