//! Orphans, the device's side (docs/protocol.md, "Incarnations"): a change of another device
//! that this device handed back to a restored server in a recovery, refused because the server
//! holds another change of its author under its numbers (`wire::FORKED_OTHER_DETAIL`), is taken
//! out of this device's documents (the change the server holds is then received in its place);
//! and a change of this device's own credential that the server kept for it
//! ([`ServerMessage::Orphans`]) has its records written again under the current incarnation,
//! as a taken-back change's are.

use std::collections::BTreeSet;

use automerge::{Change, ChangeHash};

use super::reincarnate::{load_rewrites, records_in, save_rewrites};
use super::take_out::{Again, Outcome, take_out};
use super::*;
use crate::model::{CareDocument, ChangeMessage};
use crate::protocol::wire::MAX_ORPHANS;

impl DeviceSession {
    /// Changes of other devices the server refused as forks of their author's history: taken
    /// out of their documents, with this device's pending changes built on them (whose records
    /// are written again once caught up). Returns those that could not be taken out (another
    /// acknowledged change built on them, or a forgotten document): quarantined as any refusal.
    pub(super) fn drop_forked_others<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        forked: Vec<(DocumentId, ChangeHash)>,
    ) -> Result<Vec<(DocumentId, ChangeHash)>, RepoError> {
        let taken = take_out(
            repo,
            forked,
            |family| {
                if family.building.iter().any(|h| !family.is_pending(h)) {
                    // An acknowledged change built on it: the server holds what it builds on,
                    // or refused it too; nothing is taken out.
                    return None;
                }
                // This device's pending changes built on it can never be stored as they are:
                // their records are written again (the forked change's own records are its
                // author's to write again, never this device's).
                Some(Again::each(family.building, false))
            },
            |_, _| Ok(()),
        )?;
        let mut left = Vec::new();
        let mut dropped_any = false;
        for t in taken.docs {
            match t.outcome {
                Outcome::Forgotten | Outcome::Left => {
                    left.extend(t.targets.into_iter().map(|h| (t.doc.clone(), h)));
                }
                Outcome::TakenOut { dropped, .. } => {
                    dropped_any |= !dropped.is_empty();
                    left.extend(
                        t.targets
                            .into_iter()
                            .filter(|h| !dropped.contains(h))
                            .map(|h| (t.doc.clone(), h)),
                    );
                }
            }
        }
        if dropped_any {
            tracing::warn!(
                "changes of another device fork what the server holds of their author: taken out, \
                 their author writes their records again"
            );
        }
        Ok(left)
    }

    /// `Orphans`: changes of this device's credential the server could not store (another
    /// installation of it wrote under their numbers). Their records are kept, durably, to be
    /// written again under the current incarnation once caught up; the server is told which.
    pub(super) fn on_orphans<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        docs: Vec<DocChanges>,
    ) -> Result<(), RepoError> {
        let total: usize = docs.iter().map(|d| d.changes.len()).sum();
        if total > MAX_ORPHANS {
            self.close(CloseReason::ProtocolViolation, "too many orphans");
            return Ok(());
        }
        // Only this device's own changes are its to write again (a signing device knows its id).
        let own = self.signer.as_ref().map(|s| s.device.clone());
        let taken = repo.grouped(|repo| {
            let mut list = load_rewrites(repo)?;
            let mut taken: Vec<[u8; 32]> = Vec::new();
            for d in &docs {
                for bytes in &d.changes {
                    let Ok(change) = admit::change(bytes) else {
                        continue;
                    };
                    let author = change
                        .message()
                        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
                        .map(|m| m.author.device);
                    if own.as_ref().is_some_and(|own| author.as_ref() != Some(own)) {
                        tracing::error!(doc = %d.doc, "an orphan of another device was sent here: ignored");
                        continue;
                    }
                    let hash = change.hash();
                    if list
                        .iter()
                        .any(|r| r.doc == d.doc && r.change == Some(hash))
                    {
                        taken.push(hash.0);
                        continue;
                    }
                    match orphan_records(repo, &d.doc, &change)? {
                        Orphaned::Records(r) => {
                            if !r.writes.is_empty() {
                                list.push(r);
                            }
                            taken.push(hash.0);
                        }
                        // Held here: this installation wrote it, and writes it again itself
                        // when the server refuses it as a fork.
                        Orphaned::Held => taken.push(hash.0),
                        // Not readable here (yet): left with the server.
                        Orphaned::Unreadable => {}
                    }
                }
            }
            save_rewrites(repo, &list)?;
            Ok(taken)
        })?;
        if !taken.is_empty() {
            self.send(&DeviceMessage::OrphansTaken { changes: taken });
        }
        if self.caught_up {
            self.rewrite_taken_back(repo)?;
        }
        Ok(())
    }
}

enum Orphaned {
    Records(super::reincarnate::Rewrite),
    Held,
    Unreadable,
}

/// The records an orphaned change wrote, read in a scratch document holding its history (as
/// this device holds it) and the change, since the device's document holds another change
/// under its numbers.
fn orphan_records<S: Store>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    change: &Change,
) -> Result<Orphaned, RepoError> {
    let d = match repo.get(doc) {
        Ok(d) => d,
        Err(RepoError::Forgotten { .. } | RepoError::Model(_)) => return Ok(Orphaned::Unreadable),
        Err(e) => return Err(e),
    };
    if d.has_change(&change.hash()) {
        return Ok(Orphaned::Held);
    }
    // Its history: every change its dependencies reach, all held here.
    let mut history: BTreeSet<ChangeHash> = BTreeSet::new();
    let mut todo: Vec<ChangeHash> = change.deps().to_vec();
    while let Some(h) = todo.pop() {
        if !history.insert(h) {
            continue;
        }
        let Some(c) = d.automerge_change(&h) else {
            return Ok(Orphaned::Unreadable);
        };
        todo.extend(c.deps().iter().copied());
    }
    let genesis = crate::model::genesis_hash(doc)?;
    let mut changes: Vec<Change> = d
        .changes_since(&[])
        .into_iter()
        .filter(|c| c.hash() != genesis && history.contains(&c.hash()))
        .collect();
    changes.push(change.clone());
    let mut scratch = CareDocument::new(doc.clone())?;
    match scratch.apply_changes(changes) {
        Ok(outcome) if outcome.refused.is_empty() => {}
        _ => return Ok(Orphaned::Unreadable),
    }
    Ok(match records_in(&scratch, doc, &change.hash()) {
        Some(mut r) => {
            r.original = None;
            Orphaned::Records(r)
        }
        None => Orphaned::Unreadable,
    })
}
