//! Sign-in and sign-out. [`SignIn`] is the one seam through which a proof of identity becomes a
//! [`Subject`]: a one-time code from `nara-server admin login-code` today ([`OneTimeCode`]);
//! SITHS (staff) or BankID (citizens) can take its place without touching the pages.
//!
//! Failed attempts are limited per client address by the same limiter as sync and admin logins
//! (a run of failures audited once, then 429), successful ones start a session that is audited
//! (`sign-in`), and signing out ends it on the server (`sign-out`). The sign-in form itself
//! carries a token that must match a cookie (so no other site can sign someone in).

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{
    Chrome, Ctx, LangQuery, Page, SESSION_COOKIE, SessionError, SqliteSessions, Subject, context,
    cookie, csrf_ok, html,
};
use crate::app::AppState;
use crate::app::admin::{Client, client_ip};
use crate::app::logins;
use crate::audit::{AuditAction, AuditEntry};

/// The cookie that carries the sign-in form's token (before there is a session).
const FORM_COOKIE: &str = "nara_signin";

/// Turns a proof of identity into whom it proves, once. Implementations decide what a proof
/// is (a one-time code, a signed assertion); they never decide what the subject may see.
pub trait SignIn: Send + Sync {
    /// `Ok(None)`: the proof is not valid (unknown, used, expired).
    fn verify(&self, proof: &str, now_ms: i64) -> Result<Option<Subject>, SessionError>;
}

/// One-time codes issued by `nara-server admin login-code` or the admin API.
#[derive(Debug, Clone)]
pub struct OneTimeCode(pub Arc<SqliteSessions>);

impl SignIn for OneTimeCode {
    fn verify(&self, proof: &str, now_ms: i64) -> Result<Option<Subject>, SessionError> {
        self.0.redeem_code(proof, now_ms)
    }
}

#[derive(Template)]
#[template(path = "web/signin.html")]
struct SignInPage {
    c: Chrome,
    form_token: String,
    error: Option<&'static str>,
}

fn random_token() -> String {
    let mut buf = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut buf);
    hex::encode(buf)
}

fn form_page(ctx: &Ctx, status: StatusCode, error: Option<&'static str>) -> Response {
    let token = random_token();
    let page = SignInPage {
        c: ctx.chrome(ctx.t().sign_in, None),
        form_token: token.clone(),
        error,
    };
    let mut r = html(Some(ctx), page.render());
    *r.status_mut() = status;
    let value = format!("{FORM_COOKIE}={token}; Path=/app; HttpOnly; Secure; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /app/login`.
pub(super) async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    match context(&state, &headers, &q) {
        Ok(ctx) if ctx.session.is_some() => Redirect::to("/app/").into_response(),
        Ok(ctx) => form_page(&ctx, StatusCode::OK, None),
        Err(p) => p.respond(None),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    code: String,
    form_token: String,
}

/// `POST /app/login`.
pub(super) async fn submit(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<SignInForm>,
) -> Response {
    let ctx = match context(&state, &headers, &q) {
        Ok(c) => c,
        Err(p) => return p.respond(None),
    };
    let Some(web) = state.web() else {
        return Page::NotFound.respond(Some(&ctx));
    };
    let addr = client_ip(client);
    if !logins::allowed(&web.failures, addr) {
        return form_page(&ctx, StatusCode::TOO_MANY_REQUESTS, Some(ctx.t().too_many));
    }
    let expected = cookie(&headers, FORM_COOKIE).unwrap_or_default();
    if expected.is_empty() || expected != f.form_token || f.code.len() > 64 {
        return form_page(&ctx, StatusCode::FORBIDDEN, Some(ctx.t().bad_form));
    }
    let subject = match web.sign_in.verify(&f.code, ctx.now_ms) {
        Ok(Some(s)) => s,
        Ok(None) => {
            logins::failed(&state, &web.failures, addr);
            return form_page(&ctx, StatusCode::UNAUTHORIZED, Some(ctx.t().bad_code));
        }
        Err(e) => return Page::Internal(e.to_string()).respond(Some(&ctx)),
    };
    let (token, session) = match web.sessions.create(&subject, ctx.now_ms) {
        Ok(s) => s,
        Err(e) => return Page::Internal(e.to_string()).respond(Some(&ctx)),
    };
    let mut entry = AuditEntry::new(ctx.now_ms, subject.actor(), AuditAction::SignIn).detail(
        format!("web session {} began (one-time code)", session.label),
    );
    if let Some(p) = subject.patient() {
        entry = entry.patient(p);
    }
    if state.audit_entry(entry).is_err() {
        // A session that is not in the log is not given out.
        let _ = web.sessions.revoke(&token, ctx.now_ms);
        return Page::Internal("sign-in could not be audited".into()).respond(Some(&ctx));
    }
    let mut r = Redirect::to("/app/").into_response();
    let value = format!(
        "{SESSION_COOKIE}={token}; Path=/app; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        super::sessions::SESSION_TTL_MS / 1000
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

/// `POST /app/logout`: ends the session on the server and clears the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let ctx = match context(&state, &headers, &q) {
        Ok(c) => c,
        Err(p) => return p.respond(None),
    };
    let Some((token, session)) = &ctx.session else {
        return Redirect::to("/app/login").into_response();
    };
    if !csrf_ok(&ctx, &f.csrf) {
        return Page::BadForm.respond(Some(&ctx));
    }
    let Some(web) = state.web() else {
        return Page::NotFound.respond(Some(&ctx));
    };
    if let Err(e) = web.sessions.revoke(token, ctx.now_ms) {
        return Page::Internal(e.to_string()).respond(Some(&ctx));
    }
    let mut entry = AuditEntry::new(ctx.now_ms, session.subject.actor(), AuditAction::SignOut)
        .detail(format!("web session {} signed out", session.label));
    if let Some(p) = session.subject.patient() {
        entry = entry.patient(p);
    }
    let _ = state.audit_entry(entry);
    let mut r = Redirect::to("/app/login").into_response();
    let value =
        format!("{SESSION_COOKIE}=; Path=/app; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
