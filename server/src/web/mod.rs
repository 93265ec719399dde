//! The web views under `/app/`, served by `nara-server` on its TLS listener: server-rendered
//! pages (askama templates in `server/templates/web/`, one layout), no JavaScript.
//!
//! - [`sessions`]: sign-in codes and browser sessions (`DATA/web.db`);
//! - [`signin`]: the [`SignIn`] seam (a one-time code today; SITHS or BankID later), the sign-in
//!   and sign-out routes;
//! - [`dashboard`]: the coordinator's dashboard (operational data only, never clinical);
//! - [`person`]: the person's own view and "what matters to me";
//! - [`relatives`]: the person's consent that a relative may read their view;
//! - [`queue`]: the nurse's queue (open flags, conflicts and delegations ending within 30 days
//!   of the nurse's people), and [`queue_forms`], its acknowledgements and resolutions;
//! - [`device`]: the web devices browser changes are written as, a member of staff's
//!   (`web-<user>`) and a person's own (`web-<patient>`), and their signing keys (kept in the
//!   directory, registered where a phone's is looked up);
//! - [`i18n`]: the pages' words, Swedish first, English available; [`words`], the sentences
//!   that take values (flags, dates and times in Swedish local time, staff, tasks);
//! - [`clock`]: the clock the pages read (a test can set it).
//!
//! The pages hold no rules of their own: who may see what is decided from the directory's roles
//! and assignments (the same as sync), assignments and enrollment codes go through the same
//! audited functions as the admin API, and every page that shows a person's record is a read in
//! the audit log before it is answered.

mod clock;
mod dashboard;
mod device;
mod i18n;
mod person;
mod queue;
mod queue_forms;
mod relatives;
pub mod sessions;
mod signin;
mod words;

use std::sync::{Arc, Mutex};

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sync_core::Role;

pub use clock::Clock;
pub use i18n::{Lang, Texts};
pub use sessions::{Session, SessionError, SqliteSessions, Subject};
pub use signin::{OneTimeCode, SignIn};
pub use words::swedish_offset_minutes;

use crate::app::AppState;
use crate::app::logins::LoginFailures;
use crate::directory::User;

/// The cookie that holds the session token.
pub const SESSION_COOKIE: &str = "nara_session";
/// The cookie that keeps the chosen language.
pub const LANG_COOKIE: &str = "nara_lang";

/// What the web views need beside the application's state.
pub struct Web {
    pub sessions: Arc<SqliteSessions>,
    pub sign_in: Arc<dyn SignIn>,
    pub clock: Clock,
    /// Failed sign-ins per client address (the same limiter as the sync and admin logins).
    pub(crate) failures: Mutex<LoginFailures>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").finish_non_exhaustive()
    }
}

impl Web {
    /// The web views with one-time codes from `sessions` as their sign-in.
    pub fn new(sessions: Arc<SqliteSessions>, clock: Clock) -> Self {
        Self {
            sign_in: Arc::new(OneTimeCode(sessions.clone())),
            sessions,
            clock,
            failures: Mutex::new(LoginFailures::new("web sign-ins with no valid code")),
        }
    }
}

/// The routes under `/app/` (empty if the state has no web views).
pub fn router(state: AppState) -> Router {
    if state.web().is_none() {
        return Router::new();
    }
    Router::new()
        .route("/app", get(|| async { Redirect::to("/app/") }))
        .route("/app/", get(home))
        .route("/app/static/style.css", get(style))
        .route("/app/login", get(signin::form).post(signin::submit))
        .route("/app/logout", post(signin::logout))
        .route("/app/coordinator", get(dashboard::page))
        .route("/app/coordinator/assignments", post(dashboard::assignment))
        .route("/app/coordinator/enrollments", post(dashboard::enrollment))
        .route("/app/coordinator/audit", post(dashboard::verify))
        .route("/app/nurse", get(queue::page))
        .route("/app/nurse/flags", post(queue_forms::acknowledge))
        .route("/app/nurse/conflicts", post(queue_forms::resolve))
        .route("/app/person/{patient}", get(person::page))
        .route("/app/person/{patient}/what-matters", post(person::add))
        .route("/app/person/{patient}/relatives", post(relatives::grant))
        .route(
            "/app/person/{patient}/relatives/withdraw",
            post(relatives::withdraw),
        )
        .with_state(state)
}

/// `?lang=` on any page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LangQuery {
    lang: Option<String>,
}

/// Who asks, in which language.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub lang: Lang,
    /// The language was chosen on this request: keep it in a cookie.
    chose_lang: bool,
    /// The session token and its session, if signed in.
    pub session: Option<(String, Session)>,
    pub now_ms: i64,
}

impl Ctx {
    pub fn t(&self) -> &'static Texts {
        self.lang.texts()
    }

    /// The layout's part of a page.
    pub fn chrome(&self, title: &str, who: Option<String>) -> Chrome {
        Chrome {
            t: self.t(),
            title: title.to_owned(),
            csrf: self.session.as_ref().map(|(_, s)| s.csrf.clone()),
            who,
        }
    }
}

