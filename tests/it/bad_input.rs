//! Hostile and malformed input on every write endpoint: broken JSON, wrong types, oversized
//! bodies, wrong content types, odd Unicode, impossible numbers, unknown routes and methods.
//! Each gets a 4xx in the contract's error format, changes nothing, and the server stays up.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Auth, Response, TestApp, User, random_id};

/// A server with a user, one of its tickets (free) and one of its orders (for another ticket).
struct Fixture {
    app: TestApp,
    user: User,
    ticket_id: String,
    order_id: String,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let seller = app.new_user().await;
    let ticket = app.create_ticket(&user, "mine", json!(10)).await;
    let sold = app.create_ticket(&seller, "ordered", json!(10)).await;
    let order = app.order_ok(&user, sold["id"].as_str().unwrap()).await;
    Fixture {
        ticket_id: ticket["id"].as_str().unwrap().to_string(),
        order_id: order["id"].as_str().unwrap().to_string(),
        app,
        user,
    }
}

/// One write endpoint and a body it would accept.
struct Endpoint {
    method: Method,
    path: String,
    auth: Auth,
    valid: Value,
}

impl Fixture {
    fn endpoints(&self) -> Vec<Endpoint> {
        let auth = self.user.bearer();
        vec![
            Endpoint {
                method: Method::POST,
                path: "/api/users/signup".into(),
                auth: Auth::None,
                valid: json!({"email": "fresh@test.com", "password": "password"}),
            },
            Endpoint {
                method: Method::POST,
                path: "/api/tickets".into(),
                auth: auth.clone(),
                valid: json!({"title": "new", "price": 5}),
            },
            Endpoint {
                method: Method::PUT,
                path: format!("/api/tickets/{}", self.ticket_id),
                auth: auth.clone(),
                valid: json!({"title": "changed", "price": 6}),
            },
            Endpoint {
                method: Method::POST,
                path: "/api/orders".into(),
                auth: auth.clone(),
                valid: json!({"ticketId": self.ticket_id}),
            },
            Endpoint {
                method: Method::POST,
                path: "/api/payments".into(),
                auth,
                valid: json!({"token": "tok_visa", "orderId": self.order_id}),
            },
        ]
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Response {
        self.app
            .send_raw(
                endpoint.method.clone(),
                &endpoint.path,
                &endpoint.auth,
                content_type,
                body.into(),
            )
            .await
    }

    async fn send_json(&self, endpoint: &Endpoint, body: &Value) -> Response {
        self.send(endpoint, Some("application/json"), body.to_string())
            .await
    }

    /// What a refused request must leave unchanged.
    async fn snapshot(&self) -> Snapshot {
        Snapshot {
            listed: self.app.all_listed_tickets().await,
            events: self.app.event_count().await,
            ticket: self.app.ticket_json(&self.ticket_id).await,
            order: self.app.order_json(&self.user, &self.order_id).await,
        }
    }

    /// Asserts nothing changed since `before` and the server is still healthy.
    async fn assert_unchanged(&self, before: &Snapshot, what: &str) {
        let after = self.snapshot().await;
        assert_eq!(&after, before, "{what} changed nothing");
        self.app.assert_healthy().await;
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    listed: Vec<Value>,
    events: usize,
    ticket: Value,
    order: Value,
}

#[tokio::test]
async fn malformed_json_is_400() {
    let fixture = fixture().await;
    let before = fixture.snapshot().await;
    let bodies: [&[u8]; 8] = [
        b"{\"title\": ",
        b"{,}",
        b"not json",
        b"{\"price\": 5}}",
        b"",
        b"[",
        b"{'title': 'single quotes'}",
        b"\xff\xfe{}",
    ];
    for endpoint in fixture.endpoints() {
        for body in bodies {
            let response = fixture
                .send(&endpoint, Some("application/json"), body)
                .await;
            assert_eq!(
                response.status,
                StatusCode::BAD_REQUEST,
                "{} {} {:?}: {response:?}",
                endpoint.method,
                endpoint.path,
                String::from_utf8_lossy(body)
            );
            response.assert_error_format();
            fixture.assert_unchanged(&before, "malformed JSON").await;
        }
    }
}

#[tokio::test]
async fn json_that_is_not_an_object_is_400() {
    let fixture = fixture().await;
    let before = fixture.snapshot().await;
    for endpoint in fixture.endpoints() {
        for body in [
            "null",
            "[]",
            "\"text\"",
            "123",
            "true",
            "[{\"title\": \"x\"}]",
        ] {
            let response = fixture
                .send(&endpoint, Some("application/json"), body)
                .await;
            assert_eq!(
                response.status,
                StatusCode::BAD_REQUEST,
                "{} {body}: {response:?}",
                endpoint.path
            );
            response.assert_error_format();
            fixture.assert_unchanged(&before, "non-object JSON").await;
        }
    }
}

#[tokio::test]
async fn fields_of_the_wrong_type_are_400_naming_the_field() {
    let fixture = fixture().await;
    let before = fixture.snapshot().await;
    let endpoints = fixture.endpoints();
    let (signup, create, update, order, payment) = (
        &endpoints[0],
        &endpoints[1],
        &endpoints[2],
        &endpoints[3],
        &endpoints[4],
    );
    let ticket_cases = [
        (json!({"title": 5, "price": "x"}), vec!["title", "price"]),
        (json!({"title": "ok", "price": true}), vec!["price"]),
        (json!({"title": "ok", "price": null}), vec!["price"]),
        (json!({"title": "ok", "price": {}}), vec!["price"]),
        (json!({"title": "ok", "price": [5]}), vec!["price"]),
        (json!({"title": {"text": "x"}, "price": 5}), vec!["title"]),
        (json!({"title": ["x"], "price": 5}), vec!["title"]),
        (json!({"title": null, "price": 5}), vec!["title"]),
    ];
    let mut cases: Vec<(&Endpoint, Value, Vec<&str>)> = vec![
        (signup, json!({"email": ["a"]}), vec!["email"]),
        (
            signup,
            json!({"email": ["a"], "password": "password"}),
            vec!["email"],
        ),
        (
            signup,
            json!({"email": "typed@test.com", "password": 12345}),
            vec!["password"],
        ),
        (
            signup,
            json!({"email": 5, "password": {"p": 1}}),
            vec!["email", "password"],
        ),
        (order, json!({"ticketId": 5}), vec!["ticketId"]),
        (
            order,
            json!({"ticketId": [fixture.ticket_id]}),
            vec!["ticketId"],
        ),
        (order, json!({"ticketId": null}), vec!["ticketId"]),
        (order, json!({"ticketId": {"$ne": null}}), vec!["ticketId"]),
        (
            payment,
            json!({"token": 5, "orderId": fixture.order_id}),
            vec!["token"],
        ),
        (
            payment,
            json!({"token": "tok_visa", "orderId": 7}),
            vec!["orderId"],
        ),
        (
            payment,
            json!({"token": ["tok_visa"], "orderId": {"id": 1}}),
            vec!["token", "orderId"],
        ),
    ];
    for (body, fields) in ticket_cases {
        cases.push((create, body.clone(), fields.clone()));
        cases.push((update, body, fields));
    }
    for (endpoint, body, fields) in cases {
        let response = fixture.send_json(endpoint, &body).await;
        for field in fields {
            response.assert_field(StatusCode::BAD_REQUEST, field);
        }
        fixture
            .assert_unchanged(&before, "wrongly typed fields")
            .await;
    }
}

#[tokio::test]
async fn impossible_prices_are_400_on_price() {
    let fixture = fixture().await;
    let before = fixture.snapshot().await;
    let endpoints = fixture.endpoints();
    for endpoint in [&endpoints[1], &endpoints[2]] {
        for price in [
            "-1", "0", "1e308", "-0.0", "1e-9", "0.001", "\"-0\"", "\"0.00\"", "1e999",
        ] {
            let body = format!("{{\"title\": \"priced\", \"price\": {price}}}");
            let response = fixture.send(endpoint, Some("application/json"), body).await;
            if response.error_fields().is_empty() {
                // A number the JSON parser itself refuses (1e999) may be reported without a field.
                assert_eq!(
                    response.status,
                    StatusCode::BAD_REQUEST,
                    "{price}: {response:?}"
                );
                response.assert_error_format();
                assert_eq!(price, "1e999", "only an unparseable number lacks a field");
            } else {
                response.assert_field(StatusCode::BAD_REQUEST, "price");
            }
            fixture.assert_unchanged(&before, "impossible prices").await;
        }
    }
}

#[tokio::test]
async fn nan_and_infinity_literals_are_not_json() {
    let fixture = fixture().await;
    let before = fixture.snapshot().await;
    let endpoints = fixture.endpoints();
    for endpoint in [&endpoints[1], &endpoints[2]] {
        for literal in ["NaN", "Infinity", "-Infinity", "+5", "0x10", ".5", "05"] {
            let body = format!("{{\"title\": \"x\", \"price\": {literal}}}");
            let response = fixture.send(endpoint, Some("application/json"), body).await;
            assert_eq!(
                response.status,
                StatusCode::BAD_REQUEST,
                "{literal}: {response:?}"
            );
            response.assert_error_format();
            fixture.assert_unchanged(&before, "NaN and Infinity").await;
        }
    }
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let fixture = fixture().await;
    let before = fixture.snapshot().await;
    for endpoint in fixture.endpoints() {
        let mut body = endpoint.valid.clone();
        body["padding"] = json!("x".repeat(1024 * 1024 + 1024));
        let response = fixture.send_json(&endpoint, &body).await;
        assert_eq!(
            response.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}: {:?} {:?}",
            endpoint.path,
            response.status,
            response.body
        );
        response.assert_error_format();
        fixture.assert_unchanged(&before, "oversized bodies").await;
    }
}

#[tokio::test]
async fn a_large_body_under_the_limit_is_accepted() {
    let fixture = fixture().await;
    let endpoints = fixture.endpoints();
    let mut body = endpoints[1].valid.clone();
    body["padding"] = json!("x".repeat(900 * 1024));
    let response = fixture.send_json(&endpoints[1], &body).await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    assert!(
        response.body.get("padding").is_none(),
        "unknown fields are dropped"
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_are_415() {
    let fixture = fixture().await;
    let before = fixture.snapshot().await;
    for endpoint in fixture.endpoints() {
        let text = endpoint.valid.to_string();
        for content_type in [
            Some("text/plain"),
            None,
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let response = fixture.send(&endpoint, content_type, text.clone()).await;
            assert_eq!(
                response.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{} with {content_type:?}: {response:?}",
                endpoint.path
            );
            response.assert_error_format();
            fixture.assert_unchanged(&before, "non-JSON bodies").await;
        }
    }
}

#[tokio::test]
async fn json_with_a_charset_parameter_is_json() {
    let fixture = fixture().await;
    let endpoints = fixture.endpoints();
    let response = fixture
        .send(
            &endpoints[1],
            Some("application/json; charset=utf-8"),
            endpoints[1].valid.to_string(),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_set_nothing() {
    let fixture = fixture().await;
    let app = &fixture.app;
    let forged = random_id();

    let response = app
        .post(
            "/api/users/signup",
            &Auth::None,
            &json!({"email": "extra@test.com", "password": "password", "id": forged,
                    "isAdmin": true, "passwordHash": "x"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert_ne!(response.body["id"], forged.as_str());
    assert!(response.body.get("isAdmin").is_none(), "{response:?}");

    let response = app
        .post(
            "/api/orders",
            &fixture.user.bearer(),
            &json!({"ticketId": fixture.ticket_id, "id": forged, "status": "complete",
                    "userId": random_id(), "version": 9, "expiresAt": "2000-01-01T00:00:00Z",
                    "ticket": {"id": random_id(), "price": 0.01}}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    let order = response.body;
    assert_ne!(order["id"], forged.as_str());
    assert_eq!(order["status"], "created");
    assert_eq!(order["userId"], fixture.user.id.as_str());
    assert_eq!(order["version"], 0);
    assert_ne!(order["expiresAt"], "2000-01-01T00:00:00Z");
    assert_eq!(order["ticket"]["id"], fixture.ticket_id.as_str());
    assert_eq!(order["ticket"]["price"].as_f64(), Some(10.0));

    let response = app
        .post(
            "/api/payments",
            &fixture.user.bearer(),
            &json!({"token": "tok_visa", "orderId": fixture.order_id, "amount": 1,
                    "id": forged, "currency": "eur"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert_ne!(response.body["id"], forged.as_str());
}

/// Titles a client may send: each is stored byte for byte or refused in the contract's format.
fn odd_titles() -> Vec<String> {
    vec![
        "🎟️ concert 🎉".into(),
        "\u{202E}override\u{200F} mark".into(),
        "שלום עולם".into(),
        "e\u{0301}\u{0301}\u{0301} combining".into(),
        "é and e\u{0301}".into(),
        "👨‍👩‍👧‍👦 family".into(),
        "a\u{0000}b".into(),
        "\u{FEFF}byte order mark".into(),
        "Ｆｕｌｌｗｉｄｔｈ".into(),
        "tab\tand\nnewline".into(),
        format!("Z{}", "\u{0336}".repeat(50)),
        "\u{E000} private use, \u{FFFF} noncharacter".into(),
    ]
}

#[tokio::test]
async fn odd_unicode_is_kept_byte_for_byte_or_refused() {
    let fixture = fixture().await;
    let app = &fixture.app;
    let endpoints = fixture.endpoints();
    for title in odd_titles() {
        for endpoint in [&endpoints[1], &endpoints[2]] {
            let before = fixture.snapshot().await;
            let response = fixture
                .send_json(endpoint, &json!({"title": title, "price": 5}))
                .await;
            match response.status {
                StatusCode::OK | StatusCode::CREATED => {
                    assert_eq!(
                        response.body["title"].as_str(),
                        Some(title.as_str()),
                        "{title:?}"
                    );
                    let stored = app.ticket_json(response.body["id"].as_str().unwrap()).await;
                    assert_eq!(stored["title"].as_str(), Some(title.as_str()), "{title:?}");
                }
                _ => {
                    response.assert_field(StatusCode::BAD_REQUEST, "title");
                    fixture
                        .assert_unchanged(&before, &format!("title {title:?}"))
                        .await;
                }
            }
        }
    }
    app.assert_healthy().await;
}

#[tokio::test]
async fn surrogate_escapes_are_decoded_or_refused() {
    let fixture = fixture().await;
    let endpoints = fixture.endpoints();
    let create = &endpoints[1];

    // A valid pair is one character, U+1F600.
    let response = fixture
        .send(
            create,
            Some("application/json"),
            r#"{"title": "smile \ud83d\ude00", "price": 5}"#,
        )
        .await;
    match response.status {
        StatusCode::CREATED => assert_eq!(response.body["title"], "smile \u{1F600}"),
        _ => response.assert_field(StatusCode::BAD_REQUEST, "title"),
    }

    // A lone surrogate is no character: it cannot be stored as UTF-8.
    for body in [
        r#"{"title": "lone \ud800", "price": 5}"#,
        r#"{"title": "lone \udc00 low", "price": 5}"#,
        r#"{"title": "reversed \ude00\ud83d", "price": 5}"#,
    ] {
        let before = fixture.snapshot().await;
        let response = fixture.send(create, Some("application/json"), body).await;
        if response.status == StatusCode::CREATED {
            // Only acceptable if it round-trips exactly, escape and all.
            let escape = &body[body.find('\\').unwrap()..body.find('\\').unwrap() + 6];
            assert!(response.text.contains(escape), "{body}: {response:?}");
        } else {
            assert_eq!(
                response.status,
                StatusCode::BAD_REQUEST,
                "{body}: {response:?}"
            );
            response.assert_error_format();
            fixture.assert_unchanged(&before, body).await;
        }
    }
}

#[tokio::test]
async fn unknown_routes_are_404_in_the_error_format() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/nope",
        "/nope",
        "/api/tickets/a/b",
        "/api/users",
        "/api/orders/x/y",
    ] {
        let response = app.get(path, &Auth::None).await;
        response.assert_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let response = app
        .post("/api/nope", &Auth::None, &json!({"title": "x"}))
        .await;
    response.assert_error(StatusCode::NOT_FOUND, "Not Found");
}

#[tokio::test]
async fn wrong_methods_are_405_or_404_in_the_error_format() {
    let app = TestApp::spawn().await;
    let user = app.new_user().await;
    let ticket = app.create_ticket(&user, "method", json!(5)).await;
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let cases = [
        (Method::DELETE, "/api/tickets".to_string()),
        (Method::PATCH, ticket_path.clone()),
        (Method::DELETE, ticket_path),
        (Method::PUT, "/api/orders".to_string()),
        (Method::GET, "/api/payments".to_string()),
        (Method::GET, "/api/users/signup".to_string()),
        (Method::DELETE, "/api/users/currentuser".to_string()),
    ];
    for (method, path) in cases {
        let response = app
            .request(method.clone(), &path, &user.bearer(), None)
            .await;
        assert!(
            response.status == StatusCode::METHOD_NOT_ALLOWED
                || response.status == StatusCode::NOT_FOUND,
            "{method} {path}: {response:?}"
        );
        response.assert_error_format();
    }
    assert_eq!(
        app.ticket_json(ticket["id"].as_str().unwrap()).await,
        ticket
    );
}
