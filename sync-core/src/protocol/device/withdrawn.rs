//! Forks withdrawn from a relay (docs/protocol.md, "Forks withdrawn from relays"): another
//! device's change that this device handed back in a recovery, refused because the server holds
//! another change under its actor's sequence number (two installations of one incarnation wrote
//! it, and the server, put back, kept the other). No replica can hold both, so the change is
//! taken out of this device's documents with every change built on it; the records of this
//! device's own among those are written again under its current incarnation once caught up (as
//! after a reincarnation), and the others' are their authors' to write again.

use automerge::ChangeHash;

use super::take_out::{Again, Outcome, take_out};
use super::*;

impl DeviceSession {
    /// Takes `forks` (other devices' changes the server refused as forks of their actor) out
    /// of their documents with every change built on them. Returns how many changes were
    /// withdrawn.
    pub(super) fn withdraw_forks<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        forks: Vec<(DocumentId, ChangeHash)>,
    ) -> Result<usize, RepoError> {
        let own = self.signer.as_ref().map(|s| s.device.clone());
        let taken = take_out(
            repo,
            forks,
            |family| {
                // This device's own among the changes built on them: their records are written
                // again (each builds on a change no replica will hold: it cannot go up as it
                // was).
                let mine = family.building.iter().filter(|h| {
                    family.is_pending(h) || (own.is_some() && family.author_of(h) == own)
                });
                Some(Again::each(mine, false))
            },
            |repo, docs| {
                // A withdrawn change is no longer held: an earlier quarantine of it is stale.
                let mut quarantine = Self::quarantined(repo)?;
                let quarantined_before = quarantine.len();
                for t in docs {
                    if let Outcome::TakenOut { dropped, .. } = &t.outcome {
                        quarantine.retain(|q| q.doc != t.doc || !dropped.contains(&q.change));
                    }
                }
                if quarantine.len() != quarantined_before {
                    let bytes = serde_json::to_vec(&quarantine).unwrap_or_default();
                    repo.store_mut().set_meta(QUARANTINE_KEY, &bytes)?;
                }
                Ok(())
            },
        )?;
        // (A person forgotten meanwhile: nothing of theirs is held, nothing withdrawn.)
        let withdrawn = taken.dropped();
        let rewritten = taken.records;
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
