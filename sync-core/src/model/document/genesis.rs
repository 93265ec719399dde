//! The genesis change of a document: a pure function of its [`DocumentId`] (see the module
//! documentation of [`super`]), made on every replica that starts the document and checked on
//! every load and upload.
//!
//! Making it through an Automerge transaction costs about 100 µs, and a server storing an upload
//! of thousands of new documents (a phone's first day back online) did that three or four times
//! per document: a third of the upload's time went to genesis. So the change is made once per
//! shape (with or without a month) through the transaction, decoded, and from then on rewritten
//! for each document: its actor, the object ids that name that actor, and the three values that
//! depend on the id. That costs about 5 µs. The transaction stays the definition; a test checks
//! the rewritten change is byte for byte the transaction's for every kind.

use std::sync::OnceLock;

use automerge::legacy::{ObjectId, OpId, OpType};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, AutomergeError, Change, ChangeHash, ObjType, ROOT, ScalarValue};

use super::{EVENTS, META, REVISIONS, SCHEMA_VERSION, TEXTS};
use crate::error::ModelError;
use crate::ids::{DocumentId, Month, PatientId, genesis_actor};

/// The genesis document of `id`, made through an Automerge transaction: the definition of
/// genesis, which [`genesis_change`] reproduces faster.
pub(super) fn genesis(id: &DocumentId) -> Result<Automerge, AutomergeError> {
    let mut doc = Automerge::new().with_actor(genesis_actor(id));
    let mut tx = doc.transaction();
    let meta = tx.put_object(ROOT, META, ObjType::Map)?;
    tx.put(&meta, "schema", SCHEMA_VERSION)?;
    tx.put(&meta, "kind", id.kind().as_str())?;
    tx.put(&meta, "patient", id.patient().as_str())?;
    if let Some(m) = id.month() {
        tx.put(&meta, "month", m.to_string())?;
    }
    tx.put_object(ROOT, REVISIONS, ObjType::Map)?;
    tx.put_object(ROOT, EVENTS, ObjType::Map)?;
    tx.put_object(ROOT, TEXTS, ObjType::Map)?;
    tx.commit_with(
        CommitOptions::default()
            .with_time(0)
            .with_message("genesis"),
    );
    Ok(doc)
}

/// The genesis change of `id`.
pub(super) fn genesis_change(id: &DocumentId) -> Result<Change, ModelError> {
    let template =
        template(id.month().is_some())
            .as_ref()
            .map_err(|reason| ModelError::Invalid {
                doc: id.clone(),
                path: String::new(),
                reason: reason.clone(),
            })?;
    let actor = genesis_actor(id);
    let mut change = template.clone();
    for op in &mut change.operations {
        if let ObjectId::Id(made) = &op.obj {
            op.obj = ObjectId::Id(OpId::new(made.counter(), &actor));
        }
        if let (OpType::Put(value), automerge::legacy::Key::Map(key)) = (&mut op.action, &op.key) {
            match key.as_str() {
                "kind" => *value = ScalarValue::from(id.kind().as_str()),
                "patient" => *value = ScalarValue::from(id.patient().as_str()),
                "month" => {
                    if let Some(m) = id.month() {
                        *value = ScalarValue::from(m.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    change.actor_id = actor;
    change.hash = None;
    Ok(Change::from(change))
}

/// The hash of the genesis change of `id`.
pub fn genesis_hash(id: &DocumentId) -> Result<ChangeHash, ModelError> {
    Ok(genesis_change(id)?.hash())
}

/// The genesis change of a placeholder document with or without a month, decoded: what
/// [`genesis_change`] rewrites. An error only if Automerge could not make it, which no input
/// can cause.
fn template(monthly: bool) -> &'static Result<automerge::ExpandedChange, String> {
    static MONTHLY: OnceLock<Result<automerge::ExpandedChange, String>> = OnceLock::new();
    static SINGLE: OnceLock<Result<automerge::ExpandedChange, String>> = OnceLock::new();
    let cell = if monthly { &MONTHLY } else { &SINGLE };
    cell.get_or_init(|| {
        let patient = PatientId::new("template").map_err(|e| e.to_string())?;
        let id = if monthly {
            DocumentId::journal(&patient, Month::new(2000, 1).map_err(|e| e.to_string())?)
        } else {
            DocumentId::care_plan(&patient)
        };
        let doc = genesis(&id).map_err(|e| format!("genesis template: {e}"))?;
        let change = doc
            .get_changes(&[])
            .into_iter()
            .next()
            .ok_or("genesis template: no change")?;
        let template = change.decode();
        // What the rewrite relies on: objects made by genesis itself, no predecessors.
        if template.operations.iter().any(|op| !op.pred.is_empty()) {
            return Err("genesis template: an operation has predecessors".into());
        }
        Ok(template)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DocKind;

    fn ids() -> Vec<DocumentId> {
        let mut ids = Vec::new();
        for patient in [
            "p-17",
            "x",
            "a-much-longer-patient-identifier-0123456789",
            "P_9.z",
        ] {
            let p = PatientId::new(patient).unwrap();
            for kind in DocKind::ALL {
                for month in [Month::new(2026, 11).unwrap(), Month::new(2031, 1).unwrap()] {
                    ids.push(match kind {
                        DocKind::Patient => DocumentId::patient_header(&p),
                        DocKind::CarePlan => DocumentId::care_plan(&p),
                        DocKind::MedicationRequest => DocumentId::medication(&p),
                        DocKind::MedicationAdministration => DocumentId::administrations(&p, month),
                        DocKind::Journal => DocumentId::journal(&p, month),
                    });
                }
            }
        }
        ids
    }

    #[test]
    fn the_rewritten_genesis_is_the_transactions_byte_for_byte() {
        let ids = ids();
        assert!(ids.len() >= 30);
        for id in ids {
            let doc = genesis(&id).unwrap();
            let made = doc.get_changes(&[]);
            assert_eq!(made.len(), 1);
            let fast = genesis_change(&id).unwrap();
            assert_eq!(fast.raw_bytes(), made[0].raw_bytes(), "{id}");
            assert_eq!(genesis_hash(&id).unwrap(), doc.get_heads()[0], "{id}");
        }
    }

    #[test]
    fn different_documents_have_different_genesis() {
        let hashes: std::collections::HashSet<_> =
            ids().iter().map(|id| genesis_hash(id).unwrap()).collect();
        // Patient, care plan and medication ignore the month: 4 patients x (3 + 2 x 2).
        assert_eq!(hashes.len(), 4 * 7);
    }
}
