//! `/api/payments`: pay an order.
//!
//! Owns the payments route. The order's actor does the work (persist `awaiting:payment`,
//! charge, complete, sell the ticket) so a 201 means the order is complete and its ticket sold.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{Context, JsonBody, SignedIn};
use crate::domain::{FieldError, OrderId, ValidationErrors};

/// The routes of the payments role.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/payments", post(create))
}

#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn create(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Context(context): Context,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut errors = ValidationErrors::default();
    let token = errors
        .check(body.string("token", "Token"))
        .flatten()
        .filter(|t| !t.is_empty());
    if token.is_none() && errors.0.is_empty() {
        errors
            .0
            .push(FieldError::new("token", "Token must be provided"));
    }
    let order_field = errors.check(body.string("orderId", "OrderId"));
    let order_id = match order_field {
        Some(None | Some("")) => {
            errors
                .0
                .push(FieldError::new("orderId", "OrderId must be provided"));
            None
        }
        Some(Some(text)) => errors.check(
            OrderId::parse(text)
                .map_err(|_| FieldError::new("orderId", "OrderId must be a valid id")),
        ),
        None => None,
    };
    errors.into_result()?;
    let (Some(token), Some(order_id)) = (token, order_id) else {
        return Err(ApiError::internal("validation passed without values"));
    };
    let client_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().unwrap_or_default();
            let is_valid =
                (1..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
            if !is_valid {
                return Err(ApiError::bad_request(
                    "Idempotency-Key must be 1 to 200 visible ASCII characters",
                ));
            }
            Some(key.to_string())
        }
    };
    let payment = state
        .runtime
        .pay_order(
            order_id,
            user.user_id,
            token.to_string(),
            client_key,
            context,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "id": payment.id }))).into_response())
}
