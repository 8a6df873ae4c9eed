//! The embedded `Store`: one redb file in the data directory, written by one thread that groups
//! concurrent commits into a single fsynced transaction.
//!
//! Owns the table layout and the group commit. Each unit of work is checked (version
//! compare-and-set, unique email) before any of its writes are applied, so a refused unit leaves
//! no trace while the others in its group commit. It must not block the async runtime: scans go
//! through `spawn_blocking`, writes through the writer thread; only point reads of one record
//! (microseconds, from cached pages) run on the caller's thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::codec::{self, Record};
use super::{
    Command, CommitReceipt, Deadline, DeadlineKind, EntityCounts, EntityWrite, Store, StoreError,
    Stored, StoredEvent, UnitOfWork,
};
use crate::domain::{
    Email, ObjectId, Order, OrderId, OrderStatus, Ticket, TicketId, Timestamp, User, UserId,
};

type Bytes = &'static [u8];

const TICKETS: TableDefinition<Bytes, Bytes> = TableDefinition::new("tickets");
const ORDERS: TableDefinition<Bytes, Bytes> = TableDefinition::new("orders");
const USERS: TableDefinition<Bytes, Bytes> = TableDefinition::new("users");
const USERS_BY_EMAIL: TableDefinition<&str, Bytes> = TableDefinition::new("users_by_email");
const AVAILABLE_TICKETS: TableDefinition<Bytes, ()> = TableDefinition::new("available_tickets");
const ORDERS_BY_USER: TableDefinition<Bytes, ()> = TableDefinition::new("orders_by_user");
const ORDERS_AWAITING_PAYMENT: TableDefinition<Bytes, ()> =
    TableDefinition::new("orders_awaiting_payment");
const DEADLINES: TableDefinition<Bytes, ()> = TableDefinition::new("deadlines");
const EVENTS: TableDefinition<u64, Bytes> = TableDefinition::new("events");
const COMMANDS: TableDefinition<u64, Bytes> = TableDefinition::new("commands");
const PAYMENTS: TableDefinition<Bytes, Bytes> = TableDefinition::new("payments");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Shard fence epochs by `<kind>.<shard>`.
const SHARD_FENCES: TableDefinition<&str, u64> = TableDefinition::new("shard_fences");

const NEXT_EVENT_SEQ: &str = "next_event_seq";
const NEXT_COMMAND_ID: &str = "next_command_id";
const PUBLISHED_SEQ: &str = "published_seq";

/// redb's page cache (its default is 1 GiB). The file's pages are in the kernel's page cache
/// anyway; a cache allowed to grow to a gigabyte made every write in an expiry storm fault in
/// fresh memory (huge pages, zeroed by the kernel) on the writer thread, the embedded store's
/// one serial resource.
const CACHE_BYTES: usize = 128 * 1024 * 1024;

/// How many queued operations one transaction takes at most.
const GROUP_LIMIT: usize = 2048;

/// The embedded store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    database: Arc<Database>,
    writer: std_mpsc::Sender<WriteRequest>,
    /// The writer thread, joined by `close`.
    writer_thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

enum WriteOperation {
    Commit(UnitOfWork),
    InsertUser(User),
    SetPublishedSeq(u64),
    RaiseFence {
        kind: String,
        shard: u32,
        epoch: u64,
    },
}

enum WriteOutcome {
    Committed(CommitReceipt),
    FenceEpoch(u64),
    Done,
}

struct WriteRequest {
    operation: WriteOperation,
    reply: oneshot::Sender<WriteReply>,
}

/// The outcome of a write, with the operation handed back so that the waiting task frees it:
/// dropping a group's records and events was a tenth of the writer thread's time.
struct WriteReply {
    outcome: Result<WriteOutcome, StoreError>,
    _operation: WriteOperation,
}

