//! A text edit taken back by a reincarnation is made again, once, without undoing the edits
//! made meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn care_plan() -> DocumentId {
    DocumentId::care_plan(&patient())
}

fn description() -> crate::model::records::TextKey {
    crate::model::records::TextKey::GoalDescription(RecordId::new("g1").unwrap())
}

/// Inserts `token` at the end of the goal's description on `phone`.
fn append(phone: &Phone, token: &str) {
    let mut repo = Repo::new(phone.store.clone());
    let text = repo
        .get(&care_plan())
        .unwrap()
        .text(&description())
        .unwrap();
    repo.change(&care_plan(), &phone.author, NOW, |e| {
        e.set_text(&description(), &format!("{text} {token}"))
    })
    .unwrap();
}

fn description_on(store: &MemoryStore) -> String {
    Repo::new(store.clone())
        .get(&care_plan())
        .unwrap()
        .text(&description())
        .unwrap()
}

/// A carer's phone and a nurse's, both holding the goal g1 ("Walk daily.") the nurse created,
/// through the server.
fn a_goal_on_both_phones() -> (MemoryStore, Phone, Phone) {
    use crate::model::records::{GoalStatus, Register, RegisterValue};
    let server = MemoryStore::new();
    let phone = Phone::new(author("anna", Role::Carer, "phone-a"));
    let nurse = Phone::new(author("nina", Role::Nurse, "phone-n"));
    Repo::new(nurse.store.clone())
        .change(&care_plan(), &nurse.author, NOW, |e| {
            e.create(
                RecordId::new("g1-v1").unwrap(),
                Register::Goal(RecordId::new("g1").unwrap()),
                RegisterValue::Goal {
                    title: "Stay home".into(),
                    status: GoalStatus::Active,
                },
                Some("Walk daily."),
            )
        })
        .unwrap();
    sync(&nurse, &server);
    sync(&phone, &server);
    (server, phone, nurse)
}

#[test]
fn a_text_edit_taken_back_is_made_again_without_undoing_edits_made_meanwhile() {
    let (server, phone, nurse) = a_goal_on_both_phones();
    let backup = phone.store.deep_copy().unwrap();
    // Before the restore the carer's edit reaches the server; the nurse edits too.
    append(&phone, "[a1]");
    sync(&phone, &server);
    append(&nurse, "[n1]");
    sync(&nurse, &server);

    // The backup comes back; the carer edits the description before syncing.
    let phone = Phone {
        author: phone.author.clone(),
        store: backup,
    };
    append(&phone, "[a2]");
    let (devents, _) = sync(&phone, &server);
    assert!(!closed(&devents), "{devents:?}");
    assert!(devents.contains(&DeviceEvent::Reincarnated {
        incarnation: 1,
        records: 1
    }));
    assert!(devents.contains(&DeviceEvent::Rewritten { records: 1 }));
    sync(&nurse, &server);
    // Every edit once, everywhere: the one made again did not write the store's old value
    // over what came back meanwhile (which would delete "[a1]" and "[n1]").
    for (who, store) in [
        ("server", &server),
        ("phone", &phone.store),
        ("nurse", &nurse.store),
    ] {
        let text = description_on(store);
        assert!(text.starts_with("Walk daily."), "{who}: {text}");
        for token in ["[a1]", "[n1]", "[a2]"] {
            assert_eq!(text.matches(token).count(), 1, "{who}: {text}");
        }
    }
}

#[test]
fn a_text_edit_taken_back_twice_is_made_again_once() {
    let (server, phone, nurse) = a_goal_on_both_phones();
    let before = phone.store.deep_copy().unwrap();
    phone.note("b1");
    sync(&phone, &server);
    // Put back to before b1, the store edits the text under b1's write counter...
    let phone = Phone {
        author: phone.author.clone(),
        store: before,
    };
    append(&phone, "[a2]");
    let with_edit = phone.store.deep_copy().unwrap();
    // ...is reincarnated, and makes the edit again under incarnation 1.
    let (devents, _) = sync(&phone, &server);
    assert!(devents.contains(&DeviceEvent::Rewritten { records: 1 }));
    // Put back once more to the store holding the edit unacknowledged: taken back again, it
    // comes back made again already and is not made a second time.
    let phone = Phone {
        author: phone.author.clone(),
        store: with_edit,
    };
    let (devents, _) = sync(&phone, &server);
    assert!(devents.contains(&DeviceEvent::Reincarnated {
        incarnation: 2,
        records: 1
    }));
    sync(&nurse, &server);
    for (who, store) in [
        ("server", &server),
        ("phone", &phone.store),
        ("nurse", &nurse.store),
    ] {
        let text = description_on(store);
        assert_eq!(text.matches("[a2]").count(), 1, "{who}: {text}");
    }
}
