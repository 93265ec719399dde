//! Incarnations, the pure parts: a device session and a server session over in-memory stores,
//! with a store restored from a backup, a store copied to a second phone, and an
//! acknowledgement lost before a restore. Nothing is lost, nothing is duplicated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::ids::{
    Author, DeviceId, DocumentId, Month, PatientId, RecordId, Role, Timestamp, UserId,
};
use crate::model::records::EventBody;
use crate::protocol::{
    AccessPolicy, DeviceConfig, DeviceEvent, DeviceSession, Peer, ServerConfig, ServerEvent,
    ServerSession,
};
use crate::repo::Repo;
use crate::store::{MemoryStore, Store};

const NOW: Timestamp = Timestamp(1_795_000_000_000);

/// A copy backfilled a person at the cursor its original still presents.
mod copy_backfill;
/// A withdrawn person forgotten only once the server's answer shows it was not put back.
mod forgotten_after_answer;
/// A hello's forgotten patients are noted only if the device may read them.
mod forgotten_unreadable;
/// Forks later in a connection.
mod fork;
/// A copy's change stored after the hello, under a counter both installations used.
mod fork_sent_live;
/// Each message from the server costs the device at most one commit.
mod one_commit;
/// Another device's change handed back to a restored server, forking its author's history.
mod orphaned;
/// Uploads written behind a hello that is answered with `Reincarnate`.
mod pipelined;
/// What a device holds quarantined when a copy of its store forks it.
mod quarantine;
/// A write counter used again by a refused change after a restore, and a copy that lacks the
/// change stored under it.
mod refused_counter;
/// A device takes no incarnation number past the bound.
mod reincarnate_bound;
/// A vouched change handed back by a device that may no longer write there.
mod relay_unwritable;
/// Records taken back at different moments, written again in an order that fits.
mod rewrite_order;
/// A server that lost an acknowledged change.
mod server_lost;
/// A server put back to before changes a device holds: their author lost access since, or
/// the device is told to reincarnate.
mod server_put_back;
/// The server's state per installation.
mod shared_state;
/// One document in many parts of one upload: each check runs once per document.
mod split_upload;
/// A text edit taken back, made again once.
mod text_taken_back;
/// Batches that arrive together, stored as one.
mod together;
/// A version-1 device (no recovery) told to resync after a new epoch: Automerge's sync.
mod version_1;
/// A copy's change a restored server lost, held by another device, withdrawn from it.
mod withdrawn_fork;
/// A server put back while a withdrawn person waits to be forgotten on a device.
mod withdrawn_not_forgotten;

/// The team, copies, assignments and signing devices, shared by several of these tests.
mod support;
use support::*;

struct Everyone;

impl AccessPolicy for Everyone {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        vec![patient()]
    }
}

fn patient() -> PatientId {
    PatientId::new("p-1").unwrap()
}

fn journal() -> DocumentId {
    DocumentId::journal(&patient(), Month::new(2026, 11).unwrap())
}

fn author(user: &str, role: Role, device: &str) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        role,
        DeviceId::new(device).unwrap(),
    )
}

struct Phone {
    author: Author,
    store: MemoryStore,
}

impl Phone {
    fn new(author: Author) -> Self {
        Self {
            author,
            store: MemoryStore::new(),
        }
    }

    fn note(&self, id: &str) {
        let mut repo = Repo::new(self.store.clone());
        repo.change(&journal(), &self.author, NOW, |e| {
            e.record(
                RecordId::new(id).unwrap(),
                EventBody::Note {
                    body: format!("note {id}"),
                    corrects: None,
                },
            )
        })
        .unwrap();
    }

    /// How many changes of the journal write `events/<id>`, and whether the record is there.
    fn count(&self, id: &str) -> usize {
        count_in(&self.store, id)
    }
}

fn count_in(store: &MemoryStore, id: &str) -> usize {
    let mut repo = Repo::new(store.clone());
    let doc = repo.get(&journal()).unwrap();
    let path = format!("events/{id}");
    let writes = doc
        .history()
        .iter()
        .filter(|h| h.writes.contains(&path))
        .count();
    assert_eq!(
        writes > 0,
        doc.event(&RecordId::new(id).unwrap()).is_some(),
        "{id}"
    );
    writes
}

