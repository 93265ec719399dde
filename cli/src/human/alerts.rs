//! Alerts as sentences: an allergy's line, and a flag with what it is about and its review.

use sync_core::model::{AllergyStatus, RegisterValue};

use super::*;

pub(super) fn allergy_line(ctx: &Ctx, e: &care::EntityShown) -> String {
    use care::RegisterShown;
    let status = match &e.value {
        RegisterShown::Value(v) => match &v.value {
            RegisterValue::Allergy { status, .. } if *status != AllergyStatus::Active => {
                format!(" [{}]", allergy_status_word(*status))
            }
            _ => String::new(),
        },
        _ => String::new(),
    };
    format!("{}{status}", capitalise(&register_sentence(ctx, &e.value)))
}

pub(crate) fn flag_sentence(
    ctx: &Ctx,
    f: &care::FlagShown,
    drug: &dyn Fn(&str) -> String,
) -> String {
    let what = match f.kind {
        "double-dose" => format!(
            "Possible double dose: {} at {}, {} records",
            drug(f.order.as_str()),
            f.slot.as_deref().map(slot_words).unwrap_or_default(),
            f.evidence.len()
        ),
        "superseded-order" => format!(
            "A dose of {} was given on an order version already replaced",
            drug(f.order.as_str())
        ),
        "time-uncertain" => format!(
            "Time uncertain, review: a dose of {} may have been given on a replaced order version \
             (a phone's clock was off)",
            drug(f.order.as_str())
        ),
        "overdue" => format!(
            "Overdue: {} at {}, nothing recorded",
            drug(f.order.as_str()),
            f.slot.as_deref().map(slot_words).unwrap_or_default()
        ),
        "follow-up" => format!(
            "Follow-up overdue: the effect of a \"when needed\" dose of {} is not recorded",
            drug(f.order.as_str())
        ),
        "no-delegation" => format!(
            "A dose of {} was given without a valid delegation",
            drug(f.order.as_str())
        ),
        "prn-limit" => format!(
            "A \"when needed\" dose of {} was given past the order's limits",
            drug(f.order.as_str())
        ),
        other => format!("{other} flag on {}", drug(f.order.as_str())),
    };
    let state = if f.open {
        "OPEN".to_owned()
    } else {
        match f.acknowledgements.last() {
            Some(a) => format!(
                "reviewed by {}, {}",
                ctx.who(&a.author.user),
                ctx.when(a.at)
            ),
            None => "reviewed".into(),
        }
    };
    format!("{what} ({state}; flag {})", f.id)
}
