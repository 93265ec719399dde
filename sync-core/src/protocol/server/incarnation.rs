//! Incarnations (docs/protocol.md, "Incarnations"): which incarnations of each device's store
//! the server issued, what it stored from each (the store's write counter -> change hash), a
//! store that went back in time (restored from a backup) told to go on under a new one, and
//! two installations of one credential (a copied store) detected.
//!
//! Kept in the server store's meta values, so the simulation runs this very code, and written
//! in the sync step's store group: a change and its counter commit together.

use std::collections::BTreeSet;

use automerge::Change;
use serde::{Deserialize, Serialize};

use super::*;
use crate::ids::DeviceId;
use crate::protocol::wire::IncarnationClaim;

/// What the server knows of one device's incarnations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIncarnations {
    /// The highest incarnation number issued to the device (0: only the first).
    pub issued: u32,
    /// The highest incarnation number the device has connected with.
    pub used: u32,
    /// Pairs (earlier, later) of incarnations seen in use together: two installations of one
    /// credential. Each pair is reported once.
    pub copies: BTreeSet<(u32, u32)>,
}

/// The highest incarnation number a device may have. A number is issued each time a phone's
/// store turns out behind what the server holds from it (restored from a backup, copied): a
/// handful in a phone's life. After a server's store is put back, a device's claim of a number
/// it never issued is taken on the device's word, and a hello of an incarnation without a
/// record of its own reads one per number below it: without a bound, one hello claiming
/// 4 billion made the server read 4 billion rows (found by fuzzing `wire`). A device past it
/// is closed (`ProtocolViolation`) and must be enrolled again.
pub const MAX_INCARNATION: u32 = 1024;

/// The next number to issue after `issued`, if the device has any left.
fn next_incarnation(issued: u32) -> Option<u32> {
    issued.checked_add(1).filter(|n| *n <= MAX_INCARNATION)
}

fn incarnations_key(device: &DeviceId) -> String {
    format!("incarnations/{device}")
}

fn written_key(device: &DeviceId, number: u32, n: u64) -> String {
    format!("written/{device}/{number}/{n}")
}

fn top_key(device: &DeviceId, number: u32) -> String {
    format!("written-top/{device}/{number}")
}

/// The device's incarnations as the server knows them.
pub fn device_incarnations<S: Store>(
    repo: &Repo<S>,
    device: &DeviceId,
) -> Result<DeviceIncarnations, RepoError> {
    Ok(match repo.store().meta(&incarnations_key(device))? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => DeviceIncarnations::default(),
    })
}

fn save_incarnations<S: Store>(
    repo: &mut Repo<S>,
    device: &DeviceId,
    value: &DeviceIncarnations,
) -> Result<(), RepoError> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    repo.store_mut()
        .set_meta(&incarnations_key(device), &bytes)?;
    Ok(())
}

pub(super) fn held<S: Store>(
    repo: &Repo<S>,
    device: &DeviceId,
    number: u32,
    n: u64,
) -> Result<Option<Vec<u8>>, RepoError> {
    Ok(repo.store().meta(&written_key(device, number, n))?)
}

