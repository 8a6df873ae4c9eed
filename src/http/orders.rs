//! `/api/orders`: order a ticket, list and show your orders, cancel one.
//!
//! Owns the orders routes and the order's JSON shape. Writes and single reads go to the order's
//! actor; the caller's list is read from the store.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::auth::store_error;
use super::error::ApiError;
use super::extract::{Context, JsonBody, SignedIn, parse_path_id};
use crate::domain::{FieldError, Order, OrderId, TicketId};

/// The routes of the orders role.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", get(list).post(create))
        .route("/api/orders/{id}", get(show).delete(cancel))
}

/// An order as the API shows it.
pub fn order_json(order: &Order) -> Value {
    json!({
        "id": order.id,
        "userId": order.user_id,
        "status": order.status.as_str(),
        "expiresAt": order.expires_at.to_iso8601(),
        "version": order.version,
        "ticket": {
            "id": order.ticket.id,
            "title": order.ticket.title,
            "price": order.ticket.price.as_json(),
            "version": order.ticket.version,
        },
    })
}

#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn create(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Context(context): Context,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let ticket_id = match body
        .string("ticketId", "TicketId")
        .map_err(ApiError::field)?
    {
        None | Some("") => {
            return Err(ApiError::field(FieldError::new(
                "ticketId",
                "TicketId must be provided",
            )));
        }
        Some(text) => TicketId::parse(text).map_err(|_| {
            ApiError::field(FieldError::new("ticketId", "TicketId must be a valid id"))
        })?,
    };
    let order = state
        .runtime
        .create_order(user.user_id, ticket_id, context)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(order_json(&order))).into_response())
}

async fn list(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
) -> Result<Response, ApiError> {
    let orders = state
        .store
        .list_orders_of_user(user.user_id)
        .await
        .map_err(store_error)?;
    let body: Vec<Value> = orders.iter().map(order_json).collect();
    Ok(axum::Json(body).into_response())
}

async fn show(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_path_id(&id, OrderId::parse)?;
    let order = state.runtime.get_order(id).await?;
    if order.user_id != user.user_id {
        return Err(ApiError::unauthorized());
    }
    Ok(axum::Json(order_json(&order)).into_response())
}

#[tracing::instrument(skip_all, fields(user_id = %user.user_id, order_id = %id))]
async fn cancel(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Context(context): Context,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_path_id(&id, OrderId::parse)?;
    state
        .runtime
        .cancel_order(id, user.user_id, context)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