/// Reads a cookie from the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn context(state: &AppState, headers: &HeaderMap, q: &LangQuery) -> Result<Ctx, Page> {
    let web = state.web().ok_or(Page::NotFound)?;
    let now_ms = web.clock.now_ms();
    let chosen = q.lang.as_deref().and_then(Lang::parse);
    let lang = chosen
        .or_else(|| cookie(headers, LANG_COOKIE).and_then(Lang::parse))
        .unwrap_or(Lang::Sv);
    let session = match cookie(headers, SESSION_COOKIE) {
        Some(token) => web
            .sessions
            .session(token, now_ms)
            .map_err(|e| Page::Internal(e.to_string()))?
            .map(|s| (token.to_owned(), s)),
        None => None,
    };
    Ok(Ctx {
        lang,
        chose_lang: chosen.is_some(),
        session,
        now_ms,
    })
}

/// The signed-in viewer, as the directory knows them.
#[derive(Debug, Clone)]
pub(crate) enum Viewer {
    Staff(User),
    Person(sync_core::PatientId, String),
    /// A relative with the person's live consent: (the person, their name, the relative).
    Relative(sync_core::PatientId, String, String),
}

/// The viewer of a signed-in request; a session of someone the directory no longer knows is
/// refused.
pub(crate) fn viewer(state: &AppState, ctx: &Ctx) -> Result<Viewer, Page> {
    let Some((_, session)) = &ctx.session else {
        return Err(Page::SignIn);
    };
    let dir = state.directory();
    match &session.subject {
        Subject::Staff(user) => match dir.user(user) {
            Ok(Some(u)) => Ok(Viewer::Staff(u)),
            Ok(None) => Err(Page::Forbidden),
            Err(e) => Err(Page::Internal(e.to_string())),
        },
        Subject::Person(p) => match dir.patients() {
            Ok(list) => list
                .into_iter()
                .find(|(id, _)| id == p)
                .map(|(id, name)| Viewer::Person(id, name))
                .ok_or(Page::Forbidden),
            Err(e) => Err(Page::Internal(e.to_string())),
        },
        Subject::Relative { patient, relative } => {
            let internal = |e: crate::directory::DirectoryError| Page::Internal(e.to_string());
            let consent = dir
                .relatives(patient)
                .map_err(internal)?
                .into_iter()
                .any(|c| &c.relative == relative);
            if !consent {
                // Withdrawn (from the page, which ends these sessions too, or otherwise): this
                // session ends here.
                if let (Some(web), Some((token, _))) = (state.web(), &ctx.session) {
                    let _ = web.sessions.revoke(token, ctx.now_ms);
                }
                return Err(Page::Forbidden);
            }
            let name = dir
                .patients()
                .map_err(internal)?
                .into_iter()
                .find(|(id, _)| id == patient)
                .map(|(_, name)| name)
                .ok_or(Page::Forbidden)?;
            Ok(Viewer::Relative(patient.clone(), name, relative.clone()))
        }
    }
}

/// Who reads a person's record on a page: the person, or a relative with their consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reader {
    Person,
    Relative(String),
}

/// What the policy allows on one person's record.
#[derive(Debug, Clone)]
pub(crate) struct RecordAccess {
    pub patient: sync_core::PatientId,
    pub name: String,
    pub reader: Reader,
}

impl RecordAccess {
    /// The actor of the reader's audit records.
    pub fn actor(&self) -> String {
        match &self.reader {
            Reader::Person => format!("person:{}", self.patient),
            Reader::Relative(r) => format!("relative:{}:{r}", self.patient),
        }
    }

    /// Only the person writes in their own plan or gives and withdraws consent.
    pub fn own(self) -> Result<Self, Page> {
        match self.reader {
            Reader::Person => Ok(self),
            Reader::Relative(_) => Err(Page::Forbidden),
        }
    }
}

/// The one policy of the person's pages: who may open the record of patient `id`. The person
/// themselves; a relative only while the person's recorded consent stands (checked in the
/// directory on every request, see [`viewer`]); nobody else (staff read through their own
/// pages, by assignment).
pub(crate) fn record_access(state: &AppState, ctx: &Ctx, id: &str) -> Result<RecordAccess, Page> {
    let (patient, name, reader) = match viewer(state, ctx)? {
        Viewer::Person(p, name) => (p, name, Reader::Person),
        Viewer::Relative(p, name, r) => (p, name, Reader::Relative(r)),
        Viewer::Staff(_) => return Err(Page::Forbidden),
    };
    if patient.as_str() != id {
        return Err(Page::Forbidden);
    }
    Ok(RecordAccess {
        patient,
        name,
        reader,
    })
}

