//! The real server and the real device runtime on turmoil's simulated network: partitions that
//! come and go between devices and the server, held messages, a partition in the middle of a
//! backfill, server crashes during sync, and access withdrawn while a device is cut off.
//!
//! Nothing is mocked: `server::serve` runs with `AppState` over SQLite files in a temporary
//! directory, behind the server's own TLS listener (rustls), on a turmoil host; every phone is a
//! `nara_client::Device` with its own SQLite store whose TLS and WebSocket run over
//! `turmoil::net::TcpStream` (its dialer hook). Only the network and tokio's clock are simulated.
//!
//! A run is seeded: turmoil's network (latencies) and the schedule of edits and faults come from
//! one `u64` (`TURMOIL_SEED=N` to replay; a failing test prints its seed). TLS randomness, the
//! device's reconnection jitter and wall-clock timestamps are not seeded, so a replay takes the
//! same schedule, not necessarily the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nara_tests::{november, patient};
use rand::Rng;
use server::Limits;
use server::audit::{AuditAction, AuditLog};
use server::directory::Directory;
use sync_core::DocumentId;

#[path = "turmoil/world.rs"]
mod world;

use world::*;

/// Two carers and a nurse write notes while the link between each phone and the server is cut
/// and repaired at random; after healing, every phone converges and no saved note is lost.
#[test]
fn partitions_come_and_go_between_phones_and_server() {
    let seed = seed(0x7a11);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("anna", "p2");
    w.assign("bo", "p1");
    w.assign("nina", "p1");
    w.assign("nina", "p2");
    for (host, user) in [
        ("anna-phone", "anna"),
        ("bo-phone", "bo"),
        ("nina-phone", "nina"),
    ] {
        w.add_phone(host, user);
    }
    let mut cut = [false; 3];
    let mut cuts = 0;
    let mut ever_cut = [false; 3];
    for _ in 0..120 {
        for i in 0..3 {
            if w.rng.random_bool(0.08) {
                let host = w.phones[i].host.clone();
                if cut[i] {
                    w.sim.repair(host.as_str(), SERVER);
                } else {
                    w.sim.partition(host.as_str(), SERVER);
                    cuts += 1;
                    ever_cut[i] = true;
                }
                cut[i] = !cut[i];
            }
            if w.rng.random_bool(0.3) {
                let p = if w.phones[i].user == uid("bo") || w.rng.random_bool(0.6) {
                    "p1"
                } else {
                    "p2"
                };
                w.write_note(i, p);
            }
        }
        let step = Duration::from_millis(w.rng.random_range(100..600));
        w.run_for(step);
    }
    assert!(cuts > 3, "the schedule cut links only {cuts} times");
    for i in 0..3 {
        let host = w.phones[i].host.clone();
        w.sim.repair(host.as_str(), SERVER);
    }
    w.converge(Duration::from_secs(120));
    for i in (0..3).filter(|i| ever_cut[*i]) {
        assert!(
            w.connections(i) > 1,
            "{} never reconnected",
            w.phones[i].host
        );
    }
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// Messages between phones and the server are held (delayed) and then delivered all at once,
/// briefly (the connection survives) and for longer than the phone's ping timeout (it gives up
/// on the connection and reconnects while the old messages are still in flight).
#[test]
fn held_messages_are_delivered_late_and_merge() {
    let seed = seed(0x401d);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("nina", "p1");
    w.add_phone("anna-phone", "anna");
    w.add_phone("nina-phone", "nina");
    w.converge(Duration::from_secs(30));
    for round in 0..6 {
        let i = round % 2;
        let host = w.phones[i].host.clone();
        w.sim.hold(host.as_str(), SERVER);
        for _ in 0..3 {
            w.write_note(0, "p1");
            w.write_note(1, "p1");
            w.run_for(Duration::from_millis(300));
        }
        // Short holds first, then holds past the ping timeout (2 s + 2 s).
        let held = if round < 3 {
            Duration::from_millis(w.rng.random_range(500..2000))
        } else {
            Duration::from_millis(w.rng.random_range(5000..8000))
        };
        w.run_for(held);
        w.sim.release(host.as_str(), SERVER);
        w.run_random(0..1500);
    }
    w.converge(Duration::from_secs(60));
    // The long holds outlasted the ping timeout: both phones gave up a connection.
    assert!(w.connections(0) > 1 && w.connections(1) > 1);
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// A long history of p1 is backfilled to bo's phone in small batches when bo is assigned to p1;
/// the link is cut in the middle. After the repair the backfill resumes where it stopped: the
/// server sends exactly the changes the phone did not store, nothing it already acknowledged.
#[test]
fn partition_mid_backfill_resumes_without_resending() {
    let seed = seed(0xbac4);
    let _guard = SeedGuard(seed);
    let limits = Limits {
        batch_bytes: 2 * 1024,
        ..Limits::default()
    };
    let mut w = World::new(seed, limits);
    w.assign("nina", "p1");
    w.assign("bo", "p2");
    let nina = w.add_phone("nina-phone", "nina");
    let bo = w.add_phone("bo-phone", "bo");
    for _ in 0..300 {
        w.write_note(nina, "p1");
    }
    w.write_note(bo, "p2");
    w.converge(Duration::from_secs(120));
    let history = {
        let mut repo = w.server_repo();
        let doc = DocumentId::journal(&patient("p1"), november());
        // The genesis is every replica's own; it is never sent.
        repo.get(&doc).unwrap().automerge().get_changes(&[]).len() - 1
    };
    assert_eq!(history, 300);

    // bo is assigned p1 while connected: the server starts the backfill on the live session.
    w.assign("bo", "p1");
    let p1_held = |w: &World| {
        w.phones[bo].device.with_repo(|repo| {
            let doc = DocumentId::journal(&patient("p1"), november());
            if !repo.document_ids().unwrap().contains(&doc) {
                return 0;
            }
            repo.get(&doc).unwrap().automerge().get_changes(&[]).len() - 1
        })
    };
    // Cut as soon as the first batches are stored (checked after every simulation step; a
    // bounded number of steps, so a backfill that never starts fails instead of hanging).
    let mut steps = 0;
    while p1_held(&w) == 0 {
        steps += 1;
        assert!(
            steps <= 30_000,
            "no backfill after {steps} steps (seed {seed})"
        );
        w.sim.step().unwrap();
    }
    w.sim.partition("bo-phone", SERVER);
    // Let what was in flight be lost and bo's phone give up the connection.
    w.run_for(Duration::from_secs(8));
    let held_at_cut = p1_held(&w);
    assert!(
        held_at_cut < history,
        "the backfill finished before the cut"
    );
    let audit_at_cut = w.audit().len().unwrap();
    let connections_at_cut = w.connections(bo);
    w.sim.repair("bo-phone", SERVER);
    w.converge(Duration::from_secs(120));
    assert_eq!(p1_held(&w), history);
    assert!(w.connections(bo) > connections_at_cut);

    let bo_device = w.phones[bo].device.author().device;
    let resent: u64 = w
        .audit_after(audit_at_cut)
        .iter()
        .filter(|r| {
            r.entry.action == AuditAction::Disclose
                && r.entry.device.as_ref() == Some(&bo_device)
                && r.entry.patient == Some(patient("p1"))
        })
        .map(disclosed)
        .sum();
    assert_eq!(
        resent,
        (history - held_at_cut) as u64,
        "after the cut the server sent {resent} changes of p1; bo's phone lacked {} of {history}",
        history - held_at_cut
    );
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// The server host crashes (its tasks and connections are gone; its SQLite files stay) while
/// phones upload and download, and comes back: nothing saved is lost, the files are intact,
/// everything converges and the audit chain verifies.
#[test]
fn server_crash_during_sync_loses_nothing() {
    let seed = seed(0xc4a5);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("bo", "p1");
    w.assign("nina", "p1");
    w.assign("nina", "p2");
    w.assign("anna", "p2");
    for (host, user) in [
        ("anna-phone", "anna"),
        ("bo-phone", "bo"),
        ("nina-phone", "nina"),
    ] {
        w.add_phone(host, user);
    }
    w.converge(Duration::from_secs(30));
    for _ in 0..4 {
        // A burst of edits, then a crash at a random moment while they sync.
        for _ in 0..w.rng.random_range(5..20) {
            let i = w.rng.random_range(0..3);
            let p = if i == 1 || w.rng.random_bool(0.5) {
                "p1"
            } else {
                "p2"
            };
            w.write_note(i, p);
        }
        let before_crash = Duration::from_millis(w.rng.random_range(0..400));
        w.run_for(before_crash);
        w.sim.crash(SERVER);
        for _ in 0..3 {
            let i = w.rng.random_range(0..3);
            w.write_note(i, "p1");
        }
        let down = Duration::from_millis(w.rng.random_range(200..3000));
        w.run_for(down);
        w.sim.bounce(SERVER);
        w.run_random(0..2000);
    }
    w.converge(Duration::from_secs(120));
    for i in 0..3 {
        assert!(
            w.connections(i) > 1,
            "{} never reconnected",
            w.phones[i].host
        );
    }
    w.check_nothing_lost();
    w.check_audit_and_files();
}

/// anna's phone is cut off; meanwhile she writes notes for p1 (still assigned), then is taken
/// off p1, and nina keeps writing. When the link returns, anna's notes are kept (the grace for
/// records made while assigned), nothing of p1 is sent to her phone once the server knows of the
/// withdrawal (it reads the directory every second), her phone is told (again: the first
/// `Withdrawn` went into the partition) and forgets p1, and p2 stays in sync.
#[test]
fn access_withdrawn_while_partitioned() {
    let seed = seed(0xacce);
    let _guard = SeedGuard(seed);
    let mut w = World::new(seed, Limits::default());
    w.assign("anna", "p1");
    w.assign("anna", "p2");
    w.assign("nina", "p1");
    w.assign("nina", "p2");
    let anna = w.add_phone("anna-phone", "anna");
    let nina = w.add_phone("nina-phone", "nina");
    for _ in 0..3 {
        w.write_note(anna, "p1");
        w.write_note(nina, "p1");
    }
    w.converge(Duration::from_secs(30));

    w.sim.partition("anna-phone", SERVER);
    w.run_random(0..3000);
    for _ in 0..4 {
        w.write_note(anna, "p1");
        w.write_note(anna, "p2");
        w.run_random(50..500);
    }
    // As `nara-server admin unassign` does: the end's time and the store's feed head now.
    let head = sync_core::store::Store::feed_head(
        &sync_core::store::SqliteStore::open(server::admin_cli::store_path(&w.data)).unwrap(),
    )
    .unwrap();
    let ended = server::app::Ended {
        at_ms: server::app::now_ms(),
        head,
    };
    w.directory
        .unassign(&uid("anna"), &patient("p1"), ended)
        .unwrap();
    // The server reads the directory every second (admin commands come from another process).
    w.run_for(Duration::from_millis(1500));
    let withdrawn_at = w.audit().len().unwrap();
    for _ in 0..4 {
        w.write_note(nina, "p1");
        w.write_note(nina, "p2");
        w.run_random(200..1500);
    }
    w.sim.repair("anna-phone", SERVER);
    w.run_until(Duration::from_secs(60), "anna's notes uploaded", |w| {
        w.phones[anna].device.pending_count().unwrap() == 0
    });
    // The device forgets a withdrawn patient once nothing of theirs waits for upload, at the
    // start of a connection: the next one after her notes went up (a short cut forces it).
    w.sim.partition("anna-phone", SERVER);
    w.run_for(Duration::from_secs(6));
    w.sim.repair("anna-phone", SERVER);
    w.converge(Duration::from_secs(60));

    // Her notes made while assigned reached the server and nina (check_nothing_lost also
    // covers them); no disclosure of p1 to her phone after the withdrawal.
    w.check_nothing_lost();
    let anna_device = w.phones[anna].device.author().device;
    let after = w.audit_after(withdrawn_at);
    let leaked: Vec<_> = after
        .iter()
        .filter(|r| {
            r.entry.action == AuditAction::Disclose
                && r.entry.device.as_ref() == Some(&anna_device)
                && r.entry.patient == Some(patient("p1"))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "p1 disclosed after withdrawal: {leaked:?}"
    );
    assert!(
        after.iter().any(|r| r.entry.action == AuditAction::Withdraw
            && r.entry.device.as_ref() == Some(&anna_device)),
        "the withdrawal is not in the audit log"
    );
    let (held, forgotten) = w.phones[anna].device.with_repo(|repo| {
        (
            repo.document_ids().unwrap(),
            repo.is_forgotten(&patient("p1")).unwrap(),
        )
    });
    assert!(forgotten, "anna's phone did not forget p1");
    assert!(
        held.iter().all(|d| d.patient() != &patient("p1")),
        "anna's phone still holds p1: {held:?}"
    );
    assert!(quarantined_none(&w, anna));
    w.check_audit_and_files();
}
