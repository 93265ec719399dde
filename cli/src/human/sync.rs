//! A sync's report, the device's status and the clock warning, for people.

use super::*;

pub(crate) fn report_human(ctx: &Ctx, device: &Device, r: &SyncReport) -> String {
    let mut lines = vec![format!(
        "received {}, uploaded {}; {} waiting for upload",
        count(r.received, "change"),
        r.uploaded,
        r.pending
    )];
    for c in &r.conflicts_raised {
        lines.push(format!(
            "CONFLICT: {} of {}; a nurse resolves it (`nara conflicts`)",
            register_words(device, c.document.patient(), &c.register),
            patient_name(device, c.document.patient()),
        ));
    }
    for f in &r.flags_raised {
        lines.push(format!(
            "FLAG for {}: {} (`nara flags`)",
            patient_name(device, &f.patient),
            f.flag
        ));
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

/// `1 change`, `2 changes`.
pub(crate) fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
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
