//! Signed uploads on the device (protocol version 3): its uploads signed per document, and the
//! signatures the server relays checked before they are kept. See docs/protocol.md, "Signed
//! changes".

use std::collections::BTreeMap;

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
    pub(super) fn on_signatures(&mut self, keys: Vec<SignerKey>, sigs: Vec<HeadsSignature>) {
        let keys: BTreeMap<DeviceId, PublicKey> = keys
            .into_iter()
            .take(MAX_SIGNATURES)
            .map(|k| (k.device, PublicKey(k.key)))
            .collect();
        for sig in sigs.into_iter().take(MAX_SIGNATURES) {
            let Some(key) = keys.get(&sig.device).copied() else {
                tracing::warn!(doc = %sig.doc, device = %sig.device, "relayed signature without its key");
                continue;
            };
            if let Err(e) = signing::verify(&sig, &key) {
                tracing::warn!(doc = %sig.doc, device = %sig.device, error = %e, "relayed signature does not verify");
                continue;
            }
            if self.relayed.len() < MAX_SIGNATURES {
                self.relayed.push(StoredSignature {
                    signature: sig,
                    key,
                    anchor: 0,
                });
            }
        }
    }
}
