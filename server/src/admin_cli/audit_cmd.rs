//! `nara-server admin audit`: verify the chain, export a person's access log.

use std::io::Write;
use std::path::Path;

use super::*;

/// `Audit` is dispatched before the directory is opened.
pub(super) fn unreachable_audit() -> anyhow::Result<()> {
    anyhow::bail!("internal error: a command that runs before the directory opens came back")
}

pub(super) fn audit_command(
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
