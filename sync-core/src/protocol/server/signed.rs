//! Signed uploads (protocol version 3): a device's signature over the heads of each document
//! it uploads to, checked against its registered key before the changes are stored, kept with
//! them in one transaction, and relayed to version-3 devices with the batches that carry the
//! changes they cover. See docs/protocol.md, "Signed changes".

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Change, ChangeHash};

use super::*;
use crate::protocol::signatures::{self, StoredSignature};
use crate::protocol::wire::{HeadsSignature, SignerKey};
use crate::signing::{self, MAX_SIGNATURES, PublicKey};

/// What an upload's signatures for one document decide.
#[derive(Debug, Default)]
pub(super) struct Signed {
    /// Changes to refuse ([`RefusalCode::BadSignature`]), with why.
    pub refused: Vec<(ChangeHash, String)>,
    /// The verified signature to keep once the changes are stored.
    pub keep: Option<StoredSignature>,
}

impl ServerSession {
    /// Checks the upload's signatures for `doc` against the device's registered key: each
    /// must be this device's and verify, and together they must cover every change of
    /// `to_apply` the server does not hold yet (walking the stored document and `upload`, the
    /// document's changes in the whole upload). A document the upload signed nothing for is
    /// unsigned, as from a version-1 or -2 device. An honest device signs each document once
    /// per upload; more than one signature for a document refuses its changes (each would be
    /// a walk of the document's history).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_signed<P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<impl Store>,
        policy: &P,
        doc: &DocumentId,
        sigs: &[&HeadsSignature],
        to_apply: &[Change],
        upload: &[Change],
        held: &BTreeSet<ChangeHash>,
    ) -> Result<Signed, RepoError> {
        let targets: BTreeSet<ChangeHash> = to_apply
            .iter()
            .map(Change::hash)
            .filter(|h| !held.contains(h))
            .collect();
        if sigs.is_empty() || targets.is_empty() {
            return Ok(Signed::default());
        }
        let all = |why: String| Signed {
            refused: targets.iter().map(|h| (*h, why.clone())).collect(),
            keep: None,
        };
        // Other devices' signatures vouch for their changes handed back in a recovery
        // (`vouched`): each must verify against its device's registered key, or the upload is
        // not what it says. The upload's own signature is the connected device's.
        for s in sigs.iter().filter(|s| s.device != self.peer.author.device) {
            let Some(key) = policy.signing_key(&s.device) else {
                return Ok(all(format!(
                    "signed as device {}, which has no key",
                    s.device
                )));
            };
            if self.verifier.verify(s, &key).is_err() {
                return Ok(all(format!(
                    "a signature as device {} does not verify",
                    s.device
                )));
            }
        }
        let sigs: Vec<&HeadsSignature> = sigs
            .iter()
            .copied()
            .filter(|s| s.device == self.peer.author.device)
            .collect();
        if sigs.is_empty() {
            return Ok(Signed::default());
        }
        if sigs.len() > 1 {
            return Ok(all("more than one signature for the document".into()));
        }
        let Some(key) = self.signing_key else {
            return Ok(all("no signing key is registered for this device".into()));
        };
        for s in &sigs {
            if let Err(e) = self.verifier.verify(s, &key) {
                return Ok(all(e.to_string()));
            }
        }
        let d = repo.get(doc)?;
        let mut covered = BTreeSet::new();
        for s in &sigs {
            covered.extend(signing::covered(d, upload, &s.heads, &targets));
        }
        let refused = targets
            .difference(&covered)
            .map(|h| (*h, "not covered by the upload's signature".to_owned()))
            .collect();
        Ok(Signed {
            refused,
            keep: sigs.last().map(|s| StoredSignature {
                signature: (*s).clone(),
                key,
                anchor: 0,
            }),
        })
    }

    /// Of `foreign` (changes of `doc` by other devices that the server lacks, handed back by
    /// this one), those a signature of their author's device in the upload vouches for (it
    /// verifies against that device's registered key and its heads have the change in their
    /// history), with the signatures that did, to keep with them.
    pub(super) fn vouched<P: AccessPolicy>(
        &self,
        repo: &mut Repo<impl Store>,
        policy: &P,
        doc: &DocumentId,
        foreign: &[Change],
        signed_by_doc: &BTreeMap<&DocumentId, Vec<&HeadsSignature>>,
    ) -> Result<(BTreeSet<ChangeHash>, Vec<StoredSignature>), RepoError> {
        let others: Vec<HeadsSignature> = signed_by_doc
            .get(doc)
            .into_iter()
            .flatten()
            .filter(|s| s.device != self.peer.author.device)
            .map(|s| (*s).clone())
            .collect();
        if foreign.is_empty() || others.is_empty() {
            return Ok((BTreeSet::new(), Vec::new()));
        }
        let d = repo.get(doc)?;
        let outcome = signing::vouched(d, foreign, &others, |dev| policy.signing_key(dev));
        let accepted: BTreeSet<ChangeHash> = outcome.accepted.into_iter().collect();
        // The signatures `vouched` verified, kept as they are. Each was verified again here
        // before, a third time with `check_signed`'s: work a device's upload made the server
        // do for nothing.
        let keep = if accepted.is_empty() {
            Vec::new()
        } else {
            outcome
                .verified
                .into_iter()
                .take(MAX_SIGNATURES)
                .map(|(signature, key)| StoredSignature {
                    signature,
                    key,
                    anchor: 0,
                })
                .collect()
        };
        Ok((accepted, keep))
    }

    /// Of `foreign` (other devices' changes of `doc`, a document this device may not write,
    /// handed back in a recovery, that the server lacks), stores those their author's
    /// signature vouches for (`vouched`) whose author may write `doc`, with the signatures,
    /// and returns them. The relay's own access does not matter: it only holds them (its
    /// access ended while this server, put back, lost them) and the author's signature, not
    /// the relay, vouches for them; nothing is sent to it. Where else the only copy of a
    /// change whose author's device was put back too would stay quarantined on a device
    /// whose user did not write it (simulation seed 2791).
    pub(super) fn take_relayed<P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<impl Store>,
        policy: &P,
        doc: &DocumentId,
        foreign: Vec<Change>,
        signed_by_doc: &BTreeMap<&DocumentId, Vec<&HeadsSignature>>,
    ) -> Result<BTreeSet<ChangeHash>, RepoError> {
        if foreign.is_empty() {
            return Ok(BTreeSet::new());
        }
        let (vouched, keep) = self.vouched(repo, policy, doc, &foreign, signed_by_doc)?;
        let to_apply: Vec<Change> = foreign
            .into_iter()
            .filter(|c| vouched.contains(&c.hash()))
            .filter(|c| {
                incarnation::message_of(c).is_some_and(|m| {
                    policy.may_write(
                        &Peer {
                            author: m.author.person(),
                        },
                        doc,
                    )
                })
            })
            .collect();
        if to_apply.is_empty() {
            return Ok(BTreeSet::new());
        }
        let outcome = repo.grouped(|repo| {
            let outcome = repo.apply_changes(doc, to_apply)?;
            if !outcome.applied.is_empty() {
                for sig in keep {
                    Self::keep_signature(repo, sig)?;
                }
            }
            Ok(outcome)
        })?;
        self.record_written(repo, &outcome.applied)?;
        let applied: BTreeSet<ChangeHash> = outcome.applied.iter().map(Change::hash).collect();
        if !applied.is_empty() {
            self.events.push_back(ServerEvent::Accepted {
                doc: doc.clone(),
                changes: outcome.applied.iter().map(Change::hash).collect(),
            });
        }
        Ok(applied)
    }

    /// Stores `sig`'s document's applied changes' signature, anchored at the highest feed
    /// position of its heads (in the caller's group, with the changes).
    pub(super) fn keep_signature(
        repo: &mut Repo<impl Store>,
        sig: StoredSignature,
    ) -> Result<(), RepoError> {
        signatures::keep_anchored(repo, sig)
    }

    /// The signatures to relay with a batch: for each document, those whose anchor (the last
    /// change they cover) is among the batch's changes of that document, except the device's own.
    pub(super) fn relay_signatures(
        &mut self,
        repo: &mut Repo<impl Store>,
        sent: &BTreeMap<DocumentId, BTreeSet<u64>>,
    ) -> Result<(), RepoError> {
        if !self.v3 {
            return Ok(());
        }
        let mut keys: BTreeMap<DeviceId, PublicKey> = BTreeMap::new();
        let mut out = Vec::new();
        for (doc, seqs) in sent {
            for s in signatures::stored(repo, doc)? {
                if s.signature.device != self.peer.author.device
                    && seqs.contains(&s.anchor)
                    && (self.reads_root_signatures || s.signature.signature.len() == 64)
                    && out.len() < MAX_SIGNATURES
                {
                    keys.insert(s.signature.device.clone(), s.key);
                    out.push(s.signature);
                }
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        self.send(&ServerMessage::Signatures {
            keys: keys
                .into_iter()
                .map(|(device, key)| SignerKey { device, key: key.0 })
                .collect(),
            signatures: out,
        })
    }
}
