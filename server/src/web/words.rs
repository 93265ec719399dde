//! The pages' sentences, Swedish first and English: what a flag means (with the drug, the
//! person and the local time), dates and times as people read them, staff by name, role and
//! organisation, and a delegation's tasks. The fixed words are in [`super::i18n`]; these take
//! values. Every `match` on a model type is exhaustive, so a new kind of flag does not compile
//! until it has a sentence in both languages.
//!
//! What the sentences say comes from the model (the flag's kind and subject, the orders' names,
//! `round::local_slot`); this module only words it, as the CLI's `human.rs` does for phones.
//! Times are Swedish local time (`Europe/Stockholm` from the time zone database), the time of
//! the people these pages serve.

use sync_core::model::round::local_slot;
use sync_core::model::{AdministrationOutcome, FlagKind, Register};
use sync_core::{Role, Timestamp};

use super::i18n::Lang;
use crate::directory::User;

const MONTHS_SV: [&str; 12] = [
    "januari",
    "februari",
    "mars",
    "april",
    "maj",
    "juni",
    "juli",
    "augusti",
    "september",
    "oktober",
    "november",
    "december",
];
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Swedish local time's offset from UTC at `t`, in minutes (60, or 120 in summer time), from
/// the IANA time zone database's `Europe/Stockholm` as bundled with `jiff` (so a server without
/// `/usr/share/zoneinfo` answers the same); 60 if the instant or the zone cannot be read.
pub fn swedish_offset_minutes(t: Timestamp) -> i32 {
    let Ok(zone) = jiff::tz::db().get("Europe/Stockholm") else {
        return 60;
    };
    jiff::Timestamp::from_millisecond(t.0)
        .map(|at| zone.to_offset(at).seconds() / 60)
        .unwrap_or(60)
}

/// The local slot (`YYYY-MM-DDTHH:MM`) of instant `t`, in Swedish local time.
pub(crate) fn local(t: Timestamp) -> String {
    local_slot(t, swedish_offset_minutes(t))
}

/// `2026-11-24` as `24 november 2026` (or `24 November 2026`); anything else as it is.
pub(crate) fn date(lang: Lang, d: &str) -> String {
    let parts: Vec<&str> = d.split('-').collect();
    let [y, m, day] = parts.as_slice() else {
        return d.to_owned();
    };
    match (m.parse::<usize>(), day.parse::<u8>()) {
        (Ok(m @ 1..=12), Ok(day)) => {
            let month = match lang {
                Lang::Sv => MONTHS_SV[m - 1],
                Lang::En => MONTHS_EN[m - 1],
            };
            format!("{day} {month} {y}")
        }
        _ => d.to_owned(),
    }
}

/// A local slot `2026-11-24T08:00` as `24 november 2026 kl. 08:00` (`24 November 2026 at
/// 08:00`); anything else as it is.
pub(crate) fn slot(lang: Lang, s: &str) -> String {
    match s.split_once('T') {
        Some((d, t)) => match lang {
            Lang::Sv => format!("{} kl. {t}", date(lang, d)),
            Lang::En => format!("{} at {t}", date(lang, d)),
        },
        None => s.to_owned(),
    }
}

/// An instant as a local date and time.
pub(crate) fn when(lang: Lang, t: Timestamp) -> String {
    slot(lang, &local(t))
}

/// When a record was written: `registrerad 24 november 2026 kl. 08:03`.
pub(crate) fn recorded(lang: Lang, t: Timestamp) -> String {
    match lang {
        Lang::Sv => format!("registrerad {}", when(lang, t)),
        Lang::En => format!("recorded {}", when(lang, t)),
    }
}

pub(crate) fn role(lang: Lang, r: Role) -> &'static str {
    match (lang, r) {
        (Lang::Sv, Role::Carer) => "undersköterska",
        (Lang::Sv, Role::Nurse) => "sjuksköterska",
        (Lang::Sv, Role::Admin) => "samordnare",
        (Lang::Sv, Role::Person) => "personen själv",
        (Lang::En, Role::Carer) => "carer",
        (Lang::En, Role::Nurse) => "nurse",
        (Lang::En, Role::Admin) => "coordinator",
        (Lang::En, Role::Person) => "the person",
    }
}

