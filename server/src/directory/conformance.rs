//! The directory's conformance suite: every backend of [`Directory`] is held to these very
//! cases (`directory/tests.rs` runs them on SQLite, `pg/directory_tests.rs` on PostgreSQL),
//! through [`directory_conformance!`]. Each case takes a [`Fixture`]: one empty directory, and
//! handles on it (a connection of their own where the backend has them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use sync_core::{DeviceId, PatientId, Role, UserId};

use super::rules::CROCKFORD;
use super::*;

/// One empty directory for one test, and handles on it.
pub(crate) trait Fixture: Sync {
    type Dir: Directory + 'static;
    /// A new handle on this fixture's directory; every handle sees the same data.
    fn open(&self) -> Self::Dir;
}

/// `#[test]` functions running every case of the suite on the fixture `$fixture` makes.
macro_rules! directory_conformance {
    ($fixture:expr) => {
        $crate::directory::conformance::directory_conformance!(@cases $fixture;
            users_patients_and_assignments_round_trip,
            bad_input_is_refused,
            enrollment_code_works_once_and_only_within_a_day,
            a_signing_key_is_registered_once_and_never_replaced,
            authenticate_checks_secret_and_revocation,
            touch_records_last_seen_and_cursor,
            a_copy_is_recorded_once_per_pair_with_when_first_found,
            every_change_bumps_the_generation,
            two_handles_see_each_others_writes,
            concurrent_writers_all_succeed,
            directory_is_usable_as_a_shared_trait_object,
            staff_orgs_and_unused_enrollment_codes_are_listed,
            a_relatives_consent_is_granted_listed_and_withdrawn_by_name,
            the_changes_a_device_has_waiting_are_kept_as_last_reported,
            a_connection_records_last_seen_cursor_and_waiting_together,
            a_web_device_key_is_made_once_registered_and_kept_but_never_connects,
            a_persons_web_device_key_is_made_once_looked_up_as_a_phones_and_kept_apart,
            a_code_redeemed_on_several_handles_at_once_makes_one_device,
            consents_granted_on_several_handles_at_once_stay_within_the_bound,
            a_key_registered_on_several_handles_at_once_is_registered_once,
            an_unassignment_is_kept_with_its_time_and_feed_head_until_assigned_again,
            withdrawals_told_and_sent_are_rows_every_handle_reads,
            old_access_state_is_imported_once_without_overriding_rows,
            ends_past_the_grace_are_dropped_with_their_withdrawals,
        );
    };
    (@cases $fixture:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                let fixture = $fixture;
                $crate::directory::conformance::$case(&fixture);
            }
        )*
    };
}
pub(crate) use directory_conformance;

mod access;
pub(crate) use access::*;

fn ended(at_ms: i64, head: u64) -> sync_core::protocol::policy::Ended {
    sync_core::protocol::policy::Ended { at_ms, head }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
fn pid(s: &str) -> PatientId {
    PatientId::new(s).unwrap()
}

/// A directory with org "o1", carer "u-carer", nurse "u-nurse", admin "u-admin" and
/// patients "p-1", "p-2".
fn setup<F: Fixture>(f: &F) -> F::Dir {
    let d = f.open();
    d.add_org("o1", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("u-carer"), "Anna", Role::Carer, "o1")
        .unwrap();
    d.add_user(&uid("u-nurse"), "Berit", Role::Nurse, "o1")
        .unwrap();
    d.add_user(&uid("u-admin"), "Cecilia", Role::Admin, "o1")
        .unwrap();
    d.add_patient(&pid("p-1"), "Dagny").unwrap();
    d.add_patient(&pid("p-2"), "Einar").unwrap();
    d
}

pub(crate) fn users_patients_and_assignments_round_trip<F: Fixture>(f: &F) {
    let d = setup(f);
    assert_eq!(
        d.user(&uid("u-nurse")).unwrap(),
        Some(User {
            id: uid("u-nurse"),
            name: "Berit".into(),
            role: Role::Nurse,
            org: "o1".into()
        })
    );
    assert_eq!(d.user(&uid("nobody")).unwrap(), None);
    assert_eq!(
        d.patients().unwrap(),
        vec![(pid("p-1"), "Dagny".into()), (pid("p-2"), "Einar".into())]
    );
    d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
    d.assign(&uid("u-carer"), &pid("p-2")).unwrap();
    d.assign(&uid("u-nurse"), &pid("p-2")).unwrap();
    d.unassign(&uid("u-carer"), &pid("p-2"), ended(1_000, 3))
        .unwrap();
    drop(d);
    // Survives reopening.
    let d = f.open();
    let a = d.assignments().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[&uid("u-carer")], BTreeSet::from([pid("p-1")]));
    assert_eq!(a[&uid("u-nurse")], BTreeSet::from([pid("p-2")]));
    assert!(!a.contains_key(&uid("u-admin")));
}

