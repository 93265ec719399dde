//! Signed uploads on the device (protocol version 3): its uploads signed per document, and the
//! signatures the server relays checked before they are kept. See docs/protocol.md, "Signed
//! changes".

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// Whether the server's last answer to a sync request said it takes root signatures ("1").
const ROOT_SERVER_KEY: &str = "sync.root_signatures";

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

    /// Ed25519 checks the signatures relayed to this session cost (each upload's root once).
    pub fn signature_checks(&self) -> u64 {
        self.verifier.checks
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

    /// Whether the server takes uploads signed once over their root, as its answer to a sync
    /// request (`x-nara-signatures: root`) or to the enrollment said. This connection's hello went out
    /// before the answer came, so the answer decides this connection's later uploads and the
    /// next connection's hello; it is kept for that.
    pub fn server_takes_root_signatures<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        takes: bool,
    ) -> Result<(), RepoError> {
        self.root_signing = takes;
        if Self::server_took_root_signatures(repo)? != takes {
            repo.store_mut()
                .set_meta(ROOT_SERVER_KEY, if takes { b"1" } else { b"0" })?;
        }
        Ok(())
    }

    /// What the server's last answer said ([`Self::server_takes_root_signatures`]).
    pub(super) fn server_took_root_signatures<S: Store>(repo: &Repo<S>) -> Result<bool, RepoError> {
        Ok(repo.store().meta(ROOT_SERVER_KEY)?.as_deref() == Some(b"1"))
    }

    /// The server refused an upload signed over its root as badly signed: it does not take root
    /// signatures (put back to an older build since it said it did). Its changes stayed
    /// pending; they go up signed per document on the next connection, started now.
    pub(super) fn server_refused_root_signatures<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
    ) -> Result<(), RepoError> {
        tracing::warn!("the server refused root signatures: signing per document again");
        self.server_takes_root_signatures(repo, false)?;
        self.close(
            CloseReason::Stalled,
            "the server does not take root signatures: connecting again to sign per document",
        );
        Ok(())
    }

    /// The signatures of upload `number` over `changes` (a document's changes in the upload):
    /// one over the upload's root if the server takes that, else one per document.
    pub(super) fn sign_upload(
        &mut self,
        number: u32,
        changes: &BTreeMap<DocumentId, Vec<automerge::Change>>,
    ) -> Vec<HeadsSignature> {
        let Some(s) = &self.signer else {
            return Vec::new();
        };
        if self.root_signing && !changes.is_empty() {
            self.root_signed.insert(number);
            let docs: Vec<(DocumentId, Vec<ChangeHash>)> = changes
                .iter()
                .map(|(doc, cs)| (doc.clone(), signing::upload_heads(cs)))
                .collect();
            return s.key.sign_upload(&s.device, &docs);
        }
        changes
            .iter()
            .map(|(doc, cs)| s.key.sign_heads(&s.device, doc, &signing::upload_heads(cs)))
            .collect()
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
            if let Err(e) = self.verifier.verify(&sig, &key) {
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

    const NOW: Timestamp = Timestamp(1_795_000_000_000);

    /// A note in each of `docs`, written by phone-1, and a signing session that has sent them in
    /// its hello's upload: the session and the upload's signatures.
    fn notes_sent(
        repo: &mut Repo<crate::store::MemoryStore>,
        docs: &[DocumentId],
        root: bool,
    ) -> (DeviceSession, Vec<HeadsSignature>) {
        let (device, key, _) = signer(1);
        let author = crate::Author::new(
            crate::UserId::new("anna").unwrap(),
            crate::Role::Carer,
            device.clone(),
        );
        for (i, doc) in docs.iter().enumerate() {
            repo.change(doc, &author, NOW, |e| {
                e.record(
                    crate::RecordId::new(format!("n{i}")).unwrap(),
                    crate::model::EventBody::Note {
                        body: "note".into(),
                        corrects: None,
                    },
                )
            })
            .unwrap();
        }
        let mut session = DeviceSession::new(DeviceConfig {
            compress: false,
            ..DeviceConfig::default()
        });
        session.set_signer(Some(Signer { device, key }));
        session.server_takes_root_signatures(repo, root).unwrap();
        session.connect(repo, NOW).unwrap();
        let hello = session.poll_transmit().unwrap();
        while session.poll_transmit().is_some() {}
        let DeviceMessage::Hello3 { signatures, .. } = wire::decode(&hello).unwrap() else {
            panic!("a version-3 hello");
        };
        (session, signatures)
    }

    /// Told the server takes root signatures, the next hello's upload is signed once for all of
    /// its documents; told it does not, once per document.
    #[test]
    fn an_upload_is_signed_over_its_root_only_for_a_server_that_takes_it() {
        let december =
            DocumentId::journal(&PatientId::new("p1").unwrap(), "2026-12".parse().unwrap());
        let docs = [journal(), december];
        let mut repo = Repo::new(crate::store::MemoryStore::new());
        let (_, sigs) = notes_sent(&mut repo, &docs, true);
        assert_eq!(sigs.len(), 2);
        assert!(sigs.iter().all(|s| s.signature[0] == signing::UPLOAD_FORM));
        assert_eq!(sigs[0].signature, sigs[1].signature, "one signature");
        let mut expanded = sigs.clone();
        signing::expand_upload(&mut expanded, &signer(1).0);
        for s in &expanded {
            signing::verify(s, &signer(1).1.public()).unwrap();
        }

        let mut repo = Repo::new(crate::store::MemoryStore::new());
        let (_, sigs) = notes_sent(&mut repo, &docs, false);
        assert!(sigs.iter().all(|s| s.signature.len() == 64));
        assert_ne!(sigs[0].signature, sigs[1].signature);
    }

    /// A server that said it takes root signatures and then refuses one as badly signed (put
    /// back to an older build): the changes are not quarantined, they stay pending, and the
    /// next connection signs them per document.
    #[test]
    fn a_server_that_refuses_a_root_signature_gets_the_changes_signed_per_document() {
        let mut repo = Repo::new(crate::store::MemoryStore::new());
        let (mut session, sigs) = notes_sent(&mut repo, &[journal()], true);
        assert_eq!(sigs[0].signature[0], signing::UPLOAD_FORM);
        let ack = ServerMessage::UploadAck {
            upload: 0,
            refused: vec![wire::Refused {
                index: 0,
                code: RefusalCode::BadSignature,
                detail: "the signature is not 64 bytes".into(),
            }],
        };
        session.handle_bytes(&mut repo, &wire::encode(&ack).unwrap(), NOW);
        let events: Vec<DeviceEvent> = std::iter::from_fn(|| session.poll_event()).collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, DeviceEvent::ChangeRefused(_))),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DeviceEvent::Closed { .. })),
            "{events:?}"
        );
        assert!(DeviceSession::quarantined(&repo).unwrap().is_empty());
        assert_eq!(repo.pending().unwrap().len(), 1);
        assert!(!DeviceSession::server_took_root_signatures(&repo).unwrap());

        session.disconnected();
        session.connect(&mut repo, NOW).unwrap();
        let hello = session.poll_transmit().unwrap();
        let DeviceMessage::Hello3 {
            hello, signatures, ..
        } = wire::decode(&hello).unwrap()
        else {
            panic!("a version-3 hello");
        };
        assert_eq!(hello.upload.len(), 1, "the change goes up again");
        assert_eq!(signatures.len(), 1);
        assert_eq!(signatures[0].signature.len(), 64, "signed per document");
    }

    /// Relayed signatures of one colleague's upload over many documents cost one check.
    #[test]
    fn a_colleagues_upload_relayed_for_many_documents_is_checked_once() {
        let (a, a_key, a_public) = signer(1);
        let docs: Vec<(DocumentId, Vec<ChangeHash>)> = (0..20u8)
            .map(|i| {
                let p = PatientId::new(format!("p{i}")).unwrap();
                (DocumentId::medication(&p), heads(i + 1))
            })
            .collect();
        let mut sigs = a_key.sign_upload(&a, &docs);
        signing::expand_upload(&mut sigs, &a);
        let mut session = DeviceSession::new(DeviceConfig::default());
        session.on_signatures(vec![a_public], sigs.clone());
        assert_eq!(session.relayed.len(), 20);
        assert_eq!(session.signature_checks(), 1);
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
