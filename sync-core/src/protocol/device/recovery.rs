//! The device's side of a recovery (version 3; see `protocol/server/recovery.rs`): the server
//! could not match the device's cursor to its feed, so the device reconciles what it holds,
//! patient by patient, in bounded chunks, uploads what the server lacks, takes what it lacks,
//! and only then adopts the cursor the server gave. Which patients are reconciled is kept
//! durably, keyed by the server's epoch, so a cut recovery resumes where it stopped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use super::{DeviceEvent, DeviceSession, PROOF_KEY, State};
use crate::error::{ModelError, RepoError};
use crate::ids::{DocumentId, PatientId};
use crate::model::admit;
use crate::protocol::wire::{
    CloseReason, Cursor, DeviceMessage, DocChanges, DocHeads, MAX_IN_FLIGHT, MAX_LIST,
    RECOVERY_CHUNK_DOCS,
};
use crate::repo::Repo;
use crate::store::{FeedProof, Store};

pub(super) const RECOVERY_KEY: &str = "sync.recovery";

/// A patient asked about this many times in one connection without settling is left as it is
/// (what the server refuses stays here; its author's own recovery brings it back).
const MAX_ATTEMPTS: u8 = 3;

/// What survives a cut: the recovery's cursor and the patients already reconciled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RecoveryState {
    pub cursor: Cursor,
    pub proof: FeedProof,
    pub done: BTreeSet<PatientId>,
}

/// A recovery under way on this connection.
#[derive(Debug, Default)]
pub(super) struct Recovering {
    state: Option<RecoveryState>,
    /// Patients still to ask about, with their documents.
    queue: VecDeque<(PatientId, Vec<DocumentId>)>,
    next_chunk: u32,
    /// Chunks sent and not yet answered.
    in_flight: BTreeMap<u32, Vec<(PatientId, Vec<DocumentId>)>>,
    attempts: BTreeMap<PatientId, u8>,
    /// Changes uploaded for the recovery and not yet acknowledged, by patient.
    outstanding: BTreeMap<PatientId, BTreeSet<(DocumentId, ChangeHash)>>,
    /// Patients that settled once their uploads are acknowledged (or are to be asked again).
    settle: BTreeMap<PatientId, (Vec<DocumentId>, bool)>,
    /// Documents where we did not hold all of the server's heads: asked again as if at the
    /// ones we hold (a state the server has), so that it sends all it has beyond them, even if
    /// it would not take everything we uploaded.
    claims: BTreeMap<DocumentId, Vec<ChangeHash>>,
}

impl Recovering {
    /// Whether `(doc, hash)` was uploaded for the recovery (and is still awaited).
    pub(super) fn is_item(&self, doc: &DocumentId, hash: &ChangeHash) -> bool {
        self.outstanding
            .get(doc.patient())
            .is_some_and(|s| s.contains(&(doc.clone(), *hash)))
    }
}

fn load<S: Store>(repo: &Repo<S>) -> Result<Option<RecoveryState>, RepoError> {
    Ok(match repo.store().meta(RECOVERY_KEY)? {
        Some(bytes) if !bytes.is_empty() => postcard::from_bytes(&bytes).ok(),
        _ => None,
    })
}

fn save<S: Store>(repo: &mut Repo<S>, state: Option<&RecoveryState>) -> Result<(), RepoError> {
    let bytes = match state {
        Some(s) => postcard::to_stdvec(s).unwrap_or_default(),
        None => Vec::new(),
    };
    repo.store_mut().set_meta(RECOVERY_KEY, &bytes)?;
    Ok(())
}

/// The patients a recovery cut on an earlier connection has not reconciled yet are those
/// outside this set (`None`: no recovery under way).
pub(super) fn reconciled<S: Store>(
    repo: &Repo<S>,
) -> Result<Option<BTreeSet<PatientId>>, RepoError> {
    Ok(load(repo)?.map(|s| s.done))
}

