//! The `Store` contract, written once and run against every adapter: the embedded redb store
//! (the reference) and the MongoDB store (against SecantusDB). Each check gets a fresh store
//! (a new data directory, or a new database on the shared server).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use boxoffice::domain::{
    Change, DomainEvent, Email, ObjectId, Order, OrderId, OrderStatus, Payment, PaymentId, Price,
    ReserveDecision, Ticket, TicketId, TicketSnapshot, Timestamp, Title, User, UserId,
};
use boxoffice::store::{
    Command, Deadline, DeadlineKind, EmbeddedStore, EntityCounts, EntityWrite, Fence, MongoStore,
    Store, StoreError, Stored, UnitOfWork,
};

use crate::servers;

// ---- fixtures ----------------------------------------------------------------------------------

/// A random id whose first 4 bytes are `seconds`, so ids made with increasing `seconds` sort in
/// that order.
fn id_at(seconds: u32) -> ObjectId {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    ObjectId::from_parts(
        seconds,
        [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]],
        u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]),
    )
}

fn new_id() -> ObjectId {
    id_at(1_700_000_000)
}

fn new_ticket(id: ObjectId) -> Change<Ticket> {
    Ticket::create(
        TicketId(id),
        Title::parse("concert").unwrap(),
        Price::from_cents(1250).unwrap(),
        UserId(new_id()),
    )
}

fn ticket_write(change: &Change<Ticket>, expected_version: Option<u64>) -> UnitOfWork {
    UnitOfWork {
        writes: vec![EntityWrite::Ticket {
            expected_version,
            record: Stored::new(change.state.clone()).into(),
        }],
        events: change.events.clone(),
        ..UnitOfWork::default()
    }
}

fn order_write(change: &Change<Order>, expected_version: Option<u64>) -> UnitOfWork {
    UnitOfWork {
        writes: vec![EntityWrite::Order {
            expected_version,
            record: Stored::new(change.state.clone()).into(),
        }],
        events: change.events.clone(),
        ..UnitOfWork::default()
    }
}

/// Creates a ticket at version 0; returns it.
async fn create_ticket(store: &dyn Store, id: ObjectId) -> Ticket {
    let change = new_ticket(id);
    store.commit(ticket_write(&change, None)).await.unwrap();
    change.state
}

fn reserve(ticket: &Ticket, order: OrderId, expires_at: Timestamp) -> Change<Ticket> {
    match ticket.reserve(order, expires_at, expires_at, Duration::ZERO) {
        ReserveDecision::Reserved(change) => change,
        other => panic!("reserve: {other:?}"),
    }
}

fn new_order(user: UserId, ticket: &Ticket, created_at: Timestamp) -> Change<Order> {
    Order::create(
        OrderId(new_id()),
        user,
        TicketSnapshot {
            id: ticket.id,
            title: ticket.title.as_str().to_string(),
            price: ticket.price,
            version: ticket.version,
        },
        created_at,
        Duration::from_secs(900),
    )
}

fn user(email: &str) -> User {
    User {
        id: UserId(new_id()),
        email: Email::parse(email).unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    }
}

async fn all_events(store: &dyn Store) -> Vec<boxoffice::store::StoredEvent> {
    store.events_after(0, 10_000).await.unwrap()
}

// ---- the contract ------------------------------------------------------------------------------