impl EmbeddedStore {
    /// Opens (or creates) `boxoffice.redb` in `data_dir`, refusing a directory another process
    /// has open.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Unavailable(format!("cannot create {}: {error}", data_dir.display()))
        })?;
        let path = data_dir.join("boxoffice.redb");
        let database = match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(database) => database,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse(data_dir.display().to_string()));
            }
            Err(error) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot open {}: {error}",
                    path.display()
                )));
            }
        };
        let database = Arc::new(database);
        create_tables(&database)?;
        let (writer, requests) = std_mpsc::channel();
        let writer_database = database.clone();
        let writer_thread = std::thread::Builder::new()
            .name("boxoffice-store-writer".into())
            .spawn(move || run_writer(&writer_database, &requests))
            .map_err(|error| StoreError::Unavailable(format!("cannot start writer: {error}")))?;
        Ok(EmbeddedStore {
            database,
            writer,
            writer_thread: Arc::new(std::sync::Mutex::new(Some(writer_thread))),
        })
    }

    /// Closes the database once this and every clone of the store are gone: waits, at most
    /// `within`, until the writer thread has finished what was queued and let go of the file.
    /// Returns whether it did. A process that exits right after dropping the store may leave
    /// the file not cleanly closed, and the next open then repairs it, reading all of it (for a
    /// large store, minutes and gigabytes of memory).
    pub fn close(self, within: std::time::Duration) -> bool {
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(self);
        let Some(thread) = thread else {
            return false;
        };
        let deadline = std::time::Instant::now() + within;
        while !thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        thread.join().is_ok()
    }

    async fn write(&self, operation: WriteOperation) -> Result<WriteOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.writer
            .send(WriteRequest { operation, reply })
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
            .outcome
    }

    /// Reads one record on the calling thread. A point read is a few B-tree pages, almost always
    /// in redb's cache or the kernel's page cache, so it costs microseconds; handing it to the
    /// blocking pool cost more than the read itself (a task, a thread wake-up and a switch each
    /// way), and activations read one record each.
    fn point_read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    {
        let transaction = self.database.begin_read().map_err(unavailable)?;
        read(&transaction)
    }

    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let database = self.database.clone();
        tokio::task::spawn_blocking(move || {
            let transaction = database.begin_read().map_err(unavailable)?;
            read(&transaction)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(corrupt)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

/// The stored value of `record` at `version` (see `codec`).
fn encode_entity<T: Record>(version: u64, record: &Stored<T>) -> Vec<u8> {
    codec::encode(version, record)
}

fn entity_version(bytes: &[u8]) -> Result<u64, StoreError> {
    codec::version(bytes).map_err(corrupt)
}

fn decode_entity<T: Record>(bytes: &[u8]) -> Result<Stored<T>, StoreError> {
    codec::decode(bytes).map_err(corrupt)
}

fn deadline_key(due: Timestamp, kind: DeadlineKind, entity: ObjectId) -> Vec<u8> {
    let mut key = Vec::with_capacity(21);
    key.extend(
        u64::try_from(due.millis().max(0))
            .unwrap_or(0)
            .to_be_bytes(),
    );
    key.push(match kind {
        DeadlineKind::OrderExpiry => 0,
        DeadlineKind::TicketReservation => 1,
    });
    key.extend(entity.bytes());
    key
}

fn parse_deadline_key(key: &[u8]) -> Result<Deadline, StoreError> {
    if key.len() != 21 {
        return Err(corrupt("deadline key of the wrong length"));
    }
    let mut due = [0u8; 8];
    due.copy_from_slice(&key[..8]);
    let kind = match key[8] {
        0 => DeadlineKind::OrderExpiry,
        1 => DeadlineKind::TicketReservation,
        other => return Err(corrupt(format!("unknown deadline kind {other}"))),
    };
    let mut id = [0u8; 12];
    id.copy_from_slice(&key[9..]);
    Ok(Deadline {
        due: Timestamp::from_millis(i64::try_from(u64::from_be_bytes(due)).unwrap_or(i64::MAX)),
        kind,
        entity: ObjectId::from_bytes(id),
    })
}

fn create_tables(database: &Database) -> Result<(), StoreError> {
    let transaction = database.begin_write().map_err(unavailable)?;
    {
        transaction.open_table(TICKETS).map_err(unavailable)?;
        transaction.open_table(ORDERS).map_err(unavailable)?;
        transaction.open_table(USERS).map_err(unavailable)?;
        transaction
            .open_table(USERS_BY_EMAIL)
            .map_err(unavailable)?;
        transaction
            .open_table(AVAILABLE_TICKETS)
            .map_err(unavailable)?;
        transaction
            .open_table(ORDERS_BY_USER)
            .map_err(unavailable)?;
        transaction
            .open_table(ORDERS_AWAITING_PAYMENT)
            .map_err(unavailable)?;
        transaction.open_table(DEADLINES).map_err(unavailable)?;
        transaction.open_table(EVENTS).map_err(unavailable)?;
        transaction.open_table(COMMANDS).map_err(unavailable)?;
        transaction.open_table(PAYMENTS).map_err(unavailable)?;
        transaction.open_table(META).map_err(unavailable)?;
        transaction.open_table(SHARD_FENCES).map_err(unavailable)?;
    }
    transaction.commit().map_err(unavailable)
}

/// The writer thread: takes every queued operation (up to `GROUP_LIMIT`), applies those that
/// pass their checks in one transaction, commits (fsync) once, then answers each.
fn run_writer(database: &Database, requests: &std_mpsc::Receiver<WriteRequest>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_LIMIT {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let mut outcomes = Vec::with_capacity(group.len());
        let result = database
            .begin_write()
            .map_err(unavailable)
            .and_then(|transaction| {
                let mut tables = WriteTables::new(&transaction);
                for request in &group {
                    outcomes.push(apply(&mut tables, &request.operation));
                }
                tables.save_counters()?;
                drop(tables);
                transaction.commit().map_err(unavailable)
            });
        if let Err(error) = &result {
            tracing::error!(error = %error, "store commit failed");
        }
        let mut outcomes = outcomes.into_iter();
        for request in group {
            let outcome = match (&result, outcomes.next()) {
                (Ok(()), Some(outcome)) => outcome,
                (Err(error), _) => Err(StoreError::Unavailable(error.to_string())),
                (Ok(()), None) => Err(StoreError::Unavailable("no outcome for a write".into())),
            };
            let _ = request.reply.send(WriteReply {
                outcome,
                _operation: request.operation,
            });
        }
    }
}

/// The tables of a group commit's transaction, each opened on first use and kept open until the
/// group commits: opening and closing a table for every unit was about a quarter of the writer
/// thread's time per expiry (`cargo bench --bench store`).
struct WriteTables<'txn> {
    transaction: &'txn WriteTransaction,
    tickets: Option<redb::Table<'txn, Bytes, Bytes>>,
    orders: Option<redb::Table<'txn, Bytes, Bytes>>,
    users: Option<redb::Table<'txn, Bytes, Bytes>>,
    users_by_email: Option<redb::Table<'txn, &'static str, Bytes>>,
    available: Option<redb::Table<'txn, Bytes, ()>>,
    orders_by_user: Option<redb::Table<'txn, Bytes, ()>>,
    awaiting: Option<redb::Table<'txn, Bytes, ()>>,
    deadlines: Option<redb::Table<'txn, Bytes, ()>>,
    events: Option<redb::Table<'txn, u64, Bytes>>,
    commands: Option<redb::Table<'txn, u64, Bytes>>,
    payments: Option<redb::Table<'txn, Bytes, Bytes>>,
    meta: Option<redb::Table<'txn, &'static str, u64>>,
    fences: Option<redb::Table<'txn, &'static str, u64>>,
    /// The next event sequence number and command id: read from `META` on first use, advanced
    /// by each unit, written back once when the group commits (not once per unit).
    next_event_seq: Option<u64>,
    next_command_id: Option<u64>,
}

impl<'txn> WriteTables<'txn> {
    fn new(transaction: &'txn WriteTransaction) -> Self {
        WriteTables {
            transaction,
            tickets: None,
            orders: None,
            users: None,
            users_by_email: None,
            available: None,
            orders_by_user: None,
            awaiting: None,
            deadlines: None,
            events: None,
            commands: None,
            payments: None,
            meta: None,
            fences: None,
            next_event_seq: None,
            next_command_id: None,
        }
    }

    /// Writes the counters the group advanced back to `META`.
    fn save_counters(&mut self) -> Result<(), StoreError> {
        for (key, next) in [
            (NEXT_EVENT_SEQ, self.next_event_seq),
            (NEXT_COMMAND_ID, self.next_command_id),
        ] {
            if let Some(next) = next {
                opened(&mut self.meta, self.transaction, META)?
                    .insert(key, next)
                    .map_err(unavailable)?;
            }
        }
        Ok(())
    }
}

/// The counter `key` of `META`, as the group has advanced it so far (`slot`).
fn counter(
    slot: Option<u64>,
    meta: &redb::Table<'_, &'static str, u64>,
    key: &str,
) -> Result<u64, StoreError> {
    match slot {
        Some(next) => Ok(next),
        None => Ok(meta.get(key).map_err(unavailable)?.map_or(1, |v| v.value())),
    }
}

/// The table in `slot`, opened in `transaction` if it is not yet.
fn opened<'slot, 'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'slot mut Option<redb::Table<'txn, K, V>>,
    transaction: &'txn WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<&'slot mut redb::Table<'txn, K, V>, StoreError> {
    if slot.is_none() {
        *slot = Some(transaction.open_table(definition).map_err(unavailable)?);
    }
    slot.as_mut()
        .ok_or_else(|| StoreError::Unavailable("a table did not open".into()))
}