pub(crate) fn bad_input_is_refused<F: Fixture>(f: &F) {
    let d = setup(f);
    assert!(matches!(
        d.add_org("o1", "again"),
        Err(DirectoryError::Exists { what: "org", .. })
    ));
    assert!(matches!(
        d.add_org("bad id", "x"),
        Err(DirectoryError::Invalid(_))
    ));
    assert!(matches!(
        d.add_org("o2", "  "),
        Err(DirectoryError::Invalid(_))
    ));
    assert!(matches!(
        d.add_user(&uid("u-x"), "X", Role::Carer, "no-such-org"),
        Err(DirectoryError::NotFound { what: "org", .. })
    ));
    assert!(matches!(
        d.add_user(&uid("u-carer"), "X", Role::Carer, "o1"),
        Err(DirectoryError::Exists { what: "user", .. })
    ));
    assert!(matches!(
        d.add_patient(&pid("p-1"), "X"),
        Err(DirectoryError::Exists {
            what: "patient",
            ..
        })
    ));
    assert!(matches!(
        d.assign(&uid("nobody"), &pid("p-1")),
        Err(DirectoryError::NotFound { what: "user", .. })
    ));
    assert!(matches!(
        d.assign(&uid("u-carer"), &pid("p-404")),
        Err(DirectoryError::NotFound {
            what: "patient",
            ..
        })
    ));
    assert!(matches!(
        d.assign(&uid("u-admin"), &pid("p-1")),
        Err(DirectoryError::NotAssignable(_))
    ));
    d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
    assert!(matches!(
        d.assign(&uid("u-carer"), &pid("p-1")),
        Err(DirectoryError::Exists {
            what: "assignment",
            ..
        })
    ));
    assert!(matches!(
        d.unassign(&uid("u-nurse"), &pid("p-1"), ended(1_000, 3)),
        Err(DirectoryError::NotFound {
            what: "assignment",
            ..
        })
    ));
    assert!(matches!(
        d.enroll(&uid("nobody"), 0),
        Err(DirectoryError::NotFound { what: "user", .. })
    ));
    let ghost = DeviceId::new("dev-ghost").unwrap();
    assert!(matches!(
        d.revoke(&ghost),
        Err(DirectoryError::NotFound { what: "device", .. })
    ));
    assert!(matches!(
        d.is_revoked(&ghost),
        Err(DirectoryError::NotFound { .. })
    ));
    assert!(matches!(
        d.touch(&ghost, 0, None),
        Err(DirectoryError::NotFound { .. })
    ));
    // A failed change changes nothing, not even the generation.
    let g = d.generation().unwrap();
    let _ = d.assign(&uid("u-admin"), &pid("p-1"));
    assert_eq!(d.generation().unwrap(), g);
}

