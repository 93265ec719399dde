//! A server whose store was replaced or copied back: the Automerge-sync fallback of a
//! version-1 device, and the recovery of version-3 devices (cut anywhere, the epoch moved once).

use super::*;

#[test]
fn a_replaced_server_store_falls_back_to_automerge_sync_for_a_version_1_device() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    phone.session = DeviceSession::new(DeviceConfig {
        tell_clock: false,
        ..DeviceConfig::default()
    });
    server.assign(&phone.author, &[&p]);
    phone.note(&p, "before", "Synced before the server was restored.");
    run(&mut phone, &mut server, ServerConfig::default(), None);
    // The server is restored from an empty backup: a new epoch, and it lost the note.
    let policy = server.policy.clone();
    let mut server = Server {
        repo: Repo::new(MemoryStore::new()),
        policy,
    };
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(w.down.iter().any(|b| matches!(
        wire::decode::<ServerMessage>(b).unwrap(),
        ServerMessage::Resync { .. }
    )));
    assert!(w.up.iter().any(|b| matches!(
        wire::decode::<DeviceMessage>(b).unwrap(),
        DeviceMessage::AmSync { .. }
    )));
    let doc = DocumentId::journal(&p, november());
    assert!(
        server
            .repo
            .get(&doc)
            .unwrap()
            .event(&rid("before"))
            .is_some(),
        "the fallback restored the note on the server"
    );
    // And the next connection is back on the feed.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(!w.down.iter().any(|b| matches!(
        wire::decode::<ServerMessage>(b).unwrap(),
        ServerMessage::Resync { .. }
    )));
    let _ = server.repo.store().epoch().unwrap();
}

fn decoded_down(w: &Wire) -> Vec<ServerMessage> {
    w.down
        .iter()
        .map(|b| wire::decode::<ServerMessage>(b).unwrap())
        .collect()
}

/// A version-3 device whose server lost its store (a new epoch) recovers: its note goes back
/// up, the other phone's note written since comes down, in a few messages, and the next
/// connection is on the feed again.
#[test]
fn a_replaced_server_store_recovers_a_version_3_device() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    let mut other = Phone::new(carer("bo"));
    server.assign(&phone.author, &[&p]);
    server.assign(&other.author, &[&p]);
    phone.note(&p, "before", "Synced before the server was restored.");
    run(&mut phone, &mut server, ServerConfig::default(), None);
    let policy = server.policy.clone();
    let mut server = Server {
        repo: Repo::new(MemoryStore::new()),
        policy,
    };
    other.note(&p, "after", "Written on the new server first.");
    run(&mut other, &mut server, ServerConfig::default(), None);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    let down = decoded_down(&w);
    assert!(
        down.iter()
            .any(|m| matches!(m, ServerMessage::Recover { .. }))
    );
    assert!(!down.iter().any(|m| matches!(
        m,
        ServerMessage::Resync { .. } | ServerMessage::AmSync { .. }
    )));
    let up: Vec<DeviceMessage> = w.up.iter().map(|b| wire::decode(b).unwrap()).collect();
    assert!(
        w.down.len() + w.up.len() <= 14,
        "{} messages: {up:?} {down:?}",
        w.down.len() + w.up.len()
    );
    let doc = DocumentId::journal(&p, november());
    assert!(
        server
            .repo
            .get(&doc)
            .unwrap()
            .event(&rid("before"))
            .is_some()
    );
    assert!(phone.repo.get(&doc).unwrap().event(&rid("after")).is_some());
    assert_eq!(
        w.server_events
            .iter()
            .filter(|e| matches!(e, ServerEvent::Recovered { .. }))
            .count(),
        1
    );
    assert!(
        !w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Disclosed { .. }))
    );
    // The next connection is on the feed, with a proof.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    let down = decoded_down(&w);
    assert!(
        !down
            .iter()
            .any(|m| matches!(m, ServerMessage::Recover { .. }))
    );
    assert!(
        down.iter()
            .any(|m| matches!(m, ServerMessage::Batch3 { .. }))
    );
}