/// One connection: the hello, then messages both ways until neither side has anything to say.
/// `deliver_to_device: false` loses everything the server sends (a cut connection).
fn sync_with(
    phone: &Phone,
    server: &MemoryStore,
    deliver_to_device: bool,
) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    sync_cut(
        phone,
        server,
        if deliver_to_device { usize::MAX } else { 0 },
    )
}

/// [`sync_with`], the connection cut after the device has read `deliver` messages.
fn sync_cut(
    phone: &Phone,
    server: &MemoryStore,
    deliver: usize,
) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    sync_under(phone, server, deliver, &Everyone)
}

/// [`sync_cut`] under `policy`.
fn sync_under<P: AccessPolicy>(
    phone: &Phone,
    server: &MemoryStore,
    deliver: usize,
    policy: &P,
) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    sync_as(phone, server, deliver, policy, false)
}

/// [`sync_under`], the device signing its uploads and the server knowing its key if `signed`.
fn sync_as<P: AccessPolicy>(
    phone: &Phone,
    server: &MemoryStore,
    deliver: usize,
    policy: &P,
    signed: bool,
) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    let Open {
        mut device,
        mut session,
        ..
    } = open(phone, server, deliver, policy, signed);
    let devents = std::iter::from_fn(|| device.poll_event()).collect();
    let sevents = std::iter::from_fn(|| session.poll_event()).collect();
    (devents, sevents)
}

/// A connection of `phone` to `server`, run until neither side has anything to say, and left
/// open: both sessions and the repos they ran on.
struct Open {
    device: DeviceSession,
    session: ServerSession,
    drepo: Repo<MemoryStore>,
    srepo: Repo<MemoryStore>,
}

/// Opens a connection of `phone` to `server` ([`Open`]); the device reads the first `deliver`
/// messages of the server's (see [`pump`]).
fn open<P: AccessPolicy>(
    phone: &Phone,
    server: &MemoryStore,
    deliver: usize,
    policy: &P,
    signed: bool,
) -> Open {
    let mut drepo = Repo::new(phone.store.clone());
    let mut srepo = Repo::new(server.clone());
    let (mut device, mut session) = sessions(phone, signed);
    device.connect(&mut drepo, NOW).unwrap();
    pump(
        &mut device,
        &mut session,
        &mut drepo,
        &mut srepo,
        policy,
        deliver,
    );
    Open {
        device,
        session,
        drepo,
        srepo,
    }
}

/// A device session for `phone` and the server's session for its connection; if `signed`,
/// the device signs its uploads and the server knows its key.
fn sessions(phone: &Phone, signed: bool) -> (DeviceSession, ServerSession) {
    let mut device = DeviceSession::new(DeviceConfig::default());
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        ServerConfig::default(),
    );
    if signed {
        device.set_signer(Some(crate::protocol::Signer {
            device: phone.author.device.clone(),
            key: key_of(&phone.author.device),
        }));
        session.set_signing_key(Some(key_of(&phone.author.device).public()));
    }
    (device, session)
}

/// Messages both ways until neither side has anything to say; the device reads the first
/// `deliver` messages the server sends, and loses the rest (a cut connection).
fn pump<P: AccessPolicy>(
    device: &mut DeviceSession,
    session: &mut ServerSession,
    drepo: &mut Repo<MemoryStore>,
    srepo: &mut Repo<MemoryStore>,
    policy: &P,
    deliver: usize,
) {
    let mut delivered = 0usize;
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(bytes) = device.poll_transmit() {
            session.handle_bytes(srepo, policy, &bytes, NOW);
            moved = true;
        }
        while let Some(bytes) = session.poll_transmit() {
            if delivered < deliver {
                device.handle_bytes(drepo, &bytes, NOW);
                delivered += 1;
            }
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn sync(phone: &Phone, server: &MemoryStore) -> (Vec<DeviceEvent>, Vec<ServerEvent>) {
    sync_with(phone, server, true)
}

fn closed(events: &[DeviceEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, DeviceEvent::Closed { .. }))
}

#[test]
fn a_restored_store_goes_on_under_a_new_incarnation_and_loses_nothing() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    phone.note("a1");
    sync(&phone, &server);
    let backup = phone.store.deep_copy().unwrap();
    phone.note("b1");
    phone.note("b2");
    sync(&phone, &server);

    // The backup comes back; the carer writes two notes before syncing.
    let phone = Phone {
        author: phone.author.clone(),
        store: backup,
    };
    phone.note("c1");
    phone.note("c2");
    let (devents, sevents) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(devents.contains(&DeviceEvent::Reincarnated {
        incarnation: 1,
        records: 2
    }));
    assert!(devents.contains(&DeviceEvent::Rewritten { records: 2 }));
    assert!(sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }));
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { .. })),
        "{sevents:?}"
    );
    assert_eq!(
        Repo::new(phone.store.clone()).incarnation().unwrap().number,
        1
    );
    assert!(Repo::new(phone.store.clone()).pending().unwrap().is_empty());

    // The phone is not stuck: it goes on writing under its new incarnation.
    phone.note("d1");
    let (devents, sevents) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(
        !sevents.iter().any(|e| matches!(
            e,
            ServerEvent::Reincarnated { .. } | ServerEvent::CopyDetected { .. }
        )),
        "{sevents:?}"
    );
    sync(&nurse, &server);
    for id in ["a1", "b1", "b2", "c1", "c2", "d1"] {
        assert_eq!(phone.count(id), 1, "{id} on the phone");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
    }
}

