//! Batches: the server's changes for the device, stored together with the new cursor (and
//! its feed proof) before the batch is acknowledged.

use super::flag_memo::FlagMemo;
use super::relaxed::batch_commits_relaxed;
use super::together::Part;

use super::*;

impl DeviceSession {
    /// Batches `first..=part.batch` (one, or several that arrived together and were merged:
    /// `together.rs`): their changes in order, the last one's cursor, remaining count and proof.
    pub(super) fn on_batch<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        first: u32,
        part: Part,
    ) -> Result<(), RepoError> {
        let Part {
            batch: last,
            docs,
            cursor,
            backfill,
            remaining,
            proof,
        } = part;
        let batch = first;
        if batch != self.next_batch || last < first {
            // Never move the cursor on a batch whose predecessor did not arrive.
            self.close(
                CloseReason::ProtocolViolation,
                format!("batch {batch} arrived, expected {}", self.next_batch),
            );
            return Ok(());
        }
        self.next_batch = last.saturating_add(1);
        if batch == 0 {
            // The server answered the hello with a batch: it was not put back (`purge.rs`).
            self.forget_told(repo)?;
        }
        // The batch's changes and the new cursor commit together (one fsync, not one per
        // document), and only then is the batch acknowledged. At the end of a catch-up the
        // changes the new cursor proves leave the unproven list in the same commit: it is
        // durable exactly when that cursor is. A batch of nothing new commits relaxed
        // (`relaxed.rs`); several together if each would (none first, none with anything).
        let relaxed = batch_commits_relaxed(batch, &docs, &backfill);
        // Indivisible: any error in it fails the whole run (no savepoint per document).
        let acknowledge = repo.indivisibly(relaxed, |repo| {
            let stored = self.store_batch(repo, docs, cursor, backfill, proof)?;
            if stored && remaining == 0 {
                // The cursor now lies after every change acknowledged before this batch.
                self.prove_unproven(repo)?;
            }
            Ok(stored)
        })?;
        if !acknowledge {
            return Ok(());
        }
        for batch in first..=last {
            self.send(&DeviceMessage::BatchAck { batch });
        }
        self.events.push_back(DeviceEvent::Progress {
            received: self.received_now,
            remaining,
        });
        if remaining == 0 && !self.caught_up {
            self.caught_up = true;
            self.events.push_back(DeviceEvent::CaughtUp);
            // Everything the server had is here: what a reincarnation took back and did not
            // come back is written again now.
            self.rewrite_taken_back(repo)?;
        }
        Ok(())
    }

    /// Stores a batch's changes and moves the cursor; `false` if the session closed instead
    /// (nothing is acknowledged then).
    pub(super) fn store_batch<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        docs: Vec<DocChanges>,
        cursor: Cursor,
        backfill: Vec<Backfill>,
        proof: Option<FeedProof>,
    ) -> Result<bool, RepoError> {
        // One apply per document: the server lists a document again each time its changes
        // alternate with another's in the feed (devices' uploads one after another), and each
        // apply costs work that grows with the document.
        let docs = by_document(docs);
        tracing::debug!(
            docs = docs.len(),
            changes = docs.iter().map(|d| d.changes.len()).sum::<usize>(),
            "storing a batch"
        );
        let mut touched_patients: BTreeSet<PatientId> = BTreeSet::new();
        let mut flags_before: BTreeMap<PatientId, BTreeSet<String>> = BTreeMap::new();
        // The store's documents, listed once for every chart of this batch (the batch's own
        // documents are added to the charts after it).
        let stored = if docs.iter().any(|dc| medication(dc.doc.kind())) {
            repo.document_ids()?
        } else {
            Vec::new()
        };
        let batch_docs: Vec<DocumentId> = docs.iter().map(|dc| dc.doc.clone()).collect();
        for dc in &docs {
            let p = dc.doc.patient();
            if medication(dc.doc.kind()) && !flags_before.contains_key(p) {
                // What the last batch found after its changes, unless the patient's documents
                // changed since (`flag_memo.rs`).
                let key = FlagMemo::key(repo, p, &stored, &[])?;
                let before = match self.flag_memo.get(p, &key) {
                    Some(flags) => flags.clone(),
                    None => open_flags(repo, p, &stored, &[])?,
                };
                flags_before.insert(p.clone(), before);
            }
        }
        for DocChanges {
            doc,
            changes,
            positions,
        } in docs
        {
            // Changes for a withdrawn patient mean access was given back before we forgot.
            self.sync.purge.remove(doc.patient());
            let mut parsed = Vec::with_capacity(changes.len());
            for bytes in changes {
                match admit::change(&bytes) {
                    Ok(c) => parsed.push(c),
                    Err(e) => {
                        self.close(CloseReason::Malformed, format!("change for {doc}: {e}"));
                        return Ok(false);
                    }
                }
            }
            self.received_now += parsed.len() as u64;
            let conflicts_before: BTreeSet<String> = repo
                .get(&doc)?
                .conflicts()
                .iter()
                .map(|c| c.register.to_string())
                .collect();
            // Each change's actor and sequence number, to tell a fork among those refused.
            let seqs: BTreeMap<ChangeHash, (automerge::ActorId, u64)> = parsed
                .iter()
                .map(|c| (c.hash(), (c.actor_id().clone(), c.seq())))
                .collect();
            let outcome = repo.apply_relayed_changes(&doc, parsed)?;
            if !outcome.refused.is_empty() && holds_fork(repo, &doc, &outcome.refused, &seqs)? {
                // The server holds a change under a sequence number of its actor that this
                // device holds another change under (two installations of one incarnation
                // wrote them, and the server was put back, or this one's was refused): no
                // replica can hold both. Reconciled at the next connection, where the one held
                // here goes up and the server says what becomes of it (withdrawn from a relay,
                // taken back by its writer, or its writer moved to a new incarnation); the
                // cursor does not move past the server's.
                self.ask_for_recovery(repo)?;
                self.close(
                    CloseReason::ProtocolViolation,
                    format!("a change for {doc} forks one held here"),
                );
                return Ok(false);
            }
            if outcome
                .refused
                .iter()
                .any(|(_, e)| matches!(e, crate::error::ModelError::MissingDependencies { .. }))
            {
                // The server sent changes whose history we lack at a cursor it took to hold
                // it (its store went back, with what it knew of this device's access): do not
                // move the cursor past them, and reconcile at the next connection.
                self.ask_for_recovery(repo)?;
                self.close(
                    CloseReason::ProtocolViolation,
                    format!("changes for {doc} arrived before their dependencies"),
                );
                return Ok(false);
            }
            for (hash, err) in outcome.refused {
                self.events.push_back(DeviceEvent::IncomingRefused {
                    doc: doc.clone(),
                    change: hash,
                    detail: err.to_string(),
                });
            }
            if !outcome.applied.is_empty() {
                touched_patients.insert(doc.patient().clone());
                self.events
                    .push_back(DeviceEvent::DocumentUpdated { doc: doc.clone() });
                for c in repo.get(&doc)?.conflicts() {
                    let register = c.register.to_string();
                    if !conflicts_before.contains(&register) {
                        self.events.push_back(DeviceEvent::ConflictRaised {
                            doc: doc.clone(),
                            register,
                        });
                    }
                }
            }
            // Position 0: part of a patient's history, not of the feed.
            self.sync
                .received
                .extend(positions.into_iter().filter(|&p| p != 0));
        }
        for (patient, before) in flags_before {
            let after = open_flags(repo, &patient, &stored, &batch_docs)?;
            for flag in after.difference(&before) {
                self.events.push_back(DeviceEvent::FlagRaised {
                    patient: patient.clone(),
                    flag: flag.clone(),
                });
            }
            let key = FlagMemo::key(repo, &patient, &stored, &batch_docs)?;
            self.flag_memo.put(patient, key, after);
        }
        // Advance the cursor, then make it durable before acknowledging.
        let position = match self.sync.cursor {
            Some(c) if c.epoch == cursor.epoch => c.position.max(cursor.position),
            _ => cursor.position,
        };
        self.sync.cursor = Some(Cursor {
            epoch: cursor.epoch,
            position,
        });
        // The proof goes with the cursor it was given for (a version-3 batch whose cursor is
        // the new one); otherwise the kept one no longer matches and the next hello has none.
        if let Some(proof) = proof.filter(|_| position == cursor.position) {
            let bytes = postcard::to_stdvec(&(cursor, proof)).unwrap_or_default();
            repo.store_mut().set_meta(PROOF_KEY, &bytes)?;
        }
        // Saturating: a server (hostile or broken) may name the last position there is.
        self.sync.received = self.sync.received.split_off(&position.saturating_add(1));
        // The signatures relayed for this batch are kept with its changes.
        signatures::keep_all(repo, std::mem::take(&mut self.relayed))?;
        for b in backfill {
            // A backfill means access was given back: do not forget the patient.
            self.sync.purge.remove(&b.patient);
            if b.progress >= b.until {
                // The whole history is back: the patient may be written again.
                repo.remember_patient(&b.patient)?;
                self.sync.backfill.remove(&b.patient);
            } else {
                self.sync.backfill.insert(b.patient, (b.progress, b.until));
            }
        }
        self.save_state(repo)?;
        Ok(true)
    }
}

