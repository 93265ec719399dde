//! Signed changes (issue 10) through the real server over TLS: a device signs the heads of what
//! it uploads, the server verifies against the key registered at enrollment and relays the
//! signature to other devices, which keep it; with it, a change that reaches a restored server
//! through any other device can be vouched for (`sync_core::signing::vouched`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::net::{SyncEnd, TestDevice, TestServer};
use nara_tests::*;
use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::model::{CareDocument, EventBody};
use sync_core::protocol::signatures::{self, StoredSignature};
use sync_core::protocol::wire::{self, DeviceMessage, DocChanges, RefusalCode, ServerMessage};
use sync_core::protocol::{DeviceEvent, Signer};
use sync_core::repo::Repo;
use sync_core::signing::{self, DeviceKey, PublicKey, SignatureError};
use sync_core::store::SqliteStore;
use sync_core::{DocumentId, Role, UserId};

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("hemtjanst-norr", "Hemtjänst Norr").unwrap();
    for u in ["anna", "bo"] {
        d.add_user(&uid(u), u, Role::Carer, "hemtjanst-norr")
            .unwrap();
        d.add_patient(&patient("p1"), "p1").ok();
        d.assign(&uid(u), &patient("p1")).unwrap();
    }
    server.state.refresh().unwrap();
    server
}

fn journal() -> DocumentId {
    DocumentId::journal(&patient("p1"), november())
}

fn note(device: &mut TestDevice, id: &str) {
    let author = device.author.clone();
    device
        .repo
        .change(&journal(), &author, at(9, 0), |e| {
            e.record(
                rid(id),
                EventBody::Note {
                    body: format!("note {id}"),
                    corrects: None,
                },
            )
        })
        .unwrap();
}

/// Note number `i` (record `n-{i}`).
fn numbered_note(
    e: &mut sync_core::model::Edit<'_>,
    i: usize,
) -> Result<(), sync_core::ModelError> {
    e.record(
        rid(&format!("n-{i}")),
        EventBody::Note {
            body: format!("note {i}"),
            corrects: None,
        },
    )
}

fn quiet(end: SyncEnd) -> Vec<DeviceEvent> {
    match end {
        SyncEnd::Quiet(events) => events,
        other => panic!("expected a completed sync, got {other:?}"),
    }
}

/// The signatures the server keeps for `doc` (read from its store file beside it).
fn server_signatures(server: &TestServer, doc: &DocumentId) -> Vec<StoredSignature> {
    let repo = Repo::new(SqliteStore::open(server.data.path().join("nara.db")).unwrap());
    signatures::stored(&repo, doc).unwrap()
}

