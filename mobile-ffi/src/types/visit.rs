//! A visit's records saved together at its end (`care::visit`): one change per document, all
//! or nothing.

use nara_client::care::{Visit, VisitDose, VisitObservation, VisitSaved, VisitTask};
use sync_core::RecordId;

use super::{FfiObservationCode, FfiOutcome, FfiRecorded, all, count};
use crate::error::NaraError;

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiVisit {
    /// When the visit started (ms since the Unix epoch); `None`: when it is saved.
    pub started_ms: Option<i64>,
    pub tasks: Vec<FfiVisitTask>,
    pub notes: Vec<String>,
    pub observations: Vec<FfiVisitObservation>,
    pub doses: Vec<FfiVisitDose>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiVisitTask {
    pub task: String,
    pub done: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FfiVisitObservation {
    pub code: FfiObservationCode,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiVisitDose {
    pub order: String,
    /// `YYYY-MM-DDTHH:MM`.
    pub slot: String,
    pub outcome: FfiOutcome,
    pub reason: Option<String>,
    pub again: bool,
    /// The drug matches an active allergy and the worker confirmed it (without, such a dose
    /// refuses the visit with `NaraError::AllergyWarning`).
    #[uniffi(default = false)]
    pub allergy_confirmed: bool,
}

/// The saved visit: its id, every record written, and the changes it took.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FfiVisitSaved {
    pub visit: String,
    pub records: Vec<FfiRecorded>,
    pub changes: u64,
}

impl TryFrom<FfiVisit> for Visit {
    type Error = NaraError;

    fn try_from(v: FfiVisit) -> Result<Self, NaraError> {
        let doses = v
            .doses
            .into_iter()
            .map(|d| {
                Ok(VisitDose {
                    order: RecordId::new(d.order)?,
                    slot: d.slot,
                    outcome: d.outcome.into(),
                    reason: d.reason,
                    again: d.again,
                    allergy_confirmed: d.allergy_confirmed,
                })
            })
            .collect::<Result<Vec<_>, NaraError>>()?;
        Ok(Visit {
            started_ms: v.started_ms,
            tasks: v
                .tasks
                .into_iter()
                .map(|t| VisitTask {
                    task: t.task,
                    done: t.done,
                    reason: t.reason,
                })
                .collect(),
            notes: v.notes,
            observations: v
                .observations
                .into_iter()
                .map(|o| VisitObservation {
                    code: o.code.into(),
                    value: o.value,
                    unit: o.unit,
                })
                .collect(),
            doses,
        })
    }
}

impl From<VisitSaved> for FfiVisitSaved {
    fn from(s: VisitSaved) -> Self {
        Self {
            visit: s.visit.into(),
            records: all(s.records),
            changes: count(s.changes),
        }
    }
}
