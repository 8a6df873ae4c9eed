//! The real servers the adapter tests run against: NATS with JetStream, Redis, and SecantusDB
//! (a server speaking MongoDB's wire protocol).
//!
//! `scripts/test` starts one of each (`scripts/test-servers`) and passes their URLs in
//! `BOXOFFICE_TEST_NATS_URL`, `BOXOFFICE_TEST_REDIS_URL` and `BOXOFFICE_TEST_MONGO_URL`. When a
//! variable is missing (someone ran `cargo nextest run` directly), this test process starts that
//! server itself, the same way, on a free port; it stops when the process exits. Tests never
//! skip: a missing server binary is a failure that says how to install it. Tests share servers,
//! so each isolates itself with `unique_name` (database, key prefix, subject prefix, stream).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The NATS server's URL (`nats://127.0.0.1:PORT`).
pub fn nats_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        from_env_or_spawn("BOXOFFICE_TEST_NATS_URL", |port| Server {
            name: "nats-server",
            program: find_program("nats-server"),
            args: vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-js".into(),
                "-sd".into(),
                "@DIR@".into(),
            ],
            answers: |address| greeting_starts_with(address, None, b"INFO"),
            url: format!("nats://127.0.0.1:{port}"),
        })
    })
    .clone()
}

/// The Redis server's URL (`redis://127.0.0.1:PORT/`).
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        from_env_or_spawn("BOXOFFICE_TEST_REDIS_URL", |port| Server {
            name: "redis-server",
            program: find_program("redis-server"),
            args: vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                "@DIR@".into(),
            ],
            answers: |address| greeting_starts_with(address, Some(b"PING\r\n"), b"+PONG"),
            url: format!("redis://127.0.0.1:{port}/"),
        })
    })
    .clone()
}

/// The MongoDB-wire server's URL, with `retryWrites=false` (SecantusDB slows down about ten
/// times after ~10k retryable writes without it).
pub fn mongo_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        from_env_or_spawn("BOXOFFICE_TEST_MONGO_URL", |port| Server {
            name: "secantusd",
            // secantusd-py with a short transaction lifetime (see the script).
            program: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/secantusd"),
            args: vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--storage-path".into(),
                ":memory:".into(),
            ],
            answers: |address| TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok(),
            url: format!("mongodb://127.0.0.1:{port}/?retryWrites=false"),
        })
    })
    .clone()
}

/// `<prefix>_<12 random hex digits>`: a name no other test (or run) uses.
pub fn unique_name(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &random[..12])
}

struct Server {
    name: &'static str,
    program: PathBuf,
    /// `@DIR@` stands for a temporary data directory the wrapper creates and removes.
    args: Vec<String>,
    answers: fn(SocketAddr) -> bool,
    url: String,
}

fn from_env_or_spawn(variable: &str, server: impl Fn(u16) -> Server) -> String {
    if let Ok(url) = std::env::var(variable)
        && !url.is_empty()
    {
        return url;
    }
    let mut failures = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let server = server(port);
        match spawn(&server, port) {
            Ok(()) => return server.url,
            Err(reason) => failures.push(reason),
        }
    }
    panic!(
        "{variable} is not set and starting a server failed: {}",
        failures.join("; ")
    );
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Starts the server under a bash wrapper that stops it (and removes its data) once this test
/// process is gone, then waits until it answers.
fn spawn(server: &Server, port: u16) -> Result<(), String> {
    const WRAPPER: &str = r#"
parent="$1"; shift
dir="$(mktemp -d -t boxoffice-test-server.XXXXXX)"
command=()
for word in "$@"; do command+=("${word//@DIR@/$dir}"); done
"${command[@]}" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$dir"' EXIT
tail --pid="$parent" -f /dev/null &
wait -n "$server" "$!"
"#;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(WRAPPER)
        .arg("boxoffice-test-server")
        .arg(std::process::id().to_string())
        .arg(&server.program)
        .args(&server.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot run bash for {}: {error}", server.name))?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if (server.answers)(address) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited with {status} on port {port}",
                server.name
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("{} did not answer on port {port}", server.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects, optionally sends `request`, and checks the first bytes the server sends.
fn greeting_starts_with(address: SocketAddr, request: Option<&[u8]>, expected: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if let Some(request) = request
        && stream.write_all(request).is_err()
    {
        return false;
    }
    let mut buffer = vec![0u8; expected.len()];
    stream.read_exact(&mut buffer).is_ok() && buffer == expected
}

/// `name` on `PATH`, or in the project's SecantusDB venv (`scripts/test-servers` makes it).
pub fn find_program(name: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-secantus/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(venv))
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH: run scripts/test-servers once, which installs it")
        })
}
