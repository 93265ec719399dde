//! Recovery: a device whose cursor does not prove a history of this feed (the server was
//! restored from a backup, replaced, or its data directory copied back) reconciles what it
//! holds with the server, document by document, in bounded chunks, then goes on with the feed
//! from the head the recovery started at.
//!
//! The device sends the heads of every document it holds of some patients
//! ([`DeviceMessage::Heads`]); for each document the server answers with the changes the
//! device lacks when it knows every one of the device's heads, or with its own heads when it
//! does not (the device then uploads what lies beyond them, through the normal upload path:
//! validation, authorship, refusals in the `UploadAck`). Documents of those patients that the
//! device does not hold are sent whole. Nothing of a document the device may not read is sent;
//! what the device holds of one beyond the server is asked for (named by the device's own heads
//! the server holds), so that its changes the server lost are refused and quarantined, not kept
//! silently.
//! The device keeps durably which patients it has reconciled, so a cut recovery resumes.
//!
//! Bounded: a chunk holds at most [`RECOVERY_CHUNK_DOCS`] documents (a patient's documents go
//! together), an answer at most [`RECOVERY_ANSWER_BYTES`] of changes, and the audit gets one
//! disclosure record per patient and chunk that sent something, and one
//! [`ServerEvent::Recovered`] per recovery, never one record per document.

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use super::*;
use crate::protocol::wire::{DocHeads, MAX_HEADS, RECOVERY_ANSWER_BYTES};
use crate::store::FeedProof;

/// The feed head at which the server last moved to a new epoch because a device had seen more.
const DIVERGED_AT_KEY: &str = "feed.diverged_at";

/// A recovery under way on this connection.
#[derive(Debug, Clone, Default)]
pub(super) struct Recovery {
    /// The cursor the device was given ([`ServerMessage::Recover`]).
    cursor: u64,
    next_chunk: u32,
    /// The server's documents by patient, read once at the first chunk.
    server_docs: Option<BTreeMap<PatientId, Vec<DocumentId>>>,
    /// Counts for the audit record.
    pub(super) counts: RecoveryCounts,
}

/// What a recovery did, for its one audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryCounts {
    /// Chunks answered.
    pub chunks: u32,
    /// Documents compared.
    pub docs: u64,
    /// Changes sent to the device.
    pub sent: u64,
    /// Documents where the server lacked some of the device's changes.
    pub lacking: u64,
    /// Changes the device uploaded that were stored.
    pub received: u64,
    /// Changes the device uploaded that were refused.
    pub refused: u64,
}

/// What the server does with a device's cursor at its hello.
pub(super) enum CursorVerdict {
    /// A position of this feed (or none): the feed goes on from `start`.
    Feed,
    /// Not provably a position of this feed: recover (after moving to a new epoch if the
    /// device saw more of this feed than the server holds, or another history at a position
    /// it holds: the server went back in time without knowing).
    Recover,
}

/// The epoch a server moves to when it learns that its feed went back in time: derived from
/// what it knows (no randomness in the protocol), different for every history it could learn
/// it from.
fn diverged_epoch(
    old: &Epoch,
    head: u64,
    proof: &FeedProof,
    seen: &Cursor,
    seen_proof: Option<&FeedProof>,
) -> Epoch {
    let mut h = Sha256::new();
    h.update(b"nara-epoch\0");
    h.update(old);
    h.update(head.to_be_bytes());
    h.update(proof);
    h.update(seen.position.to_be_bytes());
    h.update(seen_proof.copied().unwrap_or([0xff; 32]));
    let digest: [u8; 32] = h.finalize().into();
    let mut epoch = [0u8; 16];
    epoch.copy_from_slice(&digest[..16]);
    epoch
}

