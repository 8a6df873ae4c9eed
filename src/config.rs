//! The command line: one clap derive struct per command, every flag with a `BOXOFFICE_*`
//! environment twin (the JWT key is `JWT_KEY`).
//!
//! Owns flag names, defaults and validation. Secrets are never printed: clap hides their values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// BoxOffice: a ticketing platform where every ticket and order is a supervised actor.
#[derive(Debug, Parser)]
#[command(name = "boxoffice", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a node (the embedded single-node default without --nats/--mongo/--redis).
    Serve(Box<ServeArgs>),
    /// Exits 0 when the local node's /healthz answers 200.
    Healthcheck(HealthcheckArgs),
    /// Drives load at a server (its own or --target), checks the history and reports.
    Loadtest(Box<LoadtestArgs>),
}

/// A role a node can run; each adds its routes and workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Auth,
    Tickets,
    Orders,
    Payments,
    Expiration,
}

impl Role {
    /// Every role, in start order.
    pub const ALL: [Role; 5] = [
        Role::Auth,
        Role::Tickets,
        Role::Orders,
        Role::Payments,
        Role::Expiration,
    ];

    /// The role's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auth => "auth",
            Role::Tickets => "tickets",
            Role::Orders => "orders",
            Role::Payments => "payments",
            Role::Expiration => "expiration",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// `--roles` entries: a role, or `all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSelection(pub Vec<Role>);

impl FromStr for RoleSelection {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
        if text == "all" {
            return Ok(RoleSelection(Role::ALL.to_vec()));
        }
        Role::ALL
            .iter()
            .find(|role| role.as_str() == text)
            .map(|role| RoleSelection(vec![*role]))
            .ok_or_else(|| {
                format!("unknown role {text:?}; valid roles: all, auth, tickets, orders, payments, expiration")
            })
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("{error} (use e.g. 90s, 2m, 15m)"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(value) if value > 0 => Ok(value),
        _ => Err("must be a whole number above zero".into()),
    }
}

fn parse_cluster_name(text: &str) -> Result<String, String> {
    let is_valid = !text.is_empty()
        && text.len() <= 32
        && text.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '_'
        });
    if is_valid {
        Ok(text.to_string())
    } else {
        Err("must be 1 to 32 lowercase letters, digits or _".into())
    }
}

fn parse_shards(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(value) if (1..=65_536).contains(&value) => Ok(value),
        _ => Err("must be a whole number from 1 to 65536".into()),
    }
}

