//! S8 of `shared/SCENARIOS.md`, the morning sync at base: a team of 30 whose phones were
//! offline overnight, each holding its own day of notes, connect to the real server (TLS,
//! SQLite, the audit log) all at once. Every phone ends holding every note of the team, each
//! write and each delivery is in the audit log, and the process's memory stays bounded.
//!
//! Smaller than the bench's S8 (`nara-bench morning`: 40 people, 3,300 changes, which times
//! it): 6 people and 90 notes, so that a debug build runs it in seconds. Its own test binary,
//! so that the memory it reads from `/proc` is this test's alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nara_tests::net::TestDevice;
use nara_tests::team::{add_staff, assign, audited, has, note, quiet, uid};
use nara_tests::{net::TestServer, patient};
use server::audit::AuditAction;
use server::directory::Directory;
use sync_core::Role;
use sync_core::protocol::DeviceEvent;

const PHONES: usize = 30;
const PEOPLE: usize = 6;
/// Notes each phone wrote offline, each about one of two people of the team.
const NOTES: usize = 3;

/// The process's resident memory now and at its peak, in bytes (`/proc/self/status`).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Changes received so far in a connection.
fn received(events: &[DeviceEvent]) -> u64 {
    events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::Progress { received, .. } => Some(*received),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn person(k: usize) -> String {
    format!("p{k}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_thirty_phones_offline_overnight_connect_at_once_and_each_ends_with_every_note() {
    let mut server = TestServer::start().await;
    add_staff(&server);
    for k in 0..PEOPLE {
        server
            .directory
            .add_patient(&patient(&person(k)), &person(k))
            .unwrap();
    }
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let user = format!("carer{i:02}");
        server
            .directory
            .add_user(&uid(&user), &user, Role::Carer, "norr")
            .unwrap();
        // The whole team holds every person of the team.
        for k in 0..PEOPLE {
            assign(&server, &user, &person(k));
        }
        let mut phone = TestDevice::enroll(&server, &user).await;
        // Yesterday's sync: the phone holds the team's people.
        quiet(phone.sync(&server).await);
        phones.push(phone);
    }

    // Overnight, offline: each phone's notes about two people of the team.
    let mut written: Vec<(String, String)> = Vec::new();
    for (i, phone) in phones.iter_mut().enumerate() {
        for n in 0..NOTES {
            let p = person((i + n % 2) % PEOPLE);
            let id = format!("carer{i:02}-n{n}");
            note(
                phone,
                &p,
                &id,
                &format!("Visit {n} by carer {i}: all well."),
            );
            written.push((p, id));
        }
    }
    let (rss_before, _) = memory();

    // All at once at base: every phone connects, uploads its night, and stays until it has
    // received every other phone's notes (pushed to it live as they are stored).
    let others = (written.len() - NOTES) as u64;
    let syncs = phones.iter_mut().map(|phone| {
        phone.sync_waiting_for(
            &server,
            move |events| received(events) >= others,
            Duration::from_secs(60),
        )
    });
    let ends = futures_util::future::join_all(syncs).await;
    for (i, end) in ends.into_iter().enumerate() {
        let events = quiet(end);
        assert_eq!(
            received(&events),
            others,
            "phone {i} received each other phone's notes once"
        );
    }

    // In sync: every phone holds every note of the team, its own and the others'.
    for (i, phone) in phones.iter_mut().enumerate() {
        for (p, id) in &written {
            assert!(has(phone, p, id), "phone {i} lacks {id} of {p}");
        }
    }
    // Each write is in the log with who stored it, and each person's notes went out to the
    // team under disclosure records.
    for k in 0..PEOPLE {
        let p = person(k);
        let writers = (0..PHONES)
            .filter(|i| (0..NOTES).any(|n| (i + n % 2) % PEOPLE == k))
            .count();
        assert!(
            audited(&server, &p, AuditAction::Accept) >= writers,
            "an accept record for each phone that wrote about {p}"
        );
        assert!(
            audited(&server, &p, AuditAction::Disclose) >= PHONES,
            "a disclosure of {p}'s notes to each phone"
        );
    }
    // Bounded: 30 sessions and their phones' catch-up in this process stay far below the
    // 256 MiB that issue 11's attacks may add to a server.
    let (_, peak) = memory();
    assert!(
        peak.saturating_sub(rss_before) < 256 << 20,
        "peak {peak} B against {rss_before} B before the morning"
    );
    server.stop().await;
}