fn registered(server: &TestServer, device: &TestDevice) -> Option<PublicKey> {
    server
        .directory
        .signing_key(&device.author.device)
        .unwrap()
        .map(PublicKey)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_upload_is_stored_with_its_signature_and_relayed_to_another_device() {
    let server = setup().await;
    let mut anna = TestDevice::enroll_signed(&server, "anna", [1; 32]).await;
    let mut bo = TestDevice::enroll_signed(&server, "bo", [2; 32]).await;
    assert_eq!(
        registered(&server, &anna),
        Some(DeviceKey::from_seed([1; 32]).public()),
        "the key sent at enrollment is registered"
    );
    note(&mut anna, "n-1");
    note(&mut anna, "n-2");
    let events = quiet(anna.sync(&server).await);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeviceEvent::UploadAcknowledged { changes: 2 })),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DeviceEvent::ChangeRefused(_))),
        "{events:?}"
    );
    // The server kept the signature over the upload's heads, verified against Anna's key.
    let kept = server_signatures(&server, &journal());
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].signature.device, anna.author.device);
    assert_eq!(kept[0].key, registered(&server, &anna).unwrap());
    let anna_heads: Vec<[u8; 32]> = anna
        .repo
        .get(&journal())
        .unwrap()
        .heads()
        .iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(kept[0].signature.heads, anna_heads);

    // Bo is sent the signature, with Anna's key, right before the batch with her changes.
    bo.record = true;
    quiet(bo.sync(&server).await);
    let at = bo
        .received
        .iter()
        .position(|m| matches!(m, ServerMessage::Signatures { .. }))
        .expect("a Signatures message");
    let ServerMessage::Signatures { keys, signatures } = &bo.received[at] else {
        unreachable!()
    };
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].device, anna.author.device);
    assert_eq!(signatures, &vec![kept[0].signature.clone()]);
    assert!(matches!(
        bo.received.get(at + 1),
        Some(ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. })
    ));
    // Bo keeps it with the changes, durably.
    bo.reopen();
    let held = signatures::stored(&bo.repo, &journal()).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].signature, kept[0].signature);
    assert_eq!(held[0].key, kept[0].key);

    // Cost on the wire: one signature per document and upload (64 bytes, the heads, the
    // device id), whatever the number of changes.
    let doc = anna.repo.get(&journal()).unwrap();
    let changes: Vec<Vec<u8>> = doc
        .history()
        .iter()
        .filter_map(|h| doc.automerge_change(&h.change))
        .filter(|c| c.actor_id() == &anna.author.actor_id())
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    assert_eq!(changes.len(), 2);
    let docs = vec![DocChanges {
        doc: journal(),
        changes,
        positions: vec![],
    }];
    let plain = wire::encode(&DeviceMessage::Upload {
        upload: 1,
        docs: docs.clone(),
    })
    .unwrap();
    let signed = wire::encode(&DeviceMessage::Upload3 {
        upload: 1,
        docs,
        signatures: vec![kept[0].signature.clone()],
    })
    .unwrap();
    let extra = signed.len() - plain.len();
    println!(
        "an upload of 2 changes to 1 document: {} bytes unsigned, {} signed (+{extra})",
        plain.len(),
        signed.len()
    );
    assert!(extra <= 1 + 1 + 64 + 1 + journal().to_string().len() + 1 + 32 + 1 + 64 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_foreign_signature_is_refused_and_audited() {
    let server = setup().await;
    let mut anna = TestDevice::enroll_signed(&server, "anna", [1; 32]).await;
    let bo = TestDevice::enroll_signed(&server, "bo", [2; 32]).await;
    // Signed with a key that is not Anna's registered one (it is offered on connecting too,
    // and never replaces the registered key).
    anna.sign_with(DeviceKey::from_seed([7; 32]));
    note(&mut anna, "n-1");
    let events = quiet(anna.sync(&server).await);
    let refused: Vec<RefusalCode> = events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::ChangeRefused(q) => Some(q.code),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![RefusalCode::BadSignature], "{events:?}");
    assert_eq!(
        registered(&server, &anna),
        Some(DeviceKey::from_seed([1; 32]).public())
    );
    // Signed with Anna's own key, but in Bo's name.
    anna.session.set_signer(Some(Signer {
        device: bo.author.device.clone(),
        key: DeviceKey::from_seed([1; 32]),
    }));
    anna.key = Some(DeviceKey::from_seed([1; 32]));
    note(&mut anna, "n-2");
    let events = quiet(anna.sync(&server).await);
    assert!(
        events.iter().any(|e| matches!(
            e,
            DeviceEvent::ChangeRefused(q) if q.code == RefusalCode::BadSignature
        )),
        "{events:?}"
    );
    // Nothing stored, nothing kept, and every refusal audited.
    assert!(server_signatures(&server, &journal()).is_empty());
    let log = server.audit.export_patient(&patient("p1")).unwrap();
    let refusals = log
        .iter()
        .filter(|r| {
            r.entry.action == AuditAction::Refuse && r.entry.detail.contains("BadSignature")
        })
        .count();
    assert_eq!(refusals, 2, "{log:?}");
    assert!(!log.iter().any(|r| r.entry.action == AuditAction::Accept));
    // The offered foreign key was audited as a failed authentication.
    let conn =
        rusqlite::Connection::open(server::admin_cli::audit_path(server.data.path())).unwrap();
    let offered: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit_log WHERE action = 'auth-failed' \
             AND detail LIKE '%signing key%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(offered >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_change_verifies_with_its_authors_signature_and_a_tampered_one_does_not() {
    let server = setup().await;
    let mut anna = TestDevice::enroll_signed(&server, "anna", [1; 32]).await;
    let mut bo = TestDevice::enroll_signed(&server, "bo", [2; 32]).await;
    note(&mut anna, "n-1");
    note(&mut anna, "n-2");
    quiet(anna.sync(&server).await);
    quiet(bo.sync(&server).await);
    // Bo writes too: his own change is his to hand back, not a relay's.
    note(&mut bo, "n-3");
    quiet(bo.sync(&server).await);

    // What Bo holds of Anna's, and her signature, handed to a restored server (a fresh
    // document), checked against the keys the server registered.
    bo.reopen();
    let held = bo.repo.get(&journal()).unwrap();
    let incoming: Vec<automerge::Change> = held
        .history()
        .iter()
        .filter_map(|h| held.automerge_change(&h.change))
        .filter(|c| signing::author_device(c).is_some())
        .collect();
    assert_eq!(incoming.len(), 3);
    let sigs: Vec<wire::HeadsSignature> = signatures::stored(&bo.repo, &journal())
        .unwrap()
        .into_iter()
        .map(|s| s.signature)
        .collect();
    let key_of = |d: &sync_core::DeviceId| server.directory.signing_key(d).unwrap().map(PublicKey);
    let restored = CareDocument::new(journal()).unwrap();
    let anna_changes: Vec<_> = incoming
        .iter()
        .filter(|c| signing::author_device(c).as_ref() == Some(&anna.author.device))
        .map(automerge::Change::hash)
        .collect();
    let v = signing::vouched(&restored, &incoming, &sigs, key_of);
    assert_eq!(v.accepted, anna_changes, "{v:?}");
    assert_eq!(
        v.refused.len(),
        1,
        "Bo's own change is not vouched by a relay"
    );
    assert_eq!(v.refused[0].1, SignatureError::NotCovered);

    // A signature tampered with on the way (one bit), or moved to other heads: nothing.
    let mut bad = sigs.clone();
    bad[0].signature[0] ^= 1;
    let v = signing::vouched(&restored, &incoming, &bad, key_of);
    assert!(v.accepted.is_empty(), "{v:?}");
    assert_eq!(v.refused[0].1, SignatureError::Invalid);
    let mut bad = sigs.clone();
    bad[0].heads = vec![incoming[0].hash().0];
    assert!(
        signing::vouched(&restored, &incoming, &bad, key_of)
            .accepted
            .is_empty()
    );
    // A change altered by the relay is another change (another hash): not covered.
    let mut forged = automerge::Automerge::new();
    forged.set_actor(incoming[0].actor_id().clone());
    let mut tx = forged.transaction();
    automerge::transaction::Transactable::put(&mut tx, automerge::ROOT, "x", 1).unwrap();
    tx.commit_with(
        automerge::transaction::CommitOptions::default()
            .with_message(incoming[0].message().unwrap_or_default().to_owned()),
    );
    let forged_change = forged.get_last_local_change().unwrap().clone();
    assert_eq!(
        signing::author_device(&forged_change),
        Some(anna.author.device.clone())
    );
    let v = signing::vouched(&restored, &[forged_change], &sigs, key_of);
    assert!(v.accepted.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolled_before_signing_registers_its_key_on_connecting() {
    let server = setup().await;
    // Enrolled the old way: no key; its uploads are unsigned and accepted as before.
    let mut anna = TestDevice::enroll(&server, "anna").await;
    note(&mut anna, "n-1");
    quiet(anna.sync(&server).await);
    assert_eq!(registered(&server, &anna), None);
    assert!(server_signatures(&server, &journal()).is_empty());
    // Upgraded: it makes a key and offers it on its authenticated connection.
    anna.sign_with(DeviceKey::from_seed([5; 32]));
    note(&mut anna, "n-2");
    let events = quiet(anna.sync(&server).await);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DeviceEvent::ChangeRefused(_))),
        "{events:?}"
    );
    assert_eq!(
        registered(&server, &anna),
        Some(DeviceKey::from_seed([5; 32]).public())
    );
    let kept = server_signatures(&server, &journal());
    assert_eq!(kept.len(), 1, "the upgraded device's upload is signed");
    // Its next key offer (say, a copied store with another key) does not replace it.
    anna.sign_with(DeviceKey::from_seed([6; 32]));
    quiet(anna.sync(&server).await);
    assert_eq!(
        registered(&server, &anna),
        Some(DeviceKey::from_seed([5; 32]).public())
    );
}

