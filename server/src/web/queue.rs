//! The nurse's queue: open flags and conflicts of the people assigned to the signed-in nurse,
//! acknowledged and resolved from the page.
//!
//! Flags and conflicts are the model's (`Chart::flags`, `Chart::conflicts`), shown generically
//! (a flag by its kind, its id and its evidence), so a kind of flag added to the model appears
//! here without more work. An acknowledgement or a resolution is the nurse's own change, made
//! as the nurse's web device (`web-<user>`) through the model's rules, audited before it is
//! stored, and sent to every phone through the feed. Each person whose flags and conflicts
//! are shown is a read in the audit log before the page is answered.

use std::collections::BTreeSet;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use serde::Deserialize;
use sync_core::model::{EventBody, MAX_LIST, Register, RegisterValue};
use sync_core::{Author, DeviceId, DocumentId, PatientId, RecordId, Role, Timestamp};

use super::{Chrome, Ctx, LangQuery, Page, Texts, Viewer, csrf_ok, html, respond, viewer};
use crate::app::AppState;
use crate::audit::{AuditAction, AuditEntry};
use crate::directory::User;

/// The nurse, and the people assigned to them (the same relationship sync's access follows).
fn nurse(state: &AppState, ctx: &Ctx) -> Result<(User, BTreeSet<PatientId>), Page> {
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

/// The nurse's web device: the device their browser sessions write as.
fn nurse_author(user: &User) -> Result<Author, Page> {
    let device =
        DeviceId::new(format!("web-{}", user.id)).map_err(|e| Page::Internal(e.to_string()))?;
    Ok(Author::new(user.id.clone(), Role::Nurse, device))
}

struct Evidence {
    who: String,
    what: String,
}

struct FlagRow {
    patient: String,
    patient_name: String,
    id: String,
    kind: String,
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
    candidates: Vec<Candidate>,
}

#[derive(Template)]
#[template(path = "web/queue.html")]
struct QueuePage {
    c: Chrome,
    flags: Vec<FlagRow>,
    conflicts: Vec<ConflictRow>,
    csrf: String,
}

/// A flag's kind in words: known kinds named, any other by its id's first part.
fn kind_label(t: &Texts, id: &str) -> String {
    let kind = id.split('/').next().unwrap_or(id);
    let sv = t.lang == "sv";
    match kind {
        "double-dose" if sv => "Möjlig dubbeldos".into(),
        "double-dose" => "Possible double dose".into(),
        "superseded-order" if sv => "Given på ersatt ordination".into(),
        "superseded-order" => "Given on a superseded order".into(),
        "time-uncertain" if sv => "Osäker tid, granska".into(),
        "time-uncertain" => "Time uncertain, review".into(),
        other => other.to_owned(),
    }
}

fn who(users: &[User], author: &Author) -> String {
    match users.iter().find(|u| u.id == author.user) {
        Some(u) => format!("{} ({}, {})", u.name, u.role.as_str(), u.org),
        None => format!("{} ({})", author.user, author.role.as_str()),
    }
}

/// A value in words, whatever its kind (the model's own JSON, its type tag left out).
fn value_text(v: &RegisterValue) -> String {
    match v {
        RegisterValue::Order(o) => format!(
            "{} {}: {} ({}) {}",
            o.drug,
            o.strength,
            o.dose,
            o.route,
            o.times.join(", ")
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

fn when(ms: i64) -> String {
    let s = crate::admin_cli::format_ms(ms);
    format!("{} {} UTC", &s[..10], &s[11..16])
}

fn render(state: &AppState, ctx: &Ctx) -> Result<Response, Page> {
    let t = ctx.t();
    let internal = |e: &dyn std::fmt::Display| Page::Internal(e.to_string());
    let (me, assigned) = nurse(state, ctx)?;
    let dir = state.directory();
    let users = dir.users().map_err(|e| internal(&e))?;
    let names = dir.patients().map_err(|e| internal(&e))?;
    let name_of = |p: &PatientId| {
        names
            .iter()
            .find(|(id, _)| id == p)
            .map_or_else(String::new, |(_, n)| n.clone())
    };
    // Recorded before anything of the people is read out.
    let reads: Vec<AuditEntry> = assigned
        .iter()
        .map(|p| {
            AuditEntry::new(ctx.now_ms, me.id.as_str(), AuditAction::Read)
                .patient(p)
                .detail("web: nurse's queue (open flags, conflicts)")
        })
        .collect();
    state
        .audit_log()
        .append_all(reads)
        .map_err(|e| internal(&e))?;
    let mut flags = Vec::new();
    let mut conflicts = Vec::new();
    for p in &assigned {
        state
            .with_repo(|repo| -> Result<(), sync_core::RepoError> {
                let (open, found) = {
                    let chart = repo.chart(p, &[])?;
                    let open: Vec<_> = chart.flags().into_iter().filter(|f| f.open).collect();
                    (open, chart.conflicts())
                };
                for f in open {
                    let doc = repo.get(&f.document)?;
                    let evidence = f
                        .evidence
                        .iter()
                        .filter_map(|id| doc.events().get(id))
                        .map(|ev| Evidence {
                            who: who(&users, &ev.author),
                            what: format!("{} ({})", event_text(&ev.body), when(ev.at.0)),
                        })
                        .collect();
                    flags.push(FlagRow {
                        patient: p.to_string(),
                        patient_name: name_of(p),
                        kind: kind_label(t, &f.id),
                        id: f.id,
                        evidence,
                    });
                }
                for c in found {
                    conflicts.push(ConflictRow {
                        patient: p.to_string(),
                        patient_name: name_of(p),
                        document: c.document.to_string(),
                        register: c.register.to_string(),
                        candidates: c
                            .candidates
                            .iter()
                            .map(|v| Candidate {
                                revision: v.id.to_string(),
                                value: value_text(&v.revision.value),
                                who: who(&users, &v.revision.author),
                                when: when(v.revision.at.0),
                            })
                            .collect(),
                    });
                }
                Ok(())
            })
            .map_err(|e| internal(&e))?;
    }
    let page = QueuePage {
        c: ctx.chrome(t.queue, Some(format!("{} ({})", me.name, me.id))),
        flags,
        conflicts,
        csrf: ctx
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default(),
    };
    Ok(html(Some(ctx), page.render()))
}

fn event_text(body: &EventBody) -> String {
    match body {
        EventBody::Administration { slot, outcome, .. } => {
            format!(
                "{slot}: {}",
                serde_json::to_value(outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )
        }
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default(),
    }
}

/// `GET /app/nurse`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    respond(&state, &headers, &q, |ctx| render(&state, ctx))
}

/// Makes the nurse's change to `doc` of `patient`, audited first; redirects to the queue.
fn write(
    state: &AppState,
    ctx: &Ctx,
    me: &User,
    patient: &PatientId,
    doc: &DocumentId,
    what: String,
    f: impl FnOnce(&mut sync_core::model::Edit<'_>) -> Result<(), sync_core::ModelError>,
) -> Result<Response, Page> {
    let author = nurse_author(me)?;
    let entry = AuditEntry::new(ctx.now_ms, me.id.as_str(), AuditAction::Accept)
        .device(&author.device)
        .patient(patient)
        .document(doc.to_string())
        .detail(format!("web: {what}"));
    state
        .audit_entry(entry.clone())
        .map_err(|e| Page::Internal(e.to_string()))?;
    if let Err(e) = state.write_as(doc, &author, Timestamp(ctx.now_ms), f) {
        let _ = state.audit_entry(AuditEntry {
            detail: format!("NOT DONE ({e}): {}", entry.detail),
            ..entry
        });
        return Err(Page::Refused);
    }
    Ok(Redirect::to("/app/nurse").into_response())
}

fn new_record(prefix: &str) -> Result<RecordId, Page> {
    RecordId::new(format!("{prefix}-{:016x}", rand::rng().random::<u64>()))
        .map_err(|e| Page::Internal(e.to_string()))
}

#[derive(Debug, Deserialize)]
pub(super) struct AckForm {
    csrf: String,
    patient: String,
    flag: String,
}

/// `POST /app/nurse/flags`: acknowledges an open flag (its evidence as the model has it now).
pub(super) async fn acknowledge(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<AckForm>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let (me, assigned) = nurse(&state, ctx)?;
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        let patient = PatientId::new(f.patient).map_err(|_| Page::BadForm)?;
        if !assigned.contains(&patient) {
            return Err(Page::Forbidden);
        }
        let found = state
            .with_repo(|repo| -> Result<_, sync_core::RepoError> {
                Ok(repo
                    .chart(&patient, &[])?
                    .flags()
                    .into_iter()
                    .find(|x| x.id == f.flag))
            })
            .map_err(|e| Page::Internal(e.to_string()))?
            .ok_or(Page::NotFound)?;
        let record = new_record("ack")?;
        write(
            &state,
            ctx,
            &me,
            &patient,
            &found.document,
            format!("flag {} acknowledged ({record})", found.id),
            |e| {
                e.record(
                    record.clone(),
                    EventBody::FlagAcknowledgement {
                        flag: found.id.clone(),
                        covers: found.evidence.clone(),
                        comment: None,
                    },
                )
            },
        )
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ResolveForm {
    csrf: String,
    patient: String,
    document: String,
    /// The candidate revision whose value settles the conflict.
    revision: String,
}

/// `POST /app/nurse/conflicts`: resolves a conflict with one candidate's value, as a new
/// revision superseding every current one (`Edit::resolve`).
pub(super) async fn resolve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<ResolveForm>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let (me, assigned) = nurse(&state, ctx)?;
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        let patient = PatientId::new(f.patient).map_err(|_| Page::BadForm)?;
        if !assigned.contains(&patient) {
            return Err(Page::Forbidden);
        }
        let doc: DocumentId = f.document.parse().map_err(|_| Page::BadForm)?;
        let chosen = RecordId::new(f.revision).map_err(|_| Page::BadForm)?;
        let (register, value, after) = state
            .with_repo(|repo| -> Result<_, sync_core::RepoError> {
                let chart = repo.chart(&patient, &[])?;
                let found = chart.conflicts().into_iter().find_map(|c| {
                    (c.document == doc)
                        .then(|| {
                            c.candidates
                                .iter()
                                .find(|v| v.id == chosen)
                                .map(|v| (c.register.clone(), v.revision.value.clone()))
                        })
                        .flatten()
                });
                Ok(found.map(|(register, value)| {
                    // As a phone's resolution does: an order's new version names the doses it
                    // was written knowing of (the superseded-order flag reads it).
                    let after = match &register {
                        Register::Order(o) => chart.given_doses(o, MAX_LIST),
                        _ => Vec::new(),
                    };
                    (register, value, after)
                }))
            })
            .map_err(|e| Page::Internal(e.to_string()))?
            .ok_or(Page::NotFound)?;
        let record = new_record("rev")?;
        write(
            &state,
            ctx,
            &me,
            &patient,
            &doc,
            format!("conflict of {register} resolved with {chosen} ({record})"),
            |e| {
                let mut context = e.context().clone();
                context.after = after;
                e.set_context(context);
                e.resolve(record.clone(), register.clone(), value)
            },
        )
    })
}
