//! The Automerge-sync fallback: a device told `Resync` (a version-1 device, whose hello carries
//! no feed proof, after its server went back or moved to a new epoch) forgets its cursor and
//! reconciles every document it holds with Automerge's own sync messages; the feed starts over
//! from 0 beside it.
//!
//! Automerge's sync hands the server every change it lacks, but the server takes only this
//! device's own (another device's comes back from its author, or vouched for by a signature
//! in a version-3 recovery), and refuses an own change built on another's that it lost, for
//! lack of it; sync messages say nothing of refusals. So each own change beyond the heads the
//! server advertises is kept as unproven (`unproven.rs`): it goes up again at the front of
//! each later connection until a catch-up proves it, and is stored once what it builds on is
//! back. One the server took meanwhile is only acknowledged again, by hash.

use crate::model::ChangeMessage;

use super::*;

impl DeviceSession {
    pub(super) fn on_resync<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        // The server's feed is not the one our cursor points into: forget the cursor, and
        // reconcile every document we hold with Automerge's own sync.
        self.sync = SyncState::default();
        self.save_state(repo)?;
        let docs = repo.document_ids()?;
        self.own_device = own_device(repo, &docs)?;
        for doc in docs {
            let mut state = automerge::sync::State::new();
            if let Some(msg) = repo.sync_generate(&doc, &mut state)? {
                self.send(&DeviceMessage::AmSync {
                    doc: doc.clone(),
                    message: msg.encode(),
                });
            }
            self.am_states.insert(doc, state);
        }
        Ok(())
    }

    pub(super) fn on_am_sync<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        doc: DocumentId,
        message: &[u8],
    ) -> Result<(), RepoError> {
        // The server only answers: a sync message of a document this device did not offer in
        // its `Resync` is not one, and would make the device create (and keep a sync state
        // for) any document the server names, without bound.
        if !self.am_states.contains_key(&doc) {
            self.close(
                CloseReason::ProtocolViolation,
                format!("sync message for {doc}, a document this device did not offer"),
            );
            return Ok(());
        }
        let message = match admit::sync_message(message) {
            Ok(m) => m,
            Err(e) => {
                self.close(CloseReason::Malformed, format!("sync message: {e}"));
                return Ok(());
            }
        };
        let mut state = self.am_states.remove(&doc).unwrap_or_default();
        let outcome = match repo.sync_receive(&doc, &mut state, message, |_| true) {
            Ok(o) => o,
            Err(RepoError::Model(e)) => {
                self.close(CloseReason::Malformed, e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if !outcome.applied.is_empty() {
            self.events
                .push_back(DeviceEvent::DocumentUpdated { doc: doc.clone() });
        }
        self.keep_unheld_own(repo, &doc, &state)?;
        if let Some(reply) = repo.sync_generate(&doc, &mut state)? {
            self.send(&DeviceMessage::AmSync {
                doc: doc.clone(),
                message: reply.encode(),
            });
        }
        self.am_states.insert(doc, state);
        Ok(())
    }

    /// This device's changes in `doc` beyond the heads the server advertised in `state` (all
    /// of them known here: otherwise a later message tells) are kept as unproven.
    fn keep_unheld_own<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        doc: &DocumentId,
        state: &automerge::sync::State,
    ) -> Result<(), RepoError> {
        let (Some(own), Some(heads)) = (&self.own_device, &state.their_heads) else {
            return Ok(());
        };
        let d = repo.get(doc)?;
        if !heads.iter().all(|h| d.has_change(h)) {
            return Ok(());
        }
        let unheld: Vec<(DocumentId, ChangeHash)> = d
            .changes_since(heads)
            .iter()
            .filter(|c| author_device(c).as_ref() == Some(own))
            .map(|c| (doc.clone(), c.hash()))
            .collect();
        if !unheld.is_empty() {
            tracing::info!(%doc, changes = unheld.len(), "the server lacks changes of ours: kept to go up again");
        }
        self.keep_unproven(repo, &unheld)
    }
}

/// The device that wrote `change`, as its change message says.
fn author_device(change: &automerge::Change) -> Option<DeviceId> {
    change
        .message()
        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
        .map(|m| m.author.device)
}

/// This store's device, as a change it wrote says: the last of its incarnation, or one
/// pending upload. `None` for a store that holds neither (it has nothing of its own to lose).
fn own_device<S: Store>(
    repo: &mut Repo<S>,
    docs: &[DocumentId],
) -> Result<Option<DeviceId>, RepoError> {
    if let Some(last) = repo.incarnation()?.last.map(ChangeHash) {
        for doc in docs {
            if let Some(c) = repo.get(doc)?.automerge_change(&last) {
                return Ok(author_device(&c));
            }
        }
    }
    for (doc, hash) in repo.pending()? {
        if let Some(c) = repo.get(&doc)?.automerge_change(&hash) {
            return Ok(author_device(&c));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::MemoryStore;

    /// A server (hostile or broken) that sends a sync message of a document the device never
    /// offered: the connection closes as a protocol violation, and the device neither takes
    /// the document nor keeps a sync state for it. Before, it answered any document named, and
    /// kept a state for each (without bound).
    #[test]
    fn a_sync_message_of_a_document_not_offered_closes_the_connection() {
        let now = Timestamp(1_795_000_000_000);
        let mut repo = Repo::new(MemoryStore::new());
        let mut device = DeviceSession::new(DeviceConfig::default());
        device.connect(&mut repo, now).unwrap();
        while device.poll_transmit().is_some() {}
        // A well-formed sync message of a document this device does not hold.
        let doc = DocumentId::journal(
            &crate::PatientId::new("p-elsewhere").unwrap(),
            "2026-11".parse().unwrap(),
        );
        let mut server = Repo::new(MemoryStore::new());
        let mut state = automerge::sync::State::new();
        let message = server.sync_generate(&doc, &mut state).unwrap().unwrap();
        let bytes = wire::encode(&ServerMessage::AmSync {
            doc: doc.clone(),
            message: message.encode(),
        })
        .unwrap();
        device.handle_bytes(&mut repo, &bytes, now);
        let events: Vec<DeviceEvent> = std::iter::from_fn(|| device.poll_event()).collect();
        assert!(
            events.iter().any(|e| matches!(
                e,
                DeviceEvent::Closed {
                    reason: CloseReason::ProtocolViolation,
                    ..
                }
            )),
            "{events:?}"
        );
        assert!(device.am_states.is_empty());
        assert!(device.poll_transmit().is_none(), "nothing is answered");
        assert!(repo.document_ids().unwrap().is_empty());
    }
}
