//! Foreign changes into a [`Repo`]: validated against the document as stored, appended in a
//! transaction that checks no other writer stored a change of it meanwhile, validated again if
//! one did (see the module comment of `repo.rs`).

use automerge::{Change, ChangeHash};

use super::{APPLY_ATTEMPTS, GROUP_APPLY_ATTEMPTS, REFRESH_SCAN, Repo, entry_record};
use crate::error::RepoError;
use crate::ids::DocumentId;
use crate::model::ApplyOutcome;
use crate::store::{Origin, Store};

impl<S: Store> Repo<S> {
    /// Validates and applies foreign changes, then stores those applied. Refused changes are
    /// reported in the outcome and never stored. Validated against the document as stored
    /// (see [`Repo::refresh`]); if another writer stores a change of it between validation and
    /// append, nothing is stored and the changes are validated again, against the document
    /// with that change ([`RepoError::Raced`] if that keeps happening). Inside
    /// [`Repo::grouped`] it is validated again once only (a group stays short): the raced
    /// append was a group inside the open one, which the store rolls back alone (a
    /// savepoint), so the rest of the open group still commits. (On SQLite a group holds the
    /// one write lock from its start: nothing races inside it.)
    pub fn apply_changes(
        &mut self,
        id: &DocumentId,
        changes: Vec<Change>,
    ) -> Result<ApplyOutcome, RepoError> {
        self.apply_changes_from(id, changes, Relayed::No)
    }

    /// [`Repo::apply_changes`] for changes a server relayed to this device: checked the same,
    /// except that a batch Automerge took is not read back from it again
    /// ([`crate::model::CareDocument::apply_relayed_changes`]: the server read each change back when it took
    /// it from its writer).
    pub fn apply_relayed_changes(
        &mut self,
        id: &DocumentId,
        changes: Vec<Change>,
    ) -> Result<ApplyOutcome, RepoError> {
        self.apply_changes_from(id, changes, Relayed::Yes)
    }

