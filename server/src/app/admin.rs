//! The admin API (JSON, admin credential).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sync_core::{DeviceId, PatientId, UserId};

use crate::audit::{AuditAction, AuditEntry};

use super::{AppState, error, internal, now_ms};

fn admin_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return false;
    };
    // Compare in constant time.
    let a = token.as_bytes();
    let b = state.inner.admin_token.as_bytes();
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

macro_rules! require_admin {
    ($state:expr, $headers:expr) => {
        if !admin_ok(&$state, &$headers) {
            return error(StatusCode::UNAUTHORIZED, "the admin credential is required");
        }
    };
}

/// An admin action, audited first: the change is made only once its record is durable (the
/// directory is another file, so they cannot commit together). If the audit fails, nothing is
/// changed and the answer is 503; if the change then fails, a second record says it was not
/// made (best effort), and the error is returned.
fn audited<T, E: std::fmt::Display>(
    state: &AppState,
    entry: AuditEntry,
    act: impl FnOnce() -> Result<T, E>,
) -> Result<T, Box<Response>> {
    let compensation = entry.clone();
    if state.audit(entry).is_err() {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the action could not be audited and was not made",
        )));
    }
    act().map_err(|e| {
        let detail = format!("NOT DONE ({e}): {}", compensation.detail);
        let _ = state.audit(AuditEntry {
            at_ms: now_ms(),
            detail,
            ..compensation
        });
        Box::new(error(StatusCode::BAD_REQUEST, &e.to_string()))
    })
}

fn admin_entry(action: AuditAction, patient: Option<PatientId>, detail: String) -> AuditEntry {
    AuditEntry {
        at_ms: now_ms(),
        actor: "admin".into(),
        device: None,
        action,
        patient,
        document: None,
        detail,
    }
}

pub(super) async fn admin_devices(State(state): State<AppState>, headers: HeaderMap) -> Response {
    require_admin!(state, headers);
    match state.inner.directory.devices() {
        Ok(devices) => Json(json!({ "devices": devices })).into_response(),
        Err(e) => internal(e),
    }
}

pub(super) async fn admin_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    require_admin!(state, headers);
    let Ok(device) = DeviceId::new(id) else {
        return error(StatusCode::BAD_REQUEST, "bad device id");
    };
    let entry = AuditEntry::new(now_ms(), "admin", AuditAction::Revoke)
        .device(&device)
        .detail(format!("device {device} revoked"));
    match audited(&state, entry, || state.inner.directory.revoke(&device)) {
        Ok(()) => {
            let _ = state.refresh();
            Json(json!({ "revoked": device })).into_response()
        }
        Err(response) => *response,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Assignment {
    user: String,
    patient: String,
}

fn parse_assignment(a: &Assignment) -> Option<(UserId, PatientId)> {
    Some((
        UserId::new(a.user.as_str()).ok()?,
        PatientId::new(a.patient.as_str()).ok()?,
    ))
}

pub(super) async fn admin_assign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(a): Json<Assignment>,
) -> Response {
    require_admin!(state, headers);
    change_assignment(&state, &a, true)
}

pub(super) async fn admin_unassign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(a): Json<Assignment>,
) -> Response {
    require_admin!(state, headers);
    change_assignment(&state, &a, false)
}

/// Assigns or unassigns, audits it, and makes it effective on live connections at once.
fn change_assignment(state: &AppState, a: &Assignment, assign: bool) -> Response {
    let Some((user, patient)) = parse_assignment(a) else {
        return error(StatusCode::BAD_REQUEST, "bad user or patient id");
    };
    let directory = &state.inner.directory;
    let (action, word) = if assign {
        (AuditAction::Assign, "assigned")
    } else {
        (AuditAction::Unassign, "unassigned")
    };
    let entry = admin_entry(action, Some(patient.clone()), format!("{user} {word}"));
    let result = audited(state, entry, || {
        if assign {
            directory.assign(&user, &patient)
        } else {
            directory.unassign(&user, &patient)
        }
    });
    match result {
        Ok(()) => {
            let _ = state.refresh();
            Json(json!({ word: { "user": user, "patient": patient } })).into_response()
        }
        Err(response) => *response,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct EnrollmentRequest {
    user: String,
}

pub(super) async fn admin_enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(r): Json<EnrollmentRequest>,
) -> Response {
    require_admin!(state, headers);
    let Ok(user) = UserId::new(r.user) else {
        return error(StatusCode::BAD_REQUEST, "bad user id");
    };
    let entry = admin_entry(
        AuditAction::Enroll,
        None,
        format!("enrollment code issued for {user}"),
    );
    match audited(&state, entry, || {
        state.inner.directory.enroll(&user, now_ms())
    }) {
        Ok(code) => Json(json!({ "user": user, "code": code })).into_response(),
        Err(response) => *response,
    }
}

pub(super) async fn admin_audit_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    require_admin!(state, headers);
    match state.inner.audit.verify() {
        Ok(report) => Json(json!(report)).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ExportQuery {
    patient: String,
}

pub(super) async fn admin_audit_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    require_admin!(state, headers);
    let Ok(patient) = PatientId::new(q.patient) else {
        return error(StatusCode::BAD_REQUEST, "bad patient id");
    };
    match state.inner.audit.export_patient(&patient) {
        Ok(records) => {
            let mut lines = String::new();
            for r in records {
                lines.push_str(&serde_json::to_string(&r).unwrap_or_default());
                lines.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response()
        }
        Err(e) => internal(e),
    }
}
