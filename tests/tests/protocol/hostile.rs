//! A device that misbehaves: hostile bytes, silence while the server waits, a batch
//! acknowledged out of order; each closes the connection with a reason.

use super::*;

#[test]
fn hostile_bytes_close_the_connection_with_a_reason() {
    let mut server = Server::new();
    let peer = Peer {
        author: carer("anna"),
    };
    let hello = wire::encode(&DeviceMessage::Hello(wire::Hello {
        cursor: None,
        received: vec![],
        priority: vec![],
        backfill: vec![],
        upload: vec![],
    }))
    .unwrap();
    let cases: Vec<(Vec<u8>, CloseReason)> = vec![
        (vec![], CloseReason::Malformed),
        (vec![9, 1, 2], CloseReason::UnsupportedVersion),
        (vec![1, 0xff, 0xff, 0xff], CloseReason::Malformed),
        (
            vec![1; wire::MAX_MESSAGE_BYTES + 1],
            CloseReason::MessageTooLarge,
        ),
        (
            wire::encode(&DeviceMessage::BatchAck { batch: 0 }).unwrap(),
            CloseReason::ProtocolViolation,
        ),
    ];
    for (bytes, reason) in cases {
        let mut s = ServerSession::new(peer.clone(), ServerConfig::default());
        s.handle_bytes(&mut server.repo, &server.policy, &bytes, NOW);
        let out: Vec<ServerMessage> = std::iter::from_fn(|| s.poll_transmit())
            .map(|b| wire::decode(&b).unwrap())
            .collect();
        assert!(
            matches!(out.last(), Some(ServerMessage::Close { reason: r, .. }) if *r == reason),
            "{out:?}"
        );
        assert!(s.is_closed());
        // Nothing more is accepted on a closed session.
        s.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
        assert!(s.poll_transmit().is_none());
    }
    // A second hello is a protocol violation.
    let mut s = ServerSession::new(peer, ServerConfig::default());
    s.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    while s.poll_transmit().is_some() {}
    s.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    let last: ServerMessage = wire::decode(&s.poll_transmit().unwrap()).unwrap();
    assert!(matches!(
        last,
        ServerMessage::Close {
            reason: CloseReason::ProtocolViolation,
            ..
        }
    ));
}

#[test]
fn a_silent_device_is_closed_as_stalled() {
    let mut s = ServerSession::new(
        Peer {
            author: carer("anna"),
        },
        ServerConfig {
            stall_after_ms: Some(1_000),
            ..ServerConfig::default()
        },
    );
    s.tick(NOW);
    s.tick(Timestamp(NOW.0 + 500));
    assert!(!s.is_closed());
    s.tick(Timestamp(NOW.0 + 1_500));
    assert!(s.is_closed());
    let msg: ServerMessage = wire::decode(&s.poll_transmit().unwrap()).unwrap();
    assert!(matches!(
        msg,
        ServerMessage::Close {
            reason: CloseReason::Stalled,
            ..
        }
    ));
}

#[test]
fn a_batch_out_of_order_closes_without_moving_the_cursor() {
    let (a, b) = (patient("pa"), patient("pb"));
    let mut server = Server::new();
    seed_server(&mut server, &[&a, &b], 4);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&a, &b]);
    let mut session = ServerSession::new(
        Peer {
            author: phone.author.clone(),
        },
        small_batches(),
    );
    phone.session.connect(&mut phone.repo, NOW).unwrap();
    let hello = phone.session.poll_transmit().unwrap();
    session.handle_bytes(&mut server.repo, &server.policy, &hello, NOW);
    let batches: Vec<Vec<u8>> = std::iter::from_fn(|| session.poll_transmit())
        .filter(|b| {
            matches!(
                wire::decode::<ServerMessage>(b).unwrap(),
                ServerMessage::Batch { .. } | ServerMessage::Batch3 { .. }
            )
        })
        .collect();
    assert!(batches.len() >= 2);
    // The second batch arrives first (a transport that reorders): refused, nothing recorded.
    phone
        .session
        .handle_bytes(&mut phone.repo, &batches[1], NOW);
    assert!(!phone.session.is_connected());
    assert_eq!(DeviceSession::load_state(&phone.repo).unwrap().cursor, None);
    let events: Vec<DeviceEvent> = std::iter::from_fn(|| phone.session.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(
        e,
        DeviceEvent::Closed {
            reason: CloseReason::ProtocolViolation,
            ..
        }
    )));
}
