//! What is read back, shaped for the app: the people on this device, conflicts, flags,
//! and the revision, register and slot views they are made of.

use super::*;

/// A person with documents on this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientSummary {
    pub patient: PatientId,
    pub display_name: Option<String>,
    pub documents: usize,
    pub conflicts: usize,
    pub open_flags: usize,
}

/// Every person with documents on this device. Each name shown is recorded in the read log.
pub fn patients(device: &Device) -> Result<Vec<PatientSummary>> {
    device.check_lease(crate::now())?;
    device.with_repo(|repo| {
        let docs = repo.document_ids()?;
        let ids: BTreeSet<PatientId> = docs.iter().map(|d| d.patient().clone()).collect();
        let mut out = Vec::new();
        for patient in ids {
            let documents = docs.iter().filter(|d| d.patient() == &patient).count();
            let display_name = display_name(repo, &patient)?;
            if display_name.is_some() {
                // A name is patient data: logged, durably, before it is shown.
                DeviceSession::log_read(repo, &patient, "name", crate::now())?;
            }
            let chart = repo.chart(&patient, &[])?;
            out.push(PatientSummary {
                conflicts: chart.conflicts().len(),
                open_flags: chart.flags().iter().filter(|f| f.open).count(),
                patient,
                display_name,
                documents,
            });
        }
        Ok(out)
    })
}

fn stored_patients(repo: &Repo<SqliteStore>) -> Result<BTreeSet<PatientId>> {
    Ok(repo
        .document_ids()?
        .into_iter()
        .map(|d| d.patient().clone())
        .collect())
}

/// The name of `patient` this device holds, if any; shown names are recorded in the read log.
pub fn name_of(device: &Device, patient: &PatientId) -> Result<Option<String>> {
    device.check_lease(crate::now())?;
    device.with_repo(|repo| {
        let name = display_name(repo, patient)?;
        if name.is_some() {
            DeviceSession::log_read(repo, patient, "name", crate::now())?;
        }
        Ok(name)
    })
}

pub(super) fn display_name(
    repo: &mut Repo<SqliteStore>,
    patient: &PatientId,
) -> Result<Option<String>> {
    if !repo
        .document_ids()?
        .contains(&DocumentId::patient_header(patient))
    {
        return Ok(None);
    }
    Ok(
        match repo
            .get(&DocumentId::patient_header(patient))?
            .register(&Register::DisplayName)
        {
            RegisterState::Value(v) => match v.revision.value {
                RegisterValue::DisplayName { name } => Some(name),
                _ => None,
            },
            _ => None,
        },
    )
}

/// One revision of a register, as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionShown {
    pub revision: RecordId,
    pub version: u32,
    pub author: Author,
    pub at: Timestamp,
    pub value: RegisterValue,
}

impl From<RevisionView> for RevisionShown {
    fn from(v: RevisionView) -> Self {
        Self {
            revision: v.id,
            version: v.version,
            author: v.revision.author,
            at: v.revision.at,
            value: v.revision.value,
        }
    }
}

/// A register's state, as shown.
#[allow(clippy::large_enum_variant)] // a read result, not stored
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RegisterShown {
    Unset,
    Value(RevisionShown),
    Conflict { candidates: Vec<RevisionShown> },
}

impl From<RegisterState> for RegisterShown {
    fn from(s: RegisterState) -> Self {
        match s {
            RegisterState::Unset => RegisterShown::Unset,
            RegisterState::Value(v) => RegisterShown::Value(v.into()),
            RegisterState::Conflict(c) => RegisterShown::Conflict {
                candidates: c.into_iter().map(Into::into).collect(),
            },
        }
    }
}

/// A register in conflict, with every candidate value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictShown {
    pub patient: PatientId,
    pub document: DocumentId,
    pub register: String,
    pub candidates: Vec<RevisionShown>,
}

impl ConflictShown {
    pub(super) fn new(patient: &PatientId, c: Conflict) -> Self {
        Self {
            patient: patient.clone(),
            document: c.document,
            register: c.register.to_string(),
            candidates: c.candidates.into_iter().map(Into::into).collect(),
        }
    }
}

/// Every conflict of `patient`, or of everyone on this device.
pub fn conflicts(device: &Device, patient: Option<&PatientId>) -> Result<Vec<ConflictShown>> {
    device.check_lease(crate::now())?;
    device.with_repo(|repo| {
        let mut out = Vec::new();
        for p in which(repo, patient)? {
            DeviceSession::log_read(repo, &p, "conflicts", crate::now())?;
            let chart = repo.chart(&p, &[])?;
            out.extend(
                chart
                    .conflicts()
                    .into_iter()
                    .map(|c| ConflictShown::new(&p, c)),
            );
        }
        Ok(out)
    })
}

