//! Forks withdrawn from a relay (docs/protocol.md, "Forks withdrawn from relays"): another
//! device's change that this device handed back in a recovery, refused because the server holds
//! another change under its actor's sequence number (two installations of one incarnation wrote
//! it, and the server, put back, kept the other). No replica can hold both, so the change is
//! taken out of this device's documents with every change built on it; the records of this
//! device's own among those are written again under its current incarnation once caught up (as
//! after a reincarnation), and the others' are their authors' to write again.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ChangeHash;

use super::reincarnate::{load_rewrites, records_of, save_rewrites};
use super::*;
use crate::model::ChangeMessage;

impl DeviceSession {
    /// Takes `forks` (other devices' changes the server refused as forks of their actor) out
    /// of their documents with every change built on them. Returns how many changes were
    /// withdrawn.
    pub(super) fn withdraw_forks<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        forks: Vec<(DocumentId, ChangeHash)>,
    ) -> Result<usize, RepoError> {
        if forks.is_empty() {
            return Ok(0);
        }
        let own = self.signer.as_ref().map(|s| s.device.clone());
        let pending: BTreeSet<(DocumentId, ChangeHash)> = repo.pending()?.into_iter().collect();
        let mut by_doc: BTreeMap<DocumentId, BTreeSet<ChangeHash>> = BTreeMap::new();
        for (doc, hash) in forks {
            by_doc.entry(doc).or_default().insert(hash);
        }
        let (withdrawn, rewritten) = repo.grouped(|repo| {
            let mut list = load_rewrites(repo)?;
            let mut quarantine = Self::quarantined(repo)?;
            let quarantined_before = quarantine.len();
            let mut withdrawn = 0usize;
            let mut rewritten = 0usize;
            for (doc, mut set) in by_doc {
                let all = match repo.get(&doc) {
                    Ok(d) => d.changes_since(&[]),
                    // A person forgotten meanwhile: nothing of theirs is held.
                    Err(RepoError::Forgotten { .. }) => continue,
                    Err(e) => return Err(e),
                };
                // Every change built on a withdrawn one goes with it (in causal order, so one
                // pass finds them all): the server can hold none of them.
                let mut building = Vec::new();
                for c in &all {
                    if !set.contains(&c.hash()) && c.deps().iter().any(|d| set.contains(d)) {
                        set.insert(c.hash());
                        building.push(c.hash());
                    }
                }
                // This device's own among them: their records are written again.
                let mut found = Vec::new();
                for hash in &building {
                    let author = all
                        .iter()
                        .find(|c| c.hash() == *hash)
                        .and_then(|c| c.message())
                        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
                        .map(|m| m.author.device);
                    let mine =
                        pending.contains(&(doc.clone(), *hash)) || (own.is_some() && author == own);
                    if mine && let Some(mut r) = records_of(repo, &doc, hash)? {
                        // It builds on a change no replica will hold: it cannot go up as it was.
                        r.original = None;
                        found.push((*hash, r));
                    }
                }
                let dropped = repo.drop_changes(&doc, &set)?;
                withdrawn += dropped.len();
                for (hash, r) in found {
                    if dropped.contains(&hash) && !r.writes.is_empty() {
                        rewritten += r.writes.len();
                        list.push(r);
                    }
                }
                // A withdrawn change is no longer held: an earlier quarantine of it is stale.
                quarantine.retain(|q| q.doc != doc || !dropped.contains(&q.change));
            }
            save_rewrites(repo, &list)?;
            if quarantine.len() != quarantined_before {
                let bytes = serde_json::to_vec(&quarantine).unwrap_or_default();
                repo.store_mut().set_meta(QUARANTINE_KEY, &bytes)?;
            }
            Ok((withdrawn, rewritten))
        })?;
        if withdrawn > 0 {
            tracing::warn!(
                changes = withdrawn,
                records = rewritten,
                "changes of other devices fork what the server holds of their actor: withdrawn"
            );
        }
        if rewritten > 0 && self.caught_up {
            self.rewrite_taken_back(repo)?;
        }
        Ok(withdrawn)
    }
}
