//! `nara-server admin`: administration beside a running server, on its data directory or on
//! its PostgreSQL database.
//!
//! Without `--database` the commands open the same SQLite files the server uses
//! ([`directory_path`], [`audit_path`]); SQLite's WAL and busy timeout let both processes have
//! them open at once. With `--database URL` (or `NARA_DATABASE_URL`; `--database-ca FILE` for
//! TLS with a private CA) they act on the directory and the audit log in that PostgreSQL
//! database (`crate::pg`), as every server node on it does; `backup`, `restore`, `login-code`
//! and `revoke-sessions` work on a data directory's files and refuse, saying so. `new-epoch`
//! works on either (the document store's feed; see [`crate::pg::history`] for when PostgreSQL
//! nodes move it by themselves). A change made
//! here bumps the directory's generation, which a running server polls every second, so it
//! reaches live connections within a second (a revoked device is disconnected).
//!
//! The actions and reads are the admin service's ([`crate::admin`]), the very ones the admin
//! HTTP API calls: each is appended to the audit log with actor `"admin"` and the same text
//! as over HTTP, *before* it acts. If the record cannot be written, nothing is done and the
//! command fails; if the action then fails, a second record says it was not done. A device
//! list or an export is recorded before anything is printed. `audit verify` only reads: it
//! examines the log and must not add to it. `audit export` escapes control characters, so no
//! field forges a line.
//!
//! With `--json` every command prints one JSON object (`audit export`: JSON lines, one record
//! each); without it, a short human line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::json;
use sync_core::store::Store;
use sync_core::{DeviceId, PatientId, UserId};

use crate::audit::{SqliteAudit, escape};

mod args;
mod audit_cmd;
mod stores;

pub use args::{AdminArgs, AdminCommand, AuditCommand, VerifyArgs};
use audit_cmd::{audit_command, audit_key, unreachable_audit};
pub use stores::DATABASE_VAR;
use stores::Stores;

/// The directory's file (organisations, users, patients, assignments, devices).
pub fn directory_path(data: &Path) -> PathBuf {
    data.join("server.db")
}

/// The web views' sign-in codes and sessions.
pub fn web_path(data: &Path) -> PathBuf {
    data.join("web.db")
}

/// The audit log's file: the document store's, so that a stored change and its record commit
/// together (see [`crate::audit`]).
pub fn audit_path(data: &Path) -> PathBuf {
    store_path(data)
}

/// Where the audit log was kept before it moved into the document store's file; imported from
/// there once, on open ([`open_audit`]).
pub fn legacy_audit_path(data: &Path) -> PathBuf {
    data.join("audit.db")
}

/// The server's document store (as `nara-server check` opens it); `devices` reads its change
/// feed to say how far behind each device is.
pub fn store_path(data: &Path) -> PathBuf {
    data.join("nara.db")
}

/// The actor of every audit record written by this command line.
pub const ADMIN_ACTOR: &str = "admin";

