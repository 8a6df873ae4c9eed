//! Reading what the server kept once the load stops: every acknowledged order as its owner
//! sees it, every seeded ticket, and the event log through the admin API; and waiting for an
//! expiry storm to settle.
//!
//! Owns the read-back requests and their retries. It must not judge what it reads (the checker
//! does) and never writes to the server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::{Method, StatusCode};

use super::checker::{FinalState, LoggedEvent, ObservedOrder, ObservedTicket};
use super::client::{Client, Reply};
use super::history::{Operation, OperationKind};
use super::scenario::SeededUser;
use crate::domain::Timestamp;

/// Reads at once while observing.
const READS_AT_ONCE: usize = 32;
/// Tries per read before the run is declared incomplete.
const READ_TRIES: u32 = 5;
/// Events per page of the event log (the API's maximum).
const EVENT_PAGE: usize = 1000;

/// Sends a read, retrying transport errors and 5xx a few times.
async fn read(client: &Client, path: &str, bearer: Option<&str>) -> anyhow::Result<Reply> {
    let mut last = String::new();
    for attempt in 0..READ_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match client.send(Method::GET, path, bearer, None).await {
            Ok(reply) if reply.status.is_server_error() => {
                last = format!("{} {}", reply.status, reply.body)
            }
            Ok(reply) => return Ok(reply),
            Err(error) => last = error.message,
        }
    }
    bail!("reading {path}: {last}")
}

/// Orders acknowledged with `201`, with the user who placed each.
pub fn acknowledged_orders(history: &[Operation]) -> Vec<(String, usize)> {
    history
        .iter()
        .filter(|op| op.kind == OperationKind::Order && op.answered(201))
        .filter_map(|op| Some((op.order_id.clone()?, op.user?)))
        .collect()
}