/// Applies one operation inside the group's transaction; checks everything before writing
/// anything, so a refused operation leaves no trace.
fn apply(
    tables: &mut WriteTables<'_>,
    operation: &WriteOperation,
) -> Result<WriteOutcome, StoreError> {
    let transaction = tables.transaction;
    match operation {
        WriteOperation::Commit(unit) => {
            check_fence(tables, unit)?;
            let replaced = check_versions(tables, unit)?;
            apply_unit(tables, unit, &replaced).map(WriteOutcome::Committed)
        }
        WriteOperation::InsertUser(user) => {
            let by_email = opened(&mut tables.users_by_email, transaction, USERS_BY_EMAIL)?;
            if by_email
                .get(user.email.as_str())
                .map_err(unavailable)?
                .is_some()
            {
                return Err(StoreError::EmailTaken);
            }
            let id = user.id.0.bytes();
            by_email
                .insert(user.email.as_str(), id.as_slice())
                .map_err(unavailable)?;
            opened(&mut tables.users, transaction, USERS)?
                .insert(id.as_slice(), encode(user)?.as_slice())
                .map_err(unavailable)?;
            Ok(WriteOutcome::Done)
        }
        WriteOperation::SetPublishedSeq(seq) => {
            let meta = opened(&mut tables.meta, transaction, META)?;
            let current = meta
                .get(PUBLISHED_SEQ)
                .map_err(unavailable)?
                .map(|v| v.value());
            if current.is_none_or(|current| current < *seq) {
                meta.insert(PUBLISHED_SEQ, *seq).map_err(unavailable)?;
            }
            Ok(WriteOutcome::Done)
        }
        WriteOperation::RaiseFence { kind, shard, epoch } => {
            let fences = opened(&mut tables.fences, transaction, SHARD_FENCES)?;
            let key = fence_key(kind, *shard);
            let stored = fences
                .get(key.as_str())
                .map_err(unavailable)?
                .map_or(0, |value| value.value());
            if stored >= *epoch {
                return Ok(WriteOutcome::FenceEpoch(stored));
            }
            fences.insert(key.as_str(), *epoch).map_err(unavailable)?;
            Ok(WriteOutcome::FenceEpoch(*epoch))
        }
    }
}

