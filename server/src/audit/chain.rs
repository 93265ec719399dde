//! The hash chain itself, with no database in it: how a record is hashed and linked to the one
//! before ([`link`]), a stored row read back ([`Row`]), and the check of a whole chain
//! ([`Verifier`]). Each backend (SQLite in [`super::sqlite`], PostgreSQL in `crate::pg::audit`)
//! only moves rows in and out; the format is in the module docs of [`super`].

use sha2::{Digest, Sha256};
use sync_core::{DeviceId, PatientId};

use super::heads::Checkpoints;
use super::{
    AuditEntry, AuditError, AuditRecord, DOMAIN, GENESIS_PREV, MAX_PROBLEMS, VerifyReport,
    check_entry,
};
use crate::db;

/// A record's fields as stored, before any parsing: what the hash covers.
pub(crate) struct Fields<'a> {
    pub(crate) seq: u64,
    pub(crate) at_ms: i64,
    pub(crate) actor: &'a str,
    pub(crate) device: Option<&'a str>,
    pub(crate) action: &'a str,
    pub(crate) patient: Option<&'a str>,
    pub(crate) document: Option<&'a str>,
    pub(crate) detail: &'a str,
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
pub(crate) fn record_hash(prev: &str, f: &Fields<'_>) -> String {
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

/// The record that follows a head of `count` records ending in hash `prev`: `entry` checked
/// and bounded ([`check_entry`]), numbered `count + 1`, linked to `prev` and hashed. The
/// backend stores it and moves its head to (`seq`, `hash`) in the same transaction, with the
/// head locked from the read of `count` and `prev` to the commit.
pub(crate) fn link(
    count: i64,
    prev: String,
    mut entry: AuditEntry,
) -> Result<AuditRecord, AuditError> {
    check_entry(&mut entry)?;
    let seq_i = count
        .checked_add(1)
        .ok_or_else(|| AuditError::BadRow("head count overflows".into()))?;
    let seq = db::to_u64(seq_i, "head count").map_err(AuditError::BadRow)?;
    let hash = record_hash(
        &prev,
        &Fields {
            seq,
            at_ms: entry.at_ms,
            actor: &entry.actor,
            device: entry.device.as_ref().map(DeviceId::as_str),
            action: entry.action.as_str(),
            patient: entry.patient.as_ref().map(PatientId::as_str),
            document: entry.document.as_deref(),
            detail: &entry.detail,
        },
    );
    Ok(AuditRecord {
        seq,
        entry,
        prev,
        hash,
    })
}

/// A record's sequence number as the databases store it (a signed 64-bit integer).
pub(crate) fn seq_to_sql(record: &AuditRecord) -> Result<i64, AuditError> {
    i64::try_from(record.seq).map_err(|_| AuditError::BadRow("head count overflows".into()))
}

/// One stored row, unparsed.
pub(crate) struct Row {
    pub(crate) seq: i64,
    pub(crate) at_ms: i64,
    pub(crate) actor: String,
    pub(crate) device: Option<String>,
    pub(crate) action: String,
    pub(crate) patient: Option<String>,
    pub(crate) document: Option<String>,
    pub(crate) detail: String,
    pub(crate) prev: String,
    pub(crate) hash: String,
}

impl Row {
    fn computed_hash(&self, seq: u64) -> String {
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

    pub(crate) fn into_record(self) -> Result<AuditRecord, AuditError> {
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

/// Checks a chain fed to it row by row in `seq` order, against the signed heads exported
/// earlier ([`Checkpoints`]: the record a head names must have the head's hash), then against
/// the stored head ([`Verifier::finish`]); every problem is reported, not only the first.
pub(crate) struct Verifier<'a> {
    checkpoints: &'a Checkpoints,
    problems: Vec<String>,
    unlisted: u64,
    records: u64,
    expected_seq: u64,
    /// The hash the next record must link to; empty when unknown (after an unreadable row).
    expected_prev: String,
    last_seq: u64,
}

impl<'a> Verifier<'a> {
    /// A verifier that also checks the chain against `checkpoints`.
    pub(crate) fn new(checkpoints: &'a Checkpoints) -> Self {
        Self {
            checkpoints,
            problems: Vec::new(),
            unlisted: 0,
            records: 0,
            expected_seq: 1,
            expected_prev: GENESIS_PREV.to_owned(),
            last_seq: 0,
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else {
            self.unlisted += 1;
        }
    }

    /// The next row in the storage could not be read back (a column of the wrong type).
    pub(crate) fn unreadable(&mut self, error: impl std::fmt::Display) {
        self.records += 1;
        let n = self.records;
        self.problem(format!(
            "record #{n} in the log cannot be read ({error}): edited"
        ));
        // Its hash is unknown, so the next link cannot be checked either.
        self.expected_prev = String::new();
        self.expected_seq += 1;
    }

    /// The next row, in `seq` order.
    pub(crate) fn row(&mut self, row: Row) {
        self.records += 1;
        let Ok(seq) = u64::try_from(row.seq) else {
            self.problem(format!("record with negative seq {}: edited", row.seq));
            self.expected_prev = row.hash;
            return;
        };
        let mut gap = false;
        if seq != self.expected_seq {
            gap = true;
            if seq > self.expected_seq {
                let (from, to) = (self.expected_seq, seq - 1);
                self.problem(if from == to {
                    format!("record {from} is missing: deleted")
                } else {
                    format!("records {from} to {to} are missing: deleted")
                });
            } else {
                self.problem(format!("record {seq} is out of order: edited"));
            }
        }
        if !gap && !self.expected_prev.is_empty() && row.prev != self.expected_prev {
            self.problem(format!(
                "record {seq}: its link to record {} is broken: \
                 the record before it was deleted or rewritten",
                seq.saturating_sub(1)
            ));
        }
        if row.computed_hash(seq) != row.hash {
            self.problem(format!(
                "record {seq}: content does not match its hash: edited"
            ));
        }
        for p in self.checkpoints.check_record(seq, &row.hash) {
            self.problem(p);
        }
        self.expected_seq = seq.saturating_add(1);
        self.last_seq = seq;
        self.expected_prev = row.hash;
    }

    /// The report, given the stored head (`count`, `hash`), or `None` if the head row is
    /// missing or unreadable. The rows and the head must have been read in one snapshot.
    pub(crate) fn finish(mut self, stored_head: Option<(i64, String)>) -> VerifyReport {
        let head = if self.records == 0 {
            GENESIS_PREV.to_owned()
        } else {
            std::mem::take(&mut self.expected_prev)
        };
        let last_seq = self.last_seq;
        match stored_head {
            None => self.problem("the head row is missing or unreadable: edited".into()),
            Some((count, head_hash)) => {
                let count = u64::try_from(count).unwrap_or(u64::MAX);
                if count > last_seq {
                    self.problem(format!(
                        "the log ends at record {last_seq} but {count} were appended: \
                         records at the end were deleted"
                    ));
                } else if count < last_seq {
                    self.problem(format!(
                        "the log holds records up to {last_seq} but only {count} were appended: \
                         records were added outside the log"
                    ));
                } else if head_hash != head {
                    self.problem(format!(
                        "the last record's hash {head} differs from the head {head_hash}: \
                         the last record was rewritten"
                    ));
                }
            }
        }
        for p in self.checkpoints.finish(last_seq) {
            self.problem(p);
        }
        let mut problems = self.problems;
        if self.unlisted > 0 {
            problems.push(format!("... and {} more problems", self.unlisted));
        }
        let ok = problems.is_empty();
        let records = self.records;
        if ok {
            tracing::info!(records, head = %head, "audit log verified");
        } else {
            tracing::warn!(records, problems = problems.len(), "audit log is damaged");
        }
        VerifyReport {
            records,
            ok,
            problems,
            head,
            signed_heads: self.checkpoints.verified(),
        }
    }
}
