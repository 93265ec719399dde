//! `nara allergy`, `nara resuscitation` and `nara correct`: their flags, and what they print.

use clap::{Args, ValueEnum};
use sync_core::model::{AllergyStatus, Criticality, ResuscitationDecision};
use sync_core::{PatientId, RecordId};

use super::*;

#[derive(Debug, Args)]
pub(crate) struct AllergyArgs {
    #[arg(long)]
    pub(crate) patient: PatientId,
    /// The substance (a drug or drug class, a food, latex, ...).
    #[arg(long)]
    pub(crate) substance: String,
    #[arg(long, value_enum)]
    pub(crate) criticality: CriticalityArg,
    /// The reaction seen (rash, anaphylaxis, ...).
    #[arg(long)]
    pub(crate) reaction: Option<String>,
    #[arg(long, value_enum, default_value_t = StatusArg::Active)]
    pub(crate) status: StatusArg,
    /// The entry to revise, when more than one names the substance (default: the one that
    /// names it, or a new entry).
    #[arg(long)]
    pub(crate) allergy: Option<RecordId>,
    /// Resolve the entry's conflict with this value (nurse).
    #[arg(long)]
    pub(crate) resolve: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CriticalityArg {
    Low,
    High,
    UnableToAssess,
}

impl From<CriticalityArg> for Criticality {
    fn from(c: CriticalityArg) -> Self {
        match c {
            CriticalityArg::Low => Criticality::Low,
            CriticalityArg::High => Criticality::High,
            CriticalityArg::UnableToAssess => Criticality::UnableToAssess,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusArg {
    Active,
    Inactive,
    Resolved,
    Refuted,
    EnteredInError,
}

impl From<StatusArg> for AllergyStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Active => AllergyStatus::Active,
            StatusArg::Inactive => AllergyStatus::Inactive,
            StatusArg::Resolved => AllergyStatus::Resolved,
            StatusArg::Refuted => AllergyStatus::Refuted,
            StatusArg::EnteredInError => AllergyStatus::EnteredInError,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ResuscitationArgs {
    #[arg(long)]
    pub(crate) patient: PatientId,
    #[arg(long, value_enum)]
    pub(crate) decision: DecisionArg,
    /// Who decided, when, and anything the team must know.
    #[arg(long)]
    pub(crate) comment: Option<String>,
    /// Resolve the decision's conflict with this value (nurse).
    #[arg(long)]
    pub(crate) resolve: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DecisionArg {
    Attempt,
    DoNotAttempt,
}

impl From<DecisionArg> for ResuscitationDecision {
    fn from(d: DecisionArg) -> Self {
        match d {
            DecisionArg::Attempt => ResuscitationDecision::Attempt,
            DecisionArg::DoNotAttempt => ResuscitationDecision::DoNotAttempt,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CorrectArgs {
    #[arg(long)]
    pub(crate) patient: PatientId,
    /// The note, observation or administration entered in error.
    #[arg(long)]
    pub(crate) record: RecordId,
    /// Why (wrong person, wrong value, ...).
    #[arg(long)]
    pub(crate) reason: String,
}

fn alert_written(device: &Device, w: &care::AlertWritten, human: String) -> anyhow::Result<Output> {
    let mut json = to_json(w)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output { json, human })
}

pub(crate) fn allergy(ctx: &Ctx, home: &Path, a: AllergyArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let input = care::AllergyInput {
        substance: a.substance,
        criticality: a.criticality.into(),
        reaction: a.reaction,
        status: a.status.into(),
    };
    let w = care::record_allergy(
        &device,
        &a.patient,
        a.allergy.as_ref(),
        &input,
        a.resolve,
        &ctx.clock()?,
    )?;
    let name = human::patient_name(&device, &a.patient);
    let what = match (w.created, w.resolved) {
        (true, _) => "recorded",
        (_, true) => "resolved",
        _ => "revised",
    };
    let human = format!(
        "{} {what} for {name}: {} (version {}, entry {})",
        human::capitalise(&human::value_sentence(ctx, &w.value)),
        human::allergy_status_word(input.status),
        w.version,
        w.allergy.as_ref().map(RecordId::as_str).unwrap_or("-"),
    );
    alert_written(&device, &w, human)
}

pub(crate) fn resuscitation(
    ctx: &Ctx,
    home: &Path,
    a: ResuscitationArgs,
) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let w = care::record_resuscitation(
        &device,
        &a.patient,
        a.decision.into(),
        a.comment.as_deref(),
        a.resolve,
        &ctx.clock()?,
    )?;
    let name = human::patient_name(&device, &a.patient);
    let human = format!(
        "Resuscitation decision for {name}: {} (version {}{})",
        human::value_sentence(ctx, &w.value),
        w.version,
        if w.resolved {
            ", resolving a conflict"
        } else {
            ""
        }
    );
    alert_written(&device, &w, human)
}

pub(crate) fn correct(ctx: &Ctx, home: &Path, a: CorrectArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let c = care::correct(&device, &a.patient, &a.record, &a.reason, &ctx.clock()?)?;
    let mut lines = vec![format!(
        "Marked entered in error: {} ({})",
        human::event_sentence(ctx, &c.body),
        c.record
    )];
    for m in &c.marks {
        lines.push(format!(
            "  by {}, {}: {}",
            ctx.who(&m.author.user),
            ctx.when(m.at),
            m.reason
        ));
    }
    let mut json = to_json(&c)?;
    json["pending"] = json!(device.pending_count()?);
    Ok(Output {
        json,
        human: lines.join("\n"),
    })
}