// The sessions driven directly (in-memory stores): the server's checks one by one.

mod sessions {
    use super::*;
    use nara_tests::sim::Assignments;
    use sync_core::protocol::wire::{Hello, IncarnationClaim, Refused};
    use sync_core::protocol::{
        DeviceConfig, DeviceSession, Peer, ServerConfig, ServerEvent, ServerSession,
    };
    use sync_core::store::MemoryStore;
    use sync_core::{Author, Timestamp};

    const NOW: Timestamp = Timestamp(1_795_478_400_000);

    fn author(user: &str) -> Author {
        Author::new(
            uid(user),
            Role::Carer,
            sync_core::DeviceId::new(format!("{user}-phone")).unwrap(),
        )
    }

    struct Phone {
        author: Author,
        repo: Repo<MemoryStore>,
        session: DeviceSession,
    }

    impl Phone {
        fn new(user: &str, key: Option<DeviceKey>) -> Self {
            Self::with_config(user, key, DeviceConfig::default())
        }

        /// A device of an older version: it does not tell its clock, so it speaks version 1.
        fn old(user: &str) -> Self {
            let config = DeviceConfig {
                tell_clock: false,
                ..DeviceConfig::default()
            };
            Self::with_config(user, None, config)
        }

        fn with_config(user: &str, key: Option<DeviceKey>, config: DeviceConfig) -> Self {
            let author = author(user);
            let mut session = DeviceSession::new(config);
            session.set_signer(key.map(|key| Signer {
                device: author.device.clone(),
                key,
            }));
            Self {
                author,
                repo: Repo::new(MemoryStore::new()),
                session,
            }
        }

