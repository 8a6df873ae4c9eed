//! The cluster `Store`: MongoDB (or any server speaking its wire protocol, such as SecantusDB in
//! tests) through the `mongodb` driver.
//!
//! Owns the document layout, the indexes and the transaction that makes a commit atomic. Every
//! commit is one multi-document transaction, retried by the driver on `TransientTransactionError`
//! (write conflicts, code 112): inside it each entity write is a compare-and-set on `version`,
//! the shard fence is checked (and touched, so that a concurrent raise conflicts), and outbox
//! events and commands take their numbers from counter documents. Its semantics are the embedded
//! store's (`embedded.rs` is the reference); the store contract tests run against both. It must
//! not decide anything and must not hold a transaction open across anything but its own writes.
//!
//! Layout (`docs/cluster.md`, "Adapters"): `_id` is the entity's 24-hex-digit id as a string,
//! the record is the same serde form the embedded store keeps (as BSON), and the fields queries
//! need sit beside it at the top level.

use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    ClientOptions, FindOptions, IndexOptions, ReadConcern, ReturnDocument, TransactionOptions,
    WriteConcern,
};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    Command, CommitReceipt, Deadline, DeadlineKind, EntityCounts, EntityWrite, Fence, Store,
    StoreError, Stored, StoredEvent, UnitOfWork,
};
use crate::domain::{
    Email, ObjectId, Order, OrderId, OrderStatus, Ticket, TicketId, Timestamp, User, UserId,
};

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// The counter document outbox event sequences come from.
const EVENT_SEQ_COUNTER: &str = "eventSeq";
/// The counter document outbox command ids come from.
const COMMAND_ID_COUNTER: &str = "commandId";
/// The meta document holding how far the relay has published.
const RELAY_META: &str = "relay";

/// How long the driver may look for a server before an operation fails, so an unreachable
/// server is a clear error rather than a hang.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The MongoDB store; cheap to clone (the driver's client is a handle to a pool).
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    collections: Collections,
}

#[derive(Clone)]
struct Collections {
    users: Collection<Document>,
    tickets: Collection<Document>,
    orders: Collection<Document>,
    payments: Collection<Document>,
    events: Collection<Document>,
    commands: Collection<Document>,
    counters: Collection<Document>,
    meta: Collection<Document>,
    shard_fences: Collection<Document>,
}

/// Why a transaction's callback refused the unit; carried through the driver as a custom error,
/// so the driver aborts the transaction and does not retry it.
#[derive(Clone, Debug)]
enum Refusal {
    Conflict {
        collection: &'static str,
        entity: ObjectId,
        expected: Option<u64>,
    },
    Fenced {
        kind: String,
        shard: u32,
        stored: u64,
        presented: u64,
    },
    Corrupt(String),
}

