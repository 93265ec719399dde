//! `GET /v1/round`: what only the server knows for a device's medication round, for each person
//! its user is assigned to: the phones that could record their doses and when each last synced
//! with the server (the directory's `last_seen`), and the flags the server raises with that
//! knowledge and everyone's synced records: the chart's flags as the server holds the records
//! (a dose without a valid delegation, past a "when needed" limit, ...) and the timed ones
//! (`sync_core::model::round::timed_flags`: slots overdue, "when needed" follow-ups overdue).
//! The answer also names the staff the user works with (the directory's name, role and
//! organisation of everyone assigned to one of the user's people, everyone in the user's own
//! organisation, and the user), so that devices show "Nina Berg" where records carry `nina`.
//! Devices keep the answer and show it offline.
//!
//! Flags raised here are derived, like every flag, and not stored: a nurse acknowledges one
//! with a flag acknowledgement event, which syncs like any record and closes it everywhere.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use sync_core::model::round::{FlagRecord, PhoneSync, timed_flags};

use sync_core::{PatientId, Timestamp, UserId};

use super::*;
use crate::audit::AuditAction;

/// Most people in one answer (a caseload is 30-60).
const MAX_PATIENTS: usize = 500;
/// Most members of staff named in one answer.
const MAX_STAFF: usize = 2000;
/// The widest local offset from UTC, in minutes.
const MAX_OFFSET_MINUTES: i32 = 14 * 60;

#[derive(Debug, Deserialize)]
pub(super) struct RoundQuery {
    /// The device's local offset from UTC in minutes, which its slots' times are in.
    #[serde(default)]
    utc_offset_minutes: i32,
}

pub(super) async fn round_status(
    State(state): State<AppState>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<ClientAddr>>>,
    headers: HeaderMap,
    Query(q): Query<RoundQuery>,
) -> Response {
    let addr = client.map(|axum::Extension(axum::extract::ConnectInfo(ClientAddr(a)))| a.ip());
    if let Some(refused) = logins::refusal(&state.inner.login_failures, addr) {
        return refused;
    }
    let Some(identity) = sync::authenticate(&state, &headers) else {
        logins::failed(&state, &state.inner.login_failures, addr);
        return error(
            StatusCode::UNAUTHORIZED,
            "a valid device credential is required",
        );
    };
    if q.utc_offset_minutes.abs() > MAX_OFFSET_MINUTES {
        return error(StatusCode::BAD_REQUEST, "utc_offset_minutes out of range");
    }
    let directory = &state.inner.directory;
    let (assignments, devices, users, orgs) = match (
        directory.assignments(),
        directory.devices(),
        directory.users(),
        directory.orgs(),
    ) {
        (Ok(a), Ok(d), Ok(u), Ok(o)) => (a, d, u, o),
        (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => return internal(e),
    };
    let patients: Vec<PatientId> = assignments
        .get(&identity.user)
        .map(|p| p.iter().take(MAX_PATIENTS).cloned().collect())
        .unwrap_or_default();
    let staff = staff_named(&identity.user, &patients, &assignments, &users, &orgs);
    let entry = AuditEntry::new(now_ms(), identity.user.to_string(), AuditAction::Disclose)
        .device(&identity.device)
        .detail(format!("round status of {} people", patients.len()));
    if state.audit(entry).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "audit log unavailable");
    }
    let now = Timestamp(now_ms());
    let offset = q.utc_offset_minutes;
    let task_state = state.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut hub = task_state.free_hub();
        let mut out = Vec::new();
        for patient in patients {
            let phones = phones_of(&patient, &devices, &assignments);
            let flags: Vec<FlagRecord> = match hub.repo.chart(&patient, &[]) {
                Ok(chart) => flags(&chart, now, offset, &phones)
                    .iter()
                    .map(FlagRecord::from)
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, %patient, "round flags not computed");
                    Vec::new()
                }
            };
            out.push(json!({ "patient": patient, "phones": phones, "flags": flags }));
        }
        out
    })
    .await;
    match answer {
        Ok(patients) => {
            Json(json!({ "now": now, "patients": patients, "staff": staff })).into_response()
        }
        Err(e) => internal(e),
    }
}

/// The phones that could have recorded a dose for `patient`: every phone (not revoked) of
/// everyone assigned to the person, with when each last synced.
pub(crate) fn phones_of(
    patient: &PatientId,
    devices: &[crate::directory::DeviceInfo],
    assignments: &BTreeMap<UserId, BTreeSet<PatientId>>,
) -> Vec<PhoneSync> {
    devices
        .iter()
        .filter(|d| !d.revoked)
        .filter(|d| {
            assignments
                .get(&d.user)
                .is_some_and(|p| p.contains(patient))
        })
        .map(|d| PhoneSync {
            device: d.id.clone(),
            user: d.user.clone(),
            last_synced: d.last_seen_ms.map(Timestamp),
        })
        .collect()
}

/// Every flag of the chart that the server raises: the chart's own and the timed ones (slots
/// overdue with what `phones` says, follow-ups overdue), at `now` and local offset `offset`.
/// The same for the devices' round (`GET /v1/round`) and the nurse's queue in the browser.
pub(crate) fn flags(
    chart: &sync_core::model::Chart<'_>,
    now: Timestamp,
    offset: i32,
    phones: &[PhoneSync],
) -> Vec<sync_core::model::Flag> {
    let mut all = chart.flags();
    all.extend(timed_flags(chart, now, offset, phones));
    all
}

/// The staff `user` works with, as devices show them: `user` themself, everyone of their
/// organisation, and everyone assigned to one of `patients`; by id, at most [`MAX_STAFF`]; and
/// the directory itself, the author of the names the server writes (`names::registrar`),
/// unless a member of staff has its id.
fn staff_named(
    user: &UserId,
    patients: &[PatientId],
    assignments: &BTreeMap<UserId, BTreeSet<PatientId>>,
    users: &[crate::directory::User],
    orgs: &[(String, String)],
) -> Vec<serde_json::Value> {
    let own_org = users.iter().find(|u| &u.id == user).map(|u| u.org.as_str());
    let registrar = names::registrar()
        .ok()
        .filter(|r| users.iter().all(|u| u.id != r.user))
        .map(|r| {
            json!({
                "user": r.user,
                "name": "the directory",
                "role": r.role.as_str(),
                "organisation": "",
            })
        });
    users
        .iter()
        .filter(|u| {
            &u.id == user
                || Some(u.org.as_str()) == own_org
                || assignments
                    .get(&u.id)
                    .is_some_and(|theirs| patients.iter().any(|p| theirs.contains(p)))
        })
        .take(MAX_STAFF)
        .map(|u| {
            let organisation = orgs
                .iter()
                .find(|(id, _)| id == &u.org)
                .map_or(u.org.as_str(), |(_, name)| name.as_str());
            json!({
                "user": u.id,
                "name": u.name,
                "role": u.role.as_str(),
                "organisation": organisation,
            })
        })
        .chain(registrar)
        .collect()
}
