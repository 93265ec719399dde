//! The writer process of the visit crash test (`tests/tests/slow_link.rs`): saves visits, each
//! a journal change (a start, a note, a stop) and an administration-log change (two doses)
//! written together (`Repo::change_together`), and prints `saved <n>` once visit `n` is
//! reported saved. The test SIGKILLs it at random moments and checks that every visit is in
//! the store whole or not at all, and every reported one is there.
//!
//! Usage: `visit-writer <db path> <first number>`

use std::io::Write;

use anyhow::Context;
use sync_core::model::{AdministrationOutcome, EventBody};
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};

/// The records of visit `n`: (document index 0 journal / 1 administrations, id, body).
pub fn records(n: u64, at: Timestamp) -> anyhow::Result<Vec<(usize, RecordId, EventBody)>> {
    let visit = RecordId::new(format!("v{n}"))?;
    let order = RecordId::new("o1")?;
    Ok(vec![
        (
            0,
            RecordId::new(format!("v{n}-start"))?,
            EventBody::VisitStart {
                visit: visit.clone(),
                occurred_at: at,
            },
        ),
        (
            0,
            RecordId::new(format!("v{n}-note"))?,
            EventBody::Note {
                body: format!("Visit {n}: all tasks done, slept well."),
                corrects: None,
            },
        ),
        (
            0,
            RecordId::new(format!("v{n}-stop"))?,
            EventBody::VisitStop {
                visit,
                occurred_at: at,
            },
        ),
        (
            1,
            RecordId::new(format!("v{n}-dose-a"))?,
            EventBody::Administration {
                order: order.clone(),
                order_revision: order.clone(),
                slot: format!("2026-11-24T{:02}:00", n % 24),
                outcome: AdministrationOutcome::Given,
                reason: None,
                occurred_at: at,
            },
        ),
        (
            1,
            RecordId::new(format!("v{n}-dose-b"))?,
            EventBody::Administration {
                order: order.clone(),
                order_revision: order,
                slot: format!("2026-11-25T{:02}:00", n % 24),
                outcome: AdministrationOutcome::Given,
                reason: None,
                occurred_at: at,
            },
        ),
    ])
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: visit-writer <db> <first>")?;
    let first: u64 = args
        .next()
        .context("usage: visit-writer <db> <first>")?
        .parse()?;
    let author = Author::new(
        UserId::new("anna")?,
        Role::Carer,
        DeviceId::new("anna-phone")?,
    );
    let month: Month = "2026-11".parse()?;
    let p = PatientId::new("p-1")?;
    let docs = [
        DocumentId::journal(&p, month),
        DocumentId::administrations(&p, month),
    ];
    let mut repo = Repo::new(SqliteStore::open(&path)?).with_compact_after(8);
    let mut out = std::io::stdout().lock();
    for n in first.. {
        let at = Timestamp(1_795_996_800_000 + n as i64);
        let records = records(n, at)?;
        repo.change_together(&docs, &author, at, |doc, e| {
            let i = usize::from(*doc != docs[0]);
            for (d, id, body) in &records {
                if *d == i {
                    e.record(id.clone(), body.clone())?;
                }
            }
            Ok(())
        })?;
        writeln!(out, "saved {n}")?;
        out.flush()?;
        repo.maintain(usize::MAX)?;
    }
    Ok(())
}