/// Flags of `boxoffice serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "BOXOFFICE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded store, JWT key and admin token.
    #[arg(long, env = "BOXOFFICE_DATA_DIR", default_value = "./boxoffice-data")]
    pub data_dir: PathBuf,
    /// How long an unpaid order holds its ticket (90s, 2m, 15m).
    #[arg(long, env = "BOXOFFICE_ORDER_TTL", default_value = "15m", value_parser = parse_duration)]
    pub order_ttl: Duration,
    /// Roles to run: all, or a comma-separated list of auth,tickets,orders,payments,expiration.
    #[arg(
        long,
        env = "BOXOFFICE_ROLES",
        default_value = "all",
        value_delimiter = ','
    )]
    pub roles: Vec<RoleSelection>,
    /// NATS URL (cluster mode; with --mongo and --redis).
    #[arg(long, env = "BOXOFFICE_NATS")]
    pub nats: Option<String>,
    /// MongoDB URL (cluster mode).
    #[arg(long, env = "BOXOFFICE_MONGO")]
    pub mongo: Option<String>,
    /// Redis URL (cluster mode).
    #[arg(long, env = "BOXOFFICE_REDIS")]
    pub redis: Option<String>,
    /// Stripe secret key; without it the built-in sandbox gateway takes payments.
    #[arg(long, env = "BOXOFFICE_STRIPE_KEY", hide_env_values = true)]
    pub stripe_key: Option<String>,
    /// Stripe API base URL.
    #[arg(
        long,
        env = "BOXOFFICE_STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,
    /// Token for /admin/api (generated and kept in the data dir when absent).
    #[arg(long, env = "BOXOFFICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// JWT signing key (generated and kept in the data dir when absent).
    #[arg(long = "jwt-key", env = "JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// Mark the session cookie Secure (behind HTTPS).
    #[arg(long, env = "BOXOFFICE_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// How long a session token is valid.
    #[arg(long, env = "BOXOFFICE_SESSION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// Shards per entity kind (fixed at cluster creation).
    #[arg(long, env = "BOXOFFICE_SHARDS", default_value = "256", value_parser = parse_shards)]
    pub shards: usize,
    /// Shard lease time to live (cluster mode).
    #[arg(long, env = "BOXOFFICE_LEASE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Members to wait for at start before taking shards (cluster mode); once reached, the
    /// survivors of a failure take over whatever the count.
    #[arg(long, env = "BOXOFFICE_MIN_MEMBERS", default_value = "1", value_parser = parse_positive)]
    pub min_members: usize,
    /// This node's id (default: host name and a random suffix).
    #[arg(long, env = "BOXOFFICE_NODE_ID")]
    pub node_id: Option<String>,
    /// Address other nodes and the admin page show for this node (default: the bound address).
    #[arg(long, env = "BOXOFFICE_ADVERTISE")]
    pub advertise: Option<String>,
    /// The cluster's name: prefix of its NATS subjects, KV buckets, event stream and Redis keys
    /// (cluster mode; `boxoffice` gives the contract's `boxoffice.events.*` and
    /// `BOXOFFICE_EVENTS`).
    #[arg(long, env = "BOXOFFICE_CLUSTER_NAME", default_value = "boxoffice", value_parser = parse_cluster_name)]
    pub cluster_name: String,
    /// MongoDB database name (cluster mode).
    #[arg(long, env = "BOXOFFICE_MONGO_DB", default_value = "boxoffice")]
    pub mongo_db: String,
    /// Idle time after which an actor is stopped to free memory (one second for an order that
    /// is cancelled or paid, which no request can change any more; an actor no client asked
    /// anything, such as a ticket its order's expiry released, stops once it has answered).
    #[arg(long, env = "BOXOFFICE_PASSIVATE_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub passivate_after: Duration,
    /// Requests queued per actor beyond which new ones get 503 with Retry-After.
    #[arg(long, env = "BOXOFFICE_MAILBOX_LIMIT", default_value = "1000", value_parser = parse_positive)]
    pub mailbox_limit: usize,
    /// Live actors per kind above which actors idle for 100 ms are passivated early.
    #[arg(long, env = "BOXOFFICE_MAX_LIVE_ACTORS", default_value = "200000", value_parser = parse_positive)]
    pub max_live_actors: usize,
    /// Log format: text or json.
    #[arg(long, env = "BOXOFFICE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Enables the test-only crash hook on /admin/api/test (never in production).
    #[arg(long, env = "BOXOFFICE_ENABLE_TEST_HOOKS", hide = true)]
    pub enable_test_hooks: bool,
}

impl ServeArgs {
    /// The selected roles, each once, in start order.
    pub fn roles(&self) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|role| {
                self.roles
                    .iter()
                    .any(|selection| selection.0.contains(role))
            })
            .collect()
    }

    /// True when any cluster flag is given.
    pub fn is_cluster(&self) -> bool {
        self.nats.is_some() || self.mongo.is_some() || self.redis.is_some()
    }
}

/// Flags of `boxoffice healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL of the node's /healthz (default: derived from BOXOFFICE_LISTEN).
    #[arg(long, env = "BOXOFFICE_HEALTHCHECK_URL")]
    pub url: Option<String>,
}

impl HealthcheckArgs {
    /// The URL to ask.
    pub fn url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let listen = std::env::var("BOXOFFICE_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
        let address = listen
            .replace("0.0.0.0", "127.0.0.1")
            .replace("[::]", "[::1]");
        format!("http://{address}/healthz")
    }
}

/// Where `boxoffice loadtest` sends its load: a server it starts itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnMode {
    /// One `boxoffice serve` child process on the embedded default with a fresh data directory.
    Embedded,
    /// A cluster of this many nodes with NATS, MongoDB and Redis (the cluster issue).
    Cluster { nodes: usize },
}