impl MongoStore {
    /// Connects to `uri` (use `?retryWrites=false` against SecantusDB, see `docs/cluster.md`),
    /// checks the server answers, and creates the indexes (idempotent) in `database_name`.
    pub async fn connect(uri: &str, database_name: &str) -> Result<MongoStore, StoreError> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|error| StoreError::Unavailable(format!("bad MongoDB URI: {error}")))?;
        options.app_name.get_or_insert_with(|| "boxoffice".into());
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        let client = Client::with_options(options).map_err(unavailable)?;
        let database = client.database(database_name);
        database
            .run_command(doc! {"ping": 1})
            .await
            .map_err(|error| StoreError::Unavailable(format!("MongoDB unreachable: {error}")))?;
        let store = MongoStore {
            client,
            collections: Collections::of(&database),
        };
        store.create_indexes().await?;
        tracing::info!(database = database_name, "mongodb store ready");
        Ok(store)
    }

    async fn create_indexes(&self) -> Result<(), StoreError> {
        let collections = &self.collections;
        let indexes = [
            (
                &collections.users,
                doc! {"email": 1},
                Some("email_unique"),
                true,
            ),
            (
                &collections.tickets,
                doc! {"available": 1, "_id": 1},
                Some("available_by_id"),
                false,
            ),
            (
                &collections.tickets,
                doc! {"deadline": 1},
                Some("deadline"),
                false,
            ),
            (
                &collections.orders,
                doc! {"userId": 1, "createdAt": 1, "_id": 1},
                Some("user_by_creation"),
                false,
            ),
            (
                &collections.orders,
                doc! {"status": 1},
                Some("status"),
                false,
            ),
            (
                &collections.orders,
                doc! {"deadline": 1},
                Some("deadline"),
                false,
            ),
        ];
        for (collection, keys, name, unique) in indexes {
            let options = IndexOptions::builder()
                .name(name.map(str::to_string))
                .unique(unique.then_some(true))
                .build();
            collection
                .create_index(IndexModel::builder().keys(keys).options(options).build())
                .await
                .map_err(|error| {
                    StoreError::Unavailable(format!(
                        "creating an index on {}: {error}",
                        collection.name()
                    ))
                })?;
        }
        Ok(())
    }

    /// The stored version of an entity, read outside any transaction (to report a conflict).
    async fn stored_version(
        &self,
        collection: &'static str,
        entity: ObjectId,
    ) -> Result<Option<u64>, StoreError> {
        let collection = match collection {
            "tickets" => &self.collections.tickets,
            _ => &self.collections.orders,
        };
        let found = collection
            .find_one(doc! {"_id": entity.to_string()})
            .projection(doc! {"version": 1})
            .await
            .map_err(unavailable)?;
        found
            .map(|document| read_u64(&document, "version"))
            .transpose()
    }
}

impl Collections {
    fn of(database: &Database) -> Collections {
        Collections {
            users: database.collection("users"),
            tickets: database.collection("tickets"),
            orders: database.collection("orders"),
            payments: database.collection("payments"),
            events: database.collection("events"),
            commands: database.collection("commands"),
            counters: database.collection("counters"),
            meta: database.collection("meta"),
            shard_fences: database.collection("shard_fences"),
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

/// The server's error code of a failed operation, when it has one.
fn error_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        ErrorKind::Command(command) => Some(command.code),
        ErrorKind::InsertMany(insert) => insert
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|write| write.code),
        _ => None,
    }
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    error_code(error) == Some(DUPLICATE_KEY)
}

/// Versions, epochs and sequences are `u64` in the domain and `Int64` in BSON.
fn to_int64(value: u64) -> Result<i64, Refusal> {
    i64::try_from(value).map_err(|_| Refusal::Corrupt(format!("{value} does not fit in Int64")))
}

fn read_u64(document: &Document, field: &str) -> Result<u64, StoreError> {
    let value = match document.get(field) {
        Some(Bson::Int64(value)) => *value,
        Some(Bson::Int32(value)) => i64::from(*value),
        Some(Bson::Double(value)) if value.fract() == 0.0 => *value as i64,
        other => {
            return Err(corrupt(format!(
                "field {field} is {other:?}, not an integer"
            )));
        }
    };
    u64::try_from(value).map_err(|_| corrupt(format!("field {field} is negative")))
}

fn to_document<T: Serialize>(value: &T) -> Result<Document, Refusal> {
    bson::to_document(value).map_err(|error| Refusal::Corrupt(error.to_string()))
}

fn from_field<T: DeserializeOwned>(document: Document, field: &str) -> Result<T, StoreError> {
    match document.get(field) {
        Some(Bson::Document(inner)) => bson::from_document(inner.clone()).map_err(corrupt),
        other => Err(corrupt(format!(
            "field {field} is {other:?}, not a document"
        ))),
    }
}

fn millis(at: Timestamp) -> Bson {
    Bson::Int64(at.millis())
}

/// A ticket as stored: the record plus `available` and `deadline` for the listing and the
/// timers. `deadline` is absent when no reservation is pending.
fn ticket_document(record: &Stored<Ticket>) -> Result<Document, Refusal> {
    let ticket = &record.state;
    let mut document = doc! {
        "_id": ticket.id.to_string(),
        "version": to_int64(ticket.version)?,
        "available": ticket.is_available(),
        "record": to_document(record)?,
    };
    if let Some(deadline) = ticket.deadline() {
        document.insert("deadline", millis(deadline));
    }
    Ok(document)
}

