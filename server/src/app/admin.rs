//! The admin API (JSON, admin credential). Failed admin logins are limited per client address
//! and audited once per run (`logins`). The actions and reads are the admin service's
//! ([`crate::admin`], shared with `nara-server admin`): audited before they are made or
//! answered, with one text whichever way they come, and not made (503) if they cannot be.

use std::net::IpAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use sync_core::{DeviceId, PatientId, UserId};

use crate::admin::{AdminError, AdminService};
use crate::admin_cli::ADMIN_ACTOR;

use super::{AppState, ClientAddr, error, internal, logins, now_ms};

/// The client's address, if the listener gave it (it does; tests in process may not).
pub(crate) type Client = Option<Extension<ConnectInfo<ClientAddr>>>;

pub(crate) fn client_ip(client: Client) -> Option<IpAddr> {
    client.map(|Extension(ConnectInfo(ClientAddr(a)))| a.ip())
}

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

/// `None` if the request carries the admin token; else the answer: 429 for an address that
/// used up its failed logins (before the token is looked at), 401 otherwise, counted and
/// audited once per run of failures.
fn refusal(state: &AppState, headers: &HeaderMap, client: Client) -> Option<Response> {
    let addr = client_ip(client);
    let failures = &state.inner.admin_login_failures;
    if let Some(refused) = logins::refusal(failures, addr) {
        return Some(refused);
    }
    if admin_ok(state, headers) {
        return None;
    }
    logins::failed(state, failures, addr);
    Some(error(
        StatusCode::UNAUTHORIZED,
        "the admin credential is required",
    ))
}

macro_rules! require_admin {
    ($state:expr, $headers:expr, $client:expr) => {
        if let Some(refused) = refusal(&$state, &$headers, $client) {
            return refused;
        }
    };
}

/// The one admin service ([`crate::admin`]) over this server's directory and audit log.
fn service(state: &AppState) -> AdminService {
    AdminService::new(state.directory().clone(), state.audit_log().clone())
}

/// The answer to an admin action or read that was not done: 503 if it could not be audited,
/// 400 (saying why) if the input was refused, 500 (logged, not told) if a store failed.
pub(crate) fn refused(e: AdminError) -> Response {
    match e {
        AdminError::Unaudited(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the action could not be audited and was not made",
        ),
        AdminError::UnauditedRead(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the read could not be audited and was not answered",
        ),
        e if e.is_refusal() => error(StatusCode::BAD_REQUEST, &e.to_string()),
        e => internal(e),
    }
}

pub(super) async fn admin_devices(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Response {
    require_admin!(state, headers, client);
    match service(&state).devices(ADMIN_ACTOR, now_ms()) {
        Ok(devices) => Json(json!({ "devices": devices })).into_response(),
        Err(e) => refused(e),
    }
}

pub(super) async fn admin_revoke(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    require_admin!(state, headers, client);
    let Ok(device) = DeviceId::new(id) else {
        return error(StatusCode::BAD_REQUEST, "bad device id");
    };
    match service(&state).revoke(ADMIN_ACTOR, now_ms(), &device) {
        Ok(_) => {
            let _ = state.refresh();
            Json(json!({ "revoked": device })).into_response()
        }
        Err(e) => refused(e),
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
    client: Client,
    headers: HeaderMap,
    Json(a): Json<Assignment>,
) -> Response {
    require_admin!(state, headers, client);
    change_assignment(&state, &a, true)
}

pub(super) async fn admin_unassign(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Json(a): Json<Assignment>,
) -> Response {
    require_admin!(state, headers, client);
    change_assignment(&state, &a, false)
}

/// Assigns or unassigns, audits it, and makes it effective on live connections at once.
fn change_assignment(state: &AppState, a: &Assignment, assign: bool) -> Response {
    let Some((user, patient)) = parse_assignment(a) else {
        return error(StatusCode::BAD_REQUEST, "bad user or patient id");
    };
    let word = if assign { "assigned" } else { "unassigned" };
    match set_assignment(state, ADMIN_ACTOR, &user, &patient, assign) {
        Ok(()) => Json(json!({ word: { "user": user, "patient": patient } })).into_response(),
        Err(response) => *response,
    }
}

/// Assigns or unassigns `user` and `patient` on behalf of `actor` (the admin API's "admin", a
/// coordinator's user id on the web): audited first, then made effective on live connections
/// at once. The one way both change the care relationship.
pub(crate) fn set_assignment(
    state: &AppState,
    actor: &str,
    user: &UserId,
    patient: &PatientId,
    assign: bool,
) -> Result<(), Box<Response>> {
    // The end's time and the store's feed head now: the write grace of the user's phones
    // admits what builds on no more (issue 12).
    let ended = state.ended_now().map_err(|e| {
        tracing::error!(error = %e, "reading the feed head failed");
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable",
        ))
    })?;
    service(state)
        .set_assignment(actor, ended.at_ms, ended.head, user, patient, assign)
        .map_err(|e| Box::new(refused(e)))?;
    let _ = state.refresh();
    Ok(())
}

