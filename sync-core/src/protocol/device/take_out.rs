//! Taking changes out of this device's documents (docs/protocol.md, "Incarnations" and "Forks
//! withdrawn from relays"): changes the server refused as forks, with the changes built on
//! them, dropped from their documents in one group, the records of those whose records are
//! written again kept in the rewrite list. Each caller (`reincarnate.rs`, `orphans.rs`,
//! `withdrawn.rs`) brings its own rule: whether a document's changes may be taken out, and
//! whose records are written again.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Change, ChangeHash};

use super::reincarnate::{load_rewrites, records_of, save_rewrites};
use super::*;
use crate::model::ChangeMessage;

/// One document's changes to take out, as a rule sees them.
pub(super) struct Family<'a> {
    pub(super) doc: &'a DocumentId,
    /// The changes asked to be taken out (as asked: in order, not deduplicated).
    pub(super) targets: &'a [ChangeHash],
    /// The document's changes built on them, in causal order: they go with them.
    pub(super) building: &'a [ChangeHash],
    all: &'a [Change],
    pending: &'a BTreeSet<(DocumentId, ChangeHash)>,
}

impl Family<'_> {
    /// Whether `hash` of this document is still to be uploaded from this store.
    pub(super) fn is_pending(&self, hash: &ChangeHash) -> bool {
        self.pending.contains(&(self.doc.clone(), *hash))
    }

    /// The device that wrote `hash`, as its change message says.
    pub(super) fn author_of(&self, hash: &ChangeHash) -> Option<DeviceId> {
        self.all
            .iter()
            .find(|c| c.hash() == *hash)
            .and_then(|c| c.message())
            .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
            .map(|m| m.author.device)
    }
}

/// A change whose records are written again once it is taken out.
pub(super) struct Again {
    pub(super) change: ChangeHash,
    /// Whether the change itself may still go up as it was (sent again where it fits); if
    /// not, only its records can.
    pub(super) original_fits: bool,
}

impl Again {
    /// Each of `changes`, alike.
    pub(super) fn each<'a>(
        changes: impl IntoIterator<Item = &'a ChangeHash>,
        original_fits: bool,
    ) -> Vec<Again> {
        changes
            .into_iter()
            .map(|h| Again {
                change: *h,
                original_fits,
            })
            .collect()
    }
}

/// What became of one document's changes.
pub(super) enum Outcome {
    /// The document is forgotten here: nothing of it is held.
    Forgotten,
    /// The rule left the changes where they are.
    Left,
    /// Taken out: `asked` (the targets and the changes built on them) and what of it was
    /// `dropped` (a change another kept change builds on stays).
    TakenOut {
        asked: BTreeSet<ChangeHash>,
        dropped: BTreeSet<ChangeHash>,
    },
}

/// One document's targets and what became of them.
pub(super) struct Taken {
    pub(super) doc: DocumentId,
    pub(super) targets: Vec<ChangeHash>,
    pub(super) outcome: Outcome,
}

/// What [`take_out`] did.
pub(super) struct TakenOut {
    /// Per document, in the documents' order.
    pub(super) docs: Vec<Taken>,
    /// How many records were added to the rewrite list.
    pub(super) records: usize,
    /// This store's pending changes when it began.
    pub(super) pending: BTreeSet<(DocumentId, ChangeHash)>,
}

impl TakenOut {
    /// How many changes were dropped from their documents.
    pub(super) fn dropped(&self) -> usize {
        self.docs
            .iter()
            .map(|t| match &t.outcome {
                Outcome::TakenOut { dropped, .. } => dropped.len(),
                Outcome::Forgotten | Outcome::Left => 0,
            })
            .sum()
    }
}

/// Takes `targets` out of their documents with every change built on them, in one group:
/// per document, `rule` says whether they may be taken out (`None`: left where they are) and
/// whose records are written again; those records join the rewrite list when their change
/// was dropped. `then` runs last in the same group, with what became of each document. With
/// no targets, nothing is read or written.
pub(super) fn take_out<S: Store>(
    repo: &mut Repo<S>,
    targets: Vec<(DocumentId, ChangeHash)>,
    rule: impl Fn(&Family<'_>) -> Option<Vec<Again>>,
    then: impl FnOnce(&mut Repo<S>, &[Taken]) -> Result<(), RepoError>,
) -> Result<TakenOut, RepoError> {
    if targets.is_empty() {
        return Ok(TakenOut {
            docs: Vec::new(),
            records: 0,
            pending: BTreeSet::new(),
        });
    }
    let pending: BTreeSet<(DocumentId, ChangeHash)> = repo.pending()?.into_iter().collect();
    let mut by_doc: BTreeMap<DocumentId, Vec<ChangeHash>> = BTreeMap::new();
    for (doc, hash) in targets {
        by_doc.entry(doc).or_default().push(hash);
    }
    let (docs, records) = repo.grouped(|repo| {
        let mut list = load_rewrites(repo)?;
        let mut records = 0usize;
        let mut docs = Vec::with_capacity(by_doc.len());
        for (doc, targets) in by_doc {
            let all = match repo.get(&doc) {
                Ok(d) => d.changes_since(&[]),
                Err(RepoError::Forgotten { .. }) => {
                    docs.push(Taken {
                        doc,
                        targets,
                        outcome: Outcome::Forgotten,
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Every change built on a target goes with it (in causal order, so one pass finds
            // them all): the server can hold none of them.
            let mut asked: BTreeSet<ChangeHash> = targets.iter().copied().collect();
            let mut building = Vec::new();
            for c in &all {
                if !asked.contains(&c.hash()) && c.deps().iter().any(|d| asked.contains(d)) {
                    asked.insert(c.hash());
                    building.push(c.hash());
                }
            }
            let family = Family {
                doc: &doc,
                targets: &targets,
                building: &building,
                all: &all,
                pending: &pending,
            };
            let Some(again) = rule(&family) else {
                docs.push(Taken {
                    doc,
                    targets,
                    outcome: Outcome::Left,
                });
                continue;
            };
            let mut found = Vec::new();
            for a in again {
                if let Some(mut r) = records_of(repo, &doc, &a.change)? {
                    if !a.original_fits {
                        r.original = None;
                    }
                    found.push((a.change, r));
                }
            }
            let dropped = repo.drop_changes(&doc, &asked)?;
            for (hash, r) in found {
                if dropped.contains(&hash) && !r.writes.is_empty() {
                    records += r.writes.len();
                    list.push(r);
                }
            }
            docs.push(Taken {
                doc,
                targets,
                outcome: Outcome::TakenOut { asked, dropped },
            });
        }
        save_rewrites(repo, &list)?;
        then(repo, &docs)?;
        Ok((docs, records))
    })?;
    Ok(TakenOut {
        docs,
        records,
        pending,
    })
}
