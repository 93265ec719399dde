//! Delegations (nurse): issue one to a named worker for some people, revoke it, and list them
//! (those ending soon first of all). The rules (at most a year, who may write, validity at a
//! dose's time) are the model's (`sync_core::model::delegation`); a delegation is written as a
//! revision in each person's header, signed by the nurse's device like every change.

use sync_core::UserId;
use sync_core::model::Delegation;
use sync_core::model::delegation::{self, DelegationView};
use sync_core::model::round::slot_instant;

use super::*;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// What a delegation covers and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationInput {
    pub to: UserId,
    /// `medication` and named tasks (`insulin`, ...).
    pub scope: Vec<String>,
    pub from: Timestamp,
    pub until: Timestamp,
}

impl DelegationInput {
    /// From the local dates `from` and `until` (`YYYY-MM-DD`, both days included) at
    /// `utc_offset_minutes`.
    pub fn from_dates(
        to: UserId,
        scope: Vec<String>,
        from: &str,
        until: &str,
        utc_offset_minutes: i32,
    ) -> Result<Self> {
        let day = |d: &str| {
            slot_instant(&format!("{d}T00:00"), utc_offset_minutes)
                .ok_or_else(|| ClientError::Invalid(format!("bad date {d:?}: expected YYYY-MM-DD")))
        };
        Ok(Self {
            to,
            scope,
            from: day(from)?,
            until: Timestamp(day(until)?.0 + DAY_MS),
        })
    }
}

/// A delegation as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegationShown {
    pub patient: PatientId,
    pub display_name: Option<String>,
    pub delegation: RecordId,
    pub version: u32,
    pub to: UserId,
    pub scope: Vec<String>,
    pub from: Timestamp,
    pub until: Timestamp,
    pub revoked: bool,
    /// The nurse who signed this version, and when.
    pub by: Author,
    pub at: Timestamp,
    /// Concurrent versions: a nurse must resolve them; until then it is not valid.
    pub in_conflict: bool,
}

impl DelegationShown {
    fn new(patient: &PatientId, name: Option<String>, v: DelegationView) -> Option<Self> {
        let in_conflict = v.in_conflict();
        let (_, by, at, d) = v.candidates.into_iter().next()?;
        Some(Self {
            patient: patient.clone(),
            display_name: name,
            delegation: v.id,
            version: v.version,
            to: d.to,
            scope: d.scope,
            from: d.from,
            until: d.until,
            revoked: d.revoked,
            by,
            at,
            in_conflict,
        })
    }
}

/// Writes delegation `id` (new, or the next version of the current one) to every person in
/// `patients`; refused if it is in conflict there.
fn write(
    device: &Device,
    patients: &[PatientId],
    id: &RecordId,
    value: impl Fn(Option<&Delegation>) -> Result<Delegation>,
    clock: &Clock,
) -> Result<Vec<DelegationShown>> {
    if patients.is_empty() {
        return Err(ClientError::Invalid(
            "name at least one person (--patient)".into(),
        ));
    }
    let register = Register::Delegation(id.clone());
    let mut out = Vec::new();
    for patient in patients {
        let document = DocumentId::patient_header(patient);
        let state = device.with_repo(|repo| -> Result<RegisterState> {
            Ok(repo.get(&document)?.register(&register))
        })?;
        let base = match &state {
            RegisterState::Unset => None,
            RegisterState::Value(v) => match &v.revision.value {
                RegisterValue::Delegation(d) => Some(d.clone()),
                _ => None,
            },
            RegisterState::Conflict(c) => {
                return Err(ClientError::Invalid(format!(
                    "delegation {id} is in conflict for {patient} (versions {})",
                    c.iter()
                        .map(|c| c.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let written = value(base.as_ref())?;
        let revision = clock.new_id();
        device.change(&document, clock.now, |e| {
            if base.is_none() {
                e.create(
                    revision.clone(),
                    register.clone(),
                    RegisterValue::Delegation(written.clone()),
                    None,
                )
            } else {
                e.update(
                    revision.clone(),
                    register.clone(),
                    RegisterValue::Delegation(written.clone()),
                )
            }
        })?;
        out.extend(
            list(device, Some(patient), None, clock.now)?
                .into_iter()
                .filter(|d| &d.delegation == id),
        );
    }
    Ok(out)
}

/// Issues a new delegation (nurse) to `input.to` for each of `patients`: one id for all.
pub fn delegate(
    device: &Device,
    patients: &[PatientId],
    input: &DelegationInput,
    clock: &Clock,
) -> Result<Vec<DelegationShown>> {
    let value = Delegation {
        to: input.to.clone(),
        scope: input.scope.clone(),
        from: input.from,
        until: input.until,
        revoked: false,
    };
    delegation::check(&value)
        .map_err(|(field, reason)| ClientError::Invalid(format!("{field}: {reason}")))?;
    let id = clock.new_id();
    write(device, patients, &id, |_| Ok(value.clone()), clock)
}

/// Revokes delegation `id` for `patient` (nurse): valid no more from now on.
pub fn revoke_delegation(
    device: &Device,
    patient: &PatientId,
    id: &RecordId,
    clock: &Clock,
) -> Result<Vec<DelegationShown>> {
    write(
        device,
        std::slice::from_ref(patient),
        id,
        |base| {
            let mut d = base.cloned().ok_or_else(|| {
                ClientError::Invalid(format!("no delegation {id} for {patient} on this device"))
            })?;
            d.revoked = true;
            Ok(d)
        },
        clock,
    )
}

/// Delegations of `patient` or of everyone on this device; with `ending_within_days`, only
/// those not revoked that end between `now` and that many days on. Soonest end first.
pub fn list(
    device: &Device,
    patient: Option<&PatientId>,
    ending_within_days: Option<u32>,
    now: Timestamp,
) -> Result<Vec<DelegationShown>> {
    device.check_lease(crate::now())?;
    device.with_repo(|repo| {
        let people: Vec<PatientId> = match patient {
            Some(p) => vec![p.clone()],
            None => repo
                .document_ids()?
                .into_iter()
                .map(|d| d.patient().clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let mut out = Vec::new();
        for p in people {
            DeviceSession::log_read(repo, &p, "delegations", crate::now())?;
            let name = display_name(repo, &p)?;
            let chart = repo.chart(&p, &[])?;
            let views = match ending_within_days {
                Some(days) => delegation::ending_within(&chart, now, days),
                None => delegation::delegations(&chart),
            };
            out.extend(
                views
                    .into_iter()
                    .filter_map(|v| DelegationShown::new(&p, name.clone(), v)),
            );
        }
        out.sort_by(|a, b| {
            (a.until, &a.patient, &a.delegation).cmp(&(b.until, &b.patient, &b.delegation))
        });
        Ok(out)
    })
}
