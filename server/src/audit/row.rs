//! One record as stored: the columns a query reads, and the hash that chains it to the record
//! before (the format is in the module docs of [`super`]).

use sha2::{Digest, Sha256};
use sync_core::{DeviceId, PatientId};

use super::{AuditEntry, AuditError, AuditRecord, DOMAIN};
use crate::db;

/// A record's fields as stored, before any parsing: what the hash covers.
pub(super) struct Fields<'a> {
    pub(super) seq: u64,
    pub(super) at_ms: i64,
    pub(super) actor: &'a str,
    pub(super) device: Option<&'a str>,
    pub(super) action: &'a str,
    pub(super) patient: Option<&'a str>,
    pub(super) document: Option<&'a str>,
    pub(super) detail: &'a str,
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn put_opt(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            put_str(h, s);
        }
    }
}

/// The hash of a record (hex) given the previous record's hash (hex).
pub(super) fn record_hash(prev: &str, f: &Fields<'_>) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    put_str(&mut h, prev);
    h.update(f.seq.to_be_bytes());
    h.update(f.at_ms.to_be_bytes());
    put_str(&mut h, f.actor);
    put_opt(&mut h, f.device);
    put_str(&mut h, f.action);
    put_opt(&mut h, f.patient);
    put_opt(&mut h, f.document);
    put_str(&mut h, f.detail);
    hex::encode(h.finalize())
}

pub(super) const SELECT_COLUMNS: &str = "SELECT seq, at_ms, actor, device, action, patient, document, detail, prev, hash FROM audit_log";

/// One stored row, unparsed.
pub(super) struct Row {
    pub(super) seq: i64,
    pub(super) at_ms: i64,
    pub(super) actor: String,
    pub(super) device: Option<String>,
    pub(super) action: String,
    pub(super) patient: Option<String>,
    pub(super) document: Option<String>,
    pub(super) detail: String,
    pub(super) prev: String,
    pub(super) hash: String,
}

impl Row {
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            at_ms: r.get(1)?,
            actor: r.get(2)?,
            device: r.get(3)?,
            action: r.get(4)?,
            patient: r.get(5)?,
            document: r.get(6)?,
            detail: r.get(7)?,
            prev: r.get(8)?,
            hash: r.get(9)?,
        })
    }

    pub(super) fn computed_hash(&self, seq: u64) -> String {
        record_hash(
            &self.prev,
            &Fields {
                seq,
                at_ms: self.at_ms,
                actor: &self.actor,
                device: self.device.as_deref(),
                action: &self.action,
                patient: self.patient.as_deref(),
                document: self.document.as_deref(),
                detail: &self.detail,
            },
        )
    }

    pub(super) fn into_record(self) -> Result<AuditRecord, AuditError> {
        let seq = self.seq;
        let bad = |what: &str, e: String| AuditError::BadRow(format!("record {seq}: {what}: {e}"));
        Ok(AuditRecord {
            seq: db::to_u64(self.seq, "seq").map_err(|e| bad("seq", e))?,
            entry: AuditEntry {
                at_ms: self.at_ms,
                actor: self.actor,
                device: self
                    .device
                    .map(DeviceId::new)
                    .transpose()
                    .map_err(|e| bad("device", e.to_string()))?,
                action: self.action.parse().map_err(|e| bad("action", e))?,
                patient: self
                    .patient
                    .map(PatientId::new)
                    .transpose()
                    .map_err(|e| bad("patient", e.to_string()))?,
                document: self.document,
                detail: self.detail,
            },
            prev: self.prev,
            hash: self.hash,
        })
    }
}
