//! `nara-server admin`: administration on the data directory, beside a running server.
//!
//! The commands open the same SQLite files the server uses ([`directory_path`],
//! [`audit_path`]); SQLite's WAL and busy timeout let both processes have them open at once.
//! A change made here bumps the directory's generation, which the running server polls every
//! second, so it reaches live connections within a second (a revoked device is disconnected).
//!
//! Every command that changes something, enrolls, lists devices or exports a person's log is
//! appended to the audit log with actor `"admin"` *before* it acts (the directory is another
//! file: the two cannot commit together). If the record cannot be written, nothing is done and
//! the command fails; if the action then fails, a second record says it was not done. An export
//! is recorded before anything is printed. `audit verify` only reads: it examines the log and
//! must not add to it. `audit export` escapes control characters, so no field forges a line.
//!
//! With `--json` every command prints one JSON object (`audit export`: JSON lines, one record
//! each); without it, a short human line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde_json::json;
use sync_core::store::{SqliteStore, Store};
use sync_core::{DeviceId, PatientId, Role, UserId};

use crate::audit::{AuditAction, AuditEntry, AuditLog, AuditRecord, SqliteAudit, escape};
use crate::directory::{Directory, ENROLLMENT_TTL_MS, SqliteDirectory};

/// The directory's file (organisations, users, patients, assignments, devices).
pub fn directory_path(data: &Path) -> PathBuf {
    data.join("server.db")
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

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The data directory the server uses.
    #[arg(long, default_value = "./nara-data")]
    pub data: PathBuf,
    /// Print JSON (one object; JSON lines for `audit export`).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new([
        Role::Carer.as_str(),
        Role::Nurse.as_str(),
        Role::Admin.as_str(),
    ])
    .try_map(|s| s.parse::<Role>())
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Add an organisation.
    AddOrg {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
    },
    /// Add a member of staff to an organisation.
    AddUser {
        #[arg(long)]
        id: UserId,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = role_parser())]
        role: Role,
        #[arg(long)]
        org: String,
    },
    /// Add a person receiving care (a pseudonymous id, never a personnummer).
    AddPatient {
        #[arg(long)]
        id: PatientId,
        #[arg(long)]
        name: String,
    },
    /// Give a user access to a person (the care relationship).
    Assign {
        #[arg(long)]
        user: UserId,
        #[arg(long)]
        patient: PatientId,
    },
    /// End a user's access to a person.
    Unassign {
        #[arg(long)]
        user: UserId,
        #[arg(long)]
        patient: PatientId,
    },
    /// Print a one-time enrollment code (valid 24 hours) for a user's new phone, and the
    /// enrollment string (`nara:<code>@<host:port>#<key pin>`, for a QR code) that also pins
    /// the server's key.
    Enroll {
        #[arg(long)]
        user: UserId,
        /// The server's address as phones reach it (host:port).
        #[arg(long, default_value = "127.0.0.1:7443")]
        server: String,
        /// The server's certificate (PEM) when it was started with --tls-cert; default: the
        /// development certificate in the data directory.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
    },
    /// List enrolled devices: user, last seen, revoked, feed cursor and changes pending.
    Devices,
    /// Revoke a device: its connections close within a second and it cannot connect again.
    Revoke {
        #[arg(long)]
        device: DeviceId,
    },
    /// Check or export the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A consistent copy of the stores (documents, directory, audit log) into a new directory,
    /// taken while the server runs (SQLite's online backup API), audited first.
    Backup {
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup back, with the server stopped: the current stores are moved aside (kept),
    /// the feed gets a new epoch so that every device recovers at its next sync, and the
    /// restored audit log records the restore and what it cut off.
    Restore {
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; fails if any record was edited or deleted. Prints the head
    /// hash: keep a copy elsewhere to detect a log cut short later.
    Verify,
    /// A person's access log: who, what, when, from which device (JSON lines with --json).
    Export {
        #[arg(long)]
        patient: PatientId,
    },
}

/// Runs an admin command, printing to standard output.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(args, &mut out)
}

