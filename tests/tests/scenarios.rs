//! Field scenarios S1, S2, S3 and S7 of `shared/SCENARIOS.md`, at the document level: replicas
//! edit offline, then exchange changes as sync will. Every scenario runs twice: on replicas in
//! memory, and on replicas in SQLite files that are closed and reopened between steps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::*;
use sync_core::model::{
    AllergyStatus, Criticality, EventBody, FlagKind, RecordRef, Register, RegisterState,
    RegisterValue, SlotStatus, TextKey,
};
use sync_core::{DocumentId, ModelError, Role};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name(nara_tests::Backend::Memory) } )*
        }
        mod sqlite {
            $( #[test] fn $name() { super::$name(nara_tests::Backend::Sqlite) } )*
        }
    };
}

on_both_backends!(
    s1_concurrent_goal_text_and_new_intervention_are_both_kept,
    s1_concurrent_clinical_values_conflict_until_a_nurse_resolves,
    s2_two_workers_sign_the_same_dose_offline,
    s3_dose_given_on_an_order_version_superseded_while_offline,
    s7_note_signed_on_the_wrong_patient_is_marked_and_corrected,
);

fn reopen_all(replicas: &mut [&mut Replica]) {
    for r in replicas.iter_mut() {
        r.reopen();
    }
}

fn s1_concurrent_goal_text_and_new_intervention_are_both_kept(backend: Backend) {
    let p = patient("p-1");
    let plan = DocumentId::care_plan(&p);
    let (mut server, mut a, mut b) = (
        Replica::new(backend),
        Replica::new(backend),
        Replica::new(backend),
    );
    let (anna, bo, nina) = (carer("anna"), carer("bo"), nurse("nina"));
    let goal = TextKey::GoalDescription(rid("g1"));

    server
        .repo
        .change(&plan, &nina, at(7, 0), |e| {
            e.create(
                rid("g1-r1"),
                Register::Goal(rid("g1")),
                RegisterValue::Goal {
                    title: "Walk daily".into(),
                    status: sync_core::model::GoalStatus::Active,
                },
                Some("Walk to the mailbox every morning."),
            )
        })
        .unwrap();
    exchange(&mut server, &mut a, &plan);
    exchange(&mut server, &mut b, &plan);

    // Offline: Anna rewrites the goal's text; Bo adds an intervention. Both edit the text too,
    // in different places.
    a.repo
        .change(&plan, &anna, at(9, 0), |e| {
            e.set_text(
                &goal,
                "Walk to the mailbox and back every morning, with the rollator.",
            )
        })
        .unwrap();
    b.repo
        .change(&plan, &bo, at(9, 5), |e| {
            e.create(
                rid("i2-r1"),
                Register::Intervention(rid("i2")),
                RegisterValue::Intervention {
                    title: "Support with walk".into(),
                    responsible_organisation: "Hemtjänst Norr".into(),
                    status: sync_core::model::InterventionStatus::NotStarted,
                    goal: Some(rid("g1")),
                },
                Some("Accompany on the morning walk."),
            )?;
            let t = e.text(&goal).unwrap();
            e.set_text(&goal, &format!("{t} Check the shoes."))
        })
        .unwrap();
    reopen_all(&mut [&mut server, &mut a, &mut b]);

    exchange(&mut a, &mut server, &plan);
    exchange(&mut b, &mut server, &plan);
    exchange(&mut a, &mut server, &plan);
    reopen_all(&mut [&mut server, &mut a, &mut b]);

    for r in [&mut server, &mut a, &mut b] {
        let d = r.doc(&plan);
        assert_eq!(
            d.text(&goal).unwrap(),
            "Walk to the mailbox and back every morning, with the rollator. Check the shoes."
        );
        match d.register(&Register::Intervention(rid("i2"))) {
            RegisterState::Value(v) => assert_eq!(v.revision.author, bo),
            other => panic!("intervention missing: {other:?}"),
        }
        assert!(d.conflicts().is_empty());
        // Each edit is attributed to its author.
        let h = d.history();
        let text_path = format!("texts/{goal}");
        assert!(
            h.iter()
                .any(|e| e.author.as_ref() == Some(&anna) && e.writes.contains(&text_path))
        );
        assert!(
            h.iter().any(|e| e.author.as_ref() == Some(&bo)
                && e.writes.contains(&"revisions/i2-r1".to_string()))
        );
        assert!(
            h.iter()
                .any(|e| e.author.as_ref() == Some(&nina) && e.at == at(7, 0))
        );
    }
}

