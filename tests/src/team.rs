//! The small care team most server tests start from, and the steps they repeat: an
//! organisation with carers anna and bo and nurse nina, people p1 and p2, a journal note written
//! straight into a test device's store, a sync that must complete, and audit records counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::model::EventBody;
use sync_core::protocol::DeviceEvent;
use sync_core::protocol::wire::RefusalCode;
use sync_core::{DocumentId, Role, UserId};

use crate::net::{SyncEnd, TestDevice, TestServer};
use crate::{at, november, patient, rid};

pub fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// Person `p`'s journal for the tests' month.
pub fn journal(p: &str) -> DocumentId {
    DocumentId::journal(&patient(p), november())
}

/// Person `p`'s journal of the `n`th month from January 2000: as many distinct documents of
/// one person as a test needs.
pub fn journal_of_month(p: &str, n: u16) -> DocumentId {
    let month = sync_core::Month::new(2000 + n / 12, (n % 12) as u8 + 1).unwrap();
    DocumentId::journal(&patient(p), month)
}

/// Organisation `norr` with carers anna and bo and nurse nina.
pub fn add_staff(server: &TestServer) {
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    d.add_user(&uid("anna"), "Anna", Role::Carer, "norr")
        .unwrap();
    d.add_user(&uid("bo"), "Bo", Role::Carer, "norr").unwrap();
    d.add_user(&uid("nina"), "Nina", Role::Nurse, "norr")
        .unwrap();
}

/// The staff of [`add_staff`] and people p1 and p2; nobody is assigned yet.
pub fn add_team(server: &TestServer) {
    add_staff(server);
    for p in ["p1", "p2"] {
        server.directory.add_patient(&patient(p), p).unwrap();
    }
}

/// A server started with production limits and the team of [`add_team`].
pub async fn team() -> TestServer {
    let server = TestServer::start().await;
    add_team(&server);
    server
}

/// Assigns `user` to person `p` and makes the running server see it at once.
pub fn assign(server: &TestServer, user: &str, p: &str) {
    server.directory.assign(&uid(user), &patient(p)).unwrap();
    server.state.refresh().unwrap();
}

/// A journal note `id` about person `p`, written in the device's store (pending upload).
pub fn note(device: &mut TestDevice, p: &str, id: &str, body: &str) {
    let author = device.author.clone();
    device
        .repo
        .change(&journal(p), &author, at(9, 0), |e| {
            e.record(
                rid(id),
                EventBody::Note {
                    body: body.into(),
                    corrects: None,
                },
            )
        })
        .unwrap();
}

/// Whether `device` holds the journal entry `id` of person `p`.
pub fn has(device: &mut TestDevice, p: &str, id: &str) -> bool {
    device
        .repo
        .get(&journal(p))
        .unwrap()
        .event(&rid(id))
        .is_some()
}

/// The events of a sync that must have completed; fails the test otherwise.
pub fn quiet(end: SyncEnd) -> Vec<DeviceEvent> {
    match end {
        SyncEnd::Quiet(events) => events,
        other => panic!("expected a completed sync, got {other:?}"),
    }
}

/// Whether a sync's events tell of a change refused with `code`.
pub fn refused(events: &[DeviceEvent], code: RefusalCode) -> bool {
    events
        .iter()
        .any(|e| matches!(e, DeviceEvent::ChangeRefused(q) if q.code == code))
}

/// How many records of `action` person `p`'s part of the audit log holds.
pub fn audited(server: &TestServer, p: &str, action: AuditAction) -> usize {
    server
        .audit
        .export_patient(&patient(p))
        .unwrap()
        .iter()
        .filter(|r| r.entry.action == action)
        .count()
}