/// Runs an admin command, printing to `out`.
pub fn run_to(args: AdminArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let AdminArgs {
        data,
        json,
        command,
    } = args;
    let now = now_ms()?;
    match command {
        AdminCommand::Audit { command } => return audit_command(&data, json, command, now, out),
        AdminCommand::Backup { to } => {
            let audit = open_audit(&data)?;
            let manifest = crate::backup::backup(&data, &to, &audit, now)
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
            let restored = crate::backup::restore(&from, &data, rand::random(), now)
                .with_context(|| format!("restoring {} from {}", data.display(), from.display()))?;
            return emit(
                out,
                json,
                serde_json::to_value(&restored)?,
                format!(
                    "restored from {} (taken at {} ms): {} audit records and {} feed entries of                      the replaced stores were cut off (kept in {}); new feed epoch {}: devices                      recover at their next sync",
                    from.display(),
                    restored.manifest.taken_at_ms,
                    restored.audit_records_cut,
                    restored.feed_entries_cut,
                    restored.moved_aside.display(),
                    restored.new_epoch
                ),
            );
        }
        _ => crate::datadir::prepare(&data)
            .with_context(|| format!("preparing the data directory {}", data.display()))?,
    }
    let dir = open_directory(&data)?;
    let audit = open_audit(&data)?;
    let log = |entry: AuditEntry| -> anyhow::Result<AuditRecord> {
        audit
            .append(entry)
            .context("the command could not be audited, so it was not done")
    };
    let entry = |action| AuditEntry::new(now, ADMIN_ACTOR, action);

    match command {
        AdminCommand::AddOrg { id, name } => {
            let (rec, ()) = audited(
                &audit,
                entry(AuditAction::AddOrg).detail(format!("org {id}")),
                || {
                    dir.add_org(&id, &name)
                        .with_context(|| format!("adding org {id:?}"))
                },
            )?;
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
            let (rec, ()) = audited(
                &audit,
                entry(AuditAction::AddUser)
                    .detail(format!("user {id}, role {}, org {org}", role.as_str())),
                || {
                    dir.add_user(&id, &name, role, &org)
                        .with_context(|| format!("adding user {id}"))
                },
            )?;
            emit(
                out,
                json,
                json!({"command": "add-user", "id": id, "name": name, "role": role,
                       "org": org, "audit_seq": rec.seq}),
                format!("added {} {id} ({name}) to org {org}", role.as_str()),
            )
        }
        AdminCommand::AddPatient { id, name } => {
            // The name stays out of the (never erased) audit log; the id is enough.
            let (rec, ()) = audited(
                &audit,
                entry(AuditAction::AddPatient)
                    .patient(&id)
                    .detail("patient added"),
                || {
                    dir.add_patient(&id, &name)
                        .with_context(|| format!("adding patient {id}"))
                },
            )?;
            emit(
                out,
                json,
                json!({"command": "add-patient", "id": id, "name": name, "audit_seq": rec.seq}),
                format!("added patient {id} ({name})"),
            )
        }
        AdminCommand::Assign { user, patient } => {
            let (rec, ()) = audited(
                &audit,
                entry(AuditAction::Assign)
                    .patient(&patient)
                    .detail(format!("user {user} assigned")),
                || {
                    dir.assign(&user, &patient)
                        .with_context(|| format!("assigning {user} to {patient}"))
                },
            )?;
            emit(
                out,
                json,
                json!({"command": "assign", "user": user, "patient": patient, "audit_seq": rec.seq}),
                format!("assigned {user} to {patient}"),
            )
        }
        AdminCommand::Unassign { user, patient } => {
            let (rec, ()) = audited(
                &audit,
                entry(AuditAction::Unassign)
                    .patient(&patient)
                    .detail(format!("user {user} unassigned")),
                || {
                    dir.unassign(&user, &patient)
                        .with_context(|| format!("unassigning {user} from {patient}"))
                },
            )?;
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
            let expires_ms = now.saturating_add(ENROLLMENT_TTL_MS);
            // Never the code itself.
            let (rec, code) = audited(
                &audit,
                entry(AuditAction::Enroll).detail(format!(
                    "enrollment code issued for user {user}, valid until {}",
                    format_ms(expires_ms)
                )),
                || {
                    dir.enroll(&user, now)
                        .with_context(|| format!("enrolling a device for {user}"))
                },
            )?;
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
                       "expires_ms": expires_ms, "audit_seq": rec.seq,
                       "server_key_pin": pin, "enrollment": enrollment}),
                format!(
                    "enrollment code for {user}: {code} (one use, valid until {})\n{enrollment_line}",
                    format_ms(expires_ms)
                ),
            )
        }
        AdminCommand::Devices => {
            let devices = dir.devices().context("listing devices")?;
            let pending = pending_per_device(&data, &dir, &devices).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot count pending changes");
                BTreeMap::new()
            });
            log(entry(AuditAction::Read).detail(format!("device list ({})", devices.len())))?;
            if json {
                let list: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        json!({"id": d.id, "user": d.user, "last_seen_ms": d.last_seen_ms,
                               "revoked": d.revoked, "cursor": d.cursor,
                               "pending": pending.get(&d.id)})
                    })
                    .collect();
                writeln!(out, "{}", json!({"devices": list}))?;
            } else if devices.is_empty() {
                writeln!(out, "no devices enrolled")?;
            } else {
                for d in &devices {
                    writeln!(
                        out,
                        "{}  user {}  last seen {}  {}  cursor {}  pending {}",
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
        AdminCommand::Revoke { device } => {
            let user = dir
                .devices()?
                .into_iter()
                .find(|d| d.id == device)
                .map(|d| d.user.to_string())
                .unwrap_or_default();
            let (rec, ()) = audited(
                &audit,
                entry(AuditAction::Revoke)
                    .device(&device)
                    .detail(format!("device of user {user} revoked")),
                || {
                    dir.revoke(&device)
                        .with_context(|| format!("revoking device {device}"))
                },
            )?;
            emit(
                out,
                json,
                json!({"command": "revoke", "device": device, "user": user, "audit_seq": rec.seq}),
                format!("revoked {device} (user {user}); its connections close within a second"),
            )
        }
        AdminCommand::Audit { .. } | AdminCommand::Backup { .. } | AdminCommand::Restore { .. } => {
            unreachable_audit()
        }
    }
}

/// `Audit` is dispatched before the directory is opened.
fn unreachable_audit() -> anyhow::Result<()> {
    anyhow::bail!("internal error: a command that runs before the directory opens came back")
}

fn audit_command(
    data: &Path,
    json: bool,
    command: AuditCommand,
    now: i64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let path = audit_path(data);
    // Never create a log here: a missing log is itself something to report.
    anyhow::ensure!(
        path.exists() || legacy_audit_path(data).exists(),
        "no audit log at {}: wrong --data, nothing logged yet, or the log was deleted",
        path.display()
    );
    let audit = open_audit(data)?;
    match command {
        AuditCommand::Verify => {
            let report = audit.verify().context("verifying the audit log")?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else if report.ok {
                writeln!(
                    out,
                    "audit log ok: {} records, head {}",
                    report.records, report.head
                )?;
            } else {
                writeln!(
                    out,
                    "audit log DAMAGED: {} records, head {}",
                    report.records, report.head
                )?;
                for p in &report.problems {
                    writeln!(out, "  {p}")?;
                }
            }
            anyhow::ensure!(
                report.ok,
                "the audit log failed verification: {}",
                report.problems.join("; ")
            );
            Ok(())
        }
        AuditCommand::Export { patient } => {
            let records = audit
                .export_patient(&patient)
                .with_context(|| format!("exporting the audit log of {patient}"))?;
            // Handing out a person's access log is itself an access to their record: recorded
            // before anything of it is printed.
            audit
                .append(
                    AuditEntry::new(now, ADMIN_ACTOR, AuditAction::Read)
                        .patient(&patient)
                        .detail(format!("audit export ({} records)", records.len())),
                )
                .context("the export could not be audited, so it was not printed")?;
            for r in &records {
                if json {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                } else {
                    let e = &r.entry;
                    writeln!(
                        out,
                        "{} #{} {} by {}{}{}{}",
                        format_ms(e.at_ms),
                        r.seq,
                        e.action,
                        escape(&e.actor),
                        e.device
                            .as_ref()
                            .map_or_else(String::new, |d| format!(" on {}", escape(d.as_str()))),
                        e.document
                            .as_ref()
                            .map_or_else(String::new, |d| format!(" [{}]", escape(d))),
                        if e.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", escape(&e.detail))
                        },
                    )?;
                }
            }
            if !json && records.is_empty() {
                writeln!(out, "no audit records for {patient}")?;
            }
            Ok(())
        }
    }
}

