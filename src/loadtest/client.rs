//! The load tester's HTTP client: one pooled reqwest client, the API calls the scenarios make,
//! and the `503` + `Retry-After` back-off.
//!
//! Owns request building, Bearer authentication and retry accounting. It must not decide what
//! to send next (scenarios) or keep statistics (history and report).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A client bound to one server, or to every node of a cluster: requests go to the nodes in
/// turn, as a load balancer would send them, and one a node refuses to connect goes to the next
/// (it was never sent, so sending it elsewhere cannot apply it twice).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<[String]>,
    next: Arc<AtomicUsize>,
}

impl Client {
    /// A client for `bases` (e.g. `http://127.0.0.1:8080`, no trailing slash; at least one)
    /// keeping up to `connections` idle connections per server.
    pub fn new(bases: &[String], connections: usize) -> anyhow::Result<Client> {
        anyhow::ensure!(!bases.is_empty(), "no server to send requests to");
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
            bases: bases
                .iter()
                .map(|base| base.trim_end_matches('/').to_string())
                .collect(),
            next: Arc::default(),
        })
    }

    /// The first server's base URL.
    pub fn base(&self) -> &str {
        &self.bases[0]
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
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            let mut attempt = 0;
            let response = loop {
                let base = &self.bases[(first + attempt) % self.bases.len()];
                let mut request = self.http.request(method.clone(), format!("{base}{path}"));
                if let Some(token) = bearer {
                    request = request.bearer_auth(token);
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                match request.send().await {
                    Ok(response) => break response,
                    Err(error) if error.is_connect() && attempt + 1 < self.bases.len() => {
                        attempt += 1;
                    }
                    Err(error) => {
                        return Err(TransportError {
                            message: describe(&error),
                            retries,
                        });
                    }
                }
            };
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

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode as HttpStatus};
    use axum::routing::get;

    use super::*;

    /// A server that answers `503` + `Retry-After: 1` to the first `overloaded` requests, then 200.
    async fn server(overloaded: usize, retry_after: &'static str) -> (String, Arc<AtomicUsize>) {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = Router::new().route(
            "/",
            get(move || {
                let counter = counter.clone();
                async move {
                    let mut headers = HeaderMap::new();
                    if counter.fetch_add(1, Ordering::SeqCst) < overloaded {
                        headers.insert("retry-after", retry_after.parse().unwrap());
                        return (HttpStatus::SERVICE_UNAVAILABLE, headers, "busy");
                    }
                    (HttpStatus::OK, headers, "ok")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), seen)
    }

    #[tokio::test]
    async fn a_503_with_retry_after_is_waited_out_retried_and_counted() {
        let (base, seen) = server(1, "1").await;
        let client = Client::new(&[base], 4).unwrap();
        let reply = client.get("/").await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.retries, 1);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_an_unusable_retry_after_is_the_answer() {
        let (base, seen) = server(usize::MAX, "0").await;
        let client = Client::new(&[base], 4).unwrap();
        let reply = client.get("/").await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.retries, MAX_RETRIES);
        assert_eq!(seen.load(Ordering::SeqCst), MAX_RETRIES as usize + 1);

        let (base, seen) = server(usize::MAX, "3600").await;
        let reply = Client::new(&[base], 4).unwrap().get("/").await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.retries, 0, "a wait beyond the bound is not honoured");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error_naming_the_cause() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = Client::new(&[format!("http://{address}")], 1)
            .unwrap()
            .get("/")
            .await
            .unwrap_err();
        assert!(error.message.starts_with("cannot connect"), "{error}");
        assert_eq!(error.retries, 0);
    }
}
