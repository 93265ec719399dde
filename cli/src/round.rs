//! The medication round on the command line: `round` (the signing list), `delegate`,
//! `delegations`, `revoke-delegation` and `effect`, with their human output: sentences with
//! names, drugs and local times. `--json` prints the care API's structures as they are (the
//! field names are a contract for scripts).

use std::path::Path;

use clap::{Args, ValueEnum};
use nara_client::care::{
    self, DelegationInput, DelegationShown, Round, RoundSlotShown, RoundStatusView,
};
use serde_json::json;
use sync_core::model::DoseEffect;
use sync_core::model::round::{PhoneSync, Shift, slot_instant};
use sync_core::{PatientId, RecordId, Timestamp, UserId};

use super::{Ctx, Output, to_json};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

#[derive(Debug, Args)]
pub(crate) struct RoundArgs {
    /// The shift's start, local `HH:MM` today (default 00:00).
    #[arg(long)]
    from: Option<String>,
    /// The shift's end, local `HH:MM` (default 23:59; before --from: tomorrow).
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    patient: Option<PatientId>,
}

#[derive(Debug, Args)]
pub(crate) struct DelegateArgs {
    /// The worker (user id) the delegation is given to.
    #[arg(long)]
    to: UserId,
    /// `medication` and named tasks, comma-separated (`medication,insulin`).
    #[arg(long, value_delimiter = ',', required = true)]
    scope: Vec<String>,
    /// The people it covers (repeat); default: everyone on this device.
    #[arg(long)]
    patient: Vec<PatientId>,
    /// First day, `YYYY-MM-DD`.
    #[arg(long)]
    from: String,
    /// Last day, `YYYY-MM-DD` (at most a year on).
    #[arg(long)]
    until: String,
}

#[derive(Debug, Args)]
pub(crate) struct DelegationsArgs {
    /// Only those ending within this many days.
    #[arg(long)]
    ending_within: Option<u32>,
    #[arg(long)]
    patient: Option<PatientId>,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    #[arg(long)]
    patient: PatientId,
    #[arg(long)]
    delegation: RecordId,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Effect {
    Good,
    Partial,
    None,
}

#[derive(Debug, Args)]
pub(crate) struct EffectArgs {
    #[arg(long)]
    patient: PatientId,
    /// The "when needed" dose (its administration id).
    #[arg(long)]
    administration: RecordId,
    #[arg(long, value_enum)]
    effect: Effect,
    #[arg(long)]
    note: Option<String>,
}

pub(crate) fn offset_minutes(ctx: &Ctx) -> i32 {
    i32::from(ctx.offset.whole_minutes())
}

/// "30 Nov 08:00" of a local slot `YYYY-MM-DDTHH:MM`.
fn slot_text(slot: &str) -> String {
    let month = slot
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("?");
    let day = slot
        .get(8..10)
        .map(|d| d.trim_start_matches('0'))
        .unwrap_or("?");
    format!("{day} {month} {}", slot.get(11..16).unwrap_or("?"))
}

fn at_text(ctx: &Ctx, t: Timestamp) -> String {
    slot_text(&sync_core::model::round::local_slot(t, offset_minutes(ctx)))
}

fn person(patient: &PatientId, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{n} ({patient})"),
        None => patient.to_string(),
    }
}

