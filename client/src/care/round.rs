//! The medication round on the device: the signing list of a shift, the "when needed"
//! follow-ups, and the flags the server raised, shaped for the app. The statuses are the
//! model's (`sync_core::model::round`); what the other phones have synced is what the server
//! last said ([`Device::refresh_round`]), kept in the store, so the list works offline and
//! says "unknown" rather than "overdue" where it cannot know.

use sync_core::model::delegation;
use sync_core::model::prn::{self, FollowUp};
use sync_core::model::round::{self, FlagRecord, PhoneSync, RoundSlot, Shift};
use sync_core::model::{DoseEffect, PrnRule};

use super::*;

/// A slot's status on the signing list: the model's own (it serialises as the app shows it).
pub use sync_core::model::round::RoundStatus as RoundStatusView;

/// One due slot on the signing list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundSlotShown {
    pub patient: PatientId,
    pub display_name: Option<String>,
    pub order: RecordId,
    pub revision: RecordId,
    pub version: u32,
    pub drug: String,
    pub strength: String,
    pub dose: String,
    pub route: String,
    /// The order is in conflict: a nurse must resolve it before a dose is recorded.
    pub in_conflict: bool,
    /// `YYYY-MM-DDTHH:MM`, local.
    pub slot: String,
    pub due: Timestamp,
    pub window_minutes: u32,
    #[serde(flatten)]
    pub status: RoundStatusView,
}

impl RoundSlotShown {
    fn new(patient: &PatientId, display_name: Option<String>, s: RoundSlot) -> Self {
        Self {
            patient: patient.clone(),
            display_name,
            order: s.order,
            revision: s.revision,
            version: s.version,
            drug: s.value.drug,
            strength: s.value.strength,
            dose: s.value.dose,
            route: s.value.route,
            in_conflict: s.in_conflict,
            slot: s.slot,
            due: s.due,
            window_minutes: s.window_minutes,
            status: s.status,
        }
    }
}

/// The follow-up of a "when needed" dose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FollowUpShown {
    pub patient: PatientId,
    pub display_name: Option<String>,
    pub administration: RecordId,
    pub order: RecordId,
    pub drug: Option<String>,
    pub document: DocumentId,
    pub given_at: Timestamp,
    pub due: Timestamp,
    /// `good`, `partial` or `none` once recorded.
    pub effect: Option<DoseEffect>,
    pub note: Option<String>,
    pub overdue: bool,
}

/// A flag the server raised (`overdue`, `follow-up`), open as this device sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerFlagShown {
    pub patient: PatientId,
    pub display_name: Option<String>,
    #[serde(flatten)]
    pub flag: FlagRecord,
}

/// The signing list of a shift, and what goes with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Round {
    pub from: Timestamp,
    pub to: Timestamp,
    pub utc_offset_minutes: i32,
    /// When the server last said which phones had synced (by its clock); `None`: never, so
    /// closed slots with nothing recorded here are unknown.
    pub server_checked_at: Option<Timestamp>,
    pub slots: Vec<RoundSlotShown>,
    pub follow_ups: Vec<FollowUpShown>,
    /// Flags the server raised, as of `server_checked_at`, with their state here.
    pub flags: Vec<ServerFlagShown>,
}