/// Whether the directory knows `subject` (a code is issued only for someone it knows; for a
/// relative: whether the person's consent is recorded and not withdrawn).
pub fn known(
    dir: &dyn crate::directory::Directory,
    subject: &Subject,
) -> Result<bool, crate::directory::DirectoryError> {
    Ok(match subject {
        Subject::Staff(u) => dir.user(u)?.is_some(),
        Subject::Person(p) => dir.patients()?.iter().any(|(id, _)| id == p),
        Subject::Relative { patient, relative } => dir
            .relatives(patient)?
            .iter()
            .any(|c| &c.relative == relative),
    })
}

/// The coordinator's pages are for the administrator role only: operational data, never
/// clinical (the directory's `Admin` role sees no clinical content, and cannot be assigned).
pub(crate) fn coordinator(state: &AppState, ctx: &Ctx) -> Result<User, Page> {
    match viewer(state, ctx)? {
        Viewer::Staff(u) if u.role == Role::Admin => Ok(u),
        _ => Err(Page::Forbidden),
    }
}

/// Checks a form's CSRF token against the session's, in constant time.
pub(crate) fn csrf_ok(ctx: &Ctx, given: &str) -> bool {
    let Some((_, s)) = &ctx.session else {
        return false;
    };
    let (a, b) = (given.as_bytes(), s.csrf.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The layout's part of every page.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    pub t: &'static Texts,
    pub title: String,
    /// The session's CSRF token (the sign-out form), if signed in.
    pub csrf: Option<String>,
    /// Who is signed in, as shown in the header.
    pub who: Option<String>,
}

/// An answer that is not the page asked for.
#[derive(Debug)]
pub(crate) enum Page {
    SignIn,
    Forbidden,
    NotFound,
    BadForm,
    /// Signed in, but there is no page for the role yet (a carer: the phone is theirs).
    NoPages,
    /// The model refused the change a form asked for (it is in the audit log as not done).
    Refused,
    Internal(String),
}

#[derive(Template)]
#[template(path = "web/message.html")]
struct MessagePage {
    c: Chrome,
}

impl Page {
    pub fn respond(self, ctx: Option<&Ctx>) -> Response {
        let lang = ctx.map_or(Lang::Sv, |c| c.lang);
        let t = lang.texts();
        let (status, message) = match self {
            Page::SignIn => return Redirect::to("/app/login").into_response(),
            Page::Forbidden => (StatusCode::FORBIDDEN, t.forbidden),
            Page::NotFound => (StatusCode::NOT_FOUND, t.not_found),
            Page::BadForm => (StatusCode::FORBIDDEN, t.bad_form),
            Page::NoPages => (StatusCode::OK, t.no_pages),
            Page::Refused => (StatusCode::BAD_REQUEST, t.refused_change),
            Page::Internal(e) => {
                tracing::error!(error = %e, "web page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, t.internal)
            }
        };
        let c = match ctx {
            Some(ctx) => ctx.chrome(message, None),
            None => Chrome {
                t,
                title: message.to_owned(),
                csrf: None,
                who: None,
            },
        };
        let mut r = html(ctx, MessagePage { c }.render());
        *r.status_mut() = status;
        r
    }
}

/// A rendered page with the headers every page carries (no caching, a strict content policy),
/// and the language cookie when the language was chosen on this request.
pub(crate) fn html(ctx: Option<&Ctx>, body: Result<String, askama::Error>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(v) = ctx.and_then(lang_cookie) {
        h.append(header::SET_COOKIE, v);
    }
    r
}

/// The cookie that keeps the language, when it was chosen on this request.
fn lang_cookie(ctx: &Ctx) -> Option<HeaderValue> {
    ctx.chose_lang.then_some(())?;
    HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={}; Path=/app; Max-Age=31536000; Secure; SameSite=Strict",
        ctx.lang.code()
    ))
    .ok()
}

/// Runs a page's handler: its context, then its body; any [`Page`] becomes its answer.
pub(crate) fn respond(
    state: &AppState,
    headers: &HeaderMap,
    q: &LangQuery,
    body: impl FnOnce(&Ctx) -> Result<Response, Page>,
) -> Response {
    let ctx = match context(state, headers, q) {
        Ok(c) => c,
        Err(p) => return p.respond(None),
    };
    match body(&ctx) {
        Ok(r) => r,
        Err(p) => p.respond(Some(&ctx)),
    }
}

/// `/app/`: the signed-in viewer's own start page.
async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let to = match viewer(&state, ctx)? {
            Viewer::Staff(u) if u.role == Role::Admin => "/app/coordinator".to_owned(),
            Viewer::Staff(u) if u.role == Role::Nurse => "/app/nurse".to_owned(),
            Viewer::Staff(_) => return Ok(Page::NoPages.respond(Some(ctx))),
            Viewer::Person(p, _) | Viewer::Relative(p, _, _) => format!("/app/person/{p}"),
        };
        let mut r = Redirect::to(&to).into_response();
        // Keep the language chosen on the way in.
        if let Some(v) = lang_cookie(ctx) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        Ok(r)
    })
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../templates/web/style.css"),
    )
        .into_response()
}
