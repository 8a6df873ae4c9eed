//! `/api/tickets`: create, list (paged), show and update tickets.
//!
//! Owns the tickets routes and the ticket's JSON shape. Writes and single reads go to the
//! ticket's actor; the list is read straight from the store (reads need no serialisation).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::store_error;
use super::error::ApiError;
use super::extract::{Context, JsonBody, Query, SignedIn, parse_path_id};
use crate::domain::{FieldError, Price, Ticket, TicketId, Title, ValidationErrors};

/// The largest (and default) page of `GET /api/tickets`.
pub const MAX_PAGE: usize = 1000;

/// The routes of the tickets role.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tickets", get(list).post(create))
        .route("/api/tickets/{id}", get(show).put(update))
}

/// A ticket as the API shows it.
pub fn ticket_json(ticket: &Ticket) -> Value {
    let mut body = json!({
        "id": ticket.id,
        "title": ticket.title.as_str(),
        "price": ticket.price.as_json(),
        "userId": ticket.owner,
        "version": ticket.version,
    });
    if let Some(order_id) = ticket.order_id() {
        body["orderId"] = json!(order_id);
    }
    body
}

fn title_and_price(body: &JsonBody) -> Result<(Title, Price), ApiError> {
    let mut errors = ValidationErrors::default();
    let title = errors
        .check(body.string("title", "Title"))
        .and_then(|title| errors.check(Title::parse(title.unwrap_or_default())));
    let price = errors.check(Price::parse_json(body.value("price")));
    errors.into_result()?;
    match (title, price) {
        (Some(title), Some(price)) => Ok((title, price)),
        _ => Err(ApiError::internal("validation passed without values")),
    }
}

#[tracing::instrument(skip_all, fields(user_id = %user.user_id))]
async fn create(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Context(context): Context,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let (title, price) = title_and_price(&body)?;
    let ticket = state
        .runtime
        .create_ticket(user.user_id, title, price, context)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(ticket_json(&ticket))).into_response())
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = match query.limit.as_deref() {
        None => MAX_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
            _ => {
                return Err(ApiError::field(FieldError::new(
                    "limit",
                    format!("Limit must be a whole number from 1 to {MAX_PAGE}"),
                )));
            }
        },
    };
    let after =
        match query.after.as_deref() {
            None | Some("") => None,
            Some(text) => Some(TicketId::parse(text).map_err(|_| {
                ApiError::field(FieldError::new("after", "After must be a ticket id"))
            })?),
        };
    let mut tickets = state
        .store
        .list_available_tickets(after, limit + 1)
        .await
        .map_err(store_error)?;
    let has_more = tickets.len() > limit;
    tickets.truncate(limit);
    let body: Vec<Value> = tickets.iter().map(ticket_json).collect();
    let mut response = axum::Json(body).into_response();
    if has_more && let Some(last) = tickets.last() {
        let link = format!(
            "</api/tickets?limit={limit}&after={}>; rel=\"next\"",
            last.id
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_path_id(&id, TicketId::parse)?;
    let ticket = state.runtime.get_ticket(id).await?;
    Ok(axum::Json(ticket_json(&ticket)).into_response())
}

#[tracing::instrument(skip_all, fields(user_id = %user.user_id, ticket_id = %id))]
async fn update(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Context(context): Context,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let id = parse_path_id(&id, TicketId::parse)?;
    let (title, price) = title_and_price(&body)?;
    let ticket = state
        .runtime
        .update_ticket(id, user.user_id, title, price, context)
        .await?;
    Ok(axum::Json(ticket_json(&ticket)).into_response())
}