fn phones_text(ctx: &Ctx, phones: &[PhoneSync]) -> String {
    if phones.is_empty() {
        // `nara sync` does not ask it (only the staff names); `nara round` does.
        return "the server has not said which phones could have recorded it (`nara round` asks it)"
            .into();
    }
    phones
        .iter()
        .map(|p| match p.last_synced {
            Some(t) => format!(
                "{}'s phone {} has not synced since {}",
                ctx.who(&p.user),
                p.device,
                at_text(ctx, t)
            ),
            None => format!("{}'s phone {} has never synced", ctx.who(&p.user), p.device),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `nara round`: the signing list of the shift, after asking the server what it knows (if it
/// can be reached; offline, what it last said).
pub(crate) async fn round(ctx: &Ctx, home: &Path, a: RoundArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let offset = offset_minutes(ctx);
    let clock = ctx.clock()?;
    let refreshed = device.refresh_round(offset).await;
    if let Ok(r) = &refreshed {
        *ctx.staff.borrow_mut() = nara_client::StaffNames::new(r.staff.clone());
    }
    let day = |hhmm: &str| {
        slot_instant(&format!("{}T{hhmm}", clock.today), offset)
            .ok_or_else(|| anyhow::anyhow!("bad time {hhmm:?}: expected HH:MM"))
    };
    let from = day(a.from.as_deref().unwrap_or("00:00"))?;
    let mut to = day(a.to.as_deref().unwrap_or("23:59"))?;
    if to < from {
        to = Timestamp(to.0 + 24 * 60 * 60 * 1000);
    }
    let shift = Shift {
        from,
        to,
        utc_offset_minutes: offset,
    };
    let r = care::round(&device, &shift, a.patient.as_ref(), clock.now)?;
    let mut human = round_human(ctx, &device, &r);
    if let Err(e) = &refreshed {
        human.push_str(&format!(
            "\n(the server could not be asked now: {e}; what it last said is shown)"
        ));
    }
    let mut json = to_json(&r)?;
    json["server_reached"] = json!(refreshed.is_ok());
    Ok(Output { json, human })
}

/// A slot's status in words, as the signing list and the person's page (`nara show`) both say
/// it: "open (on time until 60 minutes after)", "OVERDUE: ...", "unknown: ...", "given by ...".
pub(crate) fn status_text(ctx: &Ctx, s: &RoundSlotShown) -> String {
    let status = match &s.status {
        RoundStatusView::Given { by, .. } => format!("given by {}", ctx.who(&by.user)),
        RoundStatusView::NotGiven { reason, .. } => format!(
            "not given: {}",
            reason.as_deref().unwrap_or("no reason recorded")
        ),
        RoundStatusView::SelfAdministered { .. } => "handed over, self-administered".into(),
        RoundStatusView::PossibleDoubleDose { administrations } => format!(
            "POSSIBLE DOUBLE DOSE: given {} times",
            administrations.len()
        ),
        RoundStatusView::Open => {
            format!("open (on time until {} minutes after)", s.window_minutes)
        }
        RoundStatusView::Overdue => "OVERDUE: nothing recorded and every phone has synced".into(),
        RoundStatusView::Unknown { phones } => {
            format!(
                "unknown: nothing recorded here, and {}",
                phones_text(ctx, phones)
            )
        }
    };
    let conflict = if s.in_conflict {
        " (order in conflict: a nurse must resolve it)"
    } else {
        ""
    };
    format!("{status}{conflict}")
}

fn round_human(ctx: &Ctx, device: &nara_client::Device, r: &Round) -> String {
    let mut l = vec![format!(
        "Signing list from {} to {}:",
        at_text(ctx, r.from),
        at_text(ctx, r.to)
    )];
    if r.slots.is_empty() {
        l.push("  nothing is due in this shift.".into());
    }
    for s in &r.slots {
        let what = format!(
            "{} {}, {} {} for {}",
            s.drug,
            s.strength,
            s.dose,
            crate::human::route_words(&s.route),
            person(&s.patient, s.display_name.as_deref())
        );
        l.push(format!(
            "  {}  {what}: {}",
            slot_text(&s.slot),
            status_text(ctx, s)
        ));
    }
    if !r.follow_ups.is_empty() {
        l.push("Follow-ups of \"when needed\" doses:".into());
        for f in &r.follow_ups {
            let state = match (&f.effect, f.overdue) {
                (Some(e), _) => format!(
                    "effect {}{}",
                    match e {
                        DoseEffect::Good => "good",
                        DoseEffect::Partial => "partial",
                        DoseEffect::None => "none",
                    },
                    f.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ),
                (None, true) => format!("OVERDUE since {}", at_text(ctx, f.due)),
                (None, false) => format!("due at {}", at_text(ctx, f.due)),
            };
            l.push(format!(
                "  {} given {} to {}: {state} (dose {})",
                f.drug.as_deref().unwrap_or("a drug"),
                at_text(ctx, f.given_at),
                person(&f.patient, f.display_name.as_deref()),
                f.administration
            ));
        }
    }
    let open: Vec<_> = r.flags.iter().filter(|f| f.flag.open).collect();
    if !open.is_empty() {
        l.push("Flags for the nurse:".into());
        for f in open {
            let order = crate::human::order_name(device, &f.patient, f.flag.order.as_str());
            let about = match (&f.flag.slot, &f.flag.administration) {
                (Some(slot), _) => format!("the {} dose of {order}", slot_text(slot)),
                (None, Some(a)) => format!("dose {a} of {order}"),
                (None, None) => order,
            };
            let kind = match f.flag.kind.as_str() {
                "overdue" => "overdue, nothing recorded",
                "follow-up" => "effect not followed up in time",
                "no-delegation" => "given without a valid delegation",
                "prn-limit" => "given past the order's limits",
                "double-dose" => "possible double dose",
                "superseded-order" => "given on a superseded order",
                "time-uncertain" => "time uncertain, review",
                other => other,
            };
            l.push(format!(
                "  {}: {kind}: {about} ({})",
                person(&f.patient, f.display_name.as_deref()),
                f.flag.id
            ));
        }
    }
    match r.server_checked_at {
        Some(t) => l.push(format!(
            "(the server last reported the other phones at {})",
            at_text(ctx, t)
        )),
        None => l.push(
            "(the server has not reported the other phones yet: closed slots are unknown)".into(),
        ),
    }
    l.join("\n")
}

fn delegation_line(ctx: &Ctx, d: &DelegationShown) -> String {
    // `until` is exclusive: the last day is the one before.
    let last = at_text(ctx, Timestamp(d.until.0 - 1));
    let last_day = last.rsplit_once(' ').map_or(last.as_str(), |(day, _)| day);
    let first = at_text(ctx, d.from);
    let first_day = first
        .rsplit_once(' ')
        .map_or(first.as_str(), |(day, _)| day);
    format!(
        "{} may do {} for {} from {first_day} to {last_day}{}; signed by {} on {} (delegation {}, version {}){}",
        ctx.who(&d.to),
        d.scope.join(", "),
        person(&d.patient, d.display_name.as_deref()),
        if d.revoked { ", REVOKED" } else { "" },
        ctx.who(&d.by.user),
        at_text(ctx, d.at),
        d.delegation,
        d.version,
        if d.in_conflict {
            " IN CONFLICT: a nurse must resolve it"
        } else {
            ""
        }
    )
}

fn delegations_output(ctx: &Ctx, list: &[DelegationShown], empty: &str) -> anyhow::Result<Output> {
    let human = if list.is_empty() {
        empty.to_owned()
    } else {
        list.iter()
            .map(|d| delegation_line(ctx, d))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Output {
        json: json!({ "delegations": to_json(&list)? }),
        human,
    })
}

/// `nara delegate` (nurse).
pub(crate) fn delegate(ctx: &Ctx, home: &Path, a: DelegateArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let patients = if a.patient.is_empty() {
        care::patients(&device)?
            .into_iter()
            .map(|p| p.patient)
            .collect()
    } else {
        a.patient
    };
    let input = DelegationInput::from_dates(a.to, a.scope, &a.from, &a.until, offset_minutes(ctx))?;
    let written = care::delegate(&device, &patients, &input, &ctx.clock()?)?;
    delegations_output(ctx, &written, "no delegation written")
}

/// `nara delegations`.
pub(crate) fn delegations(ctx: &Ctx, home: &Path, a: DelegationsArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let clock = ctx.clock()?;
    let list = care::delegations(&device, a.patient.as_ref(), a.ending_within, clock.now)?;
    let empty = match a.ending_within {
        Some(days) => format!("no delegation ends within {days} days"),
        None => "no delegations on this device".into(),
    };
    delegations_output(ctx, &list, &empty)
}

/// `nara revoke-delegation` (nurse).
pub(crate) fn revoke(ctx: &Ctx, home: &Path, a: RevokeArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let written = care::revoke_delegation(&device, &a.patient, &a.delegation, &ctx.clock()?)?;
    delegations_output(ctx, &written, "nothing revoked")
}

/// `nara effect`: the follow-up of a "when needed" dose.
pub(crate) fn effect(ctx: &Ctx, home: &Path, a: EffectArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let effect = match a.effect {
        Effect::Good => DoseEffect::Good,
        Effect::Partial => DoseEffect::Partial,
        Effect::None => DoseEffect::None,
    };
    let r = care::record_effect(
        &device,
        &a.patient,
        &a.administration,
        effect,
        a.note.as_deref(),
        &ctx.clock()?,
    )?;
    let mut json = to_json(&r)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output {
        json,
        human: format!(
            "Effect of dose {} for {} recorded at {}",
            a.administration,
            crate::human::patient_name(&device, &a.patient),
            at_text(ctx, ctx.clock()?.now)
        ),
    })
}

/// `nara give` without `--slot`: a "when needed" dose now.
pub(crate) fn give_when_needed(
    ctx: &Ctx,
    home: &Path,
    patient: &PatientId,
    order: &RecordId,
    anyway: Option<&str>,
    confirm_allergy: bool,
) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let a = care::give_when_needed(
        &device,
        patient,
        order,
        anyway,
        confirm_allergy,
        offset_minutes(ctx),
        &ctx.clock()?,
    )
    .map_err(|e| match e {
        nara_client::ClientError::AllergyWarning { .. } => {
            anyhow::anyhow!("{e}: give --confirm-allergy to record it anyway")
        }
        e => e.into(),
    })?;
    let mut human = format!(
        "\"When needed\" dose of {} given to {} at {} (order version {}); follow up its effect with `nara effect --patient {} --administration {}`",
        crate::human::order_name(&device, patient, a.order.as_str()),
        crate::human::patient_name(&device, patient),
        slot_text(&a.slot),
        a.order_version,
        patient,
        a.record
    );
    if anyway.is_some() {
        human.push_str("\nGiven past the order's limits: flagged for the nurse.");
    }
    let mut json = to_json(&a)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}
