//! The load tester's HTTP client: one pooled reqwest client, the API calls the scenarios make,
//! and the `503` + `Retry-After` back-off.
//!
//! Owns request building, Bearer authentication and retry accounting. It must not decide what
//! to send next (scenarios) or keep statistics (history and report).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Most `503` answers honoured for one operation before the `503` is its outcome.
const MAX_RETRIES: u32 = 3;
/// The longest `Retry-After` honoured; a longer one ends the retries.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long one request may take before it counts as a transport failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer: status, body (JSON, or `Null`), the session token header, and how many `503`s
/// were retried before it.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The final status.
    pub status: StatusCode,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The `X-Auth-Token` header (sign-up and sign-in).
    pub auth_token: Option<String>,
    /// `503` answers waited out before this one.
    pub retries: u32,
}

/// A request that never got an answer (refused, reset, timed out).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// What failed, with its innermost cause.
    pub message: String,
    /// `503` answers waited out before this one.
    pub retries: u32,
}

/// A client bound to one server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`, no trailing slash) keeping up to
    /// `connections` idle connections.
    pub fn new(base: &str, connections: usize) -> anyhow::Result<Client> {
        // reqwest is built without a default TLS provider; load tests speak plain HTTP, but the
        // builder insists on one being installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request, honouring `503` + `Retry-After` up to a bound.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, TransportError> {
        let mut retries = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|error| TransportError {
                message: describe(&error),
                retries,
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let auth_token = response
                .headers()
                .get("x-auth-token")
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            let bytes = response.bytes().await.map_err(|error| TransportError {
                message: describe(&error),
                retries,
            })?;
            if status == StatusCode::SERVICE_UNAVAILABLE
                && retries < MAX_RETRIES
                && let Some(wait) = retry_after.filter(|wait| *wait <= LONGEST_RETRY_AFTER)
            {
                retries += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Reply {
                status,
                body,
                auth_token,
                retries,
            });
        }
    }

    /// `GET path` without a session.
    pub async fn get(&self, path: &str) -> Result<Reply, TransportError> {
        self.send(Method::GET, path, None, None).await
    }
}

/// A short description of a transport error, with its cause.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    // The innermost cause says the most ("Connection refused").
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("{kind}: {cause}")
}
