//! The conformance cases of the access rows (issue 12): ended assignments and withdrawals told
//! and sent, which every server node reads.

use sync_core::protocol::policy::{AccessRows, Ended, WRITE_GRACE_MS, Withdrawal};

use super::*;

fn phone() -> DeviceId {
    DeviceId::new("carer-phone").unwrap()
}

pub(crate) fn an_unassignment_is_kept_with_its_time_and_feed_head_until_assigned_again<
    F: Fixture,
>(
    f: &F,
) {
    let d = setup(f);
    d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
    d.assign(&uid("u-carer"), &pid("p-2")).unwrap();
    d.unassign(&uid("u-carer"), &pid("p-1"), ended(5_000, 42))
        .unwrap();
    // Read through another handle: what every node reads.
    let rows = f.open().access().unwrap();
    assert_eq!(
        rows.assignments[&uid("u-carer")],
        BTreeSet::from([pid("p-2")])
    );
    assert_eq!(rows.ended[&(uid("u-carer"), pid("p-1"))], ended(5_000, 42));
    assert_eq!(rows.ended.len(), 1);
    // A failed unassignment records nothing.
    assert!(
        d.unassign(&uid("u-nurse"), &pid("p-1"), ended(6_000, 50))
            .is_err()
    );
    assert_eq!(d.access().unwrap().ended.len(), 1);
    // Assigned again: the end is forgotten, and with it the device's withdrawal.
    d.withdrawal_told(&uid("u-carer"), &phone(), &pid("p-1"))
        .unwrap();
    d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
    let rows = d.access().unwrap();
    assert!(rows.ended.is_empty());
    assert!(rows.withdrawals.is_empty());
}

pub(crate) fn withdrawals_told_and_sent_are_rows_every_handle_reads<F: Fixture>(f: &F) {
    let d = setup(f);
    let other = f.open();
    let key = (uid("u-carer"), phone(), pid("p-1"));
    d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
    d.unassign(&uid("u-carer"), &pid("p-1"), ended(1_000, 7))
        .unwrap();
    d.withdrawal_sent(&key.0, &key.1, &key.2).unwrap();
    other.withdrawal_sent(&key.0, &key.1, &key.2).unwrap();
    assert_eq!(
        d.access().unwrap().withdrawals[&key],
        Withdrawal {
            told: false,
            sent: 2
        }
    );
    assert!(other.withdrawal_told(&key.0, &key.1, &key.2).unwrap());
    let g = d.generation().unwrap();
    // Told again: no news, nothing written.
    assert!(!d.withdrawal_told(&key.0, &key.1, &key.2).unwrap());
    assert_eq!(d.generation().unwrap(), g);
    // Sent after told: nothing counts any more.
    d.withdrawal_sent(&key.0, &key.1, &key.2).unwrap();
    let w = d.access().unwrap().withdrawals[&key];
    assert!(w.told);
    assert!(w.ends_grace());
    drop(d);
    // Survives reopening.
    assert!(f.open().access().unwrap().withdrawals[&key].told);
}

pub(crate) fn old_access_state_is_imported_once_without_overriding_rows<F: Fixture>(f: &F) {
    let d = setup(f);
    d.assign(&uid("u-carer"), &pid("p-2")).unwrap();
    d.assign(&uid("u-nurse"), &pid("p-1")).unwrap();
    d.unassign(&uid("u-nurse"), &pid("p-1"), ended(9_000, 90))
        .unwrap();
    let mut legacy = AccessRows::default();
    // Ended in the old snapshot: imported.
    legacy
        .ended
        .insert((uid("u-carer"), pid("p-1")), ended(1_000, 10));
    legacy.withdrawals.insert(
        (uid("u-carer"), phone(), pid("p-1")),
        Withdrawal {
            told: false,
            sent: 2,
        },
    );
    // Assigned now: not ended any more.
    legacy
        .ended
        .insert((uid("u-carer"), pid("p-2")), ended(1_000, 10));
    // Ended here already: the row stays as it is.
    legacy
        .ended
        .insert((uid("u-nurse"), pid("p-1")), ended(2_000, 20));
    assert_eq!(d.import_access(&legacy).unwrap(), 2);
    let rows = f.open().access().unwrap();
    assert_eq!(rows.ended.len(), 2);
    assert_eq!(rows.ended[&(uid("u-carer"), pid("p-1"))], ended(1_000, 10));
    assert_eq!(rows.ended[&(uid("u-nurse"), pid("p-1"))], ended(9_000, 90));
    assert_eq!(
        rows.withdrawals[&(uid("u-carer"), phone(), pid("p-1"))].sent,
        2
    );
    // Again: nothing more.
    assert_eq!(d.import_access(&legacy).unwrap(), 0);
    assert_eq!(d.access().unwrap(), rows);
}

pub(crate) fn ends_past_the_grace_are_dropped_with_their_withdrawals<F: Fixture>(f: &F) {
    let d = setup(f);
    d.assign(&uid("u-carer"), &pid("p-1")).unwrap();
    d.assign(&uid("u-carer"), &pid("p-2")).unwrap();
    d.unassign(&uid("u-carer"), &pid("p-1"), ended(0, 1))
        .unwrap();
    d.withdrawal_sent(&uid("u-carer"), &phone(), &pid("p-1"))
        .unwrap();
    let later = Ended {
        at_ms: WRITE_GRACE_MS + 1,
        head: 2,
    };
    d.unassign(&uid("u-carer"), &pid("p-2"), later).unwrap();
    let rows = d.access().unwrap();
    assert_eq!(rows.ended.len(), 1);
    assert_eq!(rows.ended[&(uid("u-carer"), pid("p-2"))], later);
    assert!(rows.withdrawals.is_empty());
}
