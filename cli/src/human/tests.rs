//! The sentences of orders, lists, dates and delegations.

use super::*;
use sync_core::model::Delegation;
use sync_core::model::{MedicationOrder, PrnRule, RegisterValue};

#[test]
fn orders_read_as_a_nurse_writes_them() {
    let o = MedicationOrder {
        drug: "Metoprolol".into(),
        strength: "50 mg".into(),
        dose: "1 tablet".into(),
        route: "oral".into(),
        times: vec!["08:00".into(), "20:00".into()],
        start: "2026-11-24".into(),
        stop: None,
        delegated: false,
        window_minutes: None,
        prn: None,
        valid_from: sync_core::Timestamp(0),
    };
    assert_eq!(
        order_sentence(&o),
        "Metoprolol 50 mg, 1 tablet by mouth at 08:00 and 20:00, from 24 Nov 2026"
    );
    assert_eq!(
        and_list(&["a".into(), "b".into(), "c".into()]),
        "a, b and c"
    );
    assert_eq!(slot_words("2026-11-24T08:00"), "24 Nov 2026 08:00");
    assert_eq!(day("not a date"), "not a date");
    assert_eq!(capitalise("allergy"), "Allergy");
    let prn = MedicationOrder {
        drug: "Paracetamol".into(),
        strength: "500 mg".into(),
        dose: "2 tablets".into(),
        times: vec![],
        prn: Some(PrnRule {
            max_per_day: 4,
            min_interval_minutes: 360,
            follow_up_minutes: 60,
        }),
        ..o
    };
    assert_eq!(
        order_sentence(&prn),
        "Paracetamol 500 mg, 2 tablets by mouth when needed, at most 4 a day, at least 6 hours \
         apart, effect followed up after 60 minutes, from 24 Nov 2026"
    );
    let d = Delegation {
        to: sync_core::UserId::new("anna").unwrap(),
        scope: vec!["medication".into(), "insulin".into()],
        from: sync_core::Timestamp(1_795_996_800_000), // 30 Nov 2026 00:00 UTC
        until: sync_core::Timestamp(1_796_083_200_000), // 1 Dec 2026 00:00 UTC
        revoked: true,
    };
    let ctx = Ctx {
        offset: time::UtcOffset::UTC,
        json: false,
        staff: Default::default(),
    };
    let revoked = RegisterValue::Delegation(d);
    assert_eq!(
        value_sentence(&ctx, &revoked),
        "delegation to anna for medication and insulin, from 30 Nov 2026 until 30 Nov 2026 \
         (revoked)"
    );
    // With the directory's name of the member of staff, the name.
    *ctx.staff.borrow_mut() = nara_client::StaffNames::new([nara_client::StaffMember {
        user: sync_core::UserId::new("anna").unwrap(),
        name: "Anna Lind".into(),
        role: "carer".into(),
        organisation: "Hemtjänst Norr".into(),
    }]);
    assert!(value_sentence(&ctx, &revoked).starts_with("delegation to Anna Lind for"));
}
