//! Signed changes: each device signs, per upload, the heads of every document it uploads to.
//! Automerge change hashes chain (a change's hash covers its dependencies' hashes), so one
//! Ed25519 signature over a document's heads vouches for every change in their history: 64
//! bytes and the heads per document and upload, not 64 bytes per change. See docs/protocol.md,
//! "Signed changes". With root signatures one signature covers a whole upload: over the root of a
//! tree of its documents' heads (`root.rs`).
//!
//! Sans-IO: a key is made from seed bytes the caller draws from the OS's random source; nothing
//! here reads a clock or a random number.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Change, ChangeHash, ReadDoc};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, DocumentId};
use crate::model::{CareDocument, ChangeMessage};
use crate::protocol::wire::HeadsSignature;

mod root;
pub use root::{
    MAX_PATH, PATH_FORM, ROOT_DOMAIN, ROOT_SIGNATURES, ROOT_SIGNATURES_HEADER, ROOT_VERSION,
    UPLOAD_FORM,
};
pub use root::{Verifier, expand_upload};

/// The domain-separation prefix of every signed message.
pub const DOMAIN: &[u8] = b"nara-heads\0";
/// The protocol version that introduced signatures, part of the signed message.
pub const SIGNED_VERSION: u8 = 3;
/// Most heads in one signature (a device's own changes in a document chain under its actor,
/// so an honest upload's heads are one or a few).
pub const MAX_SIGNED_HEADS: usize = 64;
/// Most signatures a store keeps per document (the latest of each device; the oldest signer
/// goes first past it).
pub const MAX_SIGNERS_PER_DOC: usize = 64;
/// Most signatures one message carries.
pub const MAX_SIGNATURES: usize = 4096;

/// Why a signature does not verify, or does not vouch for a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is neither 64 bytes nor a root signature with a well-formed path")]
    BadLength,
    #[error("an upload's root signature whose path the server did not rebuild")]
    NoPath,
    #[error("the heads are empty, more than {MAX_SIGNED_HEADS}, or not sorted and distinct")]
    BadHeads,
    #[error("the public key is not a valid Ed25519 key")]
    BadKey,
    #[error("the signature does not verify against the signer's key")]
    Invalid,
    #[error("no signing key is registered for device {0}")]
    NoKey(DeviceId),
    #[error("signed by device {signer}, expected {expected}")]
    WrongSigner {
        signer: DeviceId,
        expected: DeviceId,
    },
    #[error("no verified signature of its author covers the change")]
    NotCovered,
    #[error("the change names no author")]
    NoAuthor,
}

/// A device's Ed25519 public key (32 bytes), as the server registered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self, SignatureError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SignatureError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadKey)?;
        VerifyingKey::from_bytes(&key).map_err(|_| SignatureError::BadKey)?;
        Ok(Self(key))
    }
}

/// A device's signing key. Made once, at enrollment, and kept in the device's encrypted store.
#[derive(Clone)]
pub struct DeviceKey {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("public", &self.public().to_hex())
            .finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// The key for 32 seed bytes, which the caller draws from the OS's random source.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The seed, to keep in the device's encrypted store.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// This device's signature over `doc`'s `heads` (sorted and deduplicated here).
    pub fn sign_heads(
        &self,
        device: &DeviceId,
        doc: &DocumentId,
        heads: &[ChangeHash],
    ) -> HeadsSignature {
        let mut heads: Vec<[u8; 32]> = heads.iter().map(|h| h.0).collect();
        heads.sort_unstable();
        heads.dedup();
        let signature = self.key.sign(&message(doc, &heads)).to_bytes().to_vec();
        HeadsSignature {
            doc: doc.clone(),
            heads,
            device: device.clone(),
            signature,
        }
    }
}

/// The signed message: the domain, the protocol version, the document id (length-prefixed)
/// and the sorted heads.
pub fn message(doc: &DocumentId, heads: &[[u8; 32]]) -> Vec<u8> {
    let id = doc.to_string();
    let mut out = Vec::with_capacity(DOMAIN.len() + 1 + 4 + id.len() + 32 * heads.len());
    out.extend_from_slice(DOMAIN);
    out.push(SIGNED_VERSION);
    out.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    for h in heads {
        out.extend_from_slice(h);
    }
    out
}

/// Whether `sig` is `key`'s signature over its document and heads, in either form: over the
/// heads themselves, or over the root of an upload's tree with this document's path
/// (`root.rs`). Strict Ed25519 (no malleable or small-order forms). Heads must be sorted,
/// distinct and at most [`MAX_SIGNED_HEADS`]. An upload's root signature without its path
/// ([`UPLOAD_FORM`]) verifies only once the server has rebuilt the path
/// ([`expand_upload`]).
pub fn verify(sig: &HeadsSignature, key: &PublicKey) -> Result<(), SignatureError> {
    Verifier::new().verify(sig, key)
}

/// The heads of an upload: those of `changes` that no other of them depends on. Every change
/// of the upload is an ancestor-or-self of them, and all of them are in the upload, so the
/// server can check the signature's coverage with what it holds once the upload is applied.
pub fn upload_heads(changes: &[Change]) -> Vec<ChangeHash> {
    let deps: BTreeSet<ChangeHash> = changes
        .iter()
        .flat_map(|c| c.deps().iter().copied())
        .collect();
    let mut heads: Vec<ChangeHash> = changes
        .iter()
        .map(Change::hash)
        .filter(|h| !deps.contains(h))
        .collect();
    heads.sort_unstable();
    heads.dedup();
    heads
}

