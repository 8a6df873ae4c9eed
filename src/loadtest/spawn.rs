//! The server under test: a `--target` URL (loopback only unless allowed), or a deployment the
//! load tester starts itself and stops at the end.
//!
//! `--spawn embedded` runs `boxoffice serve` as a child process of this same binary, on a free
//! loopback port, with a fresh temporary data directory, a random JWT key and admin token, and
//! the requested order time to live. A child process keeps the server's runtime apart from the
//! generator's, so the measurement is of the server, not of two runtimes sharing threads.
//!
//! `--spawn cluster:N` runs N such processes as cluster nodes, on NATS, MongoDB and Redis given
//! with `--nats/--mongo/--redis` or else started here from `PATH` (`nats-server`,
//! `redis-server`, `secantusd-py`) on free ports with temporary data, under a cluster name and
//! database no earlier run used. `--nemesis` then injects its fault into that cluster halfway
//! through the run: SIGKILL a node and restart it, SIGSTOP a node and resume it, or restart
//! NATS, each for two lease TTLs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::{Nemesis, SpawnMode};

/// Lines of server output kept for diagnosing a failed start.
const LOG_LINES_KEPT: usize = 200;
/// How long a spawned process may take to start (to say where it listens, or to accept).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a spawned process may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The lease TTL of a spawned cluster (the contract's default), which paces the nemesis.
const CLUSTER_LEASE_TTL: Duration = Duration::from_secs(5);
/// The transaction lifetime given to a spawned SecantusDB, as the manifests give mongod: a
/// node killed mid-commit must not hold its locks for mongod's default minute
/// (docs/cluster.md).
const TRANSACTION_LIFETIME_SECONDS: u32 = 5;

/// A usage or setup problem: the run never started (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Where the dependencies of a spawned cluster are, when the caller runs them.
#[derive(Clone, Debug, Default)]
pub struct Dependencies {
    pub nats: Option<String>,
    pub mongo: Option<String>,
    pub redis: Option<String>,
}

/// What the run is pointed at.
pub struct Deployment {
    /// Base URLs of every server (one, or each node of a cluster), without a trailing slash.
    pub base_urls: Vec<String>,
    /// The admin token, when known (always for a spawned server).
    pub admin_token: Option<String>,
    /// How the server was obtained, for the report (`target`, `embedded`, `cluster:N`).
    pub mode: String,
    spawned: Option<Arc<tokio::sync::Mutex<Spawned>>>,
}

/// The processes a `--spawn` started, and the temporary directory they keep their data in.
struct Spawned {
    nodes: Vec<Process>,
    /// NATS, Redis and the MongoDB-wire server, when started here.
    dependencies: Vec<Process>,
    _data: tempfile::TempDir,
}

/// What a nemesis did and when, in milliseconds since the run's measured load started.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NemesisReport {
    /// `kill`, `pause` or `nats-restart`.
    pub fault: String,
    /// The process it hit (`node-2`, `nats`).
    pub victim: String,
    /// When the fault was injected.
    pub injected_at_ms: u64,
    /// When the victim was restarted or resumed.
    pub healed_at_ms: u64,
}

impl Deployment {
    /// Base URL of the first server.
    pub fn base_url(&self) -> &str {
        &self.base_urls[0]
    }

    /// The process id of the spawned single server (`None` for a target or a cluster, whose
    /// usage is spread over processes).
    pub async fn server_pid(&self) -> Option<u32> {
        let spawned = self.spawned.as_ref()?.lock().await;
        match spawned.nodes.as_slice() {
            [only] if spawned.dependencies.is_empty() => only.child.id(),
            _ => None,
        }
    }

    /// Checks every spawned process is still running (a node a nemesis took down is not
    /// checked until it is back); returns the recent output of one that is not.
    pub async fn check_alive(&self) -> anyhow::Result<()> {
        let Some(spawned) = &self.spawned else {
            return Ok(());
        };
        let mut spawned = spawned.lock().await;
        let Spawned {
            nodes,
            dependencies,
            ..
        } = &mut *spawned;
        for process in nodes.iter_mut().chain(dependencies.iter_mut()) {
            if !process.is_down
                && let Some(status) = process.child.try_wait()?
            {
                bail!(
                    "{} exited ({status}); its last output:\n{}",
                    process.name,
                    process.recent_output()
                );
            }
        }
        Ok(())
    }

