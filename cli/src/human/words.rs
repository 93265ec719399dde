//! Words the other sentences are made of: names of people, orders and registers as this device
//! holds them, lists, routes, dates and slots.

use sync_core::PatientId;

use super::*;

/// A register as words: `order/metoprolol` as `the order of Metoprolol 50 mg (metoprolol)`.
pub(crate) fn register_words(device: &Device, patient: &PatientId, register: &str) -> String {
    match register.split_once('/') {
        Some(("order", id)) => format!("the order of {}", order_name(device, patient, id)),
        Some((kind, id)) => format!("the {} {id}", kind.replace('-', " ")),
        None => format!("the {}", register.replace('-', " ")),
    }
}

/// An order as words: `Metoprolol 50 mg (metoprolol)`, or its id if this device holds none.
pub(crate) fn order_name(device: &Device, patient: &PatientId, order: &str) -> String {
    match care::order_names(device, patient)
        .ok()
        .and_then(|names| names.into_iter().find(|(id, _)| id.as_str() == order))
    {
        Some((_, name)) => format!("{name} ({order})"),
        None => order.to_owned(),
    }
}

/// `Dagny Berg (p-17)`, or the id alone if this device holds no name.
pub(crate) fn patient_name(device: &Device, patient: &PatientId) -> String {
    match care::name_of(device, patient) {
        Ok(Some(name)) => format!("{name} ({patient})"),
        _ => patient.to_string(),
    }
}

pub(crate) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `08:00`, `08:00 and 20:00`, `08:00, 12:00 and 20:00`.
pub(crate) fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

pub(crate) fn route_words(route: &str) -> String {
    match route.trim().to_lowercase().as_str() {
        "oral" | "po" | "by mouth" => "by mouth".into(),
        "sc" | "subcutaneous" => "under the skin".into(),
        "iv" | "intravenous" => "into a vein".into(),
        "im" | "intramuscular" => "into a muscle".into(),
        "topical" | "cutaneous" => "on the skin".into(),
        "inhaled" | "inhalation" => "inhaled".into(),
        "rectal" => "rectally".into(),
        other => format!("({other})"),
    }
}

pub(crate) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `2026-11-24` as `24 Nov 2026`; anything else as it is.
pub(crate) fn day(date: &str) -> String {
    let parts: Vec<&str> = date.split('-').collect();
    match parts.as_slice() {
        [y, m, d] => match (m.parse::<usize>(), d.parse::<u8>()) {
            (Ok(m @ 1..=12), Ok(d)) => format!("{d} {} {y}", MONTHS[m - 1]),
            _ => date.to_owned(),
        },
        _ => date.to_owned(),
    }
}

/// A slot `2026-11-24T08:00` as `24 Nov 2026 08:00`.
pub(crate) fn slot_words(slot: &str) -> String {
    match slot.split_once('T') {
        Some((d, t)) => format!("{} {t}", day(d)),
        None => slot.to_owned(),
    }
}

/// A serde enum's kebab-case name as words (`not-started` as `not started`).
pub(super) fn kebab(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('-', " ")))
        .unwrap_or_default()
}