#[test]
fn a_connection_cut_right_after_reincarnate_resumes_and_writes_each_record_once() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    phone.note("a1");
    sync(&phone, &server);
    let backup = phone.store.deep_copy().unwrap();
    phone.note("b1");
    sync(&phone, &server);
    let phone = Phone {
        author: phone.author.clone(),
        store: backup,
    };
    phone.note("c1");
    // `Time`, then `Reincarnate`: the cut comes before anything of the new catch-up.
    let (devents, _) = sync_cut(&phone, &server, 2);
    assert!(devents.contains(&DeviceEvent::Reincarnated {
        incarnation: 1,
        records: 1
    }));
    assert_eq!(
        DeviceSession::rewrites_waiting(&Repo::new(phone.store.clone())).unwrap(),
        1
    );
    // The app writes meanwhile, under the new incarnation.
    phone.note("d1");
    let (devents, sevents) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(devents.contains(&DeviceEvent::Rewritten { records: 1 }));
    assert!(
        !sevents.iter().any(|e| matches!(
            e,
            ServerEvent::Reincarnated { .. } | ServerEvent::Refused { .. }
        )),
        "{sevents:?}"
    );
    sync(&nurse, &server);
    for id in ["a1", "b1", "c1", "d1"] {
        assert_eq!(phone.count(id), 1, "{id} on the phone");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
    }
}

#[test]
fn a_copied_store_is_detected_and_both_installations_records_reach_everyone() {
    let server = MemoryStore::new();
    let first = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    first.note("a1");
    sync(&first, &server);
    let copy = Phone {
        author: first.author.clone(),
        store: first.store.deep_copy().unwrap(),
    };
    first.note("x1");
    sync(&first, &server);
    copy.note("y1");
    let (devents, sevents) = sync(&copy, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }));
    // The first installation comes back under incarnation 0 while 1 is in use: a copy.
    first.note("x2");
    let (devents, sevents) = sync(&first, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(sevents.contains(&ServerEvent::CopyDetected {
        incarnation: 0,
        later: 1
    }));
    // Once per pair.
    first.note("x3");
    let (_, sevents) = sync(&first, &server);
    assert!(
        !sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::CopyDetected { .. }))
    );
    sync(&copy, &server);
    sync(&nurse, &server);
    for id in ["a1", "x1", "x2", "x3", "y1"] {
        for (who, p) in [("first", &first), ("copy", &copy), ("nurse", &nurse)] {
            assert_eq!(p.count(id), 1, "{id} on {who}");
        }
    }
    let known = crate::protocol::server::device_incarnations(
        &Repo::new(server.clone()),
        &first.author.device,
    )
    .unwrap();
    assert_eq!(known.copies.into_iter().collect::<Vec<_>>(), vec![(0, 1)]);
}

#[test]
fn an_acknowledgement_lost_before_a_restore_duplicates_nothing() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    phone.note("a1");
    // The backup holds a1 unacknowledged; the server stores it, and its acknowledgement is lost.
    let backup = phone.store.deep_copy().unwrap();
    sync_with(&phone, &server, false);
    assert_eq!(count_in(&server, "a1"), 1);
    phone.note("b1");
    sync(&phone, &server);
    let phone = Phone {
        author: phone.author.clone(),
        store: backup,
    };
    phone.note("c1");
    let (devents, sevents) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(sevents.contains(&ServerEvent::Reincarnated { old: 0, new: 1 }));
    // a1 came back from the server; only c1 is written again.
    assert!(devents.contains(&DeviceEvent::Rewritten { records: 1 }));
    sync(&nurse, &server);
    for id in ["a1", "b1", "c1"] {
        assert_eq!(phone.count(id), 1, "{id} on the phone");
        assert_eq!(nurse.count(id), 1, "{id} on the nurse's phone");
        assert_eq!(count_in(&server, id), 1, "{id} on the server");
    }
}

