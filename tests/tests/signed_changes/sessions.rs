//! The sessions driven directly (in-memory stores): the server's checks one by one.

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
