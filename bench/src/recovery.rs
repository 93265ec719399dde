//! `recovery`: a device holding a whole caseload reconnects to a server restored from a backup
//! taken before some of the documents changed on the device (the server lost those changes,
//! and its feed has a new epoch). Counts the recovery's messages, bytes, audit records and
//! seconds over an in-process link (the real protocol state machines and SQLite stores), beside
//! a fresh device's full sync of the same documents and the version-1 fallback (Automerge sync
//! per document) on the same restored server.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sync_core::protocol::{
    DeviceConfig, DeviceEvent, DeviceSession, Peer, ServerConfig, ServerEvent, ServerSession,
};
use sync_core::repo::Repo;
use sync_core::store::{SqliteStore, Store};
use sync_core::{DocumentId, Month, Role, Timestamp};

use crate::reconnect::{OpenPolicy, author, caseload, write_something};

pub struct Params {
    pub docs: usize,
    /// Percent of the documents that changed on the device after the backup.
    pub changed_percent: usize,
}

/// Accepted changes are named 40 to an audit record (as `server::app::sync` writes them).
const HASHES_PER_RECORD: usize = 40;

#[derive(Default, Debug)]
struct Cost {
    messages_up: usize,
    messages_down: usize,
    bytes_up: usize,
    bytes_down: usize,
    /// Audit records the server writes for the session's events (`server::app::sync`).
    audit_records: usize,
    seconds: f64,
}

impl Cost {
    fn json(&self) -> Value {
        json!({
            "messages": self.messages_up + self.messages_down,
            "messages_up": self.messages_up,
            "messages_down": self.messages_down,
            "bytes": self.bytes_up + self.bytes_down,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "audit_records": self.audit_records,
            "seconds": self.seconds,
        })
    }
}

fn audit_records(event: &ServerEvent) -> usize {
    match event {
        ServerEvent::Disclosed { .. }
        | ServerEvent::Refused { .. }
        | ServerEvent::RecoveryDisclosed { .. }
        | ServerEvent::Recovered { .. }
        | ServerEvent::FeedDiverged { .. } => 1,
        ServerEvent::Accepted { changes, .. } => changes.len().div_ceil(HASHES_PER_RECORD),
        _ => 0,
    }
}

/// One connection until both sides are quiet.
fn drive(
    device: &mut DeviceSession,
    device_repo: &mut Repo<SqliteStore>,
    server: &mut ServerSession,
    server_repo: &mut Repo<SqliteStore>,
    policy: &OpenPolicy,
    now: Timestamp,
) -> Result<Cost> {
    let mut c = Cost::default();
    let started = Instant::now();
    device.connect(device_repo, now)?;
    for _ in 0..1_000_000 {
        let mut up = Vec::new();
        while let Some(b) = device.poll_transmit() {
            up.push(b);
        }
        for b in &up {
            c.messages_up += 1;
            c.bytes_up += b.len();
            server.handle_bytes(server_repo, policy, b, now);
        }
        let mut down = Vec::new();
        while let Some(b) = server.poll_transmit() {
            down.push(b);
        }
        for b in &down {
            c.messages_down += 1;
            c.bytes_down += b.len();
            device.handle_bytes(device_repo, b, now);
        }
        while let Some(e) = server.poll_event() {
            c.audit_records += audit_records(&e);
        }
        while let Some(ev) = device.poll_event() {
            if let DeviceEvent::Closed { reason, detail } = ev {
                bail!("the connection closed: {reason:?} {detail}");
            }
        }
        if up.is_empty() && down.is_empty() {
            device.disconnected();
            c.seconds = started.elapsed().as_secs_f64();
            return Ok(c);
        }
    }
    bail!("the protocol did not go quiet")
}

/// Copies a closed SQLite store (its file and WAL, if any).
fn copy_store(from: &Path, to: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let f = Path::new(&format!("{}{suffix}", from.display())).to_path_buf();
        let t = Path::new(&format!("{}{suffix}", to.display())).to_path_buf();
        if t.exists() {
            std::fs::remove_file(&t)?;
        }
        if f.exists() {
            std::fs::copy(&f, &t).with_context(|| format!("copying {}", f.display()))?;
        }
    }
    Ok(())
}

