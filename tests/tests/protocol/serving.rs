//! What the server sends and the device acknowledges: the catch-up in one round trip, a cut
//! transfer resumed, batches bounded within the window, priority patients first, the read log.

use super::*;

#[test]
fn catch_up_is_one_round_trip_and_an_upload_is_durable_before_its_ack() {
    let p = patient("p1");
    let mut server = Server::new();
    seed_server(&mut server, &[&p], 3);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    phone.note(&p, "mine", "Written offline.");
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    // Hello up; the server's time, upload ack and one batch down; batch ack up.
    assert_eq!((w.up.len(), w.down.len()), (2, 3));
    assert!(matches!(
        wire::decode::<ServerMessage>(&w.down[0]).unwrap(),
        ServerMessage::Time {
            server_ms: 1_795_478_400_000,
            ..
        }
    ));
    assert!(phone.events.contains(&DeviceEvent::CaughtUp));
    assert!(
        phone
            .events
            .iter()
            .any(|e| matches!(e, DeviceEvent::UploadAcknowledged { changes: 1 }))
    );
    assert!(phone.repo.pending().unwrap().is_empty());
    let doc = DocumentId::journal(&p, november());
    assert!(server.repo.get(&doc).unwrap().event(&rid("mine")).is_some());
    assert_eq!(phone.repo.get(&doc).unwrap().events().len(), 4);
    // Reconnecting with nothing new costs a hello and an empty batch.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert_eq!(batches(&w).iter().map(|(_, d)| d.len()).sum::<usize>(), 0);
}

#[test]
fn a_cut_transfer_resumes_without_resending_acknowledged_batches() {
    let p = patient("p1");
    // For every cut point: the second connection sends nothing the first one got acknowledged.
    for cut in 1..8 {
        let mut server = Server::new();
        seed_server(&mut server, &[&p], 12);
        let mut phone = Phone::new(carer("anna"));
        server.assign(&phone.author, &[&p]);
        let first = run(&mut phone, &mut server, small_batches(), Some(cut));
        let acked: BTreeSet<u32> = first
            .up
            .iter()
            .filter_map(|b| match wire::decode::<DeviceMessage>(b).unwrap() {
                DeviceMessage::BatchAck { batch } => Some(batch),
                _ => None,
            })
            .collect();
        let positions_acked: BTreeSet<u64> = batches(&first)
            .into_iter()
            .filter(|(b, _)| acked.contains(b))
            .flat_map(|(_, docs)| docs.into_iter().flat_map(|d| d.2))
            .collect();
        assert!(!phone.session.is_caught_up() || positions_acked.len() == 12);
        let second = run(&mut phone, &mut server, small_batches(), None);
        let resent: Vec<u64> = batches(&second)
            .into_iter()
            .flat_map(|(_, docs)| docs.into_iter().flat_map(|d| d.2))
            .filter(|pos| positions_acked.contains(pos))
            .collect();
        assert!(
            resent.is_empty(),
            "cut after {cut}: acknowledged positions resent: {resent:?}"
        );
        let doc = DocumentId::journal(&p, november());
        assert_eq!(
            phone.repo.get(&doc).unwrap().events().len(),
            12,
            "cut after {cut}"
        );
        assert!(phone.session.is_caught_up());
    }
}

#[test]
fn batches_are_bounded_and_the_window_is_respected() {
    let p = patient("p1");
    let mut server = Server::new();
    seed_server(&mut server, &[&p], 20);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    // Deliver the hello, then look at what the server sends before any acknowledgement.
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        small_batches(),
    );
    phone.session.connect(&mut phone.repo, NOW).unwrap();
    let hello = phone.session.poll_transmit().unwrap();
    session.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    let sent: Vec<Vec<u8>> = std::iter::from_fn(|| session.poll_transmit()).collect();
    let batch_count = sent
        .iter()
        .filter(|b| {
            matches!(
                wire::decode::<ServerMessage>(b).unwrap(),
                ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. }
            )
        })
        .count();
    assert_eq!(
        batch_count, 2,
        "at most max_in_flight batches before an ack"
    );
    for b in &sent {
        if let ServerMessage::Batch {
            docs, remaining, ..
        }
        | ServerMessage::Batch3 {
            docs, remaining, ..
        } = wire::decode::<ServerMessage>(b).unwrap()
        {
            let bytes: usize = docs
                .iter()
                .flat_map(|d| d.changes.iter())
                .map(Vec::len)
                .sum();
            let changes: usize = docs.iter().map(|d| d.changes.len()).sum();
            assert!(changes == 1 || bytes <= 600 + 400, "batch of {bytes} bytes");
            assert!(remaining > 0);
        }
    }
}

#[test]
fn priority_patients_come_first() {
    let (a, b, c) = (patient("pa"), patient("pb"), patient("pc"));
    let mut server = Server::new();
    seed_server(&mut server, &[&a, &b, &c], 3);
    let mut phone = Phone::new(carer("anna"));
    phone.session.set_priority(vec![c.clone()]);
    server.assign(&phone.author, &[&a, &b, &c]);
    let w = run(&mut phone, &mut server, small_batches(), None);
    let order: Vec<PatientId> = batches(&w)
        .into_iter()
        .flat_map(|(_, docs)| docs.into_iter().map(|d| d.0.patient().clone()))
        .collect();
    assert_eq!(order.first(), Some(&c));
    let last_c = order.iter().rposition(|p| p == &c).unwrap();
    assert!(order[..=last_c].iter().all(|p| p == &c), "{order:?}");
}

#[test]
fn the_read_log_reaches_the_server_and_is_cleared_once_acknowledged() {
    let p = patient("p1");
    let mut server = Server::new();
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&p]);
    for what in ["overview", "flags", "overview"] {
        DeviceSession::log_read(&mut phone.repo, &p, what, NOW).unwrap();
    }
    assert_eq!(DeviceSession::read_log(&phone.repo).unwrap().len(), 3);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    let reads: Vec<_> = w
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Read { entries } => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(reads.len(), 3);
    assert!(reads.iter().all(|r| r.patient == p && r.at_ms == NOW.0));
    assert_eq!(reads[1].what, "flags");
    assert!(DeviceSession::read_log(&phone.repo).unwrap().is_empty());
    // Nothing is sent again.
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(
        !w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Read { .. }))
    );
}
