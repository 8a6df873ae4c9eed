//! Starts real `boxoffice` processes for the behavioural suite and talks to them over HTTP.
//!
//! Every test gets its own deployment, so tests never share state. The same helpers drive every
//! deployment: `TestApp::spawn` reads `BOXOFFICE_TEST_DEPLOYMENT`:
//!
//! * `embedded` (the default): one server process on a free port with a fresh data directory;
//! * `cluster`: three node processes (`serve --nats --mongo --redis`, the servers of
//!   `servers.rs`) with a cluster name and MongoDB database of their own, each started with the
//!   test's flags. `spawn` returns once every node answers `/readyz` with 200, and requests go to
//!   the nodes in turn, so every test exercises routing between nodes.
//!
//! Tests about one embedded process (its data directory, killing and restarting it) cannot run
//! against a cluster: `scripts/test` leaves them out of the cluster pass (`embedded_only` there
//! says why for each), and the process-control methods here refuse a cluster.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::servers::{mongo_url, nats_url, redis_url, unique_name};

/// The JWT key every test server signs sessions with.
pub const JWT_KEY: &str = "test-jwt-key-0123456789abcdef";
/// The admin token every test server accepts on `/admin/api`.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// How many nodes `TestApp::spawn` starts in the cluster deployment.
const CLUSTER_NODES: usize = 3;
/// The shards per kind of a test cluster (few, so that starting one is quick).
const CLUSTER_SHARDS: u64 = 32;

/// True when `BOXOFFICE_TEST_DEPLOYMENT=cluster`: `TestApp::spawn` starts a cluster.
pub fn deployment_is_cluster() -> bool {
    match std::env::var("BOXOFFICE_TEST_DEPLOYMENT").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => false,
        Ok("cluster") => true,
        Ok(other) => panic!("BOXOFFICE_TEST_DEPLOYMENT is `embedded` or `cluster`, not {other:?}"),
    }
}

/// The shards per kind of the deployment `TestApp::spawn` starts: the default (256) for an
/// embedded server, fewer for a test cluster.
pub fn shards_per_kind() -> u64 {
    if deployment_is_cluster() {
        CLUSTER_SHARDS
    } else {
        256
    }
}

/// Options for one test server; `Default` is the contract's defaults with test keys.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// Extra command-line flags, e.g. `["--order-ttl", "2s"]` (given to every node).
    pub args: Vec<String>,
    /// Reuse this data directory instead of a fresh one (restart tests).
    pub data_dir: Option<PathBuf>,
}

impl AppOptions {
    pub fn with_args(args: &[&str]) -> Self {
        AppOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            data_dir: None,
        }
    }
}

/// One `boxoffice serve` process.
pub struct Node {
    address: SocketAddr,
    data_dir: PathBuf,
    child: Option<Child>,
    /// Keeps the temporary data directory alive for as long as the node (and its restarts) needs it.
    _temp: Option<Arc<tempfile::TempDir>>,
    log: ProcessLog,
}

impl Node {
    /// Starts a process with a fresh data directory (or `data_dir`) and waits until it says
    /// where it listens.
    fn start(data_dir: Option<PathBuf>, args: &[String]) -> Node {
        let (temp, data_dir) = match data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("boxoffice-test-")
                    .tempdir()
                    .expect("temp dir");
                let dir = temp.path().to_path_buf();
                (Some(Arc::new(temp)), dir)
            }
        };
        let (child, address, log) = start_process(&data_dir, args);
        Node {
            address,
            data_dir,
            child: Some(child),
            _temp: temp,
            log,
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }
}

