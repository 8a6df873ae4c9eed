//! The server under test: a `--target` URL (loopback only unless allowed), or a server the load
//! tester starts itself and stops at the end.
//!
//! `--spawn embedded` runs `boxoffice serve` as a child process of this same binary, on a free
//! loopback port, with a fresh temporary data directory, a random JWT key and admin token, and
//! the requested order time to live. A child process keeps the server's runtime apart from the
//! generator's, so the measurement is of the server, not of two runtimes sharing threads.
//! `--spawn cluster:N` and `--nemesis` belong to cluster mode, which this build does not have:
//! they are refused with a usage error, and `Deployment` is where a cluster (its nodes, NATS,
//! Redis and the MongoDB-wire server) will plug in.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::{Nemesis, SpawnMode};

/// Lines of server output kept for diagnosing a failed start.
const LOG_LINES_KEPT: usize = 200;
/// How long a spawned server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a spawned server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A usage or setup problem: the run never started (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// What the run is pointed at.
pub struct Deployment {
    /// Base URL, without a trailing slash.
    pub base_url: String,
    /// The admin token, when known (always for a spawned server).
    pub admin_token: Option<String>,
    /// How the server was obtained, for the report (`target`, `embedded`, `cluster:N`).
    pub mode: String,
    server: Option<SpawnedServer>,
}

impl Deployment {
    /// The process id of the spawned server, if the load tester started one.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(|server| server.child.id())
    }

    /// Checks the spawned server is still running; returns its recent output if it is not.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(server) = &mut self.server
            && let Some(status) = server.child.try_wait()?
        {
            bail!(
                "the spawned server exited ({status}); its last output:\n{}",
                server.recent_output()
            );
        }
        Ok(())
    }

    /// Stops a spawned server gracefully (SIGTERM, then SIGKILL after a deadline) and removes its
    /// data; a `--target` is left alone.
    pub async fn stop(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
    }
}

/// Checks `--target` and returns the deployment for it.
pub fn target(
    url: &str,
    admin_token: Option<String>,
    allow_remote: bool,
) -> Result<Deployment, UsageError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| UsageError(format!("--target {url:?} is not a URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UsageError(format!(
            "--target {url:?} must be an http:// or https:// URL"
        )));
    }
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    if !is_loopback && !allow_remote {
        return Err(UsageError(format!(
            "--target {url} is not a loopback address; load tests send heavy traffic, so pass --allow-remote to target another machine"
        )));
    }
    Ok(Deployment {
        base_url: url.trim_end_matches('/').to_string(),
        admin_token,
        mode: "target".into(),
        server: None,
    })
}

/// Refuses what this build cannot start: clusters and fault injection.
pub fn check_supported(
    spawn: Option<SpawnMode>,
    nemesis: Option<Nemesis>,
) -> Result<(), UsageError> {
    if let Some(SpawnMode::Cluster { nodes }) = spawn {
        return Err(UsageError(format!(
            "--spawn cluster:{nodes} needs cluster mode, which this build does not have yet; use --spawn embedded or --target URL"
        )));
    }
    if nemesis.is_some() {
        return Err(UsageError(
            "--nemesis injects faults into a cluster the load tester started (--spawn cluster:N), which this build does not have yet".into(),
        ));
    }
    Ok(())
}

/// Starts the server `mode` asks for.
pub async fn spawn(mode: SpawnMode, order_ttl: Duration) -> anyhow::Result<Deployment> {
    match mode {
        SpawnMode::Embedded => {
            let server = SpawnedServer::start_embedded(order_ttl).await?;
            Ok(Deployment {
                base_url: format!("http://{}", server.address),
                admin_token: Some(server.admin_token.clone()),
                mode: mode.to_string(),
                server: Some(server),
            })
        }
        SpawnMode::Cluster { .. } => Err(check_supported(Some(mode), None).err().map_or_else(
            || anyhow::anyhow!("cluster mode is not available"),
            anyhow::Error::from,
        )),
    }
}