/// The signing list of `shift` for `patient` or everyone on this device, at `now`. Each
/// person's list is recorded in the read log.
pub fn round(
    device: &Device,
    shift: &Shift,
    patient: Option<&PatientId>,
    now: Timestamp,
) -> Result<Round> {
    device.check_lease(crate::now())?;
    let server = device.server_round()?;
    let me = device.author().device;
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
        let mut out = Round {
            from: shift.from,
            to: shift.to,
            utc_offset_minutes: shift.utc_offset_minutes,
            server_checked_at: server.now,
            slots: Vec::new(),
            follow_ups: Vec::new(),
            flags: Vec::new(),
        };
        for p in people {
            DeviceSession::log_read(repo, &p, "signing list", crate::now())?;
            let name = display_name(repo, &p)?;
            let known = server.of(&p);
            out.slots.extend(person_slots(
                repo,
                &p,
                name.as_ref(),
                shift,
                now,
                &server,
                &me,
            )?);
            let drugs = order_drugs(repo, &p)?;
            let chart = repo.chart(&p, &[])?;
            out.follow_ups
                .extend(prn::follow_ups(&chart, now).into_iter().map(|f: FollowUp| {
                    FollowUpShown {
                        patient: p.clone(),
                        display_name: name.clone(),
                        drug: drugs.get(&f.order).cloned(),
                        administration: f.administration,
                        order: f.order,
                        document: f.document,
                        given_at: f.given_at,
                        due: f.due,
                        effect: f.effect.as_ref().map(|(_, e, _)| *e),
                        note: f.effect.and_then(|(_, _, n)| n),
                        overdue: f.overdue,
                    }
                }));
            if let Some(k) = known {
                out.flags.extend(k.flags.iter().map(|f| {
                    let mut flag = f.clone();
                    flag.open = f.open_in(&chart);
                    ServerFlagShown {
                        patient: p.clone(),
                        display_name: name.clone(),
                        flag,
                    }
                }));
            }
        }
        out.slots
            .sort_by(|a, b| (a.due, &a.patient, &a.order).cmp(&(b.due, &b.patient, &b.order)));
        Ok(out)
    })
}

/// One person's due slots in `shift` at `now`, each with the model's status
/// ([`round::signing_list`]): closed slots with nothing recorded are overdue only if every
/// other phone that could have recorded them has synced since, by what the server last said
/// (`server`), and otherwise unknown. The one way a slot's status is shown: the signing list
/// ([`round`]) and the person's page ([`super::overview`]) both go through it.
pub(super) fn person_slots(
    repo: &mut Repo<SqliteStore>,
    patient: &PatientId,
    name: Option<&String>,
    shift: &Shift,
    now: Timestamp,
    server: &crate::ServerRound,
    me: &sync_core::DeviceId,
) -> Result<Vec<RoundSlotShown>> {
    let others: Option<Vec<PhoneSync>> = server.of(patient).map(|k| {
        k.phones
            .iter()
            .filter(|ph| &ph.device != me)
            .cloned()
            .collect()
    });
    let chart = repo.chart(patient, &[])?;
    Ok(round::signing_list(&chart, shift, now, others.as_deref())
        .into_iter()
        .map(|s| RoundSlotShown::new(patient, name.cloned(), s))
        .collect())
}

/// The drug and strength of every order of `patient` on this device ("Metoprolol 50 mg"; in a
/// conflict, a candidate's), to name orders in what a person reads. Part of a view that is
/// logged as a read itself.
pub fn order_names(device: &Device, patient: &PatientId) -> Result<BTreeMap<RecordId, String>> {
    device.with_repo(|repo| {
        let doc = DocumentId::medication(patient);
        if !repo.document_ids()?.contains(&doc) {
            return Ok(BTreeMap::new());
        }
        let meds = repo.get(&doc)?;
        Ok(round::order_names(&sync_core::model::Chart::new(
            patient,
            [meds],
        )))
    })
}

/// The drug of every order of `patient` on this device (in a conflict, a candidate's).
fn order_drugs(
    repo: &mut Repo<SqliteStore>,
    patient: &PatientId,
) -> Result<BTreeMap<RecordId, String>> {
    let doc = DocumentId::medication(patient);
    let mut out = BTreeMap::new();
    if !repo.document_ids()?.contains(&doc) {
        return Ok(out);
    }
    let meds = repo.get(&doc)?;
    for register in meds.registers() {
        let Register::Order(id) = &register else {
            continue;
        };
        let value = match meds.register(&register) {
            RegisterState::Value(v) => Some(v),
            RegisterState::Conflict(c) => c.into_iter().next(),
            RegisterState::Unset => None,
        };
        if let Some(RegisterValue::Order(o)) = value.map(|v| v.revision.value) {
            out.insert(id.clone(), o.drug);
        }
    }
    Ok(out)
}

