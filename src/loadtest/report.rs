//! The run's report: per-operation HdrHistogram latencies (from intended start), throughput,
//! errors by status, pacing, the checker's verdict and ratios to a baseline; written as a text
//! table (stdout), `report.json` and a self-contained `report.html` with inline SVG charts.
//!
//! Owns the numbers' presentation. It computes everything from the recorded history, so it
//! must not send requests or decide what counts as a violation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::checker::Verdict;
use super::history::{Operation, OperationKind};
use super::observe::ExpirySettlement;
use super::schedule::PacingStats;
use super::spawn::{NemesisReport, ProcessUsage};

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    /// The slowest.
    pub max: f64,
    /// The arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Percentiles of a histogram of microseconds (or of milliseconds with `scale` 1).
    fn of(histogram: &Histogram<u64>, per_millisecond: f64) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / per_millisecond;
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: histogram.max() as f64 / per_millisecond,
            mean: histogram.mean() / per_millisecond,
        }
    }
}

fn histogram() -> Histogram<u64> {
    // One microsecond to one hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One operation kind's numbers in one step.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStats {
    /// Which operation.
    pub kind: OperationKind,
    /// Operations invoked.
    pub count: u64,
    /// Operations answered with 2xx.
    pub succeeded: u64,
    /// Answered operations per second of the step.
    pub throughput: f64,
    /// From intended start to the final answer (or transport failure).
    pub latency_ms: Percentiles,
    /// Final answers by HTTP status.
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no answer.
    pub transport_errors: u64,
    /// `503` + `Retry-After` answers honoured (the request was sent again).
    pub retries: u64,
}

/// One rate step (the whole run without `--sweep`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// Arrivals per second asked for.
    pub target_rate: f64,
    /// From the step's start to its last answer (at least `--duration`).
    pub duration_seconds: f64,
    /// Arrivals scheduled, sent, dropped and late.
    pub pacing: PacingStats,
    /// Answered operations (follow-ups included) per second.
    pub achieved_rate: f64,
    /// Latency of every operation of the step together.
    pub latency_ms: Percentiles,
    /// Per operation kind.
    pub operations: Vec<OperationStats>,
    /// CPU the spawned server used during the step, and its memory at the end (`None` for a
    /// `--target`, or off Linux).
    pub server_usage: Option<ProcessUsage>,
    /// CPU the load tester itself used during the step: on one machine it competes with the
    /// server for the same cores.
    pub generator_usage: Option<ProcessUsage>,
}

impl StepReport {
    /// Computes a step's numbers from its operations; `elapsed_seconds` is the step's wall time
    /// from its first intended start to its last answer.
    pub fn compute(
        target_rate: f64,
        pacing: PacingStats,
        elapsed_seconds: f64,
        operations: &[&Operation],
    ) -> StepReport {
        let elapsed = elapsed_seconds.max(1e-3);
        let mut all = histogram();
        let mut stats = Vec::new();
        let mut answered_total = 0;
        for kind in OperationKind::ALL {
            let of_kind: Vec<&&Operation> =
                operations.iter().filter(|op| op.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let mut latency = histogram();
            let mut statuses = BTreeMap::new();
            let mut transport_errors = 0;
            let mut retries = 0;
            let mut succeeded = 0;
            for operation in &of_kind {
                latency.saturating_record(operation.latency_micros().max(1));
                all.saturating_record(operation.latency_micros().max(1));
                retries += u64::from(operation.retries);
                match operation.status {
                    Some(status) => {
                        *statuses.entry(status.to_string()).or_insert(0) += 1;
                        if (200..300).contains(&status) {
                            succeeded += 1;
                        }
                    }
                    None => transport_errors += 1,
                }
            }
            let answered = of_kind.len() as u64 - transport_errors;
            answered_total += answered;
            stats.push(OperationStats {
                kind,
                count: of_kind.len() as u64,
                succeeded,
                throughput: answered as f64 / elapsed,
                latency_ms: Percentiles::of(&latency, 1000.0),
                statuses,
                transport_errors,
                retries,
            });
        }
        StepReport {
            target_rate,
            duration_seconds: elapsed,
            pacing,
            achieved_rate: answered_total as f64 / elapsed,
            latency_ms: Percentiles::of(&all, 1000.0),
            operations: stats,
            server_usage: None,
            generator_usage: None,
        }
    }
}

/// One second of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelinePoint {
    /// Seconds since the run started (answers completed in `[second, second + 1)`).
    pub second: u64,
    /// Answers completed in that second.
    pub completed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Throughput and latency per second of the run, by completion time.
pub fn timeline(operations: &[Operation]) -> Vec<TimelinePoint> {
    let mut seconds: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for operation in operations {
        seconds
            .entry(operation.completed_micros / 1_000_000)
            .or_insert_with(histogram)
            .saturating_record(operation.latency_micros().max(1));
    }
    let last = seconds.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|second| match seconds.get(&second) {
            Some(histogram) => TimelinePoint {
                second,
                completed: histogram.len(),
                p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            },
            None => TimelinePoint {
                second,
                completed: 0,
                p50_ms: 0.0,
                p99_ms: 0.0,
            },
        })
        .collect()
}