        fn note(&mut self, id: &str) -> automerge::Change {
            let author = self.author.clone();
            self.repo
                .change(&journal(), &author, at(9, 0), |e| {
                    e.record(
                        rid(id),
                        EventBody::Note {
                            body: format!("note {id}"),
                            corrects: None,
                        },
                    )
                })
                .unwrap();
            let doc = self.repo.get(&journal()).unwrap();
            let head = doc.heads()[0];
            doc.automerge_change(&head).unwrap()
        }
    }

    struct Server {
        repo: Repo<MemoryStore>,
        policy: Assignments,
    }

    impl Server {
        fn new() -> Self {
            let mut policy = Assignments::default();
            for u in ["anna", "bo", "cai"] {
                policy.assign(&uid(u), [&patient("p1")]);
            }
            Self {
                repo: Repo::new(MemoryStore::new()),
                policy,
            }
        }

        fn session(&self, who: &Author, key: Option<PublicKey>) -> ServerSession {
            let mut s = ServerSession::new(
                Peer {
                    author: who.clone(),
                },
                ServerConfig::default(),
            );
            s.set_signing_key(key);
            s
        }
    }

    /// Runs one connection until quiet; returns what the server sent.
    fn run(phone: &mut Phone, server: &mut Server, key: Option<PublicKey>) -> Vec<ServerMessage> {
        let mut session = server.session(&phone.author, key);
        phone.session.connect(&mut phone.repo, NOW).unwrap();
        let mut down = Vec::new();
        loop {
            let mut moved = false;
            while let Some(b) = phone.session.poll_transmit() {
                moved = true;
                session.handle_bytes(&mut server.repo, &server.policy, &b, NOW);
            }
            while let Some(b) = session.poll_transmit() {
                moved = true;
                down.push(wire::decode(&b).unwrap());
                phone.session.handle_bytes(&mut phone.repo, &b, NOW);
            }
            if !moved {
                phone.session.disconnected();
                return down;
            }
        }
    }

    fn refusals(down: &[ServerMessage]) -> Vec<RefusalCode> {
        down.iter()
            .filter_map(|m| match m {
                ServerMessage::UploadAck { refused, .. } => Some(refused.clone()),
                _ => None,
            })
            .flatten()
            .map(|r: Refused| r.code)
            .collect()
    }

