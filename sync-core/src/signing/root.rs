//! One signature per upload (root signatures): a device signs the root of a Merkle tree over
//! its upload's documents, once, instead of each document's heads. A colleague's phone then
//! checks one Ed25519 signature per upload it is relayed, not one per document of it: on a
//! team's morning at base (thirty phones, each relayed every colleague's day) that was 780
//! checks a phone, a third of what storing the morning cost it. See docs/protocol.md, "One
//! signature per upload".
//!
//! A leaf is a document's signed message ([`super::message`]: domain, version, document id,
//! sorted heads) hashed under a leaf tag; a node hashes its two children under a node tag; a
//! level's odd last node goes up unchanged. The signed message is [`ROOT_DOMAIN`], the version
//! and the root. A phone is relayed, for one document, the leaf's heads, the signature and the
//! path (the siblings up to the root): it learns nothing of the upload's other documents (each
//! sibling is a hash over document ids and change hashes it cannot guess).
//!
//! The three forms of [`HeadsSignature::signature`]:
//!
//! ```text
//! 64 bytes                                   a signature over this document's heads (version 3)
//! 0x01, 64 bytes, n x (side, 32 bytes)       a root signature with this leaf's path (relayed, kept)
//! 0x02, 64 bytes                             a root signature over this upload's leaves, in the
//!                                            order of the device's signatures in the upload
//! ```
//!
//! The upload form carries no path (it would cost a weak link 33 bytes per level and document):
//! the server rebuilds the tree from the upload itself ([`expand_upload`]) and keeps and relays
//! the path form. The lengths never collide (64, 65 + 33n, 65), and each form's message has its
//! own domain, so no signature of one form passes for another.
//!
//! [`Verifier`] remembers the roots it verified (bounded), so the signature of an upload is
//! checked once for all of its documents.

use std::collections::VecDeque;

use ed25519_dalek::{Signer, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{DeviceKey, MAX_SIGNED_HEADS, PublicKey, SignatureError, message};
use crate::ids::{DeviceId, DocumentId};
use crate::protocol::wire::HeadsSignature;
use automerge::ChangeHash;

/// The domain-separation prefix of a signed root.
pub const ROOT_DOMAIN: &[u8] = b"nara-root\0";
/// The version of the signed root message (the messages on the wire stay version 3: root
/// signatures are negotiated by [`ROOT_SIGNATURES_HEADER`], not by a version byte).
pub const ROOT_VERSION: u8 = 4;
/// The first byte of a root signature with its path (relayed and kept).
pub const PATH_FORM: u8 = 0x01;
/// The first byte of a root signature in an upload (no path: the upload is the tree).
pub const UPLOAD_FORM: u8 = 0x02;
/// Most levels of a path: a tree of [`super::MAX_SIGNATURES`] leaves has 12.
pub const MAX_PATH: usize = 16;

/// The HTTP header of the sync request and of its answer that says "root signatures" (its value
/// [`ROOT_SIGNATURES`]): a device sending it reads the path form when relayed; a server
/// answering with it takes the upload form. A peer of an older build sends neither.
pub const ROOT_SIGNATURES_HEADER: &str = "x-nara-signatures";
/// The value of [`ROOT_SIGNATURES_HEADER`].
pub const ROOT_SIGNATURES: &str = "root";

const LEAF_TAG: &[u8] = b"nara-leaf\0";
const NODE_TAG: &[u8] = b"nara-node\0";
/// One step of a path: the side byte (0: the sibling is on the right, 1: on the left) and the
/// sibling.
const STEP_BYTES: usize = 33;
/// How many verified roots a [`Verifier`] remembers.
const REMEMBERED: usize = 64;

/// A signature's bytes, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Form {
    /// Over one document's heads.
    Heads([u8; 64]),
    /// Over a root, with the path from this document's leaf.
    Path {
        signature: [u8; 64],
        path: Vec<(bool, [u8; 32])>,
    },
    /// Over a root, in an upload, before the server has rebuilt the path.
    Upload([u8; 64]),
}