fn s1_concurrent_clinical_values_conflict_until_a_nurse_resolves(backend: Backend) {
    let p = patient("p-1");
    let plan = DocumentId::care_plan(&p);
    let header = DocumentId::patient_header(&p);
    let meds = DocumentId::medication(&p);
    let (mut server, mut a, mut b) = (
        Replica::new(backend),
        Replica::new(backend),
        Replica::new(backend),
    );
    // Clinical single values are a nurse's to change (a carer is refused, below); so here two
    // nurses, each offline, change the same three fields.
    let (nils, nora, chief) = (nurse("nils"), nurse("nora"), nurse("chief"));

    let allergy = Register::Allergy(rid("al1"));
    let allergy_value = |status| RegisterValue::Allergy {
        substance: "Penicillin".into(),
        criticality: Criticality::High,
        status,
        reaction: None,
    };
    let responsibility = |org: &str| RegisterValue::Responsibility {
        organisation: org.into(),
        person: None,
    };
    server
        .repo
        .change(&plan, &chief, at(7, 0), |e| {
            e.update(
                rid("resp-1"),
                Register::Responsibility,
                responsibility("Region Vårdcentral"),
            )
        })
        .unwrap();
    server
        .repo
        .change(&header, &chief, at(7, 0), |e| {
            e.create(
                rid("al1-1"),
                allergy.clone(),
                allergy_value(AllergyStatus::Active),
                None,
            )
        })
        .unwrap();
    server
        .repo
        .change(&meds, &chief, at(7, 0), |e| {
            e.create(
                rid("o1-v1"),
                Register::Order(rid("o1")),
                order("1 tablet", at(7, 0)),
                None,
            )
        })
        .unwrap();
    for doc in [&plan, &header, &meds] {
        exchange(&mut server, &mut a, doc);
        exchange(&mut server, &mut b, doc);
    }

    a.repo
        .change(&plan, &nils, at(10, 0), |e| {
            e.update(
                rid("resp-a"),
                Register::Responsibility,
                responsibility("Kommunen Hemsjukvård"),
            )
        })
        .unwrap();
    b.repo
        .change(&plan, &nora, at(10, 1), |e| {
            e.update(
                rid("resp-b"),
                Register::Responsibility,
                responsibility("Region Vårdcentral Syd"),
            )
        })
        .unwrap();
    a.repo
        .change(&header, &nils, at(10, 0), |e| {
            e.update(
                rid("al1-a"),
                allergy.clone(),
                allergy_value(AllergyStatus::Inactive),
            )
        })
        .unwrap();
    b.repo
        .change(&header, &nora, at(10, 1), |e| {
            e.update(
                rid("al1-b"),
                allergy.clone(),
                allergy_value(AllergyStatus::Refuted),
            )
        })
        .unwrap();
    a.repo
        .change(&meds, &nils, at(10, 0), |e| {
            e.update(
                rid("o1-a"),
                Register::Order(rid("o1")),
                order("2 tablets", at(10, 0)),
            )
        })
        .unwrap();
    b.repo
        .change(&meds, &nora, at(10, 1), |e| {
            e.update(
                rid("o1-b"),
                Register::Order(rid("o1")),
                order("half a tablet", at(10, 1)),
            )
        })
        .unwrap();

    // A carer may not change a dose, even offline: refused before anything is written.
    let refused = a.repo.change(&meds, &carer("anna"), at(10, 2), |e| {
        e.update(
            rid("o1-c"),
            Register::Order(rid("o1")),
            order("3 tablets", at(10, 2)),
        )
    });
    assert!(
        matches!(
            refused,
            Err(sync_core::RepoError::Model(ModelError::NotPermitted {
                role: Role::Carer,
                ..
            }))
        ),
        "{refused:?}"
    );

    reopen_all(&mut [&mut server, &mut a, &mut b]);
    for doc in [&plan, &header, &meds] {
        exchange(&mut a, &mut server, doc);
        exchange(&mut b, &mut server, doc);
        exchange(&mut a, &mut server, doc);
    }
    reopen_all(&mut [&mut server, &mut a, &mut b]);

    let expect = [
        (plan.clone(), Register::Responsibility, ["resp-a", "resp-b"]),
        (header.clone(), allergy.clone(), ["al1-a", "al1-b"]),
        (meds.clone(), Register::Order(rid("o1")), ["o1-a", "o1-b"]),
    ];
    for r in [&mut server, &mut a, &mut b] {
        for (doc, reg, ids) in &expect {
            let d = r.doc(doc);
            let conflicts = d.conflicts();
            assert_eq!(conflicts.len(), 1, "{doc}");
            assert_eq!(&conflicts[0].register, reg);
            let mut got: Vec<_> = conflicts[0]
                .candidates
                .iter()
                .map(|c| {
                    (
                        c.id.as_str().to_owned(),
                        c.revision.author.user.to_string(),
                        c.version,
                    )
                })
                .collect();
            got.sort();
            assert_eq!(
                got,
                vec![
                    (ids[0].into(), "nils".into(), 2),
                    (ids[1].into(), "nora".into(), 2)
                ]
            );
            // Nobody's value silently wins.
            assert!(matches!(d.register(reg), RegisterState::Conflict(ref c) if c.len() == 2));
        }
    }

    // An ordinary update is refused while in conflict; only a resolution that supersedes both
    // values clears it.
    let refused = server.repo.change(&meds, &chief, at(11, 0), |e| {
        e.update(
            rid("o1-x"),
            Register::Order(rid("o1")),
            order("1 tablet", at(11, 0)),
        )
    });
    assert!(
        matches!(
            refused,
            Err(sync_core::RepoError::Model(ModelError::Conflicted { .. }))
        ),
        "{refused:?}"
    );
    server
        .repo
        .change(&meds, &chief, at(11, 0), |e| {
            e.resolve(
                rid("o1-r"),
                Register::Order(rid("o1")),
                order("half a tablet", at(11, 0)),
            )
        })
        .unwrap();
    server
        .repo
        .change(&plan, &chief, at(11, 0), |e| {
            e.resolve(
                rid("resp-r"),
                Register::Responsibility,
                responsibility("Kommunen Hemsjukvård"),
            )
        })
        .unwrap();
    server
        .repo
        .change(&header, &chief, at(11, 0), |e| {
            e.resolve(
                rid("al1-r"),
                allergy.clone(),
                allergy_value(AllergyStatus::Active),
            )
        })
        .unwrap();
    for doc in [&plan, &header, &meds] {
        exchange(&mut server, &mut a, doc);
        exchange(&mut server, &mut b, doc);
    }
    for r in [&mut server, &mut a, &mut b] {
        let d = r.doc(&meds);
        assert!(d.conflicts().is_empty());
        match d.register(&Register::Order(rid("o1"))) {
            RegisterState::Value(v) => {
                assert_eq!(v.id, rid("o1-r"));
                assert_eq!(v.version, 3);
                let mut s = v.revision.supersedes.clone();
                s.sort();
                assert_eq!(s, vec![rid("o1-a"), rid("o1-b")]);
            }
            other => panic!("{other:?}"),
        }
        // Both conflicting revisions stay in the document.
        assert!(d.revision(&rid("o1-a")).is_some() && d.revision(&rid("o1-b")).is_some());
        assert!(r.doc(&plan).conflicts().is_empty());
        assert!(r.doc(&header).conflicts().is_empty());
    }
}