    /// The journal's `changes`, as one part of an upload.
    fn journal_part(changes: &[&automerge::Change]) -> DocChanges {
        DocChanges {
            doc: journal(),
            changes: changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
            positions: vec![],
        }
    }

    /// A hello whose upload 0 is `upload`, with `signatures` made by hand.
    fn hello_signed(upload: Vec<DocChanges>, signatures: Vec<wire::HeadsSignature>) -> Vec<u8> {
        wire::encode(&DeviceMessage::Hello3 {
            hello: Hello {
                cursor: None,
                received: vec![],
                priority: vec![],
                backfill: vec![],
                upload,
            },
            device_ms: NOW.0,
            incarnation: IncarnationClaim {
                number: 0,
                written: 0,
                last: None,
            },
            feed_proof: None,
            signatures,
        })
        .unwrap()
    }

    /// A fresh server's answer to `hello` from `who`, whose registered key is `key`: the
    /// refusals, the session's events, and the server.
    fn answer_hello(
        who: &Author,
        key: &DeviceKey,
        hello: Vec<u8>,
    ) -> (Vec<RefusalCode>, Vec<ServerEvent>, Server) {
        let mut server = Server::new();
        let mut session = server.session(who, Some(key.public()));
        session.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
        let events: Vec<ServerEvent> = std::iter::from_fn(|| session.poll_event()).collect();
        let down: Vec<ServerMessage> = std::iter::from_fn(|| session.poll_transmit())
            .map(|b| wire::decode(&b).unwrap())
            .collect();
        (refusals(&down), events, server)
    }

    #[test]
    fn signatures_the_server_cannot_check_are_refused_and_only_v3_devices_are_sent_any() {
        let mut server = Server::new();
        let key = DeviceKey::from_seed([1; 32]);
        let mut anna = Phone::new("anna", Some(key.clone()));
        anna.note("n-1");
        // No key registered for Anna's device: her signed upload cannot be checked.
        let down = run(&mut anna, &mut server, None);
        assert_eq!(refusals(&down), vec![RefusalCode::BadSignature]);
        assert!(
            signatures::stored(&server.repo, &journal())
                .unwrap()
                .is_empty()
        );
        // With her key registered, on another server: stored with its signature.
        let mut anna = Phone::new("anna", Some(key.clone()));
        let mut fresh = Server::new();
        anna.note("n-3");
        let down = run(&mut anna, &mut fresh, Some(key.public()));
        assert!(refusals(&down).is_empty(), "{down:?}");
        assert_eq!(
            signatures::stored(&fresh.repo, &journal()).unwrap().len(),
            1
        );
        // A device of an older version gets the changes and no signatures; a version-3 one both.
        let mut bo = Phone::old("bo");
        let down = run(&mut bo, &mut fresh, None);
        assert!(
            down.iter()
                .any(|m| matches!(m, ServerMessage::Batch { .. }))
        );
        assert!(
            !down
                .iter()
                .any(|m| matches!(m, ServerMessage::Signatures { .. }))
        );
        let mut cai = Phone::new("cai", Some(DeviceKey::from_seed([3; 32])));
        let down = run(
            &mut cai,
            &mut fresh,
            Some(DeviceKey::from_seed([3; 32]).public()),
        );
        assert!(
            down.iter()
                .any(|m| matches!(m, ServerMessage::Signatures { .. }))
        );
        assert_eq!(signatures::stored(&cai.repo, &journal()).unwrap().len(), 1);
        // Cai's access ends: the person's documents and their signatures leave the phone.
        let head = sync_core::store::Store::feed_head(fresh.repo.store()).unwrap();
        fresh.policy.unassign(&uid("cai"), &patient("p1"), head);
        let down = run(
            &mut cai,
            &mut fresh,
            Some(DeviceKey::from_seed([3; 32]).public()),
        );
        assert!(
            down.iter()
                .any(|m| matches!(m, ServerMessage::Withdrawn { .. }))
        );
        assert!(cai.repo.document_ids().unwrap().is_empty());
        assert!(
            signatures::stored(&cai.repo, &journal())
                .unwrap()
                .is_empty()
        );
    }