/// The batch's changes gathered per document, in the order each document first appears.
fn by_document(docs: Vec<DocChanges>) -> Vec<DocChanges> {
    let mut out: Vec<DocChanges> = Vec::with_capacity(docs.len());
    let mut at: BTreeMap<DocumentId, usize> = BTreeMap::new();
    for dc in docs {
        match at.get(&dc.doc).and_then(|&i| out.get_mut(i)) {
            Some(first) => {
                first.changes.extend(dc.changes);
                first.positions.extend(dc.positions);
            }
            None => {
                at.insert(dc.doc.clone(), out.len());
                out.push(dc);
            }
        }
    }
    out
}

fn medication(kind: DocKind) -> bool {
    matches!(
        kind,
        DocKind::MedicationAdministration | DocKind::MedicationRequest
    )
}

/// The patient's open flags, from the chart of its documents among `stored` and `also`.
fn open_flags<S: Store>(
    repo: &mut Repo<S>,
    patient: &PatientId,
    stored: &[DocumentId],
    also: &[DocumentId],
) -> Result<BTreeSet<String>, RepoError> {
    Ok(repo
        .chart_among(patient, stored, also)?
        .flags()
        .into_iter()
        .filter(|f| f.open)
        .map(|f| f.id)
        .collect())
}

/// Whether a change among `refused` (of `doc`) has a sequence number of its actor that the
/// document holds another change under: a fork of that actor.
fn holds_fork<S: Store>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    refused: &[(ChangeHash, crate::error::ModelError)],
    seqs: &BTreeMap<ChangeHash, (automerge::ActorId, u64)>,
) -> Result<bool, RepoError> {
    for (hash, _) in refused {
        let Some((actor, seq)) = seqs.get(hash) else {
            continue;
        };
        if !repo.get(doc)?.has_change(hash) && repo.actor_seq(doc, actor)? >= *seq {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ids::Month;

    #[test]
    fn a_batch_is_applied_once_per_document() {
        let p = PatientId::new("p-1").unwrap();
        let month = Month::new(2026, 11).unwrap();
        let (j, a) = (
            DocumentId::journal(&p, month),
            DocumentId::administrations(&p, month),
        );
        let group = |doc: &DocumentId, n: u8| DocChanges {
            doc: doc.clone(),
            changes: vec![vec![n]],
            positions: vec![u64::from(n)],
        };
        let merged = by_document(vec![
            group(&j, 1),
            group(&a, 2),
            group(&j, 3),
            group(&a, 4),
            group(&j, 5),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!((&merged[0].doc, &merged[1].doc), (&j, &a));
        assert_eq!(merged[0].changes, vec![vec![1], vec![3], vec![5]]);
        assert_eq!(merged[0].positions, vec![1, 3, 5]);
        assert_eq!(merged[1].changes, vec![vec![2], vec![4]]);
    }
}