/// The expiry storm's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryReport {
    #[serde(flatten)]
    pub settlement: ExpirySettlement,
    /// From the last deadline to the last cancellation, in milliseconds.
    pub last_cancelled_after_last_deadline_ms: Option<i64>,
    /// From the first deadline to the last cancellation, in milliseconds.
    pub storm_span_ms: Option<i64>,
    /// Cancellation time minus deadline, per order.
    pub lag_ms: Percentiles,
}

impl ExpiryReport {
    /// Summarises a settlement.
    pub fn new(settlement: ExpirySettlement) -> ExpiryReport {
        let mut lags = histogram();
        for lag in &settlement.lags_millis {
            lags.saturating_record(u64::try_from(*lag).unwrap_or(0).max(1));
        }
        let done = (settlement.cancelled == settlement.orders)
            .then_some(settlement.last_cancelled_millis)
            .flatten();
        ExpiryReport {
            last_cancelled_after_last_deadline_ms: done
                .map(|at| at - settlement.last_deadline_millis),
            storm_span_ms: done.map(|at| at - settlement.first_deadline_millis),
            lag_ms: Percentiles::of(&lags, 1.0),
            settlement,
        }
    }
}

/// This run's throughput as a share of a baseline run's.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ratio {
    /// The baseline's highest achieved rate.
    pub baseline_rate: f64,
    /// This run's highest achieved rate.
    pub rate: f64,
    /// `rate / baseline_rate`.
    pub ratio: f64,
}

/// Where and how the run happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// The server's base URL.
    pub target: String,
    /// `target`, `embedded` or `cluster:N`.
    pub mode: String,
    /// Whether the rate was swept.
    pub sweep: bool,
    /// Users signed up before the run.
    pub users: usize,
    /// Tickets put on sale before the run.
    pub tickets: usize,
    /// Requests open at most.
    pub max_in_flight: usize,
    /// Share of winners and steady orders that pay.
    pub pay_ratio: f64,
    /// The spawned server's order time to live.
    pub order_ttl: Option<String>,
    /// Cores this machine offers the load tester (and the server beside it).
    pub cores: usize,
    /// The boxoffice version.
    pub version: String,
}

/// Everything a run reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The scenario's name on the command line.
    pub scenario: String,
    /// When the load started (ISO 8601 UTC).
    pub started_at: String,
    /// Where and how the run happened.
    pub settings: Settings,
    /// One per rate (several with `--sweep`).
    pub steps: Vec<StepReport>,
    /// The highest achieved rate over the steps.
    pub max_achieved_rate: f64,
    /// How an expiry storm settled.
    pub expiry: Option<ExpiryReport>,
    /// The fault injected into a spawned cluster (`--nemesis`).
    pub nemesis: Option<NemesisReport>,
    /// Per second of the whole run, warm-up included.
    pub timeline: Vec<TimelinePoint>,
    /// The history checker's verdict.
    pub checker: Verdict,
    /// The recorded operations the violations name (at most `MAX_VIOLATION_OPERATIONS`).
    pub violation_operations: Vec<Operation>,
    /// This run as a ratio of a baseline run (`--baseline`).
    pub baseline: Option<Ratio>,
}

/// The most recorded operations a report lists for its violations.
pub const MAX_VIOLATION_OPERATIONS: usize = 1000;