/// An order as stored: the record plus its owner, creation time, status and expiry deadline.
fn order_document(record: &Stored<Order>) -> Result<Document, Refusal> {
    let order = &record.state;
    let mut document = doc! {
        "_id": order.id.to_string(),
        "version": to_int64(order.version)?,
        "userId": order.user_id.to_string(),
        "createdAt": millis(order.created_at),
        "status": order.status.as_str(),
        "record": to_document(record)?,
    };
    if let Some(deadline) = order.deadline() {
        document.insert("deadline", millis(deadline));
    }
    Ok(document)
}

fn custom(refusal: Refusal) -> mongodb::error::Error {
    mongodb::error::Error::custom(refusal)
}

/// The transaction body. Errors from the server are returned as they are (the driver retries
/// the transient ones); refusals go out as `Refusal` custom errors, which abort it.
async fn apply_unit(
    collections: &Collections,
    unit: &UnitOfWork,
    session: &mut ClientSession,
) -> mongodb::error::Result<CommitReceipt> {
    if let Some(fence) = &unit.fence {
        check_fence(collections, fence, session).await?;
    }
    for write in &unit.writes {
        let (collection, name, id, expected, document) = match write {
            EntityWrite::Ticket {
                expected_version,
                record,
            } => (
                &collections.tickets,
                "tickets",
                record.state.id.0,
                *expected_version,
                ticket_document(record).map_err(custom)?,
            ),
            EntityWrite::Order {
                expected_version,
                record,
            } => (
                &collections.orders,
                "orders",
                record.state.id.0,
                *expected_version,
                order_document(record).map_err(custom)?,
            ),
        };
        let conflict = || {
            custom(Refusal::Conflict {
                collection: name,
                entity: id,
                expected,
            })
        };
        match expected {
            None => match collection.insert_one(document).session(&mut *session).await {
                Ok(_) => {}
                Err(error) if is_duplicate_key(&error) => return Err(conflict()),
                Err(error) => return Err(error),
            },
            Some(version) => {
                let filter =
                    doc! {"_id": id.to_string(), "version": to_int64(version).map_err(custom)?};
                let result = collection
                    .replace_one(filter, document)
                    .session(&mut *session)
                    .await?;
                if result.matched_count == 0 {
                    return Err(conflict());
                }
            }
        }
    }
    for payment in &unit.payments {
        let document = doc! {
            "_id": payment.id.to_string(),
            "orderId": payment.order_id.to_string(),
            "record": to_document(payment).map_err(custom)?,
        };
        collections
            .payments
            .replace_one(doc! {"_id": payment.id.to_string()}, document)
            .upsert(true)
            .session(&mut *session)
            .await?;
    }
    if !unit.commands_done.is_empty() {
        let done = unit
            .commands_done
            .iter()
            .map(|id| to_int64(*id).map(Bson::Int64))
            .collect::<Result<Vec<Bson>, Refusal>>()
            .map_err(custom)?;
        collections
            .commands
            .delete_many(doc! {"_id": {"$in": done}})
            .session(&mut *session)
            .await?;
    }
    let mut receipt = CommitReceipt::default();
    if !unit.commands.is_empty() {
        let first = allocate(
            collections,
            COMMAND_ID_COUNTER,
            unit.commands.len(),
            session,
        )
        .await?;
        let mut documents = Vec::with_capacity(unit.commands.len());
        for (offset, command) in (0u64..).zip(&unit.commands) {
            let id = first + offset;
            documents.push(doc! {
                "_id": to_int64(id).map_err(custom)?,
                "command": to_document(command).map_err(custom)?,
            });
            receipt.command_ids.push(id);
        }
        collections
            .commands
            .insert_many(documents)
            .session(&mut *session)
            .await?;
    }
    // Events last: the sequence counter is the one document every event-producing commit
    // writes, so taking it last keeps the window in which commits conflict on it short.
    if !unit.events.is_empty() {
        let first = allocate(collections, EVENT_SEQ_COUNTER, unit.events.len(), session).await?;
        let at = crate::clock::now();
        let mut documents = Vec::with_capacity(unit.events.len());
        for (offset, event) in (0u64..).zip(&unit.events) {
            let seq = first + offset;
            let stored = StoredEvent::new(seq, event, at);
            let mut document = to_document(&stored).map_err(custom)?;
            document.insert("_id", to_int64(seq).map_err(custom)?);
            documents.push(document);
            receipt.last_event_seq = seq;
        }
        collections
            .events
            .insert_many(documents)
            .session(&mut *session)
            .await?;
    }
    Ok(receipt)
}