fn which(repo: &Repo<SqliteStore>, patient: Option<&PatientId>) -> Result<Vec<PatientId>> {
    Ok(match patient {
        Some(p) => vec![p.clone()],
        None => stored_patients(repo)?.into_iter().collect(),
    })
}

/// A nurse's acknowledgement, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckShown {
    pub event: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub comment: Option<String>,
    pub covers: Vec<RecordId>,
}

impl From<Acknowledgement> for AckShown {
    fn from(a: Acknowledgement) -> Self {
        Self {
            event: a.event,
            author: a.author,
            at: a.at,
            comment: a.comment,
            covers: a.covers,
        }
    }
}

/// A safety flag, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagShown {
    pub patient: PatientId,
    pub id: String,
    /// `double-dose`, `superseded-order`, `time-uncertain` ("time uncertain, review": a
    /// dose on an order version a concurrent later one may have replaced, where only a clock
    /// known to be off could tell), `no-delegation` or `prn-limit`; the server raises
    /// `overdue` and `follow-up` (see `round.rs`).
    pub kind: &'static str,
    pub order: RecordId,
    pub slot: Option<String>,
    pub open: bool,
    pub document: DocumentId,
    pub evidence: Vec<RecordId>,
    pub acknowledgements: Vec<AckShown>,
}

impl FlagShown {
    pub(super) fn new(patient: &PatientId, f: Flag) -> Self {
        let kind = f.kind.name();
        let (order, slot, _) = f.kind.subject();
        Self {
            patient: patient.clone(),
            id: f.id,
            kind,
            order,
            slot,
            open: f.open,
            document: f.document,
            evidence: f.evidence,
            acknowledgements: f.acknowledgements.into_iter().map(Into::into).collect(),
        }
    }
}

/// Every flag, open or acknowledged, of `patient` or of everyone on this device.
pub fn flags(device: &Device, patient: Option<&PatientId>) -> Result<Vec<FlagShown>> {
    device.check_lease(crate::now())?;
    // With the flags the server raised (overdue slots, follow-ups), as it last said.
    let server = device.server_round()?;
    device.with_repo(|repo| {
        let mut out = Vec::new();
        for p in which(repo, patient)? {
            DeviceSession::log_read(repo, &p, "flags", crate::now())?;
            let chart = repo.chart(&p, &[])?;
            let mut shown: Vec<FlagShown> = chart
                .flags()
                .into_iter()
                .map(|f| FlagShown::new(&p, f))
                .collect();
            shown.extend(super::round::server_flags(&server, &p, &chart, &shown));
            out.extend(shown);
        }
        Ok(out)
    })
}

/// A slot's status, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SlotView {
    Open,
    Given {
        administration: RecordId,
        by: Author,
    },
    NotGiven {
        administration: RecordId,
        reason: Option<String>,
    },
    SelfAdministered {
        administration: RecordId,
    },
    PossibleDoubleDose {
        administrations: Vec<RecordId>,
    },
}

impl From<SlotStatus> for SlotView {
    fn from(s: SlotStatus) -> Self {
        match s {
            SlotStatus::Open => SlotView::Open,
            SlotStatus::Given { administration, by } => SlotView::Given { administration, by },
            SlotStatus::NotGiven {
                administration,
                reason,
            } => SlotView::NotGiven {
                administration,
                reason,
            },
            SlotStatus::SelfAdministered { administration } => {
                SlotView::SelfAdministered { administration }
            }
            SlotStatus::PossibleDoubleDose { administrations } => {
                SlotView::PossibleDoubleDose { administrations }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityShown {
    pub id: RecordId,
    pub value: RegisterShown,
    /// The entity's free text (a goal's or intervention's description, order instructions).
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    pub document: DocumentId,
    pub id: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub body: EventBody,
    /// Marked entered in error (once, however many marks).
    pub entered_in_error: bool,
    /// Every entered-in-error mark on it, oldest first (two made at once are both here).
    pub marks: Vec<MarkShown>,
}

/// A person's record as a care worker sees it today.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub patient: PatientId,
    pub display_name: Option<String>,
    pub resuscitation: RegisterShown,
    pub allergies: Vec<EntityShown>,
    pub risks: Vec<EntityShown>,
    pub goals: Vec<EntityShown>,
    pub interventions: Vec<EntityShown>,
    pub orders: Vec<EntityShown>,
    /// Today's medication slots, with their status on the signing list (open, overdue,
    /// unknown, given, ...: the model's `RoundStatus`, the same as [`super::round()`] shows).
    pub today: Vec<super::RoundSlotShown>,
    /// The latest journal entries (from last month's journal on, this month's and any later
    /// month's: a phone whose clock ran ahead files in the month it believed), newest first.
    pub journal: Vec<JournalEntry>,
    pub conflicts: Vec<ConflictShown>,
    pub open_flags: Vec<FlagShown>,
}
