//! Bulk seeding for memory and scale measurements: writes COUNT tickets straight into an embedded
//! data directory through the `Store` port (the same records, versions, transitions and
//! `ticket.created` events the ticket actor would write), far faster than the HTTP API, so a
//! million-ticket store can be measured (`bench/idle-rss`). The seeded events are marked as
//! already relayed, as in a server that has run for a while: otherwise the next start would
//! spend its first minute publishing a million `ticket.created` events.
//!
//! `cargo run --release --example seed_tickets -- DATA_DIR COUNT` (the directory must not be in
//! use by a running server). Tickets belong to a fixed seller id and cost 12.50.

use std::path::PathBuf;
use std::time::Instant;

use boxoffice::domain::{Price, TicketId, Title, UserId};
use boxoffice::ids::IdGenerator;
use boxoffice::store::seed::created_ticket;
use boxoffice::store::{EmbeddedStore, EntityWrite, Store, UnitOfWork};

/// Tickets per commit: large groups are what the store's group commit is for.
const BATCH: usize = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(directory), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: seed_tickets DATA_DIR COUNT");
        std::process::exit(2);
    };
    let directory = PathBuf::from(directory);
    let count: usize = count.parse()?;
    std::fs::create_dir_all(&directory)?;
    let store = EmbeddedStore::open(&directory)?;
    let ids = IdGenerator::new();
    let seller = UserId::parse("5eed5eed5eed5eed5eed5eed")?;
    let price = Price::parse_decimal("12.50").map_err(|error| error.message)?;
    let started = Instant::now();
    let mut written = 0;
    let mut last_event_seq = 0;
    while written < count {
        let mut unit = UnitOfWork::default();
        for index in written..(written + BATCH).min(count) {
            let title =
                Title::parse(&format!("Seeded seat {index}")).map_err(|error| error.message)?;
            let (record, events) = created_ticket(TicketId(ids.next()), title, price, seller);
            unit.writes.push(EntityWrite::Ticket {
                expected_version: None,
                record: record.into(),
            });
            unit.events.extend(events);
        }
        written += unit.writes.len();
        last_event_seq = store.commit(unit).await?.last_event_seq;
        eprint!("\rseeded {written} of {count} tickets");
    }
    store.set_published_seq(last_event_seq).await?;
    // Exiting before the writer thread lets go of the file would leave it for redb to repair
    // (reading all of it) at the next open.
    if !store.close(std::time::Duration::from_secs(10)) {
        return Err("the store did not close within 10 s".into());
    }
    eprintln!(
        "\nseeded {count} tickets into {} in {:.1} s",
        directory.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
