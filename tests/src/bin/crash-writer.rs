//! The writer process of the crash test: appends notes through the SQLite store as fast as it can
//! and prints `saved <id>` after each `Repo::change` has returned, i.e. after the change is
//! reported saved. The test SIGKILLs it at random moments and checks every printed id survived.
//!
//! Usage: `crash-writer <db path> <first number>`

use std::io::Write;

use anyhow::Context;
use sync_core::model::EventBody;
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: crash-writer <db> <first>")?;
    let first: u64 = args
        .next()
        .context("usage: crash-writer <db> <first>")?
        .parse()?;
    let author = Author::new(
        UserId::new("anna")?,
        Role::Carer,
        DeviceId::new("anna-phone")?,
    );
    let month: Month = "2026-11".parse()?;
    let docs: Vec<DocumentId> = (0..4)
        .map(|p| PatientId::new(format!("p-{p}")).map(|p| DocumentId::journal(&p, month)))
        .collect::<Result<_, _>>()?;
    // Compact often (see maintain below).
    let mut repo = Repo::new(SqliteStore::open(&path)?).with_compact_after(8);
    let mut out = std::io::stdout().lock();
    for n in first.. {
        let doc = &docs[(n % docs.len() as u64) as usize];
        let id = RecordId::new(format!("n{n}"))?;
        let body = EventBody::Note {
            body: format!("Visit note number {n}."),
            corrects: None,
        };
        repo.change(doc, &author, Timestamp(1_795_996_800_000 + n as i64), |e| {
            e.record(id, body)
        })?;
        writeln!(out, "saved {n}")?;
        out.flush()?;
        // Compact whatever is due, as an idle app would, so kills land inside compactions too.
        repo.maintain(usize::MAX)?;
        if n % 5 == 0 {
            // Acknowledge some uploads, as sync will.
            let pending = repo.pending()?;
            if let Some((d, h)) = pending.first() {
                repo.mark_uploaded(d, &[*h])?;
            }
        }
    }
    Ok(())
}
