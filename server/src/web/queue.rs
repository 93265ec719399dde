//! The nurse's queue: open flags, conflicts and delegations ending within 30 days, of the
//! people assigned to the signed-in nurse. Flags are acknowledged and conflicts resolved from
//! the page ([`super::queue_forms`]).
//!
//! Flags, conflicts, order names and the delegations that end soon are the model's
//! (`Chart::flags` with the timed flags the server raises for the devices' round too, overdue
//! slots and follow-ups, `Chart::conflicts`, `round::order_names`, `delegation::ending_within`, the
//! same rule as the phone's `nara delegations --ending-within`); this module only puts them in
//! sentences ([`super::words`]), Swedish first. Each person whose record is shown is a read in
//! the audit log before the page is answered.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use sync_core::model::delegation;
use sync_core::model::round::{PhoneSync, order_names};
use sync_core::model::{Chart, EventBody, Flag, RegisterValue};
use sync_core::{Author, PatientId, RecordId, Role, Timestamp};

use super::i18n::Lang;
use super::{Chrome, Ctx, LangQuery, Page, Viewer, html, respond, viewer, words};
use crate::app::AppState;
use crate::app::round;
use crate::audit::{AuditAction, AuditEntry};
use crate::directory::User;

/// How far ahead the queue lists delegations that end.
pub(crate) const DELEGATIONS_ENDING_DAYS: u32 = 30;

/// The phones that could have recorded `patient`'s doses (for the overdue flags).
pub(super) fn phones(state: &AppState, patient: &PatientId) -> Result<Vec<PhoneSync>, Page> {
    let dir = state.directory();
    let internal = |e: crate::directory::DirectoryError| Page::Internal(e.to_string());
    let devices = dir.devices().map_err(internal)?;
    let assignments = dir.assignments().map_err(internal)?;
    Ok(round::phones_of(patient, &devices, &assignments))
}

/// Every flag the server raises for the chart at `now` (the chart's own and the timed ones,
/// as for the devices' round), in Swedish local time.
pub(super) fn flags(chart: &Chart<'_>, now: Timestamp, phones: &[PhoneSync]) -> Vec<Flag> {
    round::flags(chart, now, words::swedish_offset_minutes(now), phones)
}

/// The nurse, and the people assigned to them (the same relationship sync's access follows).
pub(super) fn nurse(state: &AppState, ctx: &Ctx) -> Result<(User, BTreeSet<PatientId>), Page> {
    let user = match viewer(state, ctx)? {
        Viewer::Staff(u) if u.role == Role::Nurse => u,
        _ => return Err(Page::Forbidden),
    };
    let assigned = state
        .directory()
        .assignments()
        .map_err(|e| Page::Internal(e.to_string()))?
        .remove(&user.id)
        .unwrap_or_default();
    Ok((user, assigned))
}

struct Evidence {
    who: String,
    what: String,
}

struct FlagRow {
    patient: String,
    id: String,
    /// The flag's meaning as a sentence (its kind, the drug, when, for whom).
    sentence: String,
    evidence: Vec<Evidence>,
}

struct Candidate {
    revision: String,
    value: String,
    who: String,
    when: String,
}

struct ConflictRow {
    patient: String,
    patient_name: String,
    document: String,
    register: String,
    /// Which value is in conflict, in words.
    what: String,
    candidates: Vec<Candidate>,
}

struct DelegationRow {
    id: String,
    until: Timestamp,
    patient_name: String,
    worker: String,
    tasks: String,
    ends: String,
}

#[derive(Template)]
#[template(path = "web/queue.html")]
struct QueuePage {
    c: Chrome,
    flags: Vec<FlagRow>,
    conflicts: Vec<ConflictRow>,
    delegations: Vec<DelegationRow>,
    csrf: String,
}

/// What the page needs to name people, staff and orders.
struct Names {
    lang: Lang,
    users: Vec<User>,
    orgs: Vec<(String, String)>,
    patients: Vec<(PatientId, String)>,
}

impl Names {
    fn person(&self, p: &PatientId) -> String {
        self.patients
            .iter()
            .find(|(id, _)| id == p)
            .map_or_else(|| p.to_string(), |(_, n)| n.clone())
    }

    /// Staff by name, role and organisation; someone the directory does not know by id.
    fn author(&self, a: &Author) -> String {
        match self.users.iter().find(|u| u.id == a.user) {
            Some(u) => words::staff(self.lang, u, &self.orgs),
            None => format!("{} ({})", a.user, words::role(self.lang, a.role)),
        }
    }

    fn worker(&self, id: &sync_core::UserId) -> String {
        self.users.iter().find(|u| &u.id == id).map_or_else(
            || id.to_string(),
            |u| words::staff(self.lang, u, &self.orgs),
        )
    }
}

/// A value in words, whatever its kind (the model's own JSON, its type tag left out).
fn value_text(lang: Lang, v: &RegisterValue) -> String {
    match v {
        RegisterValue::Order(o) => format!(
            "{} {}: {}, {}, {}",
            o.drug,
            o.strength,
            o.dose,
            o.route,
            words::and_list(lang, &o.times)
        ),
        other => match serde_json::to_value(other) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.remove("type");
                m.into_iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}: {}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            _ => String::new(),
        },
    }
}