/// The flags every node of a test cluster is started with.
fn cluster_args(name: &str, nats: &str, node_id: &str, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--nats",
        nats,
        "--mongo",
        &mongo_url(),
        "--redis",
        &redis_url(),
        "--cluster-name",
        name,
        "--mongo-db",
        name,
        "--node-id",
        node_id,
        "--shards",
        &CLUSTER_SHARDS.to_string(),
        "--lease-ttl",
        "3s",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

/// Starts the nodes `node-<first>`, `node-<first + 1>`, ... of cluster `name` on the NATS server
/// at `nats`, side by side, each with `extra` flags. They are not ready yet: see `until_ready`.
pub fn start_cluster_nodes(
    name: &str,
    nats: &str,
    first: usize,
    count: usize,
    extra: &[String],
) -> Vec<Node> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (first..first + count)
            .map(|index| {
                let args = cluster_args(name, nats, &format!("node-{index}"), extra);
                scope.spawn(move || Node::start(None, &args))
            })
            .collect();
        starting
            .into_iter()
            .map(|node| node.join().expect("a node started"))
            .collect()
    })
}

/// A deployment under test (one embedded process, or the nodes of a cluster) and an HTTP client
/// for it. Dereferences to its `Api`, so `app.get(..)` and the other request helpers go to the
/// nodes in turn.
pub struct TestApp {
    api: Api,
    nodes: Vec<Node>,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    /// Starts a deployment with default options.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(AppOptions::default()).await
    }

    /// Starts the deployment `BOXOFFICE_TEST_DEPLOYMENT` names with the given options and waits
    /// until it serves.
    pub async fn spawn_with(options: AppOptions) -> TestApp {
        if !deployment_is_cluster() {
            return TestApp::from_nodes(vec![Node::start(options.data_dir, &options.args)]);
        }
        assert!(
            options.data_dir.is_none(),
            "a data directory of its own is embedded-only"
        );
        let nodes = start_cluster_nodes(
            &unique_name("it"),
            &nats_url(),
            0,
            CLUSTER_NODES,
            &options.args,
        );
        let app = TestApp::from_nodes(nodes);
        app.until_ready().await;
        app
    }

    /// A deployment of already started processes; `node-<i>` is `nodes[i]`.
    pub fn from_nodes(nodes: Vec<Node>) -> TestApp {
        let api = Api::new(&nodes);
        TestApp { api, nodes }
    }

    /// A handle for spawned tasks, bound to the nodes' current addresses.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// The one process of a single-node deployment; panics for a cluster, since the test that
    /// asked is about one process and belongs on scripts/test's `embedded_only` list.
    fn single(&self) -> &Node {
        assert_eq!(
            self.nodes.len(),
            1,
            "this test is about one process: it is embedded-only (scripts/test, `embedded_only`)"
        );
        &self.nodes[0]
    }

    fn single_mut(&mut self) -> &mut Node {
        self.single();
        &mut self.nodes[0]
    }

    /// The address of the one process.
    pub fn address(&self) -> SocketAddr {
        self.single().address
    }

    /// The data directory of the one process.
    pub fn data_dir(&self) -> &Path {
        &self.single().data_dir
    }

    /// Restarts the server on the same data directory (after `kill` or `terminate`).
    pub async fn restart(&mut self, args: &[&str]) {
        let node = self.single_mut();
        assert!(node.child.is_none(), "stop the server before restarting it");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, address, log) = start_process(&node.data_dir, &args);
        node.child = Some(child);
        node.address = address;
        node.log = log;
        self.api = Api::new(&self.nodes);
    }

    /// Sends SIGKILL and waits for the process to die: nothing gets a chance to flush.
    pub fn kill(&mut self) {
        self.single_mut().kill();
    }

    /// Sends SIGSTOP and waits until every thread of the process is stopped (the signal is
    /// delivered asynchronously: a thread mid-request could still answer one sent right after):
    /// the process freezes (a stalled node), its sockets stay open.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let pid = self.single().child.as_ref().expect("running server").id();
        let is_stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|threads| {
                    threads.flatten().all(|thread| {
                        std::fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| {
                            stat.rsplit(')')
                                .next()
                                .and_then(|rest| rest.split_whitespace().next())
                                .is_some_and(|state| state == "T" || state == "t")
                        })
                    })
                })
                .unwrap_or(false)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_stopped() {
            assert!(
                Instant::now() < deadline,
                "the process did not stop after SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGCONT to a paused process.
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let child = self.single().child.as_ref().expect("running server");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .expect("signal");
    }

    /// Sends SIGTERM and returns the exit status once the process has stopped by itself.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.single_mut().child.take().expect("running server");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("sigterm");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// One node as the HTTP side sees it.
#[derive(Debug)]
struct Endpoint {
    /// `http://<address>`.
    base: String,
    log: ProcessLog,
}

/// A cheap, cloneable handle on a deployment's nodes with the request helpers: it does not own
/// the processes. Each request goes to the next node in turn.
#[derive(Clone, Debug)]
pub struct Api {
    pub client: reqwest::Client,
    endpoints: Arc<Vec<Endpoint>>,
    /// True when the endpoints are a whole cluster's nodes, `node-<i>` at index `i`.
    cluster: bool,
    turn: Arc<AtomicUsize>,
}

impl Api {
    fn new(nodes: &[Node]) -> Api {
        let endpoints = nodes
            .iter()
            .map(|node| Endpoint {
                base: format!("http://{}", node.address),
                log: node.log.clone(),
            })
            .collect();
        Api {
            client: http_client(),
            endpoints: Arc::new(endpoints),
            cluster: nodes.len() > 1,
            turn: Arc::default(),
        }
    }

    /// How many nodes the requests go to.
    pub fn node_count(&self) -> usize {
        self.endpoints.len()
    }

    /// A handle that sends every request to node `index` (`node-<index>` in a cluster).
    pub fn node(&self, index: usize) -> Api {
        let endpoint = &self.endpoints[index];
        Api {
            client: self.client.clone(),
            endpoints: Arc::new(vec![Endpoint {
                base: endpoint.base.clone(),
                log: endpoint.log.clone(),
            }]),
            cluster: false,
            turn: Arc::default(),
        }
    }

    /// Every node, each as its own handle.
    pub fn nodes(&self) -> Vec<Api> {
        (0..self.node_count())
            .map(|index| self.node(index))
            .collect()
    }

    /// The index (in `nodes()`) of the node hosting the `kind` (`ticket` or `order`) actor `id`:
    /// the one whose live actors, mailboxes, crash hooks, transitions and actor metrics are that
    /// entity's. Each node answers those for itself, so a test about an actor asks its host.
    pub async fn owner_index(&self, kind: &str, id: &str) -> usize {
        if !self.cluster {
            return 0;
        }
        let view = self
            .get(&format!("/admin/api/actors/{kind}/{id}"), &Auth::Admin)
            .await;
        assert_eq!(view.status, StatusCode::OK, "{kind} {id}: {view:?}");
        let shard = view.body["shard"].clone();
        // The view lists the leases; a node answers 503 when listing them takes too long.
        let cluster = self
            .eventually("the cluster view", Duration::from_secs(30), || async {
                let cluster = self.get("/admin/api/cluster", &Auth::Admin).await;
                (cluster.status == StatusCode::OK).then_some(cluster)
            })
            .await;
        let owner = cluster.body["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .find(|lease| lease["kind"] == kind && lease["shard"] == shard)
            .and_then(|lease| lease["owner"].as_str())
            .unwrap_or_else(|| panic!("nobody owns {kind} shard {shard}: {cluster:?}"))
            .to_string();
        owner
            .strip_prefix("node-")
            .and_then(|index| index.parse().ok())
            .unwrap_or_else(|| panic!("a test node's id is node-<index>, not {owner}"))
    }

    /// A handle on the node hosting the `kind` actor `id` (see `owner_index`).
    pub async fn owner(&self, kind: &str, id: &str) -> Api {
        if !self.cluster {
            return self.clone();
        }
        self.node(self.owner_index(kind, id).await)
    }

    /// Waits until every node answers `/readyz` with 200 (a cluster node has joined and serves
    /// its shards); on a timeout, fails with every node's last answer and log.
    pub async fn until_ready(&self) {
        let nodes = self.nodes();
        let answers = Mutex::new(vec![String::new(); nodes.len()]);
        let ready = poll_until(Duration::from_secs(60), || async {
            let mut all = true;
            for (index, node) in nodes.iter().enumerate() {
                let response = node.get("/readyz", &Auth::None).await;
                all &= response.status == StatusCode::OK;
                answers.lock().unwrap()[index] = format!("{} {}", response.status, response.text);
            }
            all.then_some(())
        })
        .await;
        if ready.is_none() {
            panic!(
                "timed out waiting for every node to be ready: {:?}\nlogs:\n{}",
                answers.lock().unwrap(),
                self.log()
            );
        }
    }

    /// The output of every node so far (for diagnosing a failure).
    pub fn log(&self) -> String {
        if self.endpoints.len() == 1 {
            return self.endpoints[0].log.lock().unwrap().join("\n");
        }
        self.endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                format!(
                    "----- node-{index} ({}) -----\n{}",
                    endpoint.base,
                    endpoint.log.lock().unwrap().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The URL of `path` on the next node in turn.
    pub fn url(&self, path: &str) -> String {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let endpoint = &self.endpoints[turn % self.endpoints.len()];
        format!("{}{path}", endpoint.base)
    }

    /// Sends a request and returns the status, headers and JSON body (`Null` when empty or not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        request = auth.apply(request);
        if let Some(body) = body {
            request = request.json(body);
        }
        Response::read(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> Response {
        self.request(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: &Value) -> Response {
        self.request(Method::POST, path, auth, Some(body)).await
    }

    pub async fn put(&self, path: &str, auth: &Auth, body: &Value) -> Response {
        self.request(Method::PUT, path, auth, Some(body)).await
    }

    pub async fn delete(&self, path: &str, auth: &Auth) -> Response {
        self.request(Method::DELETE, path, auth, None).await
    }

    /// Sends raw bytes with the given content type (for malformed-input tests).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let mut request = auth.apply(self.client.request(method, self.url(path)));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Response::read(request.body(body).send().await.expect("request sent")).await
    }

    /// Signs up a fresh user and returns its session (cookie and Bearer token).
    pub async fn signup(&self, email: &str, password: &str) -> User {
        let response = self
            .post(
                "/api/users/signup",
                &Auth::None,
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "signup: {response:?}");
        User::from_response(&response)
    }

    /// Signs up a user with a unique email.
    pub async fn new_user(&self) -> User {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        self.signup(&email, "password").await
    }

    /// Creates a ticket as `user` and returns its JSON.
    pub async fn create_ticket(&self, user: &User, title: &str, price: Value) -> Value {
        let response = self
            .post(
                "/api/tickets",
                &user.cookie(),
                &json!({"title": title, "price": price}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "ticket: {response:?}");
        response.body
    }

    /// Orders a ticket as `user` and returns the response.
    pub async fn order(&self, user: &User, ticket_id: &str) -> Response {
        self.post(
            "/api/orders",
            &user.bearer(),
            &json!({"ticketId": ticket_id}),
        )
        .await
    }

    /// Pays an order as `user` and returns the response.
    pub async fn pay(&self, user: &User, order_id: &str, token: &str) -> Response {
        self.post(
            "/api/payments",
            &user.bearer(),
            &json!({"orderId": order_id, "token": token}),
        )
        .await
    }

    /// Reads the whole event log through the admin API.
    pub async fn events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0u64;
        loop {
            let response = self
                .get(
                    &format!("/admin/api/events?after={after}&limit=1000"),
                    &Auth::Admin,
                )
                .await;
            assert_eq!(response.status, StatusCode::OK, "events: {response:?}");
            let page = response.body["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            events.extend(page);
            match response.body["next"].as_u64() {
                Some(next) => after = next,
                None => return events,
            }
        }
    }

    /// Polls `check` until it returns `Some` or the deadline passes (then fails with the
    /// server's log).
    pub async fn eventually<T, F, Fut>(&self, what: &str, deadline: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        match poll_until(deadline, check).await {
            Some(value) => value,
            None => panic!("timed out waiting for {what}; server log:\n{}", self.log()),
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or `None` once `deadline` has passed.
pub async fn poll_until<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if started.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_boxoffice")
}

type ProcessLog = Arc<Mutex<Vec<String>>>;

fn start_process(data_dir: &Path, args: &[String]) -> (Child, SocketAddr, ProcessLog) {
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--admin-token")
        .arg(ADMIN_TOKEN)
        .args(args)
        .env("JWT_KEY", JWT_KEY)
        .env("RUST_LOG", boxoffice::app::DEFAULT_LOG_FILTER)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn boxoffice");
    let log: ProcessLog = Arc::default();
    let (sender, receiver) = std::sync::mpsc::channel::<SocketAddr>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    if let Ok(address) = address.parse() {
                        let _ = sender.send(address);
                    }
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(address) => (child, address, log),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "boxoffice did not start; output:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// `Cookie: session=...` as a browser (or the classic platform's tests) sends it.
    Cookie(String),
    /// `Authorization: Bearer <jwt>`.
    Bearer(String),
    /// The admin token on `/admin/api`.
    Admin,
}

impl Auth {
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => request,
            Auth::Cookie(value) => request.header("cookie", format!("session={value}")),
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Admin => request.bearer_auth(ADMIN_TOKEN),
        }
    }
}

/// A signed-up user's identity and credentials.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
    pub session: String,
}

impl User {
    fn from_response(response: &Response) -> User {
        let session = response
            .session_cookie()
            .expect("signup sets the session cookie");
        let token = response
            .headers
            .get("x-auth-token")
            .expect("x-auth-token header")
            .to_str()
            .unwrap()
            .to_string();
        User {
            id: response.body["id"].as_str().unwrap().to_string(),
            email: response.body["email"].as_str().unwrap().to_string(),
            token,
            session,
        }
    }

    pub fn cookie(&self) -> Auth {
        Auth::Cookie(self.session.clone())
    }

    pub fn bearer(&self) -> Auth {
        Auth::Bearer(self.token.clone())
    }
}

/// Makes a `session` cookie value the way the classic platform's tests do: base64 of
/// `{"jwt": <HS256 token of {id, email, iat}>}`.
pub fn classic_session(id: &str, email: &str) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({"id": id, "email": email, "iat": unix_now()});
    session_for_token(&sign_token(&header, &claims, Some(JWT_KEY.as_bytes())))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A response with its body parsed as JSON.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Response {
    /// Reads a response's status, headers and body (JSON, or `Null`).
    pub async fn read(response: reqwest::Response) -> Response {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            body,
            text,
        }
    }

    /// All `Set-Cookie` header values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|value: &HeaderValue| value.to_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The value of the `session` cookie this response sets, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookies().iter().find_map(|cookie| {
            cookie
                .strip_prefix("session=")
                .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
                .filter(|value| !value.is_empty())
        })
    }

    /// The `message` of each error in the contract's error body.
    pub fn error_messages(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `field` of each error in the contract's error body.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the body is the contract's error format with exactly this status and message.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, message: &str) {
        assert_eq!(self.status, status, "{self:?}");
        self.assert_error_format();
        assert!(
            self.error_messages().iter().any(|m| m == message),
            "expected error {message:?}, got {self:?}"
        );
    }
}

/// A random, valid, never-used ObjectId.
pub fn random_id() -> String {
    let bytes: [u8; 12] = rand_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rand_bytes() -> [u8; 12] {
    let uuid = uuid::Uuid::new_v4();
    let mut out = [0u8; 12];
    out.copy_from_slice(&uuid.as_bytes()[..12]);
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the behavioural test modules.
// ---------------------------------------------------------------------------------------------

/// An HTTP client for test servers. reqwest is built with `rustls-no-provider`, so a crypto
/// provider must be installed before the first client is built (the tests only speak plain HTTP,
/// but reqwest checks at build time).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

impl Api {
    /// Sends a request; `Err` when the connection failed (refused, reset, closed mid-response):
    /// for spawned tasks whose server may be killed.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<&Value>,
    ) -> Result<Response, reqwest::Error> {
        let mut request = auth.apply(self.client.request(method, self.url(path)));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.timeout(Duration::from_secs(60)).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Response {
            status,
            headers,
            body,
            text,
        })
    }

    /// Signs up `count` fresh users concurrently.
    pub async fn new_users(&self, count: usize) -> Vec<User> {
        futures::future::join_all((0..count).map(|_| self.new_user())).await
    }

    /// `GET /api/tickets/:id` without a session.
    pub async fn ticket(&self, id: &str) -> Response {
        self.get(&format!("/api/tickets/{id}"), &Auth::None).await
    }

    /// The ticket's JSON; panics unless it exists.
    pub async fn ticket_json(&self, id: &str) -> Value {
        let response = self.ticket(id).await;
        assert_eq!(response.status, StatusCode::OK, "ticket {id}: {response:?}");
        response.body
    }

    /// Orders a ticket and returns the order; panics unless the order was created.
    pub async fn order_ok(&self, user: &User, ticket_id: &str) -> Value {
        let response = self.order(user, ticket_id).await;
        assert_eq!(response.status, StatusCode::CREATED, "order: {response:?}");
        response.body
    }

    /// `GET /api/orders/:id` as `user`; panics unless it answers 200.
    pub async fn order_json(&self, user: &User, order_id: &str) -> Value {
        let response = self
            .get(&format!("/api/orders/{order_id}"), &user.bearer())
            .await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "order {order_id}: {response:?}"
        );
        response.body
    }

    /// Waits until the order (as seen by its owner) has `status`; returns it.
    pub async fn wait_for_order_status(
        &self,
        user: &User,
        order_id: &str,
        status: &str,
        deadline: Duration,
    ) -> Value {
        self.eventually(
            &format!("order {order_id} to become {status}"),
            deadline,
            || async {
                let order = self.order_json(user, order_id).await;
                (order["status"] == status).then_some(order)
            },
        )
        .await
    }

    /// Waits until no order holds the ticket; returns it.
    pub async fn wait_for_ticket_released(&self, ticket_id: &str, deadline: Duration) -> Value {
        let ticket = self
            .eventually(
                &format!("ticket {ticket_id} to be released"),
                deadline,
                || async {
                    let ticket = self.ticket_json(ticket_id).await;
                    ticket["orderId"].is_null().then_some(ticket)
                },
            )
            .await;
        assert_not_held(&ticket);
        ticket
    }

    /// Every ticket `GET /api/tickets` lists, following the `Link: rel="next"` pages.
    pub async fn all_listed_tickets(&self) -> Vec<Value> {
        let mut tickets = Vec::new();
        let mut path = "/api/tickets".to_string();
        loop {
            let response = self.get(&path, &Auth::None).await;
            assert_eq!(response.status, StatusCode::OK, "list: {response:?}");
            tickets.extend(
                response
                    .body
                    .as_array()
                    .expect("array of tickets")
                    .iter()
                    .cloned(),
            );
            match response.next_link() {
                Some(next) => path = next,
                None => return tickets,
            }
        }
    }

    /// How many events the log holds.
    pub async fn event_count(&self) -> usize {
        self.events().await.len()
    }

    /// Asserts the server still answers `/healthz` with 200.
    pub async fn assert_healthy(&self) {
        let response = self.get("/healthz", &Auth::None).await;
        assert_eq!(response.status, StatusCode::OK, "healthz: {response:?}");
    }
}