fn s2_two_workers_sign_the_same_dose_offline(backend: Backend) {
    let p = patient("p-2");
    let meds = DocumentId::medication(&p);
    let log = DocumentId::administrations(&p, november());
    let (mut server, mut a, mut b) = (
        Replica::new(backend),
        Replica::new(backend),
        Replica::new(backend),
    );
    let (anna, bo, nina) = (carer("anna"), carer("bo"), nurse("nina"));

    server
        .repo
        .change(&meds, &nina, at(6, 0), |e| {
            e.create(
                rid("o1-v1"),
                sync_core::model::Register::Order(rid("o1")),
                order("1 tablet", at(6, 0)),
                None,
            )
        })
        .unwrap();
    exchange(&mut server, &mut a, &meds);
    exchange(&mut server, &mut b, &meds);

    // Both offline; neither has the November log from anyone: each starts it from genesis.
    a.repo
        .change(&log, &anna, at(8, 2), |e| {
            e.record(
                rid("adm-a"),
                given("o1", &rid("o1-v1"), "2026-11-24T08:00", at(8, 2)),
            )
        })
        .unwrap();
    b.repo
        .change(&log, &bo, at(8, 5), |e| {
            e.record(
                rid("adm-b"),
                given("o1", &rid("o1-v1"), "2026-11-24T08:00", at(8, 5)),
            )
        })
        .unwrap();
    // Before sync, each phone sees only its own dose given, and no flag.
    for (r, who) in [(&mut a, &anna), (&mut b, &bo)] {
        let chart = r.repo.chart(&p, &[]).unwrap();
        assert!(
            matches!(chart.slot_status(&rid("o1"), "2026-11-24T08:00"), SlotStatus::Given { ref by, .. } if by == who)
        );
        assert!(chart.flags().is_empty());
    }
    reopen_all(&mut [&mut server, &mut a, &mut b]);

    exchange(&mut a, &mut server, &log);
    exchange(&mut b, &mut server, &log);
    exchange(&mut a, &mut server, &log);

    let flag_id = "double-dose/o1/2026-11-24T08:00";
    for r in [&mut server, &mut a, &mut b] {
        r.repo.get(&meds).unwrap();
        let chart = r.repo.chart(&p, std::slice::from_ref(&log)).unwrap();
        let flags = chart.flags();
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].id, flag_id);
        assert!(flags[0].open);
        assert_eq!(flags[0].evidence, vec![rid("adm-a"), rid("adm-b")]);
        assert!(matches!(flags[0].kind, FlagKind::PossibleDoubleDose { .. }));
        assert!(
            matches!(chart.slot_status(&rid("o1"), "2026-11-24T08:00"), SlotStatus::PossibleDoubleDose { ref administrations } if administrations.len() == 2)
        );
    }

    // A carer cannot clear the flag; a nurse acknowledges it.
    let ack = |who: &sync_core::Author, id: &str| {
        let who = who.clone();
        let id = rid(id);
        move |e: &mut sync_core::model::Edit<'_>| {
            let _ = &who;
            e.record(
                id,
                EventBody::FlagAcknowledgement {
                    flag: flag_id.into(),
                    covers: vec![rid("adm-a"), rid("adm-b")],
                    comment: Some("Called the patient; one dose taken, one spilled.".into()),
                },
            )
        }
    };
    let refused = a.repo.change(&log, &anna, at(9, 0), ack(&anna, "ack-a"));
    assert!(
        matches!(
            refused,
            Err(sync_core::RepoError::Model(ModelError::NotPermitted { .. }))
        ),
        "{refused:?}"
    );
    server
        .repo
        .change(&log, &nina, at(9, 30), ack(&nina, "ack-n"))
        .unwrap();
    exchange(&mut server, &mut a, &log);
    exchange(&mut server, &mut b, &log);
    reopen_all(&mut [&mut server, &mut a, &mut b]);

    for r in [&mut server, &mut a, &mut b] {
        r.repo.get(&meds).unwrap();
        let chart = r.repo.chart(&p, std::slice::from_ref(&log)).unwrap();
        let flags = chart.flags();
        // The flag stays, with its acknowledgement; nothing is deleted.
        assert_eq!(flags.len(), 1);
        assert!(!flags[0].open);
        assert_eq!(flags[0].acknowledgements.len(), 1);
        assert_eq!(flags[0].acknowledgements[0].author, nina);
        let d = r.doc(&log);
        assert!(d.event(&rid("adm-a")).is_some() && d.event(&rid("adm-b")).is_some());
    }

    // A third "given" for the slot reopens the acknowledged flag.
    a.repo
        .change(&log, &anna, at(9, 40), |e| {
            e.record(
                rid("adm-c"),
                given("o1", &rid("o1-v1"), "2026-11-24T08:00", at(9, 40)),
            )
        })
        .unwrap();
    exchange(&mut a, &mut server, &log);
    let chart = server.repo.chart(&p, &[]).unwrap();
    assert!(chart.flags()[0].open);
}

