//! The Stripe gateway: charges through Stripe's Charges API (`POST /v1/charges`).
//!
//! Owns the HTTP conversation with Stripe: the form body, the headers (Bearer key,
//! `Idempotency-Key`) and the mapping of Stripe's answers onto `PaymentError`. It must not decide
//! anything about orders, retry by itself (a retry is the caller's, with the same idempotency
//! key), or ever write the API key or the card token into a log line or an error message.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::{Charge, ChargeRequest, PaymentError, PaymentGateway};

/// How long one charge request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to Stripe may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The message of a decline whose body says nothing better.
const DEFAULT_DECLINE_MESSAGE: &str = "Your card was declined.";
/// The message of a refusal whose body says nothing better.
const DEFAULT_REJECTION_MESSAGE: &str = "The payment request was refused.";
/// What replaces the API key should Stripe ever echo it in a message.
const REDACTED: &str = "[redacted]";

/// A payment gateway that charges cards through Stripe's Charges API.
///
/// Holds one HTTP client (with a 10 s request and 5 s connect timeout) for all charges. Its
/// `Debug` shows the API base but never the API key.
pub struct StripeGateway {
    client: reqwest::Client,
    api_base: String,
    charges_url: Url,
    /// `Bearer <key>`, marked sensitive so no `Debug` of a request shows it.
    authorization: HeaderValue,
    /// Kept only to redact it from Stripe's messages.
    api_key: String,
}

impl StripeGateway {
    /// Builds a gateway that authenticates with `api_key` against `api_base`
    /// (`https://api.stripe.com` in production; a trailing slash is ignored).
    ///
    /// Fails when the key is empty or cannot be sent in a header, when the base is not an
    /// `http`/`https` URL, or when the HTTP client cannot be built. The error never contains the key.
    pub fn new(api_key: String, api_base: String) -> Result<Self, PaymentError> {
        StripeGateway::with_timeouts(api_key, api_base, REQUEST_TIMEOUT, CONNECT_TIMEOUT)
    }

    fn with_timeouts(
        api_key: String,
        api_base: String,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, PaymentError> {
        if api_key.trim().is_empty() {
            return Err(configuration_error("the stripe API key is empty"));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| {
                configuration_error(
                    "the stripe API key has characters that cannot be sent in a header",
                )
            })?;
        authorization.set_sensitive(true);
        let api_base = api_base.trim_end_matches('/').to_string();
        let charges_url = Url::parse(&format!("{api_base}/v1/charges"))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                configuration_error(&format!(
                    "the stripe API base {api_base:?} is not an http or https URL"
                ))
            })?;

        // reqwest is built without a rustls crypto provider and panics when none is installed.
        // The binary installs ring at start; doing it here too (a no-op once one is installed)
        // keeps `new` from panicking when it runs first, as in tests.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(connect_timeout)
            // A redirected POST would be replayed as a GET; Stripe never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("boxoffice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| {
                tracing::error!(error = %error, "cannot build the stripe http client");
                configuration_error("cannot build the stripe http client")
            })?;

        Ok(StripeGateway {
            client,
            api_base,
            charges_url,
            authorization,
            api_key,
        })
    }

    /// Removes the API key from a text that comes from outside (Stripe's messages).
    fn redact(&self, text: String) -> String {
        if text.contains(&self.api_key) {
            text.replace(&self.api_key, REDACTED)
        } else {
            text
        }
    }

    /// Maps Stripe's answer onto the port's outcome.
    fn outcome_of_response(&self, status: StatusCode, body: &[u8]) -> Result<Charge, PaymentError> {
        if status.is_success() {
            return match serde_json::from_slice::<ChargeBody>(body) {
                Ok(charge) if !charge.id.is_empty() => Ok(Charge { id: charge.id }),
                _ => Err(unavailable(
                    status,
                    "stripe answered success without a charge id",
                )),
            };
        }
        let error = serde_json::from_slice::<ErrorBody>(body)
            .map(|body| body.error)
            .unwrap_or_default();
        let message = error.message.clone().map(|message| self.redact(message));
        match status {
            StatusCode::UNAUTHORIZED => Err(unavailable(status, "stripe rejected the API key")),
            // A restricted key without the right to charge: our configuration, not the client's
            // request, and Stripe's message names (part of) the key.
            StatusCode::FORBIDDEN => Err(unavailable(
                status,
                "stripe refused the API key permission to create charges",
            )),
            StatusCode::PAYMENT_REQUIRED => {
                let message = message.unwrap_or_else(|| DEFAULT_DECLINE_MESSAGE.to_string());
                tracing::info!(
                    code = error.code.as_deref().unwrap_or_default(),
                    decline_code = error.decline_code.as_deref().unwrap_or_default(),
                    "stripe declined the card"
                );
                Err(PaymentError::Declined(message))
            }
            // 409: another request with the same key is in flight; 429: rate limited. Both are
            // answered by asking again with the same key.
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => {
                Err(unavailable(status, "stripe asked to retry later"))
            }
            StatusCode::BAD_REQUEST if error.kind.as_deref() == Some("idempotency_error") => {
                tracing::warn!("stripe refused the idempotency key");
                Err(PaymentError::Rejected(
                    message.unwrap_or_else(|| DEFAULT_REJECTION_MESSAGE.to_string()),
                ))
            }
            StatusCode::BAD_REQUEST if error.is_about_the_token() => {
                tracing::info!(
                    code = error.code.as_deref().unwrap_or_default(),
                    "stripe does not know the token"
                );
                Err(PaymentError::InvalidToken)
            }
            status if status.is_client_error() => {
                tracing::warn!(
                    status = status.as_u16(),
                    code = error.code.as_deref().unwrap_or_default(),
                    param = error.param.as_deref().unwrap_or_default(),
                    "stripe rejected the charge request"
                );
                Err(PaymentError::Rejected(
                    message.unwrap_or_else(|| DEFAULT_REJECTION_MESSAGE.to_string()),
                ))
            }
            status => Err(unavailable(
                status,
                &format!("stripe answered HTTP {}", status.as_u16()),
            )),
        }
    }
}

