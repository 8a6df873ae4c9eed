//! `/admin/api`: actor inspection for operators, behind the admin token.
//!
//! Owns the admin API: the node and its shards, live actors, one actor's state and last
//! transitions (read from the store, so looking never activates or stalls an actor), the event
//! log and the live tail. Every route needs `Authorization: Bearer <admin token>`; anything
//! else gets 401 and learns nothing. Responses never carry secrets (no password hashes, keys
//! or tokens). Events and transitions have one shape each, with ISO 8601 times, whether read
//! from the log, the history or the tail. The page that reads this API is `admin_page.rs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::store_error;
use super::error::ApiError;
use super::extract::Query;
use super::orders::order_json;
use super::tickets::ticket_json;
use crate::actors::EntityKind;
use crate::domain::{ObjectId, OrderId, TicketId, Timestamp};
use crate::store::Transition;

/// The admin API routes.
pub fn router(state: AppState) -> Router<AppState> {
    let mut api = Router::new()
        .route("/admin/api/cluster", get(cluster))
        .route("/admin/api/shard-moves", get(shard_moves))
        .route("/admin/api/events", get(events))
        .route("/admin/api/tail", get(tail))
        .route("/admin/api/actors", get(actors))
        .route("/admin/api/actors/{kind}/{id}", get(actor));
    if state.runtime.config.test_hooks {
        api = api.route("/admin/api/test/crash/{kind}/{id}", post(arm_crash));
    }
    api.route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    let mut difference = u8::from(left.len() != right.len());
    for index in 0..left.len().max(right.len()) {
        let a = left.get(index).copied().unwrap_or(0);
        let b = right.get(index).copied().unwrap_or(0xff);
        difference |= a ^ b;
    }
    difference == 0
}

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(presented.as_bytes(), state.admin_token.as_bytes()) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

async fn cluster(State(state): State<AppState>) -> Result<Response, ApiError> {
    let node = &state.node;
    let Some(cluster) = &state.cluster else {
        // A single node owns every shard from start to stop.
        let mut shards = Vec::new();
        for kind in [EntityKind::Ticket, EntityKind::Order] {
            for shard in 0..state.runtime.config.directory.shards {
                shards.push(json!({"kind": kind, "shard": shard, "owner": node.id, "epoch": 1}));
            }
        }
        return Ok(axum::Json(json!({
            "nodes": [{
                "id": node.id,
                "address": node.address,
                "roles": node.roles,
                "startedAt": node.started_at.to_iso8601(),
                "lastHeartbeat": crate::clock::now().to_iso8601(),
            }],
            "shards": shards,
        }))
        .into_response());
    };
    let nodes: Vec<Value> = cluster
        .members()
        .into_iter()
        .map(|member| {
            json!({"id": member.id, "address": member.address, "roles": member.roles,
                   "startedAt": member.started_at, "lastHeartbeat": member.heartbeat_at})
        })
        .collect();
    let shards: Vec<Value> = cluster
        .leases()
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "reading the shard leases failed");
            ApiError::unavailable(std::time::Duration::from_secs(1))
        })?
        .into_iter()
        .map(|(kind, shard, owner, epoch)| json!({"kind": kind, "shard": shard, "owner": owner, "epoch": epoch}))
        .collect();
    Ok(axum::Json(json!({ "nodes": nodes, "shards": shards })).into_response())
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn shard_moves(State(state): State<AppState>, Query(query): Query<LimitQuery>) -> Response {
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    // A single node owns every shard from start to stop: nothing ever moves.
    let moves = state
        .cluster
        .as_ref()
        .map(|cluster| cluster.moves(limit))
        .unwrap_or_default();
    axum::Json(json!({ "moves": moves })).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let page = state
        .store
        .events_after(query.after.unwrap_or(0), limit)
        .await
        .map_err(store_error)?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|event| event.seq))
        .flatten();
    let events: Vec<Value> = page
        .iter()
        .map(|event| event_json(event.seq, &event.id, &event.name, event.at, &event.data))
        .collect();
    Ok(axum::Json(json!({ "events": events, "next": next })).into_response())
}

/// One event as the event log and the tail show it (the same shape in both).
fn event_json(seq: u64, id: &str, name: &str, at: Timestamp, data: &Value) -> Value {
    json!({"seq": seq, "id": id, "name": name, "at": at.to_iso8601(), "data": data})
}