/// Runs an admin command, printing to standard output; without `--database`, the database
/// named by [`DATABASE_VAR`], if set (the flag wins).
pub fn run(mut args: AdminArgs) -> anyhow::Result<()> {
    if args.database.is_none() {
        args.database = std::env::var(DATABASE_VAR).ok();
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(args, &mut out)
}

/// Runs an admin command, printing to `out`.
pub fn run_to(args: AdminArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let AdminArgs {
        data,
        database,
        database_ca,
        json,
        command,
    } = args;
    let now = now_ms()?;
    if let AdminCommand::Audit {
        command: AuditCommand::Key { audit_key: file },
    } = command
    {
        // The key file only: no database is opened.
        return audit_key(&data, file, json, out);
    }
    let stores = Stores::choose(&data, database, database_ca)?;
    match command {
        AdminCommand::Audit { command } => {
            return audit_command(&stores.audit_log()?, &data, json, command, now, out);
        }
        AdminCommand::Backup { to } => {
            let data = stores.sqlite_only(
                "backup",
                "back the database up with PostgreSQL's own tools (pg_basebackup, or pg_dump)",
            )?;
            let audit = open_audit(data)?;
            let manifest = crate::backup::backup(data, &to, &audit, now)
                .with_context(|| format!("backing up {} to {}", data.display(), to.display()))?;
            return emit(
                out,
                json,
                serde_json::to_value(&manifest)?,
                format!(
                    "backup in {}: feed head {}, audit log {} records, head {}",
                    to.display(),
                    manifest.feed_head,
                    manifest.audit_records,
                    manifest.audit_head
                ),
            );
        }
        AdminCommand::Restore { from } => {
            let data = stores.sqlite_only(
                "restore",
                "restore the database with PostgreSQL's own tools",
            )?;
            let restored = crate::backup::restore(&from, data, rand::random(), now)
                .with_context(|| format!("restoring {} from {}", data.display(), from.display()))?;
            return emit(
                out,
                json,
                serde_json::to_value(&restored)?,
                format!(
                    "restored from {} (taken at {}): {} audit records and {} feed entries of the \
                     replaced stores were cut off (kept in {}); new feed epoch {}: devices \
                     recover at their next sync",
                    from.display(),
                    format_ms(restored.manifest.taken_at_ms),
                    restored.audit_records_cut,
                    restored.feed_entries_cut,
                    restored.moved_aside.display(),
                    restored.new_epoch
                ),
            );
        }
        _ => {}
    }
    let admin = stores.service()?;
    let dir = admin.directory().as_ref();

    match command {
        AdminCommand::AddOrg { id, name } => {
            let rec = admin
                .add_org(ADMIN_ACTOR, now, &id, &name)
                .with_context(|| format!("adding org {id:?}"))?;
            emit(
                out,
                json,
                json!({"command": "add-org", "id": id, "name": name, "audit_seq": rec.seq}),
                format!("added org {id} ({name})"),
            )
        }
        AdminCommand::AddUser {
            id,
            name,
            role,
            org,
        } => {
            let rec = admin
                .add_user(ADMIN_ACTOR, now, &id, &name, role, &org)
                .with_context(|| format!("adding user {id}"))?;
            emit(
                out,
                json,
                json!({"command": "add-user", "id": id, "name": name, "role": role,
                       "org": org, "audit_seq": rec.seq}),
                format!("added {} {id} ({name}) to org {org}", role.as_str()),
            )
        }
        AdminCommand::AddPatient { id, name } => {
            let rec = admin
                .add_patient(ADMIN_ACTOR, now, &id, &name)
                .with_context(|| format!("adding patient {id}"))?;
            emit(
                out,
                json,
                json!({"command": "add-patient", "id": id, "name": name, "audit_seq": rec.seq}),
                format!("added patient {id} ({name})"),
            )
        }
        AdminCommand::Assign { user, patient } => {
            let rec = admin
                .set_assignment(ADMIN_ACTOR, now, 0, &user, &patient, true)
                .with_context(|| format!("assigning {user} to {patient}"))?;
            emit(
                out,
                json,
                json!({"command": "assign", "user": user, "patient": patient, "audit_seq": rec.seq}),
                format!("assigned {user} to {patient}"),
            )
        }
        AdminCommand::Unassign { user, patient } => {
            // The end's time and the store's feed head now: the write grace of the user's
            // phones admits what builds on no more (issue 12).
            let head = stores.feed_head()?;
            let rec = admin
                .set_assignment(ADMIN_ACTOR, now, head, &user, &patient, false)
                .with_context(|| format!("unassigning {user} from {patient}"))?;
            emit(
                out,
                json,
                json!({"command": "unassign", "user": user, "patient": patient,
                       "audit_seq": rec.seq}),
                format!("unassigned {user} from {patient}"),
            )
        }
        AdminCommand::Enroll {
            user,
            server,
            tls_cert,
        } => {
            if server.is_empty() || server.contains(['/', '@', '#', ' ']) || !server.contains(':') {
                anyhow::bail!("--server must be host:port, not {server:?}");
            }
            // The key's pin: from the given certificate, or the development one once the server
            // created it (without either, the code alone is printed).
            let dev_cert = data.join("dev-cert.pem");
            let pin = match &tls_cert {
                Some(cert) => Some(crate::tls::spki_pin_of_pem(cert).with_context(|| {
                    format!("reading the server's key from {}", cert.display())
                })?),
                None if dev_cert.exists() => Some(
                    crate::tls::spki_pin_of_pem(&dev_cert)
                        .with_context(|| format!("reading {}", dev_cert.display()))?,
                ),
                None => None,
            };
            // Never the code itself in the log.
            let issued = admin
                .enroll(ADMIN_ACTOR, now, &user)
                .with_context(|| format!("enrolling a device for {user}"))?;
            let (code, expires_ms) = (issued.code, issued.expires_ms);
            let enrollment = pin
                .as_ref()
                .map(|pin| format!("nara:{code}@{server}#{pin}"));
            let enrollment_line = match &enrollment {
                Some(e) => format!(
                    "enrollment string (code, server and its key's pin; show it as a QR code): {e}"
                ),
                None => format!(
                    "no server certificate at {}: start the server once (or pass --tls-cert) to \
                     get the enrollment string with the server's key pin",
                    dev_cert.display()
                ),
            };
            emit(
                out,
                json,
                json!({"command": "enroll", "user": user, "code": code,
                       "expires_ms": expires_ms, "audit_seq": issued.record.seq,
                       "server_key_pin": pin, "enrollment": enrollment}),
                format!(
                    "enrollment code for {user}: {code} (one use, valid until {})\n{enrollment_line}",
                    format_ms(expires_ms)
                ),
            )
        }
        AdminCommand::LoginCode {
            user,
            patient,
            relative,
            server,
        } => {
            let data = stores.sqlite_only(
                "login-code",
                "the web views' sessions are kept in a data directory (web.db); run it there",
            )?;
            let subject = web_subject(user, patient, relative)?;
            if !crate::web::known(dir, &subject)? {
                if let crate::web::Subject::Relative { patient, relative } = &subject {
                    anyhow::bail!(
                        "{patient} has not authorised a relative named {relative:?} (the \
                         person records consent on their own page)"
                    );
                }
                anyhow::bail!("{} is not in the directory", subject.id());
            }
            let sessions = crate::web::SqliteSessions::open(&web_path(data))
                .context("opening the web sessions")?;
            let issued = admin
                .login_code(ADMIN_ACTOR, now, &sessions, &subject, now)
                .context("issuing a sign-in code")?;
            let url = format!("https://{server}/app/login");
            emit(
                out,
                json,
                json!({"command": "login-code", "subject": subject.actor(), "code": issued.code,
                       "expires_ms": issued.expires_ms, "url": url,
                       "audit_seq": issued.record.seq}),
                format!(
                    "sign-in code for {}: {} (one use, valid until {})\nopen {url}",
                    subject.actor(),
                    issued.code,
                    format_ms(issued.expires_ms)
                ),
            )
        }
        AdminCommand::RevokeSessions {
            user,
            patient,
            relative,
        } => {
            let data = stores.sqlite_only(
                "revoke-sessions",
                "the web views' sessions are kept in a data directory (web.db); run it there",
            )?;
            let subject = web_subject(user, patient, relative)?;
            let sessions = crate::web::SqliteSessions::open(&web_path(data))
                .context("opening the web sessions")?;
            let (rec, n) = admin
                .revoke_sessions(ADMIN_ACTOR, now, &sessions, &subject)
                .context("revoking web sessions")?;
            emit(
                out,
                json,
                json!({"command": "revoke-sessions", "subject": subject.actor(), "revoked": n,
                       "audit_seq": rec.seq}),
                format!("revoked {n} web sessions of {}", subject.actor()),
            )
        }
        AdminCommand::Devices => {
            let devices = admin.devices(ADMIN_ACTOR, now).context("listing devices")?;
            let pending = stores.pending(dir, &devices).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot count pending changes");
                BTreeMap::new()
            });
            print_devices(out, json, &devices, &pending)
        }
        AdminCommand::Revoke { device } => {
            let (rec, user) = admin
                .revoke(ADMIN_ACTOR, now, &device)
                .with_context(|| format!("revoking device {device}"))?;
            let user = user.map(|u| u.to_string()).unwrap_or_default();
            emit(
                out,
                json,
                json!({"command": "revoke", "device": device, "user": user, "audit_seq": rec.seq}),
                format!("revoked {device} (user {user}); its connections close within a second"),
            )
        }
        AdminCommand::NewEpoch => {
            let mut store = stores.document_store()?;
            let epoch: sync_core::store::Epoch = rand::random();
            let (rec, old) = admin
                .new_epoch(ADMIN_ACTOR, now, store.as_mut(), epoch)
                .context("moving the feed to a new epoch")?;
            emit(
                out,
                json,
                json!({"command": "new-epoch", "epoch": hex::encode(epoch),
                       "old_epoch": hex::encode(old), "audit_seq": rec.seq}),
                format!(
                    "new feed epoch {} (was {}): every device reconciles what it holds with the \
                     server at its next sync",
                    hex::encode(epoch),
                    hex::encode(old)
                ),
            )
        }
        AdminCommand::Audit { .. } | AdminCommand::Backup { .. } | AdminCommand::Restore { .. } => {
            unreachable_audit()
        }
    }
}