/// The fence table's key of a shard, the same as the MongoDB adapter's `_id`.
fn fence_key(kind: &str, shard: u32) -> String {
    format!("{kind}.{shard}")
}

/// Refuses a unit whose fence epoch is below the shard's stored one (a shard never fenced is
/// at epoch 0). The writer thread applies operations one at a time, so nothing can raise the
/// fence between this check and the unit's writes.
fn check_fence(tables: &mut WriteTables<'_>, unit: &UnitOfWork) -> Result<(), StoreError> {
    let Some(fence) = &unit.fence else {
        return Ok(());
    };
    let fences = opened(&mut tables.fences, tables.transaction, SHARD_FENCES)?;
    let stored = fences
        .get(fence_key(&fence.kind, fence.shard).as_str())
        .map_err(unavailable)?
        .map_or(0, |value| value.value());
    if stored > fence.epoch {
        return Err(StoreError::Fenced {
            kind: fence.kind.clone(),
            shard: fence.shard,
            stored,
            presented: fence.epoch,
        });
    }
    Ok(())
}

/// What the writer needs of the record a write replaces: its version (for the check) and its
/// deadline (to move the deadline index).
#[derive(Clone, Copy)]
struct Replaced {
    version: u64,
    deadline: Option<Timestamp>,
}

/// What entity `id` as stored in `table` is, if it exists.
fn stored<T: Record>(
    table: &redb::Table<'_, Bytes, Bytes>,
    id: ObjectId,
    deadline: fn(&T) -> Option<Timestamp>,
) -> Result<Option<Replaced>, StoreError> {
    match table.get(id.bytes().as_slice()).map_err(unavailable)? {
        Some(value) => {
            let bytes = value.value();
            let state = codec::decode_state::<T>(bytes).map_err(corrupt)?;
            Ok(Some(Replaced {
                version: entity_version(bytes)?,
                deadline: deadline(&state),
            }))
        }
        None => Ok(None),
    }
}

/// Checks each write's expected version against the stored record, and returns what each
/// replaces (`None`: a new entity): one lookup per write serves both the check and the indexes.
fn check_versions(
    tables: &mut WriteTables<'_>,
    unit: &UnitOfWork,
) -> Result<Vec<Option<Replaced>>, StoreError> {
    let transaction = tables.transaction;
    let mut replaced = Vec::with_capacity(unit.writes.len());
    for write in &unit.writes {
        let (id, expected, found) = match write {
            EntityWrite::Ticket {
                expected_version,
                record,
            } => {
                let id = record.state.id.0;
                let tickets = opened(&mut tables.tickets, transaction, TICKETS)?;
                (
                    id,
                    *expected_version,
                    stored(tickets, id, Ticket::deadline)?,
                )
            }
            EntityWrite::Order {
                expected_version,
                record,
            } => {
                let id = record.state.id.0;
                let orders = opened(&mut tables.orders, transaction, ORDERS)?;
                (id, *expected_version, stored(orders, id, Order::deadline)?)
            }
        };
        let found_version = found.map(|found| found.version);
        if found_version != expected {
            return Err(StoreError::VersionConflict {
                entity: id.to_string(),
                expected,
                found: found_version,
            });
        }
        replaced.push(found);
    }
    Ok(replaced)
}