impl Response {
    /// Asserts the body is the contract's error format: `application/json`,
    /// `{"errors": [{"message": string, "field"?: string}, ...]}` and nothing else.
    #[track_caller]
    pub fn assert_error_format(&self) {
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error without a JSON content type: {self:?}"
        );
        let object = self.body.as_object().expect("error body is an object");
        assert_eq!(object.len(), 1, "error body has only `errors`: {self:?}");
        let errors = self.body["errors"]
            .as_array()
            .expect("`errors` is an array");
        assert!(!errors.is_empty(), "`errors` is not empty: {self:?}");
        for error in errors {
            assert!(
                error["message"].is_string(),
                "message is a string: {self:?}"
            );
            assert!(
                error.get("field").is_none_or(Value::is_string),
                "field is a string when present: {self:?}"
            );
        }
    }

    /// Asserts `status`, the error format, and an error entry for `field`.
    #[track_caller]
    pub fn assert_field(&self, status: StatusCode, field: &str) {
        assert_eq!(self.status, status, "{self:?}");
        self.assert_error_format();
        assert!(
            self.error_fields().iter().any(|f| f == field),
            "expected an error on field {field:?}, got {self:?}"
        );
    }

    /// Asserts `status`, the error format, and an entry with this message on this field.
    #[track_caller]
    pub fn assert_field_error(&self, status: StatusCode, message: &str, field: &str) {
        self.assert_error(status, message);
        let errors = self.body["errors"].as_array().expect("errors");
        assert!(
            errors
                .iter()
                .any(|e| e["message"] == message && e["field"] == field),
            "expected {message:?} on field {field:?}, got {self:?}"
        );
    }

    /// The path and query of the `Link: <...>; rel="next"` header, if any.
    pub fn next_link(&self) -> Option<String> {
        let links: Vec<&str> = self
            .headers
            .get_all("link")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        links
            .iter()
            .flat_map(|value| value.split(','))
            .find_map(|link| {
                let (target, params) = link.trim().split_once(';')?;
                let is_next = params
                    .split(';')
                    .any(|param| param.trim().replace(' ', "") == "rel=\"next\"");
                let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
                is_next.then(|| match target.find("://") {
                    // An absolute URL: keep the path and query (the harness adds its own address).
                    Some(scheme_end) => {
                        let rest = &target[scheme_end + 3..];
                        rest.find('/')
                            .map_or("/".to_string(), |i| rest[i..].to_string())
                    }
                    None => target.to_string(),
                })
            })
    }
}