pub(crate) fn enrollment_code_works_once_and_only_within_a_day<F: Fixture>(f: &F) {
    let d = setup(f);
    let t0 = 1_700_000_000_000;
    let code = d.enroll(&uid("u-carer"), t0).unwrap();
    assert_eq!(code.len(), CODE_LEN);
    assert!(code.bytes().all(|b| CROCKFORD.contains(&b)), "{code}");

    let cred = d.redeem(&code, t0 + 1000).unwrap();
    assert_eq!(cred.user, uid("u-carer"));
    let id = cred.device.as_str();
    assert!(id.starts_with("dev-") && id.len() == 20, "{id}");
    assert_eq!(cred.secret.len(), 64);
    assert!(matches!(
        d.redeem(&code, t0 + 2000),
        Err(DirectoryError::InvalidCode)
    ));

    // Expiry: valid until just before 24 h.
    let late = d.enroll(&uid("u-nurse"), t0).unwrap();
    assert!(matches!(
        d.redeem(&late, t0 + ENROLLMENT_TTL_MS),
        Err(DirectoryError::InvalidCode)
    ));
    let in_time = d.enroll(&uid("u-nurse"), t0).unwrap();
    // Typed by a person: lower case, grouped with a dash.
    let typed = format!(
        "{}-{}",
        in_time[..6].to_lowercase(),
        in_time[6..].to_lowercase()
    );
    let cred2 = d.redeem(&typed, t0 + ENROLLMENT_TTL_MS - 1).unwrap();
    assert_eq!(cred2.user, uid("u-nurse"));
    assert_ne!(cred2.device, cred.device);

    for bad in ["", "0000000000000", "ABC", "ÅÅÅÅÅÅÅÅÅÅÅÅ", "UUUUUUUUUUUU"] {
        assert!(
            matches!(d.redeem(bad, t0), Err(DirectoryError::InvalidCode)),
            "{bad:?}"
        );
    }
    assert!(matches!(
        d.redeem("000000000000", t0),
        Err(DirectoryError::InvalidCode)
    ));
    assert_eq!(d.devices().unwrap().len(), 2);
}

pub(crate) fn a_signing_key_is_registered_once_and_never_replaced<F: Fixture>(f: &F) {
    let d = setup(f);
    let code = d.enroll(&uid("u-carer"), 0).unwrap();
    let cred = d.redeem(&code, 1).unwrap();
    // Enrolled without one (an older build): NULL, an unsigned legacy device.
    assert_eq!(d.signing_key(&cred.device).unwrap(), None);
    let generation = d.generation().unwrap();
    assert_eq!(
        d.register_key(&cred.device, &[1; 32]).unwrap(),
        KeyRegistration::Registered
    );
    assert_eq!(
        d.register_key(&cred.device, &[1; 32]).unwrap(),
        KeyRegistration::Unchanged
    );
    assert_eq!(
        d.register_key(&cred.device, &[2; 32]).unwrap(),
        KeyRegistration::Conflict
    );
    assert_eq!(d.signing_key(&cred.device).unwrap(), Some([1; 32]));
    assert_eq!(d.generation().unwrap(), generation);
    let unknown = DeviceId::new("dev-unknown").unwrap();
    assert!(matches!(
        d.register_key(&unknown, &[1; 32]),
        Err(DirectoryError::NotFound { .. })
    ));
}

pub(crate) fn authenticate_checks_secret_and_revocation<F: Fixture>(f: &F) {
    let d = setup(f);
    let code = d.enroll(&uid("u-nurse"), 0).unwrap();
    let cred = d.redeem(&code, 0).unwrap();
    assert_eq!(
        d.authenticate(&cred.device, &cred.secret).unwrap(),
        Some(DeviceIdentity {
            device: cred.device.clone(),
            user: uid("u-nurse"),
            role: Role::Nurse
        })
    );
    let mut wrong = cred.secret.clone();
    wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
    assert_eq!(d.authenticate(&cred.device, &wrong).unwrap(), None);
    assert_eq!(d.authenticate(&cred.device, "").unwrap(), None);
    assert_eq!(
        d.authenticate(&DeviceId::new("dev-0").unwrap(), &cred.secret)
            .unwrap(),
        None
    );
    assert!(!d.is_revoked(&cred.device).unwrap());
    d.revoke(&cred.device).unwrap();
    assert!(d.is_revoked(&cred.device).unwrap());
    assert_eq!(d.authenticate(&cred.device, &cred.secret).unwrap(), None);
    // Revoking twice is fine.
    d.revoke(&cred.device).unwrap();
    assert!(d.devices().unwrap()[0].revoked);
}