/// A record that raises a flag, in words.
fn event_text(lang: Lang, body: &EventBody) -> String {
    match body {
        EventBody::Administration { slot, outcome, .. } => {
            words::administration(lang, *outcome, slot)
        }
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default(),
    }
}

/// One person's part of the queue.
fn person_rows(
    state: &AppState,
    names: &Names,
    p: &PatientId,
    now: Timestamp,
    phones: &[PhoneSync],
    out: &mut QueuePage,
) -> Result<(), sync_core::RepoError> {
    let lang = names.lang;
    let person = names.person(p);
    state.with_repo(|repo| -> Result<(), sync_core::RepoError> {
        let (open, found, drugs, ending) = {
            let chart = repo.chart(p, &[])?;
            let open: Vec<_> = flags(&chart, now, phones)
                .into_iter()
                .filter(|f| f.open)
                .collect();
            (
                open,
                chart.conflicts(),
                order_names(&chart),
                delegation::ending_within(&chart, now, DELEGATIONS_ENDING_DAYS),
            )
        };
        let drug = |order: &str| -> String {
            RecordId::new(order)
                .ok()
                .and_then(|id| drugs.get(&id).cloned())
                .unwrap_or_else(|| order.to_owned())
        };
        for f in open {
            let doc = repo.get(&f.document)?;
            let evidence = f
                .evidence
                .iter()
                .filter_map(|id| doc.events().get(id))
                .map(|ev| Evidence {
                    who: names.author(&ev.author),
                    what: format!(
                        "{} ({})",
                        event_text(lang, &ev.body),
                        words::recorded(lang, ev.at)
                    ),
                })
                .collect();
            let (order, ..) = f.kind.subject();
            out.flags.push(FlagRow {
                patient: p.to_string(),
                sentence: words::flag(
                    lang,
                    &f.kind,
                    &drug(order.as_str()),
                    &person,
                    f.evidence.len(),
                ),
                id: f.id,
                evidence,
            });
        }
        for c in found {
            out.conflicts.push(ConflictRow {
                patient: p.to_string(),
                patient_name: person.clone(),
                document: c.document.to_string(),
                register: c.register.to_string(),
                what: words::register(lang, &c.register, drug),
                candidates: c
                    .candidates
                    .iter()
                    .map(|v| Candidate {
                        revision: v.id.to_string(),
                        value: value_text(lang, &v.revision.value),
                        who: names.author(&v.revision.author),
                        when: words::when(lang, v.revision.at),
                    })
                    .collect(),
            });
        }
        for v in ending {
            let Some((.., d)) = v.candidates.first() else {
                continue;
            };
            // `until` is the first instant it no longer holds: it ends the day before.
            let last = words::local(Timestamp(d.until.0 - 1));
            out.delegations.push(DelegationRow {
                id: v.id.to_string(),
                until: d.until,
                patient_name: person.clone(),
                worker: names.worker(&d.to),
                tasks: words::tasks(lang, &d.scope),
                ends: words::date(lang, last.get(..10).unwrap_or(&last)),
            });
        }
        Ok(())
    })
}

fn render(state: &AppState, ctx: &Ctx) -> Result<Response, Page> {
    let t = ctx.t();
    let internal = |e: &dyn std::fmt::Display| Page::Internal(e.to_string());
    let (me, assigned) = nurse(state, ctx)?;
    let dir = state.directory();
    let names = Names {
        lang: ctx.lang,
        users: dir.users().map_err(|e| internal(&e))?,
        orgs: dir.orgs().map_err(|e| internal(&e))?,
        patients: dir.patients().map_err(|e| internal(&e))?,
    };
    // Recorded before anything of the people is read out.
    let reads: Vec<AuditEntry> = assigned
        .iter()
        .map(|p| {
            AuditEntry::new(ctx.now_ms, me.id.as_str(), AuditAction::Read)
                .patient(p)
                .detail("web: nurse's queue (open flags, conflicts, delegations ending)")
        })
        .collect();
    state
        .audit_log()
        .append_all(reads)
        .map_err(|e| internal(&e))?;
    let mut page = QueuePage {
        c: ctx.chrome(t.queue, Some(format!("{} ({})", me.name, me.id))),
        flags: Vec::new(),
        conflicts: Vec::new(),
        delegations: Vec::new(),
        csrf: ctx
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default(),
    };
    let devices = dir.devices().map_err(|e| internal(&e))?;
    let assignments = dir.assignments().map_err(|e| internal(&e))?;
    for p in &assigned {
        let phones = round::phones_of(p, &devices, &assignments);
        person_rows(state, &names, p, Timestamp(ctx.now_ms), &phones, &mut page)
            .map_err(|e| internal(&e))?;
    } // Soonest end first, across people.
    page.delegations
        .sort_by(|a, b| (a.until, &a.patient_name, &a.id).cmp(&(b.until, &b.patient_name, &b.id)));
    Ok(html(Some(ctx), page.render()))
}

/// `GET /app/nurse`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    respond(&state, &headers, &q, |ctx| render(&state, ctx))
}