    /// Changes of two documents written in turn go up signed, each document's together (a
    /// document in two parts of one upload was refused as not covered: turmoil found it).
    #[test]
    fn interleaved_documents_are_signed_and_stored_whole() {
        let key = DeviceKey::from_seed([1; 32]);
        let mut server = Server::new();
        server.policy.assign(&uid("anna"), [&patient("p2")]);
        let mut anna = Phone::new("anna", Some(key.clone()));
        let other = DocumentId::journal(&patient("p2"), november());
        let author = anna.author.clone();
        for i in 0..3 {
            anna.note(&format!("n-{i}"));
            anna.repo
                .change(&other, &author, at(9, 0), |e| {
                    e.record(
                        rid(&format!("m-{i}")),
                        EventBody::Note {
                            body: "x".into(),
                            corrects: None,
                        },
                    )
                })
                .unwrap();
        }
        // Each document once in the upload, with one signature each.
        anna.session.connect(&mut anna.repo, NOW).unwrap();
        let first = anna.session.poll_transmit().unwrap();
        let Ok(DeviceMessage::Hello3 {
            hello, signatures, ..
        }) = wire::decode::<DeviceMessage>(&first)
        else {
            panic!("a signing device says Hello3");
        };
        assert_eq!(hello.upload.len(), 2, "{:?}", hello.upload);
        assert_eq!(hello.upload[0].changes.len(), 3);
        assert_eq!(signatures.len(), 2);
        anna.session.disconnected();
        let down = run(&mut anna, &mut server, Some(key.public()));
        assert!(refusals(&down).is_empty(), "{down:?}");
        for doc in [journal(), other.clone()] {
            assert_eq!(signatures::stored(&server.repo, &doc).unwrap().len(), 1);
        }
        // The same, sent by hand in parts (p1, p2, p1) with one signature per document: the
        // server checks each part with the others.
        let mut server = Server::new();
        let doc = anna.repo.get(&journal()).unwrap();
        let mine: Vec<automerge::Change> = doc
            .history()
            .iter()
            .filter_map(|h| doc.automerge_change(&h.change))
            .filter(|c| c.actor_id() == &author.actor_id())
            .collect();
        let sig = key.sign_heads(&author.device, &journal(), &signing::upload_heads(&mine));
        let parts: Vec<&automerge::Change> = mine.iter().collect();
        let bytes = hello_signed(
            vec![journal_part(&parts[..1]), journal_part(&parts[1..])],
            vec![sig],
        );
        let mut session = server.session(&author, Some(key.public()));
        session.handle_bytes(&mut server.repo, &server.policy, &bytes, NOW);
        let down: Vec<ServerMessage> = std::iter::from_fn(|| session.poll_transmit())
            .map(|b| wire::decode(&b).unwrap())
            .collect();
        assert!(refusals(&down).is_empty(), "{down:?}");
    }

    /// A hello signed by hand: one signature that does not cover the whole upload, or two.
    #[test]
    fn an_upload_its_signature_does_not_cover_or_signed_twice_is_refused() {
        let key = DeviceKey::from_seed([1; 32]);
        let mut anna = Phone::new("anna", None);
        let c1 = anna.note("n-1");
        let c2 = anna.note("n-2");
        let hello = |signatures| hello_signed(vec![journal_part(&[&c1, &c2])], signatures);
        let answer = |bytes| answer_hello(&anna.author, &key, bytes);
        // Signed up to c1 only: c2 is refused, c1 stored.
        let partial = key.sign_heads(&anna.author.device, &journal(), &[c1.hash()]);
        let (refused, events, server) = answer(hello(vec![partial.clone()]));
        assert_eq!(refused, vec![RefusalCode::BadSignature]);
        assert!(events.iter().any(|e| matches!(
            e,
            ServerEvent::Accepted { changes, .. } if changes == &vec![c1.hash()]
        )));
        assert_eq!(
            signatures::stored(&server.repo, &journal()).unwrap()[0].signature,
            partial
        );
        // Two signatures for the document: both changes refused.
        let full = key.sign_heads(&anna.author.device, &journal(), &[c2.hash()]);
        let (refused, _, server) = answer(hello(vec![full.clone(), full.clone()]));
        assert_eq!(refused, vec![RefusalCode::BadSignature; 2]);
        assert!(
            signatures::stored(&server.repo, &journal())
                .unwrap()
                .is_empty()
        );
        // The right one: both stored; and unsigned, as from an older device, too.
        let (refused, _, _) = answer(hello(vec![full]));
        assert!(refused.is_empty());
        let (refused, _, server) = answer(hello(vec![]));
        assert!(refused.is_empty());
        assert!(
            signatures::stored(&server.repo, &journal())
                .unwrap()
                .is_empty()
        );
    }

