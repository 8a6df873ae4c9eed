//! Operations: probes, metrics, the OpenAPI document, admin authentication, and the command
//! line (bad flags, a data directory in use, cluster flags, graceful SIGTERM).

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Auth, TestApp, shards_per_kind};

fn boxoffice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(args)
        .env_remove("JWT_KEY")
        .env("NO_COLOR", "1")
        .output()
        .expect("run boxoffice")
}

#[tokio::test]
async fn probes_answer_and_metrics_name_routes_not_ids() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/healthz", &Auth::None).await.status,
        StatusCode::OK
    );
    let ready = app.get("/readyz", &Auth::None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    // A node's metrics count the requests it answered and the actors it hosts: make the requests
    // through one node, and read the actor gauge on the node hosting the ticket.
    let node = app.node(0);
    let user = node.new_user().await;
    let ticket = node.create_ticket(&user, "metered", json!(3)).await;
    let id = ticket["id"].as_str().unwrap();
    node.get(&format!("/api/tickets/{id}"), &Auth::None).await;
    let metrics = node.get("/metrics", &Auth::None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text;
    for expected in [
        "boxoffice_http_requests_total{route=\"/api/tickets/{id}\",method=\"GET\",status=\"200\"} 1",
        "boxoffice_http_request_duration_seconds_count{route=\"/api/tickets\",method=\"POST\",status=\"201\"} 1",
        "boxoffice_timer_lag_seconds_count",
        "boxoffice_actor_admission_refusals_total",
        "boxoffice_store_commits_total",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    let host = app.owner("ticket", id).await;
    let hosting = host.get("/metrics", &Auth::None).await.text;
    assert!(
        hosting.contains("boxoffice_actors_live{kind=\"ticket\"} 1"),
        "{hosting}"
    );
    for text in [&text, &hosting] {
        assert!(!text.contains(id), "metrics must not carry ids");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_of_the_contract() {
    let app = TestApp::spawn().await;
    let response = app.get("/openapi.json", &Auth::None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["openapi"], "3.1.0");
    let paths = response.body["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/users/signup", "post"),
        ("/api/users/signin", "post"),
        ("/api/users/signout", "post"),
        ("/api/users/currentuser", "get"),
        ("/api/tickets", "get"),
        ("/api/tickets", "post"),
        ("/api/tickets/{id}", "get"),
        ("/api/tickets/{id}", "put"),
        ("/api/orders", "get"),
        ("/api/orders", "post"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}", "delete"),
        ("/api/payments", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/admin/api/cluster", "get"),
        ("/admin/api/shard-moves", "get"),
        ("/admin/api/events", "get"),
        ("/admin/api/tail", "get"),
        ("/admin/api/actors", "get"),
        ("/admin/api/actors/{kind}/{id}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
}

/// What in `value` the OpenAPI `schema` does not describe: a missing required key, a key it
/// does not name, a value of another type or outside its enum. Follows `$ref`s, array items and
/// `oneOf` (one option must fit).
fn undescribed(document: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &document["components"]["schemas"][name];
        assert!(target.is_object(), "{reference} is not in the document");
        return undescribed(document, target, value, at);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let problems: Vec<Vec<String>> = options
            .iter()
            .map(|option| undescribed(document, option, value, at))
            .collect();
        return if problems.iter().any(Vec::is_empty) {
            Vec::new()
        } else {
            problems.concat()
        };
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return vec![format!("{at}: {value} is not one of {allowed:?}")];
    }
    let value_type = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_u64() || number.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let fits = |name: &str| name == value_type || (name == "number" && value_type == "integer");
    if !types.is_empty() && !types.iter().any(|name| fits(name)) {
        return vec![format!(
            "{at}: {value_type} where the schema says {types:?}"
        )];
    }
    let mut problems = Vec::new();
    if let Value::Object(fields) = value
        && let Some(properties) = schema["properties"].as_object()
    {
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            if !fields.contains_key(required) {
                problems.push(format!("{at}: required {required} is missing"));
            }
        }
        for (key, field) in fields {
            match properties.get(key) {
                Some(property) => problems.extend(undescribed(
                    document,
                    property,
                    field,
                    &format!("{at}.{key}"),
                )),
                None => problems.push(format!("{at}: {key} is not in the schema")),
            }
        }
    }
    if let Value::Array(items) = value
        && schema["items"].is_object()
    {
        for (index, item) in items.iter().enumerate() {
            problems.extend(undescribed(
                document,
                &schema["items"],
                item,
                &format!("{at}[{index}]"),
            ));
        }
    }
    problems
}

#[tokio::test]
async fn the_openapi_document_describes_what_the_admin_api_returns() {
    let app = TestApp::spawn().await;
    let document = app.get("/openapi.json", &Auth::None).await.body;
    let seller = app.new_user().await;
    let ticket = app.create_ticket(&seller, "described", json!(7)).await;
    let ticket_id = ticket["id"].as_str().unwrap();
    let order = app.order_ok(&app.new_user().await, ticket_id).await;
    let order_id = order["id"].as_str().unwrap();
    for (route, path) in [
        ("/admin/api/cluster", "/admin/api/cluster".to_string()),
        (
            "/admin/api/shard-moves",
            "/admin/api/shard-moves".to_string(),
        ),
        ("/admin/api/events", "/admin/api/events".to_string()),
        ("/admin/api/actors", "/admin/api/actors".to_string()),
        (
            "/admin/api/actors/{kind}/{id}",
            format!("/admin/api/actors/ticket/{ticket_id}"),
        ),
        (
            "/admin/api/actors/{kind}/{id}",
            format!("/admin/api/actors/order/{order_id}"),
        ),
    ] {
        let response = app.get(&path, &Auth::Admin).await;
        assert_eq!(response.status, StatusCode::OK, "{path}: {response:?}");
        let schema = &document["paths"][route]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        assert!(schema.is_object(), "{route} has no response schema");
        let problems = undescribed(&document, schema, &response.body, path.as_str());
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[tokio::test]
async fn the_admin_api_refuses_anonymous_and_wrong_tokens() {
    let app = TestApp::spawn().await;
    for path in [
        "/admin/api/cluster",
        "/admin/api/events",
        "/admin/api/actors",
        "/admin/api/shard-moves",
        "/admin/api/tail",
    ] {
        for auth in [Auth::None, Auth::Bearer("wrong".into())] {
            let response = app.get(path, &auth).await;
            response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
        }
        if path == "/admin/api/tail" {
            // An event stream never ends: read only its head.
            let stream = app
                .client
                .get(app.url(path))
                .bearer_auth(crate::harness::ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(stream.status(), StatusCode::OK);
            assert_eq!(stream.headers()["content-type"], "text/event-stream");
        } else {
            let allowed = app.get(path, &Auth::Admin).await;
            assert_eq!(allowed.status, StatusCode::OK, "{path}: {allowed:?}");
        }
    }
    let cluster = app.get("/admin/api/cluster", &Auth::Admin).await;
    assert_eq!(
        cluster.body["nodes"].as_array().unwrap().len(),
        app.node_count()
    );
    assert_eq!(
        cluster.body["shards"].as_array().unwrap().len() as u64,
        2 * shards_per_kind()
    );
    let text = app.get("/admin/api/events", &Auth::Admin).await.text;
    assert!(
        !text.contains("argon2"),
        "no password hashes in admin responses"
    );
}

#[tokio::test]
async fn unknown_actor_is_404_and_a_user_is_never_shown_with_its_hash() {
    let app = TestApp::spawn().await;
    let missing = app
        .get(
            &format!("/admin/api/actors/ticket/{}", crate::harness::random_id()),
            &Auth::Admin,
        )
        .await;
    missing.assert_error(StatusCode::NOT_FOUND, "Not Found");
    let bad_kind = app
        .get(
            &format!("/admin/api/actors/user/{}", crate::harness::random_id()),
            &Auth::Admin,
        )
        .await;
    assert_eq!(bad_kind.status, StatusCode::NOT_FOUND);
}

#[test]
fn a_bad_flag_is_one_clear_line_and_exit_code_2() {
    let output = boxoffice(&["serve", "--order-ttl", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--order-ttl"), "{stderr}");
}

#[test]
fn cluster_mode_needs_all_three_servers_and_shared_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let base = ["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir];
    let only_nats: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--nats", "nats://127.0.0.1:4222"])
        .collect();
    let output = boxoffice(&only_nats);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--nats, --mongo and --redis together"),
        "{stderr}"
    );

    // All three given, but no JWT_KEY (the helper removes it): refused before connecting.
    let all: Vec<&str> = base
        .iter()
        .copied()
        .chain([
            "--nats",
            "nats://127.0.0.1:1",
            "--mongo",
            "mongodb://127.0.0.1:1/",
            "--redis",
            "redis://127.0.0.1:1/",
            "--admin-token",
            "token",
        ])
        .collect();
    let output = boxoffice(&all);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_KEY"), "{stderr}");
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args([
            "--nats",
            "nats://127.0.0.1:1",
            "--mongo",
            "mongodb://127.0.0.1:1/?retryWrites=false&serverSelectionTimeoutMS=1000",
            "--redis",
            "redis://127.0.0.1:1/",
            "--admin-token",
            "token",
        ])
        .env("JWT_KEY", "key")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[test]
fn help_and_version_work() {
    let help = boxoffice(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve"));
    let version = boxoffice(&["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_and_sigterm_stops_cleanly() {
    let mut app = TestApp::spawn().await;
    let output = boxoffice(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        app.data_dir().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let status = app.terminate();
    assert_eq!(status.code(), Some(0), "{}", app.log());
}

#[tokio::test]
async fn the_healthcheck_command_follows_healthz() {
    let app = TestApp::spawn().await;
    let url = app.url("/healthz");
    let healthy = boxoffice(&["healthcheck", "--url", &url]);
    assert!(healthy.status.success(), "{healthy:?}");
    drop(app);
    let gone = boxoffice(&["healthcheck", "--url", &url]);
    assert!(!gone.status.success());
}

#[test]
fn without_secrets_the_embedded_default_generates_and_keeps_them() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("JWT_KEY")
        .env_remove("BOXOFFICE_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("listening on http://");
        log.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let jwt = std::fs::read_to_string(dir.path().join("jwt.key")).unwrap();
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert_eq!(jwt.trim().len(), 64);
    assert_eq!(admin.trim().len(), 64);
    let log = log.join("\n");
    assert!(
        log.contains("jwt.key") && log.contains("admin.token"),
        "{log}"
    );
    assert!(
        !log.contains(jwt.trim()) && !log.contains(admin.trim()),
        "secrets must not be logged"
    );
    use std::os::unix::fs::PermissionsExt;
    for file in ["jwt.key", "admin.token"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

#[tokio::test]
async fn a_query_string_that_does_not_parse_is_a_json_400() {
    let app = TestApp::spawn().await;
    for path in ["/admin/api/events?after=abc", "/admin/api/actors?limit=-1"] {
        let response = app.get(path, &Auth::Admin).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{path}: {response:?}"
        );
        response.assert_error_format();
    }
    let response = app.get("/api/tickets?limit=abc", &Auth::None).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.error_fields(), vec!["limit"]);
}
