//! Access: nothing of an unassigned patient is sent, a withdrawal is told, and the test
//! policy's assignments are per user.

use super::*;

#[test]
fn nothing_of_an_unassigned_patient_is_sent_and_withdrawal_is_told() {
    let (mine, other) = (patient("mine"), patient("other"));
    let mut server = Server::new();
    seed_server(&mut server, &[&mine, &other], 2);
    let mut phone = Phone::new(carer("anna"));
    server.assign(&phone.author, &[&mine]);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    for (_, docs) in batches(&w) {
        assert!(docs.iter().all(|d| d.0.patient() == &mine));
    }
    // Writing to someone else's journal is refused, audited and quarantined on the phone.
    phone.note(&other, "sneaky", "Not my patient.");
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Refused {
            code: wire::RefusalCode::NotPermitted,
            ..
        }
    )));
    assert_eq!(DeviceSession::quarantined(&phone.repo).unwrap().len(), 1);
    assert!(
        server
            .repo
            .get(&DocumentId::journal(&other, november()))
            .unwrap()
            .event(&rid("sneaky"))
            .is_none()
    );
    // Unassigned: told on the next connection, and nothing more is sent.
    let head = server.repo.store().feed_head().unwrap();
    server.policy.unassign(&phone.author.user, &mine, head);
    let w = run(&mut phone, &mut server, ServerConfig::default(), None);
    assert!(phone.events.iter().any(|e| matches!(e, DeviceEvent::AccessWithdrawn { patients } if patients == &vec![mine.clone()])));
    assert!(
        w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Withdrawn { .. }))
    );
    // Assigned again: the whole history comes back, including what was written meanwhile.
    let mut writer = Phone::new(nurse("nina"));
    writer.note(&mine, "while-away", "Written while Anna was off the case.");
    server.assign(&writer.author, &[&mine]);
    run(&mut writer, &mut server, ServerConfig::default(), None);
    server.assign(&phone.author, &[&mine]);
    run(&mut phone, &mut server, ServerConfig::default(), None);
    let doc = DocumentId::journal(&mine, november());
    assert!(
        phone
            .repo
            .get(&doc)
            .unwrap()
            .event(&rid("while-away"))
            .is_some()
    );
}

#[test]
fn assignments_policy_is_per_user() {
    let mut a = Assignments::default();
    let anna = carer("anna");
    a.assign(&anna.user, [&patient("p1")]);
    let peer = Peer { author: anna };
    assert!(a.may_read(&peer, &DocumentId::care_plan(&patient("p1"))));
    assert!(!a.may_read(&peer, &DocumentId::care_plan(&patient("p2"))));
    assert_eq!(a.readable_patients(&peer), vec![patient("p1")]);
}