/// The web views' subject named by `--user`, or `--patient` (with `--relative`).
fn web_subject(
    user: Option<UserId>,
    patient: Option<PatientId>,
    relative: Option<String>,
) -> anyhow::Result<crate::web::Subject> {
    Ok(match (user, patient, relative) {
        (Some(u), None, None) => crate::web::Subject::Staff(u),
        (None, Some(p), None) => crate::web::Subject::Person(p),
        (None, Some(patient), Some(relative)) => crate::web::Subject::Relative {
            patient,
            relative: relative.trim().to_owned(),
        },
        _ => anyhow::bail!("give either --user or --patient (with --relative)"),
    })
}

fn print_devices(
    out: &mut dyn Write,
    json: bool,
    devices: &[crate::directory::DeviceInfo],
    pending: &BTreeMap<DeviceId, u64>,
) -> anyhow::Result<()> {
    if json {
        let list: Vec<_> = devices
            .iter()
            .map(|d| {
                json!({"id": d.id, "user": d.user, "last_seen_ms": d.last_seen_ms,
                       "revoked": d.revoked, "cursor": d.cursor,
                       "pending": pending.get(&d.id),
                       "copy_detected_ms": d.copy_detected_ms, "copies": d.copies})
            })
            .collect();
        writeln!(out, "{}", json!({"devices": list}))?;
    } else if devices.is_empty() {
        writeln!(out, "no devices enrolled")?;
    } else {
        for d in devices {
            let copied = match d.copy_detected_ms {
                Some(ms) => format!(
                    "  COPIED: two installations since {} (incarnations {}): revoke and \
                     enroll again",
                    format_ms(ms),
                    d.copies
                        .iter()
                        .map(|(a, b)| format!("{a}+{b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            writeln!(
                out,
                "{}  user {}  last seen {}  {}  cursor {}  pending {}{copied}",
                d.id,
                d.user,
                d.last_seen_ms.map_or_else(|| "never".into(), format_ms),
                if d.revoked { "REVOKED" } else { "active" },
                d.cursor.map_or_else(|| "-".into(), |c| c.to_string()),
                pending
                    .get(&d.id)
                    .map_or_else(|| "-".into(), |p| p.to_string()),
            )?;
        }
    }
    Ok(())
}

/// Opens the audit log in the document store's file, importing (once) a log kept in the file
/// of its own of the earlier layout.
pub fn open_audit(data: &Path) -> anyhow::Result<SqliteAudit> {
    let path = audit_path(data);
    let (audit, _) = SqliteAudit::open_importing(&path, &legacy_audit_path(data))
        .with_context(|| format!("opening the audit log in {}", path.display()))?;
    Ok(audit)
}

fn emit(
    out: &mut dyn Write,
    json: bool,
    value: serde_json::Value,
    human: String,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{value}")?;
    } else {
        writeln!(out, "{human}")?;
    }
    Ok(())
}

/// Per device with a cursor: the feed entries of its user's people above its cursor (what it
/// has yet to download). Read in pages of 10,000 entries.
pub(crate) fn pending_in(
    store: &impl Store,
    assignments: &BTreeMap<UserId, BTreeSet<PatientId>>,
    devices: &[crate::directory::DeviceInfo],
) -> Result<BTreeMap<DeviceId, u64>, sync_core::StoreError> {
    let mut counts = BTreeMap::new();
    let none = BTreeSet::new();
    let watched: Vec<(&DeviceId, u64, &BTreeSet<PatientId>)> = devices
        .iter()
        .filter_map(|d| {
            let cursor = d.cursor?;
            counts.insert(d.id.clone(), 0u64);
            Some((&d.id, cursor, assignments.get(&d.user).unwrap_or(&none)))
        })
        .collect();
    let Some(mut after) = watched.iter().map(|w| w.1).min() else {
        return Ok(counts);
    };
    loop {
        let batch = store.feed_after(after, 10_000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for entry in &batch {
            for (id, cursor, patients) in &watched {
                if entry.seq > *cursor && patients.contains(entry.doc.patient()) {
                    *counts.entry((*id).clone()).or_default() += 1;
                }
            }
        }
    }
    Ok(counts)
}

fn now_ms() -> anyhow::Result<i64> {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    i64::try_from(d.as_millis()).context("the system clock is out of range")
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC); a time outside what a calendar
/// date can hold prints as its milliseconds.
pub fn format_ms(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests;
