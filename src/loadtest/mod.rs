//! `boxoffice loadtest`: the load-test harness. It points at a server (`--target`) or starts one
//! (`--spawn embedded`), seeds users and tickets, drives a scenario open-loop at a fixed rate or
//! a sweep of rates, reads back what the server kept, checks the recorded history against it,
//! and reports.
//!
//! Modules, one concern each: `scenario` (what each arrival does, seeding), `schedule` (open
//! loop pacing), `client` (HTTP, 503 back-off), `history` (the record), `observe` (reading the
//! final state and the event log), `checker` (pure safety checks), `report` (text, JSON, HTML),
//! `spawn` (the server under test). This module only sequences them and maps the outcome to the
//! exit code: 0 clean, 1 a violation or a run that could not complete, 2 usage or setup.

pub mod checker;
pub mod client;
pub mod history;
pub mod observe;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod spawn;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{LoadtestArgs, ScenarioName};
use history::Recorder;
use report::{ExpiryReport, Ratio, Report, Settings, StepReport};
use schedule::Schedule;
use spawn::{Deployment, UsageError};

/// Exit code: the run completed and the checker found nothing.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: the checker found a violation, or the run could not complete.
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code: a usage or setup error; no load was generated.
pub const EXIT_USAGE: u8 = 2;

/// The default order time to live of a spawned server in an expiry storm.
const EXPIRY_STORM_TTL: Duration = Duration::from_secs(2);
/// The default order time to live of a spawned server otherwise (the contract's default).
const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// How long an expiry storm may take to settle after its last deadline.
const EXPIRY_WAIT: Duration = Duration::from_secs(120);
/// A sweep stops after a step that achieved less than this share of its target rate. Dropped
/// arrivals count against it (they were not achieved), but a brief stall that drops a few does
/// not end a sweep: on a shared machine that would measure the neighbours, not the server.
const SATURATED_BELOW: f64 = 0.9;
/// The `step` of warm-up operations: in the history, in no step's numbers.
pub const WARMUP_STEP: usize = usize::MAX;
/// Pause between sweep steps, so one step's tail does not overlap the next.
const STEP_PAUSE: Duration = Duration::from_secs(1);

/// Runs the load test and returns the process exit code.
pub async fn run(args: LoadtestArgs) -> u8 {
    match run_checked(args).await {
        Ok(report) => {
            if report.checker.violations.is_empty() {
                EXIT_CLEAN
            } else {
                EXIT_VIOLATION
            }
        }
        Err(failure) => {
            eprintln!("boxoffice loadtest: {:#}", failure.error);
            failure.exit_code
        }
    }
}

/// Why a run ended without a report.
struct Failure {
    error: anyhow::Error,
    exit_code: u8,
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        error: error.into(),
        exit_code: EXIT_USAGE,
    }
}

fn incomplete(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        error: error.into(),
        exit_code: EXIT_VIOLATION,
    }
}

/// Flag combinations that cannot work, found before anything starts.
fn validate(args: &LoadtestArgs) -> Result<(), UsageError> {
    spawn::check_supported(args.spawn, args.nemesis, &dependencies(args))?;
    if args.scenario == ScenarioName::Baseline && args.target.is_none() {
        return Err(UsageError(
            "the baseline scenario measures a minimal endpoint: run it with --target (e.g. `cargo run --release --example hello_axum`)".into(),
        ));
    }
    if args.scenario == ScenarioName::ExpiryStorm && (args.sweep || args.warmup.is_some()) {
        return Err(UsageError(
            "--sweep and --warmup do not apply to expiry-storm (each order takes its own ticket); give --rate".into(),
        ));
    }
    if args.order_ttl.is_some() && args.target.is_some() {
        return Err(UsageError(
            "--order-ttl applies to a spawned server; a --target keeps its own".into(),
        ));
    }
    if args.scenario == ScenarioName::ExpiryStorm
        && args.target.is_some()
        && args.admin_token.is_none()
    {
        return Err(UsageError(
            "expiry-storm reads the event log: give --admin-token (or BOXOFFICE_ADMIN_TOKEN) with --target".into(),
        ));
    }
    Ok(())
}

/// The NATS, MongoDB and Redis a spawned cluster is to use instead of starting its own.
fn dependencies(args: &LoadtestArgs) -> spawn::Dependencies {
    spawn::Dependencies {
        nats: args.nats.clone(),
        mongo: args.mongo.clone(),
        redis: args.redis.clone(),
    }
}