/// The operations `verdict`'s violations name, in id order, at most
/// `MAX_VIOLATION_OPERATIONS`.
pub fn violation_operations(verdict: &Verdict, history: &[Operation]) -> Vec<Operation> {
    let named: std::collections::BTreeSet<u64> = verdict
        .violations
        .iter()
        .flat_map(|violation| violation.operations.iter().copied())
        .collect();
    history
        .iter()
        .filter(|operation| named.contains(&operation.id))
        .take(MAX_VIOLATION_OPERATIONS)
        .cloned()
        .collect()
}

/// One line describing an operation, for the text report.
fn describe_operation(operation: &Operation) -> String {
    let outcome = match (&operation.status, &operation.error) {
        (Some(status), _) => status.to_string(),
        (None, Some(error)) => format!("no answer ({error})"),
        (None, None) => "no answer".to_string(),
    };
    format!(
        "#{} {} user {} ticket {} order {}: intended {:.3} s, sent {:.3} s, answered {:.3} s: {outcome}",
        operation.id,
        operation.kind.as_str(),
        operation.user.map_or("-".into(), |user| user.to_string()),
        operation.ticket_id.as_deref().unwrap_or("-"),
        operation.order_id.as_deref().unwrap_or("-"),
        operation.intended_micros as f64 / 1e6,
        operation.invoked_micros as f64 / 1e6,
        operation.completed_micros as f64 / 1e6,
    )
}