impl FromStr for SpawnMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
        if text == "embedded" {
            return Ok(SpawnMode::Embedded);
        }
        if let Some(count) = text.strip_prefix("cluster:") {
            let nodes = parse_positive(count)?;
            return Ok(SpawnMode::Cluster { nodes });
        }
        Err(format!(
            "unknown spawn mode {text:?}; use embedded or cluster:N"
        ))
    }
}

impl std::fmt::Display for SpawnMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnMode::Embedded => formatter.write_str("embedded"),
            SpawnMode::Cluster { nodes } => write!(formatter, "cluster:{nodes}"),
        }
    }
}

/// What load `boxoffice loadtest` generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioName {
    /// Many buyers race for few tickets; some winners pay.
    FlashSale,
    /// A browse, order, pay and cancel mix over many tickets.
    Steady,
    /// Many unpaid orders with a short time to live, then the time until all are cancelled.
    ExpiryStorm,
    /// Only `GET /api/tickets/:id` (ticket reads from the live actors).
    Browse,
    /// Only `GET /` against --target: the minimal-endpoint baseline for ratios.
    Baseline,
}

impl ScenarioName {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::FlashSale => "flash-sale",
            ScenarioName::Steady => "steady",
            ScenarioName::ExpiryStorm => "expiry-storm",
            ScenarioName::Browse => "browse",
            ScenarioName::Baseline => "baseline",
        }
    }
}

/// A fault `boxoffice loadtest` injects into a cluster it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Nemesis {
    /// SIGKILL a node halfway through, then restart it.
    Kill,
    /// SIGSTOP a node for a while, then SIGCONT it.
    Pause,
    /// Restart the NATS server halfway through.
    NatsRestart,
}

/// Flags of `boxoffice loadtest`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("server").required(true).args(["target", "spawn"]))]
pub struct LoadtestArgs {
    /// Base URL of a running server (loopback only unless --allow-remote).
    #[arg(long, env = "BOXOFFICE_TARGET")]
    pub target: Option<String>,
    /// Start the server under test: embedded (a child `boxoffice serve` with fresh data) or
    /// cluster:N.
    #[arg(long, env = "BOXOFFICE_SPAWN")]
    pub spawn: Option<SpawnMode>,
    /// The load to generate.
    #[arg(long, env = "BOXOFFICE_SCENARIO", value_enum)]
    pub scenario: ScenarioName,
    /// Arrivals per second (open loop: each request has a fixed intended start time); without
    /// it or --sweep, --start-rate.
    #[arg(long, env = "BOXOFFICE_RATE", value_parser = parse_rate, conflicts_with = "sweep")]
    pub rate: Option<f64>,
    /// Step the rate up (from --start-rate, times --sweep-factor) for --duration each until it
    /// saturates.
    #[arg(long, env = "BOXOFFICE_SWEEP")]
    pub sweep: bool,
    /// How much each --sweep step multiplies the rate by.
    #[arg(long, env = "BOXOFFICE_SWEEP_FACTOR", default_value = "2", value_parser = parse_sweep_factor)]
    pub sweep_factor: f64,
    /// Load at the first rate before the measured steps, so actors are activated and
    /// connections open; its operations are checked but not in the step numbers.
    #[arg(long, env = "BOXOFFICE_WARMUP", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// First rate of a --sweep (and the rate when neither --rate nor --sweep is given).
    #[arg(long, env = "BOXOFFICE_START_RATE", default_value = "100", value_parser = parse_rate)]
    pub start_rate: f64,
    /// Most steps of a --sweep.
    #[arg(long, env = "BOXOFFICE_SWEEP_STEPS", default_value = "8", value_parser = parse_positive)]
    pub sweep_steps: usize,
    /// How long to generate load (each step, with --sweep).
    #[arg(long, env = "BOXOFFICE_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Users signed up before the run (buyers).
    #[arg(long, env = "BOXOFFICE_USERS", default_value = "100", value_parser = parse_positive)]
    pub users: usize,
    /// Tickets put on sale before the run (default per scenario).
    #[arg(long, env = "BOXOFFICE_TICKETS", value_parser = parse_positive)]
    pub tickets: Option<usize>,
    /// Where report.json and report.html go.
    #[arg(long, env = "BOXOFFICE_REPORT_DIR", default_value = "loadtest-report")]
    pub report_dir: PathBuf,
    /// Fault to inject halfway through the run (needs --spawn cluster:N).
    #[arg(long, env = "BOXOFFICE_NEMESIS", value_enum)]
    pub nemesis: Option<Nemesis>,
    /// NATS of a --spawn cluster:N (default: a nats-server from PATH on a free port).
    #[arg(long, env = "BOXOFFICE_NATS")]
    pub nats: Option<String>,
    /// MongoDB of a --spawn cluster:N (default: secantusd-py from PATH on a free port).
    #[arg(long, env = "BOXOFFICE_MONGO")]
    pub mongo: Option<String>,
    /// Redis of a --spawn cluster:N (default: a redis-server from PATH on a free port).
    #[arg(long, env = "BOXOFFICE_REDIS")]
    pub redis: Option<String>,
    /// Admin token of --target, for the event log (spawned servers get their own).
    #[arg(long, env = "BOXOFFICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Allow a --target that is not a loopback address.
    #[arg(long, env = "BOXOFFICE_ALLOW_REMOTE")]
    pub allow_remote: bool,
    /// Order time to live of a spawned server (default 2s for expiry-storm, else 15m).
    #[arg(long, env = "BOXOFFICE_ORDER_TTL", value_parser = parse_duration)]
    pub order_ttl: Option<Duration>,
    /// Requests in flight at most; an arrival beyond it is dropped and counted, never queued.
    #[arg(long, env = "BOXOFFICE_MAX_IN_FLIGHT", default_value = "256", value_parser = parse_positive)]
    pub max_in_flight: usize,
    /// Share of flash-sale winners and steady orders that pay (0 to 1).
    #[arg(long, env = "BOXOFFICE_PAY_RATIO", default_value = "0.5", value_parser = parse_ratio)]
    pub pay_ratio: f64,
    /// A baseline run's report.json: the report adds this run's throughput as a ratio of it.
    #[arg(long, env = "BOXOFFICE_BASELINE")]
    pub baseline: Option<PathBuf>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 && value <= 1_000_000.0 => Ok(value),
        _ => Err("must be a number of requests per second above 0 and at most 1000000".into()),
    }
}