impl Form {
    pub(super) fn read(bytes: &[u8]) -> Result<Self, SignatureError> {
        let sig = |b: &[u8]| -> Result<[u8; 64], SignatureError> {
            b.try_into().map_err(|_| SignatureError::BadLength)
        };
        if bytes.len() == 64 {
            return Ok(Form::Heads(sig(bytes)?));
        }
        match bytes.split_first() {
            Some((&UPLOAD_FORM, rest)) if rest.len() == 64 => Ok(Form::Upload(sig(rest)?)),
            Some((&PATH_FORM, rest)) if rest.len() >= 64 => {
                let (signature, steps) = rest.split_at(64);
                if steps.len() % STEP_BYTES != 0 || steps.len() / STEP_BYTES > MAX_PATH {
                    return Err(SignatureError::BadLength);
                }
                let path = steps
                    .chunks_exact(STEP_BYTES)
                    .map(|s| {
                        let left = match s[0] {
                            0 => false,
                            1 => true,
                            _ => return Err(SignatureError::BadLength),
                        };
                        let sibling: [u8; 32] =
                            s[1..].try_into().map_err(|_| SignatureError::BadLength)?;
                        Ok((left, sibling))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Form::Path {
                    signature: sig(signature)?,
                    path,
                })
            }
            _ => Err(SignatureError::BadLength),
        }
    }
}

fn path_bytes(signature: &[u8; 64], path: &[(bool, [u8; 32])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 64 + STEP_BYTES * path.len());
    out.push(PATH_FORM);
    out.extend_from_slice(signature);
    for (left, sibling) in path {
        out.push(u8::from(*left));
        out.extend_from_slice(sibling);
    }
    out
}

/// A document's leaf: its signed message under the leaf tag.
pub fn leaf(doc: &DocumentId, heads: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LEAF_TAG);
    h.update(message(doc, heads));
    h.finalize().into()
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(NODE_TAG);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The signed message of a root.
pub fn root_message(root: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROOT_DOMAIN.len() + 1 + 32);
    out.extend_from_slice(ROOT_DOMAIN);
    out.push(ROOT_VERSION);
    out.extend_from_slice(root);
    out
}

/// The tree's levels, leaves first, root last (one node). `leaves` is not empty.
fn levels(leaves: Vec<[u8; 32]>) -> Vec<Vec<[u8; 32]>> {
    let mut levels = vec![leaves];
    while let Some(below) = levels.last().filter(|l| l.len() > 1) {
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node(l, r),
                [odd] => *odd,
                _ => unreachable!("chunks(2) gives one or two"),
            })
            .collect();
        levels.push(above);
    }
    levels
}

/// The path of leaf `index` up to the root: each level's sibling, if it has one.
fn path_of(levels: &[Vec<[u8; 32]>], mut index: usize) -> Vec<(bool, [u8; 32])> {
    let mut path = Vec::new();
    for level in &levels[..levels.len().saturating_sub(1)] {
        let sibling = index ^ 1;
        if let Some(s) = level.get(sibling) {
            path.push((sibling < index, *s));
        }
        index /= 2;
    }
    path
}

/// The root a leaf and its path lead to.
pub fn fold(leaf: [u8; 32], path: &[(bool, [u8; 32])]) -> [u8; 32] {
    path.iter().fold(leaf, |acc, (left, sibling)| match left {
        true => node(sibling, &acc),
        false => node(&acc, sibling),
    })
}

