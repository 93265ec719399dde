//! The person's own view (S15): their plan, current medication, visits and notes of the last
//! 30 days, who has read or changed their record (Patientdatalagen 8 kap. 5 §), and "what
//! matters to me", which they add here as themselves.
//!
//! Open to the person (a session from `login-code --patient P` for P's page) and, read only,
//! to a relative while the person's recorded consent stands (`login-code --relative NAME
//! --patient P`; the policy is [`super::record_access`]). What is shown comes from `sync_core::model::person::PersonView`; a wish is written through the
//! model's own rules (`Role::Person`, their own plan only) as a change of the person's web
//! device, signed with that device's key (`device::person_key`) as a phone signs an upload,
//! stored in the feed and sent to every phone of the care team like an upload. The
//! page is a read in the audit log before it is answered, and a wish is audited before it is
//! stored.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use serde::Deserialize;
use sync_core::model::person::{PersonView, RecentKind, Shown};
use sync_core::model::{EventBody, GoalStatus, InterventionStatus};
use sync_core::{
    Author, DeviceId, DocKind, DocumentId, PatientId, RecordId, Role, Timestamp, UserId,
};

use super::i18n::Lang;
use super::{
    Chrome, Ctx, LangQuery, Page, Reader, RecordAccess, Texts, csrf_ok, html, record_access,
    respond, words,
};
use crate::app::AppState;
use crate::audit::{AuditAction, AuditEntry, AuditRecord};
use crate::directory::User;

/// "Recent" visits and notes: the last 30 days.
pub const RECENT_DAYS: i64 = 30;
/// Access-log records shown at most (newest first).
pub const ACCESS_LOG_SHOWN: usize = 200;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

struct Row {
    cells: Vec<String>,
    under_review: bool,
}

struct Entry {
    when: String,
    who: String,
    text: String,
    note: Option<&'static str>,
}

struct LogRow {
    when: String,
    who: String,
    role: String,
    org: String,
    what: String,
}

#[derive(Template)]
#[template(path = "web/person.html")]
struct PersonPage {
    c: Chrome,
    patient: String,
    goals: Vec<Row>,
    interventions: Vec<Row>,
    responsibility: Vec<Row>,
    follow_up: Vec<Row>,
    medication: Vec<Row>,
    recent: Vec<Entry>,
    wishes: Vec<Entry>,
    log: Vec<LogRow>,
    csrf: String,
    error: Option<&'static str>,
    /// A relative reads: no forms, a note saying so.
    read_only: bool,
    /// The relatives the person has authorised: (name, since).
    relatives: Vec<(String, String)>,
}

/// The person's web device: the device their browser sessions write as.
pub(crate) fn person_author(patient: &PatientId) -> Result<Author, Page> {
    let bad = |e: sync_core::IdError| Page::Internal(e.to_string());
    Ok(Author::new(
        UserId::new(patient.as_str()).map_err(bad)?,
        Role::Person,
        DeviceId::new(format!("web-{patient}")).map_err(bad)?,
    ))
}

/// The UTC date and time of `ms`, `YYYY-MM-DD HH:MM` (for the record's months and days).
fn utc(ms: i64) -> String {
    let s = crate::admin_cli::format_ms(ms);
    format!("{} {}", &s[..10], &s[11..16])
}

fn goal_status(t: &Texts, s: GoalStatus) -> &'static str {
    let sv = t.lang == "sv";
    match s {
        GoalStatus::Proposed => {
            if sv {
                "föreslaget"
            } else {
                "proposed"
            }
        }
        GoalStatus::Active => {
            if sv {
                "pågår"
            } else {
                "active"
            }
        }
        GoalStatus::Achieved => {
            if sv {
                "uppnått"
            } else {
                "achieved"
            }
        }
        GoalStatus::Cancelled => {
            if sv {
                "avbrutet"
            } else {
                "cancelled"
            }
        }
    }
}

fn intervention_status(t: &Texts, s: InterventionStatus) -> &'static str {
    let sv = t.lang == "sv";
    match s {
        InterventionStatus::NotStarted => {
            if sv {
                "inte påbörjad"
            } else {
                "not started"
            }
        }
        InterventionStatus::InProgress => {
            if sv {
                "pågår"
            } else {
                "in progress"
            }
        }
        InterventionStatus::OnHold => {
            if sv {
                "pausad"
            } else {
                "on hold"
            }
        }
        InterventionStatus::Completed => {
            if sv {
                "klar"
            } else {
                "completed"
            }
        }
        InterventionStatus::Cancelled => {
            if sv {
                "avbruten"
            } else {
                "cancelled"
            }
        }
    }
}

