//! Corrections: a note, an observation or an administration marked entered in error, with a
//! reason. What may be marked is the model's rule (`sync_core::model::corrections`); this
//! module finds the document that holds the record and writes the mark there.

use sync_core::model::corrections::{Mark, check_correction, marks};

use super::*;

/// One entered-in-error mark, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkShown {
    pub mark: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub reason: String,
}

impl From<Mark> for MarkShown {
    fn from(m: Mark) -> Self {
        Self {
            mark: m.id,
            author: m.author,
            at: m.at,
            reason: m.reason,
        }
    }
}

/// A record marked entered in error, with every mark this device holds (two people marking
/// it at once both keep theirs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Corrected {
    pub document: DocumentId,
    /// The record marked.
    pub record: RecordId,
    /// The new mark.
    pub mark: RecordId,
    /// What the record holds.
    pub body: EventBody,
    pub marks: Vec<MarkShown>,
}

/// The marks on `record` in `doc`, oldest first.
pub(super) fn marks_of(doc: &sync_core::model::CareDocument, record: &RecordId) -> Vec<MarkShown> {
    marks(doc, record).into_iter().map(Into::into).collect()
}

/// The journal or administration log of `patient` on this device that holds event `record`.
pub(super) fn holder(
    repo: &mut Repo<SqliteStore>,
    patient: &PatientId,
    record: &RecordId,
) -> Result<DocumentId> {
    let candidates: Vec<DocumentId> = repo
        .document_ids()?
        .into_iter()
        .filter(|d| {
            d.patient() == patient
                && matches!(
                    d.kind(),
                    DocKind::Journal | DocKind::MedicationAdministration
                )
        })
        .collect();
    for doc in candidates {
        if repo.get(&doc)?.event(record).is_some() {
            return Ok(doc);
        }
    }
    Err(ClientError::Invalid(format!(
        "no note, observation or administration {record} for {patient} on this device"
    )))
}

/// Marks `record` (a note, an observation or an administration of `patient`) entered in
/// error, with `reason`. The record stays; the mark names it. Refused if this device already
/// holds a mark on it.
pub fn correct(
    device: &Device,
    patient: &PatientId,
    record: &RecordId,
    reason: &str,
    clock: &Clock,
) -> Result<Corrected> {
    let (document, body) = device.with_repo(|repo| -> Result<(DocumentId, EventBody)> {
        let document = holder(repo, patient, record)?;
        let body = check_correction(repo.get(&document)?, record, reason)?
            .body
            .clone();
        Ok((document, body))
    })?;
    let mark = clock.new_id();
    device.change(&document, clock.now, |e| {
        e.record(
            mark.clone(),
            EventBody::EnteredInError {
                target: record.clone(),
                reason: reason.trim().to_owned(),
            },
        )
    })?;
    let marks = device.with_repo(|repo| -> Result<Vec<MarkShown>> {
        Ok(marks_of(repo.get(&document)?, record))
    })?;
    Ok(Corrected {
        document,
        record: record.clone(),
        mark,
        body,
        marks,
    })
}

/// One note, observation or administration of `patient` as this device holds it, with its
/// entered-in-error marks. Logged as a read.
pub fn record(device: &Device, patient: &PatientId, record: &RecordId) -> Result<JournalEntry> {
    device.check_lease(crate::now())?;
    device.log_read(patient, "record")?;
    device.with_repo(|repo| {
        let document = holder(repo, patient, record)?;
        let d = repo.get(&document)?;
        let ev = d.event(record).ok_or_else(|| {
            ClientError::Invalid(format!("no record {record} for {patient} on this device"))
        })?;
        let marks = marks_of(d, record);
        Ok(JournalEntry {
            document: document.clone(),
            id: record.clone(),
            author: ev.author.clone(),
            at: ev.at,
            body: ev.body.clone(),
            entered_in_error: !marks.is_empty(),
            marks,
        })
    })
}
