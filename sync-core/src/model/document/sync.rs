//! Automerge's own sync messages (the fallback path of the protocol).

use automerge::Change;

use crate::error::ModelError;
use crate::model::admit;

use super::{CareDocument, guarded};

impl CareDocument {
    /// Automerge's sync message for a peer in `state` (the fallback path of the protocol).
    /// `state` holds what the peer sent last (its `have` entries were admitted by
    /// [`admit::sync_message`]); Automerge runs under the panic guard all the same.
    pub fn sync_generate(
        &self,
        state: &mut automerge::sync::State,
    ) -> Result<Option<automerge::sync::Message>, ModelError> {
        use automerge::sync::SyncDoc;
        guarded(|| self.doc.generate_sync_message(state)).ok_or_else(|| ModelError::Corrupt {
            doc: self.id.clone(),
            detail: "sync message: Automerge failed generating a reply".into(),
        })
    }

    /// Takes the peer's sync message apart: the changes it carries are returned (to be applied
    /// through [`CareDocument::apply_changes`], which validates) and the rest updates `state`.
    /// Every chunk is admitted first ([`admit::sync_chunk`]: bounded inflation, no bundles).
    /// Damaged or inadmissible chunks are an error naming the document.
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
            // One change, several concatenated (a version-2 message), or a whole document
            // (Automerge sends one when much is missing).
            let admitted =
                admit::sync_chunk(chunk).map_err(|e| corrupt(format!("sync message: {e}")))?;
            changes.extend(admitted);
        }
        message.changes = automerge::sync::ChunkList::empty();
        guarded(|| self.doc.receive_sync_message(state, message))
            .ok_or_else(|| corrupt("sync message: Automerge failed on it".into()))?
            .map_err(|e| corrupt(format!("sync message: {e}")))?;
        Ok(changes)
    }
}