fn s3_dose_given_on_an_order_version_superseded_while_offline(backend: Backend) {
    let p = patient("p-3");
    let meds = DocumentId::medication(&p);
    let log = DocumentId::administrations(&p, november());
    let (mut server, mut a) = (Replica::new(backend), Replica::new(backend));
    let (anna, nina) = (carer("anna"), nurse("nina"));
    let o1 = Register::Order(rid("o1"));

    server
        .repo
        .change(&meds, &nina, at(0, 1), |e| {
            e.create(rid("v1"), o1.clone(), order("4 tablets", at(0, 1)), None)
        })
        .unwrap();
    server
        .repo
        .change(&meds, &nina, at(0, 2), |e| {
            e.update(rid("v2"), o1.clone(), order("3 tablets", at(0, 2)))
        })
        .unwrap();
    server
        .repo
        .change(&meds, &nina, at(0, 3), |e| {
            e.update(rid("v3"), o1.clone(), order("2 tablets", at(0, 3)))
        })
        .unwrap();
    exchange(&mut server, &mut a, &meds);
    assert_eq!(a.doc(&meds).version(&rid("v3")), 3);

    // Anna goes offline holding version 3 and gives the 08:00 dose: fine.
    a.repo
        .change(&log, &anna, at(8, 0), |e| {
            e.record(
                rid("adm-08"),
                given("o1", &rid("v3"), "2026-11-24T08:00", at(8, 0)),
            )
        })
        .unwrap();
    // The nurse publishes version 4 (dose halved), valid from 12:00.
    server
        .repo
        .change(&meds, &nina, at(11, 0), |e| {
            e.update(rid("v4"), o1.clone(), order("1 tablet", at(12, 0)))
        })
        .unwrap();
    // Still offline, Anna gives the 20:00 dose by version 3.
    a.repo
        .change(&log, &anna, at(20, 3), |e| {
            e.record(
                rid("adm-20"),
                given("o1", &rid("v3"), "2026-11-24T20:00", at(20, 3)),
            )
        })
        .unwrap();
    reopen_all(&mut [&mut server, &mut a]);

    exchange(&mut a, &mut server, &meds);
    exchange(&mut a, &mut server, &log);
    reopen_all(&mut [&mut server, &mut a]);

    for r in [&mut server, &mut a] {
        let d = r.doc(&log);
        match &d.event(&rid("adm-20")).unwrap().body {
            EventBody::Administration { order_revision, .. } => {
                assert_eq!(order_revision, &rid("v3"))
            }
            other => panic!("{other:?}"),
        }
        let chart = r.repo.chart(&p, &[]).unwrap();
        let flags = chart.flags();
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert_eq!(flags[0].id, "superseded-order/adm-20");
        assert!(flags[0].open);
        match &flags[0].kind {
            FlagKind::GivenOnSupersededOrder {
                administration,
                revision,
                superseded_by,
                ..
            } => {
                assert_eq!(administration, &rid("adm-20"));
                assert_eq!(revision, &rid("v3"));
                assert_eq!(superseded_by, &vec![rid("v4")]);
            }
            other => panic!("{other:?}"),
        }
        let meds_doc = r.doc(&meds);
        assert!(meds_doc.superseded_by(&rid("v3")) == vec![rid("v4")]);
        assert_eq!(meds_doc.version(&rid("v4")), 4);
    }
}