/// Which of `targets` are ancestors-or-self of `heads`, walking dependencies through `deps`
/// (a change's dependencies, `None` for a change not known). Bounded: each known change is
/// visited once, and the walk stops once every target is found.
pub fn covered_by(
    heads: &[[u8; 32]],
    targets: &BTreeSet<ChangeHash>,
    deps: impl Fn(&ChangeHash) -> Option<Vec<ChangeHash>>,
) -> BTreeSet<ChangeHash> {
    let mut found = BTreeSet::new();
    let mut seen: BTreeSet<ChangeHash> = BTreeSet::new();
    let mut stack: Vec<ChangeHash> = heads.iter().map(|h| ChangeHash(*h)).collect();
    while let Some(h) = stack.pop() {
        if found.len() == targets.len() {
            break;
        }
        if !seen.insert(h) {
            continue;
        }
        let Some(ds) = deps(&h) else { continue };
        if targets.contains(&h) {
            found.insert(h);
        }
        stack.extend(ds.into_iter().filter(|d| !seen.contains(d)));
    }
    found
}

/// Which of `targets` are ancestors-or-self of `heads` in `doc` together with `extra` (changes
/// not applied yet).
pub fn covered(
    doc: &CareDocument,
    extra: &[Change],
    heads: &[[u8; 32]],
    targets: &BTreeSet<ChangeHash>,
) -> BTreeSet<ChangeHash> {
    let extra: BTreeMap<ChangeHash, &Change> = extra.iter().map(|c| (c.hash(), c)).collect();
    covered_by(heads, targets, |h| {
        extra.get(h).map(|c| c.deps().to_vec()).or_else(|| {
            doc.automerge()
                .get_change_by_hash(h)
                .map(|c| c.deps().to_vec())
        })
    })
}

/// The device a change names as its author (in its message), if any.
pub fn author_device(change: &Change) -> Option<DeviceId> {
    change
        .message()
        .and_then(|m| serde_json::from_str::<ChangeMessage>(m).ok())
        .map(|m| m.author.device)
}

/// What [`vouched`] decided, change by change (by hash, in the order given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vouched {
    /// Covered by a verified signature of their author's device.
    pub accepted: Vec<ChangeHash>,
    pub refused: Vec<(ChangeHash, SignatureError)>,
    /// The signatures that verified against their device's key, in the order given (what the
    /// server keeps with the changes they vouch for, without verifying them again).
    pub verified: Vec<(HeadsSignature, PublicKey)>,
}

/// The seam a restored server uses to take, from one device, the changes of others: of
/// `incoming` (changes of `doc` not applied yet, from any relay), exactly those covered by a
/// signature in `signatures` that is by the change's author's device (the author named in the
/// change's message), verifies against that device's key as the server registered it
/// (`key_of`), and whose heads have the change as an ancestor-or-self in `doc` with `incoming`.
/// The caller still runs every accepted change through the model's checks (authorship by
/// actor, schema, role rules), as for any change. Signatures for another document, or beyond
/// [`MAX_SIGNATURES`], are ignored.
pub fn vouched(
    doc: &CareDocument,
    incoming: &[Change],
    signatures: &[HeadsSignature],
    key_of: impl Fn(&DeviceId) -> Option<PublicKey>,
) -> Vouched {
    let mut failed: BTreeMap<DeviceId, SignatureError> = BTreeMap::new();
    let mut good = Vec::new();
    for sig in signatures
        .iter()
        .filter(|s| &s.doc == doc.id())
        .take(MAX_SIGNATURES)
    {
        let outcome = match key_of(&sig.device) {
            Some(key) => verify(sig, &key).map(|()| key),
            None => Err(SignatureError::NoKey(sig.device.clone())),
        };
        match outcome {
            Ok(key) => good.push((sig.clone(), key)),
            Err(e) => {
                failed.insert(sig.device.clone(), e);
            }
        }
    }
    let mut by_author: BTreeMap<DeviceId, BTreeSet<ChangeHash>> = BTreeMap::new();
    let mut out = Vouched {
        verified: good,
        ..Vouched::default()
    };
    let mut author_of: BTreeMap<ChangeHash, Option<DeviceId>> = BTreeMap::new();
    for c in incoming {
        let author = author_device(c);
        if let Some(a) = &author {
            by_author.entry(a.clone()).or_default().insert(c.hash());
        }
        author_of.insert(c.hash(), author);
    }
    let mut ok: BTreeSet<ChangeHash> = BTreeSet::new();
    for (author, targets) in &by_author {
        for (sig, _) in out.verified.iter().filter(|(s, _)| &s.device == author) {
            ok.extend(covered(doc, incoming, &sig.heads, targets));
        }
    }
    for c in incoming {
        let h = c.hash();
        if ok.contains(&h) {
            out.accepted.push(h);
            continue;
        }
        let why = match author_of.get(&h).cloned().flatten() {
            None => SignatureError::NoAuthor,
            Some(a) => failed
                .get(&a)
                .cloned()
                .unwrap_or(SignatureError::NotCovered),
        };
        out.refused.push((h, why));
    }
    out
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