impl DeviceSession {
    /// The server cannot match our cursor to its feed: reconcile everything we hold (resuming
    /// a recovery of the same epoch that was cut), then go on from `cursor`.
    pub(super) fn on_recover<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        cursor: Cursor,
        proof: FeedProof,
    ) -> Result<(), RepoError> {
        let state = match load(repo)? {
            // Resumed: the first cursor of this epoch stays, so the feed after it still comes.
            Some(s) if s.cursor.epoch == cursor.epoch && s.cursor.position <= cursor.position => s,
            _ => RecoveryState {
                cursor,
                proof,
                done: BTreeSet::new(),
            },
        };
        save(repo, Some(&state))?;
        // Patients withdrawn and not yet forgotten too: the server was put back, and may have
        // lost changes of ours to them that it had acknowledged (and a catch-up proven). It
        // sends nothing of them, and names what it lacks of ours, so that those changes go
        // up and are refused `NotPermitted` (quarantined here, the user told) before the
        // patient is forgotten, instead of being forgotten with nobody told.
        let mut by_patient: BTreeMap<PatientId, Vec<DocumentId>> = BTreeMap::new();
        for doc in repo.document_ids()? {
            let p = doc.patient();
            if !state.done.contains(p) {
                by_patient.entry(p.clone()).or_default().push(doc);
            }
        }
        tracing::info!(
            patients = by_patient.len(),
            position = state.cursor.position,
            "the server does not hold the feed history this device saw: recovering"
        );
        self.recovering = Some(Recovering {
            state: Some(state),
            queue: by_patient.into_iter().collect(),
            ..Recovering::default()
        });
        self.pump_recovery(repo)
    }

    /// Sends heads chunks while the window allows; finishes when nothing is left.
    fn pump_recovery<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        let Some(mut rec) = self.recovering.take() else {
            return Ok(());
        };
        while self.state == State::Connected
            && rec.in_flight.len() < MAX_IN_FLIGHT
            && !rec.queue.is_empty()
        {
            let mut chunk: Vec<(PatientId, Vec<DocumentId>)> = Vec::new();
            let mut docs = Vec::new();
            while let Some((p, list)) = rec.queue.front() {
                if !docs.is_empty() && docs.len() + list.len() > RECOVERY_CHUNK_DOCS {
                    break;
                }
                if docs.len() + list.len() > MAX_LIST {
                    break;
                }
                for doc in list {
                    let heads = match rec.claims.remove(doc) {
                        Some(claim) => claim,
                        None => repo.get(doc)?.heads(),
                    };
                    let heads = heads.into_iter().map(|h| h.0).collect();
                    docs.push(DocHeads {
                        doc: doc.clone(),
                        heads,
                    });
                }
                chunk.push((p.clone(), list.clone()));
                rec.queue.pop_front();
            }
            if chunk.is_empty() {
                // One patient with more documents than a message may name: left as it is.
                rec.queue.pop_front();
                continue;
            }
            let number = rec.next_chunk;
            rec.next_chunk += 1;
            rec.in_flight.insert(number, chunk);
            self.send(&DeviceMessage::Heads {
                chunk: number,
                docs,
            });
        }
        self.recovering = Some(rec);
        self.finish_recovery(repo)
    }

    /// The server's answer to a chunk: store what we lacked, upload what it lacks.
    pub(super) fn on_reconcile<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        chunk: u32,
        docs: Vec<DocChanges>,
        lacks: Vec<DocHeads>,
        again: Vec<DocumentId>,
    ) -> Result<(), RepoError> {
        let Some(mut rec) = self.recovering.take() else {
            self.close(
                CloseReason::ProtocolViolation,
                "reconcile outside a recovery",
            );
            return Ok(());
        };
        let Some(patients) = rec.in_flight.remove(&chunk) else {
            self.close(
                CloseReason::ProtocolViolation,
                format!("reconcile of unknown chunk {chunk}"),
            );
            return Ok(());
        };
        let mut retry: BTreeSet<PatientId> = again.iter().map(|d| d.patient().clone()).collect();
        // What we lacked, stored in one transaction.
        let stored = repo.grouped(|repo| -> Result<Option<BTreeSet<PatientId>>, RepoError> {
            let mut unsettled = BTreeSet::new();
            for DocChanges { doc, changes, .. } in docs {
                let mut parsed = Vec::with_capacity(changes.len());
                for bytes in changes {
                    match admit::change(&bytes) {
                        Ok(c) => parsed.push(c),
                        Err(_) => return Ok(None),
                    }
                }
                let outcome = repo.apply_changes(&doc, parsed)?;
                for (hash, err) in outcome.refused {
                    if matches!(err, ModelError::MissingDependencies { .. }) {
                        unsettled.insert(doc.patient().clone());
                    } else {
                        self.events.push_back(DeviceEvent::IncomingRefused {
                            doc: doc.clone(),
                            change: hash,
                            detail: err.to_string(),
                        });
                    }
                }
                if !outcome.applied.is_empty() {
                    self.received_now += outcome.applied.len() as u64;
                    self.events
                        .push_back(DeviceEvent::DocumentUpdated { doc: doc.clone() });
                }
            }
            Ok(Some(unsettled))
        })?;
        let Some(unsettled) = stored else {
            self.recovering = Some(rec);
            self.close(
                CloseReason::Malformed,
                "a change in a reconcile does not decode",
            );
            return Ok(());
        };
        retry.extend(unsettled);
        // What the server lacks: everything beyond its heads that we hold. If we do not hold
        // all of them, what we send may include some it has (stored once) and we ask again.
        let mut uploads: Vec<(DocumentId, ChangeHash)> = Vec::new();
        for DocHeads { doc, heads } in lacks {
            let d = repo.get(&doc)?;
            let known: Vec<ChangeHash> = heads
                .iter()
                .map(|h| ChangeHash(*h))
                .filter(|h| d.has_change(h))
                .collect();
            for c in d.changes_since(&known) {
                uploads.push((doc.clone(), c.hash()));
            }
            if known.len() != heads.len() {
                retry.insert(doc.patient().clone());
                rec.claims.insert(doc, known);
            }
        }
        for item in &uploads {
            rec.outstanding
                .entry(item.0.patient().clone())
                .or_default()
                .insert(item.clone());
        }
        for (p, list) in patients {
            let again = retry.contains(&p);
            rec.settle.insert(p, (list, again));
        }
        self.recovering = Some(rec);
        // Uploaded through the normal path, first.
        let queued: BTreeSet<(DocumentId, ChangeHash)> = self.to_upload.iter().cloned().collect();
        for item in uploads.into_iter().rev() {
            if !queued.contains(&item) {
                self.to_upload.push_front(item);
            }
        }
        self.flush_uploads(repo)?;
        self.settle(repo)?;
        self.pump_recovery(repo)
    }

    /// An upload was acknowledged: these items of it were the recovery's.
    pub(super) fn recovery_uploaded<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        items: &[(DocumentId, ChangeHash)],
    ) -> Result<(), RepoError> {
        if let Some(rec) = self.recovering.as_mut() {
            for item in items {
                if let Some(set) = rec.outstanding.get_mut(item.0.patient()) {
                    set.remove(item);
                }
            }
            rec.outstanding.retain(|_, s| !s.is_empty());
        }
        self.settle(repo)?;
        self.pump_recovery(repo)
    }

    /// Patients whose answer came and whose uploads are acknowledged are done (durably), or
    /// asked about again (a bounded number of times).
    fn settle<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        let Some(mut rec) = self.recovering.take() else {
            return Ok(());
        };
        let ready: Vec<PatientId> = rec
            .settle
            .keys()
            .filter(|p| !rec.outstanding.contains_key(*p))
            .cloned()
            .collect();
        let mut changed = false;
        for p in ready {
            let Some((list, again)) = rec.settle.remove(&p) else {
                continue;
            };
            let attempts = rec.attempts.entry(p.clone()).or_default();
            *attempts += 1;
            if again && *attempts < MAX_ATTEMPTS {
                // Asked again with its documents as they are now (some may be new).
                let mut docs: BTreeSet<DocumentId> = list.into_iter().collect();
                docs.extend(
                    repo.document_ids()?
                        .into_iter()
                        .filter(|d| d.patient() == &p),
                );
                rec.queue.push_back((p, docs.into_iter().collect()));
                continue;
            }
            if again {
                tracing::warn!(patient = %p, "recovery left a patient unsettled: what the server refused stays on this device");
            }
            if let Some(state) = rec.state.as_mut() {
                state.done.insert(p);
                changed = true;
            }
        }
        if changed {
            save(repo, rec.state.as_ref())?;
        }
        self.recovering = Some(rec);
        Ok(())
    }

    /// Everything reconciled and acknowledged: adopt the recovery's cursor and tell the server.
    fn finish_recovery<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        let finished = self.recovering.as_ref().is_some_and(|r| {
            r.queue.is_empty()
                && r.in_flight.is_empty()
                && r.outstanding.is_empty()
                && r.settle.is_empty()
        });
        if !finished || self.state != State::Connected {
            return Ok(());
        }
        let Some(state) = self.recovering.take().and_then(|r| r.state) else {
            return Ok(());
        };
        self.sync.cursor = Some(state.cursor);
        self.sync.received.clear();
        self.sync.backfill.clear();
        repo.grouped(|repo| {
            self.save_state(repo)?;
            let proof = postcard::to_stdvec(&(state.cursor, state.proof)).unwrap_or_default();
            repo.store_mut().set_meta(PROOF_KEY, &proof)?;
            save(repo, None)
        })?;
        tracing::info!(patients = state.done.len(), "recovery done");
        self.send(&DeviceMessage::Recovered {
            cursor: state.cursor,
            patients: state.done.into_iter().take(MAX_LIST).collect(),
        });
        // Pending changes the server refused for lack of what it had lost go up again now.
        let pending: BTreeSet<(DocumentId, ChangeHash)> = repo.pending()?.into_iter().collect();
        let in_flight: BTreeSet<(DocumentId, ChangeHash)> =
            self.uploads.values().flatten().cloned().collect();
        self.sent
            .retain(|item| !pending.contains(item) || in_flight.contains(item));
        self.local_change(repo)
    }

    /// Whether a recovery is under way on this connection.
    pub(super) fn is_recovering(&self) -> bool {
        self.recovering.is_some()
    }
}
