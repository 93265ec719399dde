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
use crate::model::records::{Event, Revision, TextKey};
use crate::model::{CareDocument, ChangeMessage};
use crate::protocol::wire::MAX_CHANGE_BYTES;
use crate::repo::Incarnation;

use super::take_out::{Again, Outcome, take_out};
use super::text_merge::merge_edit;

const REWRITE_KEY: &str = "sync.rewrite";

/// One record of a taken-back change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Write {
    Revision(RecordId, Revision),
    Event(RecordId, Event),
    /// A text, with the value the store had left it with; the key as written in messages.
    /// (Written by a change that created the text, or kept by an earlier build.)
    Text(String, String),
    /// A text edited by the change: its value just before the change and just after it, so
    /// that only this change's own edit is made again, merged into the text as it is then
    /// (others' edits made meanwhile are kept).
    TextEdit {
        key: String,
        before: String,
        after: String,
    },
}

/// The records of one taken-back change, to be written again as one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Rewrite {
    pub(super) doc: DocumentId,
    /// The original change's time.
    at: i64,
    author: Author,
    pub(super) writes: Vec<Write>,
    /// The original change (absent in lists kept by an earlier build): if it came back from
    /// the server, its text edits are held already.
    #[serde(default)]
    pub(super) change: Option<ChangeHash>,
    /// The original change's incarnation: its edit made again is under a later one.
    #[serde(default)]
    incarnation: u32,
    /// The original change's bytes, until the server has answered them: once caught up, the
    /// original goes up again as it was when it still fits the store's history, and only
    /// if the server refuses it are its records written again. (Another installation of the
    /// same incarnation, a copy, may hold this very change and upload it later: a record
    /// written again beside it would be a second write of one record id, refused.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) original: Option<Vec<u8>>,
}

pub(super) fn load_rewrites<S: Store>(repo: &Repo<S>) -> Result<Vec<Rewrite>, RepoError> {
    Ok(match repo.store().meta(REWRITE_KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Vec::new(),
    })
}

pub(super) fn save_rewrites<S: Store>(
    repo: &mut Repo<S>,
    list: &[Rewrite],
) -> Result<(), RepoError> {
    let bytes = serde_json::to_vec(list).unwrap_or_default();
    repo.store_mut().set_meta(REWRITE_KEY, &bytes)?;
    Ok(())
}

/// The records `hash` of `doc` wrote, as the document holds them now.
pub(super) fn records_of<S: Store>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    hash: &ChangeHash,
) -> Result<Option<Rewrite>, RepoError> {
    Ok(records_in(repo.get(doc)?, doc, hash))
}

