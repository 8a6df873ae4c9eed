//! Extractors that answer in the contract's error format: JSON bodies (415, 413, 400), ids in
//! paths (404 when malformed), the session (401) and the request id.
//!
//! Owns turning raw requests into typed input. Axum's own rejections never reach a client.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;
use super::session::{Session, token_from_cookie_value};
use crate::actors::RequestContext;
use crate::domain::FieldError;

/// The largest body accepted (1 MiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON object body. Unknown fields are kept but handlers read only the fields they know.
pub struct JsonBody(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
                } else {
                    ApiError::bad_request("Request body could not be read")
                }
            })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(fields)) => Ok(JsonBody(fields)),
            Ok(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
            Err(_) => Err(ApiError::bad_request("Request body is not valid JSON")),
        }
    }
}

impl JsonBody {
    /// The string field `name`: `Ok(None)` when absent or null, an error naming the field when it
    /// has another type.
    pub fn string(&self, name: &'static str, label: &str) -> Result<Option<&str>, FieldError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(FieldError::new(name, format!("{label} must be a string"))),
        }
    }

    /// The raw value of field `name`.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

/// The session of the request, if it carries a valid one (Bearer first, then the cookie).
pub struct MaybeUser(pub Option<Session>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let now = crate::clock::now();
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(|token| token.trim().to_string());
        let token = bearer.or_else(|| {
            parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .filter_map(|pair| pair.trim().strip_prefix("session="))
                .find_map(token_from_cookie_value)
        });
        Ok(MaybeUser(
            token.and_then(|token| state.sessions.verify(&token, now)),
        ))
    }
}

/// A signed-in user; 401 `Not authorized` otherwise.
pub struct SignedIn(pub Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match MaybeUser::from_request_parts(parts, state).await?.0 {
            Some(session) => Ok(SignedIn(session)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The request id (`x-request-id`, set by the request-id layer) for transition histories.
pub struct Context(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.chars().take(128).collect());
        Ok(Context(RequestContext { request_id }))
    }
}

/// A query string, rejected in the contract's format (400) when it does not parse.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| Query(query))
            .map_err(|rejection| {
                ApiError::bad_request(format!("Invalid query string: {}", rejection.body_text()))
            })
    }
}

/// Parses a path id; a malformed id is a 404, as for an unknown one.
pub fn parse_path_id<T>(
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, crate::domain::InvalidId>,
) -> Result<T, ApiError> {
    parse(text).map_err(|_| ApiError::not_found())
}