fn rows<T>(items: &[Shown<T>], cells: impl Fn(&T) -> Vec<String>) -> Vec<Row> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Shown::Value(v) => out.push(Row {
                cells: cells(v),
                under_review: false,
            }),
            Shown::UnderReview(vs) => out.extend(vs.iter().map(|v| Row {
                cells: cells(v),
                under_review: true,
            })),
        }
    }
    out
}

/// Who wrote or did something, as the person reads it: (name, role, organisation), the role
/// in the reader's language and the organisation by its name (`words`, as the nurse's queue).
fn who(staff: &Staff<'_>, patient: &PatientId, name: &str, t: &Texts, actor: &str) -> [String; 3] {
    if actor == format!("person:{patient}") || actor == patient.as_str() {
        return [format!("{name} ({})", t.you), String::new(), String::new()];
    }
    if let Some(relative) = actor.strip_prefix(&format!("relative:{patient}:")) {
        return [
            relative.to_owned(),
            t.relative_role.to_owned(),
            String::new(),
        ];
    }
    match staff.users.iter().find(|u| u.id.as_str() == actor) {
        Some(u) => [
            u.name.clone(),
            words::role(staff.lang, u.role).to_owned(),
            words::org_name(&u.org, staff.orgs).to_owned(),
        ],
        None => [actor.to_owned(), String::new(), String::new()],
    }
}

/// The staff a page names, and the words to name them in.
struct Staff<'a> {
    lang: Lang,
    users: &'a [User],
    orgs: &'a [(String, String)],
}

fn what(t: &Texts, r: &AuditRecord) -> String {
    let verb = match r.entry.action {
        AuditAction::Read => t.log_read,
        AuditAction::Disclose => t.log_sent,
        AuditAction::Accept => t.log_changed,
        AuditAction::Refuse => t.log_refused,
        AuditAction::SignIn => t.log_signed_in,
        AuditAction::Consent => t.log_consent,
        AuditAction::ConsentWithdrawn => t.log_consent_withdrawn,
        _ => r.entry.action.as_str(),
    };
    match &r.entry.document {
        Some(d) => format!("{verb}: {d}"),
        None => format!("{verb}: {}", r.entry.detail),
    }
}

