//! The open flags a batch found for a patient, kept for the next batch: before applying its
//! changes a batch needs the patient's open flags (to report only those it raised), which are
//! the ones the previous batch found after its changes, as long as none of the patient's
//! documents changed since. A chart's flags are a pure function of its documents
//! (`Chart::flags` takes no time), so the documents' ids and heads are an exact key.
//!
//! Why: with every phone online at base, a phone applies a batch for each upload of the others,
//! and each batch built the patient's whole chart twice (before and after); the chart grows
//! with the day's records, so the before half cost as much as the work itself.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ChangeHash;

use crate::error::RepoError;
use crate::ids::{DocumentId, PatientId};
use crate::repo::Repo;
use crate::store::Store;

/// Patients remembered at most (a phone's caseload is far smaller; past it, all are dropped).
const MAX_PATIENTS: usize = 256;

/// A patient's documents (among those a chart was made of) with their heads, sorted.
pub(super) type Key = Vec<(DocumentId, Vec<ChangeHash>)>;

/// Open flags by patient, with the documents' state they were found in.
#[derive(Debug, Default)]
pub(super) struct FlagMemo {
    by_patient: BTreeMap<PatientId, (Key, BTreeSet<String>)>,
}

impl FlagMemo {
    /// The key of `patient`'s chart over `stored` and `also`: each of its documents among them
    /// with its heads (loading a document not in memory, as the chart would).
    pub(super) fn key<S: Store>(
        repo: &mut Repo<S>,
        patient: &PatientId,
        stored: &[DocumentId],
        also: &[DocumentId],
    ) -> Result<Key, RepoError> {
        let mut ids: Vec<&DocumentId> = stored
            .iter()
            .chain(also)
            .filter(|d| d.patient() == patient)
            .collect();
        ids.sort();
        ids.dedup();
        let mut key = Vec::with_capacity(ids.len());
        for id in ids {
            let mut heads = repo.get(id)?.heads();
            heads.sort();
            key.push((id.clone(), heads));
        }
        Ok(key)
    }

    /// The open flags remembered for `patient` if its documents are as `key` says.
    pub(super) fn get(&self, patient: &PatientId, key: &Key) -> Option<&BTreeSet<String>> {
        self.by_patient
            .get(patient)
            .filter(|(k, _)| k == key)
            .map(|(_, flags)| flags)
    }

    pub(super) fn put(&mut self, patient: PatientId, key: Key, flags: BTreeSet<String>) {
        if self.by_patient.len() >= MAX_PATIENTS && !self.by_patient.contains_key(&patient) {
            self.by_patient.clear();
        }
        self.by_patient.insert(patient, (key, flags));
    }
}

#[cfg(test)]
#[path = "flag_memo_tests.rs"]
mod tests;