#[test]
fn a_device_that_does_not_tell_its_incarnation_is_served_as_before() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    phone.note("a1");
    let mut drepo = Repo::new(phone.store.clone());
    let mut device = DeviceSession::new(DeviceConfig {
        tell_clock: false,
        ..DeviceConfig::default()
    });
    device.connect(&mut drepo, NOW).unwrap();
    let hello = device.poll_transmit().unwrap();
    assert_eq!(hello[0], 1, "a version-1 hello");
    let mut srepo = Repo::new(server.clone());
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        ServerConfig::default(),
    );
    session.handle_bytes(&mut srepo, &Everyone, &hello, NOW);
    assert_eq!(count_in(&server, "a1"), 1);
}

#[test]
fn a_device_that_ignores_reincarnate_is_closed_and_no_more_numbers_are_issued() {
    use crate::protocol::wire::{self, DeviceMessage, Hello, IncarnationClaim, ServerMessage};
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    phone.note("a1");
    phone.note("a2");
    sync(&phone, &server);
    let hello = |written: u64| {
        wire::encode(&DeviceMessage::Hello3 {
            hello: Hello {
                cursor: None,
                received: Vec::new(),
                priority: Vec::new(),
                backfill: Vec::new(),
                upload: Vec::new(),
            },
            device_ms: NOW.0,
            incarnation: IncarnationClaim {
                number: 0,
                written,
                last: None,
            },
            feed_proof: None,
            signatures: Vec::new(),
        })
        .unwrap()
    };
    let mut srepo = Repo::new(server.clone());
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        ServerConfig::default(),
    );
    // Behind (it claims one write, the server holds two): told to go on as 1.
    session.handle_bytes(&mut srepo, &Everyone, &hello(1), NOW);
    let answers: Vec<ServerMessage> = std::iter::from_fn(|| session.poll_transmit())
        .map(|b| wire::decode(&b).unwrap())
        .collect();
    assert!(answers.contains(&ServerMessage::Reincarnate { incarnation: 1 }));
    // It says 0 again: closed, and no second number issued.
    session.handle_bytes(&mut srepo, &Everyone, &hello(1), NOW);
    assert!(session.is_closed());
    let known = crate::protocol::server::device_incarnations(&srepo, &phone.author.device).unwrap();
    assert_eq!((known.issued, known.used), (1, 0));
}

#[test]
fn a_server_that_lost_what_it_issued_takes_the_devices_word_after_a_resync() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    phone.note("a1");
    sync(&phone, &server);
    let backup = phone.store.deep_copy().unwrap();
    phone.note("b1");
    sync(&phone, &server);
    let phone = Phone {
        author: phone.author.clone(),
        store: backup,
    };
    phone.note("c1");
    sync(&phone, &server);
    assert_eq!(
        Repo::new(phone.store.clone()).incarnation().unwrap().number,
        1
    );
    // The server's store is replaced by one that knows nothing (another feed epoch): the
    // phone's incarnation 1 is not refused, and the fallback gives the server its records back.
    let server = MemoryStore::new();
    let (devents, _) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    for id in ["a1", "b1", "c1"] {
        assert_eq!(count_in(&server, id), 1, "{id} on the new server");
    }
    // A store reincarnated has no cursor until its catch-up ends: a server put back to before
    // it issued the number cannot refute it, and takes its word (else the phone is stuck).
    let fresh = Phone::new(author("sara", Role::Carer, "phone-s"));
    let server = MemoryStore::new();
    let reincarnated = |phone: &Phone, number| {
        Repo::new(phone.store.clone())
            .set_incarnation(&crate::repo::Incarnation {
                number,
                written: 0,
                last: None,
            })
            .unwrap();
    };
    reincarnated(&fresh, 3);
    let (devents, _) = sync(&fresh, &server);
    assert!(!closed(&devents), "{devents:?}");
    // But a number the server never issued, from a device whose cursor proves this very feed
    // (the server did not go back), is refused.
    reincarnated(&fresh, 5);
    let (devents, _) = sync(&fresh, &server);
    assert!(closed(&devents), "{devents:?}");
}

