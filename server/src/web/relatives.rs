//! The person's consent that a relative may read their view (issue 15), given and withdrawn
//! on the person's own page and nowhere else: the consent is the person's own act, recorded in
//! the directory ([`crate::directory::Directory::grant_relative`]) and audited as theirs before
//! it is recorded. Withdrawing it ends the relative's web sessions at once (and
//! [`super::viewer`] refuses any session whose consent is gone, however it went).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::person::render;
use super::{LangQuery, Page, Subject, csrf_ok, record_access, respond};
use crate::app::AppState;
use crate::audit::{AuditAction, AuditEntry};

#[derive(Debug, Deserialize)]
pub(super) struct RelativeForm {
    csrf: String,
    name: String,
}

/// `POST /app/person/{patient}/relatives`: the person authorises a relative by name.
pub(super) async fn grant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Path(id): Path<String>,
    Form(f): Form<RelativeForm>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let access = record_access(&state, ctx, &id)?.own()?;
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        let relative = f.name.trim();
        let entry = AuditEntry::new(ctx.now_ms, access.actor(), AuditAction::Consent)
            .patient(&access.patient)
            .detail(format!(
                "web: the person's consent that relative {relative:?} may read their record"
            ));
        state
            .audit_entry(entry.clone())
            .map_err(|e| Page::Internal(e.to_string()))?;
        match state
            .directory()
            .grant_relative(&access.patient, relative, ctx.now_ms)
        {
            Ok(_) => Ok(Redirect::to(&format!("/app/person/{}", access.patient)).into_response()),
            Err(e) => {
                let _ = state.audit_entry(AuditEntry {
                    detail: format!("NOT DONE ({e}): {}", entry.detail),
                    ..entry
                });
                let mut r = render(&state, ctx, &access, Some(ctx.t().consent_refused))?;
                *r.status_mut() = StatusCode::BAD_REQUEST;
                Ok(r)
            }
        }
    })
}

/// `POST /app/person/{patient}/relatives/withdraw`: the person withdraws a relative's consent;
/// the relative's sessions end at once.
pub(super) async fn withdraw(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Path(id): Path<String>,
    Form(f): Form<RelativeForm>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let access = record_access(&state, ctx, &id)?.own()?;
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        let web = state.web().ok_or(Page::NotFound)?;
        let relative = f.name.trim().to_owned();
        let entry = AuditEntry::new(ctx.now_ms, access.actor(), AuditAction::ConsentWithdrawn)
            .patient(&access.patient)
            .detail(format!(
                "web: the person withdrew relative {relative:?}'s consent; their web sessions end"
            ));
        state
            .audit_entry(entry)
            .map_err(|e| Page::Internal(e.to_string()))?;
        let dir = state.directory();
        match dir.withdraw_relative(&access.patient, &relative, ctx.now_ms) {
            Ok(()) | Err(crate::directory::DirectoryError::NotFound { .. }) => {}
            Err(e) => return Err(Page::Internal(e.to_string())),
        }
        let subject = Subject::Relative {
            patient: access.patient.clone(),
            relative,
        };
        web.sessions
            .revoke_subject(&subject, ctx.now_ms)
            .map_err(|e| Page::Internal(e.to_string()))?;
        Ok(Redirect::to(&format!("/app/person/{}", access.patient)).into_response())
    })
}