impl fmt::Debug for StripeGateway {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("StripeGateway")
            .field("api_base", &self.api_base)
            .field("api_key", &REDACTED)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    #[tracing::instrument(
        name = "stripe_charge",
        skip_all,
        fields(idempotency_key = %request.idempotency_key, amount_cents = request.amount_cents)
    )]
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, PaymentError> {
        let idempotency_key = HeaderValue::from_str(&request.idempotency_key).map_err(|_| {
            tracing::error!("idempotency key cannot be sent in a header");
            PaymentError::Rejected("The idempotency key is not a valid header value.".to_string())
        })?;
        let body = form_body(&[
            ("amount", &request.amount_cents.to_string()),
            ("currency", &request.currency),
            ("source", &request.source),
        ]);

        tracing::debug!("sending charge to stripe");
        let response = self
            .client
            .post(self.charges_url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("Idempotency-Key", idempotency_key)
            .body(body)
            .send()
            .await
            .map_err(unanswered)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unanswered)?;

        let outcome = self.outcome_of_response(status, &body);
        if let Ok(charge) = &outcome {
            tracing::info!(charge_id = %charge.id, "stripe charge succeeded");
        }
        outcome
    }

    fn name(&self) -> &'static str {
        "stripe"
    }
}

/// A successful Charges API answer; only the id matters here.
#[derive(Deserialize)]
struct ChargeBody {
    id: String,
}

/// Stripe's error answer: `{"error": {"type", "code", "message", "param", "decline_code"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Default, Deserialize)]
struct StripeError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
    param: Option<String>,
    decline_code: Option<String>,
}

impl StripeError {
    /// Whether Stripe refused the card token itself (unknown, malformed or already used).
    fn is_about_the_token(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("resource_missing" | "token_already_used")
        ) || self.param.as_deref() == Some("source")
    }
}

fn configuration_error(reason: &str) -> PaymentError {
    PaymentError::Unavailable(reason.to_string())
}

/// An answer that leaves the charge's outcome unknown: the caller asks again with the same key.
fn unavailable(status: StatusCode, reason: &str) -> PaymentError {
    tracing::warn!(status = status.as_u16(), reason, "stripe unavailable");
    PaymentError::Unavailable(reason.to_string())
}

/// A request that got no complete answer: the charge may or may not have been made.
fn unanswered(error: reqwest::Error) -> PaymentError {
    let reason = if error.is_timeout() {
        "stripe did not answer in time"
    } else if error.is_connect() {
        "cannot connect to stripe"
    } else {
        "the request to stripe failed"
    };
    // The error names the URL (the API base), never the headers or the body.
    tracing::warn!(error = %error, reason, "stripe unreachable");
    PaymentError::Unavailable(reason.to_string())
}

/// Encodes pairs as `application/x-www-form-urlencoded` (the WHATWG byte serializer: space as
/// `+`, everything but `*-._` and ASCII alphanumerics percent-encoded). reqwest's `form` feature
/// is off, and this is all of it that Stripe's form bodies need.
fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (name, value) in pairs {
        if !body.is_empty() {
            body.push('&');
        }
        append_form_encoded(&mut body, name);
        body.push('=');
        append_form_encoded(&mut body, value);
    }
    body
}