fn s7_note_signed_on_the_wrong_patient_is_marked_and_corrected(backend: Backend) {
    let (wrong, right) = (patient("p-7a"), patient("p-7b"));
    let wrong_j = DocumentId::journal(&wrong, november());
    let right_j = DocumentId::journal(&right, november());
    let (mut server, mut a) = (Replica::new(backend), Replica::new(backend));
    let (anna, nina) = (carer("anna"), nurse("nina"));

    a.repo
        .change(&wrong_j, &anna, at(9, 0), |e| {
            e.record(
                rid("n1"),
                EventBody::Note {
                    body: "Helped with shower; skin on left heel red.".into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
    exchange(&mut a, &mut server, &wrong_j);

    // Another carer may not mark Anna's note; Anna (or a nurse) may.
    let refused = server.repo.change(&wrong_j, &carer("bo"), at(9, 30), |e| {
        e.record(
            rid("eie-bo"),
            EventBody::EnteredInError {
                target: rid("n1"),
                reason: "wrong patient".into(),
            },
        )
    });
    assert!(
        matches!(
            refused,
            Err(sync_core::RepoError::Model(ModelError::NotPermitted { .. }))
        ),
        "{refused:?}"
    );

    a.repo
        .change(&wrong_j, &anna, at(10, 0), |e| {
            e.record(
                rid("eie-1"),
                EventBody::EnteredInError {
                    target: rid("n1"),
                    reason: "Signed on the wrong patient".into(),
                },
            )
        })
        .unwrap();
    a.repo
        .change(&right_j, &anna, at(10, 1), |e| {
            e.record(
                rid("n2"),
                EventBody::Note {
                    body: "Helped with shower; skin on left heel red.".into(),
                    corrects: Some(RecordRef {
                        document: wrong_j.to_string(),
                        record: rid("n1"),
                    }),
                },
            )
        })
        .unwrap();
    // Marking a record that is not there, or marking a marking, is refused.
    assert!(
        a.repo
            .change(&wrong_j, &nina, at(10, 2), |e| e.record(
                rid("eie-2"),
                EventBody::EnteredInError {
                    target: rid("nope"),
                    reason: "x".into()
                }
            ))
            .is_err()
    );
    assert!(
        a.repo
            .change(&wrong_j, &nina, at(10, 2), |e| e.record(
                rid("eie-3"),
                EventBody::EnteredInError {
                    target: rid("eie-1"),
                    reason: "x".into()
                }
            ))
            .is_err()
    );
    reopen_all(&mut [&mut server, &mut a]);
    exchange(&mut a, &mut server, &wrong_j);
    exchange(&mut a, &mut server, &right_j);
    reopen_all(&mut [&mut server, &mut a]);

    for r in [&mut server, &mut a] {
        let d = r.doc(&wrong_j);
        // The original stays, marked, with who marked it and when.
        assert!(matches!(
            d.event(&rid("n1")).unwrap().body,
            EventBody::Note { .. }
        ));
        let marks = d.entered_in_error(&rid("n1"));
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].1.author, anna);
        assert_eq!(marks[0].1.at, at(10, 0));
        assert!(
            d.history()
                .iter()
                .any(|h| h.writes.contains(&"events/n1".to_string()))
        );
        // The correction is linked to it.
        match &r.doc(&right_j).event(&rid("n2")).unwrap().body {
            EventBody::Note {
                corrects: Some(c), ..
            } => {
                assert_eq!(c.document, wrong_j.to_string());
                assert_eq!(c.record, rid("n1"));
            }
            other => panic!("{other:?}"),
        }
    }
}
