//! Automerge's own sync messages (the fallback path of the protocol).

use automerge::{Automerge, Change};

use crate::error::ModelError;

use super::{CareDocument, guarded};

impl CareDocument {
    /// Automerge's sync message for a peer in `state` (the fallback path of the protocol).
    pub fn sync_generate(
        &self,
        state: &mut automerge::sync::State,
    ) -> Option<automerge::sync::Message> {
        use automerge::sync::SyncDoc;
        self.doc.generate_sync_message(state)
    }

    /// Takes the peer's sync message apart: the changes it carries are returned (to be applied
    /// through [`CareDocument::apply_changes`], which validates) and the rest updates `state`.
    /// Damaged chunks are an error naming the document.
    pub fn sync_receive(
        &mut self,
        state: &mut automerge::sync::State,
        mut message: automerge::sync::Message,
    ) -> Result<Vec<Change>, ModelError> {
        use automerge::sync::SyncDoc;
        let corrupt = |detail: String| ModelError::Corrupt {
            doc: self.id.clone(),
            detail,
        };
        let mut changes = Vec::new();
        for chunk in message.changes.iter() {
            match Change::from_bytes(chunk.to_vec()) {
                Ok(c) => changes.push(c),
                // A whole document (Automerge sends one when much is missing).
                Err(_) => {
                    let whole = guarded(|| Automerge::load(chunk).map(|d| d.get_changes(&[])))
                        .ok_or_else(|| corrupt("sync message: Automerge failed on it".into()))?
                        .map_err(|e| corrupt(format!("sync message: {e}")))?;
                    changes.extend(whole);
                }
            }
        }
        message.changes = automerge::sync::ChunkList::empty();
        guarded(|| self.doc.receive_sync_message(state, message))
            .ok_or_else(|| corrupt("sync message: Automerge failed on it".into()))?
            .map_err(|e| corrupt(format!("sync message: {e}")))?;
        Ok(changes)
    }
}
