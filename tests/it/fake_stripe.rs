//! A fake Stripe Charges API for the behavioural suite.
//!
//! Owns a small HTTP server on a free loopback port that checks every request a `boxoffice`
//! process sends to `POST /v1/charges` against the charges a test expects, in order, answers as
//! Stripe would (including idempotent replays), and records everything for `verify`. It must not
//! reach the real Stripe, and it never passes a request it did not expect: those answer 500 and
//! make `verify` panic.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{FromRequest, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

/// A running fake Stripe; the server stops when this is dropped.
pub struct FakeStripe {
    /// `http://127.0.0.1:PORT`, to pass as `--stripe-api-base`.
    pub base_url: String,
    state: Arc<Mutex<FakeState>>,
    server: tokio::task::JoinHandle<()>,
}

/// One charge a test expects the application to make.
#[derive(Clone, Debug)]
pub struct ExpectedCharge {
    /// The `amount` form field, in cents.
    pub amount_cents: u64,
    /// The `source` form field: the card token the client paid with.
    pub source: String,
    /// The exact `Idempotency-Key` header; `None` accepts any non-empty key.
    pub idempotency_key: Option<String>,
    /// How the fake answers the charge.
    pub outcome: FakeOutcome,
}

/// How the fake answers an expected charge.
#[derive(Clone, Debug)]
pub enum FakeOutcome {
    /// 200 with a charge `ch_fake_<n>`.
    Succeed,
    /// 402 `card_error` / `card_declined` with this message.
    Decline(String),
    /// The charge is made at once (a replay of its key answers success), but the first answer
    /// is held back this long: the caller may die while it waits.
    SucceedSlowly(std::time::Duration),
}

/// One request the fake received, whatever it was.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The `amount` form field, when it was a whole number.
    pub amount_cents: Option<u64>,
    pub currency: Option<String>,
    pub source: Option<String>,
    /// The status the fake answered with.
    pub status: u16,
    /// Whether the answer was the replay of an earlier one with the same idempotency key (no
    /// expectation consumed, no new charge).
    pub is_replay: bool,
    /// What was wrong with the request; empty when it was as expected.
    pub failures: Vec<String>,
}