    /// Root signatures signed by hand, as a hostile or broken device might send them: a root
    /// signature that does not match the upload's other documents', a path it made up, a side
    /// byte out of range, a path longer than any tree. Each refuses its changes
    /// (`BadSignature`), nothing is kept, and the session goes on; the honest form is stored.
    #[test]
    fn root_signatures_that_do_not_hold_are_refused() {
        let key = DeviceKey::from_seed([1; 32]);
        let mut anna = Phone::new("anna", None);
        let c1 = anna.note("n-1");
        let hello = |signatures| hello_signed(vec![journal_part(&[&c1])], signatures);
        let answer = |bytes| {
            let (refused, events, server) = answer_hello(&anna.author, &key, bytes);
            let kept = signatures::stored(&server.repo, &journal()).unwrap();
            (refused, events, kept)
        };
        let device = &anna.author.device;
        let signed = |extra: &[&str]| {
            let mut docs = vec![(journal(), vec![c1.hash()])];
            for p in extra {
                docs.push((
                    DocumentId::journal(&patient(p), november()),
                    vec![automerge::ChangeHash([7; 32])],
                ));
            }
            key.sign_upload(device, &docs)
        };
        let closed = |events: &[ServerEvent]| {
            events
                .iter()
                .any(|e| matches!(e, ServerEvent::Closed { .. }))
        };

        // The honest upload form: stored, and kept with its (empty) path.
        let (refused, events, kept) = answer(hello(signed(&[])));
        assert!(refused.is_empty(), "{refused:?}");
        assert!(!closed(&events), "{events:?}");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].signature.signature[0], signing::PATH_FORM);

        // Its root signature taken from another upload (over other documents too).
        let mut sigs = signed(&[]);
        sigs[0].signature = signed(&["p2"])[0].signature.clone();
        let (refused, events, kept) = answer(hello(sigs));
        assert_eq!(refused, vec![RefusalCode::BadSignature]);
        assert!(!closed(&events), "{events:?}");
        assert!(kept.is_empty());

        // A path made up by the device, a side byte out of range, a path too long.
        let mut made_up = signed(&[]);
        let mut bytes = vec![signing::PATH_FORM];
        bytes.extend_from_slice(&signed(&["p2"])[0].signature[1..65]);
        bytes.push(0);
        bytes.extend_from_slice(&[9; 32]);
        made_up[0].signature = bytes.clone();
        let mut side = made_up.clone();
        side[0].signature[65] = 7;
        let mut long = made_up.clone();
        long[0].signature = bytes[..65].to_vec();
        for _ in 0..=signing::MAX_PATH {
            long[0].signature.push(0);
            long[0].signature.extend_from_slice(&[9; 32]);
        }
        for sigs in [made_up, side, long] {
            let (refused, events, kept) = answer(hello(sigs));
            assert_eq!(refused, vec![RefusalCode::BadSignature]);
            assert!(!closed(&events), "{events:?}");
            assert!(kept.is_empty());
        }
    }
}