pub(crate) fn touch_records_last_seen_and_cursor<F: Fixture>(f: &F) {
    let d = setup(f);
    let code = d.enroll(&uid("u-carer"), 0).unwrap();
    let cred = d.redeem(&code, 0).unwrap();
    let info = &d.devices().unwrap()[0];
    assert_eq!((info.last_seen_ms, info.cursor), (None, None));
    let g = d.generation().unwrap();
    d.touch(&cred.device, 10, Some(42)).unwrap();
    d.touch(&cred.device, 20, None).unwrap();
    assert_eq!(
        d.devices().unwrap(),
        vec![DeviceInfo {
            id: cred.device.clone(),
            user: uid("u-carer"),
            last_seen_ms: Some(20),
            revoked: false,
            cursor: Some(42),
            copy_detected_ms: None,
            copies: Vec::new(),
        }]
    );
    assert_eq!(d.generation().unwrap(), g, "touch does not bump");
    assert!(matches!(
        d.touch(&cred.device, 30, Some(u64::MAX)),
        Err(DirectoryError::Invalid(_))
    ));
}

pub(crate) fn a_copy_is_recorded_once_per_pair_with_when_first_found<F: Fixture>(f: &F) {
    let d = setup(f);
    let code = d.enroll(&uid("u-carer"), 0).unwrap();
    let cred = d.redeem(&code, 0).unwrap();
    d.copy_detected(&cred.device, 0, 1, 10).unwrap();
    d.copy_detected(&cred.device, 0, 1, 20).unwrap();
    d.copy_detected(&cred.device, 1, 2, 30).unwrap();
    let info = &d.devices().unwrap()[0];
    assert_eq!(info.copy_detected_ms, Some(10));
    assert_eq!(info.copies, vec![(0, 1), (1, 2)]);
    assert!(matches!(
        d.copy_detected(&DeviceId::new("nobody").unwrap(), 0, 1, 40),
        Err(DirectoryError::NotFound { .. })
    ));
}

pub(crate) fn every_change_bumps_the_generation<F: Fixture>(f: &F) {
    let d = f.open();
    let mut last = d.generation().unwrap();
    assert_eq!(last, 0);
    let mut bumped = |what: &str| {
        let g = d.generation().unwrap();
        assert!(g > last, "{what} did not bump the generation");
        last = g;
    };
    d.add_org("o1", "Org").unwrap();
    bumped("add_org");
    d.add_user(&uid("u1"), "U", Role::Carer, "o1").unwrap();
    bumped("add_user");
    d.add_patient(&pid("p1"), "P").unwrap();
    bumped("add_patient");
    d.assign(&uid("u1"), &pid("p1")).unwrap();
    bumped("assign");
    d.unassign(&uid("u1"), &pid("p1"), ended(1_000, 3)).unwrap();
    bumped("unassign");
    let code = d.enroll(&uid("u1"), 0).unwrap();
    bumped("enroll");
    let cred = d.redeem(&code, 0).unwrap();
    bumped("redeem");
    d.revoke(&cred.device).unwrap();
    bumped("revoke");
    let device = cred.device;
    d.withdrawal_sent(&uid("u1"), &device, &pid("p1")).unwrap();
    bumped("withdrawal_sent");
    assert!(d.withdrawal_told(&uid("u1"), &device, &pid("p1")).unwrap());
    bumped("withdrawal_told");
}

pub(crate) fn two_handles_see_each_others_writes<F: Fixture>(f: &F) {
    let a = f.open();
    let b = f.open();
    a.add_org("o1", "Org").unwrap();
    b.add_user(&uid("u1"), "U", Role::Carer, "o1").unwrap();
    a.add_patient(&pid("p1"), "P").unwrap();
    b.assign(&uid("u1"), &pid("p1")).unwrap();
    assert_eq!(a.assignments().unwrap()[&uid("u1")].len(), 1);
    let code = a.enroll(&uid("u1"), 0).unwrap();
    let cred = b.redeem(&code, 1).unwrap();
    assert!(
        a.authenticate(&cred.device, &cred.secret)
            .unwrap()
            .is_some()
    );
    let g = a.generation().unwrap();
    b.revoke(&cred.device).unwrap();
    assert!(a.generation().unwrap() > g);
    assert!(a.is_revoked(&cred.device).unwrap());
    assert_eq!(a.authenticate(&cred.device, &cred.secret).unwrap(), None);
}

pub(crate) fn concurrent_writers_all_succeed<F: Fixture>(f: &F) {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let d = f.open();
                for i in 0..25 {
                    d.add_patient(&pid(&format!("p-{t}-{i}")), "P").unwrap();
                }
            });
        }
    });
    let d = f.open();
    assert_eq!(d.patients().unwrap().len(), 100);
    assert_eq!(d.generation().unwrap(), 100);
}