/// Reads the shard's fence and refuses a lower epoch. The check *writes* the fence document (a
/// counter of fenced commits): a transaction only conflicts with another on documents both
/// write, so a `raise_fence` committed after this transaction's snapshot makes it fail with a
/// write conflict, and its retry sees the new epoch. A mere read would let a writer paused
/// between its check and its commit slip past a new owner's fence.
async fn check_fence(
    collections: &Collections,
    fence: &Fence,
    session: &mut ClientSession,
) -> mongodb::error::Result<()> {
    let stored = collections
        .shard_fences
        .find_one_and_update(
            doc! {"_id": fence_id(&fence.kind, fence.shard)},
            doc! {"$inc": {"fencedCommits": 1_i64}},
        )
        .upsert(true)
        .return_document(ReturnDocument::After)
        .session(&mut *session)
        .await?;
    let stored = match stored {
        Some(document) if document.contains_key("epoch") => read_u64(&document, "epoch")
            .map_err(|error| custom(Refusal::Corrupt(error.to_string())))?,
        _ => 0,
    };
    if stored > fence.epoch {
        return Err(custom(Refusal::Fenced {
            kind: fence.kind.clone(),
            shard: fence.shard,
            stored,
            presented: fence.epoch,
        }));
    }
    Ok(())
}

fn fence_id(kind: &str, shard: u32) -> String {
    format!("{kind}.{shard}")
}

/// Takes `count` consecutive numbers from a counter document; returns the first. Inside the
/// commit's transaction, so numbers are handed out in commit order and an aborted commit
/// leaves no gap.
async fn allocate(
    collections: &Collections,
    counter: &str,
    count: usize,
    session: &mut ClientSession,
) -> mongodb::error::Result<u64> {
    let count = i64::try_from(count).map_err(|_| custom(Refusal::Corrupt("too many".into())))?;
    let document = collections
        .counters
        .find_one_and_update(doc! {"_id": counter}, doc! {"$inc": {"value": count}})
        .upsert(true)
        .return_document(ReturnDocument::After)
        .session(&mut *session)
        .await?
        .ok_or_else(|| custom(Refusal::Corrupt(format!("counter {counter} missing"))))?;
    let last = read_u64(&document, "value")
        .map_err(|error| custom(Refusal::Corrupt(error.to_string())))?;
    // `count` is positive, so `last >= count`.
    Ok(last + 1 - count.unsigned_abs())
}

/// Runs a query and reads every document it returns.
async fn find_all(
    collection: &Collection<Document>,
    filter: Document,
    options: FindOptions,
) -> Result<Vec<Document>, StoreError> {
    collection
        .find(filter)
        .with_options(options)
        .await
        .map_err(unavailable)?
        .try_collect()
        .await
        .map_err(unavailable)
}

/// The states of the records a query returns.
async fn find_states<T: DeserializeOwned>(
    collection: &Collection<Document>,
    filter: Document,
    options: FindOptions,
) -> Result<Vec<T>, StoreError> {
    find_all(collection, filter, options)
        .await?
        .into_iter()
        .map(|document| from_field::<Stored<T>>(document, "record").map(|record| record.state))
        .collect()
}

/// `sort` and `limit` as find options.
fn sorted(sort: Document, limit: Option<usize>) -> FindOptions {
    FindOptions::builder()
        .sort(sort)
        .limit(limit.map(|limit| i64::try_from(limit).unwrap_or(i64::MAX)))
        .build()
}