pub fn run(p: &Params) -> Result<Value> {
    if p.docs < 5 || p.changed_percent > 100 {
        bail!("--docs must be at least 5 and --changed-percent at most 100");
    }
    let dir = tempfile::tempdir()?;
    let server_db = dir.path().join("server.db");
    let backup_db = dir.path().join("backup.db");
    let device_db = dir.path().join("device.db");
    let v1_db = dir.path().join("device-v1.db");
    let mut server_repo = Repo::new(SqliteStore::open(&server_db)?);
    let mut device_repo = Repo::new(SqliteStore::open(&device_db)?);
    let mut other_repo = Repo::new(SqliteStore::open(dir.path().join("other.db"))?);
    let nurse = author("nurse", Role::Nurse)?;
    let month: Month = "2026-11".parse()?;
    let t0 = Timestamp(1_795_478_400_000);

    let (patients, docs) = caseload(p.docs, month)?;
    for (i, doc) in docs.iter().enumerate() {
        write_something(&mut other_repo, doc, &nurse, t0, i)?;
    }
    let policy = OpenPolicy(patients.clone());
    let device_author = author("nurse-2", Role::Nurse)?;
    let other_peer = Peer { author: nurse };
    let device_peer = Peer {
        author: device_author.clone(),
    };
    let mut other = DeviceSession::new(DeviceConfig::default());
    let mut s = ServerSession::new(other_peer, ServerConfig::default());
    drive(
        &mut other,
        &mut other_repo,
        &mut s,
        &mut server_repo,
        &policy,
        t0,
    )?;
    let mut device = DeviceSession::new(DeviceConfig::default());
    let mut s = ServerSession::new(device_peer.clone(), ServerConfig::default());
    drive(
        &mut device,
        &mut device_repo,
        &mut s,
        &mut server_repo,
        &policy,
        t0,
    )?;

    // The backup, then a day of changes on the device that reach the server.
    drop(server_repo);
    copy_store(&server_db, &backup_db)?;
    let mut server_repo = Repo::new(SqliteStore::open(&server_db)?);
    let later = Timestamp(t0.0 + 86_400_000);
    let changed_docs = (docs.len() * p.changed_percent).div_ceil(100);
    let step = (docs.len() / changed_docs.max(1)).max(1);
    let changed: Vec<&DocumentId> = docs.iter().step_by(step).take(changed_docs).collect();
    let mut new_hashes = Vec::new();
    for (i, doc) in changed.iter().enumerate() {
        let hash = write_something(&mut device_repo, doc, &device_author, later, 100_000 + i)?;
        new_hashes.push(((*doc).clone(), hash));
    }
    let mut s = ServerSession::new(device_peer.clone(), ServerConfig::default());
    drive(
        &mut device,
        &mut device_repo,
        &mut s,
        &mut server_repo,
        &policy,
        later,
    )?;

    // The restore: the backup put back under a new epoch (as `nara-server admin restore` does).
    drop(server_repo);
    copy_store(&backup_db, &server_db)?;
    let mut server_repo = Repo::new(SqliteStore::open(&server_db)?);
    server_repo.store_mut().set_epoch([0xab; 16])?;
    // A copy of the device for the version-1 fallback, measured afterwards on the same state.
    drop(device_repo);
    copy_store(&device_db, &v1_db)?;
    let mut device_repo = Repo::new(SqliteStore::open(&device_db)?);

    // The measured recovery.
    let mut s = ServerSession::new(device_peer.clone(), ServerConfig::default());
    let recovery = drive(
        &mut device,
        &mut device_repo,
        &mut s,
        &mut server_repo,
        &policy,
        later,
    )?;
    for (doc, hash) in &new_hashes {
        if server_repo.get(doc)?.automerge_change(hash).is_none() {
            bail!("{doc}: the recovery did not hand back the lost change");
        }
    }
    // The next reconnect is on the feed again.
    let mut s = ServerSession::new(device_peer.clone(), ServerConfig::default());
    let after = drive(
        &mut device,
        &mut device_repo,
        &mut s,
        &mut server_repo,
        &policy,
        later,
    )?;

    // A fresh device's full sync of the same documents, from the recovered server.
    let mut fresh_repo = Repo::new(SqliteStore::open(dir.path().join("fresh.db"))?);
    let fresh_peer = Peer {
        author: author("nurse-3", Role::Nurse)?,
    };
    let mut fresh = DeviceSession::new(DeviceConfig::default());
    let mut s = ServerSession::new(fresh_peer, ServerConfig::default());
    let full = drive(
        &mut fresh,
        &mut fresh_repo,
        &mut s,
        &mut server_repo,
        &policy,
        later,
    )?;

    // The version-1 fallback on the same restored state (the backup again, a new epoch).
    drop(server_repo);
    copy_store(&backup_db, &server_db)?;
    let mut server_repo = Repo::new(SqliteStore::open(&server_db)?);
    server_repo.store_mut().set_epoch([0xcd; 16])?;
    let mut v1_repo = Repo::new(SqliteStore::open(&v1_db)?);
    let mut v1 = DeviceSession::new(DeviceConfig {
        tell_clock: false,
        ..DeviceConfig::default()
    });
    let mut s = ServerSession::new(device_peer, ServerConfig::default());
    let fallback = drive(
        &mut v1,
        &mut v1_repo,
        &mut s,
        &mut server_repo,
        &policy,
        later,
    )?;

    let recovery_bytes = recovery.bytes_up + recovery.bytes_down;
    let full_bytes = full.bytes_up + full.bytes_down;
    Ok(json!({
        "bench": "recovery",
        "transport": "in-process",
        "docs": docs.len(),
        "changed_on_device": changed.len(),
        "recovery": recovery.json(),
        "next_reconnect": after.json(),
        "fresh_full_sync": full.json(),
        "v1_fallback": fallback.json(),
        "goal": {
            "recovery_bytes_below_full_sync": recovery_bytes < full_bytes,
            "recovery_seconds_below_full_sync": recovery.seconds < full.seconds,
            // One per chunk that disclosed something (none here), one per document the device
            // handed back (as any upload), one for the recovery: not one per document held.
            "recovery_audit_records": recovery.audit_records,
            "audit_records_le_changed_plus_1": recovery.audit_records <= changed.len() + 1,
        },
    }))
}