pub(crate) fn directory_is_usable_as_a_shared_trait_object<F: Fixture>(f: &F) {
    let d = setup(f);
    let shared: std::sync::Arc<dyn Directory> = std::sync::Arc::new(d);
    let other = std::sync::Arc::clone(&shared);
    std::thread::spawn(move || other.add_patient(&pid("p-3"), "F").unwrap())
        .join()
        .unwrap();
    assert_eq!(shared.patients().unwrap().len(), 3);
}

pub(crate) fn staff_orgs_and_unused_enrollment_codes_are_listed<F: Fixture>(f: &F) {
    let d = setup(f);
    let ids: Vec<String> = d
        .users()
        .unwrap()
        .into_iter()
        .map(|u| u.id.to_string())
        .collect();
    assert_eq!(ids, ["u-admin", "u-carer", "u-nurse"]);
    assert_eq!(
        d.orgs().unwrap(),
        vec![("o1".to_owned(), "Hemtjänst Norr".to_owned())]
    );
    let used = d.enroll(&uid("u-carer"), 1_000).unwrap();
    d.enroll(&uid("u-nurse"), 2_000).unwrap();
    d.redeem(&used, 3_000).unwrap();
    let open = d.open_enrollments(3_000, 10).unwrap();
    assert_eq!(open.len(), 1, "the used code is not listed");
    assert_eq!(open[0].user, uid("u-nurse"));
    assert_eq!(open[0].expires_ms, 2_000 + ENROLLMENT_TTL_MS);
    assert!(
        d.open_enrollments(2_000 + ENROLLMENT_TTL_MS + 1, 10)
            .unwrap()
            .is_empty(),
        "nor an expired one"
    );
}

pub(crate) fn a_relatives_consent_is_granted_listed_and_withdrawn_by_name<F: Fixture>(f: &F) {
    let d = setup(f);
    let g0 = d.generation().unwrap();
    let c = d
        .grant_relative(&pid("p-1"), "  Erik Dagnysson ", 10)
        .unwrap();
    assert_eq!(c.relative, "Erik Dagnysson");
    assert!(
        d.generation().unwrap() > g0,
        "a consent is a directory change"
    );
    assert!(matches!(
        d.grant_relative(&pid("p-1"), "Erik Dagnysson", 11),
        Err(DirectoryError::Exists { .. })
    ));
    assert!(matches!(
        d.grant_relative(&pid("nobody"), "Erik", 11),
        Err(DirectoryError::NotFound { .. })
    ));
    assert!(d.grant_relative(&pid("p-1"), " ", 11).is_err());
    assert_eq!(d.relatives(&pid("p-1")).unwrap(), vec![c]);
    assert!(d.relatives(&pid("p-2")).unwrap().is_empty());
    d.withdraw_relative(&pid("p-1"), "Erik Dagnysson", 12)
        .unwrap();
    assert!(d.relatives(&pid("p-1")).unwrap().is_empty());
    assert!(matches!(
        d.withdraw_relative(&pid("p-1"), "Erik Dagnysson", 13),
        Err(DirectoryError::NotFound { .. })
    ));
    // Given again after withdrawal: a new consent.
    d.grant_relative(&pid("p-1"), "Erik Dagnysson", 14).unwrap();
    assert_eq!(d.relatives(&pid("p-1")).unwrap()[0].granted_ms, 14);
    for i in 1..MAX_RELATIVES {
        d.grant_relative(&pid("p-1"), &format!("r{i}"), 15).unwrap();
    }
    assert!(matches!(
        d.grant_relative(&pid("p-1"), "one too many", 16),
        Err(DirectoryError::Invalid(_))
    ));
}

pub(crate) fn the_changes_a_device_has_waiting_are_kept_as_last_reported<F: Fixture>(f: &F) {
    let d = setup(f);
    let code = d.enroll(&uid("u-carer"), 0).unwrap();
    let cred = d.redeem(&code, 1).unwrap();
    assert!(d.waiting().unwrap().is_empty(), "never reported");
    let g = d.generation().unwrap();
    d.record_connection(&cred.device, 10, None, Some(3))
        .unwrap();
    d.record_connection(&cred.device, 20, None, Some(1))
        .unwrap();
    assert_eq!(
        d.waiting().unwrap()[&cred.device],
        Waiting {
            changes: 1,
            at_ms: 20
        }
    );
    assert_eq!(d.generation().unwrap(), g, "activity, not a change");
    assert!(matches!(
        d.record_connection(&DeviceId::new("dev-ghost").unwrap(), 30, None, Some(1)),
        Err(DirectoryError::NotFound { .. })
    ));
}

