//! Open-loop arrivals: requests start at fixed intended times (`start + index / rate`) whether
//! or not earlier ones have answered, so a slow server cannot slow the generator down and hide
//! its own slowness (no coordinated omission). Latency is measured from the intended start.
//!
//! Owns pacing and the in-flight bound: an arrival that finds `max_in_flight` requests still
//! open is dropped and counted, never queued. It must not know what a request does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// An arrival issued more than this after its intended start counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);
/// The most arrivals one schedule may hold, whatever rate and duration ask for.
pub const MAX_ARRIVALS: u64 = 20_000_000;

/// `rate` arrivals per second for `duration`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Arrivals per second.
    pub rate: f64,
    /// How long arrivals keep coming.
    pub duration: Duration,
}

impl Schedule {
    /// How many arrivals the schedule holds (at least one).
    pub fn len(&self) -> u64 {
        let count = (self.rate * self.duration.as_secs_f64()).floor();
        // Both factors are positive and bounded, so the cast cannot wrap.
        (count as u64).clamp(1, MAX_ARRIVALS)
    }

    /// Never true: a schedule holds at least one arrival.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// When arrival `index` should start, after the schedule's start.
    pub fn offset(&self, index: u64) -> Duration {
        // Whole nanoseconds, rounded, so 50/s gives exactly 20 ms steps.
        Duration::from_nanos((index as f64 * 1e9 / self.rate).round() as u64)
    }
}

/// What the pacing loop did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PacingStats {
    /// Arrivals in the schedule.
    pub scheduled: u64,
    /// Arrivals sent.
    pub sent: u64,
    /// Arrivals dropped because `max_in_flight` requests were still open.
    pub dropped: u64,
    /// Arrivals sent more than `LATE_AFTER` after their intended start (the generator could
    /// not keep up; their latency still counts from the intended start).
    pub late: u64,
}