/// The rates to run: one, or a doubling sweep.
fn rates(args: &LoadtestArgs) -> Vec<f64> {
    if args.sweep {
        let mut rate = args.start_rate;
        (0..args.sweep_steps)
            .map(|_| {
                let this = rate.round().max(1.0);
                rate *= args.sweep_factor;
                this
            })
            .collect()
    } else {
        vec![args.rate.unwrap_or(args.start_rate)]
    }
}

/// How many tickets to seed: the flag, or what the scenario needs.
fn ticket_count(args: &LoadtestArgs, rates: &[f64]) -> usize {
    if let Some(tickets) = args.tickets {
        return tickets;
    }
    let arrivals: u64 = rates
        .iter()
        .map(|rate| {
            Schedule {
                rate: *rate,
                duration: args.duration,
            }
            .len()
        })
        .sum();
    let arrivals = usize::try_from(arrivals).unwrap_or(usize::MAX);
    match args.scenario {
        ScenarioName::FlashSale => 10,
        // About a fifth of steady arrivals are orders; keep tickets to spare.
        ScenarioName::Steady => (arrivals / 4).clamp(100, 50_000),
        // One ticket per order, so every order is acknowledged and then expires.
        ScenarioName::ExpiryStorm => arrivals,
        ScenarioName::Browse => 1000,
        ScenarioName::Baseline => 0,
    }
}

fn progress_bar(length: u64, label: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(label);
    bar
}

pub(crate) fn note(message: &str) {
    eprintln!("boxoffice loadtest: {message}");
}

async fn run_checked(args: LoadtestArgs) -> Result<Report, Failure> {
    let mut interruption = Interruption::listen();
    validate(&args).map_err(usage)?;
    let baseline = match &args.baseline {
        Some(path) => Some(read_baseline(path).map_err(usage)?),
        None => None,
    };
    let order_ttl = args
        .order_ttl
        .unwrap_or(if args.scenario == ScenarioName::ExpiryStorm {
            EXPIRY_STORM_TTL
        } else {
            DEFAULT_TTL
        });
    let mut deployment = match (&args.target, args.spawn) {
        (Some(url), _) => {
            spawn::target(url, args.admin_token.clone(), args.allow_remote).map_err(usage)?
        }
        (None, Some(mode)) => {
            note(&format!("starting the server under test ({mode})"));
            spawn::spawn(mode, order_ttl, &dependencies(&args))
                .await
                .map_err(usage)?
        }
        (None, None) => {
            return Err(usage(UsageError(
                "give --target URL or --spawn embedded".into(),
            )));
        }
    };
    // SIGINT or SIGTERM stops the run but still stops a spawned server and removes its data.
    let outcome = tokio::select! {
        outcome = drive(&args, &mut deployment, order_ttl) => outcome,
        () = interruption.received() => Err(incomplete(anyhow::anyhow!("interrupted"))),
    };
    if outcome.is_err() {
        let output = deployment.recent_output().await;
        if !output.is_empty() {
            eprintln!("boxoffice loadtest: the spawned processes' last output:\n{output}");
        }
    }
    deployment.stop().await;
    let mut report = outcome?;
    report.baseline = baseline.map(|baseline_rate| Ratio {
        baseline_rate,
        rate: report.max_achieved_rate,
        ratio: report.max_achieved_rate / baseline_rate,
    });
    print!("{}", report.text());
    report.write_files(&args.report_dir).map_err(incomplete)?;
    note(&format!(
        "report written to {} (report.json, report.html)",
        args.report_dir.display()
    ));
    Ok(report)
}