/// Reads every acknowledged order as its owner, every ticket, and (with the admin token) the
/// event log.
pub async fn final_state(
    client: &Client,
    history: &[Operation],
    users: &[SeededUser],
    tickets: &[String],
    admin_token: Option<&str>,
) -> anyhow::Result<FinalState> {
    let orders: Vec<anyhow::Result<(String, Option<ObservedOrder>)>> =
        futures::stream::iter(acknowledged_orders(history))
            .map(|(order, user)| async move {
                let reply = read(
                    client,
                    &format!("/api/orders/{order}"),
                    Some(&users[user].token),
                )
                .await?;
                let observed = match reply.status {
                    StatusCode::OK => Some(ObservedOrder {
                        status: reply.body["status"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        ticket_id: reply.body["ticket"]["id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        expires_at_millis: reply.body["expiresAt"]
                            .as_str()
                            .and_then(Timestamp::parse_iso8601)
                            .map_or(i64::MAX, Timestamp::millis),
                    }),
                    StatusCode::NOT_FOUND => None,
                    other => bail!("reading order {order}: {other} {}", reply.body),
                };
                Ok((order, observed))
            })
            .buffer_unordered(READS_AT_ONCE)
            .collect()
            .await;
    let observed_tickets: Vec<anyhow::Result<(String, Option<ObservedTicket>)>> =
        futures::stream::iter(tickets.iter().cloned())
            .map(|ticket| async move {
                let reply = read(client, &format!("/api/tickets/{ticket}"), None).await?;
                let observed = match reply.status {
                    StatusCode::OK => Some(ObservedTicket {
                        order_id: reply.body["orderId"].as_str().map(str::to_string),
                        version: reply.body["version"].as_u64().unwrap_or_default(),
                    }),
                    StatusCode::NOT_FOUND => None,
                    other => bail!("reading ticket {ticket}: {other} {}", reply.body),
                };
                Ok((ticket, observed))
            })
            .buffer_unordered(READS_AT_ONCE)
            .collect()
            .await;
    let events = match admin_token {
        Some(token) => Some(read_events(client, token, 0).await?),
        None => None,
    };
    Ok(FinalState {
        orders: orders
            .into_iter()
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?,
        tickets: observed_tickets
            .into_iter()
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?,
        events,
        observed_at_millis: crate::clock::now().millis(),
    })
}

/// Reads the event log after sequence number `after`, every page.
pub async fn read_events(
    client: &Client,
    admin_token: &str,
    after: u64,
) -> anyhow::Result<Vec<LoggedEvent>> {
    let mut events = Vec::new();
    let mut after = after;
    loop {
        let reply = read(
            client,
            &format!("/admin/api/events?after={after}&limit={EVENT_PAGE}"),
            Some(admin_token),
        )
        .await?;
        if reply.status != StatusCode::OK {
            bail!(
                "reading the event log: {} (is the admin token right?)",
                reply.status
            );
        }
        let page = reply.body["events"]
            .as_array()
            .context("the event log answered without `events`")?;
        for event in page {
            events.push(LoggedEvent {
                seq: event["seq"].as_u64().unwrap_or_default(),
                id: event["id"].as_str().unwrap_or_default().to_string(),
                name: event["name"].as_str().unwrap_or_default().to_string(),
                at_millis: event["at"]
                    .as_str()
                    .and_then(Timestamp::parse_iso8601)
                    .map_or(0, Timestamp::millis),
                data: event["data"].clone(),
            });
        }
        match reply.body["next"].as_u64() {
            Some(next) => after = next,
            None => return Ok(events),
        }
    }
}

/// How an expiry storm settled.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirySettlement {
    /// Orders acknowledged and left unpaid.
    pub orders: usize,
    /// Of those, cancelled by expiry before the wait ended.
    pub cancelled: usize,
    /// The earliest deadline (milliseconds since the epoch).
    pub first_deadline_millis: i64,
    /// The latest deadline (milliseconds since the epoch).
    pub last_deadline_millis: i64,
    /// When the last of them was cancelled (event time).
    pub last_cancelled_millis: Option<i64>,
    /// Per order, event time of its cancellation minus its deadline (summarised in the report).
    #[serde(skip)]
    pub lags_millis: Vec<i64>,
}

/// Waits until every order in `orders` is cancelled in the event log, or until `limit` after the
/// last deadline, polling the log as it grows.
pub async fn wait_for_expiries(
    client: &Client,
    admin_token: &str,
    orders: &[String],
    limit: Duration,
) -> anyhow::Result<ExpirySettlement> {
    let wanted: HashSet<&str> = orders.iter().map(String::as_str).collect();
    let mut deadlines: HashMap<String, i64> = HashMap::new();
    let mut cancelled: HashMap<String, i64> = HashMap::new();
    let mut after = 0;
    let mut gave_up_at: Option<Instant> = None;
    loop {
        let page = read_events(client, admin_token, after).await?;
        after = page.last().map_or(after, |event| event.seq);
        for event in &page {
            let Some(order) = event.data["id"].as_str().filter(|id| wanted.contains(id)) else {
                continue;
            };
            match event.name.as_str() {
                "order.created" => {
                    if let Some(deadline) = event.data["expiresAt"]
                        .as_str()
                        .and_then(Timestamp::parse_iso8601)
                    {
                        deadlines.insert(order.to_string(), deadline.millis());
                    }
                }
                "order.cancelled" => {
                    cancelled
                        .entry(order.to_string())
                        .or_insert(event.at_millis);
                }
                _ => {}
            }
        }
        if cancelled.len() >= wanted.len() {
            break;
        }
        let last_deadline = deadlines.values().copied().max().unwrap_or(0);
        let now = crate::clock::now().millis();
        if now > last_deadline {
            let limit_reached = gave_up_at.get_or_insert_with(|| Instant::now() + limit);
            if Instant::now() >= *limit_reached {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut lags: Vec<i64> = cancelled
        .iter()
        .filter_map(|(order, at)| Some(at - deadlines.get(order)?))
        .collect();
    lags.sort_unstable();
    Ok(ExpirySettlement {
        orders: wanted.len(),
        cancelled: cancelled.len(),
        first_deadline_millis: deadlines.values().copied().min().unwrap_or(0),
        last_deadline_millis: deadlines.values().copied().max().unwrap_or(0),
        last_cancelled_millis: cancelled.values().copied().max(),
        lags_millis: lags,
    })
}