#[async_trait]
impl Store for MongoStore {
    async fn commit(&self, unit: UnitOfWork) -> Result<CommitReceipt, StoreError> {
        let mut session = self.client.start_session().await.map_err(unavailable)?;
        let options = TransactionOptions::builder()
            .read_concern(Some(ReadConcern::snapshot()))
            .write_concern(Some(WriteConcern::majority()))
            .build();
        let result = session
            .start_transaction()
            .with_options(options)
            .and_run(
                (&self.collections, &unit),
                |session, (collections, unit)| apply_unit(collections, unit, session).boxed(),
            )
            .await;
        let error = match result {
            Ok(receipt) => return Ok(receipt),
            Err(error) => error,
        };
        match error.get_custom::<Refusal>().cloned() {
            Some(Refusal::Conflict {
                collection,
                entity,
                expected,
            }) => {
                let found = self.stored_version(collection, entity).await?;
                Err(StoreError::VersionConflict {
                    entity: entity.to_string(),
                    expected,
                    found,
                })
            }
            Some(Refusal::Fenced {
                kind,
                shard,
                stored,
                presented,
            }) => Err(StoreError::Fenced {
                kind,
                shard,
                stored,
                presented,
            }),
            Some(Refusal::Corrupt(message)) => Err(StoreError::Corrupt(message)),
            None => {
                tracing::warn!(error = %error, "mongodb commit failed");
                Err(unavailable(error))
            }
        }
    }

    async fn raise_fence(&self, kind: &str, shard: u32, epoch: u64) -> Result<u64, StoreError> {
        let epoch = i64::try_from(epoch).map_err(|_| corrupt("fence epoch beyond Int64"))?;
        // Two first raises of a shard race to insert its document: MongoDB fails the loser
        // with a duplicate key (SecantusDB answers it with no document). The document exists
        // then, so the second attempt updates it.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let raised = self
                .collections
                .shard_fences
                .find_one_and_update(
                    doc! {"_id": fence_id(kind, shard)},
                    doc! {"$max": {"epoch": epoch}},
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match raised {
                Ok(Some(document)) => return read_u64(&document, "epoch"),
                Ok(None) if attempts < 3 => {}
                Err(error) if is_duplicate_key(&error) && attempts < 3 => {}
                Ok(None) => return Err(corrupt("fence upsert returned no document")),
                Err(error) => return Err(unavailable(error)),
            }
        }
    }

    async fn load_ticket(&self, id: TicketId) -> Result<Option<Stored<Ticket>>, StoreError> {
        self.collections
            .tickets
            .find_one(doc! {"_id": id.to_string()})
            .await
            .map_err(unavailable)?
            .map(|document| from_field(document, "record"))
            .transpose()
    }

    async fn load_order(&self, id: OrderId) -> Result<Option<Stored<Order>>, StoreError> {
        self.collections
            .orders
            .find_one(doc! {"_id": id.to_string()})
            .await
            .map_err(unavailable)?
            .map(|document| from_field(document, "record"))
            .transpose()
    }

    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let record = to_document(user).map_err(|refusal| corrupt(format!("{refusal:?}")))?;
        let document = doc! {
            "_id": user.id.to_string(),
            "email": user.email.as_str(),
            "record": record,
        };
        match self.collections.users.insert_one(document).await {
            Ok(_) => Ok(()),
            // User ids are random 12-byte ids, so a duplicate key is the unique email index.
            Err(error) if is_duplicate_key(&error) => Err(StoreError::EmailTaken),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.collections
            .users
            .find_one(doc! {"email": email.as_str()})
            .await
            .map_err(unavailable)?
            .map(|document| from_field(document, "record"))
            .transpose()
    }