fn open_directory(data: &Path) -> anyhow::Result<SqliteDirectory> {
    let path = directory_path(data);
    SqliteDirectory::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Opens the audit log in the document store's file, importing (once) a log kept in the file
/// of its own of the earlier layout.
pub fn open_audit(data: &Path) -> anyhow::Result<SqliteAudit> {
    let path = audit_path(data);
    let (audit, _) = SqliteAudit::open_importing(&path, &legacy_audit_path(data))
        .with_context(|| format!("opening the audit log in {}", path.display()))?;
    Ok(audit)
}

/// Records `entry`, then does `act`: nothing is done unless its record is durable. If `act`
/// fails, a second record says it was not done (best effort; the error is returned either way).
fn audited<T>(
    audit: &SqliteAudit,
    entry: AuditEntry,
    act: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(AuditRecord, T)> {
    let record = audit
        .append(entry.clone())
        .context("the command could not be audited, so it was not done")?;
    match act() {
        Ok(value) => Ok((record, value)),
        Err(e) => {
            let detail = format!("NOT DONE (failed): {}", entry.detail);
            if let Err(a) = audit.append(AuditEntry { detail, ..entry }) {
                tracing::error!(error = %a, "the failure of an audited command could not be recorded");
            }
            Err(e)
        }
    }
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

/// For each device with a cursor: the feed entries after it that concern people its user is
/// assigned to (what it has yet to receive; its own uploads since its last acknowledgement are
/// counted too). Empty if the server has no store yet.
fn pending_per_device(
    data: &Path,
    dir: &SqliteDirectory,
    devices: &[crate::directory::DeviceInfo],
) -> anyhow::Result<BTreeMap<DeviceId, u64>> {
    let path = store_path(data);
    let mut counts = BTreeMap::new();
    if !path.exists() {
        return Ok(counts);
    }
    let store = SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let assignments = dir.assignments()?;
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

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: AdminArgs,
    }

    fn parse(data: &Path, args: &[&str]) -> Result<AdminArgs, clap::Error> {
        let mut argv = vec!["admin", "--data", data.to_str().unwrap()];
        argv.extend_from_slice(args);
        T::try_parse_from(argv).map(|t| t.a)
    }

    /// Runs a command and returns what it printed.
    fn run_ok(data: &Path, args: &[&str]) -> String {
        let mut out = Vec::new();
        run_to(parse(data, args).unwrap(), &mut out).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
        String::from_utf8(out).unwrap()
    }

    fn run_err(data: &Path, args: &[&str]) -> String {
        let mut out = Vec::new();
        let err = run_to(parse(data, args).unwrap(), &mut out).unwrap_err();
        format!("{err:#}")
    }

    fn json_of(s: &str) -> serde_json::Value {
        serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    /// An org, a carer, a nurse, an admin and two patients, through the CLI.
    fn setup() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        run_ok(d, &["add-org", "--id", "o1", "--name", "Hemtjänst Norr"]);
        run_ok(
            d,
            &[
                "add-user", "--id", "u-anna", "--name", "Anna", "--role", "carer", "--org", "o1",
            ],
        );
        run_ok(
            d,
            &[
                "add-user", "--id", "u-berit", "--name", "Berit", "--role", "nurse", "--org", "o1",
            ],
        );
        run_ok(
            d,
            &[
                "add-user", "--id", "u-cilla", "--name", "Cilla", "--role", "admin", "--org", "o1",
            ],
        );
        run_ok(d, &["add-patient", "--id", "p-1", "--name", "Dagny"]);
        run_ok(d, &["add-patient", "--id", "p-2", "--name", "Einar"]);
        tmp
    }

    #[test]
    fn add_commands_print_json_and_are_audited() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("nested/data");
        let v = json_of(&run_ok(
            &d,
            &["add-org", "--id", "o1", "--name", "Org", "--json"],
        ));
        assert_eq!(v["command"], "add-org");
        assert_eq!(v["id"], "o1");
        assert_eq!(v["audit_seq"], 1);
        let v = json_of(&run_ok(
            &d,
            &[
                "--json", "add-user", "--id", "u1", "--name", "U", "--role", "nurse", "--org", "o1",
            ],
        ));
        assert_eq!(
            (v["role"].as_str(), v["audit_seq"].as_u64()),
            (Some("nurse"), Some(2))
        );
        let v = json_of(&run_ok(
            &d,
            &["add-patient", "--id", "p1", "--name", "P", "--json"],
        ));
        assert_eq!(v["id"], "p1");
        let human = run_ok(&d, &["add-patient", "--id", "p2", "--name", "Q"]);
        assert_eq!(human, "added patient p2 (Q)\n");

        let dir = SqliteDirectory::open(&directory_path(&d)).unwrap();
        let user = dir.user(&UserId::new("u1").unwrap()).unwrap().unwrap();
        assert_eq!((user.role, user.org.as_str()), (Role::Nurse, "o1"));
        assert_eq!(dir.patients().unwrap().len(), 2);

        let audit = SqliteAudit::open(&audit_path(&d)).unwrap();
        assert_eq!(audit.len().unwrap(), 4);
        let p1 = audit
            .export_patient(&PatientId::new("p1").unwrap())
            .unwrap();
        assert_eq!(p1.len(), 1);
        assert_eq!(p1[0].entry.action, AuditAction::AddPatient);
        assert_eq!(p1[0].entry.actor, "admin");
        assert!(
            !p1[0].entry.detail.contains('P'),
            "no patient name in the log"
        );
    }

    #[test]
    fn assign_and_unassign() {
        let tmp = setup();
        let d = tmp.path();
        let v = json_of(&run_ok(
            d,
            &["assign", "--user", "u-anna", "--patient", "p-1", "--json"],
        ));
        assert_eq!(
            (v["user"].as_str(), v["patient"].as_str()),
            (Some("u-anna"), Some("p-1"))
        );
        run_ok(d, &["assign", "--user", "u-berit", "--patient", "p-1"]);
        let dir = SqliteDirectory::open(&directory_path(d)).unwrap();
        assert_eq!(dir.assignments().unwrap().len(), 2);
        assert_eq!(
            run_ok(d, &["unassign", "--user", "u-anna", "--patient", "p-1"]),
            "unassigned u-anna from p-1\n"
        );
        assert_eq!(dir.assignments().unwrap().len(), 1);

        let audit = SqliteAudit::open(&audit_path(d)).unwrap();
        let actions: Vec<_> = audit
            .export_patient(&PatientId::new("p-1").unwrap())
            .unwrap()
            .into_iter()
            .map(|r| r.entry.action)
            .collect();
        assert_eq!(
            actions,
            vec![
                AuditAction::AddPatient,
                AuditAction::Assign,
                AuditAction::Assign,
                AuditAction::Unassign
            ]
        );
    }

    #[test]
    fn bad_input_gives_clear_errors() {
        let tmp = setup();
        let d = tmp.path();
        let e = run_err(d, &["assign", "--user", "u-nobody", "--patient", "p-1"]);
        assert!(e.contains("user \"u-nobody\" not found"), "{e}");
        let e = run_err(d, &["assign", "--user", "u-cilla", "--patient", "p-1"]);
        assert!(e.contains("admin"), "{e}");
        let e = run_err(d, &["unassign", "--user", "u-anna", "--patient", "p-2"]);
        assert!(e.contains("not found"), "{e}");
        let e = run_err(
            d,
            &[
                "add-user", "--id", "u-x", "--name", "X", "--role", "carer", "--org", "nope",
            ],
        );
        assert!(e.contains("org \"nope\" not found"), "{e}");
        let e = run_err(d, &["add-org", "--id", "o 2", "--name", "X"]);
        assert!(e.contains("invalid org id"), "{e}");
        let e = run_err(d, &["enroll", "--user", "u-nobody"]);
        assert!(e.contains("not found"), "{e}");
        let e = run_err(d, &["revoke", "--device", "dev-0000"]);
        assert!(e.contains("device \"dev-0000\" not found"), "{e}");

        // Refused by the parser.
        let e = parse(
            d,
            &[
                "add-user", "--id", "u-x", "--name", "X", "--role", "doctor", "--org", "o1",
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("doctor") && e.contains("carer"), "{e}");
        let e = parse(d, &["add-patient", "--id", "p 1", "--name", "X"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid patient id"), "{e}");
        let e = parse(d, &["assign", "--user", "ä", "--patient", "p-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid user id"), "{e}");

        // Failed commands are audited before they act, then marked as not done.
        let audit = SqliteAudit::open(&audit_path(d)).unwrap();
        let conn = rusqlite::Connection::open(audit_path(d)).unwrap();
        let not_done: u32 = conn
            .query_row(
                "SELECT count(*) FROM audit_log WHERE detail LIKE 'NOT DONE%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(not_done >= 5, "{not_done}");
        assert_eq!(audit.len().unwrap(), 6 + 2 * u64::from(not_done));
    }

    #[test]
    fn enroll_prints_the_enrollment_string_with_the_key_pin() {
        let tmp = setup();
        let d = tmp.path();
        // Before the server ever ran: the code alone.
        let v = json_of(&run_ok(d, &["enroll", "--user", "u-anna", "--json"]));
        assert!(v["enrollment"].is_null() && v["code"].is_string(), "{v}");
        let tls = crate::tls::load_or_create(d, None, None).unwrap();
        let v = json_of(&run_ok(
            d,
            &[
                "enroll",
                "--user",
                "u-anna",
                "--server",
                "10.0.0.5:8443",
                "--json",
            ],
        ));
        let code = v["code"].as_str().unwrap();
        assert_eq!(v["server_key_pin"], tls.spki_pin.as_str());
        assert_eq!(
            v["enrollment"],
            format!("nara:{code}@10.0.0.5:8443#{}", tls.spki_pin).as_str()
        );
        let human = run_ok(d, &["enroll", "--user", "u-anna"]);
        assert!(human.contains("@127.0.0.1:7443#"), "{human}");
        // A renewed certificate on the same key has the same pin.
        crate::tls::renew_dev_cert(d).unwrap();
        let renewed = crate::tls::load_or_create(d, None, None).unwrap();
        assert_ne!(renewed.fingerprint, tls.fingerprint);
        assert_eq!(renewed.spki_pin, tls.spki_pin);
        let e = run_err(d, &["enroll", "--user", "u-anna", "--server", "https://x/"]);
        assert!(e.contains("host:port"), "{e}");
    }

    #[test]
    fn enroll_devices_and_revoke() {
        let tmp = setup();
        let d = tmp.path();
        let v = json_of(&run_ok(d, &["enroll", "--user", "u-anna", "--json"]));
        let code = v["code"].as_str().unwrap().to_owned();
        assert_eq!(code.len(), 12);
        assert!(v["expires_ms"].as_i64().unwrap() > now_ms().unwrap());
        let human = run_ok(d, &["enroll", "--user", "u-berit"]);
        assert!(
            human.starts_with("enrollment code for u-berit: "),
            "{human}"
        );

        // The phone redeems the code through the server.
        let dir = SqliteDirectory::open(&directory_path(d)).unwrap();
        let cred = dir.redeem(&code, now_ms().unwrap()).unwrap();
        dir.touch(&cred.device, 1_767_225_600_000, Some(7)).unwrap();

        let v = json_of(&run_ok(d, &["devices", "--json"]));
        let list = v["devices"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["id"], cred.device.as_str());
        assert_eq!(list[0]["user"], "u-anna");
        assert_eq!(list[0]["revoked"], false);
        assert_eq!(list[0]["cursor"], 7);
        assert_eq!(list[0]["last_seen_ms"], 1_767_225_600_000_i64);
        let human = run_ok(d, &["devices"]);
        assert!(human.contains("last seen 2026-01-01T00:00:00Z"), "{human}");
        assert!(human.contains("active"), "{human}");

        let g = dir.generation().unwrap();
        let v = json_of(&run_ok(
            d,
            &["revoke", "--device", cred.device.as_str(), "--json"],
        ));
        assert_eq!(v["user"], "u-anna");
        assert!(dir.generation().unwrap() > g, "the server sees the change");
        assert!(dir.is_revoked(&cred.device).unwrap());
        assert_eq!(dir.authenticate(&cred.device, &cred.secret).unwrap(), None);
        assert!(run_ok(d, &["devices"]).contains("REVOKED"));

        let audit = SqliteAudit::open(&audit_path(d)).unwrap();
        let report = audit.verify().unwrap();
        assert!(report.ok, "{report:?}");
        // The code is never in the audit log.
        let raw = std::fs::read(audit_path(d)).unwrap();
        let wal = std::fs::read(d.join("audit.db-wal")).unwrap_or_default();
        for hay in [raw, wal] {
            assert!(!hay.windows(12).any(|w| w == code.as_bytes()));
        }
    }

    #[test]
    fn devices_counts_pending_changes_from_the_store() {
        use sync_core::store::Origin;
        use sync_core::{ChangeHash, DocumentId};
        let tmp = setup();
        let d = tmp.path();
        run_ok(d, &["assign", "--user", "u-anna", "--patient", "p-1"]);
        let dir = SqliteDirectory::open(&directory_path(d)).unwrap();
        let code = dir.enroll(&UserId::new("u-anna").unwrap(), 0).unwrap();
        let cred = dir.redeem(&code, 1).unwrap();
        assert_eq!(
            json_of(&run_ok(d, &["devices", "--json"]))["devices"][0]["pending"],
            serde_json::Value::Null
        );

        let mut store = SqliteStore::open(store_path(d)).unwrap();
        let p1: DocumentId = "p-1/careplan".parse().unwrap();
        let p2: DocumentId = "p-2/careplan".parse().unwrap();
        store
            .append(&p1, &[(ChangeHash([1; 32]), b"a")], Origin::Remote)
            .unwrap();
        store
            .append(&p2, &[(ChangeHash([2; 32]), b"b")], Origin::Remote)
            .unwrap();
        store
            .append(&p1, &[(ChangeHash([3; 32]), b"c")], Origin::Remote)
            .unwrap();
        dir.touch(&cred.device, 2, Some(1)).unwrap();
        // After its cursor (1): one change of p-1 (seq 3); p-2 is not assigned.
        let v = json_of(&run_ok(d, &["devices", "--json"]));
        assert_eq!(v["devices"][0]["pending"], 1);
    }

    #[test]
    fn audit_verify_passes_then_fails_after_a_hand_edit() {
        let tmp = setup();
        let d = tmp.path();
        let v = json_of(&run_ok(d, &["audit", "verify", "--json"]));
        assert_eq!(
            (v["ok"].as_bool(), v["records"].as_u64()),
            (Some(true), Some(6))
        );
        let human = run_ok(d, &["audit", "verify"]);
        assert!(
            human.starts_with("audit log ok: 6 records, head "),
            "{human}"
        );
        // Verify reads only.
        assert_eq!(SqliteAudit::open(&audit_path(d)).unwrap().len().unwrap(), 6);

        rusqlite::Connection::open(audit_path(d))
            .unwrap()
            .execute("UPDATE audit_log SET actor = 'someone' WHERE seq = 2", [])
            .unwrap();
        let mut out = Vec::new();
        let err = run_to(parse(d, &["audit", "verify", "--json"]).unwrap(), &mut out).unwrap_err();
        assert!(format!("{err:#}").contains("record 2"), "{err:#}");
        let v = json_of(std::str::from_utf8(&out).unwrap());
        assert_eq!(v["ok"], false);
        let e = run_err(d, &["audit", "verify"]);
        assert!(e.contains("failed verification"), "{e}");
    }

    #[test]
    fn audit_verify_refuses_a_missing_log() {
        let tmp = tempfile::tempdir().unwrap();
        let e = run_err(tmp.path(), &["audit", "verify"]);
        assert!(e.contains("no audit log"), "{e}");
        assert!(!audit_path(tmp.path()).exists(), "verify created nothing");
    }

    #[test]
    fn audit_export_gives_one_persons_log_as_json_lines() {
        let tmp = setup();
        let d = tmp.path();
        run_ok(d, &["assign", "--user", "u-anna", "--patient", "p-1"]);
        run_ok(d, &["assign", "--user", "u-anna", "--patient", "p-2"]);
        {
            // The server logs a disclosure to a device.
            let audit = SqliteAudit::open(&audit_path(d)).unwrap();
            audit
                .append(
                    AuditEntry::new(1_767_225_600_000, "u-anna", AuditAction::Disclose)
                        .device(&DeviceId::new("dev-0123456789abcdef").unwrap())
                        .patient(&PatientId::new("p-1").unwrap())
                        .document("p-1/careplan"),
                )
                .unwrap();
        }
        let out = run_ok(d, &["audit", "export", "--patient", "p-1", "--json"]);
        let lines: Vec<serde_json::Value> = out.lines().map(json_of).collect();
        assert_eq!(lines.len(), 3, "{out}");
        let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert!(lines.iter().all(|l| l["patient"] == "p-1"));
        let last = &lines[2];
        assert_eq!(last["action"], "disclose");
        assert_eq!(last["actor"], "u-anna");
        assert_eq!(last["device"], "dev-0123456789abcdef");
        assert_eq!(last["at_ms"], 1_767_225_600_000_i64);

        let human = run_ok(d, &["audit", "export", "--patient", "p-1"]);
        assert!(
            human.contains("2026-01-01T00:00:00Z") && human.contains("disclose by u-anna on dev-"),
            "{human}"
        );
        // The first export is itself in the log now.
        assert!(human.contains("audit export (3 records)"), "{human}");
        assert_eq!(
            run_ok(d, &["audit", "export", "--patient", "p-404"]),
            "no audit records for p-404\n"
        );
    }

    #[test]
    fn json_flag_is_accepted_anywhere() {
        let tmp = tempfile::tempdir().unwrap();
        for args in [
            &["--json", "audit", "verify"][..],
            &["audit", "--json", "verify"],
            &["audit", "verify", "--json"],
        ] {
            assert!(parse(tmp.path(), args).unwrap().json, "{args:?}");
        }
        let a = T::try_parse_from(["admin", "devices"]).unwrap().a;
        assert_eq!(a.data, PathBuf::from("./nara-data"));
        assert!(!a.json);
    }

    #[test]
    fn format_ms_is_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(format_ms(951_825_599_000), "2000-02-29T11:59:59Z");
        assert_eq!(format_ms(-1000), "1969-12-31T23:59:59Z");
    }
}
