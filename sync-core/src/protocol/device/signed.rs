//! Signed uploads on the device (protocol version 3): its uploads signed per document, and the
//! signatures the server relays checked before they are kept. See docs/protocol.md, "Signed
//! changes".

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// This device's identity and signing key: with it, the session speaks version 3 (when it
/// tells its clock) and signs the heads of every document it uploads to.
#[derive(Debug, Clone)]
pub struct Signer {
    pub device: DeviceId,
    pub key: DeviceKey,
}

impl DeviceSession {
    /// Signs uploads with `signer` from the next connection on (see docs/protocol.md, "Signed
    /// changes"); `None` uploads unsigned, as a version-1 or -2 device.
    pub fn set_signer(&mut self, signer: Option<Signer>) {
        self.signer = signer;
    }

    /// Whether this session signs its uploads (and speaks version 3).
    pub(super) fn signs(&self) -> bool {
        self.config.tell_clock && self.signer.is_some()
    }

    pub(super) fn send_upload(
        &mut self,
        upload: u32,
        docs: Vec<DocChanges>,
        signatures: Vec<HeadsSignature>,
    ) {
        if self.signs() {
            self.send(&DeviceMessage::Upload3 {
                upload,
                docs,
                signatures,
            });
        } else {
            self.send(&DeviceMessage::Upload { upload, docs });
        }
    }

    /// Signatures the server relays for the next batch: each must verify against the key the
    /// server gives for its device (the server is the authority for keys), then is kept with
    /// the batch's changes. One that does not is dropped.
    ///
    /// Of a device's signatures for one document only the last that verifies is kept (each
    /// replaces the one before it, see [`signatures::keep`]), so they are checked from the
    /// last back and the earlier ones are not checked at all: a phone catching up on a day of
    /// visits would otherwise check one signature per upload of each colleague.
    pub(super) fn on_signatures(&mut self, keys: Vec<SignerKey>, sigs: Vec<HeadsSignature>) {
        let keys: BTreeMap<DeviceId, PublicKey> = keys
            .into_iter()
            .take(MAX_SIGNATURES)
            .map(|k| (k.device, PublicKey(k.key)))
            .collect();
        let mut chosen: Vec<StoredSignature> = Vec::new();
        let mut signers: BTreeSet<(DocumentId, DeviceId)> = BTreeSet::new();
        for sig in sigs.into_iter().take(MAX_SIGNATURES).rev() {
            let signer = (sig.doc.clone(), sig.device.clone());
            if signers.contains(&signer) {
                continue;
            }
            let Some(key) = keys.get(&sig.device).copied() else {
                tracing::warn!(doc = %sig.doc, device = %sig.device, "relayed signature without its key");
                continue;
            };
            if let Err(e) = signing::verify(&sig, &key) {
                tracing::warn!(doc = %sig.doc, device = %sig.device, error = %e, "relayed signature does not verify");
                continue;
            }
            signers.insert(signer);
            chosen.push(StoredSignature {
                signature: sig,
                key,
                anchor: 0,
            });
        }
        // These replace the same devices' signatures for the same documents relayed earlier
        // for this batch.
        self.relayed
            .retain(|s| !signers.contains(&(s.signature.doc.clone(), s.signature.device.clone())));
        for sig in chosen.into_iter().rev() {
            if self.relayed.len() < MAX_SIGNATURES {
                self.relayed.push(sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PatientId;

    fn journal() -> DocumentId {
        DocumentId::journal(&PatientId::new("p1").unwrap(), "2026-11".parse().unwrap())
    }

    fn signer(seed: u8) -> (DeviceId, DeviceKey, SignerKey) {
        let device = DeviceId::new(format!("phone-{seed}")).unwrap();
        let key = DeviceKey::from_seed([seed; 32]);
        let public = SignerKey {
            device: device.clone(),
            key: key.public().0,
        };
        (device, key, public)
    }

    fn heads(n: u8) -> Vec<ChangeHash> {
        vec![ChangeHash([n; 32])]
    }

    /// A catch-up relays one signature per upload of each colleague; only the last of each
    /// device for a document is kept, and one that does not verify leaves the one before it.
    #[test]
    fn of_a_devices_signatures_for_a_document_the_last_that_verifies_is_kept() {
        let (a, a_key, a_public) = signer(1);
        let (b, b_key, b_public) = signer(2);
        let medication = DocumentId::medication(&PatientId::new("p1").unwrap());
        let mut forged = a_key.sign_heads(&a, &journal(), &heads(4));
        forged.signature[0] ^= 1;
        let sigs = vec![
            a_key.sign_heads(&a, &journal(), &heads(1)),
            b_key.sign_heads(&b, &journal(), &heads(2)),
            a_key.sign_heads(&a, &journal(), &heads(3)),
            a_key.sign_heads(&a, &medication, &heads(5)),
            forged,
        ];
        let mut session = DeviceSession::new(DeviceConfig::default());
        session.on_signatures(vec![a_public.clone(), b_public.clone()], sigs.clone());
        let relayed: Vec<&HeadsSignature> = session.relayed.iter().map(|s| &s.signature).collect();
        assert_eq!(relayed, [&sigs[1], &sigs[2], &sigs[3]]);
        assert_eq!(session.relayed[0].key, b_key.public());

        // A later message for the same batch replaces what it has a newer one of.
        let newer = a_key.sign_heads(&a, &journal(), &heads(6));
        session.on_signatures(vec![a_public], vec![newer.clone()]);
        let relayed: Vec<&HeadsSignature> = session.relayed.iter().map(|s| &s.signature).collect();
        assert_eq!(relayed, [&sigs[1], &sigs[3], &newer]);
    }
}
