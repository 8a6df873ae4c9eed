//! The admin page in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! with `fantoccini`, against a real server. An operator signs in with the admin token, sees the
//! shard grids, the live actors, a ticket's and an order's transition timelines and the live
//! tail, and markup in a ticket's title is shown as text and never runs.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs them); without them
//! the test fails and says so. A screenshot of each view is saved under
//! `target/test-artifacts/admin/`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, TestApp};

/// How long the page gets to show something (a loaded 2-core machine runs a browser slowly).
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "install Debian's chromium and chromium-driver \
    (`apt-get install -y chromium chromium-driver`; scripts/test does it)";

/// The first of `names` found on `PATH`.
fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|directory| names.iter().map(move |name| directory.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Where the screenshots go: `target/test-artifacts/admin/` of this crate.
fn artifacts_dir() -> PathBuf {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/admin");
    std::fs::create_dir_all(&directory).expect("create the artifacts directory");
    directory
}

/// A chromedriver process on a free port, in its own process group so that dropping it ends
/// the browsers it started too.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    /// Starts chromedriver; it and the browsers it starts keep their temporary files in
    /// `scratch` (their `TMPDIR`), which the test removes.
    async fn start(log: &Path, scratch: &Path) -> ChromeDriver {
        let program = find_on_path(&["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver is not on PATH: {INSTALL_HINT}"));
        // A port picked by binding port 0 may be taken again before chromedriver binds it: try
        // a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let log_file = std::fs::File::create(log).expect("chromedriver log file");
            let child = Command::new(&program)
                .arg(format!("--port={port}"))
                .env("TMPDIR", scratch)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
            let mut driver = ChromeDriver {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
            if driver.wait_until_ready().await {
                return driver;
            }
        }
        panic!(
            "chromedriver did not become ready; its log: {}",
            log.display()
        );
    }

    /// Polls `/status` until chromedriver says it is ready; false if it exited or never did.
    async fn wait_until_ready(&mut self) -> bool {
        let client = crate::harness::http_client();
        let started = Instant::now();
        while started.elapsed() < PAGE_DEADLINE {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            let status = client
                .get(format!("{}/status", self.url))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(response) = status
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A browser session on the admin page of `base`.
struct Page {
    client: Client,
    base: String,
    artifacts: PathBuf,
}

impl Page {
    async fn open(driver: &ChromeDriver, base: String, profile: &Path) -> Page {
        let chromium = find_on_path(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("chromium is not on PATH: {INSTALL_HINT}"));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=1280,900",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("built as an object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|error| panic!("chromedriver could not start chromium: {error}"));
        Page {
            client,
            base,
            artifacts: artifacts_dir(),
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    /// Runs `script` (a function body; `arguments[0]`... are `args`) in the page.
    async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Polls `script` until it returns something truthy, and returns that.
    async fn wait_until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let started = Instant::now();
        loop {
            let value = self.run(script, args.clone()).await;
            let is_truthy = match &value {
                Value::Null => false,
                Value::Bool(flag) => *flag,
                Value::Number(number) => number.as_f64() != Some(0.0),
                Value::String(text) => !text.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if is_truthy {
                return value;
            }
            if started.elapsed() > PAGE_DEADLINE {
                self.screenshot("failure").await;
                let body = self.run("return document.body.innerText", vec![]).await;
                panic!("timed out waiting for {what}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element with the id `id` is shown with some text, and returns the text.
    async fn shown_text(&self, what: &str, id: &str) -> String {
        let text = self
            .wait_until(
                what,
                "const node = document.getElementById(arguments[0]); \
                 return !node.hidden && node.textContent",
                vec![json!(id)],
            )
            .await;
        text.as_str().expect("text").to_string()
    }

    async fn click(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|error| panic!("no {selector}: {error}"))
            .click()
            .await
            .unwrap_or_else(|error| panic!("cannot click {selector}: {error}"));
    }

    /// Replaces the text of the input `selector` as a person would type it.
    async fn type_into(&self, selector: &str, text: &str) {
        let input = self
            .client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|error| panic!("no {selector}: {error}"));
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    /// The `textContent` of every element matching `selector`.
    async fn texts(&self, selector: &str) -> Vec<String> {
        let value = self
            .run(
                "return [...document.querySelectorAll(arguments[0])].map((node) => node.textContent)",
                vec![json!(selector)],
            )
            .await;
        serde_json::from_value(value).expect("a list of strings")
    }

    async fn text(&self, selector: &str) -> String {
        let texts = self.texts(selector).await;
        assert_eq!(texts.len(), 1, "exactly one {selector}: {texts:?}");
        texts.into_iter().next().unwrap_or_default()
    }

    async fn count(&self, selector: &str) -> usize {
        self.texts(selector).await.len()
    }

    /// Whether the page ran the `<script>` or `onerror` smuggled in through ticket titles.
    async fn pwned(&self) -> Value {
        self.run("return typeof window.__pwned", vec![]).await
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
    }
}

/// The data the walkthrough looks at: a ticket whose title is markup, ordered and paid.
struct Sale {
    ticket_id: String,
    /// Paid: no request can change it, so its actor is passivated a second after the payment.
    order_id: String,
    /// Unpaid: its actor stays live.
    open_order_id: String,
}

const SCRIPT_TITLE: &str = "<script>window.__pwned=1</script>";
const IMAGE_TITLE: &str = "<img src=x onerror=\"window.__pwned=2\">";

async fn make_sale(app: &TestApp) -> Sale {
    let seller = app.new_user().await;
    let buyer = app.new_user().await;
    let opening = app.create_ticket(&seller, "Opening night", json!(40)).await;
    let open_order = app.order_ok(&buyer, opening["id"].as_str().unwrap()).await;
    let open_order_id = open_order["id"].as_str().unwrap().to_string();
    let ticket = app
        .create_ticket(&seller, SCRIPT_TITLE, json!("25.50"))
        .await;
    assert_eq!(
        ticket["title"], SCRIPT_TITLE,
        "the API keeps the title as given"
    );
    let ticket_id = ticket["id"].as_str().unwrap().to_string();
    let order = app.order_ok(&buyer, &ticket_id).await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let paid = app.pay(&buyer, &order_id, "tok_visa").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    Sale {
        ticket_id,
        order_id,
        open_order_id,
    }
}

async fn sign_in(page: &Page) {
    page.goto("/admin").await;
    page.wait_until(
        "the sign-in form",
        "return !document.getElementById('sign-in-view').hidden",
        vec![],
    )
    .await;
    page.screenshot("sign-in").await;

    page.type_into("#token-input", "not-the-admin-token").await;
    page.click("#sign-in-button").await;
    let refused = page
        .shown_text("the refusal of a wrong token", "sign-in-error")
        .await;
    assert_eq!(refused, "That is not the admin token.");
    assert_eq!(
        page.run("return sessionStorage.length", vec![]).await,
        json!(0),
        "a refused token is not kept"
    );

    page.type_into("#token-input", ADMIN_TOKEN).await;
    page.click("#sign-in-button").await;
    page.wait_until(
        "the cluster view",
        "return document.body.dataset.view === 'cluster' \
             && document.querySelectorAll('.shard-cell').length > 0",
        vec![],
    )
    .await;
    let storage = page
        .run(
            "return {session: sessionStorage.getItem('boxoffice.adminToken'), \
                     local: localStorage.length, cookie: document.cookie, url: location.href}",
            vec![],
        )
        .await;
    assert_eq!(storage["session"], ADMIN_TOKEN, "kept for this tab");
    assert_eq!(storage["local"], json!(0), "never in localStorage");
    assert_eq!(storage["cookie"], "", "never in a cookie");
    assert!(
        !storage["url"].as_str().unwrap().contains(ADMIN_TOKEN),
        "never in the URL"
    );
}

async fn check_cluster(page: &Page, node_id: &str) {
    for kind in ["ticket", "order"] {
        let selector = format!(".shard-grid[data-kind=\"{kind}\"] .shard-cell");
        assert_eq!(page.count(&selector).await, 256, "{kind} shard cells");
        let owners = page
            .run(
                "return [...new Set([...document.querySelectorAll(arguments[0])] \
                     .map((cell) => cell.dataset.owner + ' ' + getComputedStyle(cell).backgroundColor))]",
                vec![json!(selector)],
            )
            .await;
        let owners: Vec<String> = serde_json::from_value(owners).unwrap();
        assert_eq!(owners.len(), 1, "one owner, one colour: {owners:?}");
        let (owner, colour) = owners[0].split_once(' ').unwrap();
        assert_eq!(owner, node_id);
        assert!(colour.starts_with("rgb("), "an opaque colour: {colour}");
    }
    let cell_size = page
        .run(
            "const box = document.querySelector('.shard-cell').getBoundingClientRect(); \
             return [box.width, box.height]",
            vec![],
        )
        .await;
    assert_eq!(cell_size, json!([16, 16]), "the stylesheet is applied");
    assert_eq!(
        page.texts(".legend-entry").await,
        vec![node_id.to_string()],
        "the legend names the owner"
    );
    let node_row = page
        .texts(&format!("#nodes-table tr[data-node=\"{node_id}\"] td"))
        .await;
    assert_eq!(node_row.len(), 6, "{node_row:?}");
    assert!(node_row[0].contains(node_id), "{node_row:?}");
    assert_eq!(node_row[5], "512", "the node owns every shard");
    assert_eq!(page.text("#moves-empty").await, "No shard moves recorded.");
    page.screenshot("cluster").await;
}

async fn check_actors(page: &Page, sale: &Sale) {
    page.click("a[data-view=\"actors\"]").await;
    let row = format!("#actors-table tr[data-id=\"{}\"] td", sale.ticket_id);
    page.wait_until(
        "the ticket among the live actors",
        "return document.querySelectorAll(arguments[0]).length > 0",
        vec![json!(row)],
    )
    .await;
    let cells = page.texts(&row).await;
    assert_eq!(cells[0], "ticket");
    assert_eq!(cells[1], sale.ticket_id);
    assert_eq!(&cells[3..], ["sold", "2", "0", "0", "ok"], "{cells:?}");
    let order_row = page
        .texts(&format!(
            "#actors-table tr[data-id=\"{}\"] td",
            sale.open_order_id
        ))
        .await;
    assert_eq!(&order_row[3..5], ["created", "0"], "{order_row:?}");
    page.screenshot("actors").await;

    page.type_into("#actor-search-input", &crate::harness::random_id())
        .await;
    page.click("#actor-search-button").await;
    let missing = page
        .shown_text("the search to find nothing", "actor-search-error")
        .await;
    assert!(
        missing.starts_with("No ticket or order has the id"),
        "{missing}"
    );
}

/// Searches `id` on the actors view and returns the timeline's messages and versions.
async fn find_actor(page: &Page, id: &str, transitions: usize) -> (Vec<String>, Vec<String>) {
    page.click("a[data-view=\"actors\"]").await;
    page.type_into("#actor-search-input", id).await;
    page.click("#actor-search-button").await;
    page.wait_until(
        "the actor's timeline",
        "return document.body.dataset.view === 'actor' \
             && document.getElementById('actor-title').textContent.endsWith(arguments[0]) \
             && document.querySelectorAll('#transitions-table tbody tr').length === arguments[1]",
        vec![json!(id), json!(transitions)],
    )
    .await;
    let messages = page.texts("#transitions-table tbody tr .message").await;
    let versions = page
        .run(
            "return [...document.querySelectorAll('#transitions-table tbody tr')] \
                 .map((row) => row.dataset.version)",
            vec![],
        )
        .await;
    (messages, serde_json::from_value(versions).unwrap())
}

async fn check_actor_views(page: &Page, sale: &Sale) {
    let (messages, versions) = find_actor(page, &sale.ticket_id, 3).await;
    assert_eq!(messages, ["Create", "Reserve", "MarkSold"]);
    assert_eq!(versions, ["0", "1", "2"]);
    assert_eq!(
        page.run("return location.hash", vec![]).await,
        format!("#/actor/ticket/{}", sale.ticket_id)
    );
    assert_eq!(page.text("[data-field=\"status\"]").await, "active");
    assert_eq!(page.text("[data-field=\"version\"]").await, "2");
    assert_eq!(page.text("[data-field=\"restarts\"]").await, "0");
    assert_eq!(page.text("[data-field=\"quarantined\"]").await, "no");
    assert_eq!(
        page.text("[data-field=\"mailboxDepth\"]").await,
        "0 of 1000"
    );
    let state: Value = serde_json::from_str(&page.text("#actor-state").await).expect("JSON");
    assert_eq!(state["title"], SCRIPT_TITLE, "the title is shown as text");
    assert_eq!(page.pwned().await, "undefined", "the title did not run");
    assert_eq!(
        page.count("script").await,
        1,
        "only the page's own module script exists"
    );
    page.screenshot("actor").await;

    let (messages, versions) = find_actor(page, &sale.order_id, 3).await;
    assert_eq!(messages, ["Create", "Pay", "PaymentSucceeded"]);
    assert_eq!(versions, ["0", "1", "2"]);
    let transition = page
        .texts("#transitions-table tbody tr:last-child td")
        .await;
    assert_eq!(
        transition[3], "awaiting:payment → complete",
        "{transition:?}"
    );
    assert!(
        transition[5].contains(&format!("order.completed:{}:2", sale.order_id)),
        "{transition:?}"
    );
}

async fn check_tail(page: &Page, app: &TestApp) {
    page.click("a[data-view=\"tail\"]").await;
    page.wait_until(
        "the tail to connect",
        "return document.getElementById('tail-status').dataset.status === 'connected'",
        vec![],
    )
    .await;
    let seller = app.new_user().await;
    let ticket = app.create_ticket(&seller, IMAGE_TITLE, json!(12)).await;
    let ticket_id = ticket["id"].as_str().unwrap();
    let event = format!(".tail-event[data-name=\"ticket.created\"][data-entity=\"{ticket_id}\"]");
    let transition =
        format!(".tail-transition[data-entity=\"{ticket_id}\"][data-message=\"Create\"]");
    page.wait_until(
        "the new ticket's event and transition on the tail",
        "return document.querySelector(arguments[0]) && document.querySelector(arguments[1])",
        vec![json!(event), json!(transition)],
    )
    .await;
    let shown_title = serde_json::to_string(IMAGE_TITLE).unwrap();
    assert!(
        page.text(&event).await.contains(&shown_title),
        "the title is shown as text, within the event's JSON"
    );
    assert!(
        page.text(&transition)
            .await
            .contains("Create: absent → available (version 0)")
    );
    assert_eq!(page.count("#tail-list img").await, 0, "no markup from data");
    assert_eq!(page.pwned().await, "undefined", "the title did not run");
    page.screenshot("tail").await;

    page.click("#tail-toggle").await;
    assert_eq!(page.text("#tail-status").await, "paused");
}

async fn sign_out(page: &Page) {
    page.click("#sign-out").await;
    page.wait_until(
        "the sign-in form after signing out",
        "return !document.getElementById('sign-in-view').hidden \
             && sessionStorage.getItem('boxoffice.adminToken') === null",
        vec![],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_inspects_the_cluster_actors_timelines_and_tail_in_a_real_browser() {
    let app = TestApp::spawn().await;
    let sale = make_sale(&app).await;
    let cluster = app
        .get("/admin/api/cluster", &crate::harness::Auth::Admin)
        .await;
    let node_id = cluster.body["nodes"][0]["id"].as_str().unwrap().to_string();

    let artifacts = artifacts_dir();
    let scratch = tempfile::Builder::new()
        .prefix("boxoffice-browser-")
        .tempdir()
        .expect("a scratch directory for the browser");
    let profile = scratch.path().join("profile");
    let temporary = scratch.path().join("tmp");
    std::fs::create_dir_all(&temporary).expect("the browser's TMPDIR");
    let driver = ChromeDriver::start(&artifacts.join("chromedriver.log"), &temporary).await;
    let page = Page::open(&driver, format!("http://{}", app.address()), &profile).await;
    let walkthrough = async {
        sign_in(&page).await;
        check_cluster(&page, &node_id).await;
        check_actors(&page, &sale).await;
        check_actor_views(&page, &sale).await;
        check_tail(&page, &app).await;
        sign_out(&page).await;
    };
    let outcome = std::panic::AssertUnwindSafe(walkthrough)
        .catch_unwind()
        .await;
    // End the browser before chromedriver, whatever happened.
    let _ = tokio::time::timeout(PAGE_DEADLINE, page.client.close()).await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