fn apply_unit(
    tables: &mut WriteTables<'_>,
    unit: &UnitOfWork,
    replaced: &[Option<Replaced>],
) -> Result<CommitReceipt, StoreError> {
    let transaction = tables.transaction;
    let deadlines = opened(&mut tables.deadlines, transaction, DEADLINES)?;
    for (write, replaced) in unit.writes.iter().zip(replaced) {
        match write {
            EntityWrite::Ticket { record, .. } => {
                let ticket = &record.state;
                let key = ticket.id.0.bytes();
                let tickets = opened(&mut tables.tickets, transaction, TICKETS)?;
                tickets
                    .insert(
                        key.as_slice(),
                        encode_entity(ticket.version, record.as_ref()).as_slice(),
                    )
                    .map_err(unavailable)?;
                let available = opened(&mut tables.available, transaction, AVAILABLE_TICKETS)?;
                if ticket.is_available() {
                    available.insert(key.as_slice(), ()).map_err(unavailable)?;
                } else {
                    available.remove(key.as_slice()).map_err(unavailable)?;
                }
                replace_deadline(
                    deadlines,
                    DeadlineKind::TicketReservation,
                    ticket.id.0,
                    replaced.and_then(|replaced| replaced.deadline),
                    ticket.deadline(),
                )?;
            }
            EntityWrite::Order { record, .. } => {
                let order = &record.state;
                let key = order.id.0.bytes();
                let orders = opened(&mut tables.orders, transaction, ORDERS)?;
                orders
                    .insert(
                        key.as_slice(),
                        encode_entity(order.version, record.as_ref()).as_slice(),
                    )
                    .map_err(unavailable)?;
                if replaced.is_none() {
                    let by_user = opened(&mut tables.orders_by_user, transaction, ORDERS_BY_USER)?;
                    let mut index = order.user_id.0.bytes().to_vec();
                    index.extend(key);
                    by_user.insert(index.as_slice(), ()).map_err(unavailable)?;
                }
                let awaiting = opened(&mut tables.awaiting, transaction, ORDERS_AWAITING_PAYMENT)?;
                if order.status == OrderStatus::AwaitingPayment {
                    awaiting.insert(key.as_slice(), ()).map_err(unavailable)?;
                } else {
                    awaiting.remove(key.as_slice()).map_err(unavailable)?;
                }
                replace_deadline(
                    deadlines,
                    DeadlineKind::OrderExpiry,
                    order.id.0,
                    replaced.and_then(|replaced| replaced.deadline),
                    order.deadline(),
                )?;
            }
        }
    }

    let meta = opened(&mut tables.meta, transaction, META)?;
    let mut receipt = CommitReceipt::default();
    if !unit.events.is_empty() {
        let events = opened(&mut tables.events, transaction, EVENTS)?;
        let mut seq = counter(tables.next_event_seq, meta, NEXT_EVENT_SEQ)?;
        let at = crate::clock::now();
        for event in &unit.events {
            events
                .insert(seq, codec::encode_event(event, at).as_slice())
                .map_err(unavailable)?;
            receipt.last_event_seq = seq;
            seq += 1;
        }
        tables.next_event_seq = Some(seq);
    }
    let commands = opened(&mut tables.commands, transaction, COMMANDS)?;
    if !unit.commands.is_empty() {
        let mut id = counter(tables.next_command_id, meta, NEXT_COMMAND_ID)?;
        for command in &unit.commands {
            commands
                .insert(id, encode(command)?.as_slice())
                .map_err(unavailable)?;
            receipt.command_ids.push(id);
            id += 1;
        }
        tables.next_command_id = Some(id);
    }
    for done in &unit.commands_done {
        commands.remove(*done).map_err(unavailable)?;
    }
    if !unit.payments.is_empty() {
        let payments = opened(&mut tables.payments, transaction, PAYMENTS)?;
        for payment in &unit.payments {
            payments
                .insert(payment.id.0.bytes().as_slice(), encode(payment)?.as_slice())
                .map_err(unavailable)?;
        }
    }
    Ok(receipt)
}

fn replace_deadline(
    deadlines: &mut redb::Table<Bytes, ()>,
    kind: DeadlineKind,
    entity: ObjectId,
    old: Option<Timestamp>,
    new: Option<Timestamp>,
) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    if let Some(old) = old {
        deadlines
            .remove(deadline_key(old, kind, entity).as_slice())
            .map_err(unavailable)?;
    }
    if let Some(new) = new {
        deadlines
            .insert(deadline_key(new, kind, entity).as_slice(), ())
            .map_err(unavailable)?;
    }
    Ok(())
}