pub(crate) fn a_connection_records_last_seen_cursor_and_waiting_together<F: Fixture>(f: &F) {
    let d = setup(f);
    let code = d.enroll(&uid("u-carer"), 0).unwrap();
    let cred = d.redeem(&code, 1).unwrap();
    let g = d.generation().unwrap();
    // Opening: seen, and what the device holds for upload.
    d.record_connection(&cred.device, 10, None, Some(4))
        .unwrap();
    // Ending: seen again, what it acknowledged, and what it still holds.
    d.record_connection(&cred.device, 20, Some(42), Some(1))
        .unwrap();
    // A device that reported nothing keeps its last report.
    d.record_connection(&cred.device, 30, None, None).unwrap();
    let info = &d.devices().unwrap()[0];
    assert_eq!((info.last_seen_ms, info.cursor), (Some(30), Some(42)));
    assert_eq!(
        d.waiting().unwrap()[&cred.device],
        Waiting {
            changes: 1,
            at_ms: 20
        }
    );
    assert_eq!(d.generation().unwrap(), g, "activity, not a change");
    // All or nothing: a value out of range writes neither part.
    assert!(matches!(
        d.record_connection(&cred.device, 40, None, Some(u64::MAX)),
        Err(DirectoryError::Invalid(_))
    ));
    assert_eq!(d.devices().unwrap()[0].last_seen_ms, Some(30));
    assert!(matches!(
        d.record_connection(&DeviceId::new("dev-ghost").unwrap(), 50, None, Some(1)),
        Err(DirectoryError::NotFound { .. })
    ));
}

pub(crate) fn a_web_device_key_is_made_once_registered_and_kept_but_never_connects<F: Fixture>(
    f: &F,
) {
    let d = setup(f);
    let web = DeviceId::new("web-u-nurse").unwrap();
    let seed = d.web_device_key(&web, &uid("u-nurse"), [7; 32], 1).unwrap();
    assert_eq!(seed, [7; 32]);
    // Later calls return the kept seed, whatever they offer.
    assert_eq!(
        d.web_device_key(&web, &uid("u-nurse"), [9; 32], 2).unwrap(),
        [7; 32]
    );
    // Its public key is registered as a phone's is, and never replaced.
    let public = sync_core::signing::DeviceKey::from_seed([7; 32]).public();
    assert_eq!(d.signing_key(&web).unwrap(), Some(public.0));
    assert_eq!(
        d.register_key(&web, &[1; 32]).unwrap(),
        KeyRegistration::Conflict
    );
    // No credential anyone holds, and not among the phones an administrator sees.
    assert_eq!(d.authenticate(&web, "").unwrap(), None);
    assert!(d.devices().unwrap().iter().all(|x| x.id != web));
    // An enrolled phone's id is never taken over.
    let code = d.enroll(&uid("u-carer"), 10).unwrap();
    let phone = d.redeem(&code, 11).unwrap();
    assert!(matches!(
        d.web_device_key(&phone.device, &uid("u-carer"), [3; 32], 12),
        Err(DirectoryError::Exists { .. })
    ));
}

pub(crate) fn a_persons_web_device_key_is_made_once_looked_up_as_a_phones_and_kept_apart<
    F: Fixture,
