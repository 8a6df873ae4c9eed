//! Scenarios: what each arrival does (flash sale, steady mix, expiry storm, ticket reads, the
//! minimal-endpoint baseline), the users and tickets seeded before the run, and timing one
//! request into the history.
//!
//! Owns the traffic mix and the follow-ups it implies (a flash-sale winner pays at once; a
//! steady buyer pays or cancels an order it placed earlier). It must not pace arrivals (the
//! schedule does) nor judge outcomes (the checker does).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::{Client, Reply};
use super::history::{Operation, OperationKind, Recorder};
use crate::config::ScenarioName;

/// The payment token the sandbox gateway accepts (Stripe's test Visa).
pub const PAYMENT_TOKEN: &str = "tok_visa";
/// The password of every seeded user.
const PASSWORD: &str = "loadtest-password";
/// Sign-ups at once while seeding (the server hashes with Argon2 on a pool of one slot per core).
const SIGNUPS_AT_ONCE: usize = 8;
/// Ticket creations at once while seeding.
const CREATIONS_AT_ONCE: usize = 64;

/// One request and what it is about, for the history.
#[derive(Clone, Debug)]
pub struct Request {
    /// What the request does, for the history.
    pub kind: OperationKind,
    /// The HTTP method.
    pub method: Method,
    /// Path and query, after the base URL.
    pub path: String,
    /// The session token sent as `Authorization: Bearer`.
    pub bearer: Option<String>,
    /// The JSON body.
    pub body: Option<Value>,
    /// Index of the user asking.
    pub user: Option<usize>,
    /// The ticket concerned.
    pub ticket_id: Option<String>,
    /// The order concerned.
    pub order_id: Option<String>,
}

impl Request {
    /// An anonymous `GET`.
    pub fn get(kind: OperationKind, path: &str) -> Request {
        Request {
            kind,
            method: Method::GET,
            path: path.to_string(),
            bearer: None,
            body: None,
            user: None,
            ticket_id: None,
            order_id: None,
        }
    }
}

/// Sends `request`, records it with its intended start, and returns the reply (if any).
pub async fn perform(
    client: &Client,
    recorder: &Recorder,
    request: Request,
    intended: Instant,
    step: usize,
) -> Option<Reply> {
    let id = recorder.next_id();
    let invoked = Instant::now();
    let result = client
        .send(
            request.method.clone(),
            &request.path,
            request.bearer.as_deref(),
            request.body.as_ref(),
        )
        .await;
    let completed = Instant::now();
    let mut operation = Operation {
        id,
        kind: request.kind,
        step,
        user: request.user,
        ticket_id: request.ticket_id,
        order_id: request.order_id,
        intended_micros: recorder.micros(intended),
        invoked_micros: recorder.micros(invoked),
        completed_micros: recorder.micros(completed),
        status: None,
        error: None,
        retries: 0,
    };
    match result {
        Ok(reply) => {
            operation.status = Some(reply.status.as_u16());
            operation.retries = reply.retries;
            if request.kind == OperationKind::Order && reply.status == StatusCode::CREATED {
                operation.order_id = reply.body["id"].as_str().map(str::to_string);
            }
            recorder.record(operation);
            Some(reply)
        }
        Err(error) => {
            operation.error = Some(error.message);
            operation.retries = error.retries;
            recorder.record(operation);
            None
        }
    }
}

/// A signed-up buyer.
#[derive(Clone, Debug)]
pub struct SeededUser {
    /// The user's id.
    pub id: String,
    /// The session token from `X-Auth-Token`.
    pub token: String,
}

/// Everything arrivals share: the client, the history, the seeded users and tickets, and the
/// steady scenario's unpaid orders.
pub struct World {
    /// What each arrival does.
    pub scenario: ScenarioName,
    /// The pooled HTTP client.
    pub client: Client,
    /// The history.
    pub recorder: Arc<Recorder>,
    /// Buyers, signed up before the run.
    pub users: Vec<SeededUser>,
    /// Ids of the tickets on sale before the run.
    pub tickets: Vec<String>,
    /// Share of winners and steady orders that pay.
    pub pay_ratio: f64,
    /// Orders placed in the steady scenario and not yet paid or cancelled: (user, order).
    unpaid: Mutex<Vec<(usize, String)>>,
}

impl World {
    /// A world for `scenario` over seeded users and tickets.
    pub fn new(
        scenario: ScenarioName,
        client: Client,
        recorder: Arc<Recorder>,
        users: Vec<SeededUser>,
        tickets: Vec<String>,
        pay_ratio: f64,
    ) -> World {
        World {
            scenario,
            client,
            recorder,
            users,
            tickets,
            pay_ratio,
            unpaid: Mutex::new(Vec::new()),
        }
    }

    async fn perform(&self, request: Request, intended: Instant, step: usize) -> Option<Reply> {
        perform(&self.client, &self.recorder, request, intended, step).await
    }

    fn random_ticket(&self) -> &str {
        &self.tickets[rand::random_range(0..self.tickets.len())]
    }

    fn browse(&self, ticket: &str) -> Request {
        let mut request = Request::get(OperationKind::Browse, &format!("/api/tickets/{ticket}"));
        request.ticket_id = Some(ticket.to_string());
        request
    }

    fn order(&self, user: usize, ticket: &str) -> Request {
        Request {
            kind: OperationKind::Order,
            method: Method::POST,
            path: "/api/orders".into(),
            bearer: Some(self.users[user].token.clone()),
            body: Some(json!({ "ticketId": ticket })),
            user: Some(user),
            ticket_id: Some(ticket.to_string()),
            order_id: None,
        }
    }

