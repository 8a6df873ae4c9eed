//! `boxoffice loadtest` end to end: a short smoke run of every scenario against a server the
//! load tester spawns itself (and the baseline against a minimal endpoint started here), each
//! checked for exit code 0 and a report that parses; and the usage errors that must exit 2
//! before any load is sent.
//!
//! Runs are kept short (2 s at 50/s, 10 users); the numbers they print are not asserted.
//!
//! `cluster_*`: `--spawn cluster:3` with each `--nemesis`, the history checker still clean.
//! They kill, pause and restart processes against lease TTLs, so `scripts/test` runs them with
//! the fault tests, alone.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// Runs `boxoffice loadtest` with `args` and returns its output.
async fn loadtest(args: &[&str]) -> Output {
    loadtest_with_path(args, std::env::var_os("PATH").unwrap_or_default()).await
}

/// `loadtest` with `PATH` set to `path` (where it finds the servers it starts).
async fn loadtest_with_path(args: &[&str], path: std::ffi::OsString) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .arg("loadtest")
        .args(args)
        .env_remove("BOXOFFICE_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .env("PATH", path)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run boxoffice loadtest")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Reads `report.json` and checks `report.html` is a page with SVG charts.
fn read_report(directory: &Path) -> Value {
    let json = std::fs::read_to_string(directory.join("report.json")).expect("report.json exists");
    let report: Value = serde_json::from_str(&json).expect("report.json parses");
    let html = std::fs::read_to_string(directory.join("report.html")).expect("report.html exists");
    assert!(html.starts_with("<!doctype html>"), "an HTML page");
    assert!(html.trim_end().ends_with("</html>"), "a complete HTML page");
    assert!(
        html.matches("<svg").count() >= 3,
        "throughput, latency and percentile charts"
    );
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "self-contained"
    );
    report
}

/// Runs `scenario` against a spawned embedded server and returns its report.
async fn smoke(scenario: &str) -> Value {
    let directory = tempfile::tempdir().expect("temp dir");
    let output = loadtest(&[
        "--spawn",
        "embedded",
        "--scenario",
        scenario,
        "--duration",
        "2s",
        "--rate",
        "50",
        "--users",
        "10",
        "--report-dir",
        directory.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("checker: 0 violation(s)"),
        "{}",
        describe(&output)
    );
    let report = read_report(directory.path());
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["settings"]["mode"], "embedded");
    assert_eq!(report["checker"]["violations"], Value::Array(vec![]));
    let step = &report["steps"][0];
    assert_eq!(step["targetRate"], 50.0);
    assert_eq!(step["pacing"]["scheduled"], 100);
    assert!(
        step["operations"]
            .as_array()
            .is_some_and(|ops| !ops.is_empty())
    );
    assert!(
        report["checker"]["eventsChecked"].as_u64().is_some(),
        "a spawned server's event log is read"
    );
    report
}

fn operation<'report>(report: &'report Value, kind: &str) -> &'report Value {
    report["steps"][0]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|operation| operation["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} operations in {report}"))
}

#[tokio::test]
async fn flash_sale_smoke_run_sells_each_ticket_at_most_once() {
    let report = smoke("flash-sale").await;
    let orders = operation(&report, "order");
    assert_eq!(orders["count"], 100);
    // Ten tickets: at most ten orders can win, whatever the timing.
    let won = orders["statuses"]["201"].as_u64().unwrap_or(0);
    assert!((1..=10).contains(&won), "{orders}");
    assert_eq!(report["checker"]["ticketsChecked"], 10);
}