/// Runs `schedule` from `start`: calls `fire(index, intended_start)` for each arrival at its
/// time on its own task, then waits for every open request to finish. `on_arrival` is told of
/// each arrival (for the progress bar).
pub async fn run_open_loop<F, Fut>(
    schedule: Schedule,
    start: Instant,
    max_in_flight: usize,
    on_arrival: impl Fn(u64),
    mut fire: F,
) -> PacingStats
where
    F: FnMut(u64, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let tracker = TaskTracker::new();
    let mut stats = PacingStats {
        scheduled: schedule.len(),
        ..PacingStats::default()
    };
    for index in 0..stats.scheduled {
        let intended = start + schedule.offset(index);
        // Sleep only when ahead: an arrival that is already due goes out at once, so a
        // generator that fell behind catches up instead of drifting.
        if Instant::now() < intended {
            tokio::time::sleep_until(intended).await;
        }
        on_arrival(index);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.dropped += 1;
            continue;
        };
        if Instant::now().saturating_duration_since(intended) > LATE_AFTER {
            stats.late += 1;
        }
        stats.sent += 1;
        let request = fire(index, intended);
        tracker.spawn(async move {
            request.await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    stats
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::get;

    use super::*;
    use crate::loadtest::client::Client;
    use crate::loadtest::history::{OperationKind, Recorder};
    use crate::loadtest::scenario::{Request, perform};

    #[test]
    fn arrivals_are_evenly_spaced_at_the_rate() {
        let schedule = Schedule {
            rate: 50.0,
            duration: Duration::from_secs(1),
        };
        assert_eq!(schedule.len(), 50);
        assert_eq!(schedule.offset(0), Duration::ZERO);
        assert_eq!(schedule.offset(1), Duration::from_millis(20));
        assert_eq!(schedule.offset(49), Duration::from_millis(980));
        let tiny = Schedule {
            rate: 0.5,
            duration: Duration::from_secs(1),
        };
        assert_eq!(tiny.len(), 1, "a schedule always holds one arrival");
    }

    /// A server that answers at most `SERVED_AT_ONCE` requests at a time, each after 200 ms, and
    /// remembers the most requests it ever had open (answered or waiting).
    struct SlowServer {
        open: AtomicUsize,
        most_open: AtomicUsize,
        permits: Semaphore,
    }

    const SERVED_AT_ONCE: usize = 5;
    const SERVICE_TIME: Duration = Duration::from_millis(200);

    async fn slow(state: axum::extract::State<Arc<SlowServer>>) -> &'static str {
        let open = state.open.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_open.fetch_max(open, Ordering::SeqCst);
        let permit = state.permits.acquire().await.expect("open semaphore");
        tokio::time::sleep(SERVICE_TIME).await;
        drop(permit);
        state.open.fetch_sub(1, Ordering::SeqCst);
        "ok"
    }

    #[tokio::test]
    async fn arrivals_beyond_the_in_flight_bound_are_dropped_not_queued() {
        let start = Instant::now();
        let schedule = Schedule {
            rate: 50.0,
            duration: Duration::from_secs(1),
        };
        // No request answers before the schedule (980 ms) is long over, so at most two are ever
        // open.
        let answers_at = start + Duration::from_secs(3);
        let stats = run_open_loop(
            schedule,
            start,
            2,
            |_| {},
            |_, _| tokio::time::sleep_until(answers_at),
        )
        .await;
        assert_eq!(stats.scheduled, 50);
        assert_eq!(stats.sent, 2);
        assert_eq!(stats.dropped, 48);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_keeps_intended_starts_under_a_slow_server() {
        let server = Arc::new(SlowServer {
            open: AtomicUsize::new(0),
            most_open: AtomicUsize::new(0),
            permits: Semaphore::new(SERVED_AT_ONCE),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(slow))
            .with_state(server.clone());
        let serving = tokio::spawn(async move { axum::serve(listener, app).await });

        let client = Client::new(&[format!("http://{address}")], 64).unwrap();
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start.into_std()));
        let schedule = Schedule {
            rate: 50.0,
            duration: Duration::from_secs(1),
        };
        let stats = run_open_loop(
            schedule,
            start,
            256,
            |_| {},
            |_, intended| {
                let client = client.clone();
                let recorder = recorder.clone();
                async move {
                    perform(
                        &client,
                        &recorder,
                        Request::get(OperationKind::Baseline, "/"),
                        intended.into_std(),
                        0,
                    )
                    .await;
                }
            },
        )
        .await;
        serving.abort();

        assert_eq!(stats.scheduled, 50);
        assert_eq!(
            stats.sent, 50,
            "nothing is dropped below the in-flight bound"
        );
        assert_eq!(stats.dropped, 0);
        let recorder = Arc::into_inner(recorder).expect("every request finished");
        let operations = recorder.into_operations();
        assert_eq!(operations.len(), 50);
        let mut intended: Vec<u64> = operations.iter().map(|op| op.intended_micros).collect();
        intended.sort_unstable();
        for (index, micros) in intended.iter().enumerate() {
            assert_eq!(
                *micros,
                index as u64 * 20_000,
                "intended starts are 20 ms apart"
            );
        }
        for operation in &operations {
            assert_eq!(operation.status, Some(200));
            assert!(operation.invoked_micros >= operation.intended_micros);
            assert!(
                operation.latency_micros() >= SERVICE_TIME.as_micros() as u64,
                "latency includes the service time: {operation:?}"
            );
        }
        // The generator did not wait for answers: requests piled up at the server beyond what
        // it serves at once.
        assert!(
            server.most_open.load(Ordering::SeqCst) > SERVED_AT_ONCE,
            "requests queued at the server"
        );
        // 50 requests at 5 per 200 ms take at least 2 s from the first start, while the last
        // was meant to start at 980 ms: measured from intended starts, the queueing shows.
        let worst = operations
            .iter()
            .map(|op| op.latency_micros())
            .max()
            .unwrap();
        assert!(
            worst >= 2_000_000 - 980_000,
            "the worst latency includes the wait in the queue: {worst} µs"
        );
    }
}