>(
    f: &F,
) {
    let d = setup(f);
    let web = DeviceId::new("web-p-1").unwrap();
    assert_eq!(d.signing_key(&web).unwrap(), None);
    let seed = d.person_device_key(&web, &pid("p-1"), [4; 32], 1).unwrap();
    assert_eq!(seed, [4; 32]);
    // Later calls return the kept seed, whatever they offer.
    assert_eq!(
        d.person_device_key(&web, &pid("p-1"), [9; 32], 2).unwrap(),
        [4; 32]
    );
    // Its public key is found where the sync service looks up a phone's.
    let public = sync_core::signing::DeviceKey::from_seed([4; 32]).public();
    assert_eq!(d.signing_key(&web).unwrap(), Some(public.0));
    // Not a device anyone holds a credential for, nor among the phones an administrator sees.
    assert_eq!(d.authenticate(&web, "").unwrap(), None);
    assert!(d.devices().unwrap().iter().all(|x| x.id != web));
    // One web device per person; an unknown person has none.
    assert!(matches!(
        d.person_device_key(&DeviceId::new("web-p-1b").unwrap(), &pid("p-1"), [5; 32], 3),
        Err(DirectoryError::Exists { .. })
    ));
    assert!(matches!(
        d.person_device_key(&DeviceId::new("web-p-9").unwrap(), &pid("p-9"), [5; 32], 3),
        Err(DirectoryError::NotFound { .. })
    ));
    // An id is never in both: not a staff web device's or a phone's, nor the other way round.
    let staff = DeviceId::new("web-u-nurse").unwrap();
    d.web_device_key(&staff, &uid("u-nurse"), [7; 32], 4)
        .unwrap();
    assert!(matches!(
        d.person_device_key(&staff, &pid("p-2"), [5; 32], 5),
        Err(DirectoryError::Exists { .. })
    ));
    assert!(matches!(
        d.web_device_key(&web, &uid("u-carer"), [6; 32], 6),
        Err(DirectoryError::Exists { .. })
    ));
    assert_eq!(d.signing_key(&web).unwrap(), Some(public.0));
}

/// Runs `work(i)` on `n` threads, each with a handle of its own, started together.
fn at_once<F: Fixture, T: Send>(
    f: &F,
    n: usize,
    work: impl Fn(usize, &F::Dir) -> T + Sync,
) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    let d = f.open();
                    barrier.wait();
                    work(i, &d)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub(crate) fn a_code_redeemed_on_several_handles_at_once_makes_one_device<F: Fixture>(f: &F) {
    let d = setup(f);
    for round in 0..5 {
        let code = d.enroll(&uid("u-carer"), round).unwrap();
        let outcomes = at_once(f, 4, |_, h| h.redeem(&code, round + 1));
        let redeemed = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(redeemed, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| o.is_ok() || matches!(o, Err(DirectoryError::InvalidCode))),
            "{outcomes:?}"
        );
    }
    assert_eq!(d.devices().unwrap().len(), 5);
}

pub(crate) fn consents_granted_on_several_handles_at_once_stay_within_the_bound<F: Fixture>(f: &F) {
    let d = setup(f);
    let outcomes = at_once(f, 4, |i, h| {
        (0..MAX_RELATIVES / 2)
            .map(|r| h.grant_relative(&pid("p-1"), &format!("r{i}-{r}"), 1))
            .collect::<Vec<_>>()
    });
    let granted = outcomes.iter().flatten().filter(|o| o.is_ok()).count();
    assert_eq!(granted, MAX_RELATIVES);
    assert_eq!(d.relatives(&pid("p-1")).unwrap().len(), MAX_RELATIVES);
    // And one name twice at once is one consent.
    let twice = at_once(f, 4, |_, h| h.grant_relative(&pid("p-2"), "Erik", 2));
    assert_eq!(twice.iter().filter(|o| o.is_ok()).count(), 1, "{twice:?}");
    assert_eq!(d.relatives(&pid("p-2")).unwrap().len(), 1);
}

pub(crate) fn a_key_registered_on_several_handles_at_once_is_registered_once<F: Fixture>(f: &F) {
    let d = setup(f);
    for round in 0..5 {
        let code = d.enroll(&uid("u-nurse"), 0).unwrap();
        let cred = d.redeem(&code, 1).unwrap();
        let outcomes = at_once(f, 4, |i, h| {
            let key = [u8::try_from(i + 1).unwrap(); 32];
            (key, h.register_key(&cred.device, &key).unwrap())
        });
        let registered: Vec<_> = outcomes
            .iter()
            .filter(|(_, o)| *o == KeyRegistration::Registered)
            .collect();
        assert_eq!(registered.len(), 1, "round {round}: {outcomes:?}");
        assert_eq!(d.signing_key(&cred.device).unwrap(), Some(registered[0].0));
    }
}
