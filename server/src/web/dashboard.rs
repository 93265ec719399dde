//! The coordinator's dashboard: devices by team with their last sync coloured by freshness,
//! what waits for them, refusals, clock skew, lease, revocation and copies; enrollment codes;
//! who is assigned to whom (changed here, audited); the audit chain. Operational data only:
//! nothing here reads a document. Open to the administrator role alone.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sync_core::{DeviceId, PatientId, Role, UserId};

use super::{Chrome, Ctx, LangQuery, Page, Texts, coordinator, csrf_ok, html, respond};
use crate::admin_cli::{format_ms, pending_in};
use crate::app::AppState;
use crate::app::admin::{issue_enrollment, set_assignment};
use crate::audit::{AuditAction, AuditEntry, VerifyReport};
use crate::directory::User;

/// A device that synced within this long is in sync.
pub const IN_SYNC_MS: i64 = 2 * 60 * 60 * 1000;
/// A device silent for longer than this is offline (between the two: stale).
pub const OFFLINE_MS: i64 = 24 * 60 * 60 * 1000;
/// The device runtime's offline lease unless set otherwise (`nara_client`'s default): what
/// the dashboard shows as when a phone stops showing records without a sync.
pub const DEFAULT_LEASE_MS: i64 = 72 * 60 * 60 * 1000;
/// Audit records read for the refusal counts and the trouble list.
const TROUBLE_READ: usize = 2_000;
/// Trouble records listed.
const TROUBLE_SHOWN: usize = 20;
/// Unused enrollment codes listed.
const OPEN_CODES_SHOWN: usize = 50;

/// How recently a device synced, by the dashboard's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    InSync,
    Stale,
    Offline,
    Never,
}

impl Freshness {
    pub fn of(last_seen_ms: Option<i64>, now_ms: i64) -> Self {
        match last_seen_ms {
            None => Freshness::Never,
            Some(t) if now_ms.saturating_sub(t) <= IN_SYNC_MS => Freshness::InSync,
            Some(t) if now_ms.saturating_sub(t) <= OFFLINE_MS => Freshness::Stale,
            Some(_) => Freshness::Offline,
        }
    }

    /// The CSS class (the colour); the label says the same in words.
    pub fn class(self) -> &'static str {
        match self {
            Freshness::InSync => "fresh",
            Freshness::Stale => "stale",
            Freshness::Offline | Freshness::Never => "offline",
        }
    }

    pub fn label(self, t: &Texts) -> &'static str {
        match self {
            Freshness::InSync => t.in_sync,
            Freshness::Stale => t.stale,
            Freshness::Offline => t.offline,
            Freshness::Never => t.never,
        }
    }
}

struct DeviceRow {
    id: String,
    user: String,
    last_sync: String,
    class: &'static str,
    state: &'static str,
    waiting: String,
    /// Changes waiting on the phone for upload, as it last reported them (and when).
    to_upload: String,
    refused: u64,
    skew: String,
    lease_ends: String,
    copied: bool,
}

struct Team {
    name: String,
    devices: Vec<DeviceRow>,
}

struct AssignmentRow {
    user: String,
    user_name: String,
    patient: String,
    patient_name: String,
}

struct OpenCode {
    user: String,
    issued: String,
    expires: String,
}

struct TroubleRow {
    when: String,
    device: String,
    what: String,
}

#[derive(Template)]
#[template(path = "web/dashboard.html")]
struct DashboardPage {
    c: Chrome,
    teams: Vec<Team>,
    staff: Vec<User>,
    patients: Vec<(PatientId, String)>,
    assignments: Vec<AssignmentRow>,
    trouble: Vec<TroubleRow>,
    open_codes: Vec<OpenCode>,
    audit_records: u64,
    /// A code just issued: (user, code).
    code: Option<(String, String)>,
    report: Option<VerifyReport>,
    csrf: String,
}

/// What a form on the dashboard just did, shown once.
#[derive(Default)]
struct Outcome {
    code: Option<(String, String)>,
    report: Option<VerifyReport>,
}