    /// The last output lines of every spawned process, for a run that failed.
    pub async fn recent_output(&self) -> String {
        let Some(spawned) = &self.spawned else {
            return String::new();
        };
        let spawned = spawned.lock().await;
        spawned
            .nodes
            .iter()
            .chain(&spawned.dependencies)
            .map(|process| format!("--- {}:\n{}", process.name, process.recent_output()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Injects `nemesis` into the spawned cluster after `after` and heals it two lease TTLs
    /// later. `origin` is the instant report times count from.
    pub fn inject(
        &self,
        nemesis: Nemesis,
        after: Duration,
        origin: Instant,
    ) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<NemesisReport>>> {
        let spawned = self
            .spawned
            .clone()
            .context("--nemesis needs a cluster the load tester started")?;
        Ok(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            run_nemesis(&spawned, nemesis, origin).await
        }))
    }

    /// Stops whatever was spawned gracefully (SIGTERM, then SIGKILL after a deadline), nodes
    /// first, and removes its data; a `--target` is left alone.
    pub async fn stop(self) {
        let Some(spawned) = self.spawned else {
            return;
        };
        let mut spawned = spawned.lock().await;
        futures::future::join_all(spawned.nodes.iter_mut().map(Process::stop)).await;
        for dependency in &mut spawned.dependencies {
            dependency.stop().await;
        }
    }
}

async fn run_nemesis(
    spawned: &tokio::sync::Mutex<Spawned>,
    nemesis: Nemesis,
    origin: Instant,
) -> anyhow::Result<NemesisReport> {
    let millis = |at: Instant| u64::try_from(at.duration_since(origin).as_millis()).unwrap_or(0);
    let outage = CLUSTER_LEASE_TTL * 2;
    // The victim is the last node (or NATS); the generator keeps sending to every node.
    let (fault, victim, injected) = {
        let mut spawned = spawned.lock().await;
        match nemesis {
            Nemesis::Kill => {
                let node = spawned.nodes.last_mut().context("no node to kill")?;
                node.kill().await;
                ("kill", node.name.clone(), Instant::now())
            }
            Nemesis::Pause => {
                let node = spawned.nodes.last_mut().context("no node to pause")?;
                node.signal(nix::sys::signal::Signal::SIGSTOP);
                ("pause", node.name.clone(), Instant::now())
            }
            Nemesis::NatsRestart => {
                let nats = spawned
                    .dependencies
                    .iter_mut()
                    .find(|process| process.name == "nats")
                    .context("nats-restart needs a NATS the load tester started (no --nats)")?;
                nats.stop().await;
                nats.is_down = true;
                ("nats-restart", nats.name.clone(), Instant::now())
            }
        }
    };
    crate::loadtest::note(&format!("nemesis: {fault} {victim}"));
    tokio::time::sleep(outage).await;
    let mut spawned = spawned.lock().await;
    let Spawned {
        nodes,
        dependencies,
        ..
    } = &mut *spawned;
    let process = nodes
        .iter_mut()
        .chain(dependencies.iter_mut())
        .find(|process| process.name == victim)
        .context("the nemesis lost its victim")?;
    match nemesis {
        Nemesis::Pause => process.signal(nix::sys::signal::Signal::SIGCONT),
        Nemesis::Kill | Nemesis::NatsRestart => process.restart().await?,
    }
    let healed = Instant::now();
    crate::loadtest::note(&format!("nemesis: {victim} is back"));
    Ok(NemesisReport {
        fault: fault.into(),
        victim,
        injected_at_ms: millis(injected),
        healed_at_ms: millis(healed),
    })
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
        base_urls: vec![url.trim_end_matches('/').to_string()],
        admin_token,
        mode: "target".into(),
        spawned: None,
    })
}

