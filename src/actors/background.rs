//! The runtime's background work: the timer worker, the outbox relay, command completion and
//! redelivery, payment reconciliation and passivation.
//!
//! Owns the loops that keep promises made by earlier commits: every event reaches the bus, every
//! command reaches its actor, every deadline fires, every charge left in flight is settled. Each
//! loop stops when the shutdown token is cancelled. None decides anything: each hands its work
//! to the actor that owns the entity.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{OrderRequest, RequestContext, Runtime, TicketRequest};
use crate::bus::{Bus, BusEvent, event_subject, new_traceparent};
use crate::domain::{ObjectId, OrderId, TicketId};
use crate::store::{DeadlineKind, UnitOfWork};
use crate::timers::TimerKey;

/// Timers claimed at once by the timer worker.
const TIMER_BATCH: usize = 512;
/// Timer deliveries the worker keeps going at once.
const TIMERS_IN_FLIGHT: usize = 2048;
/// Events relayed per round.
const RELAY_BATCH: usize = 512;

/// The background work of a runtime, not yet started.
pub struct BackgroundTasks {
    completed_commands: mpsc::UnboundedReceiver<u64>,
}

impl BackgroundTasks {
    pub(super) fn new(completed_commands: mpsc::UnboundedReceiver<u64>) -> BackgroundTasks {
        BackgroundTasks { completed_commands }
    }