/// A `boxoffice serve` child process on a temporary data directory.
struct SpawnedServer {
    child: Child,
    address: std::net::SocketAddr,
    admin_token: String,
    output: Arc<Mutex<VecDeque<String>>>,
    _data: tempfile::TempDir,
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl SpawnedServer {
    async fn start_embedded(order_ttl: Duration) -> anyhow::Result<SpawnedServer> {
        let data = tempfile::Builder::new()
            .prefix("boxoffice-loadtest-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let binary: PathBuf =
            std::env::current_exe().context("finding this binary to start the server")?;
        let admin_token = random_secret();
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data.path())
            .arg("--admin-token")
            .arg(&admin_token)
            .arg("--order-ttl")
            .arg(humantime::format_duration(order_ttl).to_string())
            .env("JWT_KEY", random_secret())
            // Only the start-up lines: per-request logging would cost the server under test.
            .env("RUST_LOG", "warn,boxoffice::app=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let output: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<std::net::SocketAddr>(1);
        let streams: [Box<dyn tokio::io::AsyncRead + Send + Unpin>; 2] = [
            Box::new(child.stdout.take().context("server stdout")?),
            Box::new(child.stderr.take().context("server stderr")?),
        ];
        for stream in streams {
            let output = output.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(address) = line
                        .split("listening on http://")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|address| address.parse().ok())
                    {
                        let _ = sender.try_send(address);
                    }
                    let mut output = output
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if output.len() == LOG_LINES_KEPT {
                        output.pop_front();
                    }
                    output.push_back(line);
                }
            });
        }
        drop(sender);
        let address = match tokio::time::timeout(START_TIMEOUT, receiver.recv()).await {
            Ok(Some(address)) => address,
            _ => {
                let _ = child.kill().await;
                let recent = output
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                bail!(
                    "the spawned server did not start; its output:\n{}",
                    recent.iter().cloned().collect::<Vec<_>>().join("\n")
                );
            }
        };
        Ok(SpawnedServer {
            child,
            address,
            admin_token,
            output,
            _data: data,
        })
    }

    fn recent_output(&self) -> String {
        let output = self
            .output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        output.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// CPU time used so far and memory resident now, of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessUsage {
    /// User and system time since the process started.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: u64,
}

impl ProcessUsage {
    /// Reads `/proc/<pid>/stat` (Linux); `None` elsewhere or when the process is gone.
    pub fn of(pid: u32) -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ProcessUsage::parse(&stat, clock_ticks_per_second()?, page_size()?)
    }

    /// Parses a `/proc/<pid>/stat` line: fields 14 and 15 are user and system time in clock
    /// ticks, field 24 the resident pages. The command name (field 2) may hold spaces and
    /// parentheses, so fields are counted from its closing parenthesis.
    fn parse(stat: &str, ticks_per_second: u64, page_size: u64) -> Option<ProcessUsage> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        let ticks = field(14)? + field(15)?;
        Some(ProcessUsage {
            cpu_seconds: ticks as f64 / ticks_per_second as f64,
            rss_bytes: field(24)? * page_size,
        })
    }

    /// The usage between `earlier` and this reading (memory: this reading's).
    pub fn since(self, earlier: ProcessUsage) -> ProcessUsage {
        ProcessUsage {
            cpu_seconds: (self.cpu_seconds - earlier.cpu_seconds).max(0.0),
            rss_bytes: self.rss_bytes,
        }
    }
}

fn clock_ticks_per_second() -> Option<u64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    u64::try_from(ticks).ok().filter(|ticks| *ticks > 0)
}

fn page_size() -> Option<u64> {
    let size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    u64::try_from(size).ok().filter(|size| *size > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_allowed_by_default() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:80",
            "http://127.1.2.3",
        ] {
            assert!(target(url, None, false).is_ok(), "{url}");
        }
        for url in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "http://[2001:db8::1]:80",
        ] {
            assert!(target(url, None, false).is_err(), "{url}");
            assert!(target(url, None, true).is_ok(), "{url} with --allow-remote");
        }
        assert!(target("ftp://127.0.0.1", None, false).is_err());
        assert!(target("not a url", None, false).is_err());
        assert_eq!(
            target("http://127.0.0.1:9/", None, false).unwrap().base_url,
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn process_usage_counts_from_the_end_of_the_command_name() {
        let stat = "4242 (tokio (w) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 12345678 2048 18446744073709551615";
        let usage = ProcessUsage::parse(stat, 100, 4096).unwrap();
        assert!((usage.cpu_seconds - 3.0).abs() < 1e-9, "{usage:?}");
        assert_eq!(usage.rss_bytes, 2048 * 4096);
        assert!(ProcessUsage::of(std::process::id()).is_some_and(|usage| usage.rss_bytes > 0));
    }
}
