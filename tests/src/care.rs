//! Device runtimes (`nara_client::Device`) against the test server, and the care API steps many
//! tests repeat: enrolling a phone, a sync that must refuse nothing, the care API's clock, a
//! delegation, whether a phone holds a note.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nara_client::care::{self, Clock, DelegationInput};
use nara_client::{Device, EnrollRequest, Enrollment, SyncOptions, SyncReport};
use server::directory::Directory;
use sync_core::model::EventBody;
use sync_core::model::round::local_slot;
use sync_core::{PatientId, Timestamp, UserId};

use crate::net::TestServer;
use crate::now_ms;

const DAY_MS: i64 = 24 * 3_600_000;

/// Whether `device` holds a note reading `body` in p1's journal ([`crate::team::journal`]).
pub fn has_note(device: &Device, body: &str) -> bool {
    has_note_of(device, "p1", body)
}

/// Whether `device` holds a note reading `body` in person `p`'s journal.
pub fn has_note_of(device: &Device, p: &str, body: &str) -> bool {
    let doc = crate::team::journal(p);
    device.with_repo(|repo| {
        repo.document_ids().unwrap().contains(&doc)
            && repo
                .get(&doc)
                .unwrap()
                .events()
                .values()
                .any(|e| matches!(&e.body, EventBody::Note { body: b, .. } if b == body))
    })
}

/// Writes note `id` reading `body` in person `p`'s journal on `device` (durable, pending
/// upload).
pub fn write_note(device: &Device, p: &str, id: &str, body: &str) {
    device
        .change(&crate::team::journal(p), crate::at(9, 0), |e| {
            e.record(
                crate::rid(id),
                EventBody::Note {
                    body: body.into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
}

/// `YYYY-MM-DD` (UTC) of an instant.
pub fn date_of(t: Timestamp) -> String {
    local_slot(t, 0)[..10].to_owned()
}

/// The care API's clock at `ms` (UTC dates).
pub fn clock_at(ms: i64) -> Clock {
    Clock::new(Timestamp(ms), date_of(Timestamp(ms))).unwrap()
}

/// The care API's clock now.
pub fn clock() -> Clock {
    clock_at(now_ms())
}

/// Enrolls `user`'s phone at `home` with a fresh one-time code (the server's key pinned), keeps
/// the role the directory gives (as the app is told it), and opens the runtime with `options`.
pub async fn enroll_runtime(
    server: &TestServer,
    home: &Path,
    user: &str,
    options: SyncOptions,
) -> Device {
    let uid = UserId::new(user).unwrap();
    let code = server.directory.enroll(&uid, now_ms()).unwrap();
    let request = EnrollRequest {
        server: format!("https://localhost:{}", server.addr.port()),
        code,
        pin: Some(server.pin.clone()),
        ..EnrollRequest::default()
    };
    let (device, _) = Device::enroll(home, &request).await.unwrap();
    drop(device);
    let role = server.directory.user(&uid).unwrap().unwrap().role;
    let (mut e, _) = Enrollment::load(home).unwrap();
    e.role = role;
    e.save(home).unwrap();
    Device::open_with(home, options).unwrap()
}

/// One sync that must complete with nothing refused either way.
pub async fn sync(device: &Device) -> SyncReport {
    let report = device.sync_once().await.unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    assert!(report.incoming_refused.is_empty(), "{report:?}");
    assert!(report.rewrite_refused.is_empty(), "{report:?}");
    report
}

/// The nurse on `nurse` delegates medication for `patient` to `user` for a month either side of
/// now (a carer's dose of a delegated order needs it, issue 14).
pub fn delegate_for_a_month(nurse: &Device, patient: &PatientId, user: &str, clock: &Clock) {
    let day = |t: i64| date_of(Timestamp(t));
    let input = DelegationInput::from_dates(
        UserId::new(user).unwrap(),
        vec!["medication".into()],
        &day(now_ms() - 30 * DAY_MS),
        &day(now_ms() + 30 * DAY_MS),
        0,
    )
    .unwrap();
    care::delegate(nurse, std::slice::from_ref(patient), &input, clock).unwrap();
}