fn render(state: &AppState, ctx: &Ctx, me: &User, outcome: Outcome) -> Result<Response, Page> {
    let t = ctx.t();
    let internal = |e: &dyn std::fmt::Display| Page::Internal(e.to_string());
    let dir = state.directory();
    let devices = dir.devices().map_err(|e| internal(&e))?;
    let users: BTreeMap<UserId, User> = dir
        .users()
        .map_err(|e| internal(&e))?
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    let patients = dir.patients().map_err(|e| internal(&e))?;
    let assigned = dir.assignments().map_err(|e| internal(&e))?;
    let orgs: BTreeMap<String, String> =
        dir.orgs().map_err(|e| internal(&e))?.into_iter().collect();
    // By the clock enrollment codes are issued and redeemed by (the server's), not the pages'.
    let open_codes = dir
        .open_enrollments(crate::app::now_ms(), OPEN_CODES_SHOWN)
        .map_err(|e| internal(&e))?;
    // Recorded before it is shown, as the admin API's device list is.
    state
        .audit_entry(
            AuditEntry::new(ctx.now_ms, me.id.as_str(), AuditAction::Read)
                .detail(format!("web dashboard ({} devices)", devices.len())),
        )
        .map_err(|e| internal(&e))?;
    let pending = state
        .with_repo(|repo| pending_in(repo.store(), &assigned, &devices))
        .map_err(|e| internal(&e))?;
    let reported = state.directory().waiting().map_err(|e| internal(&e))?;
    let trouble = state
        .audit_log()
        .latest(
            &[
                AuditAction::Refuse,
                AuditAction::ClockSkew,
                AuditAction::Disconnect,
            ],
            TROUBLE_READ,
        )
        .map_err(|e| internal(&e))?;
    let mut refused: BTreeMap<DeviceId, u64> = BTreeMap::new();
    let mut skew: BTreeMap<DeviceId, String> = BTreeMap::new();
    for r in &trouble {
        let Some(d) = &r.entry.device else { continue };
        match r.entry.action {
            AuditAction::Refuse => *refused.entry(d.clone()).or_default() += 1,
            AuditAction::ClockSkew => {
                // Newest first: the first seen is the latest.
                skew.entry(d.clone())
                    .or_insert_with(|| r.entry.detail.clone());
            }
            _ => {}
        }
    }
    let mut teams: BTreeMap<String, Vec<DeviceRow>> = BTreeMap::new();
    for d in &devices {
        let user = users.get(&d.user);
        let team = user.map_or_else(
            || "-".to_owned(),
            |u| {
                orgs.get(&u.org)
                    .map_or_else(|| u.org.clone(), |name| format!("{name} ({})", u.org))
            },
        );
        let fresh = Freshness::of(d.last_seen_ms, ctx.now_ms);
        teams.entry(team).or_default().push(DeviceRow {
            id: d.id.to_string(),
            user: user.map_or_else(|| d.user.to_string(), |u| format!("{} ({})", u.name, u.id)),
            last_sync: d.last_seen_ms.map_or_else(|| t.never.to_owned(), format_ms),
            class: if d.revoked { "revoked" } else { fresh.class() },
            state: if d.revoked { t.revoked } else { fresh.label(t) },
            waiting: pending
                .get(&d.id)
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            to_upload: reported.get(&d.id).map_or_else(
                || t.not_reported.to_owned(),
                |w| format!("{} ({})", w.changes, format_ms(w.at_ms)),
            ),
            refused: refused.get(&d.id).copied().unwrap_or(0),
            skew: skew.get(&d.id).cloned().unwrap_or_default(),
            lease_ends: d.last_seen_ms.map_or_else(
                || "-".to_owned(),
                |t| format_ms(t.saturating_add(DEFAULT_LEASE_MS)),
            ),
            copied: d.copy_detected_ms.is_some(),
        });
    }
    let names: BTreeMap<&PatientId, &String> = patients.iter().map(|(p, n)| (p, n)).collect();
    let assignments = assigned
        .iter()
        .flat_map(|(u, ps)| ps.iter().map(move |p| (u, p)))
        .map(|(u, p)| AssignmentRow {
            user: u.to_string(),
            user_name: users.get(u).map_or_else(String::new, |x| x.name.clone()),
            patient: p.to_string(),
            patient_name: names.get(p).map_or_else(String::new, |n| (*n).clone()),
        })
        .collect();
    let open_codes = open_codes
        .into_iter()
        .map(|o| OpenCode {
            user: users
                .get(&o.user)
                .map_or_else(|| o.user.to_string(), |u| format!("{} ({})", u.name, u.id)),
            issued: format_ms(o.created_ms),
            expires: format_ms(o.expires_ms),
        })
        .collect();
    let page = DashboardPage {
        c: ctx.chrome(t.dashboard, Some(format!("{} ({})", me.name, me.id))),
        teams: teams
            .into_iter()
            .map(|(name, devices)| Team { name, devices })
            .collect(),
        staff: users
            .into_values()
            .filter(|u| u.role != Role::Admin)
            .collect(),
        patients,
        assignments,
        trouble: trouble
            .iter()
            .take(TROUBLE_SHOWN)
            .map(|r| TroubleRow {
                when: format_ms(r.entry.at_ms),
                device: r
                    .entry
                    .device
                    .as_ref()
                    .map_or_else(String::new, |d| d.to_string()),
                what: format!("{}: {}", r.entry.action.as_str(), r.entry.detail),
            })
            .collect(),
        open_codes,
        audit_records: state.audit_log().len().map_err(|e| internal(&e))?,
        code: outcome.code,
        report: outcome.report,
        csrf: ctx
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default(),
    };
    Ok(html(Some(ctx), page.render()))
}