/// Refuses flag combinations that cannot work: a nemesis needs a cluster started here, and
/// restarting NATS needs a NATS started here.
pub fn check_supported(
    spawn: Option<SpawnMode>,
    nemesis: Option<Nemesis>,
    dependencies: &Dependencies,
) -> Result<(), UsageError> {
    let is_cluster = matches!(spawn, Some(SpawnMode::Cluster { .. }));
    if !is_cluster
        && (dependencies.nats.is_some()
            || dependencies.mongo.is_some()
            || dependencies.redis.is_some())
    {
        return Err(UsageError(
            "--nats, --mongo and --redis are for --spawn cluster:N".into(),
        ));
    }
    match (nemesis, spawn) {
        (None, _) => Ok(()),
        (Some(_), Some(SpawnMode::Cluster { nodes })) if nodes < 2 => Err(UsageError(
            "--nemesis needs --spawn cluster:N with N of at least 2, so a node survives".into(),
        )),
        (Some(Nemesis::NatsRestart), Some(SpawnMode::Cluster { .. }))
            if dependencies.nats.is_some() =>
        {
            Err(UsageError(
                "--nemesis nats-restart restarts a NATS the load tester started: drop --nats"
                    .into(),
            ))
        }
        (Some(_), Some(SpawnMode::Cluster { .. })) => Ok(()),
        (Some(_), _) => Err(UsageError(
            "--nemesis injects faults into a cluster the load tester started: use --spawn cluster:N".into(),
        )),
    }
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Starts the deployment `mode` asks for.
pub async fn spawn(
    mode: SpawnMode,
    order_ttl: Duration,
    dependencies: &Dependencies,
) -> anyhow::Result<Deployment> {
    let data = tempfile::Builder::new()
        .prefix("boxoffice-loadtest-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let root = data.path().to_path_buf();
    let admin_token = random_secret();
    let jwt_key = random_secret();
    let node_args = |index: usize| -> anyhow::Result<(Vec<OsString>, SocketAddr)> {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let directory = root.join(format!("node-{index}"));
        std::fs::create_dir_all(&directory).context("creating a node's data directory")?;
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--listen".into(),
            address.to_string().into(),
            "--data-dir".into(),
            directory.into(),
            "--admin-token".into(),
            admin_token.clone().into(),
            "--order-ttl".into(),
            humantime::format_duration(order_ttl).to_string().into(),
        ];
        if matches!(mode, SpawnMode::Cluster { .. }) {
            args.extend(["--node-id".into(), format!("node-{index}").into()]);
        }
        Ok((args, address))
    };
    let mut spawned = Spawned {
        nodes: Vec::new(),
        dependencies: Vec::new(),
        _data: data,
    };
    let result = async {
        let count = match mode {
            SpawnMode::Embedded => 1,
            SpawnMode::Cluster { nodes } => nodes,
        };
        let mut cluster_args = Vec::new();
        if let SpawnMode::Cluster { .. } = mode {
            let (urls, processes) = start_dependencies(dependencies, &root).await?;
            spawned.dependencies = processes;
            let name = format!("loadtest_{}", &random_secret()[..12]);
            cluster_args = [
                "--nats",
                &urls.0,
                "--mongo",
                &urls.1,
                "--redis",
                &urls.2,
                "--cluster-name",
                &name,
                "--mongo-db",
                &name,
                "--lease-ttl",
                "5s",
            ]
            .iter()
            .map(OsString::from)
            .collect();
        }
        let binary: PathBuf =
            std::env::current_exe().context("finding this binary to start the server")?;
        let mut starting = Vec::new();
        for index in 0..count {
            let (mut args, address) = node_args(index)?;
            args.extend(cluster_args.iter().cloned());
            let name = if count == 1 {
                "the spawned server".to_string()
            } else {
                format!("node-{index}")
            };
            starting.push(Process::start(
                name,
                binary.clone(),
                args,
                vec![
                    ("JWT_KEY".into(), jwt_key.clone()),
                    // Only the start-up lines and trouble: per-request logging would cost the
                    // server under test. BOXOFFICE_LOADTEST_SERVER_LOG overrides it.
                    (
                        "RUST_LOG".into(),
                        std::env::var("BOXOFFICE_LOADTEST_SERVER_LOG").unwrap_or_else(|_| {
                            "warn,boxoffice::app=info,boxoffice::cluster=info".into()
                        }),
                    ),
                    ("NO_COLOR".into(), "1".into()),
                ],
                Readiness::Listening(address),
            ));
        }
        for node in futures::future::join_all(starting).await {
            spawned.nodes.push(node?);
        }
        if count > 1 {
            wait_until_ready(&spawned.nodes).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = result {
        for process in spawned
            .nodes
            .iter_mut()
            .chain(spawned.dependencies.iter_mut())
        {
            process.stop().await;
        }
        return Err(error);
    }
    let base_urls: Vec<String> = spawned
        .nodes
        .iter()
        .map(|node| format!("http://{}", node.address()))
        .collect();
    Ok(Deployment {
        base_urls,
        admin_token: Some(admin_token),
        mode: mode.to_string(),
        spawned: Some(Arc::new(tokio::sync::Mutex::new(spawned))),
    })
}

/// The NATS, MongoDB and Redis URLs of a cluster: those given, the others started here.
async fn start_dependencies(
    given: &Dependencies,
    data: &Path,
) -> anyhow::Result<((String, String, String), Vec<Process>)> {
    let mut processes = Vec::new();
    let nats = match &given.nats {
        Some(url) => url.clone(),
        None => {
            let directory = data.join("nats").display().to_string();
            let port = start_server(&mut processes, "nats", |port| {
                Ok((
                    find_on_path("nats-server")?,
                    os_args(&["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &directory]),
                ))
            })
            .await?;
            format!("nats://127.0.0.1:{port}")
        }
    };
    let redis = match &given.redis {
        Some(url) => url.clone(),
        None => {
            let directory = data.join("redis");
            std::fs::create_dir_all(&directory).context("creating Redis's directory")?;
            let directory = directory.display().to_string();
            let port = start_server(&mut processes, "redis", |port| {
                Ok((
                    find_on_path("redis-server")?,
                    os_args(&[
                        "--port",
                        &port,
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        &directory,
                    ]),
                ))
            })
            .await?;
            format!("redis://127.0.0.1:{port}/")
        }
    };
    let mongo = match &given.mongo {
        Some(url) => url.clone(),
        None => {
            let port =
                start_server(&mut processes, "mongo", |port| secantus_command(&port)).await?;
            // SecantusDB slows down about ten times after ~10k retryable writes.
            format!("mongodb://127.0.0.1:{port}/?retryWrites=false")
        }
    };
    Ok(((nats, mongo, redis), processes))
}

/// Starts a server on a free loopback port (`command` gets the port and gives the program and
/// its arguments), adds it to `processes` once it accepts connections, and returns the port.
async fn start_server(
    processes: &mut Vec<Process>,
    name: &str,
    command: impl FnOnce(String) -> anyhow::Result<(PathBuf, Vec<OsString>)>,
) -> anyhow::Result<u16> {
    let port = free_port()?;
    let (program, args) = command(port.to_string())?;
    let readiness = Readiness::Accepting(SocketAddr::from(([127, 0, 0, 1], port)));
    processes.push(Process::start(name.into(), program, args, Vec::new(), readiness).await?);
    Ok(port)
}

/// `secantusd-py` from PATH, run through its own Python with a short transaction lifetime
/// (SecantusDB takes it only as a constructor argument, as `scripts/secantusd` does); the
/// bare command when that Python is not beside it.
fn secantus_command(port: &str) -> anyhow::Result<(PathBuf, Vec<OsString>)> {
    let launcher = find_on_path("secantusd-py")?;
    let flags = [
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--storage-path",
        ":memory:",
    ]
    .map(str::to_string);
    let python = launcher.with_file_name("python3");
    if !python.is_file() {
        return Ok((launcher, os_args(&flags.each_ref().map(String::as_str))));
    }
    let script = format!(
        "import functools, sys\nfrom secantus import cli\ncli.SecantusDBServer = functools.partial(cli.SecantusDBServer, transaction_lifetime_seconds={TRANSACTION_LIFETIME_SECONDS})\nsys.exit(cli.main())"
    );
    let mut args = os_args(&["-c", &script]);
    args.extend(flags.iter().map(OsString::from));
    Ok((python, args))
}

fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn find_on_path(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("--spawn cluster:N starts {program} from PATH, and there is none (or pass its URL with --nats/--mongo/--redis)")
        })
}

/// Waits until every node says it has joined and serves its shards.
async fn wait_until_ready(nodes: &[Process]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    for node in nodes {
        let url = format!("http://{}/readyz", node.address());
        loop {
            if client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {START_TIMEOUT:?}; its last output:\n{}",
                    node.name,
                    node.recent_output()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// How a started process shows it is up.
#[derive(Clone, Copy)]
enum Readiness {
    /// A `boxoffice serve` logs `listening on http://ADDR` with this address.
    Listening(SocketAddr),
    /// The process accepts connections on this address.
    Accepting(SocketAddr),
}

impl Readiness {
    fn address(self) -> SocketAddr {
        match self {
            Readiness::Listening(address) | Readiness::Accepting(address) => address,
        }
    }
}

/// A child process with its recent output, restartable with the same command.
struct Process {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    readiness: Readiness,
    child: Child,
    output: Arc<Mutex<VecDeque<String>>>,
    /// Taken down on purpose by a nemesis.
    is_down: bool,
}

impl Process {
    async fn start(
        name: String,
        program: PathBuf,
        args: Vec<OsString>,
        env: Vec<(String, String)>,
        readiness: Readiness,
    ) -> anyhow::Result<Process> {
        let output: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let child = launch(&name, &program, &args, &env, readiness, &output).await?;
        Ok(Process {
            name,
            program,
            args,
            env,
            readiness,
            child,
            output,
            is_down: false,
        })
    }

    fn address(&self) -> SocketAddr {
        self.readiness.address()
    }

    /// Starts the same command again (same port, same data) after a kill or a stop.
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.child = launch(
            &self.name,
            &self.program,
            &self.args,
            &self.env,
            self.readiness,
            &self.output,
        )
        .await?;
        self.is_down = false;
        Ok(())
    }

    async fn kill(&mut self) {
        self.is_down = true;
        let _ = self.child.kill().await;
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    fn recent_output(&self) -> String {
        let output = self
            .output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        output.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM (SIGCONT first, in case a nemesis left it stopped), then SIGKILL after a
    /// deadline.
    async fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.signal(nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Spawns the command, keeps its last output lines, and waits until it is up.
async fn launch(
    name: &str,
    program: &Path,
    args: &[OsString],
    env: &[(String, String)],
    readiness: Readiness,
    output: &Arc<Mutex<VecDeque<String>>>,
) -> anyhow::Result<Child> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<()>(1);
    let streams: [Box<dyn tokio::io::AsyncRead + Send + Unpin>; 2] = [
        Box::new(child.stdout.take().context("child stdout")?),
        Box::new(child.stderr.take().context("child stderr")?),
    ];
    for stream in streams {
        let output = output.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Readiness::Listening(address) = readiness
                    && line.contains(&format!("listening on http://{address}"))
                {
                    let _ = sender.try_send(());
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
    let deadline = Instant::now() + START_TIMEOUT;
    let is_up = match readiness {
        Readiness::Listening(_) => {
            matches!(
                tokio::time::timeout(START_TIMEOUT, receiver.recv()).await,
                Ok(Some(()))
            )
        }
        Readiness::Accepting(address) => loop {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                break true;
            }
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
    };
    if !is_up {
        let _ = child.kill().await;
        let recent = output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bail!(
            "{name} did not start; its output:\n{}",
            recent.iter().cloned().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(child)
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
            target("http://127.0.0.1:9/", None, false)
                .unwrap()
                .base_url(),
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
