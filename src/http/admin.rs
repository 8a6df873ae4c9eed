//! `/admin/api`: actor inspection for operators, behind the admin token.
//!
//! Owns the admin API: the members and their shards, live actors, one actor's state and last
//! transitions (read from the store, so looking never activates or stalls an actor), the shard
//! moves, the event log and the live tail. It answers for the whole cluster: live actors and
//! moves are gathered from every member, an actor's live part comes from the node serving its
//! shard (`cluster::inspect`), and a member that does not answer in time is named in
//! `unreachable` rather than left out silently; a single node is the one member it asks.
//! Every route needs `Authorization: Bearer <admin token>`; anything else gets 401 and learns
//! nothing. Responses never carry secrets (no password hashes, keys or tokens). Events and
//! transitions have one shape each, with ISO 8601 times, whether read from the log, the
//! history or the tail. The page that reads this API is `admin_page.rs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::store_error;
use super::error::ApiError;
use super::extract::Query;
use super::orders::order_json;
use super::tickets::ticket_json;
use crate::actors::{EntityInfo, EntityKind, TransitionNotice};
use crate::cluster::inspect::{self, Gathered, InspectReply, InspectRequest};
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
            ApiError::unavailable(Duration::from_secs(1))
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
    let (answers, unreachable) = inspect_every_node(&state, InspectRequest::ShardMoves { limit })
        .await
        .select(|reply| match reply {
            InspectReply::ShardMoves(moves) => Some(moves),
            _ => None,
        });
    let mut moves: Vec<_> = answers.into_iter().flat_map(|(_, moves)| moves).collect();
    // ISO 8601 UTC times with milliseconds sort as text.
    moves.sort_by(|left, right| right.at.cmp(&left.at));
    moves.truncate(limit);
    axum::Json(json!({ "moves": moves, "unreachable": unreachable })).into_response()
}

/// Asks every member of the cluster (the single node: itself) and gathers the answers.
async fn inspect_every_node(state: &AppState, request: InspectRequest) -> Gathered {
    match &state.cluster {
        Some(cluster) => cluster.inspect_members(&request).await,
        None => Gathered {
            answers: vec![(
                state.node.id.clone(),
                // A single node owns every shard from start to stop: nothing ever moves.
                inspect::answer(&state.runtime, request, |_| Vec::new()).await,
            )],
            unreachable: Vec::new(),
        },
    }
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
    let kind = match query.kind.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<EntityKind>()
                .map_err(|()| ApiError::bad_request("kind must be ticket or order"))?,
        ),
    };
    // Each node answers its first `limit + 1` after `after`, by id: merged, the first `limit`
    // are the page and one more says that another page follows.
    let request = InspectRequest::LiveActors {
        kind,
        after,
        limit: limit + 1,
    };
    let (answers, unreachable) =
        inspect_every_node(&state, request)
            .await
            .select(|reply| match reply {
                InspectReply::LiveActors(actors) => Some(actors),
                _ => None,
            });
    let mut live: Vec<_> = answers
        .into_iter()
        .flat_map(|(node, actors)| actors.into_iter().map(move |actor| (node.clone(), actor)))
        .collect();
    live.sort_by(|(left_node, left), (right_node, right)| {
        (left.id, left_node).cmp(&(right.id, right_node))
    });
    // During a hand-over an actor can briefly be live on its old and its new owner.
    live.dedup_by_key(|(_, actor)| actor.id);
    let has_more = live.len() > limit;
    live.truncate(limit);
    let next = if has_more {
        live.last().map(|(_, actor)| actor.id.to_string())
    } else {
        None
    };
    let actors: Vec<Value> = live
        .iter()
        .map(|(node, actor)| {
            json!({
                "kind": actor.kind, "id": actor.id, "node": node, "shard": actor.shard,
                "status": actor.snapshot.status, "version": actor.snapshot.version,
                "mailboxDepth": actor.mailbox_depth, "restarts": actor.restarts,
                "quarantined": actor.quarantined, "overloaded": actor.overloaded,
            })
        })
        .collect();
    Ok(
        axum::Json(json!({ "actors": actors, "next": next, "unreachable": unreachable }))
            .into_response(),
    )
}

/// Where an entity's actor lives and what its node's directory knows about it.
struct Whereabouts {
    /// The node serving its shard (none while the shard is between owners).
    node: Option<String>,
    /// `None` when that node did not answer in time.
    info: Option<EntityInfo>,
}

