//! `nara-server admin audit`: verify the chain, export a person's access log.

use std::io::Write;
use std::sync::Arc;

use crate::audit::AuditLog;

use super::*;

/// `Audit` is dispatched before the directory is opened.
pub(super) fn unreachable_audit() -> anyhow::Result<()> {
    anyhow::bail!("internal error: a command that runs before the directory opens came back")
}

pub(super) fn audit_command(
    audit: &Arc<dyn AuditLog>,
    json: bool,
    command: AuditCommand,
    now: i64,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
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
