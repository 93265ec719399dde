//! `nara handover`: what changed for one person since this user last viewed them on this device
//! (`nara show` or `nara handover`).

use clap::Args;
use sync_core::PatientId;

use super::*;

#[derive(Debug, Args)]
pub(crate) struct HandoverArgs {
    #[arg(long)]
    pub(crate) patient: PatientId,
}

pub(crate) fn handover(ctx: &Ctx, home: &Path, a: HandoverArgs) -> anyhow::Result<Output> {
    let device = ctx.open(home)?;
    let h = care::handover(&device, &a.patient, &ctx.clock()?)?;
    let name = match &h.display_name {
        Some(n) => format!("{n} ({})", h.patient),
        None => h.patient.to_string(),
    };
    let mut l = vec![match h.since {
        Some(t) => format!(
            "Handover for {name}: what others recorded since you last viewed them, {}",
            ctx.when(t)
        ),
        None => format!("Handover for {name}: what others recorded in the last 24 hours"),
    }];
    if h.items.is_empty() {
        l.push("  nothing new".into());
    }
    for i in &h.items {
        let what = match &i.what {
            care::HandoverWhat::Event {
                body:
                    sync_core::model::EventBody::Administration {
                        outcome,
                        slot,
                        reason,
                        ..
                    },
            } if i.drug.is_some() => dose_sentence(
                i.drug.as_deref().unwrap_or_default(),
                *outcome,
                slot,
                reason.as_deref(),
            ),
            // A correction says what it corrects, not the record's id.
            care::HandoverWhat::Event {
                body: sync_core::model::EventBody::EnteredInError { target, reason },
            } => match care::record(&device, &h.patient, target) {
                Ok(corrected) => format!(
                    "marked entered in error: {} ({reason})",
                    match (&corrected.body, &i.drug) {
                        (
                            sync_core::model::EventBody::Administration {
                                outcome,
                                slot,
                                reason,
                                ..
                            },
                            Some(drug),
                        ) => dose_sentence(drug, *outcome, slot, reason.as_deref()),
                        (body, _) => event_sentence(ctx, body),
                    }
                ),
                Err(_) => format!("marked record {target} entered in error: {reason}"),
            },
            care::HandoverWhat::Event { body } => event_sentence(ctx, body),
            care::HandoverWhat::Revision { value, version, .. } => {
                format!("{} (version {version})", value_sentence(ctx, value))
            }
        };
        l.push(format!(
            "  {} {}, {}: {what}",
            ctx.when(i.at),
            ctx.who(&i.author.user),
            match i.kind {
                "header" => "name".to_owned(),
                kind => kind.replace('-', " "),
            }
        ));
    }
    if h.left_out > 0 {
        l.push(format!("  ... and {} older records", h.left_out));
    }
    if !h.flags.is_empty() {
        l.push("Flags:".into());
        for f in &h.flags {
            l.push(format!(
                "  {}",
                flag_sentence(ctx, f, &|o: &str| order_name(&device, &h.patient, o))
            ));
        }
    }
    Ok(Output {
        json: to_json(&h)?,
        human: l.join("\n"),
    })
}