pub(super) fn render(
    state: &AppState,
    ctx: &Ctx,
    access: &RecordAccess,
    error: Option<&'static str>,
) -> Result<Response, Page> {
    let t = ctx.t();
    let (patient, name) = (&access.patient, access.name.as_str());
    let internal = |e: &dyn std::fmt::Display| Page::Internal(e.to_string());
    // Recorded before anything of the record is read out, as a phone's read is.
    let detail = match &access.reader {
        Reader::Person => "web: own record (plan, medication, visits and notes, access log)",
        Reader::Relative(_) => {
            "web: a relative's read with the person's consent (plan, medication, visits and \
             notes, access log)"
        }
    };
    state
        .audit_entry(
            AuditEntry::new(ctx.now_ms, access.actor(), AuditAction::Read)
                .patient(patient)
                .detail(detail),
        )
        .map_err(|e| internal(&e))?;
    let read_only = access.reader != Reader::Person;
    let relatives = if read_only {
        Vec::new()
    } else {
        state
            .directory()
            .relatives(patient)
            .map_err(|e| internal(&e))?
            .into_iter()
            .map(|c| (c.relative, words::when(ctx.lang, Timestamp(c.granted_ms))))
            .collect()
    };
    let since = Timestamp(ctx.now_ms.saturating_sub(RECENT_DAYS * DAY_MS));
    let today = utc(ctx.now_ms)[..10].to_owned();
    let first_month = utc(since.0)[..7].to_owned();
    let view = state
        .with_repo(|repo| -> Result<PersonView, sync_core::RepoError> {
            let ids: Vec<DocumentId> = repo
                .document_ids()?
                .into_iter()
                .filter(|d| d.patient() == patient)
                .filter(|d| {
                    d.kind() != DocKind::Journal
                        || d.month().is_some_and(|m| m.to_string() >= first_month)
                })
                .collect();
            let mut view = PersonView::default();
            for id in ids {
                view.add(repo.get(&id)?, since, &today);
            }
            Ok(view.finish())
        })
        .map_err(|e| internal(&e))?;
    let users = state.directory().users().map_err(|e| internal(&e))?;
    let orgs = state.directory().orgs().map_err(|e| internal(&e))?;
    let staff = Staff {
        lang: ctx.lang,
        users: &users,
        orgs: &orgs,
    };
    let log = state
        .audit_log()
        .latest_for_patient(patient, ACCESS_LOG_SHOWN)
        .map_err(|e| internal(&e))?;
    let author_name = |a: &Author| {
        let [n, role, org] = who(&staff, patient, name, t, a.user.as_str());
        if a.role == Role::Person {
            n
        } else {
            [n, role, org]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let responsibility: Vec<_> = view.responsibility.iter().cloned().collect();
    let follow_up: Vec<_> = view.follow_up.iter().cloned().collect();
    let page = PersonPage {
        c: ctx.chrome(t.my_record, Some(name.to_owned())),
        patient: patient.to_string(),
        goals: rows(&view.goals, |g| {
            vec![
                g.title.clone(),
                g.description.clone().unwrap_or_default(),
                goal_status(t, g.status).to_owned(),
            ]
        }),
        interventions: rows(&view.interventions, |i| {
            vec![
                i.title.clone(),
                i.description.clone().unwrap_or_default(),
                i.responsible_organisation.clone(),
                intervention_status(t, i.status).to_owned(),
            ]
        }),
        responsibility: rows(&responsibility, |r| {
            vec![r.organisation.clone(), r.person.clone().unwrap_or_default()]
        }),
        follow_up: rows(&follow_up, |d| vec![d.clone()]),
        medication: rows(&view.medication, |o| {
            vec![
                format!("{} {}", o.drug, o.strength),
                format!("{} ({})", o.dose, o.route),
                o.times.join(", "),
            ]
        }),
        recent: view
            .recent
            .iter()
            .map(|e| Entry {
                when: words::when(ctx.lang, e.at),
                who: author_name(&e.author),
                text: match &e.kind {
                    RecentKind::Note(body) => body.clone(),
                    RecentKind::VisitStart => t.visit_start.to_owned(),
                    RecentKind::VisitStop => t.visit_stop.to_owned(),
                },
                note: e.entered_in_error.then_some(t.entered_in_error),
            })
            .collect(),
        wishes: view
            .what_matters
            .iter()
            .map(|e| Entry {
                when: words::when(ctx.lang, e.at),
                who: author_name(&e.author),
                text: e.text.clone(),
                note: None,
            })
            .collect(),
        log: log
            .iter()
            .map(|r| {
                let [who, role, org] = who(&staff, patient, name, t, &r.entry.actor);
                LogRow {
                    when: words::when(ctx.lang, Timestamp(r.entry.at_ms)),
                    who,
                    role,
                    org,
                    what: what(t, r),
                }
            })
            .collect(),
        csrf: ctx
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default(),
        error,
        read_only,
        relatives,
    };
    Ok(html(Some(ctx), page.render()))
}

/// `GET /app/person/{patient}`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Path(id): Path<String>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let access = record_access(&state, ctx, &id)?;
        render(&state, ctx, &access, None)
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct WishForm {
    csrf: String,
    text: String,
}

/// `POST /app/person/{patient}/what-matters`: the person's own words, added to their plan.
pub(super) async fn add(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Path(id): Path<String>,
    Form(f): Form<WishForm>,
) -> Response {
    respond(&state, &headers, &q, |ctx| {
        let access = record_access(&state, ctx, &id)?.own()?;
        let patient = access.patient.clone();
        if !csrf_ok(ctx, &f.csrf) {
            return Err(Page::BadForm);
        }
        let author = person_author(&patient)?;
        let key = super::device::person_key(&state, &patient, &author, ctx.now_ms)?;
        let doc = DocumentId::care_plan(&patient);
        let record = RecordId::countdown(Timestamp(ctx.now_ms), rand::rng().random::<u64>());
        let entry = AuditEntry::new(ctx.now_ms, format!("person:{patient}"), AuditAction::Accept)
            .device(&author.device)
            .patient(&patient)
            .document(doc.to_string())
            .detail(format!("web: what matters to me ({record})"));
        state
            .audit_entry(entry.clone())
            .map_err(|e| Page::Internal(e.to_string()))?;
        let body = EventBody::WhatMatters {
            text: f.text.trim().to_owned(),
        };
        match state.write_as(&doc, &author, Some(&key), Timestamp(ctx.now_ms), |e| {
            e.record(record.clone(), body)
        }) {
            Ok(_) => Ok(Redirect::to(&format!("/app/person/{patient}")).into_response()),
            Err(e) => {
                // Refused by the model (empty, too long): said so, and the first record marked.
                let _ = state.audit_entry(AuditEntry {
                    detail: format!("NOT DONE ({e}): {}", entry.detail),
                    ..entry
                });
                let mut r = render(&state, ctx, &access, Some(ctx.t().too_long))?;
                *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
                Ok(r)
            }
        }
    })
}
