//! Inspection across nodes: what the admin API asks each node about the actors it hosts and the
//! shard moves it recorded, and what the node answers, read from the directory's snapshots only
//! (answering never sends an actor a message, so inspection cannot stall one).
//!
//! Owns the inspection wire format (versioned `Envelope`s, as routed actor requests use) and its
//! subjects: each node answers on `<cluster>.admin.<node>` (plain subscription: one node, one
//! subject) and publishes its actors' transitions on `<cluster>.admin.transitions` for the live
//! tails of every node. Answers are bounded (`MAX_PAGE` actors, the moves a node keeps) and each
//! node gets `INSPECT_TIMEOUT` to answer, so a stalled node cannot stall the admin page: it is
//! reported as unreachable instead. The embedded single node answers through `answer` too, as
//! the one member of its fan-out. It must not decide anything about entities or shards.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::node::ShardMove;
use crate::actors::{EntityInfo, EntityKind, LiveActor, Runtime};
use crate::domain::ObjectId;

/// How long a node gets to answer an inspection before it is reported unreachable.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Live actors one node lists in one answer at most.
pub const MAX_PAGE: usize = 1001;

/// What the admin API asks one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum InspectRequest {
    /// Its live actors of `kind` (both kinds when `None`) with ids after `after`, by id, at
    /// most `limit`.
    LiveActors {
        kind: Option<EntityKind>,
        after: Option<ObjectId>,
        limit: usize,
    },
    /// What its directory knows about one entity (without activating it).
    Actor { kind: EntityKind, id: ObjectId },
    /// The shard moves it recorded, newest first, at most `limit`.
    ShardMoves { limit: usize },
}

/// What one node answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum InspectReply {
    LiveActors(Vec<LiveActor>),
    Actor(EntityInfo),
    ShardMoves(Vec<ShardMove>),
}

/// The answers of every member asked, by node id, and the members that did not answer in time.
#[derive(Debug, Default)]
pub struct Gathered {
    pub answers: Vec<(String, InspectReply)>,
    pub unreachable: Vec<String>,
}

impl Gathered {
    /// The answers `pick` takes, by node, and the nodes to report unreachable: those that did
    /// not answer and those whose answer `pick` refuses (not what was asked for).
    pub fn select<T>(
        self,
        pick: impl Fn(InspectReply) -> Option<T>,
    ) -> (Vec<(String, T)>, Vec<String>) {
        let mut unreachable = self.unreachable;
        let mut picked = Vec::new();
        for (node, reply) in self.answers {
            match pick(reply) {
                Some(value) => picked.push((node, value)),
                None => unreachable.push(node),
            }
        }
        (picked, unreachable)
    }
}

/// Answers an inspection about this node. `moves` gives the shard moves it recorded, newest
/// first (none on a single node: it owns every shard from start to stop).
pub async fn answer(
    runtime: &Runtime,
    request: InspectRequest,
    moves: impl FnOnce(usize) -> Vec<ShardMove>,
) -> InspectReply {
    match request {
        InspectRequest::LiveActors { kind, after, limit } => {
            let limit = limit.clamp(1, MAX_PAGE);
            let mut live = Vec::new();
            if kind != Some(EntityKind::Order) {
                live.extend(runtime.tickets.list_live(after, limit).await);
            }
            if kind != Some(EntityKind::Ticket) {
                live.extend(runtime.orders.list_live(after, limit).await);
            }
            live.sort_by_key(|actor| actor.id);
            live.truncate(limit);
            InspectReply::LiveActors(live)
        }
        InspectRequest::Actor { kind, id } => InspectReply::Actor(match kind {
            EntityKind::Ticket => runtime.tickets.info(id).await,
            EntityKind::Order => runtime.orders.info(id).await,
        }),
        InspectRequest::ShardMoves { limit } => InspectReply::ShardMoves(moves(limit)),
    }
}

/// The subject node `node_id` of cluster `cluster` answers inspections on. Characters that mean
/// something in a subject (or could) are escaped, so any node id names exactly one subject.
pub fn node_subject(cluster: &str, node_id: &str) -> String {
    let token: String = node_id
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || byte == b'-' {
                char::from(byte).to_string()
            } else {
                format!("_{byte:02x}")
            }
        })
        .collect();
    format!("{cluster}.admin.{token}")
}

/// The subject every node publishes its actors' transitions on, for the live tails.
pub fn transitions_subject(cluster: &str) -> String {
    format!("{cluster}.admin.transitions")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::Envelope;

    #[test]
    fn node_ids_map_to_one_subject_token_each() {
        assert_eq!(node_subject("bo", "node-1"), "bo.admin.node-1");
        assert_eq!(node_subject("bo", "web.1"), "bo.admin.web_2e1");
        assert_eq!(node_subject("bo", "a_b"), "bo.admin.a_5fb");
        assert_eq!(node_subject("bo", "a>*"), "bo.admin.a_3e_2a");
        assert_ne!(node_subject("bo", "a.b"), node_subject("bo", "a_2eb"));
    }

    #[test]
    fn requests_round_trip_and_newer_formats_are_refused() {
        let request = InspectRequest::LiveActors {
            kind: Some(EntityKind::Order),
            after: Some(ObjectId::from_parts(1, [2; 5], 3)),
            limit: 51,
        };
        let decoded =
            Envelope::<InspectRequest>::decode(&Envelope::new(None, request.clone()).encode())
                .unwrap();
        assert_eq!(decoded.body, request);
        let newer = br#"{"v":9,"requestId":null,"body":{"type":"shardMoves","limit":1}}"#;
        assert!(Envelope::<InspectRequest>::decode(newer).is_err());
    }
}