#[tokio::test]
async fn steady_smoke_run_mixes_browsing_and_ordering() {
    let report = smoke("steady").await;
    assert!(operation(&report, "browse")["count"].as_u64().unwrap() > 0);
    assert!(operation(&report, "order")["count"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn expiry_storm_smoke_run_sees_every_order_cancelled() {
    let report = smoke("expiry-storm").await;
    let expiry = &report["expiry"];
    assert_eq!(expiry["orders"], 100, "{expiry}");
    assert_eq!(expiry["cancelled"], 100, "{expiry}");
    assert!(
        expiry["lastCancelledAfterLastDeadlineMs"].is_i64(),
        "{expiry}"
    );
    assert_eq!(report["settings"]["orderTtl"], "2s");
}

#[tokio::test]
async fn browse_smoke_run_reads_tickets() {
    let report = smoke("browse").await;
    assert_eq!(operation(&report, "browse")["statuses"]["200"], 100);
}

#[tokio::test]
async fn baseline_runs_against_a_minimal_endpoint_and_gives_ratios() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let directory = tempfile::tempdir().expect("temp dir");
    let target = format!("http://{address}");
    let output = loadtest(&[
        "--target",
        &target,
        "--scenario",
        "baseline",
        "--duration",
        "2s",
        "--rate",
        "50",
        "--report-dir",
        directory.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let report = read_report(directory.path());
    assert_eq!(operation(&report, "baseline")["statuses"]["200"], 100);
    assert_eq!(report["settings"]["mode"], "target");

    // A second run against the same endpoint, reported as a ratio of the first.
    let second = tempfile::tempdir().expect("temp dir");
    let baseline_file = directory.path().join("report.json");
    let output = loadtest(&[
        "--target",
        &target,
        "--scenario",
        "baseline",
        "--duration",
        "1s",
        "--rate",
        "20",
        "--baseline",
        baseline_file.to_str().unwrap(),
        "--report-dir",
        second.path().to_str().unwrap(),
    ])
    .await;
    server.abort();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let report = read_report(second.path());
    let ratio = &report["baseline"];
    let expected = ratio["rate"].as_f64().unwrap() / ratio["baselineRate"].as_f64().unwrap();
    assert!(
        (ratio["ratio"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{ratio}"
    );
}

#[tokio::test]
async fn usage_and_setup_errors_exit_2_without_sending_load() {
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "--spawn",
                "embedded",
                "--scenario",
                "steady",
                "--nemesis",
                "kill",
            ],
            "--nemesis",
        ),
        (
            &[
                "--spawn",
                "cluster:1",
                "--scenario",
                "steady",
                "--nemesis",
                "pause",
            ],
            "at least 2",
        ),
        (
            &[
                "--spawn",
                "cluster:3",
                "--scenario",
                "steady",
                "--nats",
                "nats://127.0.0.1:9",
                "--nemesis",
                "nats-restart",
            ],
            "drop --nats",
        ),
        (
            &[
                "--spawn",
                "embedded",
                "--scenario",
                "steady",
                "--mongo",
                "mongodb://127.0.0.1:9",
            ],
            "--spawn cluster:N",
        ),
        (
            &["--target", "http://192.0.2.1:8080", "--scenario", "steady"],
            "not a loopback address",
        ),
        (
            &["--spawn", "embedded", "--scenario", "baseline"],
            "--target",
        ),
        (
            &[
                "--target",
                "http://127.0.0.1:9",
                "--scenario",
                "expiry-storm",
            ],
            "--admin-token",
        ),
        (&["--scenario", "steady"], "--target"),
    ];
    for (args, message) in cases {
        let output = loadtest(args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(message),
            "{args:?} should mention {message:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_target_is_a_setup_error() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let directory = tempfile::tempdir().expect("temp dir");
    let output = loadtest(&[
        "--target",
        "http://127.0.0.1:9",
        "--scenario",
        "steady",
        "--report-dir",
        directory.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        !directory.path().join("report.json").exists(),
        "no report for a run that never started"
    );
}

#[tokio::test]
async fn sigterm_ends_the_run_and_stops_the_spawned_server() {
    use tokio::io::AsyncBufReadExt;

    let directory = tempfile::tempdir().expect("temp dir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args([
            "loadtest",
            "--spawn",
            "embedded",
            "--scenario",
            "browse",
            "--rate",
            "20",
        ])
        .args([
            "--duration",
            "60s",
            "--users",
            "2",
            "--tickets",
            "5",
            "--report-dir",
        ])
        .arg(directory.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start boxoffice loadtest");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Wait until load is being generated: the server is up and seeded.
    while let Some(line) =
        tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("the load tester reports progress")
            .expect("stderr readable")
    {
        let seeding = line.contains("putting 5 tickets on sale");
        seen.push(line);
        if seeding {
            break;
        }
    }
    let load_tester = child.id().expect("running");
    let servers = children_of(load_tester);
    assert_eq!(
        servers.len(),
        1,
        "one spawned server: {servers:?}, {seen:#?}"
    );
    let pid = nix::unistd::Pid::from_raw(load_tester as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    let status = child.wait().await.expect("exit status");
    assert_eq!(status.code(), Some(1), "{seen:#?}");
    assert!(
        seen.iter().any(|line| line.contains("interrupted")),
        "{seen:#?}"
    );
    assert!(
        !directory.path().join("report.json").exists(),
        "no report for an interrupted run: {seen:#?}"
    );
    // The load tester waited for its server to stop before exiting.
    let server = std::path::PathBuf::from(format!("/proc/{}/stat", servers[0]));
    let state = std::fs::read_to_string(&server).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "the server is gone: {state} {seen:#?}"
    );
}

/// Process ids of the children of `pid`, from every thread's `/proc/<pid>/task/*/children`.
fn children_of(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc is readable");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Runs `scenario` on a 3-node cluster the load tester starts, with `nemesis` injected halfway,
/// and checks the run completed with a clean history check. `own_dependencies`: the load
/// tester starts NATS, Redis and SecantusDB itself from PATH; otherwise it is given the shared
/// test servers.
async fn cluster_run(scenario: &str, nemesis: &str, own_dependencies: bool) -> Value {
    let directory = tempfile::tempdir().expect("temp dir");
    let (nats, mongo, redis) = (
        crate::servers::nats_url(),
        crate::servers::mongo_url(),
        crate::servers::redis_url(),
    );
    let mut args = vec![
        "--spawn",
        "cluster:3",
        "--scenario",
        scenario,
        "--duration",
        "16s",
        "--rate",
        "20",
        "--users",
        "20",
        "--tickets",
        "30",
        "--nemesis",
        nemesis,
        "--report-dir",
        directory.path().to_str().unwrap(),
    ];
    if !own_dependencies {
        args.extend(["--nats", &nats, "--mongo", &mongo, "--redis", &redis]);
    }
    // secantusd-py lives in the test servers' venv.
    let secantus = crate::servers::find_program("secantusd-py");
    let path = std::env::join_paths(
        std::iter::once(secantus.parent().unwrap().to_path_buf()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .unwrap();
    let output = loadtest_with_path(&args, path).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let report = read_report(directory.path());
    assert_eq!(report["settings"]["mode"], "cluster:3");
    assert_eq!(report["nemesis"]["fault"], nemesis, "{}", report["nemesis"]);
    assert!(
        report["nemesis"]["healedAtMs"].as_u64() > report["nemesis"]["injectedAtMs"].as_u64(),
        "{}",
        report["nemesis"]
    );
    assert_eq!(report["checker"]["violations"], Value::Array(vec![]));
    assert!(report["checker"]["ordersChecked"].as_u64().unwrap() > 0);
    assert!(report["checker"]["eventsChecked"].as_u64().unwrap() > 0);
    report
}

#[tokio::test]
async fn cluster_flash_sale_with_a_killed_node_sells_each_ticket_at_most_once() {
    let report = cluster_run("flash-sale", "kill", false).await;
    let won = operation(&report, "order")["statuses"]["201"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        (1..=30).contains(&won),
        "at most one winner per ticket: {report}"
    );
}

#[tokio::test]
async fn cluster_steady_run_with_a_paused_node_checks_clean() {
    cluster_run("steady", "pause", false).await;
}

#[tokio::test]
async fn cluster_steady_run_with_nats_restarted_on_its_own_servers_checks_clean() {
    cluster_run("steady", "nats-restart", true).await;
}