fn top<S: Store>(repo: &Repo<S>, device: &DeviceId, number: u32) -> Result<u64, RepoError> {
    Ok(repo
        .store()
        .meta(&top_key(device, number))?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// The message of a change, if it has a readable one.
pub(super) fn message_of(change: &Change) -> Option<ChangeMessage> {
    change
        .message()
        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
}

impl ServerSession {
    /// A `Hello3`: reincarnates a device whose store is behind what the server holds from its
    /// incarnation (`Ok(false)`: nothing of the hello is stored), else takes the incarnation
    /// as this connection's, noting a copy if a later one is already in use (`Ok(true)`).
    pub(super) fn check_incarnation<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        claim: &IncarnationClaim,
        hello: &Hello,
        proof: Option<&crate::store::FeedProof>,
    ) -> Result<bool, RepoError> {
        let upload = &hello.upload;
        // Refused before anything is read for it.
        if claim.number > MAX_INCARNATION {
            self.close(
                CloseReason::ProtocolViolation,
                format!(
                    "incarnation {} is past the most a device may have ({MAX_INCARNATION})",
                    claim.number
                ),
            );
            return Ok(false);
        }
        let device = self.peer.author.device.clone();
        let mut known = device_incarnations(repo, &device)?;
        if claim.number > known.issued {
            // A number this store never issued: the server's store was put back from a backup
            // and lost what it issued since, which the device's cursor shows (another feed
            // epoch, a position above the head or another history there), or cannot refute
            // (a store reincarnated, whose cursor started over, has none). The authenticated
            // device's word is taken: its actors are its own either way.
            let restored = match hello.cursor {
                None => true,
                Some(c) => {
                    let head = repo.store().feed_head()?;
                    c.epoch != repo.store().epoch()?
                        || c.position > head
                        || proof.is_some_and(|p| {
                            *p != repo.store().feed_proof(c.position).unwrap_or(*p)
                        })
                }
            };
            if !restored {
                self.close(
                    CloseReason::ProtocolViolation,
                    format!("incarnation {} was never issued", claim.number),
                );
                return Ok(false);
            }
            known.issued = claim.number;
            save_incarnations(repo, &device, &known)?;
        }
        // After `Reincarnate`, an honest device says the number it was given, under which it
        // has written nothing: anything else would have the server issue numbers without end.
        if self.reincarnating && claim.number != known.issued {
            self.close(
                CloseReason::ProtocolViolation,
                format!(
                    "hello as incarnation {} after being given {}",
                    claim.number, known.issued
                ),
            );
            return Ok(false);
        }
        // Connecting under an incarnation while a later one is in use: a second installation,
        // whether or not this one is also behind.
        self.incarnation = claim.number;
        self.note_copy(repo)?;
        let mut known = device_incarnations(repo, &device)?;
        if !self.reincarnated && self.is_behind(repo, claim, upload)? {
            let Some(next) = next_incarnation(known.issued) else {
                self.close(
                    CloseReason::ProtocolViolation,
                    "no incarnation numbers left",
                );
                return Ok(false);
            };
            known.issued = next;
            save_incarnations(repo, &device, &known)?;
            self.forget_complete(repo, claim.number)?;
            tracing::warn!(%device, old = claim.number, new = known.issued,
                "a device's store is behind what the server holds from it: reincarnated");
            self.events.push_back(ServerEvent::Reincarnated {
                old: claim.number,
                new: known.issued,
            });
            self.reincarnating = true;
            self.reincarnated = true;
            self.send(&ServerMessage::Reincarnate {
                incarnation: known.issued,
            })?;
            return Ok(false);
        }
        self.reincarnating = false;
        self.written_through = Some(claim.written);
        self.hello_written = claim.written;
        self.issued = known.issued;
        if claim.number > known.used {
            known.used = claim.number;
            save_incarnations(repo, &device, &known)?;
        }
        Ok(true)
    }

    /// Whether the server holds from the claimed incarnation more than the device, or other
    /// changes under the numbers the device claims for its own.
    fn is_behind<S: Store>(
        &self,
        repo: &mut Repo<S>,
        claim: &IncarnationClaim,
        upload: &[DocChanges],
    ) -> Result<bool, RepoError> {
        let device = &self.peer.author.device;
        if top(repo, device, claim.number)? > claim.written {
            return Ok(true);
        }
        if claim.written > 0 {
            if let Some(hash) = held(repo, device, claim.number, claim.written)? {
                if claim.last.map(|l| l.to_vec()) != Some(hash) {
                    return Ok(true);
                }
            }
        }
        self.forks(repo, claim.number, upload)
    }

    /// Whether a change of `docs` written by the connected device under incarnation `number`
    /// forks what the server stored from that incarnation: its write counter is held with
    /// another change, or its Automerge sequence number is held (in its document) with another
    /// change. Only another installation of the same incarnation (a copy, or a store put back)
    /// writes that. (Changes of the device's earlier incarnations are not asked about: a
    /// `Reincarnate` would not take them out of the store, and would be issued again and again.)
    fn forks<S: Store>(
        &self,
        repo: &mut Repo<S>,
        number: u32,
        docs: &[DocChanges],
    ) -> Result<bool, RepoError> {
        // An upload of more changes than one may hold is refused whole where it is received
        // (`receive_upload`): it is not parsed here first, change by change.
        if docs.iter().map(|d| d.changes.len()).sum::<usize>() > MAX_BATCH_CHANGES {
            return Ok(false);
        }
        let device = self.peer.author.device.clone();
        let actor = self.peer.author.in_incarnation(number).actor_id();
        for d in docs {
            for bytes in d.changes.iter().filter(|b| b.len() <= MAX_CHANGE_BYTES) {
                let Ok(change) = admit::change(bytes) else {
                    continue;
                };
                let Some(m) = message_of(&change) else {
                    continue;
                };
                let n = m.author.write;
                if n == 0 || m.author.device != device || m.author.incarnation != number {
                    continue;
                }
                if held(repo, &device, number, n)?.is_some_and(|h| h != change.hash().0) {
                    return Ok(true);
                }
                if *change.actor_id() != actor {
                    continue;
                }
                if Self::forks_actor(repo, &d.doc, &change)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// An upload on a connection already serving forks what the server stored from the
    /// connection's incarnation (another installation of it wrote under the same numbers after
    /// this one's hello): handled as a fork at the hello. Nothing of the upload is stored; the
    /// device is told to go on under the next incarnation, and the connection waits for its
    /// new hello (what the device sent before reading that is dropped). Since a store put back
    /// does not write while it is connected, this is a copy: reported once (`Ok(true)`).
    pub(super) fn fork_in_upload<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        docs: &[DocChanges],
    ) -> Result<bool, RepoError> {
        // At most one number a connection: after that, a fork is refused as any change that
        // does not build on its actor's history is.
        if !self.v3 || self.reincarnated || !self.forks(repo, self.incarnation, docs)? {
            return Ok(false);
        }
        let device = self.peer.author.device.clone();
        let mut known = device_incarnations(repo, &device)?;
        let Some(next) = next_incarnation(known.issued) else {
            self.close(
                CloseReason::ProtocolViolation,
                "no incarnation numbers left",
            );
            return Ok(true);
        };
        let old = self.incarnation;
        known.issued = next;
        let pair = (old, next);
        let new_pair = known.copies.insert(pair);
        save_incarnations(repo, &device, &known)?;
        self.forget_complete(repo, old)?;
        tracing::warn!(%device, old, new = next,
            "an upload forks what the server holds from the device's incarnation: a copy, reincarnated");
        if new_pair {
            self.events.push_back(ServerEvent::CopyDetected {
                incarnation: old,
                later: next,
            });
        }
        self.events
            .push_back(ServerEvent::Reincarnated { old, new: next });
        // The connection starts over at the hello, as after a `Reincarnate` there.
        let fresh = Self::new(self.peer.clone(), self.config.clone());
        *self = Self {
            outbox: std::mem::take(&mut self.outbox),
            events: std::mem::take(&mut self.events),
            signing_key: self.signing_key,
            v3: true,
            last_heard: self.last_heard,
            now: self.now,
            reincarnating: true,
            reincarnated: true,
            ..fresh
        };
        self.send(&ServerMessage::Reincarnate { incarnation: next })?;
        Ok(true)
    }

    /// This connection's incarnation connects or writes while a later one of the same device
    /// is in use: two installations of one credential. Reported once per pair; both go on.
    pub(super) fn note_copy<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        let device = self.peer.author.device.clone();
        let mut known = device_incarnations(repo, &device)?;
        if self.incarnation >= known.used {
            return Ok(());
        }
        let pair = (self.incarnation, known.used);
        if known.copies.insert(pair) {
            save_incarnations(repo, &device, &known)?;
            tracing::warn!(%device, earlier = pair.0, later = pair.1,
                "two installations use one device credential");
            self.events.push_back(ServerEvent::CopyDetected {
                incarnation: pair.0,
                later: pair.1,
            });
        }
        Ok(())
    }

    /// Records, for each of `changes` (the connected device's own, or another device's that
    /// its author's signature vouched for, handed back by a relay), its write counter and hash
    /// under its author's device: a store of that device put back to before it is then seen
    /// as behind, and gets it back.
    pub(super) fn record_written<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        changes: &[Change],
    ) -> Result<(), RepoError> {
        self.record_counters(repo, changes, true)
    }

    /// Records the write counters of refused changes of the connected device (they used them
    /// all the same: another installation writing another change under one is a fork), without
    /// replacing a counter's stored change: the stored change is what an installation lacking
    /// it must be seen behind for (copy seed 1923: a change refused after a reincarnation
    /// replaced its counter's stored change, and a copy lacking that change was taken as
    /// holding it).
    pub(super) fn record_refused_written<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        changes: &[Change],
    ) -> Result<(), RepoError> {
        self.record_counters(repo, changes, false)
    }

    fn record_counters<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        changes: &[Change],
        replace: bool,
    ) -> Result<(), RepoError> {
        let mut tops: BTreeMap<(DeviceId, u32), u64> = BTreeMap::new();
        for change in changes {
            let Some(m) = message_of(change) else {
                continue;
            };
            let n = m.author.write;
            if n == 0 {
                continue;
            }
            let device = m.author.device;
            let number = m.author.incarnation;
            if device == self.peer.author.device && number == self.incarnation {
                if let Some(w) = self.written_through.as_mut() {
                    *w = (*w).max(n);
                }
                if replace && n <= self.hello_written {
                    self.stored_here.insert(change.hash());
                }
            }
            if replace || held(repo, &device, number, n)?.is_none() {
                repo.store_mut()
                    .set_meta(&written_key(&device, number, n), &change.hash().0)?;
            }
            let t = tops.entry((device, number)).or_insert(0);
            *t = (*t).max(n);
        }
        for ((device, number), n) in tops {
            if n > top(repo, &device, number)? {
                repo.store_mut()
                    .set_meta(&top_key(&device, number), &n.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// Whether `change` of `doc`, written by the connected device, forks what the server holds
    /// of its incarnation: its write counter is held with another change, or its sequence
    /// number is held in the document with another change (a change an earlier incarnation
    /// wrote, sent again after a reincarnation, where another installation used the numbers).
    pub(super) fn forks_own<S: Store>(
        &self,
        repo: &mut Repo<S>,
        doc: &DocumentId,
        change: &Change,
    ) -> Result<bool, RepoError> {
        // The test for another device's change, for one of this device's own.
        let own = message_of(change)
            .is_some_and(|m| m.author.write > 0 && m.author.device == self.peer.author.device);
        Ok(own && self.forks_other(repo, doc, change)?)
    }

    /// Whether `doc` holds, under `change`'s actor, another change at its sequence number
    /// (or a later one): a fork of that actor, which can never be stored beside it.
    pub(super) fn forks_actor<S: Store>(
        repo: &mut Repo<S>,
        doc: &DocumentId,
        change: &Change,
    ) -> Result<bool, RepoError> {
        match holds_another_at_seq(repo, doc, change) {
            // A document the server cannot load refuses the change on its own.
            Err(RepoError::Model(_)) => Ok(false),
            other => other,
        }
    }

    /// Whether every record `change` (another device's fork, see `forks_actor`) wrote is in
    /// `doc` again: written again by its author's device under a later incarnation at the
    /// change's own time (as a device writes again the records of a change taken back), or,
    /// for a revision or an event, held under its id (an id is written once). Only then is it
    /// withdrawn from the relay: otherwise the relay may hold its records' only copy (its
    /// author put back to before it), and it stays there, refused, rather than be lost.
    pub(super) fn written_again<S: Store>(
        repo: &mut Repo<S>,
        doc: &DocumentId,
        change: &Change,
    ) -> Result<bool, RepoError> {
        let Some(m) = message_of(change) else {
            return Ok(false);
        };
        let d = match repo.get(doc) {
            Ok(d) => d,
            Err(RepoError::Model(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let again: Vec<ChangeMessage> = d
            .changes_since(&[])
            .iter()
            .filter(|c| c.timestamp() == change.timestamp())
            .filter_map(message_of)
            .filter(|a| {
                a.author.device == m.author.device && a.author.incarnation > m.author.incarnation
            })
            .collect();
        Ok(m.writes.iter().all(|w| {
            if again.iter().any(|a| a.writes.contains(w)) {
                return true;
            }
            let id = |key: &str| crate::ids::RecordId::new(key).ok();
            match w.split_once('/') {
                Some(("events", key)) => id(key).is_some_and(|id| d.event(&id).is_some()),
                Some(("revisions", key)) => id(key).is_some_and(|id| d.revision(&id).is_some()),
                _ => false,
            }
        }))
    }

    /// Whether a change's author is the connected device and user, under an incarnation the
    /// server issued to the device.
    pub(super) fn authored_by_peer(&self, change: &Change) -> bool {
        message_of(change).is_some_and(|m| {
            m.author.person() == self.peer.author.person() && m.author.incarnation <= self.issued
        })
    }

    /// The actor of the connection's incarnation: the device has what it wrote.
    pub(super) fn own_actor(&self) -> automerge::ActorId {
        self.peer.author.in_incarnation(self.incarnation).actor_id()
    }

    /// Whether the connected installation holds `change`, one of its actor's: it wrote it
    /// (as far as its hello and uploads tell), not another installation of its incarnation.
    /// A change under a write counter the installation has used is its own only if the server
    /// recorded this very change for that counter: another installation of the incarnation (a
    /// copy) may have written another change under the same counter (copy seed 1923). Nor is
    /// a change at feed position `seq` above the head at the hello, unless this connection
    /// stored it: another installation wrote it under a counter both used, which the server
    /// had recorded nothing for at the hello (both installations' changes refused for lack of
    /// what they depended on; seed 4623): sent, it shows this installation the fork.
    pub(super) fn holds_own<S: Store>(
        &self,
        repo: &Repo<S>,
        change: &Change,
        seq: u64,
    ) -> Result<bool, RepoError> {
        let Some(through) = self.written_through else {
            return Ok(true);
        };
        let Some(m) = message_of(change) else {
            return Ok(true);
        };
        let n = m.author.write;
        if n == 0 {
            return Ok(true);
        }
        // Under a counter the hello claimed, stored after it by another connection: the other
        // installation's. (Above the claim, a counter this connection uploaded under is its
        // own: another installation's change stored first under it would have been a fork.)
        let after_hello = n <= self.hello_written
            && seq > self.hello_head
            && !self.stored_here.contains(&change.hash());
        if n > through || after_hello {
            return Ok(false);
        }
        // No record of the counter (changes stored before counters were recorded): the count
        // decides, as before.
        Ok(held(repo, &m.author.device, m.author.incarnation, n)?
            .is_none_or(|h| h == change.hash().0))
    }
}

/// Whether `doc` holds, under `change`'s actor, another change at its sequence number (or a
/// later one) and not `change` itself: the actor forked.
///
/// From the actor's last sequence number as the cached copy keeps it (sequence numbers of an
/// actor have no gaps): reading every change's metadata for each uploaded change made an
/// upload's cost grow with the document (half the server's work in `latency`).
pub(super) fn holds_another_at_seq<S: Store>(
    repo: &mut Repo<S>,
    doc: &DocumentId,
    change: &Change,
) -> Result<bool, RepoError> {
    if repo.get(doc)?.has_change(&change.hash()) {
        return Ok(false);
    }
    Ok(repo.actor_seq(doc, change.actor_id())? >= change.seq())
}