/// Many concurrent writers of one version: exactly one wins each round, the losers leave no
/// trace, and a stale writer is refused with the version it missed.
pub async fn compare_and_set_keeps_exactly_one_winner(store: Arc<dyn Store>) {
    let created = create_ticket(store.as_ref(), new_id()).await;
    let owner = created.owner;
    let mut current = created.clone();
    for round in 1..=3u64 {
        let attempts = (0..8).map(|writer| {
            let store = store.clone();
            let change = current
                .update(
                    owner,
                    Title::parse(&format!("round {round} writer {writer}")).unwrap(),
                    current.price,
                )
                .unwrap();
            tokio::spawn(async move {
                let result = store.commit(ticket_write(&change, Some(round - 1))).await;
                (change.state, result)
            })
        });
        let outcomes = futures::future::join_all(attempts).await;
        let mut winners = Vec::new();
        for outcome in outcomes {
            let (state, result) = outcome.unwrap();
            match result {
                Ok(_) => winners.push(state),
                Err(StoreError::VersionConflict {
                    expected, found, ..
                }) => {
                    assert_eq!(expected, Some(round - 1));
                    assert_eq!(found, Some(round), "a loser sees the winner's version");
                }
                Err(error) => panic!("unexpected error: {error}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one writer wins round {round}");
        current = winners.remove(0);
        let stored = store.load_ticket(created.id).await.unwrap().unwrap();
        assert_eq!(stored.state, current, "the winner's state is stored");
    }
    let events = all_events(store.as_ref()).await;
    assert_eq!(
        events.len(),
        4,
        "one created event and one update per round"
    );
    assert_eq!(
        events.last().unwrap().data["title"],
        current.title.as_str(),
        "only winners' events are in the outbox"
    );

    let stale = current
        .update(owner, Title::parse("late").unwrap(), current.price)
        .unwrap();
    match store.commit(ticket_write(&stale, Some(1))).await {
        Err(StoreError::VersionConflict {
            expected, found, ..
        }) => {
            assert_eq!(expected, Some(1));
            assert_eq!(found, Some(3));
        }
        other => panic!("a stale write must be refused, got {other:?}"),
    }
}

/// Inserting an entity that exists is a conflict, and the refused unit leaves no trace (its
/// events and commands are not stored either).
pub async fn inserting_an_existing_entity_is_refused(store: Arc<dyn Store>) {
    let ticket = create_ticket(store.as_ref(), new_id()).await;
    let order = new_order(UserId(new_id()), &ticket, Timestamp::from_millis(1_000));
    store.commit(order_write(&order, None)).await.unwrap();
    let events_before = all_events(store.as_ref()).await.len();

    let mut again = ticket_write(&new_ticket(ticket.id.0), None);
    again.commands.push(Command::ReleaseTicket {
        ticket_id: ticket.id,
        order_id: order.state.id,
    });
    match store.commit(again).await {
        Err(StoreError::VersionConflict {
            expected, found, ..
        }) => {
            assert_eq!(expected, None);
            assert_eq!(found, Some(0));
        }
        other => panic!("a second insert must be refused, got {other:?}"),
    }
    match store.commit(order_write(&order, None)).await {
        Err(StoreError::VersionConflict { found, .. }) => assert_eq!(found, Some(0)),
        other => panic!("a second order insert must be refused, got {other:?}"),
    }
    // An update of an entity that does not exist is refused too.
    let ghost = new_ticket(new_id());
    assert!(matches!(
        store.commit(ticket_write(&ghost, Some(0))).await,
        Err(StoreError::VersionConflict { found: None, .. })
    ));
    assert!(store.load_ticket(ghost.state.id).await.unwrap().is_none());
    assert_eq!(all_events(store.as_ref()).await.len(), events_before);
    assert!(store.pending_commands(10).await.unwrap().is_empty());
}

/// Emails are unique; they arrive normalised, so two spellings of one address collide.
pub async fn email_is_unique(store: Arc<dyn Store>) {
    let ada = user("ada@example.com");
    store.insert_user(&ada).await.unwrap();
    assert!(matches!(
        store.insert_user(&user("ada@example.com")).await,
        Err(StoreError::EmailTaken)
    ));
    assert!(matches!(
        store.insert_user(&user("  ADA@Example.COM ")).await,
        Err(StoreError::EmailTaken)
    ));
    let found = store
        .find_user_by_email(&Email::parse("Ada@example.com").unwrap())
        .await
        .unwrap()
        .expect("found by email");
    assert_eq!(found.id, ada.id);
    assert_eq!(found.password_hash, ada.password_hash);
    assert!(
        store
            .find_user_by_email(&Email::parse("grace@example.com").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    store.insert_user(&user("grace@example.com")).await.unwrap();
}

fn fenced(unit: UnitOfWork, shard: u32, epoch: u64) -> UnitOfWork {
    UnitOfWork {
        fence: Some(Fence {
            kind: "ticket".into(),
            shard,
            epoch,
        }),
        ..unit
    }
}

/// A unit whose fence epoch is below the shard's is refused whole; equal and higher pass; a
/// shard never fenced is at epoch 0.
pub async fn fence_refuses_a_lower_epoch(store: Arc<dyn Store>) {
    assert_eq!(store.raise_fence("ticket", 7, 5).await.unwrap(), 5);
    let refused = new_ticket(new_id());
    match store
        .commit(fenced(ticket_write(&refused, None), 7, 4))
        .await
    {
        Err(StoreError::Fenced {
            kind,
            shard,
            stored,
            presented,
        }) => {
            assert_eq!(
                (kind.as_str(), shard, stored, presented),
                ("ticket", 7, 5, 4)
            );
        }
        other => panic!("a lower epoch must be fenced off, got {other:?}"),
    }
    assert!(store.load_ticket(refused.state.id).await.unwrap().is_none());
    assert!(all_events(store.as_ref()).await.is_empty());

    let equal = new_ticket(new_id());
    store
        .commit(fenced(ticket_write(&equal, None), 7, 5))
        .await
        .unwrap();
    let higher = new_ticket(new_id());
    store
        .commit(fenced(ticket_write(&higher, None), 7, 6))
        .await
        .unwrap();
    let other_shard = new_ticket(new_id());
    store
        .commit(fenced(ticket_write(&other_shard, None), 8, 0))
        .await
        .unwrap();
    // Same shard number, other kind: its own fence.
    let order_kind = UnitOfWork {
        fence: Some(Fence {
            kind: "order".into(),
            shard: 7,
            epoch: 1,
        }),
        ..ticket_write(&new_ticket(new_id()), None)
    };
    store.commit(order_kind).await.unwrap();
    assert_eq!(store.counts().await.unwrap().tickets, 4);
    // A version conflict is still a version conflict behind a passing fence.
    assert!(matches!(
        store.commit(fenced(ticket_write(&equal, None), 7, 6)).await,
        Err(StoreError::VersionConflict { .. })
    ));
}

/// Raising a fence never lowers it, also when raises race.
pub async fn raise_fence_never_lowers(store: Arc<dyn Store>) {
    assert_eq!(store.raise_fence("order", 1, 3).await.unwrap(), 3);
    assert_eq!(store.raise_fence("order", 1, 9).await.unwrap(), 9);
    assert_eq!(store.raise_fence("order", 1, 4).await.unwrap(), 9);
    assert_eq!(store.raise_fence("order", 1, 9).await.unwrap(), 9);
    assert!(matches!(
        store
            .commit(UnitOfWork {
                fence: Some(Fence {
                    kind: "order".into(),
                    shard: 1,
                    epoch: 8,
                }),
                ..ticket_write(&new_ticket(new_id()), None)
            })
            .await,
        Err(StoreError::Fenced { stored: 9, .. })
    ));
    let raises = (1..=20u64).map(|epoch| {
        let store = store.clone();
        tokio::spawn(async move { store.raise_fence("order", 2, epoch).await.unwrap() })
    });
    for stored in futures::future::join_all(raises).await {
        assert!(stored.unwrap() >= 1);
    }
    assert_eq!(store.raise_fence("order", 2, 0).await.unwrap(), 20);
}

/// Events are numbered 1, 2, 3... in commit order, with no gaps even when commits race, and a
/// receipt names its unit's last event.
pub async fn events_get_increasing_seqs_in_commit_order(store: Arc<dyn Store>) {
    let first = store
        .commit(ticket_write(&new_ticket(new_id()), None))
        .await
        .unwrap();
    assert_eq!(first.last_event_seq, 1);
    let second = store
        .commit(ticket_write(&new_ticket(new_id()), None))
        .await
        .unwrap();
    assert_eq!(second.last_event_seq, 2, "a later commit gets a later seq");

    // Concurrent units of two events each (an order's creation and a ticket's), racing.
    let units = (0..12).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let ticket = new_ticket(new_id());
            let order = new_order(UserId(new_id()), &ticket.state, Timestamp::from_millis(5));
            let unit = UnitOfWork {
                writes: vec![
                    EntityWrite::Ticket {
                        expected_version: None,
                        record: Stored::new(ticket.state.clone()).into(),
                    },
                    EntityWrite::Order {
                        expected_version: None,
                        record: Stored::new(order.state.clone()).into(),
                    },
                ],
                events: ticket.events.iter().chain(&order.events).cloned().collect(),
                ..UnitOfWork::default()
            };
            let ids: Vec<String> = unit.events.iter().map(DomainEvent::id).collect();
            (ids, store.commit(unit).await.unwrap())
        })
    });
    let committed = futures::future::join_all(units).await;
    let events = all_events(store.as_ref()).await;
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=26).collect::<Vec<u64>>(), "no gaps, no repeats");
    for outcome in committed {
        let (ids, receipt) = outcome.unwrap();
        let position = |id: &String| events.iter().find(|event| &event.id == id).unwrap().seq;
        let (created, ordered) = (position(&ids[0]), position(&ids[1]));
        assert_eq!(ordered, created + 1, "a unit's events are consecutive");
        assert_eq!(receipt.last_event_seq, ordered);
    }
    let names: HashSet<&str> = events.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(
        names,
        HashSet::from(["ticket.created", "order.created"]),
        "names are kept"
    );
}