/// Everyone may read; nobody may write.
struct ReadOnly;

impl AccessPolicy for ReadOnly {
    fn may_read(&self, _: &Peer, _: &DocumentId) -> bool {
        true
    }
    fn may_write(&self, _: &Peer, _: &DocumentId) -> bool {
        false
    }
    fn readable_patients(&self, _: &Peer) -> Vec<PatientId> {
        vec![patient()]
    }
}

#[test]
fn a_copy_whose_writes_were_refused_still_gets_what_its_original_wrote_under_their_incarnation() {
    let server = MemoryStore::new();
    let first = Phone::new(author("anna", Role::Carer, "phone-a"));
    first.note("a1");
    sync(&first, &server);
    let copy = Phone {
        author: first.author.clone(),
        store: first.store.deep_copy().unwrap(),
    };
    // The copy writes twice (write counters 2 and 3) while it may not write: both refused.
    copy.note("y1");
    copy.note("y2");
    let (devents, _) = sync_under(&copy, &server, usize::MAX, &ReadOnly);
    assert!(
        devents
            .iter()
            .any(|e| matches!(e, DeviceEvent::ChangeRefused(_))),
        "{devents:?}"
    );
    // The original writes its counter 2: another change under a counter the copy used.
    first.note("x1");
    sync(&first, &server);
    // The copy comes back (its writes quarantined, nothing pending): it must get x1, which the
    // server would otherwise take for its own (same device, same incarnation) and never send.
    sync(&copy, &server);
    assert_eq!(copy.count("x1"), 1, "x1 on the copy");
    assert_eq!(first.count("x1"), 1, "x1 on the first");
    assert_eq!(count_in(&server, "x1"), 1, "x1 on the server");
}

/// The nurse may read and write; the carer may read (and write) only if `carer_reads`.
struct Assigned {
    carer_reads: bool,
}

impl AccessPolicy for Assigned {
    fn may_read(&self, peer: &Peer, _: &DocumentId) -> bool {
        peer.author.role == Role::Nurse || self.carer_reads
    }
    fn may_write(&self, peer: &Peer, doc: &DocumentId) -> bool {
        self.may_read(peer, doc)
    }
    fn readable_patients(&self, peer: &Peer) -> Vec<PatientId> {
        if peer.author.role == Role::Nurse || self.carer_reads {
            vec![patient()]
        } else {
            vec![]
        }
    }
}

#[test]
fn a_device_sent_changes_whose_history_it_lacks_after_a_restore_recovers() {
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    let unassigned = Assigned { carer_reads: false };
    let assigned = Assigned { carer_reads: true };
    // The carer, assigned, is caught up (the server holds the person as complete on it); the
    // server is backed up then.
    sync_under(&phone, &server, usize::MAX, &assigned);
    let backup = server.deep_copy().unwrap();
    // The carer is taken off the person; n1 is stored at position 1 (its acknowledgement
    // lost) and the carer caught up past it without it.
    sync_under(&phone, &server, usize::MAX, &unassigned);
    nurse.note("n1");
    sync_under(&nurse, &server, 0, &unassigned);
    sync_under(&phone, &server, usize::MAX, &unassigned);
    // The server is put back: n1 comes again at position 1 (the same feed proof), n2, built
    // on it, at 2, and the server holds the person as complete on the carer's phone again.
    server.restore_from(&backup).unwrap();
    sync_under(&nurse, &server, usize::MAX, &unassigned);
    nurse.note("n2");
    sync_under(&nurse, &server, usize::MAX, &unassigned);
    // Assigned again, the carer is sent n2 without n1: it cannot take it, and asks for a
    // recovery, which brings both.
    let (devents, _) = sync_under(&phone, &server, usize::MAX, &assigned);
    assert!(closed(&devents), "{devents:?}");
    let (devents, sevents) = sync_under(&phone, &server, usize::MAX, &assigned);
    assert!(!closed(&devents), "{devents:?}");
    assert!(
        sevents
            .iter()
            .any(|e| matches!(e, ServerEvent::Recovered { .. })),
        "{sevents:?}"
    );
    for id in ["n1", "n2"] {
        assert_eq!(phone.count(id), 1, "{id} on the phone");
    }
}