impl ServerSession {
    /// Judges a version-3 device's cursor: normal when its epoch is this feed's, its position
    /// at or below the head, its proof the feed's running hash there and nothing it holds lies
    /// above the head. Otherwise it recovers, and if the device saw more (or another history)
    /// of this very epoch, the server moves to a new epoch first (audited once), so that every
    /// other device that saw the lost history recovers too.
    pub(super) fn judge_cursor<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        cursor: Option<Cursor>,
        received: &[(u64, u64)],
        proof: Option<FeedProof>,
        head: u64,
    ) -> Result<CursorVerdict, RepoError> {
        let Some(c) = cursor else {
            return Ok(CursorVerdict::Feed);
        };
        if c.epoch != self.epoch {
            // An epoch this feed does not have (restored under a new one, or another server).
            return Ok(CursorVerdict::Recover);
        }
        let above = c.position > head || received.iter().any(|&(_, b)| b > head);
        let stored = repo.store().feed_proof(c.position.min(head))?;
        let differs = proof.is_some_and(|p| p != stored);
        if !above && !differs {
            return Ok(if proof.is_some() {
                CursorVerdict::Feed
            } else {
                // A cursor kept before proofs existed: it cannot be checked, so it is reconciled
                // (once), without moving the epoch.
                CursorVerdict::Recover
            });
        }
        // Moved already at this very head: a device claiming more of the new epoch before anything
        // was stored in it cannot have seen it (and the meta value goes back with the data if the
        // server is put back again). It recovers, without moving the epoch again.
        let moved_at = head.to_be_bytes();
        if repo.store().meta(DIVERGED_AT_KEY)?.as_deref() == Some(&moved_at[..]) {
            tracing::warn!(device = %self.peer.author.device, position = c.position, head,
                "a device claims a history of an epoch the server moved to at its head");
            return Ok(CursorVerdict::Recover);
        }
        let head_proof = repo.store().feed_proof(head)?;
        let new = diverged_epoch(&self.epoch, head, &head_proof, &c, proof.as_ref());
        tracing::warn!(device = %self.peer.author.device, position = c.position, head,
            "a device saw a feed history this server does not hold: moving to a new epoch");
        repo.store_mut().set_epoch(new)?;
        repo.store_mut().set_meta(DIVERGED_AT_KEY, &moved_at)?;
        self.events.push_back(ServerEvent::FeedDiverged {
            old: self.epoch,
            new,
            head,
            seen: c.position,
        });
        self.epoch = new;
        Ok(CursorVerdict::Recover)
    }

    /// Starts a recovery: the device is told the cursor it will go on from.
    pub(super) fn start_recovery<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        head: u64,
    ) -> Result<(), RepoError> {
        let proof = repo.store().feed_proof(head)?;
        self.recovery = Some(Recovery {
            cursor: head,
            ..Recovery::default()
        });
        self.send(&ServerMessage::Recover {
            cursor: Cursor {
                epoch: self.epoch,
                position: head,
            },
            proof,
        })
    }

    /// One chunk of the device's heads: answer what it lacks, and where the server lacks
    /// something of its, say so.
    pub(super) fn on_heads<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        chunk: u32,
        docs: Vec<DocHeads>,
    ) -> Result<(), RepoError> {
        let Some(mut rec) = self.recovery.take() else {
            self.close(CloseReason::ProtocolViolation, "heads outside a recovery");
            return Ok(());
        };
        if chunk != rec.next_chunk {
            self.close(
                CloseReason::ProtocolViolation,
                format!("heads chunk {chunk} arrived, expected {}", rec.next_chunk),
            );
            return Ok(());
        }
        if docs.len() > MAX_LIST || docs.iter().any(|d| d.heads.len() > MAX_HEADS) {
            self.close(CloseReason::ProtocolViolation, "recovery chunk too large");
            return Ok(());
        }
        rec.next_chunk += 1;
        if rec.server_docs.is_none() {
            let mut by_patient: BTreeMap<PatientId, Vec<DocumentId>> = BTreeMap::new();
            for d in repo.document_ids()? {
                by_patient.entry(d.patient().clone()).or_default().push(d);
            }
            rec.server_docs = Some(by_patient);
        }
        // Every document of the chunk's patients: the device's heads, or none for a document
        // it does not hold.
        let mut wanted: BTreeMap<DocumentId, Option<Vec<ChangeHash>>> = BTreeMap::new();
        for d in docs {
            let heads = d.heads.into_iter().map(ChangeHash).collect();
            wanted.insert(d.doc, Some(heads));
        }
        let patients: BTreeSet<PatientId> = wanted.keys().map(|d| d.patient().clone()).collect();
        if let Some(server_docs) = &rec.server_docs {
            for p in &patients {
                for d in server_docs.get(p).into_iter().flatten() {
                    wanted.entry(d.clone()).or_insert(None);
                }
            }
        }
        let mut out: Vec<DocChanges> = Vec::new();
        let mut lacks = Vec::new();
        let mut again = Vec::new();
        let mut bytes = 0usize;
        let mut sent = 0usize;
        let mut per_patient: BTreeMap<PatientId, (usize, usize)> = BTreeMap::new();
        for (doc, heads) in wanted {
            if !policy.may_read(&self.peer, &doc) {
                // A document the device holds but may no longer read (its access ended while
                // this server, put back, lost what it knew): nothing of it is sent, but what
                // the device holds beyond this server is asked for, so that its own changes
                // the server lost come up and are refused `NotPermitted` (audited, quarantined
                // on the device, whose user is told) instead of staying unsaid on it. The heads
                // named are those of the device's own the server holds: nothing it did not know.
                if let Some(heads) = heads {
                    if let Some(held) = held_heads(repo, &doc, &heads)? {
                        rec.counts.lacking += 1;
                        lacks.push(DocHeads {
                            doc,
                            heads: held.into_iter().map(|h| h.0).collect(),
                        });
                    }
                }
                continue;
            }
            rec.counts.docs += 1;
            if sent > 0 && bytes >= RECOVERY_ANSWER_BYTES {
                again.push(doc);
                continue;
            }
            let d = match repo.get(&doc) {
                Ok(d) => d,
                Err(RepoError::Model(e)) => {
                    tracing::error!(%doc, error = %e, "a stored document does not load; skipping it");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let heads = heads.unwrap_or_default();
            if !heads.iter().all(|h| d.has_change(h)) {
                rec.counts.lacking += 1;
                lacks.push(DocHeads {
                    doc,
                    heads: d.heads().into_iter().map(|h| h.0).collect(),
                });
                continue;
            }
            let missing = d.changes_since(&heads);
            if missing.is_empty() {
                continue;
            }
            let mut changes = Vec::new();
            for c in missing {
                if sent > 0 && bytes >= RECOVERY_ANSWER_BYTES {
                    again.push(doc.clone());
                    break;
                }
                bytes += c.raw_bytes().len();
                sent += 1;
                changes.push(c.raw_bytes().to_vec());
            }
            let counted = per_patient.entry(doc.patient().clone()).or_default();
            counted.0 += 1;
            counted.1 += changes.len();
            out.push(DocChanges {
                doc,
                positions: Vec::new(),
                changes,
            });
        }
        // Disclosure is recorded durably before anything is sent.
        let before = self.disclosed.len();
        self.disclosed.extend(per_patient.keys().cloned());
        if self.disclosed.len() != before {
            self.save_disclosed(repo)?;
        }
        rec.counts.chunks += 1;
        rec.counts.sent += sent as u64;
        self.recovery = Some(rec);
        for (patient, (docs, changes)) in per_patient {
            self.events.push_back(ServerEvent::RecoveryDisclosed {
                patient,
                docs,
                changes,
            });
        }
        self.send(&ServerMessage::Reconcile {
            chunk,
            docs: out,
            lacks,
            again,
        })
    }

    /// The device reconciled everything it holds: the feed goes on from the recovery's cursor;
    /// the patients it reconciled are complete on it, the other readable ones are backfilled.
    pub(super) fn on_recovered<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        cursor: Cursor,
        patients: Vec<PatientId>,
    ) -> Result<(), RepoError> {
        let Some(rec) = self.recovery.take() else {
            self.close(
                CloseReason::ProtocolViolation,
                "recovered outside a recovery",
            );
            return Ok(());
        };
        if patients.len() > MAX_LIST {
            self.close(CloseReason::ProtocolViolation, "list too long");
            return Ok(());
        }
        // The cursor of this recovery, or of an earlier one of the same epoch that was cut.
        if cursor.epoch != self.epoch || cursor.position > rec.cursor {
            self.close(
                CloseReason::ProtocolViolation,
                "recovered at a cursor this recovery did not give",
            );
            return Ok(());
        }
        let readable: BTreeSet<PatientId> =
            policy.readable_patients(&self.peer).into_iter().collect();
        self.complete = patients
            .into_iter()
            .filter(|p| readable.contains(p))
            .collect();
        self.complete_at = self
            .complete
            .iter()
            .map(|p| (p.clone(), cursor.position))
            .collect();
        self.save_complete(repo)?;
        self.events
            .push_back(ServerEvent::Recovered { counts: rec.counts });
        self.scanned_to = cursor.position;
        self.queue_backfills(repo, policy, &BTreeMap::new())?;
        self.scan(repo, policy, &[])?;
        self.pump(repo, policy)
    }

    /// Counts an upload's outcome into the recovery under way, if any.
    pub(super) fn count_recovery_upload(&mut self, from_event: usize) {
        let Some(rec) = self.recovery.as_mut() else {
            return;
        };
        for e in self.events.iter().skip(from_event) {
            match e {
                ServerEvent::Accepted { changes, .. } => {
                    rec.counts.received += changes.len() as u64
                }
                ServerEvent::Refused { .. } => rec.counts.refused += 1,
                _ => {}
            }
        }
    }
}

/// Of the device's `heads` of `doc`, those the server holds, if it lacks any of them (`None`
/// when it holds them all, or the document does not load).
fn held_heads<S: Store>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    heads: &[ChangeHash],
) -> Result<Option<Vec<ChangeHash>>, RepoError> {
    let d = match repo.get(doc) {
        Ok(d) => d,
        Err(RepoError::Model(e)) => {
            tracing::error!(%doc, error = %e, "a stored document does not load; skipping it");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let held: Vec<ChangeHash> = heads.iter().filter(|h| d.has_change(h)).copied().collect();
    Ok((held.len() != heads.len()).then_some(held))
}
