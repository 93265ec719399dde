//! The Automerge-sync fallback: a document reconciled message by message with Automerge's own
//! sync protocol (for a device whose cursor is not a position in this feed).

use automerge::Change;

use super::*;

impl ServerSession {
    pub(super) fn on_am_sync<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        doc: DocumentId,
        message: &[u8],
    ) -> Result<(), RepoError> {
        if !policy.may_read(&self.peer, &doc) {
            self.events.push_back(ServerEvent::Refused {
                doc,
                change: None,
                code: RefusalCode::NotPermitted,
                detail: "no read access".into(),
            });
            return Ok(());
        }
        if !self.am_states.contains_key(&doc) && self.am_states.len() >= MAX_LIST {
            self.close(CloseReason::ProtocolViolation, "too many documents in sync");
            return Ok(());
        }
        let message = match admit::sync_message(message) {
            Ok(m) => m,
            Err(e) => {
                self.close(CloseReason::Malformed, format!("sync message: {e}"));
                return Ok(());
            }
        };
        let may_write = policy.may_write(&self.peer, &doc);
        let mut state = self.am_states.remove(&doc).unwrap_or_default();
        let outcome = repo.sync_receive(&doc, &mut state, message, |c| {
            may_write && self.authored_by_peer(c)
        });
        let outcome = match outcome {
            Ok(o) => o,
            Err(RepoError::Model(e)) => {
                self.close(CloseReason::Malformed, e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.record_written(repo, &outcome.applied)?;
        if !outcome.applied.is_empty() {
            self.events.push_back(ServerEvent::Accepted {
                doc: doc.clone(),
                changes: outcome.applied.iter().map(Change::hash).collect(),
            });
        }
        if let Some(reply) = repo.sync_generate(&doc, &mut state)? {
            self.disclosed.insert(doc.patient().clone());
            self.save_disclosed(repo)?;
            self.events.push_back(ServerEvent::Disclosed {
                doc: doc.clone(),
                changes: reply.changes.len(),
            });
            self.send(&ServerMessage::AmSync {
                doc: doc.clone(),
                message: reply.encode(),
            })?;
        }
        self.am_states.insert(doc, state);
        Ok(())
    }
}