/// The records `hash` wrote, as `d` (a document holding it) holds them.
pub(super) fn records_in(d: &CareDocument, doc: &DocumentId, hash: &ChangeHash) -> Option<Rewrite> {
    let change = d.automerge_change(hash)?;
    let message = change
        .message()
        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())?;
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
            "texts" => key.parse::<TextKey>().ok().and_then(|k| {
                // The change's own edit: the text just before it and just after it (the
                // text's value now would carry later changes' edits too, and is no base to
                // merge from). A text the change created has no value before it.
                match (d.text_at(&k, change.deps()), d.text_at(&k, &[*hash])) {
                    (Some(before), Some(after)) => Some(Write::TextEdit {
                        key: key.to_string(),
                        before,
                        after,
                    }),
                    _ => d.text(&k).map(|t| Write::Text(key.to_string(), t)),
                }
            }),
            _ => None,
        };
        if let Some(write) = write {
            writes.push(write);
        }
    }
    Some(Rewrite {
        doc: doc.clone(),
        at: change.timestamp(),
        author: message.author.person(),
        writes,
        original: Some(change.raw_bytes().to_vec()).filter(|b| b.len() <= MAX_CHANGE_BYTES),
        change: Some(*hash),
        incarnation: message.author.incarnation,
    })
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
        // Past the most a server issues, every later hello of this device would be refused:
        // a broken or hostile server's number is not taken.
        if !self.config.tell_clock
            || number <= current.number
            || number > crate::protocol::server::MAX_INCARNATION
        {
            self.close(
                CloseReason::ProtocolViolation,
                format!("reincarnate as {number}, this store is {}", current.number),
            );
            return Ok(());
        }
        let purge = self.sync.purge.clone();
        let taken = repo.grouped(|repo| {
            let mut by_doc: BTreeMap<DocumentId, Vec<ChangeHash>> = BTreeMap::new();
            // The unacknowledged changes, and the acknowledged ones no catch-up has proven yet:
            // a server that lost one of those may hold another installation's change under
            // its numbers now (the fork that brought this `Reincarnate`). One the server still
            // holds comes back in the catch-up, and is not written again.
            let mut seen = BTreeSet::new();
            for (doc, hash) in Self::unproven(repo)?.into_iter().chain(repo.pending()?) {
                if seen.insert((doc.clone(), hash)) {
                    by_doc.entry(doc).or_default().push(hash);
                }
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
            // The catch-up starts over as a recovery (a cursor of no feed, `LOST_FEED`), not
            // from nothing: the server that sent `Reincarnate` may have been put back to before
            // changes this store holds acknowledged and proven (its own under an earlier
            // incarnation, and others'), which only a recovery hands back; it also sends only
            // what this store lacks, where a catch-up from nothing sends every history again.
            self.sync = SyncState {
                cursor: Some(Cursor {
                    epoch: super::upload::LOST_FEED,
                    position: 0,
                }),
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
        if list.is_empty() || self.originals.is_some() {
            return Ok(());
        }
        if self.send_originals(repo)? {
            return Ok(());
        }
        // In the order they were first written (a change taken back as a fork, or kept for
        // this device as an orphan, joins the list after records written later that may
        // build on it: a revision superseding one of its revisions; seed 7865).
        let mut list = load_rewrites(repo)?;
        list.sort_by_key(|r| r.at);
        let written = repo.grouped(|repo| {
            let mut written = 0usize;
            // The list is in the order the changes were taken back, not always the order they
            // were written in (a change refused later as a fork is taken back after the
            // reincarnation's): a record may supersede one of a change further down. One the
            // model refuses is tried again after the others, as long as a round writes
            // something (at most as many rounds as changes).
            let mut left: Vec<&Rewrite> = list.iter().collect();
            let mut refused: Vec<(&Rewrite, RepoError)> = Vec::new();
            loop {
                let mut progress = false;
                for r in std::mem::take(&mut left) {
                    match rewrite_one(repo, r)? {
                        Ok(count) => {
                            written += count;
                            progress |= count > 0;
                        }
                        Err(err) => refused.push((r, err)),
                    }
                }
                if !progress || refused.is_empty() {
                    break;
                }
                left = std::mem::take(&mut refused)
                    .into_iter()
                    .map(|(r, _)| r)
                    .collect();
            }
            // Refused by the model as it stands now, or the person was withdrawn from this
            // device and forgotten meanwhile: reported, never forced in, and not tried again
            // (the list must not hold up every later catch-up).
            for (r, err) in refused {
                tracing::error!(doc = %r.doc, error = %err,
                    "a record taken back at a reincarnation cannot be written again");
                self.events.push_back(DeviceEvent::RewriteRefused {
                    doc: r.doc.clone(),
                    detail: err.to_string(),
                });
            }
            save_rewrites(repo, &[])?;
            Ok(written)
        })?;
        self.events
            .push_back(DeviceEvent::Rewritten { records: written });
        self.local_change(repo)
    }
}

impl DeviceSession {
    /// Sends again, as they were, the taken-back changes that still fit the store's history
    /// (their actor's next sequence number, their dependencies held or sent with them), in
    /// one upload without signatures; those that do not fit are written again. `true` if an
    /// upload went.
    fn send_originals<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<bool, RepoError> {
        let mut list = load_rewrites(repo)?;
        let mut docs: Vec<DocChanges> = Vec::new();
        let mut items: Vec<(DocumentId, ChangeHash)> = Vec::new();
        let mut sent: BTreeSet<ChangeHash> = BTreeSet::new();
        let mut next_seq: BTreeMap<(DocumentId, automerge::ActorId), u64> = BTreeMap::new();
        let mut bytes_sent = 0usize;
        let mut changed = false;
        for r in &mut list {
            let (Some(bytes), Some(hash)) = (&r.original, r.change) else {
                continue;
            };
            if items.len() >= MAX_BATCH_CHANGES || bytes_sent >= BATCH_BYTES {
                break;
            }
            let d = match repo.get(&r.doc) {
                Ok(d) => d,
                // Forgotten meanwhile: left to the rewrite, which reports it.
                Err(RepoError::Forgotten { .. }) => {
                    r.original = None;
                    changed = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if d.has_change(&hash) {
                // It came back: nothing to send, nothing to write again.
                continue;
            }
            let Ok(change) = admit::change(bytes) else {
                r.original = None;
                changed = true;
                continue;
            };
            let actor = change.actor_id().clone();
            let key = (r.doc.clone(), actor.clone());
            let expected = match next_seq.get(&key) {
                Some(n) => *n,
                None => {
                    d.automerge()
                        .get_changes_meta(&[])
                        .iter()
                        .filter(|m| *m.actor == actor)
                        .map(|m| m.seq)
                        .max()
                        .unwrap_or(0)
                        + 1
                }
            };
            // Another installation of its incarnation (a copy) wrote a change under its write
            // counter, which came back here: the server holds that one, and refuses this as a
            // fork. (Looked for in its own document.)
            let counter_taken = message_author(change.message()).is_some_and(|mine| {
                mine.write > 0
                    && d.changes_since(&[]).iter().any(|c| {
                        message_author(c.message()).is_some_and(|a| {
                            a.device == mine.device
                                && a.incarnation == mine.incarnation
                                && a.write == mine.write
                        })
                    })
            });
            let fits = !counter_taken
                && change.seq() == expected
                && change
                    .deps()
                    .iter()
                    .all(|dep| sent.contains(dep) || d.has_change(dep));
            if !fits {
                // Its numbers are another change's now: only its records can go on.
                r.original = None;
                changed = true;
                continue;
            }
            next_seq.insert(key, expected + 1);
            sent.insert(hash);
            bytes_sent += bytes.len();
            match docs.last_mut() {
                Some(last) if last.doc == r.doc => last.changes.push(bytes.clone()),
                _ => docs.push(DocChanges {
                    doc: r.doc.clone(),
                    changes: vec![bytes.clone()],
                    positions: Vec::new(),
                }),
            }
            items.push((r.doc.clone(), hash));
        }
        if changed {
            save_rewrites(repo, &list)?;
        }
        if items.is_empty() {
            return Ok(false);
        }
        let upload = self.next_upload;
        self.next_upload += 1;
        self.originals = Some((upload, items));
        self.send(&DeviceMessage::Upload { upload, docs });
        Ok(true)
    }

    /// Changes of an earlier incarnation of this store that the server refused as forks
    /// (another installation used their numbers, and the server lost them or never had them):
    /// taken out of their documents, their records to be written again under the current
    /// incarnation once caught up. Returns those that could not be taken back (a document
    /// with changes still pending, forgotten, or a change another change built on): they are
    /// quarantined as any refusal.
    pub(super) fn take_back_forked<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        forked: Vec<(DocumentId, ChangeHash)>,
    ) -> Result<Vec<(DocumentId, ChangeHash)>, RepoError> {
        // This store's pending changes built on a forked one can never be stored either: they
        // are taken back with it (their originals sent again where they fit, which they do
        // not; so their records are written again).
        let out = take_out(
            repo,
            forked,
            |family| {
                // This device's own changes built on a forked one (of any incarnation,
                // acknowledged ones too: the server cannot hold them, it holds another change
                // under what they depend on) are taken back with it, their records written
                // again; a change another device built on it is not this device's to take.
                let own_device = family.targets.first().and_then(|h| family.author_of(h));
                if family.building.iter().any(|h| {
                    !family.is_pending(h)
                        && (own_device.is_none() || family.author_of(h) != own_device)
                }) {
                    // Another's change built on it: nothing to take back.
                    return None;
                }
                let mut again = Again::each(family.targets, false);
                again.extend(Again::each(family.building, true));
                Some(again)
            },
            |_, _| Ok(()),
        )?;
        let taken = out.records;
        let mut left = Vec::new();
        for t in out.docs {
            match t.outcome {
                Outcome::Forgotten | Outcome::Left => {
                    left.extend(t.targets.into_iter().map(|h| (t.doc.clone(), h)));
                }
                Outcome::TakenOut { asked, dropped } => left.extend(
                    asked
                        .difference(&dropped)
                        .filter(|h| !out.pending.contains(&(t.doc.clone(), **h)))
                        .map(|h| (t.doc.clone(), *h)),
                ),
            }
        }
        if taken > 0 {
            tracing::warn!(
                records = taken,
                "changes of an earlier incarnation of this store fork what the server holds: \
                 their records are written again"
            );
            if self.caught_up {
                self.rewrite_taken_back(repo)?;
            }
        }
        Ok(left)
    }

    /// The server's answer to the originals sent again: one it took comes back with the feed
    /// and is done; one it refused has its records written again.
    pub(super) fn on_originals_ack<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        items: Vec<(DocumentId, ChangeHash)>,
        refused: &[wire::Refused],
    ) -> Result<(), RepoError> {
        let refused: BTreeSet<usize> = refused.iter().map(|r| r.index as usize).collect();
        let mut list = load_rewrites(repo)?;
        let mut taken = Vec::new();
        for (i, (doc, hash)) in items.iter().enumerate() {
            let this = |r: &Rewrite| r.doc == *doc && r.change == Some(*hash);
            let Some(at) = list.iter().position(this) else {
                continue;
            };
            if refused.contains(&i) {
                list[at].original = None;
                continue;
            }
            // The server holds it: it goes back into the document now (the feed would bring
            // it only while the person may be read), and waits there for a catch-up to prove
            // it, as any acknowledged change does.
            let Some(change) = list[at]
                .original
                .as_deref()
                .and_then(|b| admit::change(b).ok())
            else {
                list[at].original = None;
                continue;
            };
            let back = match repo.apply_changes(doc, vec![change]) {
                Ok(outcome) => outcome.refused.is_empty(),
                Err(RepoError::Forgotten { .. } | RepoError::Model(_)) => false,
                Err(e) => return Err(e),
            };
            if back {
                list.remove(at);
                taken.push((doc.clone(), *hash));
            } else {
                list[at].original = None;
            }
        }
        save_rewrites(repo, &list)?;
        self.acknowledged_unproven(repo, &taken)?;
        self.rewrite_taken_back(repo)
    }
}

/// Writes again what `r`'s records lack in its document, as one change: how many records it
/// wrote, or why the model (or a person forgotten meanwhile) refused them.
fn rewrite_one<S: Store>(
    repo: &mut Repo<S>,
    r: &Rewrite,
) -> Result<Result<usize, RepoError>, RepoError> {
    let writes = match still_missing(repo, r) {
        Ok(writes) => writes,
        Err(err @ RepoError::Forgotten { .. }) => return Ok(Err(err)),
        Err(e) => return Err(e),
    };
    if writes.is_empty() {
        return Ok(Ok(0));
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
                // `still_missing` turned each edit into the merged value.
                Write::TextEdit { .. } => {}
            }
        }
        Ok(())
    });
    match result {
        Ok(_) => Ok(Ok(count)),
        Err(err @ (RepoError::Model(_) | RepoError::Forgotten { .. })) => Ok(Err(err)),
        Err(e) => Err(e),
    }
}