/// The same server, its store copied back from before the phone's last sync (same epoch): the
/// phone's cursor is above the head, so the server moves to a new epoch and the phone recovers;
/// a second phone whose cursor is below the head but whose proof is of the lost history
/// recovers too.
#[test]
fn a_store_copied_back_moves_to_a_new_epoch_and_every_device_that_saw_more_recovers() {
    let p = patient("p1");
    let store = MemoryStore::new();
    let mut server = Server {
        repo: Repo::new(store.clone()),
        policy: Assignments::default(),
    };
    let mut a = Phone::new(carer("anna"));
    let mut b = Phone::new(carer("bo"));
    server.assign(&a.author, &[&p]);
    server.assign(&b.author, &[&p]);
    a.note(&p, "a1", "First.");
    run(&mut a, &mut server, ServerConfig::default(), None);
    run(&mut b, &mut server, ServerConfig::default(), None);
    // The backup: a deep copy of the store now.
    let backup = Repo::new(MemoryStore::with_epoch(store.epoch().unwrap()));
    let mut backup = backup;
    for doc in server.repo.document_ids().unwrap() {
        let changes = server.repo.get(&doc).unwrap().changes_since(&[]);
        backup.apply_changes(&doc, changes).unwrap();
    }
    let epoch = store.epoch().unwrap();
    a.note(&p, "a2", "Lost by the server.");
    run(&mut a, &mut server, ServerConfig::default(), None);
    run(&mut b, &mut server, ServerConfig::default(), None);
    // Restored by copying: same epoch, shorter feed. Another phone writes first.
    let mut server = Server {
        repo: backup,
        policy: server.policy.clone(),
    };
    let mut c = Phone::new(carer("cy"));
    server.assign(&c.author, &[&p]);
    c.note(&p, "c1", "Written after the restore.");
    run(&mut c, &mut server, ServerConfig::default(), None);
    // b's cursor is at the old head, which the new feed reached again with other changes.
    let w = run(&mut b, &mut server, ServerConfig::default(), None);
    assert!(
        w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::FeedDiverged { .. }))
    );
    assert_ne!(server.repo.store().epoch().unwrap(), epoch);
    let w = run(&mut a, &mut server, ServerConfig::default(), None);
    assert!(
        decoded_down(&w)
            .iter()
            .any(|m| matches!(m, ServerMessage::Recover { .. }))
    );
    // c catches up (its cursor is of the old epoch too now) and everyone holds everything.
    run(&mut c, &mut server, ServerConfig::default(), None);
    let doc = DocumentId::journal(&p, november());
    for phone in [&mut a, &mut b, &mut c] {
        for id in ["a1", "a2", "c1"] {
            assert!(
                phone.repo.get(&doc).unwrap().event(&rid(id)).is_some(),
                "{} lacks {id}",
                phone.author.user
            );
        }
    }
    for id in ["a1", "a2", "c1"] {
        assert!(server.repo.get(&doc).unwrap().event(&rid(id)).is_some());
    }
}

/// A recovery cut after every possible number of server messages resumes and ends with both
/// sides holding everything; the documents the device reconciled are not asked about again.
#[test]
fn a_recovery_cut_anywhere_resumes() {
    let patients: Vec<PatientId> = (0..6).map(|i| patient(&format!("p{i}"))).collect();
    let refs: Vec<&PatientId> = patients.iter().collect();
    for cut in 0..8 {
        let mut server = Server::new();
        let mut phone = Phone::new(carer("anna"));
        server.assign(&phone.author, &refs);
        for (i, p) in patients.iter().enumerate() {
            phone.note(p, &format!("n{i}"), "Before the restore.");
        }
        run(&mut phone, &mut server, ServerConfig::default(), None);
        let policy = server.policy.clone();
        let mut server = Server {
            repo: Repo::new(MemoryStore::new()),
            policy,
        };
        for (i, p) in patients.iter().enumerate() {
            phone.note(p, &format!("m{i}"), "Pending at the restore.");
        }
        run(&mut phone, &mut server, ServerConfig::default(), Some(cut));
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 10, "cut {cut}: no end");
            let w = run(&mut phone, &mut server, ServerConfig::default(), None);
            if !decoded_down(&w)
                .iter()
                .any(|m| matches!(m, ServerMessage::Recover { .. }))
            {
                break;
            }
        }
        for (i, p) in patients.iter().enumerate() {
            let doc = DocumentId::journal(p, november());
            for id in [format!("n{i}"), format!("m{i}")] {
                assert!(
                    server.repo.get(&doc).unwrap().event(&rid(&id)).is_some(),
                    "cut {cut}: the server lacks {id}"
                );
            }
        }
        assert!(phone.repo.pending().unwrap().is_empty(), "cut {cut}");
    }
}

/// A device that claims to have seen more of the feed than the server holds moves the server to
/// a new epoch once; claiming it again of the new epoch, with nothing stored since, does not
/// move it again (an enrolled device could otherwise make every device recover at will).
#[test]
fn a_claim_of_more_moves_the_epoch_once_per_head() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    phone.note(&p, "n1", "A note.");
    run(&mut phone, &mut server, ServerConfig::default(), None);
    let head = server.repo.store().feed_head().unwrap();
    // The phone's incarnation as it is: only the feed is claimed falsely.
    let inc = phone.repo.incarnation().unwrap();
    let claim = |epoch| {
        wire::encode(&DeviceMessage::Hello3 {
            hello: sync_core::protocol::wire::Hello {
                cursor: Some(sync_core::protocol::wire::Cursor {
                    epoch,
                    position: head + 10,
                }),
                received: vec![],
                priority: vec![],
                backfill: vec![],
                upload: vec![],
            },
            device_ms: NOW.0,
            incarnation: sync_core::protocol::wire::IncarnationClaim {
                number: inc.number,
                written: inc.written,
                last: inc.last,
            },
            feed_proof: Some([1; 32]),
            signatures: vec![],
        })
        .unwrap()
    };
    let mut moves = 0;
    for _ in 0..3 {
        let epoch = server.repo.store().epoch().unwrap();
        let mut s = ServerSession::new(
            Peer {
                author: phone.author.clone(),
            },
            ServerConfig::default(),
        );
        s.handle_bytes(&mut server.repo, &server.policy, &claim(epoch), NOW);
        let events: Vec<ServerEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        moves += events
            .iter()
            .filter(|e| matches!(e, ServerEvent::FeedDiverged { .. }))
            .count();
        let sent: Vec<ServerMessage> = std::iter::from_fn(|| s.poll_transmit())
            .map(|b| wire::decode(&b).unwrap())
            .collect();
        assert!(
            sent.iter()
                .any(|m| matches!(m, ServerMessage::Recover { .. }))
        );
    }
    assert_eq!(moves, 1);
}