/// `events_after` pages through the outbox; the relay position only moves forward.
pub async fn events_after_pages_and_the_relay_position_only_grows(store: Arc<dyn Store>) {
    assert_eq!(store.last_event_seq().await.unwrap(), 0);
    let ticket = new_ticket(new_id());
    for _ in 0..5 {
        store
            .commit(ticket_write(&new_ticket(new_id()), None))
            .await
            .unwrap();
    }
    store.commit(ticket_write(&ticket, None)).await.unwrap();
    let page = |after: u64| {
        let store = store.clone();
        async move {
            store
                .events_after(after, 2)
                .await
                .unwrap()
                .iter()
                .map(|event| event.seq)
                .collect::<Vec<u64>>()
        }
    };
    assert_eq!(page(0).await, vec![1, 2]);
    assert_eq!(page(2).await, vec![3, 4]);
    assert_eq!(page(4).await, vec![5, 6]);
    assert_eq!(page(6).await, Vec::<u64>::new());
    assert_eq!(store.last_event_seq().await.unwrap(), 6);
    let last = store.events_after(5, 10).await.unwrap().remove(0);
    assert_eq!(last.id, ticket.events[0].id());
    assert_eq!(last.name, "ticket.created");
    assert_eq!(
        last.data,
        ticket.events[0].payload(),
        "the payload survives"
    );

    assert_eq!(store.published_seq().await.unwrap(), 0);
    store.set_published_seq(3).await.unwrap();
    assert_eq!(store.published_seq().await.unwrap(), 3);
    store.set_published_seq(2).await.unwrap();
    assert_eq!(store.published_seq().await.unwrap(), 3, "never goes back");
    store.set_published_seq(6).await.unwrap();
    assert_eq!(store.published_seq().await.unwrap(), 6);
}

