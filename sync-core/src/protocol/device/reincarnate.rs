//! The device's side of incarnations (docs/protocol.md, "Incarnations"): the server found this
//! store behind what it holds from the store's incarnation (restored from a backup, or copied)
//! and issued a new one. The store takes it, takes back its unacknowledged changes (their
//! Automerge sequence numbers may be the server's already, with other content), starts its
//! catch-up over (so its own earlier changes come back), and once caught up writes the records
//! of those changes again under the new incarnation, unless the document already holds them
//! (they had reached the server and came back).

use std::collections::{BTreeMap, BTreeSet};

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};

use super::*;
use crate::ids::{Author, RecordId};
use crate::model::ChangeMessage;
use crate::model::records::{Event, Revision, TextKey};
use crate::repo::Incarnation;

const REWRITE_KEY: &str = "sync.rewrite";

/// One record of a taken-back change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Write {
    Revision(RecordId, Revision),
    Event(RecordId, Event),
    /// A text, with the value the store had left it with; the key as written in messages.
    Text(String, String),
}

/// The records of one taken-back change, to be written again as one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rewrite {
    doc: DocumentId,
    /// The original change's time.
    at: i64,
    author: Author,
    writes: Vec<Write>,
}

fn load_rewrites<S: Store>(repo: &Repo<S>) -> Result<Vec<Rewrite>, RepoError> {
    Ok(match repo.store().meta(REWRITE_KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Vec::new(),
    })
}

fn save_rewrites<S: Store>(repo: &mut Repo<S>, list: &[Rewrite]) -> Result<(), RepoError> {
    let bytes = serde_json::to_vec(list).unwrap_or_default();
    repo.store_mut().set_meta(REWRITE_KEY, &bytes)?;
    Ok(())
}

/// The records `hash` of `doc` wrote, as the document holds them now.
fn records_of<S: Store>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    hash: &ChangeHash,
) -> Result<Option<Rewrite>, RepoError> {
    let d = repo.get(doc)?;
    let Some(change) = d.automerge_change(hash) else {
        return Ok(None);
    };
    let Some(message) = change
        .message()
        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
    else {
        return Ok(None);
    };
    let mut writes = Vec::new();
    for w in &message.writes {
        let Some((map, key)) = w.split_once('/') else {
            continue;
        };
        let id = RecordId::new(key).ok();
        let write = match map {
            "revisions" => {
                id.and_then(|id| d.revision(&id).cloned().map(|r| Write::Revision(id, r)))
            }
            "events" => id.and_then(|id| d.event(&id).cloned().map(|e| Write::Event(id, e))),
            "texts" => key
                .parse::<TextKey>()
                .ok()
                .and_then(|k| d.text(&k))
                .map(|t| Write::Text(key.to_string(), t)),
            _ => None,
        };
        if let Some(write) = write {
            writes.push(write);
        }
    }
    Ok(Some(Rewrite {
        doc: doc.clone(),
        at: change.timestamp(),
        author: message.author.person(),
        writes,
    }))
}

impl DeviceSession {
    /// Patients with records taken back at a reincarnation and not yet written again.
    pub(super) fn patients_rewriting<S: Store>(
        repo: &Repo<S>,
    ) -> Result<BTreeSet<PatientId>, RepoError> {
        Ok(load_rewrites(repo)?
            .into_iter()
            .map(|r| r.doc.patient().clone())
            .collect())
    }

    /// Records of changes taken back at a reincarnation and not yet written again.
    pub fn rewrites_waiting<S: Store>(repo: &Repo<S>) -> Result<usize, RepoError> {
        Ok(load_rewrites(repo)?.iter().map(|r| r.writes.len()).sum())
    }