impl FakeStripe {
    /// Starts a fake that accepts `Authorization: Bearer <api_key>` and expects no charge yet.
    pub async fn start(api_key: &str) -> FakeStripe {
        let state = Arc::new(Mutex::new(FakeState {
            api_key: api_key.to_string(),
            expected: VecDeque::new(),
            calls: Vec::new(),
            answered: HashMap::new(),
            charges_made: 0,
        }));
        let router = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake stripe");
        let address = listener.local_addr().expect("fake stripe address");
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("fake stripe serves");
        });
        FakeStripe {
            base_url: format!("http://{address}"),
            state,
            server,
        }
    }

    /// Queues one expected charge; charges are expected in the order they are queued.
    pub fn expect_charge(&self, expected: ExpectedCharge) {
        self.lock().expected.push_back(expected);
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// Panics when an expected charge never came, or a request was unexpected or wrong.
    #[track_caller]
    pub fn verify(&self) {
        let state = self.lock();
        let mut problems: Vec<String> = state
            .calls
            .iter()
            .enumerate()
            .filter(|(_, call)| !call.failures.is_empty())
            .map(|(index, call)| format!("call {index} failed: {}", call.failures.join("; ")))
            .collect();
        problems.extend(state.expected.iter().map(|expected| {
            format!(
                "expected charge never made: {} cents with {:?} (key {:?})",
                expected.amount_cents, expected.source, expected.idempotency_key
            )
        }));
        if !problems.is_empty() {
            let calls: Vec<String> = state.calls.iter().map(RecordedCall::to_string).collect();
            panic!(
                "fake stripe:\n  {}\nrequests received:\n  {}",
                problems.join("\n  "),
                calls.join("\n  ")
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl fmt::Display for RecordedCall {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {} key={:?} amount={:?} currency={:?} source={:?} -> {}{}",
            self.method,
            self.path,
            self.idempotency_key,
            self.amount_cents,
            self.currency,
            self.source,
            self.status,
            if self.is_replay { " (replay)" } else { "" }
        )?;
        if !self.failures.is_empty() {
            write!(formatter, " FAILED: {}", self.failures.join("; "))?;
        }
        Ok(())
    }
}

struct FakeState {
    api_key: String,
    expected: VecDeque<ExpectedCharge>,
    calls: Vec<RecordedCall>,
    /// Each idempotency key's parameters and answer, for Stripe-style replays.
    answered: HashMap<String, AnsweredCharge>,
    charges_made: u64,
}

struct AnsweredCharge {
    parameters: ChargeParameters,
    status: StatusCode,
    body: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ChargeParameters {
    amount_cents: u64,
    currency: String,
    source: String,
}

/// Checks a request, answers it and records it.
async fn answer(State(state): State<Arc<Mutex<FakeState>>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let header_text = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap_or("<not text>").to_string())
    };
    let idempotency_key = header_text("idempotency-key");
    let authorization = header_text(header::AUTHORIZATION.as_str());
    let content_type = header_text(header::CONTENT_TYPE.as_str());
    let form = Form::<HashMap<String, String>>::from_request(request, &())
        .await
        .map(|Form(form)| form)
        .map_err(|rejection| rejection.body_text());

    let mut failures = Vec::new();
    if method != Method::POST {
        failures.push(format!("method {method}, expected POST"));
    }
    if path != "/v1/charges" {
        failures.push(format!("path {path}, expected /v1/charges"));
    }
    if !content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"))
    {
        failures.push(format!(
            "content type {content_type:?}, expected application/x-www-form-urlencoded"
        ));
    }
    if idempotency_key.as_deref().is_none_or(str::is_empty) {
        failures.push("no Idempotency-Key header".to_string());
    }
    let form = form.unwrap_or_else(|rejection| {
        failures.push(format!("body is not a form: {rejection}"));
        HashMap::new()
    });
    let field = |name: &str| form.get(name).cloned();
    let amount = field("amount");
    let amount_cents = amount
        .as_deref()
        .and_then(|amount| amount.parse::<u64>().ok());
    if amount_cents.is_none() {
        failures.push(format!("amount {amount:?} is not a whole number of cents"));
    }
    let currency = field("currency");
    if currency.as_deref() != Some("usd") {
        failures.push(format!("currency {currency:?}, expected \"usd\""));
    }
    let source = field("source");
    if source.is_none() {
        failures.push("no source".to_string());
    }

    let (status, body, delay) = {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if authorization.as_deref() != Some(format!("Bearer {}", state.api_key).as_str()) {
            failures.push("Authorization is not `Bearer <the api key>`".to_string());
        }
        let mut call = RecordedCall {
            method: method.to_string(),
            path,
            idempotency_key: idempotency_key.clone(),
            amount_cents,
            currency: currency.clone(),
            source: source.clone(),
            status: 0,
            is_replay: false,
            failures,
        };
        let (status, body, delay) = match (idempotency_key, amount_cents, currency, source) {
            (Some(key), Some(amount_cents), Some(currency), Some(source))
                if call.failures.is_empty() =>
            {
                let parameters = ChargeParameters {
                    amount_cents,
                    currency,
                    source,
                };
                state.charge(key, parameters, &mut call)
            }
            _ => {
                let (status, body) = failed(&call.failures);
                (status, body, None)
            }
        };
        call.status = status.as_u16();
        state.calls.push(call);
        (status, body, delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    (status, Json(body)).into_response()
}

impl FakeState {
    /// Answers a well-formed charge: a replay, the next expected charge, or a failure.
    fn charge(
        &mut self,
        key: String,
        parameters: ChargeParameters,
        call: &mut RecordedCall,
    ) -> (StatusCode, Value, Option<std::time::Duration>) {
        if let Some(answered) = self.answered.get(&key) {
            if answered.parameters == parameters {
                call.is_replay = true;
                return (answered.status, answered.body.clone(), None);
            }
            call.failures.push(format!(
                "idempotency key {key:?} reused with other parameters (first {:?})",
                answered.parameters
            ));
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                }}),
                None,
            );
        }

        let Some(expected) = self.expected.pop_front() else {
            call.failures.push("no charge was expected".to_string());
            let (status, body) = failed(&call.failures);
            return (status, body, None);
        };
        if expected.amount_cents != parameters.amount_cents {
            call.failures.push(format!(
                "amount {} cents, expected {}",
                parameters.amount_cents, expected.amount_cents
            ));
        }
        if expected.source != parameters.source {
            call.failures.push(format!(
                "source {:?}, expected {:?}",
                parameters.source, expected.source
            ));
        }
        if let Some(expected_key) = &expected.idempotency_key
            && *expected_key != key
        {
            call.failures.push(format!(
                "idempotency key {key:?}, expected {expected_key:?}"
            ));
        }
        if !call.failures.is_empty() {
            // The expectation stays queued, so `verify` also reports it as never made.
            self.expected.push_front(expected);
            let (status, body) = failed(&call.failures);
            return (status, body, None);
        }

        let delay = match expected.outcome {
            FakeOutcome::SucceedSlowly(delay) => Some(delay),
            FakeOutcome::Succeed | FakeOutcome::Decline(_) => None,
        };
        let (status, body) = match expected.outcome {
            FakeOutcome::Succeed | FakeOutcome::SucceedSlowly(_) => {
                self.charges_made += 1;
                (
                    StatusCode::OK,
                    json!({
                        "id": format!("ch_fake_{}", self.charges_made),
                        "object": "charge",
                        "amount": parameters.amount_cents,
                        "currency": parameters.currency,
                        "status": "succeeded",
                    }),
                )
            }
            FakeOutcome::Decline(message) => (
                StatusCode::PAYMENT_REQUIRED,
                json!({"error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "message": message,
                }}),
            ),
        };
        self.answered.insert(
            key,
            AnsweredCharge {
                parameters,
                status,
                body: body.clone(),
            },
        );
        (status, body, delay)
    }
}

/// The answer to a request the test did not expect: Stripe's own kind of server error.
fn failed(failures: &[String]) -> (StatusCode, Value) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": {"type": "api_error", "message": format!("fake stripe: {}", failures.join("; "))}}),
    )
}