/// The author in a change's message, if it has a readable one.
fn message_author(message: Option<&str>) -> Option<Author> {
    message
        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
        .map(|m| m.author)
}

/// The writes of `r` that the document does not hold yet. A record held with other content is
/// never written over (an id is written once); it is logged and left.
fn still_missing<S: Store>(repo: &mut Repo<S>, r: &Rewrite) -> Result<Vec<Write>, RepoError> {
    let d = repo.get(&r.doc)?;
    let came_back = r.change.is_some_and(|h| d.has_change(&h));
    // Texts this very change's edit was made again in already, by an earlier incarnation of
    // this store (a store put back to before that, which took the change back once more): a
    // change of the same device at the original change's time writing the text.
    // (Under a later incarnation than the original's, at the original's time.)
    let again: Vec<ChangeMessage> = d
        .changes_since(&[])
        .iter()
        .filter(|c| c.timestamp() == r.at)
        .filter_map(|c| {
            c.message()
                .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
        })
        .filter(|m| m.author.device == r.author.device && m.author.incarnation > r.incarnation)
        .collect();
    let made_again = |path: &str| again.iter().any(|m| m.writes.iter().any(|w| w == path));
    let mut out = Vec::new();
    for w in &r.writes {
        if let Write::TextEdit { key, before, after } = w {
            // The change came back from the server, or was made again before: its edit is in
            // the text already.
            if came_back || made_again(&format!("texts/{key}")) {
                continue;
            }
            let Ok(k) = key.parse::<TextKey>() else {
                continue;
            };
            match d.text(&k) {
                None => out.push(Write::Text(key.clone(), after.clone())),
                Some(now) => match merge_edit(before, after, &now) {
                    Some(merged) if merged != now => out.push(Write::Text(key.clone(), merged)),
                    Some(_) => {}
                    None => {
                        tracing::error!(doc = %r.doc, "a text taken back could not be merged; not written again");
                    }
                },
            }
            continue;
        }
        let held = match w {
            Write::Revision(id, rev) => d.revision(id).map(|h| h == rev),
            Write::Event(id, ev) => d.event(id).map(|h| h == ev),
            Write::Text(key, text) => match key.parse::<TextKey>() {
                Ok(k) => Some(d.text(&k).as_deref() == Some(text.as_str())),
                Err(_) => Some(true),
            },
            Write::TextEdit { .. } => Some(true),
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
