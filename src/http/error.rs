//! The one HTTP error type: every failure becomes the contract's body
//! `{"errors": [{"message", "field"?}]}` with the status its `ErrorKind` picks.
//!
//! Owns the mapping to HTTP. Internal causes are logged here and never returned.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::actors::ActorError;
use crate::domain::{FieldError, ValidationErrors};
use crate::error::ErrorKind;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<(String, Option<&'static str>)>,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with one message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            errors: vec![(message.into(), None)],
            retry_after: None,
        }
    }

    /// 400 with one entry per invalid field.
    pub fn validation(errors: ValidationErrors) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            errors: errors
                .0
                .into_iter()
                .map(|error| (error.message, Some(error.field)))
                .collect(),
            retry_after: None,
        }
    }

    /// 400 naming one field.
    pub fn field(error: FieldError) -> ApiError {
        ApiError::validation(error.into())
    }

    /// 400 for a refused rule (`Email in use`, ...).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 `Not authorized`.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Not authorized")
    }

    /// 404 `Not Found`.
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Not Found")
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(retry_after: Duration) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
        }
    }

    /// 500 `Something went wrong`; the cause is logged, never returned.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
    }

    /// The error of `kind` with a public `message`.
    pub fn from_kind(kind: ErrorKind, message: String) -> ApiError {
        match kind {
            ErrorKind::BadRequest => ApiError::bad_request(message),
            ErrorKind::Unauthorized => ApiError::unauthorized(),
            ErrorKind::NotFound => ApiError::not_found(),
            ErrorKind::PaymentRequired => ApiError::new(StatusCode::PAYMENT_REQUIRED, message),
            ErrorKind::Unavailable { retry_after } => ApiError::unavailable(retry_after),
            ErrorKind::Internal => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ActorError> for ApiError {
    fn from(error: ActorError) -> Self {
        if matches!(error.kind(), ErrorKind::Internal) {
            tracing::error!(error = %error, "actor request failed");
        }
        ApiError::from_kind(error.kind(), error.public_message())
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::validation(errors)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors: Vec<_> = self
            .errors
            .into_iter()
            .map(|(message, field)| match field {
                Some(field) => json!({"message": message, "field": field}),
                None => json!({"message": message}),
            })
            .collect();
        let mut response = (self.status, axum::Json(json!({ "errors": errors }))).into_response();
        if let Some(retry_after) = self.retry_after {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