/// `Anna Andersson (undersköterska, Hemtjänst Norr)`: a member of staff by name, role and
/// organisation (by its name when `orgs` knows it).
pub(crate) fn staff(lang: Lang, u: &User, orgs: &[(String, String)]) -> String {
    let org = org_name(&u.org, orgs);
    format!("{} ({}, {org})", u.name, role(lang, u.role))
}

/// An organisation by its name when `orgs` (id, name) knows it, else by its id.
pub(crate) fn org_name<'a>(id: &'a str, orgs: &'a [(String, String)]) -> &'a str {
    orgs.iter()
        .find(|(o, _)| o == id)
        .map_or(id, |(_, name)| name.as_str())
}

/// `08:00`, `08:00 och 20:00`, `08:00, 12:00 och 20:00`.
pub(crate) fn and_list(lang: Lang, items: &[String]) -> String {
    let and = match lang {
        Lang::Sv => "och",
        Lang::En => "and",
    };
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {and} {last}", rest.join(", ")),
    }
}

/// A delegation's tasks: `medication` in words, named tasks as written.
pub(crate) fn tasks(lang: Lang, scope: &[String]) -> String {
    let words: Vec<String> = scope
        .iter()
        .map(|s| match (lang, s.as_str()) {
            (Lang::Sv, sync_core::model::delegation::MEDICATION) => "läkemedelsöverlämning".into(),
            (Lang::En, sync_core::model::delegation::MEDICATION) => {
                "medication administration".into()
            }
            _ => s.clone(),
        })
        .collect();
    and_list(lang, &words)
}

/// What a flag means, as one sentence: its kind, the drug (`drug`: the order's name, or its id
/// when none is known), when, and for whom. `records`: how many records raise it.
pub(crate) fn flag(
    lang: Lang,
    kind: &FlagKind,
    drug: &str,
    person: &str,
    records: usize,
) -> String {
    match (lang, kind) {
        (Lang::Sv, FlagKind::PossibleDoubleDose { slot: s, .. }) => format!(
            "Möjlig dubbeldos: {drug} den {} till {person} är signerad {records} gånger.",
            slot(lang, s)
        ),
        (Lang::En, FlagKind::PossibleDoubleDose { slot: s, .. }) => format!(
            "Possible double dose: {drug} on {} for {person} is signed {records} times.",
            slot(lang, s)
        ),
        (Lang::Sv, FlagKind::GivenOnSupersededOrder { .. }) => format!(
            "Given på ersatt ordination: en dos {drug} till {person} gavs enligt en \
             ordination som redan var ändrad."
        ),
        (Lang::En, FlagKind::GivenOnSupersededOrder { .. }) => format!(
            "Given on a superseded order: a dose of {drug} for {person} was given on an order \
             version already replaced."
        ),
        (Lang::Sv, FlagKind::SupersededOrderTimeUncertain { .. }) => format!(
            "Osäker tid, granska: en dos {drug} till {person} kan ha getts enligt en ändrad \
             ordination (en telefons klocka gick fel)."
        ),
        (Lang::En, FlagKind::SupersededOrderTimeUncertain { .. }) => format!(
            "Time uncertain, review: a dose of {drug} for {person} may have been given on a \
             replaced order version (a phone's clock was off)."
        ),
        (Lang::Sv, FlagKind::NoValidDelegation { .. }) => format!(
            "Utan giltig delegering: en dos {drug} till {person} gavs av någon som inte hade \
             en giltig delegering."
        ),
        (Lang::En, FlagKind::NoValidDelegation { .. }) => format!(
            "No valid delegation: a dose of {drug} for {person} was given by someone without \
             a valid delegation."
        ),
        (Lang::Sv, FlagKind::PrnLimitExceeded { .. }) => format!(
            "Över gränsen: en vid behov-dos {drug} till {person} gavs utöver ordinationens \
             gränser."
        ),
        (Lang::En, FlagKind::PrnLimitExceeded { .. }) => format!(
            "Past the limits: a \"when needed\" dose of {drug} for {person} was given past the \
             order's limits."
        ),
        (Lang::Sv, FlagKind::OverdueSlot { slot: s, .. }) => format!(
            "Försenad: {drug} den {} till {person}, inget är signerat.",
            slot(lang, s)
        ),
        (Lang::En, FlagKind::OverdueSlot { slot: s, .. }) => format!(
            "Overdue: {drug} on {} for {person}, nothing is recorded.",
            slot(lang, s)
        ),
        (Lang::Sv, FlagKind::FollowUpOverdue { .. }) => format!(
            "Uppföljning försenad: effekten av en vid behov-dos {drug} till {person} är inte \
             dokumenterad."
        ),
        (Lang::En, FlagKind::FollowUpOverdue { .. }) => format!(
            "Follow-up overdue: the effect of a \"when needed\" dose of {drug} for {person} is \
             not recorded."
        ),
    }
}

