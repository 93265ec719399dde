//! Verified signatures kept in a store, per document: the latest of each signing device (it
//! covers that device's earlier changes of the document too, since its own changes chain), at
//! most [`MAX_SIGNERS_PER_DOC`]. The server keeps those it verified on uploads, in the upload's
//! transaction, and relays them; a device keeps those relayed to it, with the batch's changes,
//! so that it can hand others' changes and their signatures to a restored server.

use serde::{Deserialize, Serialize};

use crate::error::RepoError;
use automerge::ChangeHash;

use crate::ids::DocumentId;
use crate::protocol::wire::HeadsSignature;
use crate::repo::Repo;
use crate::signing::{MAX_SIGNERS_PER_DOC, PublicKey};
use crate::store::Store;

/// A verified signature, with the key it verified against (as the server registered it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSignature {
    pub signature: HeadsSignature,
    pub key: PublicKey,
    /// On the server: the highest feed position among the signature's heads (the signature is
    /// relayed with the batch that carries that change). 0 on devices.
    pub anchor: u64,
}

fn meta_key(doc: &DocumentId) -> String {
    format!("signatures/{doc}")
}

/// The signatures kept for `doc`, oldest signer first.
pub fn stored<S: Store>(
    repo: &Repo<S>,
    doc: &DocumentId,
) -> Result<Vec<StoredSignature>, RepoError> {
    Ok(match repo.store().meta(&meta_key(doc))? {
        // Written by this module only; an unreadable value is as good as none (the signatures
        // come again with the next upload or batch).
        Some(bytes) => postcard::from_bytes(&bytes).unwrap_or_default(),
        None => Vec::new(),
    })
}

/// Drops the signatures kept for `doc` (its patient was forgotten on this device).
pub fn forget<S: Store>(repo: &mut Repo<S>, doc: &DocumentId) -> Result<(), RepoError> {
    if repo.store().meta(&meta_key(doc))?.is_some() {
        repo.store_mut().set_meta(&meta_key(doc), b"")?;
    }
    Ok(())
}

/// Keeps `sig` as its device's latest for its document (replacing the previous one).
pub fn keep<S: Store>(repo: &mut Repo<S>, sig: StoredSignature) -> Result<(), RepoError> {
    let doc = sig.signature.doc.clone();
    let mut all = stored(repo, &doc)?;
    all.retain(|s| s.signature.device != sig.signature.device);
    all.push(sig);
    if all.len() > MAX_SIGNERS_PER_DOC {
        let excess = all.len() - MAX_SIGNERS_PER_DOC;
        all.drain(..excess);
    }
    let bytes = postcard::to_stdvec(&all).unwrap_or_default();
    repo.store_mut().set_meta(&meta_key(&doc), &bytes)?;
    Ok(())
}

/// Keeps `sig` (verified, or made by the server itself for a change it wrote as a user's web
/// device) as the server keeps an upload's signature: anchored at the highest feed position of
/// its heads, so it is relayed with the batch that carries the last change it covers. Call it
/// after the changes are appended, in the same group.
pub fn keep_anchored<S: Store>(
    repo: &mut Repo<S>,
    mut sig: StoredSignature,
) -> Result<(), RepoError> {
    let doc = sig.signature.doc.clone();
    let mut anchor = 0;
    for h in &sig.signature.heads {
        if let Some(p) = repo.store().feed_position(&doc, &ChangeHash(*h))? {
            anchor = anchor.max(p);
        }
    }
    sig.anchor = anchor;
    keep(repo, sig)
}