    async fn list_available_tickets(
        &self,
        after: Option<TicketId>,
        limit: usize,
    ) -> Result<Vec<Ticket>, StoreError> {
        let mut filter = doc! {"available": true};
        if let Some(after) = after {
            // Lower-case hex sorts like the id's bytes, so paging by `_id` is paging by id.
            filter.insert("_id", doc! {"$gt": after.to_string()});
        }
        find_states(
            &self.collections.tickets,
            filter,
            sorted(doc! {"_id": 1}, Some(limit)),
        )
        .await
    }

    async fn list_orders_of_user(&self, user: UserId) -> Result<Vec<Order>, StoreError> {
        find_states(
            &self.collections.orders,
            doc! {"userId": user.to_string()},
            sorted(doc! {"createdAt": 1, "_id": 1}, None),
        )
        .await
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let documents = find_all(
            &self.collections.events,
            doc! {"_id": {"$gt": after}},
            sorted(doc! {"_id": 1}, Some(limit)),
        )
        .await?;
        documents
            .into_iter()
            .map(|mut document| {
                document.remove("_id");
                bson::from_document(document).map_err(corrupt)
            })
            .collect()
    }

    async fn last_event_seq(&self) -> Result<u64, StoreError> {
        let last = find_all(
            &self.collections.events,
            doc! {},
            sorted(doc! {"_id": -1}, Some(1)),
        )
        .await?;
        match last.first() {
            Some(document) => read_u64(document, "_id"),
            None => Ok(0),
        }
    }

    async fn published_seq(&self) -> Result<u64, StoreError> {
        let document = self
            .collections
            .meta
            .find_one(doc! {"_id": RELAY_META})
            .await
            .map_err(unavailable)?;
        match document {
            Some(document) => read_u64(&document, "publishedSeq"),
            None => Ok(0),
        }
    }

    async fn set_published_seq(&self, seq: u64) -> Result<(), StoreError> {
        let seq = i64::try_from(seq).map_err(|_| corrupt("sequence beyond Int64"))?;
        // `$max`: the position never goes back, as in the embedded store.
        self.collections
            .meta
            .update_one(
                doc! {"_id": RELAY_META},
                doc! {"$max": {"publishedSeq": seq}},
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn pending_commands(&self, limit: usize) -> Result<Vec<(u64, Command)>, StoreError> {
        let documents = find_all(
            &self.collections.commands,
            doc! {},
            sorted(doc! {"_id": 1}, Some(limit)),
        )
        .await?;
        documents
            .into_iter()
            .map(|document| {
                let id = read_u64(&document, "_id")?;
                Ok((id, from_field(document, "command")?))
            })
            .collect()
    }

    async fn deadlines(&self) -> Result<Vec<Deadline>, StoreError> {
        // A numeric range: it skips documents without a deadline and can use the index.
        let filter = doc! {"deadline": {"$gte": i64::MIN}};
        let mut all = Vec::new();
        for (collection, kind) in [
            (&self.collections.orders, DeadlineKind::OrderExpiry),
            (&self.collections.tickets, DeadlineKind::TicketReservation),
        ] {
            let options = FindOptions::builder()
                .projection(doc! {"deadline": 1})
                .build();
            let documents = find_all(collection, filter.clone(), options).await?;
            for document in documents {
                let id = document
                    .get_str("_id")
                    .map_err(corrupt)
                    .and_then(|id| ObjectId::parse(id).map_err(corrupt))?;
                let due = document.get_i64("deadline").map_err(corrupt)?;
                all.push(Deadline {
                    due: Timestamp::from_millis(due),
                    kind,
                    entity: id,
                });
            }
        }
        all.sort();
        Ok(all)
    }

    async fn orders_awaiting_payment(&self) -> Result<Vec<Order>, StoreError> {
        find_states(
            &self.collections.orders,
            doc! {"status": OrderStatus::AwaitingPayment.as_str()},
            FindOptions::default(),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn counts(&self) -> Result<EntityCounts, StoreError> {
        let tickets = self
            .collections
            .tickets
            .count_documents(doc! {})
            .await
            .map_err(unavailable)?;
        let orders = self
            .collections
            .orders
            .count_documents(doc! {})
            .await
            .map_err(unavailable)?;
        Ok(EntityCounts { tickets, orders })
    }
}
