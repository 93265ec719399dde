//! What a command prints for people (without `--json`): sync reports, status, the clock
//! warning, written records and a person's overview.

use super::*;

pub(crate) fn written(
    device: &Device,
    r: &care::Recorded,
    human: String,
) -> anyhow::Result<Output> {
    let mut json = to_json(r)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

pub(crate) fn order_written(device: &Device, w: &care::OrderWritten) -> anyhow::Result<Output> {
    let human = format!(
        "order {} {} version {} ({}): {} {} {} {} at {}",
        w.order,
        if w.created {
            "created as"
        } else {
            "revised to"
        },
        w.version,
        w.revision,
        w.value.drug,
        w.value.strength,
        w.value.dose,
        w.value.route,
        w.value.times.join(", ")
    );
    let mut json = to_json(w)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

pub(crate) fn report_human(ctx: &Ctx, r: &SyncReport) -> String {
    let mut lines = vec![format!(
        "received {} changes, uploaded {}; {} waiting for upload",
        r.received, r.uploaded, r.pending
    )];
    for c in &r.conflicts_raised {
        lines.push(format!("CONFLICT: {} {}", c.document, c.register));
    }
    for f in &r.flags_raised {
        lines.push(format!("FLAG: {} {}", f.patient, f.flag));
    }
    for q in &r.refused {
        lines.push(format!(
            "REFUSED by the server ({:?}): a change to {}: {}",
            q.code, q.doc, q.detail
        ));
    }
    for i in &r.incoming_refused {
        lines.push(format!(
            "refused from the server: a change to {}: {}",
            i.document, i.detail
        ));
    }
    if !r.withdrawn.is_empty() {
        let names: Vec<String> = r.withdrawn.iter().map(ToString::to_string).collect();
        lines.push(format!("no longer on your case: {}", names.join(", ")));
    }
    if let Some(n) = r.reincarnated {
        lines.push(format!(
            "RESTORED OR COPIED: this phone's data was behind the server (a backup put back, or \
             copied from another phone); it goes on as incarnation {n}, and what it had not \
             uploaded is written again"
        ));
    }
    if r.rewritten > 0 {
        lines.push(format!("{} records written again", r.rewritten));
    }
    for i in &r.rewrite_refused {
        lines.push(format!(
            "NOT WRITTEN AGAIN: a record of {}: {}",
            i.document, i.detail
        ));
    }
    if let Some(at) = r.in_sync_at {
        lines.push(format!("in sync at {}", ctx.when(at)));
    }
    if let Some(offset) = r.clock_offset_ms.filter(|_| r.clock_off) {
        lines.push(clock_warning(offset).trim_start_matches("; ").to_owned());
    }
    lines.join("\n")
}

/// "; CLOCK OFF: ..." for a device clock more than 5 minutes off the server's.
pub(crate) fn clock_warning(offset_ms: i64) -> String {
    let minutes = offset_ms.unsigned_abs() / 60_000;
    let side = if offset_ms > 0 { "behind" } else { "ahead of" };
    format!(
        "; CLOCK OFF: this device's clock is {}h{:02}m {side} the server's (times it records are flagged for review)",
        minutes / 60,
        minutes % 60
    )
}

pub(crate) fn status_human(ctx: &Ctx, s: &Status, pending: usize) -> String {
    match s {
        Status::Offline { clock_off_by_ms } => {
            let clock = clock_off_by_ms.map(clock_warning).unwrap_or_default();
            format!("offline; {pending} changes waiting{clock}")
        }
        Status::Connecting => "connecting...".into(),
        Status::Syncing {
            received,
            remaining,
        } => format!("syncing {received} of {}", received + u64::from(*remaining)),
        Status::InSync {
            at,
            clock_off_by_ms,
        } => {
            let clock = clock_off_by_ms.map(clock_warning).unwrap_or_default();
            format!(
                "in sync at {}; {pending} changes waiting{clock}",
                ctx.when(*at)
            )
        }
        Status::Error { reason } => format!("error: {reason}; {pending} changes waiting"),
        Status::Wiped { .. } => "revoked by the server: this device's data was erased".into(),
    }
}

/// The person's own words ("what matters to me"), each with who wrote it; appended to `show`.
pub(crate) fn what_matters_human(entries: &[care::WhatMattersShown]) -> String {
    if entries.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nwhat matters to me (the person's own words):\n");
    for e in entries {
        out.push_str(&format!(
            "  \"{}\" (written by {} as {})\n",
            e.text,
            e.author.user,
            e.author.role.as_str()
        ));
    }
    out
}

pub(crate) fn show_human(ctx: &Ctx, o: &care::Overview) -> anyhow::Result<String> {
    use care::RegisterShown;
    let value = |r: &RegisterShown| -> anyhow::Result<String> {
        Ok(match r {
            RegisterShown::Unset => "-".into(),
            RegisterShown::Value(v) => format!(
                "{} (v{} by {})",
                serde_json::to_string(&v.value)?,
                v.version,
                v.author.user
            ),
            RegisterShown::Conflict { candidates } => format!(
                "IN CONFLICT: {}",
                candidates
                    .iter()
                    .map(|c| Ok(format!(
                        "{} v{} by {}: {}",
                        c.revision,
                        c.version,
                        c.author.user,
                        serde_json::to_string(&c.value)?
                    )))
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .join(" | ")
            ),
        })
    };
    let mut l = vec![format!(
        "{} {}",
        o.patient,
        o.display_name.as_deref().unwrap_or("")
    )];
    l.push(format!("resuscitation: {}", value(&o.resuscitation)?));
    for (title, list) in [
        ("allergies", &o.allergies),
        ("risks", &o.risks),
        ("goals", &o.goals),
        ("interventions", &o.interventions),
        ("orders", &o.orders),
    ] {
        if list.is_empty() {
            continue;
        }
        l.push(format!("{title}:"));
        for e in list {
            l.push(format!("  {}: {}", e.id, value(&e.value)?));
            if let Some(text) = e.text.as_deref().filter(|t| !t.is_empty()) {
                l.push(format!("    {text}"));
            }
        }
    }
    if !o.today.is_empty() {
        l.push("today:".into());
        for s in &o.today {
            l.push(format!(
                "  {} {}: {}",
                s.slot,
                s.order,
                serde_json::to_value(&s.status)?["status"]
                    .as_str()
                    .unwrap_or("?")
            ));
        }
    }
    if !o.open_flags.is_empty() {
        l.push("OPEN FLAGS:".into());
        for f in &o.open_flags {
            l.push(format!("  {}", f.id));
        }
    }
    if !o.journal.is_empty() {
        l.push("journal:".into());
        for j in &o.journal {
            let body = match &j.body {
                sync_core::model::EventBody::Note { body, .. } => body.clone(),
                other => serde_json::to_string(other)?,
            };
            l.push(format!(
                "  {} {}{}: {}",
                ctx.when(j.at),
                j.author.user,
                if j.entered_in_error {
                    " (entered in error)"
                } else {
                    ""
                },
                body
            ));
        }
    }
    Ok(l.join("\n"))
}