/// Version 4: a device that reads root signatures, connected to a server that takes them,
/// signs an upload once for all of its documents (`signing/root.rs`). The server keeps each
/// document's path and relays it; a colleague checks the upload's one signature once and keeps
/// each document's; a device of an older build is not sent what it could not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_signed_once_is_checked_once_by_each_colleague() {
    let server = setup().await;
    let d = &server.directory;
    d.add_user(&uid("cia"), "cia", Role::Carer, "hemtjanst-norr")
        .unwrap();
    let people = ["p1", "p2", "p3"];
    for p in people {
        d.add_patient(&patient(p), p).ok();
        for u in ["anna", "bo", "cia"] {
            d.assign(&uid(u), &patient(p)).ok();
        }
    }
    server.state.refresh().unwrap();
    let mut anna = TestDevice::enroll_signed(&server, "anna", [1; 32]).await;
    anna.root_signatures = true;
    let mut bo = TestDevice::enroll_signed(&server, "bo", [2; 32]).await;
    bo.root_signatures = true;
    bo.record = true;
    let mut cia = TestDevice::enroll_signed(&server, "cia", [3; 32]).await;
    cia.record = true;

    let docs: Vec<DocumentId> = people
        .iter()
        .map(|p| DocumentId::journal(&patient(p), november()))
        .collect();
    let author = anna.author.clone();
    for (i, doc) in docs.iter().enumerate() {
        anna.repo
            .change(doc, &author, at(9, 0), |e| numbered_note(e, i))
            .unwrap();
    }
    let events = quiet(anna.sync(&server).await);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeviceEvent::UploadAcknowledged { changes: 3 })),
        "{events:?}"
    );
    // One signature, kept with each document's path.
    let kept: Vec<StoredSignature> = docs
        .iter()
        .map(|doc| {
            let mut k = server_signatures(&server, doc);
            assert_eq!(k.len(), 1, "{doc}");
            k.remove(0)
        })
        .collect();
    for k in &kept {
        assert_eq!(k.signature.signature[0], signing::PATH_FORM);
        assert_eq!(
            k.signature.signature[1..65],
            kept[0].signature.signature[1..65]
        );
        signing::verify(&k.signature, &DeviceKey::from_seed([1; 32]).public()).unwrap();
    }

    // Bo is relayed the three, checks one signature, and keeps each.
    quiet(bo.sync(&server).await);
    let relayed: Vec<_> = bo
        .received
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Signatures { signatures, .. } => Some(signatures.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(relayed.len(), 3, "{relayed:?}");
    assert_eq!(bo.session.signature_checks(), 1);
    bo.reopen();
    for (doc, k) in docs.iter().zip(&kept) {
        let held = signatures::stored(&bo.repo, doc).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].signature, k.signature);
    }

    // Cia's build reads only signatures per document: it gets the changes, not the paths.
    quiet(cia.sync(&server).await);
    assert!(
        !cia.received
            .iter()
            .any(|m| matches!(m, ServerMessage::Signatures { .. })),
        "{:?}",
        cia.received
    );
    for doc in &docs {
        assert_eq!(
            cia.repo.get(doc).unwrap().heads(),
            anna.repo.get(doc).unwrap().heads(),
            "{doc}"
        );
    }
}

/// The device runtime learns at enrollment that the server takes root signatures, so its very
/// first upload (a day written offline, across people) is signed once; the server keeps each
/// document's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtimes_first_upload_after_enrolling_is_signed_once() {
    let server = setup().await;
    server.directory.add_patient(&patient("p2"), "p2").ok();
    server
        .directory
        .assign(&uid("anna"), &patient("p2"))
        .unwrap();
    server.state.refresh().unwrap();
    let home = tempfile::tempdir().unwrap();
    let request = nara_client::EnrollRequest::from_link(&server.enrollment_string("anna")).unwrap();
    let (anna, _) = nara_client::Device::enroll_with(
        home.path(),
        &request,
        nara_client::SyncOptions::default(),
    )
    .await
    .unwrap();
    let docs = [
        DocumentId::journal(&patient("p1"), november()),
        DocumentId::journal(&patient("p2"), november()),
    ];
    for (i, doc) in docs.iter().enumerate() {
        anna.change(doc, at(9, 0), |e| numbered_note(e, i)).unwrap();
    }
    anna.sync_once().await.unwrap();
    let kept: Vec<StoredSignature> = docs
        .iter()
        .flat_map(|doc| server_signatures(&server, doc))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for k in &kept {
        assert_eq!(k.signature.signature[0], signing::PATH_FORM, "{k:?}");
        assert_eq!(
            k.signature.signature[1..65],
            kept[0].signature.signature[1..65],
            "one signature for the upload"
        );
    }
}
