//! Setting up a care team on a real server's data directory, and enrolling real devices.
//!
//! The directory is written through `server::directory` (the code behind `nara-server admin`)
//! in bulk, in this process, before or while the server process runs (it picks up a change
//! within a second). Devices enroll over HTTPS with the server certificate pinned, as phones do.

use std::path::Path;

use anyhow::{Context, Result};
use nara_client::{Device, SyncOptions};
use server::directory::{Directory, SqliteDirectory};
use sync_core::{DocumentId, Month, PatientId, Role, Timestamp, UserId};

use crate::procs::ServerProc;
use crate::reconnect::edit_for;

pub const ORG: &str = "bench";
/// The month of the journals and administration logs (as the other workloads).
pub const MONTH: &str = "2026-11";
/// 2026-11-24T07:00Z: when the benchmarks' edits are made (ms since the epoch).
pub const DAY_MS: i64 = 1_795_503_600_000;

pub fn month() -> Result<Month> {
    Ok(MONTH.parse()?)
}

/// Opens (creating) the directory of the data directory `data`, with the bench's organisation.
pub fn directory(data: &Path) -> Result<SqliteDirectory> {
    std::fs::create_dir_all(data)?;
    let dir = SqliteDirectory::open(&server::admin_cli::directory_path(data))?;
    add_org(&dir);
    Ok(dir)
}

/// Adds the bench's organisation to `dir` (unless it is there already).
pub fn add_org(dir: &dyn Directory) {
    if dir.add_org(ORG, "Bench home care").is_err() {
        // Already there.
    }
}

/// Adds `n` users `{prefix}{i}` with `role`.
pub fn users(dir: &dyn Directory, prefix: &str, n: usize, role: Role) -> Result<Vec<UserId>> {
    (0..n)
        .map(|i| {
            let id = UserId::new(format!("{prefix}{i}"))?;
            dir.add_user(&id, &format!("{prefix} {i}"), role, ORG)
                .with_context(|| format!("adding {id}"))?;
            Ok(id)
        })
        .collect()
}

/// Adds `n` people `p0000`, `p0001`, ...
pub fn patients(dir: &dyn Directory, n: usize) -> Result<Vec<PatientId>> {
    (0..n)
        .map(|i| {
            let id = PatientId::new(format!("p{i:04}"))?;
            dir.add_patient(&id, &format!("Person {i}"))
                .with_context(|| format!("adding {id}"))?;
            Ok(id)
        })
        .collect()
}

/// Assigns every user to every patient.
pub fn assign_all(dir: &dyn Directory, users: &[UserId], patients: &[PatientId]) -> Result<()> {
    for u in users {
        for p in patients {
            dir.assign(u, p)
                .with_context(|| format!("assigning {u} to {p}"))?;
        }
    }
    Ok(())
}

/// A person's five documents (this month's journal and administration log).
pub fn documents(patient: &PatientId) -> Result<[DocumentId; 5]> {
    let m = month()?;
    Ok([
        DocumentId::patient_header(patient),
        DocumentId::care_plan(patient),
        DocumentId::medication(patient),
        DocumentId::administrations(patient, m),
        DocumentId::journal(patient, m),
    ])
}

/// Enrolls a new device of `user` in `home` against `url` (the server, or a proxy in front of
/// it), pinned to the server key's `pin`.
pub async fn enroll(
    dir: &dyn Directory,
    url: &str,
    pin: &str,
    user: &UserId,
    home: &Path,
    options: SyncOptions,
) -> Result<Device> {
    let code = dir.enroll(user, nara_client::now().0)?;
    // The server limits enrollment attempts (429 past the limit): a team of hundreds waits
    // its turn, as an app would.
    let mut attempts = 0;
    loop {
        let request = nara_client::EnrollRequest {
            server: url.to_owned(),
            code: code.clone(),
            pin: Some(pin.to_owned()),
            ..Default::default()
        };
        match Device::enroll_with(home, &request, options.clone()).await {
            Ok((device, _)) => return Ok(device),
            Err(nara_client::ClientError::Http { status: 429, .. }) if attempts < 600 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("enrolling a device of {user}")),
        }
    }
}

/// Writes one ordinary change into each of `docs` on `device` (numbered from `first`);
/// returns how many.
pub fn write_each(device: &Device, docs: &[DocumentId], first: usize) -> Result<usize> {
    let role = device.author().role;
    for (i, doc) in docs.iter().enumerate() {
        let at = Timestamp(DAY_MS + i as i64);
        device
            .change(doc, at, edit_for(doc, role, at, first + i)?)
            .with_context(|| format!("writing {doc}"))?;
    }
    Ok(docs.len())
}

/// The team's documents exist on the server: `nurse`'s phone (enrolled in `home`) writes one
/// change into each of the `patients`' five documents and uploads them. Returns the documents.
pub async fn seed(
    dir: &dyn Directory,
    server: &ServerProc,
    nurse: &UserId,
    patients: &[PatientId],
    home: &Path,
) -> Result<Vec<DocumentId>> {
    let seeder = enroll(dir, &server.url(), &server.pin, nurse, home, options()).await?;
    let mut docs = Vec::new();
    for p in patients {
        docs.extend(documents(p)?);
    }
    write_each(&seeder, &docs, 0)?;
    seeder.sync_once().await?;
    Ok(docs)
}

/// Options for bench devices: a short quiet period so `sync_once` returns promptly.
pub fn options() -> SyncOptions {
    SyncOptions {
        quiet_for: std::time::Duration::from_millis(50),
        ..SyncOptions::default()
    }
}