/// A one-time enrollment code for `user`'s new phone, issued on behalf of `actor`, audited
/// first (never the code itself).
pub(crate) fn issue_enrollment(
    state: &AppState,
    actor: &str,
    user: &UserId,
) -> Result<String, Box<Response>> {
    service(state)
        .enroll(actor, now_ms(), user)
        .map(|e| e.code)
        .map_err(|e| Box::new(refused(e)))
}

#[derive(Debug, Deserialize)]
pub(super) struct EnrollmentRequest {
    user: String,
}

pub(super) async fn admin_enroll(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Json(r): Json<EnrollmentRequest>,
) -> Response {
    require_admin!(state, headers, client);
    let Ok(user) = UserId::new(r.user) else {
        return error(StatusCode::BAD_REQUEST, "bad user id");
    };
    match issue_enrollment(&state, ADMIN_ACTOR, &user) {
        Ok(code) => Json(json!({ "user": user, "code": code })).into_response(),
        Err(response) => *response,
    }
}

pub(super) async fn admin_audit_verify(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
) -> Response {
    require_admin!(state, headers, client);
    // Recorded first: the report then covers its own record. Checked against this node's
    // signed heads too, as `nara-server admin audit verify` does.
    let verified = crate::offload::offload(|| {
        let heads = state.signed_heads()?;
        service(&state).audit_verify_recorded(ADMIN_ACTOR, now_ms(), &heads)
    });
    match verified {
        Ok(report) => Json(json!(report)).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ExportQuery {
    patient: String,
}

pub(super) async fn admin_audit_export(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    require_admin!(state, headers, client);
    let Ok(patient) = PatientId::new(q.patient) else {
        return error(StatusCode::BAD_REQUEST, "bad patient id");
    };
    // Recorded before any of it is sent, as `nara-server admin audit export` does.
    match service(&state).audit_export(ADMIN_ACTOR, now_ms(), &patient) {
        Ok(records) => {
            let mut lines = String::new();
            for r in records {
                lines.push_str(&serde_json::to_string(&r).unwrap_or_default());
                lines.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response()
        }
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginCodeRequest {
    user: Option<String>,
    patient: Option<String>,
    /// A relative's name (with `patient`): only with the person's recorded consent.
    relative: Option<String>,
}

/// `POST /v1/admin/login-codes`: a one-time sign-in code for the web views, for a member of
/// staff (`user`) or a person (`patient`), audited first (never the code itself).
pub(super) async fn admin_login_code(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Json(r): Json<LoginCodeRequest>,
) -> Response {
    require_admin!(state, headers, client);
    let Some(web) = state.web() else {
        return error(StatusCode::NOT_FOUND, "the web views are not enabled");
    };
    let subject = match (r.user, r.patient, r.relative) {
        (Some(u), None, None) => match UserId::new(u) {
            Ok(u) => crate::web::Subject::Staff(u),
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad user id"),
        },
        (None, Some(p), relative) => match (PatientId::new(p), relative) {
            (Ok(p), None) => crate::web::Subject::Person(p),
            (Ok(patient), Some(relative)) => crate::web::Subject::Relative {
                patient,
                relative: relative.trim().to_owned(),
            },
            (Err(_), _) => return error(StatusCode::BAD_REQUEST, "bad patient id"),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either user or patient (with relative)",
            );
        }
    };
    match crate::web::known(state.inner.directory.as_ref(), &subject) {
        Ok(true) => {}
        Ok(false) if matches!(subject, crate::web::Subject::Relative { .. }) => {
            return error(
                StatusCode::FORBIDDEN,
                "the person has not authorised this relative",
            );
        }
        Ok(false) => return error(StatusCode::NOT_FOUND, "no such user or patient"),
        Err(e) => return internal(e),
    }
    let now = web.clock.now_ms();
    match service(&state).login_code(ADMIN_ACTOR, now_ms(), &web.sessions, &subject, now) {
        Ok(issued) => Json(json!({
            "code": issued.code,
            "expires_ms": issued.expires_ms,
            "sign_in": "/app/login",
        }))
        .into_response(),
        Err(e) => refused(e),
    }
}