impl DeviceKey {
    /// This device's one signature over an upload's documents and heads (each document's
    /// heads sorted and deduplicated here), as one [`HeadsSignature`] per document in the
    /// upload form, in the order given: the server rebuilds the tree in that order.
    pub fn sign_upload(
        &self,
        device: &DeviceId,
        docs: &[(DocumentId, Vec<ChangeHash>)],
    ) -> Vec<HeadsSignature> {
        let docs: Vec<(DocumentId, Vec<[u8; 32]>)> = docs
            .iter()
            .map(|(doc, heads)| {
                let mut heads: Vec<[u8; 32]> = heads.iter().map(|h| h.0).collect();
                heads.sort_unstable();
                heads.dedup();
                (doc.clone(), heads)
            })
            .collect();
        if docs.is_empty() {
            return Vec::new();
        }
        let leaves = docs.iter().map(|(d, h)| leaf(d, h)).collect();
        let levels = levels(leaves);
        let root = levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default();
        let signature = self.key.sign(&root_message(&root)).to_bytes();
        let mut bytes = Vec::with_capacity(65);
        bytes.push(UPLOAD_FORM);
        bytes.extend_from_slice(&signature);
        docs.into_iter()
            .map(|(doc, heads)| HeadsSignature {
                doc,
                heads,
                device: device.clone(),
                signature: bytes.clone(),
            })
            .collect()
    }
}

/// The upload's root signatures by `device` (the connected one) given the path of their leaf in
/// the tree of all of them, in their order in `sigs`: what the server checks, keeps and relays.
/// They must all carry the same signature (one upload, one signature); if they do not, they
/// are left as they are, and each fails to verify. Other signatures are untouched.
pub fn expand_upload(sigs: &mut [HeadsSignature], device: &DeviceId) {
    let mine: Vec<usize> = (0..sigs.len())
        .filter(|&i| {
            sigs[i].device == *device
                && matches!(Form::read(&sigs[i].signature), Ok(Form::Upload(_)))
        })
        .collect();
    let Some(&first) = mine.first() else {
        return;
    };
    let Ok(Form::Upload(signature)) = Form::read(&sigs[first].signature) else {
        return;
    };
    if mine
        .iter()
        .any(|&i| sigs[i].signature[1..] != signature[..])
    {
        return;
    }
    let leaves = mine
        .iter()
        .map(|&i| leaf(&sigs[i].doc, &sigs[i].heads))
        .collect();
    let levels = levels(leaves);
    for (n, &i) in mine.iter().enumerate() {
        sigs[i].signature = path_bytes(&signature, &path_of(&levels, n));
    }
}

/// Checks signatures, remembering the roots that verified (the last [`REMEMBERED`]), so that an
/// upload's one signature is checked once for all of its documents. What it answers is what
/// [`super::verify`] answers.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    verified: VecDeque<(PublicKey, [u8; 32], [u8; 64])>,
    /// Ed25519 checks made (each root once while remembered): for tests and counters.
    pub checks: u64,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `sig` is `key`'s, as [`super::verify`] decides.
    pub fn verify(&mut self, sig: &HeadsSignature, key: &PublicKey) -> Result<(), SignatureError> {
        check_heads(&sig.heads)?;
        match Form::read(&sig.signature)? {
            Form::Heads(bytes) => {
                self.checks += 1;
                ed25519(key, &message(&sig.doc, &sig.heads), &bytes)
            }
            Form::Upload(_) => Err(SignatureError::NoPath),
            Form::Path { signature, path } => {
                let root = fold(leaf(&sig.doc, &sig.heads), &path);
                let entry = (*key, root, signature);
                if self.verified.contains(&entry) {
                    return Ok(());
                }
                self.checks += 1;
                ed25519(key, &root_message(&root), &signature)?;
                if self.verified.len() == REMEMBERED {
                    self.verified.pop_front();
                }
                self.verified.push_back(entry);
                Ok(())
            }
        }
    }
}

/// Heads must be sorted, distinct, and at most [`MAX_SIGNED_HEADS`].
pub(super) fn check_heads(heads: &[[u8; 32]]) -> Result<(), SignatureError> {
    if heads.is_empty() || heads.len() > MAX_SIGNED_HEADS || heads.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(SignatureError::BadHeads);
    }
    Ok(())
}

/// Strict Ed25519: no malleable or small-order forms.
pub(super) fn ed25519(
    key: &PublicKey,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(&key.0).map_err(|_| SignatureError::BadKey)?;
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
#[path = "root_tests.rs"]
mod tests;
