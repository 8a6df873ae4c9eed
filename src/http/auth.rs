//! `/api/users`: sign up, sign in, sign out, current user.
//!
//! Owns the auth routes and password hashing. Argon2id runs on the blocking pool behind a
//! semaphore sized to the cores, so a sign-in storm queues for hashing instead of starving the
//! async runtime. It must not keep sessions: tokens are self-contained.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Semaphore;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, MaybeUser};
use super::session::CLEARED_COOKIE;
use crate::domain::{Email, Password, User, UserId, ValidationErrors};
use crate::metrics::Metrics;
use crate::store::StoreError;

/// The routes of the auth role.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users/signup", post(signup))
        .route("/api/users/signin", post(signin))
        .route("/api/users/signout", post(signout))
        .route("/api/users/currentuser", get(current_user))
}

/// Hashes and verifies passwords off the async runtime, a bounded number at a time.
pub struct PasswordHashing {
    slots: Semaphore,
    /// A real hash to verify against when the email is unknown, so both paths take as long.
    decoy: String,
    metrics: Arc<Metrics>,
}

impl PasswordHashing {
    /// `slots` concurrent hashes at most.
    pub fn new(
        slots: usize,
        metrics: Arc<Metrics>,
    ) -> Result<PasswordHashing, argon2::password_hash::Error> {
        let decoy = Argon2::default()
            .hash_password(b"decoy password")?
            .to_string();
        Ok(PasswordHashing {
            slots: Semaphore::new(slots.max(1)),
            decoy,
            metrics,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.metrics.password_hashes_waiting.inc();
        let permit = self.slots.acquire().await;
        self.metrics.password_hashes_waiting.dec();
        let _permit = permit.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ApiError::internal)
    }

    /// An Argon2id PHC string for `password`.
    pub async fn hash(&self, password: Password) -> Result<String, ApiError> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.expose().as_bytes())
                .map(|hash| hash.to_string())
        })
        .await?
        .map_err(ApiError::internal)
    }

    /// True when `password` matches `hash` (or, with no hash, after the same work: false).
    pub async fn verify(&self, password: Password, hash: Option<String>) -> Result<bool, ApiError> {
        let is_real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.clone());
        let matches = self
            .run(move || {
                PasswordHash::new(&hash)
                    .map(|parsed| {
                        Argon2::default()
                            .verify_password(password.expose().as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await?;
        Ok(is_real && matches)
    }
}

fn credentials(body: &JsonBody, signing_in: bool) -> Result<(Email, Password), ApiError> {
    let mut errors = ValidationErrors::default();
    let email = errors
        .check(body.string("email", "Email"))
        .map(|email| email.unwrap_or_default())
        .and_then(|email| errors.check(Email::parse(email)));
    let password = errors
        .check(body.string("password", "Password"))
        .map(|password| password.unwrap_or_default())
        .and_then(|password| {
            errors.check(if signing_in {
                Password::parse_for_signin(password)
            } else {
                Password::parse(password)
            })
        });
    errors.into_result()?;
    match (email, password) {
        (Some(email), Some(password)) => Ok((email, password)),
        _ => Err(ApiError::internal("validation passed without values")),
    }
}

/// The response of a successful signup or signin: the user, the cookie and `X-Auth-Token`.
fn signed_in(state: &AppState, status: StatusCode, user: &User) -> Result<Response, ApiError> {
    let token = state
        .sessions
        .issue(user.id, &user.email, crate::clock::now())
        .map_err(ApiError::internal)?;
    let mut response = (
        status,
        axum::Json(json!({"id": user.id, "email": user.email})),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&state.sessions.cookie(&token)).map_err(ApiError::internal)?,
    );
    headers.insert(
        "x-auth-token",
        HeaderValue::from_str(&token).map_err(ApiError::internal)?,
    );
    Ok(response)
}

#[tracing::instrument(skip_all)]
async fn signup(State(state): State<AppState>, body: JsonBody) -> Result<Response, ApiError> {
    let (email, password) = credentials(&body, false)?;
    if state
        .store
        .find_user_by_email(&email)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(ApiError::bad_request("Email in use"));
    }
    let password_hash = state.hashing.hash(password).await?;
    let user = User {
        id: UserId(state.runtime.ids.next()),
        email,
        password_hash,
    };
    match state.store.insert_user(&user).await {
        Ok(()) => signed_in(&state, StatusCode::CREATED, &user),
        Err(StoreError::EmailTaken) => Err(ApiError::bad_request("Email in use")),
        Err(error) => Err(store_error(error)),
    }
}

#[tracing::instrument(skip_all)]
async fn signin(State(state): State<AppState>, body: JsonBody) -> Result<Response, ApiError> {
    let (email, password) = credentials(&body, true)?;
    let user = state
        .store
        .find_user_by_email(&email)
        .await
        .map_err(store_error)?;
    let hash = user.as_ref().map(|user| user.password_hash.clone());
    // An unknown email is verified against a decoy hash: the same work as a wrong password, so
    // response times do not reveal which emails exist.
    let matches = state.hashing.verify(password, hash).await?;
    match user {
        Some(user) if matches => signed_in(&state, StatusCode::OK, &user),
        _ => Err(ApiError::bad_request("Invalid credentials")),
    }
}

async fn signout() -> Response {
    let mut response = (StatusCode::OK, axum::Json(json!({}))).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static(CLEARED_COOKIE));
    response
}

async fn current_user(MaybeUser(session): MaybeUser) -> Response {
    let current = session.map(|session| {
        json!({"id": session.claims.id, "email": session.claims.email, "iat": session.claims.iat})
    });
    axum::Json(json!({ "currentUser": current })).into_response()
}

/// Maps a store failure of a direct (non-actor) read or write.
pub fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(_) | StoreError::InUse(_) => {
            tracing::warn!(error = %error, "store unavailable");
            ApiError::unavailable(std::time::Duration::from_secs(1))
        }
        other => ApiError::internal(other),
    }
}
