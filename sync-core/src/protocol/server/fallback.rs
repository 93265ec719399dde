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
        let kept = self.am_total - self.am_bytes.get(&doc).copied().unwrap_or(0) + message.len();
        if kept > MAX_AM_STATE_BYTES {
            self.close(
                CloseReason::ProtocolViolation,
                format!("sync messages of more than {MAX_AM_STATE_BYTES} bytes kept at once"),
            );
            return Ok(());
        }
        let size = message.len();
        let message = match admit::sync_message(message) {
            Ok(m) => m,
            Err(e) => {
                self.close(CloseReason::Malformed, format!("sync message: {e}"));
                return Ok(());
            }
        };
        let may_write = policy.may_write(&self.peer, &doc);
        let mut state = self.am_states.remove(&doc).unwrap_or_default();
        let peer_heads_before = state.their_heads.clone();
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
        // Automerge's sync ends when both sides hold the same heads; refused changes (another
        // device's, or built on what the server lost) keep them apart, and each side would
        // answer the other for ever. Stuck: the peer's message changed nothing here, its heads
        // are those of its last message, and the reply would carry no change and no new heads.
        let stuck = outcome.applied.is_empty()
            && peer_heads_before.is_some()
            && state.their_heads == peer_heads_before;
        let sent_heads = state.last_sent_heads.clone();
        let reply = repo
            .sync_generate(&doc, &mut state)?
            .filter(|r| !(stuck && r.changes.is_empty() && r.heads == sent_heads));
        if let Some(reply) = reply {
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
        self.am_bytes.insert(doc.clone(), size);
        self.am_total = kept;
        self.am_states.insert(doc, state);
        Ok(())
    }
}