/// Commands are pending, oldest first, until a unit marks them done.
pub async fn commands_stay_pending_until_done(store: Arc<dyn Store>) {
    let ticket = create_ticket(store.as_ref(), new_id()).await;
    let order = new_order(UserId(new_id()), &ticket, Timestamp::from_millis(10));
    let release = Command::ReleaseTicket {
        ticket_id: ticket.id,
        order_id: order.state.id,
    };
    let sold = Command::MarkTicketSold {
        ticket_id: ticket.id,
        order_id: order.state.id,
    };
    let mut unit = order_write(&order, None);
    unit.commands = vec![release, sold];
    let receipt = store.commit(unit).await.unwrap();
    assert_eq!(receipt.command_ids.len(), 2);
    assert!(receipt.command_ids[0] < receipt.command_ids[1]);
    assert_eq!(
        store.pending_commands(10).await.unwrap(),
        vec![
            (receipt.command_ids[0], release),
            (receipt.command_ids[1], sold)
        ]
    );
    assert_eq!(store.pending_commands(1).await.unwrap().len(), 1);

    store
        .commit(UnitOfWork {
            commands_done: vec![receipt.command_ids[0]],
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.pending_commands(10).await.unwrap(),
        vec![(receipt.command_ids[1], sold)]
    );
    let later = store
        .commit(UnitOfWork {
            commands: vec![release],
            commands_done: vec![receipt.command_ids[1]],
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
    assert!(
        later.command_ids[0] > receipt.command_ids[1],
        "ids keep growing"
    );
    assert_eq!(
        store.pending_commands(10).await.unwrap(),
        vec![(later.command_ids[0], release)]
    );
}

/// Deadlines are armed, moved and disarmed by the entity writes themselves.
pub async fn deadlines_follow_entity_writes(store: Arc<dyn Store>) {
    assert!(store.deadlines().await.unwrap().is_empty());
    let ticket = create_ticket(store.as_ref(), new_id()).await;
    let user = UserId(new_id());
    let order = new_order(user, &ticket, Timestamp::from_millis(1_000_000));
    let order_deadline = order.state.expires_at;
    store.commit(order_write(&order, None)).await.unwrap();

    let first_hold = Timestamp::from_millis(2_000_000);
    let reserved = reserve(&ticket, order.state.id, first_hold);
    store
        .commit(ticket_write(&reserved, Some(0)))
        .await
        .unwrap();
    let expected = |ticket_due: Option<Timestamp>, order_due: Option<Timestamp>| {
        let mut deadlines: Vec<Deadline> = ticket_due
            .map(|due| Deadline {
                due,
                kind: DeadlineKind::TicketReservation,
                entity: ticket.id.0,
            })
            .into_iter()
            .chain(order_due.map(|due| Deadline {
                due,
                kind: DeadlineKind::OrderExpiry,
                entity: order.state.id.0,
            }))
            .collect();
        deadlines.sort();
        deadlines
    };
    let mut armed = store.deadlines().await.unwrap();
    armed.sort();
    assert_eq!(armed, expected(Some(first_hold), Some(order_deadline)));

    // Released and reserved again with another deadline: the deadline moves.
    let released = reserved.state.release(order.state.id).unwrap();
    store
        .commit(ticket_write(&released, Some(1)))
        .await
        .unwrap();
    let mut armed = store.deadlines().await.unwrap();
    armed.sort();
    assert_eq!(armed, expected(None, Some(order_deadline)));
    let second_hold = Timestamp::from_millis(3_000_000);
    let again = reserve(&released.state, order.state.id, second_hold);
    store.commit(ticket_write(&again, Some(2))).await.unwrap();
    let mut armed = store.deadlines().await.unwrap();
    armed.sort();
    assert_eq!(armed, expected(Some(second_hold), Some(order_deadline)));

    // The order is cancelled: its expiry is disarmed; the ticket's stays until released.
    let cancelled = order.state.cancel(user).unwrap().unwrap();
    store
        .commit(order_write(&cancelled, Some(0)))
        .await
        .unwrap();
    let mut armed = store.deadlines().await.unwrap();
    armed.sort();
    assert_eq!(armed, expected(Some(second_hold), None));
    let freed = again.state.release(order.state.id).unwrap();
    store.commit(ticket_write(&freed, Some(3))).await.unwrap();
    assert!(store.deadlines().await.unwrap().is_empty());
}

/// Orders in `awaiting:payment` are listed, and leave the list when settled.
pub async fn orders_awaiting_payment_are_listed(store: Arc<dyn Store>) {
    let ticket = create_ticket(store.as_ref(), new_id()).await;
    let user = UserId(new_id());
    let order = new_order(user, &ticket, Timestamp::from_millis(1_000));
    store.commit(order_write(&order, None)).await.unwrap();
    let other = new_order(user, &ticket, Timestamp::from_millis(2_000));
    store.commit(order_write(&other, None)).await.unwrap();
    assert!(store.orders_awaiting_payment().await.unwrap().is_empty());

    let charging = match order
        .state
        .begin_payment(user, "tok_visa", None, Timestamp::from_millis(1_500))
        .unwrap()
    {
        boxoffice::domain::BeginPayment::Charge(change, _) => change,
        other => panic!("begin payment: {other:?}"),
    };
    store.commit(order_write(&charging, Some(0))).await.unwrap();
    let awaiting = store.orders_awaiting_payment().await.unwrap();
    assert_eq!(awaiting.len(), 1);
    assert_eq!(awaiting[0].id, order.state.id);
    assert_eq!(awaiting[0].status, OrderStatus::AwaitingPayment);
    assert!(awaiting[0].payment.is_some(), "the attempt is kept");

    let payment_id = PaymentId(new_id());
    let (complete, payment): (Change<Order>, Payment) =
        charging.state.complete_payment(payment_id, "ch_123");
    let mut unit = order_write(&complete, Some(1));
    unit.payments.push(payment);
    store.commit(unit).await.unwrap();
    assert!(store.orders_awaiting_payment().await.unwrap().is_empty());
    let stored = store.load_order(order.state.id).await.unwrap().unwrap();
    assert_eq!(stored.state.status, OrderStatus::Complete);
    let names: Vec<String> = all_events(store.as_ref())
        .await
        .into_iter()
        .map(|event| event.name)
        .collect();
    assert!(names.ends_with(&["order.completed".into(), "payment.created".into()]));
}

/// Available tickets are listed by id, paged with `after`, without held ones.
pub async fn available_tickets_page_by_id(store: Arc<dyn Store>) {
    let mut tickets = Vec::new();
    for second in [50u32, 10, 40, 20, 30] {
        tickets.push(create_ticket(store.as_ref(), id_at(second)).await);
    }
    let held = tickets.iter().find(|t| t.id.0.bytes()[3] == 40).unwrap();
    let reserved = reserve(held, OrderId(new_id()), Timestamp::from_millis(9_000_000));
    store
        .commit(ticket_write(&reserved, Some(0)))
        .await
        .unwrap();
    let mut expected: Vec<TicketId> = tickets
        .iter()
        .filter(|ticket| ticket.id != held.id)
        .map(|ticket| ticket.id)
        .collect();
    expected.sort();

    let first = store.list_available_tickets(None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|t| t.id).collect::<Vec<_>>(),
        expected[..2].to_vec()
    );
    assert_eq!(
        first[0],
        *tickets.iter().find(|t| t.id == first[0].id).unwrap()
    );
    let second = store
        .list_available_tickets(Some(first[1].id), 2)
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|t| t.id).collect::<Vec<_>>(),
        expected[2..].to_vec()
    );
    assert!(
        store
            .list_available_tickets(Some(second[1].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    // Released again: listed again.
    let released = reserved
        .state
        .release(reserved.state.order_id().unwrap())
        .unwrap();
    store
        .commit(ticket_write(&released, Some(1)))
        .await
        .unwrap();
    assert_eq!(
        store.list_available_tickets(None, 10).await.unwrap().len(),
        5
    );
}

/// A user's orders come back in creation order, and only theirs.
pub async fn orders_of_a_user_in_creation_order(store: Arc<dyn Store>) {
    let ticket = create_ticket(store.as_ref(), new_id()).await;
    let user = UserId(new_id());
    let mut created = Vec::new();
    for millis in [3_000i64, 1_000, 2_000] {
        let order = new_order(user, &ticket, Timestamp::from_millis(millis));
        store.commit(order_write(&order, None)).await.unwrap();
        created.push(order.state);
    }
    let stranger = new_order(UserId(new_id()), &ticket, Timestamp::from_millis(1_500));
    store.commit(order_write(&stranger, None)).await.unwrap();
    // A later write of the first order does not move it in the list.
    let cancelled = created[0].cancel(user).unwrap().unwrap();
    store
        .commit(order_write(&cancelled, Some(0)))
        .await
        .unwrap();
    created[0] = cancelled.state;

    created.sort_by_key(|order| order.created_at);
    assert_eq!(store.list_orders_of_user(user).await.unwrap(), created);
    assert!(
        store
            .list_orders_of_user(UserId(new_id()))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Counts of stored tickets and orders.
pub async fn counts_tickets_and_orders(store: Arc<dyn Store>) {
    assert_eq!(store.counts().await.unwrap(), EntityCounts::default());
    let ticket = create_ticket(store.as_ref(), new_id()).await;
    create_ticket(store.as_ref(), new_id()).await;
    let order = new_order(UserId(new_id()), &ticket, Timestamp::from_millis(1));
    store.commit(order_write(&order, None)).await.unwrap();
    assert_eq!(
        store.counts().await.unwrap(),
        EntityCounts {
            tickets: 2,
            orders: 1
        }
    );
}

// ---- one test per check and backend -----------------------------------------------------------

/// A fresh embedded store in a temporary directory (kept alive by the returned guard).
fn embedded() -> (Arc<dyn Store>, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(directory.path()).unwrap();
    (Arc::new(store), directory)
}

/// A MongoDB store on a database no other test uses.
async fn mongo() -> Arc<dyn Store> {
    let database = servers::unique_name("contract");
    Arc::new(
        MongoStore::connect(&servers::mongo_url(), &database)
            .await
            .unwrap(),
    )
}

macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _directory) = super::embedded();
                    super::$check(store).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::mongo().await).await;
                }
            )*
        }
    };
}

contract!(
    compare_and_set_keeps_exactly_one_winner,
    inserting_an_existing_entity_is_refused,
    email_is_unique,
    fence_refuses_a_lower_epoch,
    raise_fence_never_lowers,
    events_get_increasing_seqs_in_commit_order,
    events_after_pages_and_the_relay_position_only_grows,
    commands_stay_pending_until_done,
    deadlines_follow_entity_writes,
    orders_awaiting_payment_are_listed,
    available_tickets_page_by_id,
    orders_of_a_user_in_creation_order,
    counts_tickets_and_orders,
);
