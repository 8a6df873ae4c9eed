//! The recorded history of a run: every operation the generator invoked, with its intended,
//! invoke and complete times and what the client saw.
//!
//! Owns the record format that the checker and the report read. It must not interpret outcomes
//! (that is the checker's job) nor do I/O; recording is a short critical section under a mutex.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// `GET /` on the minimal endpoint.
    Baseline,
    /// `GET /api/tickets/:id`.
    Browse,
    /// `POST /api/orders`.
    Order,
    /// `POST /api/payments`.
    Pay,
    /// `DELETE /api/orders/:id`.
    Cancel,
}

impl OperationKind {
    /// Every kind, in report order.
    pub const ALL: [OperationKind; 5] = [
        OperationKind::Baseline,
        OperationKind::Browse,
        OperationKind::Order,
        OperationKind::Pay,
        OperationKind::Cancel,
    ];

    /// The kind's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Baseline => "baseline",
            OperationKind::Browse => "browse",
            OperationKind::Order => "order",
            OperationKind::Pay => "pay",
            OperationKind::Cancel => "cancel",
        }
    }
}

/// One invoked operation, as the client saw it. Times are microseconds since the run started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Unique within the run, in invocation order of the schedule (follow-ups get later ids).
    pub id: u64,
    /// What was asked.
    pub kind: OperationKind,
    /// The step of a sweep (0 without one).
    pub step: usize,
    /// Index of the user who asked, when signed in.
    pub user: Option<usize>,
    /// The ticket the operation is about, when it is about one.
    pub ticket_id: Option<String>,
    /// The order the operation is about (for `Order`, the id the server returned on 201).
    pub order_id: Option<String>,
    /// When the schedule meant the request to start: latency is measured from here, so a late
    /// generator or a slow server both show up (no coordinated omission).
    pub intended_micros: u64,
    /// When the request was actually sent.
    pub invoked_micros: u64,
    /// When the final answer arrived (after any 503 retries).
    pub completed_micros: u64,
    /// The final HTTP status, or `None` when the request failed in transport (indeterminate).
    pub status: Option<u16>,
    /// The transport error, when there was one.
    pub error: Option<String>,
    /// How many times a 503 with `Retry-After` was honoured before the final answer.
    pub retries: u32,
}

impl Operation {
    /// Latency from the intended start to completion, in microseconds.
    pub fn latency_micros(&self) -> u64 {
        self.completed_micros.saturating_sub(self.intended_micros)
    }

    /// True when the server answered with this status.
    pub fn answered(&self, status: u16) -> bool {
        self.status == Some(status)
    }
}

/// Collects operations from many tasks; ids are handed out in order.
pub struct Recorder {
    started: Instant,
    operations: Mutex<Vec<Operation>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Recorder {
    /// A recorder whose clock starts at `started`.
    pub fn new(started: Instant) -> Recorder {
        Recorder {
            started,
            operations: Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The instant times are measured from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Microseconds from the start of the run to `instant` (0 before it).
    pub fn micros(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.started).as_micros())
            .unwrap_or(u64::MAX)
    }

    /// A fresh operation id.
    pub fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds a completed operation.
    pub fn record(&self, operation: Operation) {
        debug_assert!(operation.intended_micros <= operation.completed_micros);
        self.operations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(operation);
    }

    /// How many operations have completed so far.
    pub fn len(&self) -> usize {
        self.operations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything recorded, ordered by id.
    pub fn into_operations(self) -> Vec<Operation> {
        let mut operations = self
            .operations
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        operations.sort_by_key(|operation| operation.id);
        operations
    }

    /// Runs `inspect` over everything recorded so far (in completion order) without copying
    /// it; recording waits meanwhile, so keep it short.
    pub fn inspect<T>(&self, inspect: impl FnOnce(&[Operation]) -> T) -> T {
        let operations = self
            .operations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inspect(&operations)
    }

    /// A copy of everything recorded so far, ordered by id.
    pub fn snapshot(&self) -> Vec<Operation> {
        let mut operations = self
            .operations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        operations.sort_by_key(|operation| operation.id);
        operations
    }
}