fn parse_sweep_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (1.05..=10.0).contains(&value) => Ok(value),
        _ => Err("must be a number from 1.05 to 10".into()),
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_all_and_lists() {
        let cli = Cli::try_parse_from(["boxoffice", "serve", "--roles", "orders,auth"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.roles(), vec![Role::Auth, Role::Orders]);
        let cli = Cli::try_parse_from(["boxoffice", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.roles(), Role::ALL.to_vec());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--roles", "bogus"]).is_err());
    }

    #[test]
    fn durations_and_limits_are_checked() {
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--order-ttl", "90s"]).is_ok());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--order-ttl", "0s"]).is_err());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--order-ttl", "soon"]).is_err());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--mailbox-limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn loadtest_needs_exactly_one_server_and_one_rate_mode() {
        let parse = |args: &[&str]| {
            let mut full = vec!["boxoffice", "loadtest"];
            full.extend_from_slice(args);
            Cli::try_parse_from(full)
        };
        let cli = parse(&[
            "--spawn",
            "embedded",
            "--scenario",
            "flash-sale",
            "--rate",
            "50",
        ])
        .unwrap();
        let Command::Loadtest(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.spawn, Some(SpawnMode::Embedded));
        assert_eq!(args.rate, Some(50.0));
        let cli = parse(&["--spawn", "cluster:3", "--scenario", "steady", "--sweep"]).unwrap();
        let Command::Loadtest(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.spawn, Some(SpawnMode::Cluster { nodes: 3 }));
        assert!(parse(&["--scenario", "steady"]).is_err());
        assert!(
            parse(&[
                "--target",
                "http://127.0.0.1:1",
                "--spawn",
                "embedded",
                "--scenario",
                "steady"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--spawn",
                "embedded",
                "--scenario",
                "steady",
                "--rate",
                "5",
                "--sweep"
            ])
            .is_err()
        );
        assert!(parse(&["--spawn", "cluster:0", "--scenario", "steady"]).is_err());
        assert!(parse(&["--spawn", "embedded", "--scenario", "nope"]).is_err());
        assert!(parse(&["--spawn", "embedded", "--scenario", "steady", "--rate", "0"]).is_err());
    }
}
