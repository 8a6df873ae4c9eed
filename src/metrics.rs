//! Prometheus metrics of one BoxOffice process, rendered at `/metrics`.
//!
//! Owns metric names (`boxoffice_<noun>_<unit>`) and labels, which come from bounded sets only
//! (route templates, kinds, statuses: never ids). Each app instance has its own registry, so
//! several instances in one process do not mix their numbers.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (`/api/tickets/{id}`), or `unmatched`.
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// Labels naming an entity kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `ticket` or `order`: static, so a label set costs no allocation on the actors' paths.
    pub kind: &'static str,
}

/// Labels naming a kind and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindReasonLabels {
    pub kind: String,
    pub reason: String,
}

/// Every metric the process exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram>,
    pub actors_live: Family<KindLabels, Gauge>,
    pub actor_activations: Family<KindLabels, Counter>,
    pub actor_passivations: Family<KindLabels, Counter>,
    pub actor_restarts: Family<KindLabels, Counter>,
    pub admission_refusals: Family<KindReasonLabels, Counter>,
    pub mailbox_depth: Family<KindLabels, Gauge>,
    pub timer_lag: Histogram,
    pub timers_armed: Gauge,
    pub timers_fired: Counter,
    pub events_published: Counter,
    pub store_commits: Counter,
    pub store_commit_duration: Histogram,
    pub password_hashes_waiting: Gauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "boxoffice_http_requests",
            "HTTP requests by route template, method and status",
            http_requests.clone(),
        );
        let http_duration = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "boxoffice_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            http_duration.clone(),
        );
        let actors_live = Family::<KindLabels, Gauge>::default();
        registry.register(
            "boxoffice_actors_live",
            "Activated actors by kind",
            actors_live.clone(),
        );
        let actor_activations = Family::<KindLabels, Counter>::default();
        registry.register(
            "boxoffice_actor_activations",
            "Actor activations (loads from the store) by kind",
            actor_activations.clone(),
        );
        let actor_passivations = Family::<KindLabels, Counter>::default();
        registry.register(
            "boxoffice_actor_passivations",
            "Idle actors stopped to free memory, by kind",
            actor_passivations.clone(),
        );
        let actor_restarts = Family::<KindLabels, Counter>::default();
        registry.register(
            "boxoffice_actor_restarts",
            "Actors restarted by their supervisor after a crash, by kind",
            actor_restarts.clone(),
        );
        let admission_refusals = Family::<KindReasonLabels, Counter>::default();
        registry.register(
            "boxoffice_actor_admission_refusals",
            "Requests refused with 503 before reaching an actor, by kind and reason",
            admission_refusals.clone(),
        );
        let mailbox_depth = Family::<KindLabels, Gauge>::default();
        registry.register(
            "boxoffice_actor_mailbox_depth",
            "Requests queued or running in actors, by kind",
            mailbox_depth.clone(),
        );
        let timer_lag = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "boxoffice_timer_lag_seconds",
            "How late timers fire after their deadline",
            timer_lag.clone(),
        );
        let timers_armed = Gauge::default();
        registry.register(
            "boxoffice_timers_armed",
            "Armed timers",
            timers_armed.clone(),
        );
        let timers_fired = Counter::default();
        registry.register(
            "boxoffice_timers_fired",
            "Timers fired",
            timers_fired.clone(),
        );
        let events_published = Counter::default();
        registry.register(
            "boxoffice_events_published",
            "Domain events relayed from the outbox to the bus",
            events_published.clone(),
        );
        let store_commits = Counter::default();
        registry.register(
            "boxoffice_store_commits",
            "Store commits",
            store_commits.clone(),
        );
        let store_commit_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "boxoffice_store_commit_duration_seconds",
            "Time from asking the store to commit to its durable answer",
            store_commit_duration.clone(),
        );
        let password_hashes_waiting = Gauge::default();
        registry.register(
            "boxoffice_password_hashes_waiting",
            "Password hashes waiting for a hashing slot",
            password_hashes_waiting.clone(),
        );
        // Every bounded label combination exists from the start, so dashboards see zeros
        // rather than missing series.
        for kind in ["ticket", "order"] {
            let labels = Metrics::kind(kind);
            let _ = actors_live.get_or_create(&labels);
            let _ = actor_activations.get_or_create(&labels);
            let _ = actor_passivations.get_or_create(&labels);
            let _ = actor_restarts.get_or_create(&labels);
            let _ = mailbox_depth.get_or_create(&labels);
            for reason in ["mailbox_full", "quarantined"] {
                let _ = admission_refusals.get_or_create(&KindReasonLabels {
                    kind: kind.into(),
                    reason: reason.into(),
                });
            }
        }
        Metrics {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            actors_live,
            actor_activations,
            actor_passivations,
            actor_restarts,
            admission_refusals,
            mailbox_depth,
            timer_lag,
            timers_armed,
            timers_fired,
            events_published,
            store_commits,
            store_commit_duration,
            password_hashes_waiting,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut text, &registry);
        }
        text
    }

    /// The label set for `kind`.
    pub fn kind(kind: &'static str) -> KindLabels {
        KindLabels { kind }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