fn append_form_encoded(output: &mut String, text: &str) {
    const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        match byte {
            b'*' | b'-' | b'.' | b'_' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => {
                output.push(char::from(byte));
            }
            b' ' => output.push('+'),
            _ => {
                output.push('%');
                output.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
                output.push(char::from(HEX_DIGITS[usize::from(byte & 0x0F)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::{Form, Json, Router};
    use serde_json::{Value, json};

    use super::*;

    const API_KEY: &str = "sk_test_secret_4242424242";

    /// One request the test server received.
    #[derive(Clone, Debug)]
    struct ReceivedRequest {
        headers: HeaderMap,
        form: HashMap<String, String>,
    }

    #[derive(Clone)]
    struct ServerState {
        status: StatusCode,
        body: Value,
        received: Arc<Mutex<Vec<ReceivedRequest>>>,
    }

    /// A Stripe stand-in on a free port that answers every charge with `status` and `body`.
    struct TestServer {
        base_url: String,
        received: Arc<Mutex<Vec<ReceivedRequest>>>,
    }

    impl TestServer {
        async fn start(status: StatusCode, body: Value) -> TestServer {
            TestServer::start_router(
                |state| {
                    Router::new()
                        .route("/v1/charges", post(record_and_answer))
                        .with_state(state)
                },
                status,
                body,
            )
            .await
        }

        async fn start_router(
            router: impl FnOnce(ServerState) -> Router,
            status: StatusCode,
            body: Value,
        ) -> TestServer {
            let received = Arc::new(Mutex::new(Vec::new()));
            let state = ServerState {
                status,
                body,
                received: received.clone(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            let app = router(state);
            tokio::spawn(async move { axum::serve(listener, app).await });
            TestServer {
                base_url: format!("http://{address}"),
                received,
            }
        }

        fn gateway(&self) -> StripeGateway {
            StripeGateway::new(API_KEY.to_string(), self.base_url.clone()).expect("gateway")
        }

        fn received(&self) -> Vec<ReceivedRequest> {
            self.received.lock().expect("lock").clone()
        }
    }

    async fn record_and_answer(
        State(state): State<ServerState>,
        headers: HeaderMap,
        Form(form): Form<HashMap<String, String>>,
    ) -> (StatusCode, Json<Value>) {
        state
            .received
            .lock()
            .expect("lock")
            .push(ReceivedRequest { headers, form });
        (state.status, Json(state.body))
    }

    fn request() -> ChargeRequest {
        ChargeRequest {
            amount_cents: 1250,
            currency: "usd".to_string(),
            source: "tok_visa".to_string(),
            idempotency_key: "order-1-attempt-1".to_string(),
        }
    }

    fn charge_body(id: &str) -> Value {
        json!({"id": id, "object": "charge", "amount": 1250, "currency": "usd", "status": "succeeded"})
    }

    fn error_body(kind: &str, code: Option<&str>, param: Option<&str>, message: &str) -> Value {
        json!({"error": {"type": kind, "code": code, "param": param, "message": message}})
    }

    /// Charges `request()` against a server answering `status` and `body`.
    async fn outcome_for(status: StatusCode, body: Value) -> Result<Charge, PaymentError> {
        let server = TestServer::start(status, body).await;
        server.gateway().charge(&request()).await
    }

    fn header<'a>(request: &'a ReceivedRequest, name: &str) -> &'a str {
        request
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing"))
            .to_str()
            .expect("ascii header")
    }

    #[tokio::test]
    async fn success_sends_the_charges_api_request_and_returns_the_charge_id() {
        let server = TestServer::start(StatusCode::OK, charge_body("ch_123")).await;

        let outcome = server.gateway().charge(&request()).await;

        assert_eq!(
            outcome,
            Ok(Charge {
                id: "ch_123".to_string()
            })
        );
        let received = server.received();
        assert_eq!(received.len(), 1);
        let call = &received[0];
        assert_eq!(header(call, "authorization"), format!("Bearer {API_KEY}"));
        assert_eq!(
            header(call, "content-type"),
            "application/x-www-form-urlencoded"
        );
        assert_eq!(header(call, "idempotency-key"), "order-1-attempt-1");
        let expected: HashMap<String, String> = [
            ("amount", "1250"),
            ("currency", "usd"),
            ("source", "tok_visa"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        assert_eq!(call.form, expected);
    }

    #[tokio::test]
    async fn trailing_slash_of_the_api_base_is_ignored() {
        let server = TestServer::start(StatusCode::OK, charge_body("ch_123")).await;
        let gateway = StripeGateway::new(API_KEY.to_string(), format!("{}/", server.base_url))
            .expect("gateway");

        assert!(gateway.charge(&request()).await.is_ok());
        assert_eq!(server.received().len(), 1);
    }

    #[tokio::test]
    async fn reserved_characters_in_the_token_reach_stripe_intact() {
        let server = TestServer::start(StatusCode::OK, charge_body("ch_123")).await;
        let source = "tok a&b=c+d%e/f?g#h\u{e9}*-._~";
        let charge = ChargeRequest {
            source: source.to_string(),
            ..request()
        };

        server.gateway().charge(&charge).await.expect("charge");

        assert_eq!(server.received()[0].form["source"], source);
    }

    #[test]
    fn form_body_encodes_like_the_whatwg_serializer() {
        assert_eq!(
            form_body(&[("amount", "1250"), ("source", "a b&c=d+e%f/\u{e9}*-._~")]),
            "amount=1250&source=a+b%26c%3Dd%2Be%25f%2F%C3%A9*-._%7E"
        );
        assert_eq!(form_body(&[]), "");
    }

    #[tokio::test]
    async fn card_error_402_is_a_decline_with_stripes_message() {
        let body = json!({"error": {"type": "card_error", "code": "card_declined",
            "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}});
        assert_eq!(
            outcome_for(StatusCode::PAYMENT_REQUIRED, body).await,
            Err(PaymentError::Declined(
                "Your card has insufficient funds.".to_string()
            ))
        );
    }

    #[tokio::test]
    async fn decline_without_a_message_gets_the_default_one() {
        assert_eq!(
            outcome_for(StatusCode::PAYMENT_REQUIRED, json!({})).await,
            Err(PaymentError::Declined(DEFAULT_DECLINE_MESSAGE.to_string()))
        );
    }

    #[tokio::test]
    async fn unknown_or_used_tokens_are_invalid() {
        let bodies = [
            error_body(
                "invalid_request_error",
                Some("resource_missing"),
                Some("source"),
                "No such token: 'tok_nope'",
            ),
            error_body(
                "invalid_request_error",
                Some("resource_missing"),
                None,
                "No such token",
            ),
            error_body(
                "invalid_request_error",
                None,
                Some("source"),
                "Invalid source object",
            ),
            error_body(
                "invalid_request_error",
                Some("token_already_used"),
                None,
                "You cannot use a Stripe token more than once",
            ),
        ];
        for body in bodies {
            assert_eq!(
                outcome_for(StatusCode::BAD_REQUEST, body.clone()).await,
                Err(PaymentError::InvalidToken),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn idempotency_error_is_rejected_with_stripes_message() {
        let message = "Keys for idempotent requests can only be used with the same parameters they were first used with.";
        let body = error_body("idempotency_error", None, None, message);
        assert_eq!(
            outcome_for(StatusCode::BAD_REQUEST, body).await,
            Err(PaymentError::Rejected(message.to_string()))
        );
    }

    #[tokio::test]
    async fn other_client_errors_are_rejected_with_stripes_message() {
        let cases = [
            (
                StatusCode::BAD_REQUEST,
                error_body(
                    "invalid_request_error",
                    Some("amount_too_small"),
                    Some("amount"),
                    "Amount must be at least $0.50 usd",
                ),
                "Amount must be at least $0.50 usd",
            ),
            (
                StatusCode::NOT_FOUND,
                error_body(
                    "invalid_request_error",
                    None,
                    None,
                    "Unrecognized request URL",
                ),
                "Unrecognized request URL",
            ),
            (
                StatusCode::BAD_REQUEST,
                json!("not an error body"),
                DEFAULT_REJECTION_MESSAGE,
            ),
        ];
        for (status, body, message) in cases {
            assert_eq!(
                outcome_for(status, body).await,
                Err(PaymentError::Rejected(message.to_string())),
                "{status}"
            );
        }
    }

    #[tokio::test]
    async fn rejected_api_key_is_unavailable_without_the_key() {
        let body = error_body(
            "invalid_request_error",
            None,
            None,
            &format!("Invalid API Key provided: {API_KEY}"),
        );
        let outcome = outcome_for(StatusCode::UNAUTHORIZED, body).await;
        match outcome {
            Err(PaymentError::Unavailable(message)) => {
                assert_eq!(message, "stripe rejected the API key");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_key_echoed_in_a_message_is_redacted() {
        let body = error_body(
            "invalid_request_error",
            None,
            None,
            &format!("bad key {API_KEY}"),
        );
        assert_eq!(
            outcome_for(StatusCode::BAD_REQUEST, body).await,
            Err(PaymentError::Rejected(format!("bad key {REDACTED}")))
        );
    }

    #[tokio::test]
    async fn retryable_answers_are_unavailable() {
        for status in [
            StatusCode::FORBIDDEN,
            StatusCode::CONFLICT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::MOVED_PERMANENTLY,
        ] {
            let body = error_body("api_error", None, None, "try again");
            let outcome = outcome_for(status, body).await;
            assert!(
                matches!(outcome, Err(PaymentError::Unavailable(_))),
                "{status}: {outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn success_without_a_charge_id_is_unavailable() {
        for body in [
            json!({"object": "charge"}),
            json!({"id": ""}),
            json!("ch_123"),
        ] {
            let outcome = outcome_for(StatusCode::OK, body.clone()).await;
            assert!(
                matches!(outcome, Err(PaymentError::Unavailable(_))),
                "{body}: {outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn connection_refused_is_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let gateway =
            StripeGateway::new(API_KEY.to_string(), format!("http://{address}")).expect("gateway");

        let outcome = gateway.charge(&request()).await;

        assert!(
            matches!(outcome, Err(PaymentError::Unavailable(_))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn no_answer_in_time_is_unavailable() {
        let server = TestServer::start_router(
            |state| {
                Router::new()
                    .route("/v1/charges", post(std::future::pending::<()>))
                    .with_state(state)
            },
            StatusCode::OK,
            Value::Null,
        )
        .await;
        let gateway = StripeGateway::with_timeouts(
            API_KEY.to_string(),
            server.base_url.clone(),
            Duration::from_millis(200),
            CONNECT_TIMEOUT,
        )
        .expect("gateway");

        let outcome = gateway.charge(&request()).await;

        assert_eq!(
            outcome,
            Err(PaymentError::Unavailable(
                "stripe did not answer in time".to_string()
            ))
        );
    }

    #[test]
    fn construction_refuses_bad_configuration_without_naming_the_key() {
        let cases = [
            (String::new(), "https://api.stripe.com"),
            ("   ".to_string(), "https://api.stripe.com"),
            (format!("{API_KEY}\n"), "https://api.stripe.com"),
            (API_KEY.to_string(), "api.stripe.com"),
            (API_KEY.to_string(), "ftp://api.stripe.com"),
            (API_KEY.to_string(), ""),
        ];
        for (api_key, api_base) in cases {
            match StripeGateway::new(api_key.clone(), api_base.to_string()) {
                Err(PaymentError::Unavailable(message)) => {
                    assert!(!message.contains(API_KEY), "{message}");
                }
                Err(other) => panic!("{api_key:?} {api_base:?}: unexpected {other:?}"),
                Ok(gateway) => panic!("{api_key:?} {api_base:?}: accepted as {gateway:?}"),
            }
        }
    }

    #[test]
    fn debug_and_name_never_show_the_key() {
        let gateway =
            StripeGateway::new(API_KEY.to_string(), "https://api.stripe.com/".to_string())
                .expect("gateway");
        let debug = format!("{gateway:?}");
        assert!(!debug.contains(API_KEY), "{debug}");
        assert!(debug.contains("https://api.stripe.com"), "{debug}");
        assert_eq!(gateway.name(), "stripe");
    }

    /// Collects everything the `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

    impl io::Write for CapturedLogs {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn logs_never_contain_the_key_or_the_token() {
        // tracing caches each callsite's interest globally and, while a single dispatcher exists,
        // decides it with the default of whichever thread reaches the callsite first: another
        // test's thread, without a subscriber, could switch these callsites off for good. With a
        // second live dispatcher, tracing asks every dispatcher and checks each event again.
        let _second_dispatcher =
            tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let declined = error_body("card_error", Some("card_declined"), None, "declined");

        for (status, body) in [
            (StatusCode::OK, charge_body("ch_123")),
            (StatusCode::PAYMENT_REQUIRED, declined),
            (StatusCode::UNAUTHORIZED, json!({})),
            (StatusCode::INTERNAL_SERVER_ERROR, json!({})),
        ] {
            let _ = outcome_for(status, body).await;
        }

        let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            logs.contains("order-1-attempt-1"),
            "the charges were logged:\n{logs}"
        );
        assert!(!logs.contains(API_KEY), "{logs}");
        assert!(!logs.contains("tok_visa"), "{logs}");
    }
}