/// One transition as the actor view and the tail show it.
fn transition_json(transition: &Transition) -> Value {
    json!({
        "at": transition.at.to_iso8601(),
        "message": transition.message,
        "requestId": transition.request_id,
        "from": transition.from,
        "to": transition.to,
        "version": transition.version,
        "events": transition.events,
    })
}

#[derive(Deserialize)]
struct ActorsQuery {
    kind: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn actors(
    State(state): State<AppState>,
    Query(query): Query<ActorsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => {
            Some(ObjectId::parse(text).map_err(|_| ApiError::bad_request("after must be an id"))?)
        }
    };
    let kinds = match query.kind.as_deref() {
        None => vec![EntityKind::Ticket, EntityKind::Order],
        Some(text) => vec![
            text.parse()
                .map_err(|()| ApiError::bad_request("kind must be ticket or order"))?,
        ],
    };
    let mut live = Vec::new();
    for kind in kinds {
        live.extend(match kind {
            EntityKind::Ticket => state.runtime.tickets.list_live(after, limit + 1).await,
            EntityKind::Order => state.runtime.orders.list_live(after, limit + 1).await,
        });
    }
    live.sort_by_key(|actor| actor.id);
    let has_more = live.len() > limit;
    live.truncate(limit);
    let next = if has_more {
        live.last().map(|actor| actor.id.to_string())
    } else {
        None
    };
    let actors: Vec<Value> = live
        .iter()
        .map(|actor| {
            json!({
                "kind": actor.kind, "id": actor.id, "node": state.node.id, "shard": actor.shard,
                "status": actor.snapshot.status, "version": actor.snapshot.version,
                "mailboxDepth": actor.mailbox_depth, "restarts": actor.restarts,
                "quarantined": actor.quarantined, "overloaded": actor.overloaded,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "actors": actors, "next": next })).into_response())
}

async fn actor(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind: EntityKind = kind.parse().map_err(|()| ApiError::not_found())?;
    let id = ObjectId::parse(&id).map_err(|_| ApiError::not_found())?;
    let (info, view) = match kind {
        EntityKind::Ticket => {
            let record = state
                .store
                .load_ticket(TicketId(id))
                .await
                .map_err(store_error)?;
            let record = record.ok_or_else(ApiError::not_found)?;
            (
                state.runtime.tickets.info(id).await,
                (
                    record.state.version,
                    ticket_json(&record.state),
                    record.transitions,
                ),
            )
        }
        EntityKind::Order => {
            let record = state
                .store
                .load_order(OrderId(id))
                .await
                .map_err(store_error)?;
            let record = record.ok_or_else(ApiError::not_found)?;
            (
                state.runtime.orders.info(id).await,
                (
                    record.state.version,
                    order_json(&record.state),
                    record.transitions,
                ),
            )
        }
    };
    let (version, entity, transitions) = view;
    let transitions: Vec<Value> = transitions.iter().map(transition_json).collect();
    Ok(axum::Json(json!({
        "kind": kind,
        "id": id,
        "node": state.node.id,
        "shard": info.shard,
        "status": if info.active { "active" } else { "passivated" },
        "version": version,
        "state": entity,
        "mailboxDepth": info.mailbox_depth,
        "mailboxLimit": state.runtime.config.directory.mailbox_limit,
        "overloaded": info.overloaded,
        "restarts": info.restarts,
        "quarantined": info.quarantined,
        "transitions": transitions,
    }))
    .into_response())
}

async fn tail(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut events = state.bus.subscribe("boxoffice.events.>", 1024);
    let mut transitions = state.runtime.tail.subscribe();
    let stream = async_stream_like(move |sender| async move {
        loop {
            let item = tokio::select! {
                event = events.receiver.recv() => match event {
                    Some(event) => Event::default().event("event").json_data(event_json(
                        event.seq, &event.id, &event.name, event.at, &event.data,
                    )),
                    None => return,
                },
                transition = transitions.recv() => match transition {
                    Ok(notice) => Event::default().event("transition").json_data(json!({
                        "kind": notice.kind,
                        "id": notice.id,
                        "transition": transition_json(&notice.transition),
                    })),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(skipped)) => {
                        Ok(Event::default().event("lagged").data(skipped.to_string()))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            let Ok(item) = item else { continue };
            if sender.send(Ok(item)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Turns a producer task into a stream (the task ends when the client goes away).
fn async_stream_like<F, Fut>(produce: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(sender));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

async fn arm_crash(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind: EntityKind = kind.parse().map_err(|()| ApiError::not_found())?;
    let id = ObjectId::parse(&id).map_err(|_| ApiError::not_found())?;
    if state.runtime.arm_crash(kind, id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
