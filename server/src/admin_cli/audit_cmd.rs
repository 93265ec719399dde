//! `nara-server admin audit`: verify the chain (against the signed heads the server
//! exported), print the audit key's public key, export a person's access log.

use std::io::Write;
use std::sync::Arc;

use crate::audit::heads::{self, AuditKey, Checkpoints};
use crate::audit::{AuditLog, VerifyReport};

use super::*;

/// `Audit` is dispatched before the directory is opened.
pub(super) fn unreachable_audit() -> anyhow::Result<()> {
    anyhow::bail!("internal error: a command that runs before the directory opens came back")
}

pub(super) fn audit_command(
    audit: &Arc<dyn AuditLog>,
    data: &Path,
    json: bool,
    command: AuditCommand,
    now: i64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify(args) => {
            let signed = SignedHeads::choose(data, args)?;
            let report = audit
                .verify_against(&signed.checkpoints)
                .context("verifying the audit log")?;
            print_report(&report, &signed, json, out)?;
            anyhow::ensure!(
                report.ok,
                "the audit log failed verification: {}",
                report.problems.join("; ")
            );
            Ok(())
        }
        AuditCommand::Key { .. } => unreachable_audit(),
        AuditCommand::Export { patient } => {
            // Handing out a person's access log is itself an access to their record: recorded
            // before anything of it is printed (the admin service's export, as over HTTP).
            let records = crate::admin::audit_export(audit.as_ref(), ADMIN_ACTOR, now, &patient)
                .with_context(|| format!("exporting the audit log of {patient}"))?;
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
                            format!(": {}", escape(&readable_detail(&e.detail)))
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

/// A detail as people read it: read entries recorded before their times were written readably
/// (`shown at 1796001096331`) get the time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(super) fn readable_detail(detail: &str) -> String {
    const SHOWN_AT: &str = " shown at ";
    let Some(i) = detail.find(SHOWN_AT) else {
        return detail.to_owned();
    };
    let rest = &detail[i + SHOWN_AT.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest[..digits].parse::<i64>() {
        Ok(ms) if digits >= 10 => format!(
            "{}{SHOWN_AT}{}{}",
            &detail[..i],
            format_ms(ms),
            &rest[digits..]
        ),
        _ => detail.to_owned(),
    }
}

/// The signed heads `verify` checks the chain against, and where they came from.
struct SignedHeads {
    checkpoints: Checkpoints,
    files: Vec<PathBuf>,
    keys: Vec<String>,
}

impl SignedHeads {
    /// The files given (or DATA's heads file, if there is one) with the keys given (or the
    /// public key of the key file).
    fn choose(data: &Path, args: VerifyArgs) -> anyhow::Result<Self> {
        let files = if args.heads.is_empty() {
            let default = data.join(heads::HEADS_FILE);
            if default.exists() {
                vec![default]
            } else {
                Vec::new()
            }
        } else {
            args.heads
        };
        let mut keys = args
            .public_keys
            .iter()
            .map(|k| heads::parse_public_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() && !files.is_empty() {
            let key_file = args.audit_key.unwrap_or_else(|| data.join(heads::KEY_FILE));
            let key = AuditKey::load(&key_file).context(
                "no key to check the signed heads with: pass --public-key HEX \
                 (`nara-server admin audit key` prints it) or --audit-key FILE",
            )?;
            keys.push(key.public());
        }
        let checkpoints =
            Checkpoints::load(&files, &keys).context("reading the signed audit heads")?;
        Ok(Self {
            checkpoints,
            files,
            keys: keys.iter().map(|k| hex::encode(k.as_bytes())).collect(),
        })
    }
}

fn print_report(
    report: &VerifyReport,
    signed: &SignedHeads,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(report)?;
        v["heads_files"] = serde_json::json!(
            signed
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
        );
        v["public_keys"] = serde_json::json!(signed.keys);
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(
        out,
        "audit log {}: {} records, head {}",
        if report.ok { "ok" } else { "DAMAGED" },
        report.records,
        report.head
    )?;
    if signed.files.is_empty() {
        writeln!(
            out,
            "no signed heads checked (no {} in the data directory; --heads FILE)",
            heads::HEADS_FILE
        )?;
    } else {
        writeln!(
            out,
            "{} signed heads checked{} from {}, key {}",
            report.signed_heads,
            match signed.checkpoints.torn() {
                0 => String::new(),
                n => format!(" ({n} lines torn by a crash skipped)"),
            },
            signed
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            signed.keys.join(", ")
        )?;
    }
    for p in &report.problems {
        writeln!(out, "  {}", escape(p))?;
    }
    Ok(())
}

/// `audit key`: the public key of the audit key file (made first if there is none).
pub(super) fn audit_key(
    data: &Path,
    file: Option<PathBuf>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let path = match file {
        Some(f) => f,
        None => {
            crate::datadir::prepare(data)
                .with_context(|| format!("preparing {}", data.display()))?;
            data.join(heads::KEY_FILE)
        }
    };
    let (key, made) = AuditKey::load_or_create(&path)
        .with_context(|| format!("the audit key {}", path.display()))?;
    emit(
        out,
        json,
        serde_json::json!({"command": "audit-key", "file": path.display().to_string(),
                           "public_key": key.public_hex(), "made": made}),
        key.public_hex(),
    )
}