    fn pay(&self, user: usize, order: &str) -> Request {
        Request {
            kind: OperationKind::Pay,
            method: Method::POST,
            path: "/api/payments".into(),
            bearer: Some(self.users[user].token.clone()),
            body: Some(json!({ "orderId": order, "token": PAYMENT_TOKEN })),
            user: Some(user),
            ticket_id: None,
            order_id: Some(order.to_string()),
        }
    }

    fn cancel(&self, user: usize, order: &str) -> Request {
        Request {
            kind: OperationKind::Cancel,
            method: Method::DELETE,
            path: format!("/api/orders/{order}"),
            bearer: Some(self.users[user].token.clone()),
            body: None,
            user: Some(user),
            ticket_id: None,
            order_id: Some(order.to_string()),
        }
    }

    fn take_unpaid(&self) -> Option<(usize, String)> {
        let mut unpaid = self
            .unpaid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if unpaid.is_empty() {
            return None;
        }
        let index = rand::random_range(0..unpaid.len());
        Some(unpaid.swap_remove(index))
    }

    /// Arrival `index` of `step`, meant to start at `intended`.
    pub async fn arrive(self: Arc<Self>, index: u64, intended: Instant, step: usize) {
        let user = usize::try_from(index).unwrap_or(0) % self.users.len().max(1);
        match self.scenario {
            ScenarioName::Baseline => {
                self.perform(Request::get(OperationKind::Baseline, "/"), intended, step)
                    .await;
            }
            ScenarioName::Browse => {
                let request = self.browse(self.random_ticket());
                self.perform(request, intended, step).await;
            }
            ScenarioName::FlashSale => {
                let request = self.order(user, self.random_ticket());
                let reply = self.perform(request, intended, step).await;
                if let Some(order) = created_order(reply.as_ref())
                    && rand::random_bool(self.pay_ratio)
                {
                    // The winner pays at once: a follow-up, timed from when it is sent.
                    let request = self.pay(user, &order);
                    self.perform(request, Instant::now(), step).await;
                }
            }
            ScenarioName::Steady => self.steady(user, intended, step).await,
            ScenarioName::ExpiryStorm => {
                let ticket =
                    self.tickets[usize::try_from(index).unwrap_or(0) % self.tickets.len()].clone();
                let request = self.order(user, &ticket);
                self.perform(request, intended, step).await;
            }
        }
    }

    /// The steady mix: 60 % browse, 20 % order, 15 % pay an earlier order (with the pay ratio;
    /// else it stays unpaid until it expires), 5 % cancel one.
    async fn steady(&self, user: usize, intended: Instant, step: usize) {
        let dice: u32 = rand::random_range(0..100);
        let request = match dice {
            0..60 => self.browse(self.random_ticket()),
            60..95 => match (dice >= 80).then(|| self.take_unpaid()).flatten() {
                Some((owner, order)) if rand::random_bool(self.pay_ratio) => {
                    self.pay(owner, &order)
                }
                Some((owner, order)) => self.cancel(owner, &order),
                None => self.order(user, self.random_ticket()),
            },
            _ => match self.take_unpaid() {
                Some((owner, order)) => self.cancel(owner, &order),
                None => self.browse(self.random_ticket()),
            },
        };
        let kind = request.kind;
        let reply = self.perform(request, intended, step).await;
        if kind == OperationKind::Order
            && let Some(order) = created_order(reply.as_ref())
        {
            self.unpaid
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((user, order));
        }
    }
}

/// The id of the order a `201` reply created.
fn created_order(reply: Option<&Reply>) -> Option<String> {
    reply
        .filter(|reply| reply.status == StatusCode::CREATED)
        .and_then(|reply| reply.body["id"].as_str())
        .map(str::to_string)
}

/// Signs up `count` users with emails unique to this run.
pub async fn seed_users(
    client: &Client,
    count: usize,
    run_id: &str,
) -> anyhow::Result<Vec<SeededUser>> {
    let results: Vec<anyhow::Result<SeededUser>> = futures::stream::iter(0..count)
        .map(|index| async move {
            let email = format!("loadtest-{run_id}-{index}@example.com");
            let reply = client
                .send(
                    Method::POST,
                    "/api/users/signup",
                    None,
                    Some(&json!({ "email": email, "password": PASSWORD })),
                )
                .await
                .with_context(|| format!("signing up {email}"))?;
            if reply.status != StatusCode::CREATED {
                bail!("signing up {email}: {} {}", reply.status, reply.body);
            }
            let token = reply
                .auth_token
                .context("signup answered without an X-Auth-Token header")?;
            let id = reply.body["id"]
                .as_str()
                .context("signup answered without an id")?
                .to_string();
            Ok(SeededUser { id, token })
        })
        .buffered(SIGNUPS_AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Puts `count` tickets on sale as `seller` and returns their ids.
pub async fn seed_tickets(
    client: &Client,
    seller: &SeededUser,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let results: Vec<anyhow::Result<String>> = futures::stream::iter(0..count)
        .map(|index| async move {
            let reply = client
                .send(
                    Method::POST,
                    "/api/tickets",
                    Some(&seller.token),
                    Some(&json!({ "title": format!("Load test seat {index}"), "price": "12.50" })),
                )
                .await
                .context("creating a ticket")?;
            if reply.status != StatusCode::CREATED {
                bail!("creating a ticket: {} {}", reply.status, reply.body);
            }
            Ok(reply.body["id"]
                .as_str()
                .context("ticket created without an id")?
                .to_string())
        })
        .buffer_unordered(CREATIONS_AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect()
}
