//! Verified signatures kept in a store, per document: the latest of each signing device (it
//! covers that device's earlier changes of the document too, since its own changes chain), at
//! most [`MAX_SIGNERS_PER_DOC`]. The server keeps those it verified on uploads, in the upload's
//! transaction, and relays them; a device keeps those relayed to it, with the batch's changes,
//! so that it can hand others' changes and their signatures to a restored server.

use std::collections::BTreeMap;

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
    keep_all(repo, vec![sig])
}

/// Keeps each of `sigs`, in order, as [`keep`] does one by one, reading and writing each
/// document's kept signatures once (a batch relays many, for few documents).
pub fn keep_all<S: Store>(repo: &mut Repo<S>, sigs: Vec<StoredSignature>) -> Result<(), RepoError> {
    let mut by_doc: BTreeMap<DocumentId, Vec<StoredSignature>> = BTreeMap::new();
    for sig in sigs {
        by_doc
            .entry(sig.signature.doc.clone())
            .or_default()
            .push(sig);
    }
    for (doc, sigs) in by_doc {
        let mut all = stored(repo, &doc)?;
        for sig in sigs {
            all.retain(|s| s.signature.device != sig.signature.device);
            all.push(sig);
        }
        if all.len() > MAX_SIGNERS_PER_DOC {
            let excess = all.len() - MAX_SIGNERS_PER_DOC;
            all.drain(..excess);
        }
        let bytes = postcard::to_stdvec(&all).unwrap_or_default();
        repo.store_mut().set_meta(&meta_key(&doc), &bytes)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;
    use crate::store::MemoryStore;

    fn sig(doc: &DocumentId, device: &str, head: u8) -> StoredSignature {
        StoredSignature {
            signature: HeadsSignature {
                doc: doc.clone(),
                heads: vec![[head; 32]],
                device: DeviceId::new(device).unwrap(),
                signature: vec![head; 64],
            },
            key: PublicKey([head; 32]),
            anchor: 0,
        }
    }

    /// Kept together, signatures end as kept one by one: the latest of each device per
    /// document, the oldest signer first, at most `MAX_SIGNERS_PER_DOC`.
    #[test]
    fn keeping_many_at_once_is_keeping_them_one_by_one() {
        let p = crate::PatientId::new("p1").unwrap();
        let j = DocumentId::journal(&p, "2026-11".parse().unwrap());
        let m = DocumentId::medication(&p);
        let mut sigs = vec![
            sig(&j, "phone-a", 1),
            sig(&m, "phone-a", 2),
            sig(&j, "phone-b", 3),
            sig(&j, "phone-a", 4),
        ];
        for n in 0..MAX_SIGNERS_PER_DOC {
            sigs.push(sig(&m, &format!("phone-{n}"), 5));
        }
        sigs.push(sig(&m, "phone-a", 6));
        let mut one_by_one = Repo::new(MemoryStore::new());
        for s in sigs.clone() {
            keep(&mut one_by_one, s).unwrap();
        }
        let mut together = Repo::new(MemoryStore::new());
        keep_all(&mut together, sigs).unwrap();
        for doc in [&j, &m] {
            assert_eq!(
                stored(&together, doc).unwrap(),
                stored(&one_by_one, doc).unwrap()
            );
        }
        let kept: Vec<(String, u8)> = stored(&together, &j)
            .unwrap()
            .iter()
            .map(|s| (s.signature.device.to_string(), s.signature.heads[0][0]))
            .collect();
        assert_eq!(kept, [("phone-b".to_owned(), 3), ("phone-a".to_owned(), 4)]);
        let chart = stored(&together, &m).unwrap();
        assert_eq!(chart.len(), MAX_SIGNERS_PER_DOC);
        assert_eq!(chart.last().unwrap().signature.heads[0][0], 6);
    }
}