/// `GET /app/coordinator`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let me = coordinator(&state, ctx)?;
        render(&state, ctx, &me, Outcome::default())
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct AssignmentForm {
    csrf: String,
    user: String,
    patient: String,
    /// "assign" or "unassign".
    op: String,
}

/// `POST /app/coordinator/assignments`: through the admin API's own audited function.
pub(super) async fn assignment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<AssignmentForm>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let me = coordinator(&state, ctx)?;
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        let (Ok(user), Ok(patient)) = (UserId::new(f.user), PatientId::new(f.patient)) else {
            return Err(Page::BadForm);
        };
        let assign = match f.op.as_str() {
            "assign" => true,
            "unassign" => false,
            _ => return Err(Page::BadForm),
        };
        match set_assignment(&state, me.id.as_str(), &user, &patient, assign) {
            Ok(()) => Ok(Redirect::to("/app/coordinator").into_response()),
            Err(refused) => Ok(*refused),
        }
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct EnrollmentForm {
    csrf: String,
    user: String,
}

/// `POST /app/coordinator/enrollments`: a code for a new phone, shown once.
pub(super) async fn enrollment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<EnrollmentForm>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let me = coordinator(&state, ctx)?;
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        let Ok(user) = UserId::new(f.user) else {
            return Err(Page::BadForm);
        };
        match issue_enrollment(&state, me.id.as_str(), &user) {
            Ok(code) => render(
                &state,
                ctx,
                &me,
                Outcome {
                    code: Some((user.to_string(), code)),
                    report: None,
                },
            ),
            Err(refused) => Ok(*refused),
        }
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfOnly {
    csrf: String,
}

/// `POST /app/coordinator/audit`: recomputes the audit chain (recorded first, as the admin
/// API's verify is).
pub(super) async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let me = coordinator(&state, ctx)?;
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        state
            .audit_entry(
                AuditEntry::new(ctx.now_ms, me.id.as_str(), AuditAction::Read)
                    .detail("audit log verified (web)"),
            )
            .map_err(|e| Page::Internal(e.to_string()))?;
        // Against this node's signed heads too, as `nara-server admin audit verify` does.
        let heads = state
            .signed_heads()
            .map_err(|e| Page::Internal(e.to_string()))?;
        let report = state
            .audit_log()
            .verify_against(&heads)
            .map_err(|e| Page::Internal(e.to_string()))?;
        render(
            &state,
            ctx,
            &me,
            Outcome {
                code: None,
                report: Some(report),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_the_last_sync() {
        let now = 100 * OFFLINE_MS;
        assert_eq!(Freshness::of(None, now), Freshness::Never);
        assert_eq!(Freshness::of(Some(now), now), Freshness::InSync);
        assert_eq!(
            Freshness::of(Some(now - IN_SYNC_MS), now),
            Freshness::InSync
        );
        assert_eq!(
            Freshness::of(Some(now - IN_SYNC_MS - 1), now),
            Freshness::Stale
        );
        assert_eq!(Freshness::of(Some(now - OFFLINE_MS), now), Freshness::Stale);
        assert_eq!(
            Freshness::of(Some(now - OFFLINE_MS - 1), now),
            Freshness::Offline
        );
    }
}
