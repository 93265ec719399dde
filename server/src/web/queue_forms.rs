//! The nurse's queue's forms: a flag acknowledged, a conflict resolved. Each is the nurse's own
//! change, made as the nurse's web device (`web-<user>`, [`super::device`]) through the
//! model's rules, audited before it is stored, signed with the web device's key as a phone
//! signs an upload, and sent with its signature to every phone through the feed.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use serde::Deserialize;
use sync_core::model::{EventBody, MAX_LIST, Register};
use sync_core::{DocumentId, PatientId, RecordId, Timestamp};

use super::queue::{self, nurse};
use super::{Ctx, LangQuery, Page, csrf_ok, device, respond};
use crate::app::AppState;
use crate::audit::{AuditAction, AuditEntry};
use crate::directory::User;

/// Makes the nurse's change to `doc` of `patient` as their web device, audited first and
/// signed with the web device's key; redirects to the queue.
fn write(
    state: &AppState,
    ctx: &Ctx,
    me: &User,
    patient: &PatientId,
    doc: &DocumentId,
    what: String,
    f: impl FnOnce(&mut sync_core::model::Edit<'_>) -> Result<(), sync_core::ModelError>,
) -> Result<Response, Page> {
    let author = device::author(me)?;
    let key = device::key(state, &author, ctx.now_ms)?;
    let entry = AuditEntry::new(ctx.now_ms, me.id.as_str(), AuditAction::Accept)
        .device(&author.device)
        .patient(patient)
        .document(doc.to_string())
        .detail(format!("web: {what}"));
    state
        .audit_entry(entry.clone())
        .map_err(|e| Page::Internal(e.to_string()))?;
    if let Err(e) = state.write_as(doc, &author, Some(&key), Timestamp(ctx.now_ms), f) {
        let _ = state.audit_entry(AuditEntry {
            detail: format!("NOT DONE ({e}): {}", entry.detail),
            ..entry
        });
        return Err(Page::Refused);
    }
    Ok(Redirect::to("/app/nurse").into_response())
}

/// The signed-in nurse and the form's person, once the form's CSRF token is good and the person
/// is in the nurse's care (the checks every form of the queue makes first).
fn nurse_form(
    state: &AppState,
    ctx: &Ctx,
    csrf: &str,
    patient: &str,
) -> Result<(User, PatientId), Page> {
    let (me, assigned) = nurse(state, ctx)?;
    if !csrf_ok(ctx, csrf) {
        return Err(Page::BadForm);
    }
    let patient = PatientId::new(patient).map_err(|_| Page::BadForm)?;
    if !assigned.contains(&patient) {
        return Err(Page::Forbidden);
    }
    Ok((me, patient))
}

/// A fresh id for a record written now (sync-core's countdown ids, as the app writes them).
fn new_record(now_ms: i64) -> RecordId {
    RecordId::countdown(Timestamp(now_ms), rand::rng().random::<u64>())
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
        let (me, patient) = nurse_form(&state, ctx, &f.csrf, &f.patient)?;
        let phones = queue::phones(&state, &patient)?;
        let now = Timestamp(ctx.now_ms);
        let found = state
            .with_repo(|repo| -> Result<_, sync_core::RepoError> {
                Ok(queue::flags(&repo.chart(&patient, &[])?, now, &phones)
                    .into_iter()
                    .find(|x| x.id == f.flag))
            })
            .map_err(|e| Page::Internal(e.to_string()))?
            .ok_or(Page::NotFound)?;
        let record = new_record(ctx.now_ms);
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
        let (me, patient) = nurse_form(&state, ctx, &f.csrf, &f.patient)?;
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
        let record = new_record(ctx.now_ms);
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