impl Report {
    /// Writes `report.json` and `report.html` into `directory` (created if missing).
    pub fn write_files(&self, directory: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("creating the report directory {}", directory.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(directory.join("report.json"), json + "\n")
            .with_context(|| format!("writing {}", directory.join("report.json").display()))?;
        std::fs::write(directory.join("report.html"), self.html())
            .with_context(|| format!("writing {}", directory.join("report.html").display()))?;
        Ok(())
    }

    /// The text table printed on stdout.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "boxoffice loadtest: scenario {} against {} ({}), {} users, {} tickets, {} core(s)",
            self.scenario,
            self.settings.target,
            self.settings.mode,
            self.settings.users,
            self.settings.tickets,
            self.settings.cores
        );
        for (number, step) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "\nstep {}: target {:.0}/s for {:.1}s: sent {} of {}, dropped {}, late {}, achieved {:.1}/s",
                number + 1,
                step.target_rate,
                step.duration_seconds,
                step.pacing.sent,
                step.pacing.scheduled,
                step.pacing.dropped,
                step.pacing.late,
                step.achieved_rate
            );
            let cores = |usage: &ProcessUsage| usage.cpu_seconds / step.duration_seconds;
            match (&step.server_usage, &step.generator_usage) {
                (Some(server), Some(generator)) => {
                    let _ = writeln!(
                        out,
                        "  cpu: server {:.1} s ({:.2} cores, {:.0} MiB resident), load tester {:.1} s ({:.2} cores)",
                        server.cpu_seconds,
                        cores(server),
                        server.rss_bytes as f64 / 1_048_576.0,
                        generator.cpu_seconds,
                        cores(generator)
                    );
                }
                (None, Some(generator)) => {
                    let _ = writeln!(
                        out,
                        "  cpu: load tester {:.1} s ({:.2} cores)",
                        generator.cpu_seconds,
                        cores(generator)
                    );
                }
                _ => {}
            }
            let _ = writeln!(
                out,
                "  {:<9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  statuses",
                "operation",
                "count",
                "ok",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "retries"
            );
            for operation in &step.operations {
                let statuses: Vec<String> = operation
                    .statuses
                    .iter()
                    .map(|(status, count)| format!("{status}:{count}"))
                    .chain(
                        (operation.transport_errors > 0)
                            .then(|| format!("transport:{}", operation.transport_errors)),
                    )
                    .collect();
                let latency = operation.latency_ms;
                let _ = writeln!(
                    out,
                    "  {:<9} {:>8} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}  {}",
                    operation.kind.as_str(),
                    operation.count,
                    operation.succeeded,
                    operation.throughput,
                    latency.p50,
                    latency.p90,
                    latency.p99,
                    latency.p999,
                    latency.max,
                    operation.retries,
                    statuses.join(" ")
                );
            }
        }
        let _ = writeln!(out, "\nmax achieved rate: {:.1}/s", self.max_achieved_rate);
        if let Some(ratio) = &self.baseline {
            let _ = writeln!(
                out,
                "ratio to the baseline: {:.3} ({:.1}/s of {:.1}/s)",
                ratio.ratio, ratio.rate, ratio.baseline_rate
            );
        }
        if let Some(expiry) = &self.expiry {
            let _ = writeln!(
                out,
                "expiry: {} of {} orders cancelled; last cancelled {} after the last deadline; storm span {}; lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                expiry.settlement.cancelled,
                expiry.settlement.orders,
                expiry
                    .last_cancelled_after_last_deadline_ms
                    .map_or("never".into(), |ms| format!("{ms} ms")),
                expiry
                    .storm_span_ms
                    .map_or("-".into(), |ms| format!("{ms} ms")),
                expiry.lag_ms.p50,
                expiry.lag_ms.p99,
                expiry.lag_ms.max
            );
        }
        if let Some(nemesis) = &self.nemesis {
            let _ = writeln!(
                out,
                "nemesis: {} {} at {:.1} s, back at {:.1} s",
                nemesis.fault,
                nemesis.victim,
                nemesis.injected_at_ms as f64 / 1000.0,
                nemesis.healed_at_ms as f64 / 1000.0
            );
        }
        let checker = &self.checker;
        let _ = writeln!(
            out,
            "checker: {} violation(s); {} orders, {} tickets, {} events checked; {} indeterminate operation(s)",
            checker.violations.len(),
            checker.orders_checked,
            checker.tickets_checked,
            checker
                .events_checked
                .map_or("no (no admin token)".into(), |count| count.to_string()),
            checker.indeterminate_operations
        );
        for violation in &checker.violations {
            let _ = writeln!(
                out,
                "  VIOLATION {:?} {}: {}",
                violation.kind, violation.entity, violation.message
            );
            for operation in self
                .violation_operations
                .iter()
                .filter(|operation| violation.operations.contains(&operation.id))
            {
                let _ = writeln!(out, "    {}", describe_operation(operation));
            }
        }
        out
    }

    /// The self-contained HTML page with inline SVG charts.
    pub fn html(&self) -> String {
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>BoxOffice load test: {}</h1><p>{} ({}), started {}, {} users, {} tickets, {} core(s), boxoffice {}</p>",
            escape(&self.scenario),
            escape(&self.settings.target),
            escape(&self.settings.mode),
            escape(&self.started_at),
            self.settings.users,
            self.settings.tickets,
            self.settings.cores,
            escape(&self.settings.version)
        );
        let verdict = if self.checker.violations.is_empty() {
            "<p class=ok>History checker: no violation.</p>".to_string()
        } else {
            let items: String = self
                .checker
                .violations
                .iter()
                .map(|violation| {
                    format!(
                        "<li>{:?} <code>{}</code>: {} (operations {:?})</li>",
                        violation.kind,
                        escape(&violation.entity),
                        escape(&violation.message),
                        violation.operations
                    )
                })
                .collect();
            format!(
                "<p class=bad>History checker: {} violation(s).</p><ul>{items}</ul>",
                self.checker.violations.len()
            )
        };
        body.push_str(&verdict);
        let seconds: Vec<f64> = self
            .timeline
            .iter()
            .map(|point| point.second as f64)
            .collect();
        body.push_str(&line_chart(
            "Throughput over time",
            "second",
            "answers per second",
            &[Series {
                name: "answers/s".into(),
                points: seconds
                    .iter()
                    .zip(&self.timeline)
                    .map(|(x, point)| (*x, point.completed as f64))
                    .collect(),
            }],
            &[],
        ));
        body.push_str(&line_chart(
            "Latency over time (from intended start)",
            "second",
            "milliseconds",
            &[
                Series {
                    name: "p50".into(),
                    points: seconds
                        .iter()
                        .zip(&self.timeline)
                        .map(|(x, point)| (*x, point.p50_ms))
                        .collect(),
                },
                Series {
                    name: "p99".into(),
                    points: seconds
                        .iter()
                        .zip(&self.timeline)
                        .map(|(x, point)| (*x, point.p99_ms))
                        .collect(),
                },
            ],
            &[],
        ));
        let quantiles = ["p50", "p90", "p99", "p99.9", "max"];
        let mut spectrum = Vec::new();
        for (number, step) in self.steps.iter().enumerate() {
            for operation in &step.operations {
                let latency = operation.latency_ms;
                let values = [
                    latency.p50,
                    latency.p90,
                    latency.p99,
                    latency.p999,
                    latency.max,
                ];
                spectrum.push(Series {
                    name: if self.steps.len() > 1 {
                        format!(
                            "{} @{:.0}/s (step {})",
                            operation.kind.as_str(),
                            step.target_rate,
                            number + 1
                        )
                    } else {
                        operation.kind.as_str().to_string()
                    },
                    points: (0..quantiles.len())
                        .map(|index| (index as f64, values[index]))
                        .collect(),
                });
            }
        }
        body.push_str(&line_chart(
            "Latency percentiles by operation (from intended start)",
            "percentile",
            "milliseconds",
            &spectrum,
            &quantiles,
        ));
        if self.steps.len() > 1 {
            body.push_str(&line_chart(
                "Sweep: achieved against target rate",
                "target rate (/s)",
                "achieved rate (/s)",
                &[Series {
                    name: "achieved".into(),
                    points: self
                        .steps
                        .iter()
                        .map(|step| (step.target_rate, step.achieved_rate))
                        .collect(),
                }],
                &[],
            ));
        }
        let _ = write!(body, "<h2>Numbers</h2><pre>{}</pre>", escape(&self.text()));
        format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>BoxOffice load test: {}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
            escape(&self.scenario)
        )
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:980px}pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}.ok{color:#176b2c;font-weight:bold}.bad{color:#a00;font-weight:bold}svg{display:block;margin:1em 0;background:#fff;border:1px solid #ddd}svg text{font-size:11px;font-family:system-ui,sans-serif}";

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG line chart with axes, ticks and a legend; empty series draw nothing. With
/// `categories`, x is an index into them and each is labelled; else x ticks are numbers.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    categories: &[&str],
) -> String {
    const WIDTH: f64 = 900.0;
    const HEIGHT: f64 = 320.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 200.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 45.0;
    let points = series.iter().flat_map(|line| line.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0_f64);
    for (x, y) in points {
        x_min = x_min.min(*x);
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
    }
    if x_min > x_max {
        (x_min, x_max) = (0.0, 1.0);
    }
    if (x_max - x_min).abs() < f64::EPSILON {
        x_max = x_min + 1.0;
    }
    let y_max = if y_max <= 0.0 { 1.0 } else { y_max * 1.1 };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x_at = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_width;
    let y_at = |y: f64| TOP + plot_height - y / y_max * plot_height;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=img aria-label=\"{}\"><text x=\"{LEFT}\" y=\"18\" font-weight=\"bold\">{}</text>",
        escape(title),
        escape(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#333\"/>",
        TOP + plot_height,
        LEFT + plot_width,
        TOP + plot_height,
        TOP + plot_height
    );
    for tick in 0..=4 {
        let fraction = f64::from(tick) / 4.0;
        let y_value = y_max * fraction;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_width,
            LEFT - 6.0,
            y_at(y_value) + 4.0,
            format_number(y_value),
            y = y_at(y_value),
        );
    }
    let x_ticks: Vec<(f64, String)> = if categories.is_empty() {
        (0..=4)
            .map(|tick| {
                let x_value = x_min + (x_max - x_min) * f64::from(tick) / 4.0;
                (x_value, format_number(x_value))
            })
            .collect()
    } else {
        categories
            .iter()
            .enumerate()
            .map(|(index, label)| (index as f64, escape(label)))
            .collect()
    };
    for (x_value, label) in x_ticks {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            x_at(x_value),
            TOP + plot_height + 16.0,
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text><text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        LEFT + plot_width / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        TOP + plot_height / 2.0,
        escape(y_label)
    );
    for (index, line) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let path: Vec<String> = line
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x_at(*x), y_at(*y)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        let legend_y = TOP + 14.0 * index as f64;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            LEFT + plot_width + 12.0,
            legend_y,
            LEFT + plot_width + 26.0,
            legend_y + 9.0,
            escape(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn format_number(value: f64) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(id: u64, kind: OperationKind, latency_ms: u64, status: Option<u16>) -> Operation {
        Operation {
            id,
            kind,
            step: 0,
            user: None,
            ticket_id: None,
            order_id: None,
            intended_micros: id * 10_000,
            invoked_micros: id * 10_000,
            completed_micros: id * 10_000 + latency_ms * 1000,
            status,
            error: status.is_none().then(|| "reset".into()),
            retries: u32::from(status == Some(503)),
        }
    }

    #[test]
    fn a_violation_is_reported_with_the_operations_it_names() {
        use crate::loadtest::checker::{Violation, ViolationKind};

        let history: Vec<Operation> = (0..4)
            .map(|id| operation(id, OperationKind::Order, 3, Some(201)))
            .collect();
        let verdict = Verdict {
            violations: vec![Violation {
                kind: ViolationKind::DoubleBooking,
                entity: "ticket-1".into(),
                message: "ticket ticket-1 is held by 2 live orders".into(),
                operations: vec![1, 3],
            }],
            ..Verdict::default()
        };
        let named = violation_operations(&verdict, &history);
        assert_eq!(named.iter().map(|op| op.id).collect::<Vec<_>>(), vec![1, 3]);
        let refs: Vec<&Operation> = history.iter().collect();
        let report = Report {
            scenario: "flash-sale".into(),
            started_at: "2026-11-27T00:00:00.000Z".into(),
            settings: Settings {
                target: "http://127.0.0.1:1".into(),
                mode: "embedded".into(),
                sweep: false,
                users: 2,
                tickets: 1,
                max_in_flight: 8,
                pay_ratio: 0.5,
                order_ttl: None,
                cores: 2,
                version: "0".into(),
            },
            steps: vec![StepReport::compute(
                10.0,
                PacingStats::default(),
                1.0,
                &refs,
            )],
            max_achieved_rate: 4.0,
            expiry: None,
            nemesis: None,
            timeline: timeline(&history),
            checker: verdict,
            violation_operations: named,
            baseline: None,
        };
        let text = report.text();
        assert!(text.contains("VIOLATION DoubleBooking ticket-1"), "{text}");
        assert!(
            text.contains("#1 order") && text.contains("#3 order"),
            "{text}"
        );
        assert!(!text.contains("#2 order"), "{text}");
        let html = report.html();
        assert!(html.contains("class=bad") && html.contains("DoubleBooking"));
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["violationOperations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn steps_count_statuses_errors_and_percentiles_per_operation() {
        let mut operations: Vec<Operation> = (0..100)
            .map(|id| operation(id, OperationKind::Browse, id + 1, Some(200)))
            .collect();
        operations.push(operation(100, OperationKind::Order, 5, Some(201)));
        operations.push(operation(101, OperationKind::Order, 5, Some(400)));
        operations.push(operation(102, OperationKind::Order, 5, None));
        let refs: Vec<&Operation> = operations.iter().collect();
        let step = StepReport::compute(100.0, PacingStats::default(), 2.0, &refs);
        assert_eq!(step.operations.len(), 2);
        let browse = &step.operations[0];
        assert_eq!(
            (browse.kind, browse.count, browse.succeeded),
            (OperationKind::Browse, 100, 100)
        );
        assert!(
            (browse.latency_ms.p50 - 50.0).abs() < 0.1,
            "{:?}",
            browse.latency_ms
        );
        assert!(
            (browse.latency_ms.max - 100.0).abs() < 0.1,
            "{:?}",
            browse.latency_ms
        );
        let order = &step.operations[1];
        assert_eq!(order.statuses.get("201"), Some(&1));
        assert_eq!(order.statuses.get("400"), Some(&1));
        assert_eq!(order.transport_errors, 1);
        assert!(
            (step.achieved_rate - 51.0).abs() < 1e-9,
            "102 answers in 2 s"
        );
    }

    #[test]
    fn the_timeline_has_a_point_per_second() {
        let operations = vec![
            operation(0, OperationKind::Browse, 10, Some(200)),
            operation(300, OperationKind::Browse, 10, Some(200)),
        ];
        let points = timeline(&operations);
        assert_eq!(points.len(), 4);
        assert_eq!(points[0].completed, 1);
        assert_eq!(points[1].completed, 0);
        assert_eq!(points[3].completed, 1);
    }

    #[test]
    fn charts_escape_text_and_draw_every_series() {
        let svg = line_chart(
            "a < b",
            "x",
            "y",
            &[
                Series {
                    name: "one".into(),
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                },
                Series {
                    name: "two".into(),
                    points: vec![],
                },
            ],
            &["first", "second"],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(">first</text>") && svg.contains(">second</text>"));
        assert!(svg.contains("a &lt; b"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<rect").count(), 2);
    }
}