/// Asks the node serving `shard`, the entity's, about it (a single node asks itself).
async fn locate(
    state: &AppState,
    kind: EntityKind,
    id: ObjectId,
    shard: usize,
) -> Result<Whereabouts, ApiError> {
    let request = InspectRequest::Actor { kind, id };
    let Some(cluster) = &state.cluster else {
        return Ok(Whereabouts {
            node: Some(state.node.id.clone()),
            info: match inspect::answer(&state.runtime, request, |_| Vec::new()).await {
                InspectReply::Actor(info) => Some(info),
                _ => None,
            },
        });
    };
    let owner = cluster
        .shard_owner(kind, u32::try_from(shard).unwrap_or(u32::MAX))
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "reading a shard lease failed");
            ApiError::unavailable(Duration::from_secs(1))
        })?;
    let Some(owner) = owner else {
        // Between owners nobody hosts the actor: its last owner drained it.
        let info = EntityInfo {
            shard,
            active: false,
            mailbox_depth: 0,
            restarts: 0,
            quarantined: false,
            overloaded: false,
        };
        return Ok(Whereabouts {
            node: None,
            info: Some(info),
        });
    };
    let info = match cluster.inspect_node(&owner, &request).await {
        Some(InspectReply::Actor(info)) => Some(info),
        _ => None,
    };
    Ok(Whereabouts {
        node: Some(owner),
        info,
    })
}

async fn actor(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind: EntityKind = kind.parse().map_err(|()| ApiError::not_found())?;
    let id = ObjectId::parse(&id).map_err(|_| ApiError::not_found())?;
    // The persisted part (state, transitions) comes from the store, wherever the actor lives.
    let (version, entity, transitions) = match kind {
        EntityKind::Ticket => {
            let record = state
                .store
                .load_ticket(TicketId(id))
                .await
                .map_err(store_error)?
                .ok_or_else(ApiError::not_found)?;
            let state = ticket_json(&record.state);
            (record.state.version, state, record.transitions)
        }
        EntityKind::Order => {
            let record = state
                .store
                .load_order(OrderId(id))
                .await
                .map_err(store_error)?
                .ok_or_else(ApiError::not_found)?;
            let state = order_json(&record.state);
            (record.state.version, state, record.transitions)
        }
    };
    // Every node has the same shard count, so any node knows which shard the entity is on.
    let shard = state.runtime.shard_of(kind, id);
    let whereabouts = locate(&state, kind, id, shard).await?;
    let transitions: Vec<Value> = transitions.iter().map(transition_json).collect();
    // When the serving node does not answer, only the persisted part is known.
    let live = whereabouts.info.as_ref();
    let unreachable: Vec<&String> = whereabouts.node.iter().filter(|_| live.is_none()).collect();
    Ok(axum::Json(json!({
        "kind": kind,
        "id": id,
        "node": whereabouts.node,
        "shard": shard,
        "status": match live {
            Some(info) if info.active => "active",
            Some(_) => "passivated",
            None => "unknown",
        },
        "version": version,
        "state": entity,
        "mailboxDepth": live.map(|info| info.mailbox_depth),
        "mailboxLimit": state.runtime.config.directory.mailbox_limit,
        "overloaded": live.map(|info| info.overloaded),
        "restarts": live.map(|info| info.restarts),
        "quarantined": live.map(|info| info.quarantined),
        "transitions": transitions,
        "unreachable": unreachable,
    }))
    .into_response())
}

/// Where the tail's transitions come from: this node's actors on a single node, every node's
/// (relayed over NATS) in a cluster.
enum Transitions {
    Local(tokio::sync::broadcast::Receiver<TransitionNotice>),
    Cluster(std::pin::Pin<Box<dyn Stream<Item = TransitionNotice> + Send>>),
}

impl Transitions {
    async fn open(state: &AppState) -> Result<Transitions, ApiError> {
        match &state.cluster {
            None => Ok(Transitions::Local(state.runtime.tail.subscribe())),
            Some(cluster) => {
                let stream = cluster.subscribe_transitions().await.map_err(|error| {
                    tracing::warn!(error = %error, "subscribing to the cluster's transitions failed");
                    ApiError::unavailable(Duration::from_secs(1))
                })?;
                Ok(Transitions::Cluster(Box::pin(stream)))
            }
        }
    }

    /// The next transition, `Err(skipped)` when a slow reader missed some, `None` at the end.
    async fn next(&mut self) -> Option<Result<TransitionNotice, u64>> {
        use tokio::sync::broadcast::error::RecvError;
        match self {
            Transitions::Local(receiver) => match receiver.recv().await {
                Ok(notice) => Some(Ok(notice)),
                Err(RecvError::Lagged(skipped)) => Some(Err(skipped)),
                Err(RecvError::Closed) => None,
            },
            Transitions::Cluster(stream) => stream.next().await.map(Ok),
        }
    }
}

async fn tail(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut events = state.bus.subscribe("boxoffice.events.>", 1024);
    let mut transitions = Transitions::open(&state).await?;
    let stream = async_stream_like(move |sender| async move {
        loop {
            let item = tokio::select! {
                event = events.receiver.recv() => match event {
                    Some(event) => Event::default().event("event").json_data(event_json(
                        event.seq, &event.id, &event.name, event.at, &event.data,
                    )),
                    None => return,
                },
                transition = transitions.next() => match transition {
                    Some(Ok(notice)) => Event::default().event("transition").json_data(json!({
                        "kind": notice.kind,
                        "id": notice.id,
                        "transition": transition_json(&notice.transition),
                    })),
                    Some(Err(skipped)) => {
                        Ok(Event::default().event("lagged").data(skipped.to_string()))
                    }
                    None => return,
                },
            };
            let Ok(item) = item else { continue };
            if sender.send(Ok(item)).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
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