fn load_entity<T: Record>(
    transaction: &redb::ReadTransaction,
    table: TableDefinition<Bytes, Bytes>,
    id: ObjectId,
) -> Result<Option<Stored<T>>, StoreError> {
    let table = transaction.open_table(table).map_err(unavailable)?;
    match table.get(id.bytes().as_slice()).map_err(unavailable)? {
        Some(value) => decode_entity(value.value()).map(Some),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn commit(&self, unit: UnitOfWork) -> Result<CommitReceipt, StoreError> {
        match self.write(WriteOperation::Commit(unit)).await? {
            WriteOutcome::Committed(receipt) => Ok(receipt),
            WriteOutcome::FenceEpoch(_) | WriteOutcome::Done => Ok(CommitReceipt::default()),
        }
    }

    async fn raise_fence(&self, kind: &str, shard: u32, epoch: u64) -> Result<u64, StoreError> {
        let operation = WriteOperation::RaiseFence {
            kind: kind.to_string(),
            shard,
            epoch,
        };
        match self.write(operation).await? {
            WriteOutcome::FenceEpoch(stored) => Ok(stored),
            WriteOutcome::Committed(_) | WriteOutcome::Done => Err(StoreError::Unavailable(
                "store writer answered a fence raise with another outcome".into(),
            )),
        }
    }

    async fn load_ticket(&self, id: TicketId) -> Result<Option<Stored<Ticket>>, StoreError> {
        self.point_read(|transaction| load_entity(transaction, TICKETS, id.0))
    }

    async fn load_order(&self, id: OrderId) -> Result<Option<Stored<Order>>, StoreError> {
        self.point_read(|transaction| load_entity(transaction, ORDERS, id.0))
    }

    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        self.write(WriteOperation::InsertUser(user.clone()))
            .await
            .map(|_| ())
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let email = email.clone();
        self.read(move |transaction| {
            let by_email = transaction
                .open_table(USERS_BY_EMAIL)
                .map_err(unavailable)?;
            let Some(id) = by_email.get(email.as_str()).map_err(unavailable)? else {
                return Ok(None);
            };
            let users = transaction.open_table(USERS).map_err(unavailable)?;
            match users.get(id.value()).map_err(unavailable)? {
                Some(user) => decode(user.value()).map(Some),
                None => Err(corrupt("email index points at no user")),
            }
        })
        .await
    }

    async fn list_available_tickets(
        &self,
        after: Option<TicketId>,
        limit: usize,
    ) -> Result<Vec<Ticket>, StoreError> {
        self.read(move |transaction| {
            let available = transaction
                .open_table(AVAILABLE_TICKETS)
                .map_err(unavailable)?;
            let tickets = transaction.open_table(TICKETS).map_err(unavailable)?;
            let start = after.map(|id| id.0.bytes());
            let range = match &start {
                Some(start) => available.range::<&[u8]>((
                    std::ops::Bound::Excluded(start.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => available.range::<&[u8]>(..),
            }
            .map_err(unavailable)?;
            let mut page = Vec::new();
            for entry in range.take(limit) {
                let (key, _) = entry.map_err(unavailable)?;
                let value = tickets
                    .get(key.value())
                    .map_err(unavailable)?
                    .ok_or_else(|| corrupt("available index points at no ticket"))?;
                let record: Stored<Ticket> = decode_entity(value.value())?;
                page.push(record.state);
            }
            Ok(page)
        })
        .await
    }

    async fn list_orders_of_user(&self, user: UserId) -> Result<Vec<Order>, StoreError> {
        self.read(move |transaction| {
            let by_user = transaction
                .open_table(ORDERS_BY_USER)
                .map_err(unavailable)?;
            let orders = transaction.open_table(ORDERS).map_err(unavailable)?;
            let prefix = user.0.bytes();
            let mut end = prefix.to_vec();
            end.extend([0xff; 12]);
            let mut list = Vec::new();
            for entry in by_user
                .range::<&[u8]>(prefix.as_slice()..=end.as_slice())
                .map_err(unavailable)?
            {
                let (key, _) = entry.map_err(unavailable)?;
                let order_key = &key.value()[12..];
                let value = orders
                    .get(order_key)
                    .map_err(unavailable)?
                    .ok_or_else(|| corrupt("user index points at no order"))?;
                let record: Stored<Order> = decode_entity(value.value())?;
                list.push(record.state);
            }
            list.sort_by_key(|order| (order.created_at, order.id));
            Ok(list)
        })
        .await
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |transaction| {
            let events = transaction.open_table(EVENTS).map_err(unavailable)?;
            let mut page = Vec::new();
            for entry in events
                .range(after.saturating_add(1)..)
                .map_err(unavailable)?
                .take(limit)
            {
                let (seq, value) = entry.map_err(unavailable)?;
                page.push(codec::decode_event(seq.value(), value.value()).map_err(corrupt)?);
            }
            Ok(page)
        })
        .await
    }

    async fn last_event_seq(&self) -> Result<u64, StoreError> {
        self.point_read(|transaction| {
            let events = transaction.open_table(EVENTS).map_err(unavailable)?;
            Ok(events
                .last()
                .map_err(unavailable)?
                .map_or(0, |(seq, _)| seq.value()))
        })
    }

    async fn published_seq(&self) -> Result<u64, StoreError> {
        self.read(|transaction| {
            let meta = transaction.open_table(META).map_err(unavailable)?;
            Ok(meta
                .get(PUBLISHED_SEQ)
                .map_err(unavailable)?
                .map_or(0, |value| value.value()))
        })
        .await
    }

    async fn set_published_seq(&self, seq: u64) -> Result<(), StoreError> {
        self.write(WriteOperation::SetPublishedSeq(seq))
            .await
            .map(|_| ())
    }

    async fn pending_commands(&self, limit: usize) -> Result<Vec<(u64, Command)>, StoreError> {
        self.read(move |transaction| {
            let commands = transaction.open_table(COMMANDS).map_err(unavailable)?;
            let mut pending = Vec::new();
            for entry in commands.iter().map_err(unavailable)?.take(limit) {
                let (id, value) = entry.map_err(unavailable)?;
                pending.push((id.value(), decode(value.value())?));
            }
            Ok(pending)
        })
        .await
    }

    async fn deadlines(&self) -> Result<Vec<Deadline>, StoreError> {
        self.read(|transaction| {
            let deadlines = transaction.open_table(DEADLINES).map_err(unavailable)?;
            let mut all = Vec::new();
            for entry in deadlines.iter().map_err(unavailable)? {
                let (key, _) = entry.map_err(unavailable)?;
                all.push(parse_deadline_key(key.value())?);
            }
            Ok(all)
        })
        .await
    }

    async fn orders_awaiting_payment(&self) -> Result<Vec<Order>, StoreError> {
        self.read(|transaction| {
            let awaiting = transaction
                .open_table(ORDERS_AWAITING_PAYMENT)
                .map_err(unavailable)?;
            let orders = transaction.open_table(ORDERS).map_err(unavailable)?;
            let mut list = Vec::new();
            for entry in awaiting.iter().map_err(unavailable)? {
                let (key, _) = entry.map_err(unavailable)?;
                if let Some(value) = orders.get(key.value()).map_err(unavailable)? {
                    let record: Stored<Order> = decode_entity(value.value())?;
                    list.push(record.state);
                }
            }
            Ok(list)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|transaction| {
            transaction.open_table(META).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn counts(&self) -> Result<EntityCounts, StoreError> {
        self.read(|transaction| {
            let tickets = transaction.open_table(TICKETS).map_err(unavailable)?;
            let orders = transaction.open_table(ORDERS).map_err(unavailable)?;
            Ok(EntityCounts {
                tickets: tickets.len().map_err(unavailable)?,
                orders: orders.len().map_err(unavailable)?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Price, Title};

    fn id(n: u32) -> ObjectId {
        ObjectId::from_parts(n, [3; 5], n)
    }

    fn ticket(n: u32) -> Stored<Ticket> {
        let change = Ticket::create(
            TicketId(id(n)),
            Title::parse("show").unwrap(),
            Price::from_cents(100).unwrap(),
            UserId(id(1000)),
        );
        Stored::new(change.state)
    }

    fn unit(write: EntityWrite) -> UnitOfWork {
        UnitOfWork {
            writes: vec![write],
            ..UnitOfWork::default()
        }
    }

    #[tokio::test]
    async fn compare_and_set_refuses_stale_writes_and_keeps_the_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let record = ticket(1);
        store
            .commit(unit(EntityWrite::Ticket {
                expected_version: None,
                record: record.clone().into(),
            }))
            .await
            .unwrap();
        let duplicate = store
            .commit(unit(EntityWrite::Ticket {
                expected_version: None,
                record: record.clone().into(),
            }))
            .await;
        assert!(matches!(duplicate, Err(StoreError::VersionConflict { .. })));

        let mut first = record.clone();
        first.state.version = 1;
        let mut second = record.clone();
        second.state.version = 1;
        second.state.title = Title::parse("loser").unwrap();
        let (a, b) = tokio::join!(
            store.commit(unit(EntityWrite::Ticket {
                expected_version: Some(0),
                record: first.into(),
            })),
            store.commit(unit(EntityWrite::Ticket {
                expected_version: Some(0),
                record: second.into(),
            })),
        );
        assert!(a.is_ok() != b.is_ok(), "exactly one concurrent write wins");
        let stored = store.load_ticket(record.state.id).await.unwrap().unwrap();
        assert_eq!(stored.state.version, 1);
    }

    /// A data directory written before the binary record encoding: its JSON records load, and
    /// a write replacing one moves its deadline in the index like any other.
    #[tokio::test]
    async fn records_written_as_json_load_and_are_replaced() {
        use crate::domain::{Order, OrderId, TicketSnapshot};
        let dir = tempfile::tempdir().unwrap();
        let created = Order::create(
            OrderId(id(1)),
            UserId(id(2)),
            TicketSnapshot {
                id: TicketId(id(3)),
                title: "show".to_string(),
                price: Price::from_cents(100).unwrap(),
                version: 1,
            },
            Timestamp::from_millis(1_000_000),
            std::time::Duration::from_secs(60),
        );
        let record = Stored::new(created.state.clone());
        let due = created.state.deadline().unwrap();
        {
            let database = Database::create(dir.path().join("boxoffice.redb")).unwrap();
            create_tables(&database).unwrap();
            let transaction = database.begin_write().unwrap();
            {
                let mut orders = transaction.open_table(ORDERS).unwrap();
                let mut value = 0u64.to_be_bytes().to_vec();
                value.extend(serde_json::to_vec(&record).unwrap());
                orders
                    .insert(id(1).bytes().as_slice(), value.as_slice())
                    .unwrap();
                let mut deadlines = transaction.open_table(DEADLINES).unwrap();
                let key = deadline_key(due, DeadlineKind::OrderExpiry, id(1));
                deadlines.insert(key.as_slice(), ()).unwrap();
            }
            transaction.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            store.load_order(OrderId(id(1))).await.unwrap(),
            Some(record.clone())
        );
        assert_eq!(store.deadlines().await.unwrap().len(), 1);

        let crate::domain::ExpireOutcome::Expired(expired) = created.state.expire(due) else {
            panic!("the order is due");
        };
        let mut replaced = record;
        replaced.state = expired.state;
        store
            .commit(unit(EntityWrite::Order {
                expected_version: Some(0),
                record: replaced.clone().into(),
            }))
            .await
            .unwrap();
        assert_eq!(
            store.load_order(OrderId(id(1))).await.unwrap(),
            Some(replaced)
        );
        assert!(store.deadlines().await.unwrap().is_empty());
    }

    /// Event sequence numbers and command ids are counted per group and saved once per group:
    /// units committed together, and after reopening, still get consecutive, unique numbers.
    #[tokio::test]
    async fn events_and_commands_are_numbered_across_groups_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let created = |n: u32| UnitOfWork {
            writes: vec![EntityWrite::Ticket {
                expected_version: None,
                record: ticket(n).into(),
            }],
            events: Ticket::create(
                TicketId(id(n)),
                Title::parse("show").unwrap(),
                Price::from_cents(100).unwrap(),
                UserId(id(1000)),
            )
            .events,
            commands: vec![Command::ReleaseTicket {
                ticket_id: TicketId(id(n)),
                order_id: crate::domain::OrderId(id(n + 100)),
            }],
            ..UnitOfWork::default()
        };
        let mut receipts = Vec::new();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let (a, b, c) = tokio::join!(
                store.commit(created(1)),
                store.commit(created(2)),
                store.commit(created(3)),
            );
            receipts.extend([a.unwrap(), b.unwrap(), c.unwrap()]);
            assert!(store.close(std::time::Duration::from_secs(10)));
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        receipts.push(store.commit(created(4)).await.unwrap());
        let mut seqs: Vec<u64> = receipts.iter().map(|r| r.last_event_seq).collect();
        let mut ids: Vec<u64> = receipts
            .iter()
            .flat_map(|r| r.command_ids.clone())
            .collect();
        seqs.sort_unstable();
        ids.sort_unstable();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(ids, [1, 2, 3, 4]);
        let events = store.events_after(0, 10).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(store.pending_commands(10).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn data_survives_reopening_and_the_directory_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .commit(UnitOfWork {
                    writes: vec![EntityWrite::Ticket {
                        expected_version: None,
                        record: ticket(7).into(),
                    }],
                    events: Ticket::create(
                        TicketId(id(7)),
                        Title::parse("show").unwrap(),
                        Price::from_cents(100).unwrap(),
                        UserId(id(1000)),
                    )
                    .events,
                    ..UnitOfWork::default()
                })
                .await
                .unwrap();
            assert!(matches!(
                EmbeddedStore::open(dir.path()),
                Err(StoreError::InUse(_))
            ));
        }
        // The writer thread holds the database until its channel closes; wait for that.
        let store = loop {
            match EmbeddedStore::open(dir.path()) {
                Ok(store) => break store,
                Err(StoreError::InUse(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(error) => panic!("{error}"),
            }
        };
        assert!(store.load_ticket(TicketId(id(7))).await.unwrap().is_some());
        let events = store.events_after(0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "ticket.created");
        assert_eq!(
            store.list_available_tickets(None, 10).await.unwrap().len(),
            1
        );
    }

    #[test]
    fn deadline_keys_round_trip_and_sort_by_time() {
        let early = deadline_key(Timestamp::from_millis(5), DeadlineKind::OrderExpiry, id(9));
        let late = deadline_key(Timestamp::from_millis(6), DeadlineKind::OrderExpiry, id(1));
        assert!(early < late);
        let parsed = parse_deadline_key(&early).unwrap();
        assert_eq!(parsed.entity, id(9));
        assert_eq!(parsed.due, Timestamp::from_millis(5));
    }
}