    /// `Reincarnate`: go on as incarnation `number`. Durably and at once: the new number,
    /// the unacknowledged changes taken out of the documents with their records kept to be
    /// written again, and the catch-up started over. Then a new hello on this connection.
    pub(super) fn on_reincarnate<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        number: u32,
        now: Timestamp,
    ) -> Result<(), RepoError> {
        let current = repo.incarnation()?;
        if !self.config.tell_clock || number <= current.number {
            self.close(
                CloseReason::ProtocolViolation,
                format!("reincarnate as {number}, this store is {}", current.number),
            );
            return Ok(());
        }
        let purge = self.sync.purge.clone();
        let taken = repo.grouped(|repo| {
            let mut by_doc: BTreeMap<DocumentId, Vec<ChangeHash>> = BTreeMap::new();
            for (doc, hash) in repo.pending()? {
                by_doc.entry(doc).or_default().push(hash);
            }
            let mut list = load_rewrites(repo)?;
            let before = list.len();
            for (doc, hashes) in by_doc {
                let mut found = Vec::new();
                for hash in &hashes {
                    if let Some(r) = records_of(repo, &doc, hash)? {
                        found.push((*hash, r));
                    }
                }
                let set: BTreeSet<ChangeHash> = hashes.into_iter().collect();
                let dropped = repo.drop_changes(&doc, &set)?;
                // A change another replica built on reached the server: it stays, and is
                // acknowledged as such; only what was taken out is written again.
                let kept: Vec<ChangeHash> = set.difference(&dropped).copied().collect();
                if !kept.is_empty() {
                    repo.mark_uploaded(&doc, &kept)?;
                }
                list.extend(
                    found
                        .into_iter()
                        .filter(|(h, r)| dropped.contains(h) && !r.writes.is_empty())
                        .map(|(_, r)| r),
                );
            }
            save_rewrites(repo, &list)?;
            repo.set_incarnation(&Incarnation {
                number,
                written: 0,
                last: None,
            })?;
            self.sync = SyncState {
                purge,
                ..SyncState::default()
            };
            self.save_state(repo)?;
            Ok(list[before..].iter().map(|r| r.writes.len()).sum::<usize>())
        })?;
        tracing::warn!(
            from = current.number,
            to = number,
            records = taken,
            "this store was behind the server: going on under a new incarnation"
        );
        self.events.push_back(DeviceEvent::Reincarnated {
            incarnation: number,
            records: taken,
        });
        self.connect(repo, now)
    }

    /// Caught up: writes again, under the current incarnation, the records taken back at a
    /// reincarnation that the documents do not hold (those that do came back from the
    /// server). All of them and the emptied list commit together.
    pub(super) fn rewrite_taken_back<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
    ) -> Result<(), RepoError> {
        let list = load_rewrites(repo)?;
        if list.is_empty() {
            return Ok(());
        }
        let written = repo.grouped(|repo| {
            let mut written = 0usize;
            for r in &list {
                let writes = still_missing(repo, r)?;
                if writes.is_empty() {
                    continue;
                }
                let count = writes.len();
                let result = repo.change(&r.doc, &r.author, Timestamp(r.at), |e| {
                    for w in writes {
                        match w {
                            Write::Revision(id, rev) => e.rewrite_revision(id, rev)?,
                            Write::Event(id, ev) => e.rewrite_event(id, ev)?,
                            Write::Text(key, text) => {
                                if let Ok(key) = key.parse::<TextKey>() {
                                    e.rewrite_text(&key, &text)?;
                                }
                            }
                        }
                    }
                    Ok(())
                });
                match result {
                    Ok(_) => written += count,
                    // Refused by the model as it stands now, or the person was withdrawn from
                    // this device and forgotten meanwhile: reported, never forced in, and not
                    // tried again (the list must not hold up every later catch-up).
                    Err(err @ (RepoError::Model(_) | RepoError::Forgotten { .. })) => {
                        tracing::error!(doc = %r.doc, error = %err,
                            "a record taken back at a reincarnation cannot be written again");
                        self.events.push_back(DeviceEvent::RewriteRefused {
                            doc: r.doc.clone(),
                            detail: err.to_string(),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            save_rewrites(repo, &[])?;
            Ok(written)
        })?;
        self.events
            .push_back(DeviceEvent::Rewritten { records: written });
        self.local_change(repo)
    }
}

/// The writes of `r` that the document does not hold yet. A record held with other content is
/// never written over (an id is written once); it is logged and left.
fn still_missing<S: Store>(repo: &mut Repo<S>, r: &Rewrite) -> Result<Vec<Write>, RepoError> {
    let d = repo.get(&r.doc)?;
    let mut out = Vec::new();
    for w in &r.writes {
        let held = match w {
            Write::Revision(id, rev) => d.revision(id).map(|h| h == rev),
            Write::Event(id, ev) => d.event(id).map(|h| h == ev),
            Write::Text(key, text) => match key.parse::<TextKey>() {
                Ok(k) => Some(d.text(&k).as_deref() == Some(text.as_str())),
                Err(_) => Some(true),
            },
        };
        match held {
            None => out.push(w.clone()),
            Some(true) => {}
            Some(false) if matches!(w, Write::Text(..)) => out.push(w.clone()),
            Some(false) => {
                tracing::error!(doc = %r.doc, "a record taken back is held with other content; not written again");
            }
        }
    }
    Ok(out)
}
