//! Orphans (docs/protocol.md, "Incarnations"): another device's change that a relay hands back
//! to a restored server in a recovery, vouched for by its author's signature, but whose
//! Automerge sequence number (or write counter) the server now holds with another change of the
//! same author: the server lost it, and another installation of the author (a copy), or the
//! author's store put back, wrote under the same numbers since. The server cannot store it
//! beside that change. It refuses it to the relay (`Invalid`, [`FORKED_OTHER_DETAIL`]), which
//! takes it out of its documents and receives the change the server holds, and keeps it for its
//! author's device, which writes its records again under its current incarnation: the record
//! reaches everyone, under another change.
//!
//! Kept in the server store's meta values (per device, at most [`MAX_ORPHANS`], the oldest
//! dropped), in the sync step's store group like the refusal.

use automerge::Change;

use super::incarnation::{held, holds_another_at_seq, message_of};
use super::*;
use crate::protocol::wire::{FORKED_OTHER_DETAIL, MAX_ORPHANS};

fn orphans_key(device: &DeviceId) -> String {
    format!("orphans/{device}")
}

/// One orphan: its document and the change's bytes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Orphan {
    doc: DocumentId,
    change: Vec<u8>,
}

fn load<S: Store>(repo: &Repo<S>, device: &DeviceId) -> Result<Vec<Orphan>, RepoError> {
    Ok(match repo.store().meta(&orphans_key(device))? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Vec::new(),
    })
}

fn save<S: Store>(repo: &mut Repo<S>, device: &DeviceId, list: &[Orphan]) -> Result<(), RepoError> {
    let bytes = serde_json::to_vec(list).unwrap_or_default();
    repo.store_mut().set_meta(&orphans_key(device), &bytes)?;
    Ok(())
}

fn hash_of(bytes: &[u8]) -> Option<[u8; 32]> {
    admit::change(bytes).ok().map(|c| c.hash().0)
}

impl ServerSession {
    /// Whether `change` of `doc`, another device's (handed back by a relay), forks what the
    /// server holds of its author's history: its write counter is held with another change, or
    /// its sequence number is held in the document with another change of its actor.
    pub(super) fn forks_other<S: Store>(
        &self,
        repo: &mut Repo<S>,
        doc: &DocumentId,
        change: &Change,
    ) -> Result<bool, RepoError> {
        let Some(m) = message_of(change) else {
            return Ok(false);
        };
        let a = &m.author;
        if a.write > 0
            && held(repo, &a.device, a.incarnation, a.write)?.is_some_and(|h| h != change.hash().0)
        {
            return Ok(true);
        }
        holds_another_at_seq(repo, doc, change)
    }

    /// Refuses such a change to the relay and keeps it for its author's device.
    pub(super) fn keep_orphan<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        doc: &DocumentId,
        change: &Change,
    ) -> Result<String, RepoError> {
        if let Some(m) = message_of(change) {
            let device = m.author.device;
            let mut list = load(repo, &device)?;
            let hash = change.hash().0;
            if !list
                .iter()
                .any(|o| o.doc == *doc && hash_of(&o.change) == Some(hash))
            {
                if list.len() >= MAX_ORPHANS {
                    tracing::error!(%device, "too many orphaned changes kept: the oldest is dropped");
                    list.remove(0);
                }
                list.push(Orphan {
                    doc: doc.clone(),
                    change: change.raw_bytes().to_vec(),
                });
                save(repo, &device, &list)?;
                tracing::warn!(%device, %doc,
                    "a change handed back forks its author's history: kept for its author to write again");
            }
        }
        Ok(format!(
            "{FORKED_OTHER_DETAIL} its author's sequence number or write counter is another change's"
        ))
    }

    /// After a version-3 hello is served: the connected device's orphans of documents it may
    /// read, for it to write their records again.
    pub(super) fn send_orphans<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
    ) -> Result<(), RepoError> {
        if !self.v3 {
            return Ok(());
        }
        let list = load(repo, &self.peer.author.device)?;
        let mut docs: Vec<DocChanges> = Vec::new();
        for o in list {
            if !policy.may_read(&self.peer, &o.doc) {
                continue;
            }
            match docs.last_mut() {
                Some(last) if last.doc == o.doc => last.changes.push(o.change),
                _ => docs.push(DocChanges {
                    doc: o.doc,
                    changes: vec![o.change],
                    positions: Vec::new(),
                }),
            }
        }
        if docs.is_empty() {
            return Ok(());
        }
        self.send(&ServerMessage::Orphans { docs })
    }

    /// The device keeps the records of these orphans to write again: they are forgotten.
    pub(super) fn on_orphans_taken<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        changes: &[[u8; 32]],
    ) -> Result<(), RepoError> {
        if changes.len() > MAX_ORPHANS {
            self.close(CloseReason::ProtocolViolation, "too many orphans taken");
            return Ok(());
        }
        let device = self.peer.author.device.clone();
        let mut list = load(repo, &device)?;
        let before = list.len();
        list.retain(|o| hash_of(&o.change).is_none_or(|h| !changes.contains(&h)));
        if list.len() != before {
            save(repo, &device, &list)?;
        }
        Ok(())
    }
}