/// SIGINT and SIGTERM, listened for from the start of the run (a signal that arrives before
/// anyone waits is kept, not lost to the default action that would orphan a spawned server).
struct Interruption {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Interruption {
    fn listen() -> Interruption {
        use tokio::signal::unix::{SignalKind, signal};
        Interruption {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Resolves when either signal arrives (never, if neither could be listened for).
    async fn received(&mut self) {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = next(&mut self.interrupt) => {}
            () = next(&mut self.terminate) => {}
        }
    }
}

/// A baseline report's highest achieved rate.
fn read_baseline(path: &std::path::Path) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --baseline {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--baseline {} is not JSON", path.display()))?;
    value["maxAchievedRate"]
        .as_f64()
        .filter(|rate| *rate > 0.0)
        .with_context(|| {
            format!(
                "--baseline {} has no maxAchievedRate above zero",
                path.display()
            )
        })
}

/// Everything between having a server and stopping it.
async fn drive(
    args: &LoadtestArgs,
    deployment: &mut Deployment,
    order_ttl: Duration,
) -> Result<Report, Failure> {
    let client = client::Client::new(&deployment.base_urls, args.max_in_flight).map_err(usage)?;
    let probe = if args.scenario == ScenarioName::Baseline {
        "/"
    } else {
        "/healthz"
    };
    match client.get(probe).await {
        Ok(reply) if reply.status.is_success() => {}
        Ok(reply) => {
            return Err(usage(anyhow::anyhow!(
                "{}{probe} answered {}",
                client.base(),
                reply.status
            )));
        }
        Err(error) => return Err(usage(anyhow::anyhow!("{}{probe}: {error}", client.base()))),
    }
    let rates = rates(args);
    let ticket_count = ticket_count(args, &rates);
    let run_id = format!("{:08x}", rand::random::<u32>());
    let (users, tickets) = if args.scenario == ScenarioName::Baseline {
        (Vec::new(), Vec::new())
    } else {
        note(&format!(
            "signing up {} users and putting {ticket_count} tickets on sale",
            args.users
        ));
        let users = scenario::seed_users(&client, args.users, &run_id)
            .await
            .map_err(usage)?;
        let tickets = scenario::seed_tickets(&client, &users[0], ticket_count)
            .await
            .map_err(usage)?;
        (users, tickets)
    };

    let started_at = crate::clock::now();
    let origin = std::time::Instant::now();
    let recorder = Arc::new(Recorder::new(origin));
    let world = Arc::new(scenario::World::new(
        args.scenario,
        client.clone(),
        recorder.clone(),
        users,
        tickets,
        args.pay_ratio,
    ));
    if let Some(warmup) = args.warmup {
        let schedule = Schedule {
            rate: rates[0],
            duration: warmup,
        };
        let bar = progress_bar(schedule.len(), format!("warm-up {:.0}/s", rates[0]));
        let pacing = schedule::run_open_loop(
            schedule,
            tokio::time::Instant::now(),
            args.max_in_flight,
            |index| bar.set_position(index + 1),
            |index, intended| {
                world
                    .clone()
                    .arrive(index, intended.into_std(), WARMUP_STEP)
            },
        )
        .await;
        bar.finish_and_clear();
        note(&format!(
            "warm-up: {} arrivals sent, {} dropped",
            pacing.sent, pacing.dropped
        ));
    }
    // The fault goes in halfway through the first measured step.
    let nemesis = match args.nemesis {
        Some(nemesis) => Some(
            deployment
                .inject(nemesis, args.duration / 2, origin)
                .map_err(usage)?,
        ),
        None => None,
    };
    let mut steps = Vec::new();
    for (step, rate) in rates.iter().copied().enumerate() {
        let schedule = Schedule {
            rate,
            duration: args.duration,
        };
        let bar = progress_bar(
            schedule.len(),
            format!("{} {rate:.0}/s", args.scenario.as_str()),
        );
        let server_before = deployment
            .server_pid()
            .await
            .and_then(spawn::ProcessUsage::of);
        let generator_before = spawn::ProcessUsage::of(std::process::id());
        let start = tokio::time::Instant::now();
        let pacing = schedule::run_open_loop(
            schedule,
            start,
            args.max_in_flight,
            |index| bar.set_position(index + 1),
            |index, intended| world.clone().arrive(index, intended.into_std(), step),
        )
        .await;
        bar.finish_and_clear();
        let step_start = recorder.micros(start.into_std());
        let mut report = recorder.inspect(|operations| {
            let of_step: Vec<&history::Operation> =
                operations.iter().filter(|op| op.step == step).collect();
            let last = of_step
                .iter()
                .map(|op| op.completed_micros)
                .max()
                .unwrap_or(step_start);
            let elapsed =
                (last.saturating_sub(step_start) as f64 / 1e6).max(args.duration.as_secs_f64());
            StepReport::compute(rate, pacing, elapsed, &of_step)
        });
        let usage_since = |pid: Option<u32>, before: Option<spawn::ProcessUsage>| {
            Some(spawn::ProcessUsage::of(pid?)?.since(before?))
        };
        report.server_usage = usage_since(deployment.server_pid().await, server_before);
        report.generator_usage = usage_since(Some(std::process::id()), generator_before);
        note(&format!(
            "step {}: target {rate:.0}/s, achieved {:.1}/s, p99 {:.2} ms, dropped {}",
            step + 1,
            report.achieved_rate,
            report.latency_ms.p99,
            pacing.dropped
        ));
        let saturated = report.achieved_rate < rate * SATURATED_BELOW;
        steps.push(report);
        deployment.check_alive().await.map_err(incomplete)?;
        if args.sweep && saturated {
            break;
        }
        if args.sweep && step + 1 < rates.len() {
            tokio::time::sleep(STEP_PAUSE).await;
        }
    }

    let history = recorder.snapshot();
    let expiry = if args.scenario == ScenarioName::ExpiryStorm {
        let token = deployment
            .admin_token
            .clone()
            .context("expiry-storm needs the admin token")
            .map_err(usage)?;
        let orders: Vec<String> = observe::acknowledged_orders(&history)
            .into_iter()
            .map(|(order, _)| order)
            .collect();
        note(&format!("waiting for {} orders to expire", orders.len()));
        let settlement = observe::wait_for_expiries(&client, &token, &orders, EXPIRY_WAIT)
            .await
            .map_err(incomplete)?;
        Some(ExpiryReport::new(settlement))
    } else {
        None
    };
    let nemesis = match nemesis {
        Some(injection) => Some(
            injection
                .await
                .context("the nemesis panicked")
                .and_then(|outcome| outcome)
                .map_err(incomplete)?,
        ),
        None => None,
    };
    deployment.check_alive().await.map_err(incomplete)?;

    let verdict = if args.scenario == ScenarioName::Baseline {
        checker::Verdict::default()
    } else {
        note("reading back orders, tickets and the event log for the history checker");
        let state = observe::final_state(
            &client,
            &history,
            &world.users,
            &world.tickets,
            deployment.admin_token.as_deref(),
        )
        .await
        .map_err(incomplete)?;
        checker::check(&history, &state)
    };
    let max_achieved_rate = steps
        .iter()
        .map(|step| step.achieved_rate)
        .fold(0.0, f64::max);
    Ok(Report {
        scenario: args.scenario.as_str().to_string(),
        started_at: started_at.to_iso8601(),
        settings: Settings {
            target: deployment.base_url().to_string(),
            mode: deployment.mode.clone(),
            sweep: args.sweep,
            users: if args.scenario == ScenarioName::Baseline {
                0
            } else {
                args.users
            },
            tickets: world.tickets.len(),
            max_in_flight: args.max_in_flight,
            pay_ratio: args.pay_ratio,
            order_ttl: args
                .spawn
                .map(|_| humantime::format_duration(order_ttl).to_string()),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        steps,
        max_achieved_rate,
        expiry,
        nemesis,
        timeline: report::timeline(&history),
        violation_operations: report::violation_operations(&verdict, &history),
        checker: verdict,
        baseline: None,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn args(extra: &[&str]) -> LoadtestArgs {
        let mut full = vec!["boxoffice", "loadtest", "--spawn", "embedded"];
        full.extend_from_slice(extra);
        match Cli::try_parse_from(full).expect("valid flags").command {
            Command::Loadtest(args) => *args,
            _ => unreachable!("loadtest was asked"),
        }
    }

    #[test]
    fn a_sweep_multiplies_the_rate_each_step() {
        let sweep = args(&[
            "--scenario",
            "browse",
            "--sweep",
            "--start-rate",
            "1000",
            "--sweep-factor",
            "1.5",
            "--sweep-steps",
            "4",
        ]);
        assert_eq!(rates(&sweep), vec![1000.0, 1500.0, 2250.0, 3375.0]);
        let fixed = args(&["--scenario", "browse", "--rate", "70"]);
        assert_eq!(rates(&fixed), vec![70.0]);
    }

    #[test]
    fn tickets_default_to_what_the_scenario_needs() {
        let storm = args(&[
            "--scenario",
            "expiry-storm",
            "--rate",
            "50",
            "--duration",
            "2s",
        ]);
        assert_eq!(
            ticket_count(&storm, &rates(&storm)),
            100,
            "one ticket per order"
        );
        let sale = args(&["--scenario", "flash-sale", "--rate", "50"]);
        assert_eq!(
            ticket_count(&sale, &rates(&sale)),
            10,
            "few tickets, many buyers"
        );
        let chosen = args(&["--scenario", "flash-sale", "--tickets", "3"]);
        assert_eq!(ticket_count(&chosen, &rates(&chosen)), 3);
    }

    #[test]
    fn combinations_that_cannot_work_are_usage_errors() {
        assert!(validate(&args(&["--scenario", "expiry-storm", "--sweep"])).is_err());
        assert!(validate(&args(&["--scenario", "expiry-storm", "--warmup", "1s"])).is_err());
        assert!(validate(&args(&["--scenario", "baseline"])).is_err());
        assert!(
            validate(&args(&[
                "--scenario",
                "steady",
                "--warmup",
                "1s",
                "--order-ttl",
                "5s"
            ]))
            .is_ok()
        );
    }
}
