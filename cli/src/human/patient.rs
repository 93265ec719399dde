//! The person's page (`nara show`): header, alerts, plan, medication, today's slots in the
//! signing list's words, flags, conflicts, journal, and the person's own words.

use sync_core::model::RegisterValue;

use super::*;

/// The person's own words ("what matters to me"), each with who wrote it; appended to `show`.
pub(crate) fn what_matters_human(ctx: &Ctx, entries: &[care::WhatMattersShown]) -> String {
    if entries.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nwhat matters to me (the person's own words):\n");
    for e in entries {
        out.push_str(&format!(
            "  \"{}\" (written by {} as {})\n",
            e.text,
            ctx.who(&e.author.user),
            e.author.role.as_str()
        ));
    }
    out
}

pub(crate) fn show_human(ctx: &Ctx, o: &care::Overview) -> anyhow::Result<String> {
    use care::RegisterShown;
    let drug = |order: &str| -> String {
        o.orders
            .iter()
            .find(|e| e.id.as_str() == order)
            .and_then(|e| match &e.value {
                RegisterShown::Value(v) => match &v.value {
                    RegisterValue::Order(m) => Some(format!("{} {}", m.drug, m.strength)),
                    _ => None,
                },
                RegisterShown::Conflict { candidates } => {
                    candidates.first().and_then(|c| match &c.value {
                        RegisterValue::Order(m) => Some(format!("{} {}", m.drug, m.strength)),
                        _ => None,
                    })
                }
                RegisterShown::Unset => None,
            })
            .unwrap_or_else(|| order.to_owned())
    };
    let mut l = vec![match &o.display_name {
        Some(n) => format!("{n} ({})", o.patient),
        None => format!("{} (no name on this device)", o.patient),
    }];
    l.push(format!(
        "Resuscitation: {}",
        register_sentence(ctx, &o.resuscitation)
    ));
    l.push("Allergies:".into());
    if o.allergies.is_empty() {
        l.push("  none recorded".into());
    }
    for e in &o.allergies {
        l.push(format!("  {}", allergy_line(ctx, e)));
    }
    for (title, list) in [
        ("Risks", &o.risks),
        ("Goals", &o.goals),
        ("Interventions", &o.interventions),
    ] {
        if list.is_empty() {
            continue;
        }
        l.push(format!("{title}:"));
        for e in list {
            l.push(format!(
                "  {}",
                capitalise(&register_sentence(ctx, &e.value))
            ));
            if let Some(text) = e.text.as_deref().filter(|t| !t.is_empty()) {
                l.push(format!("    {text}"));
            }
        }
    }
    if !o.orders.is_empty() {
        l.push("Medication:".into());
        for e in &o.orders {
            l.push(format!(
                "  {} (order {})",
                register_sentence(ctx, &e.value),
                e.id
            ));
            if let Some(text) = e.text.as_deref().filter(|t| !t.is_empty()) {
                l.push(format!("    {text}"));
            }
        }
    }
    if !o.today.is_empty() {
        l.push("Today:".into());
        for s in &o.today {
            // The signing list's status, in the signing list's words.
            let time = s.slot.split_once('T').map(|(_, t)| t).unwrap_or(&s.slot);
            l.push(format!(
                "  {time} {} {}: {}",
                s.drug,
                s.strength,
                crate::round::status_text(ctx, s)
            ));
        }
    }
    if !o.open_flags.is_empty() {
        l.push("OPEN FLAGS:".into());
        for f in &o.open_flags {
            l.push(format!("  {}", flag_sentence(ctx, f, &drug)));
        }
    }
    if !o.conflicts.is_empty() {
        l.push(format!(
            "{} value(s) in conflict: see `nara conflicts`",
            o.conflicts.len()
        ));
    }
    if !o.journal.is_empty() {
        l.push("Journal:".into());
        for j in &o.journal {
            l.push(format!(
                "  {} {}: {}",
                ctx.when(j.at),
                ctx.who(&j.author.user),
                event_sentence(ctx, &j.body)
            ));
            if j.entered_in_error {
                for m in &j.marks {
                    l.push(format!(
                        "    ENTERED IN ERROR: {} ({}, {})",
                        m.reason,
                        ctx.who(&m.author.user),
                        ctx.when(m.at)
                    ));
                }
            }
        }
    }
    Ok(l.join("\n"))
}