/// Asserts no order holds the ticket: the contract has `orderId` present only while one does
/// (absent, not `null`, as the classic platform's JSON).
#[track_caller]
pub fn assert_not_held(ticket: &Value) {
    assert!(
        ticket.get("orderId").is_none(),
        "a ticket no order holds has no orderId: {ticket}"
    );
}

/// True for a 24-hex-digit ObjectId string.
pub fn is_object_id(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses an ISO 8601 / RFC 3339 timestamp; panics when it is not one.
pub fn parse_time(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp string, got {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("ISO 8601 timestamp {text:?}: {e}"))
}

/// Signs arbitrary JWT `claims` under `header` with `key` (HMAC-SHA256, whatever the header says)
/// or, when `key` is `None`, with an empty signature (`alg: none` tokens).
pub fn sign_token(header: &Value, claims: &Value, key: Option<&[u8]>) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        engine.encode(header.to_string()),
        engine.encode(claims.to_string())
    );
    let signature = key
        .map(|key| engine.encode(hmac_sha256(key, signing_input.as_bytes())))
        .unwrap_or_default();
    format!("{signing_input}.{signature}")
}

/// The `session` cookie value carrying `token`, as cookie-session encodes it.
pub fn session_for_token(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(json!({"jwt": token}).to_string())
}

/// The JWT inside a `session` cookie value.
pub fn token_in_session(session: &str) -> String {
    // cookie-session pads its base64; accept it either way, the content is what matters here.
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(session.trim_end_matches('='))
        .expect("session cookie is base64");
    let value: Value = serde_json::from_slice(&decoded).expect("session cookie holds JSON");
    value["jwt"].as_str().expect("`jwt` string").to_string()
}

/// The claims of a JWT (not verified).
pub fn token_claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("claims are base64url");
    serde_json::from_slice(&bytes).expect("claims are JSON")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
