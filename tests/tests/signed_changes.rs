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
#[path = "signed_changes/sessions.rs"]
mod sessions;

/// Root signatures: a device that reads them, connected to a server that takes them,
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