    /// Rebuilds the timer index from the store, then starts every loop on `tracker`.
    pub async fn spawn(
        self,
        runtime: Arc<Runtime>,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), crate::store::StoreError> {
        let reserved = rebuild_timers(&runtime).await?;
        if runtime.config.is_single_node {
            tracker.spawn(reconcile_reservations(runtime.clone(), reserved));
        }
        tracker.spawn(run_timer_worker(runtime.clone(), shutdown.clone()));
        tracker.spawn(run_outbox_relay(runtime.clone(), bus, shutdown.clone()));
        tracker.spawn(run_command_completion(
            runtime.clone(),
            self.completed_commands,
            shutdown.clone(),
        ));
        tracker.spawn(run_command_redelivery(runtime.clone(), shutdown.clone()));
        tracker.spawn(run_payment_reconciliation(
            runtime.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(run_passivation(runtime, shutdown));
        Ok(())
    }
}

/// Arms every deadline the store holds; returns the reserved tickets.
async fn rebuild_timers(runtime: &Runtime) -> Result<Vec<ObjectId>, crate::store::StoreError> {
    let deadlines = runtime.rearm_deadlines(|_, _| true).await?;
    tracing::info!(timers = deadlines.len(), "timers rebuilt from the store");
    Ok(deadlines
        .iter()
        .filter(|deadline| deadline.kind == DeadlineKind::TicketReservation)
        .map(|deadline| deadline.entity)
        .collect())
}

/// A reservation whose order was never saved (the process died between reserving the ticket and
/// saving the order) would otherwise hold its ticket until the deadline. At start no order can
/// be half-created any more, so each reserved ticket checks its order once.
///
/// The check reads the ticket and its order from the store first and asks the ticket's actor
/// only when the domain says the hold must change (the actor then decides again on its own
/// state): almost every reservation belongs to a live order, and activating an actor for each
/// would fill memory with idle actors before the first request.
async fn reconcile_reservations(runtime: Arc<Runtime>, reserved: Vec<ObjectId>) {
    let checks = reserved.into_iter().map(|ticket| {
        let runtime = runtime.clone();
        async move {
            match hold_needs_reconciling(&runtime, TicketId(ticket)).await {
                Ok(false) => return,
                Ok(true) => {}
                // The actor reads for itself.
                Err(error) => {
                    tracing::debug!(ticket = %ticket, error = %error, "reading a reservation failed");
                }
            }
            let context = RequestContext {
                request_id: Some("recovery".into()),
            };
            let result = runtime
                .ask_ticket(TicketId(ticket), TicketRequest::ReconcileHold, context)
                .await;
            if let Err(error) = result {
                // The reservation's own deadline still frees it later.
                tracing::warn!(ticket = %ticket, error = %error, "reconciling a reservation failed");
            }
        }
    });
    futures::stream::iter(checks)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// Whether the stored reservation of `ticket` disagrees with its order's stored status.
async fn hold_needs_reconciling(
    runtime: &Runtime,
    ticket: TicketId,
) -> Result<bool, crate::store::StoreError> {
    let Some(record) = runtime.store.load_ticket(ticket).await? else {
        return Ok(false);
    };
    let Some(holder) = record.state.order_id() else {
        return Ok(false);
    };
    let status = runtime.holder_status(holder).await?;
    Ok(record.state.reconcile_hold(holder, status).is_some())
}

/// Claims due timers and fires them, keeping up to `TIMERS_IN_FLIGHT` deliveries going: a new
/// claim as soon as there is room, not after the slowest of a batch, so an expiry storm keeps
/// the store's group commit full instead of waiting batch by batch.
async fn run_timer_worker(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let mut firing = futures::stream::FuturesUnordered::new();
    loop {
        let room = TIMERS_IN_FLIGHT
            .saturating_sub(firing.len())
            .min(TIMER_BATCH);
        let mut more_due = false;
        if room > 0 {
            let now = crate::clock::now();
            match runtime.timers.claim_due(now, room).await {
                Ok(due) => {
                    more_due = due.len() == room;
                    for (key, due_at) in due {
                        runtime
                            .metrics
                            .timer_lag
                            .observe(now.since(due_at).as_secs_f64());
                        runtime.metrics.timers_fired.inc();
                        let runtime = runtime.clone();
                        firing.push(async move { fire(&runtime, key).await });
                    }
                }
                Err(error) => tracing::warn!(error = %error, "claiming due timers failed"),
            }
            runtime
                .metrics
                .timers_armed
                .set(i64::try_from(runtime.timers.len()).unwrap_or(i64::MAX));
        }
        if more_due && firing.len() < TIMERS_IN_FLIGHT {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(()) = firing.next(), if !firing.is_empty() => {
                // Take every other delivery that has finished too before claiming again.
                while let Some(Some(())) = firing.next().now_or_never() {}
            }
            () = runtime.timers.wait(Duration::from_secs(1)), if !more_due => {}
        }
    }
}

/// Hands a due timer to its actor; if the actor cannot take it now, re-arms it shortly.
async fn fire(runtime: &Runtime, key: TimerKey) {
    let context = RequestContext {
        request_id: Some("timer".into()),
    };
    let result = match key.kind {
        DeadlineKind::OrderExpiry => {
            runtime
                .ask_order(OrderId(key.entity), OrderRequest::Expire, context)
                .await
        }
        DeadlineKind::TicketReservation => {
            runtime
                .ask_ticket(TicketId(key.entity), TicketRequest::ResolveHold, context)
                .await
        }
    };
    match result {
        Ok(_) | Err(super::ActorError::NotFound) => {
            // Delivered (or nothing left to deliver to): release the claim for good.
            if let Err(error) = runtime.timers.complete(key).await {
                // The claim's lease runs out and the timer fires again; `Expire` and
                // `ResolveHold` are idempotent.
                tracing::warn!(entity = %key.entity, error = %error, "completing a timer failed");
            }
        }
        Err(error) => {
            tracing::warn!(entity = %key.entity, error = %error, "timer delivery failed; retrying");
            let retry_at = crate::clock::now().plus(Duration::from_secs(1));
            if let Err(error) = runtime.timers.arm(key, retry_at).await {
                tracing::warn!(entity = %key.entity, error = %error, "re-arming a timer failed");
            }
        }
    }
}

async fn run_outbox_relay(runtime: Arc<Runtime>, bus: Arc<dyn Bus>, shutdown: CancellationToken) {
    let mut published = loop {
        match runtime.store.published_seq().await {
            Ok(seq) => break seq,
            Err(error) => {
                tracing::warn!(error = %error, "reading the relay position failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        let (relayed, full) = match skip_unheard(&runtime, bus.as_ref(), published).await {
            Some(last) => (last, false),
            None => relay_page(&runtime, bus.as_ref(), published).await,
        };
        if relayed > published {
            match runtime.store.set_published_seq(relayed).await {
                Ok(()) => published = relayed,
                Err(error) => tracing::warn!(error = %error, "saving the relay position failed"),
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = runtime.outbox_written.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Publishes the events after `published`, at most a page; returns the last one published and
/// whether the page was full (more may follow).
async fn relay_page(runtime: &Runtime, bus: &dyn Bus, published: u64) -> (u64, bool) {
    let page = match runtime.store.events_after(published, RELAY_BATCH).await {
        Ok(page) => page,
        Err(error) => {
            tracing::warn!(error = %error, "reading the outbox failed");
            Vec::new()
        }
    };
    let full = page.len() == RELAY_BATCH;
    let mut relayed = published;
    for event in page {
        let seq = event.seq;
        let message = BusEvent {
            subject: event_subject(&event.name),
            id: event.id,
            name: event.name,
            seq,
            at: event.at,
            data: event.data,
            traceparent: new_traceparent(),
        };
        if let Err(error) = bus.publish(message).await {
            tracing::warn!(error = %error, seq, "publishing an event failed; retrying");
            return (relayed, false);
        }
        runtime.metrics.events_published.inc();
        relayed = seq;
    }
    (relayed, full)
}

/// With nobody to hear them (an in-process bus without subscribers: the embedded default
/// without an admin page's event stream), the events after `published` are passed over without
/// being read, and the last one written is returned; `None` when someone listens (or the outbox
/// could not be read), and they are relayed. The position is read before the subscribers are
/// checked: an event committed after a subscriber joined is never passed over, so a subscriber
/// receives everything committed after it subscribed.
async fn skip_unheard(runtime: &Runtime, bus: &dyn Bus, published: u64) -> Option<u64> {
    if bus.has_subscribers() {
        return None;
    }
    let last = match runtime.store.last_event_seq().await {
        Ok(last) => last,
        Err(error) => {
            tracing::warn!(error = %error, "reading the outbox failed");
            return None;
        }
    };
    if bus.has_subscribers() {
        return None;
    }
    if last > published {
        runtime.metrics.events_published.inc_by(last - published);
    }
    Some(last.max(published))
}

async fn run_command_completion(
    runtime: Arc<Runtime>,
    mut completed: mpsc::UnboundedReceiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            id = completed.recv() => match id {
                Some(id) => id,
                None => return,
            },
        };
        let mut done = vec![first];
        while let Ok(id) = completed.try_recv() {
            done.push(id);
        }
        let unit = UnitOfWork {
            commands_done: done,
            ..UnitOfWork::default()
        };
        if let Err(error) = runtime.store.commit(unit).await {
            // The commands stay pending and are redelivered; receivers ignore repeats.
            tracing::warn!(error = %error, "marking commands done failed");
        }
    }
}

async fn run_command_redelivery(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    loop {
        match runtime.store.pending_commands(1000).await {
            Ok(pending) => {
                for (id, command) in pending {
                    runtime.deliver(Some(id), command).await;
                }
            }
            Err(error) => tracing::warn!(error = %error, "reading pending commands failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

async fn run_payment_reconciliation(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    loop {
        match runtime.store.orders_awaiting_payment().await {
            Ok(orders) => {
                for order in orders {
                    let context = RequestContext {
                        request_id: Some("reconciliation".into()),
                    };
                    let result = runtime
                        .ask_order(order.id, OrderRequest::Reconcile, context)
                        .await;
                    match result {
                        Ok(_) => tracing::info!(order = %order.id, "charge in flight reconciled"),
                        Err(error) => {
                            tracing::warn!(order = %order.id, error = %error, "reconciling a charge failed; retrying later")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "listing orders awaiting payment failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

async fn run_passivation(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    let period = (runtime.config.directory.passivate_after / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let stopped =
            runtime.tickets.passivate_idle().await + runtime.orders.passivate_idle().await;
        if stopped > 0 {
            tracing::debug!(stopped, "passivated idle actors");
        }
    }
}