/// An administration as evidence: `Given dos för 24 november 2026 kl. 08:00`.
pub(crate) fn administration(lang: Lang, outcome: AdministrationOutcome, s: &str) -> String {
    let what = match (lang, outcome) {
        (Lang::Sv, AdministrationOutcome::Given) => "Given dos",
        (Lang::Sv, AdministrationOutcome::NotGiven) => "Ej given dos",
        (Lang::Sv, AdministrationOutcome::SelfAdministered) => "Dos överlämnad för egenvård",
        (Lang::En, AdministrationOutcome::Given) => "Dose given",
        (Lang::En, AdministrationOutcome::NotGiven) => "Dose not given",
        (Lang::En, AdministrationOutcome::SelfAdministered) => "Dose handed over to take oneself",
    };
    match lang {
        Lang::Sv => format!("{what} för {}", slot(lang, s)),
        Lang::En => format!("{what} for {}", slot(lang, s)),
    }
}

/// Which value is in conflict: `ordinationen av Metoprolol 50 mg`.
pub(crate) fn register(lang: Lang, r: &Register, drug: impl Fn(&str) -> String) -> String {
    let sv = lang == Lang::Sv;
    match r {
        Register::Order(id) if sv => format!("ordinationen av {}", drug(id.as_str())),
        Register::Order(id) => format!("the order of {}", drug(id.as_str())),
        Register::Delegation(_) if sv => "en delegering".into(),
        Register::Delegation(_) => "a delegation".into(),
        Register::Allergy(_) if sv => "en allergi".into(),
        Register::Allergy(_) => "an allergy".into(),
        Register::Resuscitation if sv => "HLR-beslutet".into(),
        Register::Resuscitation => "the resuscitation decision".into(),
        Register::Responsibility if sv => "det samlade ansvaret".into(),
        Register::Responsibility => "the overall responsibility".into(),
        Register::FollowUp if sv => "uppföljningsdatumet".into(),
        Register::FollowUp => "the follow-up date".into(),
        Register::Goal(_) if sv => "ett mål".into(),
        Register::Goal(_) => "a goal".into(),
        Register::Intervention(_) if sv => "en insats".into(),
        Register::Intervention(_) => "an intervention".into(),
        Register::Risk(_) if sv => "en risk".into(),
        Register::Risk(_) => "a risk".into(),
        Register::Participant(_) if sv => "en deltagare".into(),
        Register::Participant(_) => "a participant".into(),
        Register::DisplayName if sv => "namnet".into(),
        Register::DisplayName => "the name".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sync_core::model::round::slot_instant;

    #[test]
    fn swedish_time_follows_summer_time() {
        let at = |s: &str| slot_instant(s, 0).unwrap();
        // 2026: summer time from 29 March 01:00 UTC until 25 October 01:00 UTC.
        assert_eq!(local(at("2026-03-29T00:59")), "2026-03-29T01:59");
        assert_eq!(local(at("2026-03-29T01:00")), "2026-03-29T03:00");
        assert_eq!(local(at("2026-10-25T00:59")), "2026-10-25T02:59");
        assert_eq!(local(at("2026-10-25T01:00")), "2026-10-25T02:00");
        assert_eq!(local(at("2026-11-24T07:00")), "2026-11-24T08:00");
        assert_eq!(
            when(Lang::Sv, at("2026-11-24T07:00")),
            "24 november 2026 kl. 08:00"
        );
        assert_eq!(
            when(Lang::En, at("2026-07-01T10:30")),
            "1 July 2026 at 12:30"
        );
    }
}