/// The flags the server raised for `patient` that this chart does not derive itself (`shown`),
/// as flags are shown, open as this device sees it now.
pub(super) fn server_flags(
    server: &crate::ServerRound,
    patient: &PatientId,
    chart: &Chart<'_>,
    shown: &[FlagShown],
) -> Vec<FlagShown> {
    let Some(known) = server.of(patient) else {
        return Vec::new();
    };
    let mut acks = chart.acknowledgements();
    known
        .flags
        .iter()
        .filter(|f| !shown.iter().any(|s| s.id == f.id))
        .map(|f| FlagShown {
            patient: patient.clone(),
            id: f.id.clone(),
            kind: kind_name(&f.kind),
            order: f.order.clone(),
            slot: f.slot.clone(),
            open: f.open_in(chart),
            document: f.document.clone(),
            evidence: f.evidence.clone(),
            acknowledgements: acks
                .remove(&f.id)
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        })
        .collect()
}

/// A flag kind's name as a static string (those the model knows; others are `server`).
fn kind_name(kind: &str) -> &'static str {
    [
        "overdue",
        "follow-up",
        "no-delegation",
        "prn-limit",
        "double-dose",
        "superseded-order",
        "time-uncertain",
    ]
    .into_iter()
    .find(|k| *k == kind)
    .unwrap_or("server")
}

/// A flag the server raised for `patient`, as it last said.
pub(super) fn server_flag(
    device: &Device,
    patient: &PatientId,
    id: &str,
) -> Result<Option<FlagRecord>> {
    Ok(device
        .server_round()?
        .of(patient)
        .and_then(|p| p.flags.iter().find(|f| f.id == id).cloned()))
}

/// Records the effect of a "when needed" dose (its follow-up) in the dose's log.
pub fn record_effect(
    device: &Device,
    patient: &PatientId,
    administration: &RecordId,
    effect: DoseEffect,
    note: Option<&str>,
    clock: &Clock,
) -> Result<Recorded> {
    let document = device.with_repo(|repo| -> Result<Option<DocumentId>> {
        let chart = repo.chart(patient, &[])?;
        Ok(prn::follow_ups(&chart, clock.now)
            .into_iter()
            .find(|f| &f.administration == administration)
            .map(|f| f.document))
    })?;
    let document = document.ok_or_else(|| {
        ClientError::Invalid(format!(
            "no \"when needed\" dose {administration} for {patient} on this device"
        ))
    })?;
    let record = clock.new_id();
    device.change(&document, clock.now, |e| {
        e.record(
            record.clone(),
            EventBody::Effect {
                administration: administration.clone(),
                effect,
                note: note.map(str::to_owned),
                occurred_at: clock.now,
            },
        )
    })?;
    Ok(Recorded { document, record })
}

/// Refuses a dose the model says needs a delegation that `author` does not hold at `at`.
pub(super) fn check_delegation(
    device: &Device,
    patient: &PatientId,
    order: &MedicationOrder,
    at: Timestamp,
) -> Result<()> {
    let author = device.author();
    if !delegation::needs_delegation(order, &author) {
        return Ok(());
    }
    device.with_repo(|repo| -> Result<()> {
        let chart = repo.chart(patient, &[])?;
        delegation::valid_delegation(&chart, &author.user, delegation::MEDICATION, at)
            .map(drop)
            .map_err(|problem| {
                ClientError::Invalid(format!(
                    "not recorded: {} needs a valid delegation for medication for {patient} to \
                     record a dose of {} (a delegated order), and {problem}; ask a nurse",
                    author.user, order.drug
                ))
            })
    })
}

/// Refuses a "when needed" dose past the order's limits unless given anyway with a reason.
pub(super) fn check_prn(
    device: &Device,
    patient: &PatientId,
    order: &RecordId,
    rule: &PrnRule,
    anyway: Option<&str>,
    at: Timestamp,
) -> Result<()> {
    let problem = device.with_repo(|repo| -> Result<Option<prn::PrnProblem>> {
        let chart = repo.chart(patient, &[])?;
        Ok(prn::check_dose(&chart, order, rule, at).err())
    })?;
    match (problem, anyway) {
        (None, _) => Ok(()),
        (Some(_), Some(reason)) if !reason.trim().is_empty() => Ok(()),
        (Some(p), _) => Err(ClientError::Invalid(format!(
            "not recorded: {p}; a dose past the order's limits needs --anyway with a --reason, \
             and is flagged for the nurse"
        ))),
    }
}