    fn apply_changes_from(
        &mut self,
        id: &DocumentId,
        changes: Vec<Change>,
        relayed: Relayed,
    ) -> Result<ApplyOutcome, RepoError> {
        let attempts = if self.group_depth == 0 {
            APPLY_ATTEMPTS
        } else {
            GROUP_APPLY_ATTEMPTS
        };
        let mut attempt = 1;
        loop {
            match self.apply_once(id, changes.clone(), relayed) {
                Err(RepoError::Raced { .. }) if attempt < attempts => {
                    tracing::info!(%id, attempt, "another writer stored a change of the document meanwhile: validating again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn apply_once(
        &mut self,
        id: &DocumentId,
        changes: Vec<Change>,
        relayed: Relayed,
    ) -> Result<ApplyOutcome, RepoError> {
        self.refresh()?;
        let validated_at = self.seen;
        let entry = self.cached_entry(id)?;
        let applied = match relayed {
            Relayed::No => entry.doc.apply_changes(changes),
            Relayed::Yes => entry.doc.apply_relayed_changes(changes),
        };
        let outcome = match applied {
            Ok(o) => o,
            Err(e) => {
                // Memory may hold changes that were never stored.
                self.loaded.remove(id);
                return Err(e.into());
            }
        };
        // Automerge failed on a change: the validated changes are stored below, and the copy in
        // memory is dropped, to be loaded again from the store.
        let poisoned = entry.doc.is_poisoned();
        if !outcome.applied.is_empty() {
            let rows: Vec<(ChangeHash, &[u8])> = outcome
                .applied
                .iter()
                .map(|c| (c.hash(), c.raw_bytes()))
                .collect();
            let written = self.write_unraced(id, validated_at, &rows, |store| {
                store.append(id, &rows, Origin::Remote)
            });
            match written {
                // Only this append since the refresh: the next refresh need not read it back
                // (past 1,024 entries it would have dropped every cached document, so that
                // one large upload made every other device's documents load again).
                Ok(Some(last)) => self.seen = self.seen.max(last),
                Ok(None) => {}
                Err(e) => {
                    self.loaded.remove(id);
                    return Err(e);
                }
            }
            let sizes: Vec<(ChangeHash, usize)> = rows.iter().map(|(h, b)| (*h, b.len())).collect();
            entry_record(&mut self.loaded, id, &sizes);
            self.recent.remember(&outcome.applied);
        }
        if poisoned {
            self.loaded.remove(id);
        }
        Ok(outcome)
    }

    /// Runs `write` (an append of validated foreign changes `ours`, or a snapshot of the
    /// cached copy) in one store transaction that, after it (so, on a database, under the
    /// feed's lock an append takes, or the document's row lock a snapshot takes, both held to
    /// commit), checks that the store holds no change of `id` stored after `validated_at`
    /// that the cached copy lacks. If it does, another writer raced this one: nothing is
    /// written ([`RepoError::Raced`]). Otherwise `Some(position)` if the feed after
    /// `validated_at` lists only `ours`, up to that position.
    pub(super) fn write_unraced(
        &mut self,
        id: &DocumentId,
        validated_at: u64,
        ours: &[(ChangeHash, &[u8])],
        write: impl FnOnce(&mut S) -> Result<(), crate::error::StoreError>,
    ) -> Result<Option<u64>, RepoError> {
        self.store.begin_group()?;
        let checked = write(&mut self.store)
            .map_err(RepoError::from)
            .and_then(|()| self.raced(id, validated_at, ours));
        match checked {
            Ok(Race::No { only_ours }) => {
                self.store.commit_group()?;
                Ok(only_ours)
            }
            Ok(Race::Yes) => {
                self.store.rollback_group();
                Err(RepoError::Raced { doc: id.clone() })
            }
            Err(e) => {
                self.store.rollback_group();
                Err(e)
            }
        }
    }

    /// Whether the store's feed after `after` lists a change of `id` that its cached copy
    /// lacks, other than those just appended (`ours`: a copy poisoned by one of them may lack
    /// them), or more entries of other writers than a bounded read covers (counted as a race).
    /// The read covers `ours` on top of that bound: the feed after `after` holds them too, and
    /// an append of more than [`REFRESH_SCAN`] changes used to count as raced by itself, so
    /// that it could never be stored (and, inside a group on SQLite, took every step of the
    /// group down with it).
    fn raced(
        &self,
        id: &DocumentId,
        after: u64,
        ours: &[(ChangeHash, &[u8])],
    ) -> Result<Race, RepoError> {
        let Some(loaded) = self.loaded.get(id) else {
            return Ok(Race::Yes);
        };
        let scan = REFRESH_SCAN.saturating_add(ours.len());
        let entries = self.store.feed_after(after, scan)?;
        if entries.len() == scan {
            return Ok(Race::Yes);
        }
        let ours: std::collections::HashSet<ChangeHash> = ours.iter().map(|(h, _)| *h).collect();
        let raced = entries
            .iter()
            .any(|e| e.doc == *id && !ours.contains(&e.hash) && !loaded.doc.has_change(&e.hash));
        if raced {
            return Ok(Race::Yes);
        }
        let only_ours = entries
            .iter()
            .all(|e| e.doc == *id && ours.contains(&e.hash));
        Ok(Race::No {
            only_ours: only_ours.then(|| entries.last().map(|e| e.seq)).flatten(),
        })
    }
}

/// Whether changes come from a server that relayed them (`Repo::apply_relayed_changes`).
#[derive(Clone, Copy)]
enum Relayed {
    No,
    Yes,
}

/// What [`Repo::raced`] found.
enum Race {
    Yes,
    /// `only_ours`: the feed after the validation lists only the write's own changes, up to
    /// that position.
    No {
        only_ours: Option<u64>,
    },
}
