//! The [`Store`] conformance suite, run against every backend: the in-memory and SQLite stores
//! here, the PostgreSQL store in the server crate. Exported behind the `testing` feature so a
//! backend in another crate runs the very same cases: implement [`Fixture`] and invoke
//! [`store_conformance!`](crate::store_conformance) inside a test module.
//!
//! Beside the single-connection cases, two cases hold a backend to what several server nodes
//! on one database need: the feed becomes visible in position order while several connections
//! write at once (a reader that advances to the highest position it saw never misses a row),
//! and a rolled-back append leaves no gap in the positions. Four cases hold device leases: a
//! newer claim fences the older token, a group with a fenced token writes nothing, tokens only
//! grow (also across reopening), and a claim waits for a group that checked the lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// One empty store for one test, and handles on it.
pub trait Fixture {
    type Store: Store + Send + 'static;
    /// A handle on this fixture's store: a new connection where the backend has them. Every
    /// handle sees the same data.
    fn open(&self) -> Self::Store;
    /// Whether a rolled-back group drops its writes (the in-memory store ignores groups).
    fn transactional(&self) -> bool {
        true
    }
}

fn doc(n: u32) -> DocumentId {
    format!("p-{n}/careplan").parse().unwrap()
}
fn h(n: u8) -> ChangeHash {
    ChangeHash([n; 32])
}

pub fn append_then_load(f: &impl Fixture) {
    let mut s = f.open();
    assert_eq!(s.load(&doc(1)).unwrap(), None);
    s.append(&doc(1), &[(h(1), b"one"), (h(2), b"two")], Origin::Local)
        .unwrap();
    s.append(&doc(1), &[(h(2), b"two"), (h(3), b"three")], Origin::Remote)
        .unwrap();
    let d = s.load(&doc(1)).unwrap().unwrap();
    assert_eq!(d.snapshot, None);
    assert_eq!(
        d.changes,
        vec![
            (h(1), b"one".to_vec()),
            (h(2), b"two".to_vec()),
            (h(3), b"three".to_vec())
        ]
    );
    assert_eq!(s.documents().unwrap(), vec![doc(1)]);
}

pub fn local_changes_are_pending_until_uploaded(f: &impl Fixture) {
    let mut s = f.open();
    s.append(&doc(1), &[(h(1), b"a")], Origin::Local).unwrap();
    s.append(&doc(2), &[(h(2), b"b")], Origin::Remote).unwrap();
    s.append(&doc(2), &[(h(3), b"c")], Origin::Local).unwrap();
    assert_eq!(s.pending().unwrap(), vec![(doc(1), h(1)), (doc(2), h(3))]);
    s.mark_uploaded(&doc(1), &[h(1)]).unwrap();
    assert_eq!(s.pending().unwrap(), vec![(doc(2), h(3))]);
}

pub fn compaction_keeps_uncovered_changes(f: &impl Fixture) {
    let mut s = f.open();
    s.append(&doc(1), &[(h(1), b"a"), (h(2), b"b")], Origin::Local)
        .unwrap();
    s.compact(&doc(1), b"snap", &[h(1)]).unwrap();
    let d = s.load(&doc(1)).unwrap().unwrap();
    assert_eq!(d.snapshot.as_deref(), Some(&b"snap"[..]));
    assert_eq!(d.changes, vec![(h(2), b"b".to_vec())]);
    // Pending marks survive compaction: the change is in the snapshot, not forgotten.
    assert_eq!(s.pending().unwrap().len(), 2);
    s.compact(&doc(1), b"snap2", &[h(1), h(2)]).unwrap();
    let d = s.load(&doc(1)).unwrap().unwrap();
    assert_eq!(d.snapshot.as_deref(), Some(&b"snap2"[..]));
    assert!(d.changes.is_empty());
    // A change compacted away is still known: appended again, it is skipped.
    s.append(&doc(1), &[(h(1), b"a")], Origin::Remote).unwrap();
    assert!(s.load(&doc(1)).unwrap().unwrap().changes.is_empty());
    assert_eq!(s.feed_head().unwrap(), 2);
}

pub fn stored_changes_are_read_by_hash_until_compacted(f: &impl Fixture) {
    let mut s = f.open();
    s.append(
        &doc(1),
        &[(h(1), b"a"), (h(2), b"b"), (h(3), b"c")],
        Origin::Remote,
    )
    .unwrap();
    s.append(&doc(2), &[(h(4), b"d")], Origin::Remote).unwrap();
    // In the order asked; another document's change and an unknown one are not there.
    let got = s
        .stored_changes(&doc(1), &[h(3), h(4), h(1), h(9)])
        .unwrap();
    assert_eq!(got, vec![(h(3), b"c".to_vec()), (h(1), b"a".to_vec())]);
    // Folded into a snapshot, a change is no longer a row of its own.
    s.compact(&doc(1), b"snap", &[h(1)]).unwrap();
    let got = s.stored_changes(&doc(1), &[h(1), h(2)]).unwrap();
    assert_eq!(got, vec![(h(2), b"b".to_vec())]);
    assert!(s.stored_changes(&doc(3), &[h(1)]).unwrap().is_empty());
    assert!(s.stored_changes(&doc(1), &[]).unwrap().is_empty());
}

pub fn feed_numbers_new_changes_once(f: &impl Fixture) {
    let mut s = f.open();
    assert_eq!(s.feed_head().unwrap(), 0);
    s.append(&doc(1), &[(h(1), b"a"), (h(2), b"b")], Origin::Local)
        .unwrap();
    s.append(&doc(2), &[(h(2), b"b"), (h(3), b"c")], Origin::Remote)
        .unwrap();
    // A duplicate gets no new position.
    s.append(&doc(1), &[(h(1), b"a")], Origin::Remote).unwrap();
    let feed = s.feed_after(0, 100).unwrap();
    let got: Vec<(u64, DocumentId, ChangeHash)> =
        feed.into_iter().map(|e| (e.seq, e.doc, e.hash)).collect();
    assert_eq!(
        got,
        vec![
            (1, doc(1), h(1)),
            (2, doc(1), h(2)),
            (3, doc(2), h(2)),
            (4, doc(2), h(3))
        ]
    );
    assert_eq!(s.feed_head().unwrap(), 4);
    assert_eq!(s.feed_after(2, 1).unwrap()[0].seq, 3);
    assert!(s.feed_after(4, 10).unwrap().is_empty());
    assert_eq!(s.feed_position(&doc(2), &h(2)).unwrap(), Some(3));
    assert_eq!(s.feed_position(&doc(1), &h(3)).unwrap(), None);
    // Compaction does not renumber the feed.
    s.compact(&doc(1), b"snap", &[h(1), h(2)]).unwrap();
    assert_eq!(s.feed_head().unwrap(), 4);
    assert_eq!(s.feed_position(&doc(1), &h(2)).unwrap(), Some(2));
}

pub fn feed_proofs_chain_and_survive_an_epoch_move(f: &impl Fixture) {
    let mut s = f.open();
    assert_eq!(s.feed_proof(0).unwrap(), EMPTY_FEED_PROOF);
    assert_eq!(s.feed_proof(5).unwrap(), EMPTY_FEED_PROOF);
    s.append(&doc(1), &[(h(1), b"a"), (h(2), b"b")], Origin::Local)
        .unwrap();
    s.append(&doc(1), &[(h(2), b"b")], Origin::Remote).unwrap();
    s.append(&doc(2), &[(h(3), b"c")], Origin::Remote).unwrap();
    let p1 = next_feed_proof(&EMPTY_FEED_PROOF, &doc(1), &h(1));
    let p2 = next_feed_proof(&p1, &doc(1), &h(2));
    let p3 = next_feed_proof(&p2, &doc(2), &h(3));
    assert_eq!(s.feed_proof(1).unwrap(), p1);
    assert_eq!(s.feed_proof(2).unwrap(), p2);
    assert_eq!(s.feed_proof(3).unwrap(), p3);
    // Above the head: the head's.
    assert_eq!(s.feed_proof(9).unwrap(), p3);
    let epoch = [42; 16];
    s.set_epoch(epoch).unwrap();
    assert_eq!(s.epoch().unwrap(), epoch);
    assert_eq!(s.feed_proof(3).unwrap(), p3);
    // Every handle on the store sees the new epoch.
    assert_eq!(f.open().epoch().unwrap(), epoch);
}

pub fn meta_values_persist_and_epoch_is_stable(f: &impl Fixture) {
    let mut s = f.open();
    assert_eq!(s.meta("k").unwrap(), None);
    s.set_meta("k", b"v1").unwrap();
    s.set_meta("k", b"v2").unwrap();
    assert_eq!(s.meta("k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(s.epoch().unwrap(), s.epoch().unwrap());
    let other = f.open();
    assert_eq!(other.meta("k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(other.epoch().unwrap(), s.epoch().unwrap());
}

pub fn a_removed_document_is_gone_and_can_come_back(f: &impl Fixture) {
    let mut s = f.open();
    s.append(&doc(1), &[(h(1), b"a")], Origin::Local).unwrap();
    s.append(&doc(2), &[(h(2), b"b")], Origin::Local).unwrap();
    s.compact(&doc(1), b"snap", &[h(1)]).unwrap();
    s.remove_document(&doc(1)).unwrap();
    assert_eq!(s.load(&doc(1)).unwrap(), None);
    assert_eq!(s.documents().unwrap(), vec![doc(2)]);
    assert_eq!(s.pending().unwrap(), vec![(doc(2), h(2))]);
    // Sent again later (access given back), it is stored again.
    s.append(&doc(1), &[(h(1), b"a")], Origin::Remote).unwrap();
    assert_eq!(
        s.load(&doc(1)).unwrap().unwrap().changes,
        vec![(h(1), b"a".to_vec())]
    );
}

/// Writes in a group commit together; a rolled-back group leaves nothing, not even a hole in
/// the feed's positions that a reader could take for a change it missed.
pub fn a_rolled_back_append_leaves_no_gap(f: &impl Fixture) {
    let mut s = f.open();
    s.append(&doc(1), &[(h(1), b"a")], Origin::Remote).unwrap();
    let cursor = s.feed_head().unwrap();
    s.begin_group().unwrap();
    s.append(&doc(1), &[(h(2), b"b"), (h(3), b"c")], Origin::Local)
        .unwrap();
    s.set_meta("cursor", b"x").unwrap();
    s.rollback_group();
    s.append(&doc(2), &[(h(4), b"d")], Origin::Remote).unwrap();
    let after = s.feed_after(cursor, 100).unwrap();
    if f.transactional() {
        assert_eq!(s.meta("cursor").unwrap(), None);
        assert_eq!(s.load(&doc(1)).unwrap().unwrap().changes.len(), 1);
        assert!(s.pending().unwrap().is_empty());
        assert_eq!(s.feed_position(&doc(1), &h(2)).unwrap(), None);
        let got: Vec<(u64, ChangeHash)> = after.iter().map(|e| (e.seq, e.hash)).collect();
        assert_eq!(
            got,
            vec![(cursor + 1, h(4))],
            "the next position after the rollback"
        );
        // A group that commits keeps everything in it.
        s.begin_group().unwrap();
        s.append(&doc(1), &[(h(2), b"b")], Origin::Local).unwrap();
        s.set_meta("cursor", b"y").unwrap();
        s.commit_group().unwrap();
        let other = f.open();
        assert_eq!(other.meta("cursor").unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(
            other.feed_position(&doc(1), &h(2)).unwrap(),
            Some(cursor + 2)
        );
    }
    assert_dense(&s);
}

/// A group opened inside another one and rolled back undoes its own writes only: the outer
/// group goes on and commits the rest (a server's group of sync steps, where one step's raced
/// append or failed write must not take the other steps down with it).
pub fn an_inner_group_rolls_back_alone(f: &impl Fixture) {
    if !f.transactional() {
        return;
    }
    let mut s = f.open();
    s.begin_group().unwrap();
    s.append(&doc(1), &[(h(1), b"a")], Origin::Remote).unwrap();
    s.begin_group().unwrap();
    s.append(&doc(1), &[(h(2), b"b")], Origin::Remote).unwrap();
    s.set_meta("inner", b"x").unwrap();
    s.rollback_group();
    // A second inner group after it, committed: kept with the outer one.
    s.begin_group().unwrap();
    s.append(&doc(2), &[(h(3), b"c")], Origin::Remote).unwrap();
    s.commit_group().unwrap();
    s.set_meta("outer", b"y").unwrap();
    s.commit_group().unwrap();
    let other = f.open();
    let hashes: Vec<ChangeHash> = other
        .load(&doc(1))
        .unwrap()
        .unwrap()
        .changes
        .iter()
        .map(|(h, _)| *h)
        .collect();
    assert_eq!(hashes, vec![h(1)]);
    assert!(other.load(&doc(2)).unwrap().is_some());
    assert_eq!(other.meta("inner").unwrap(), None);
    assert_eq!(other.meta("outer").unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(other.feed_position(&doc(2), &h(3)).unwrap(), Some(2));
    assert_dense(&other);
}

/// The feed's positions are exactly 1..=head, and its proofs chain over them.
fn assert_dense(s: &impl Store) {
    let feed = s.feed_after(0, usize::MAX).unwrap();
    let seqs: Vec<u64> = feed.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=feed.len() as u64).collect();
    assert_eq!(seqs, expected, "feed positions have a gap");
    assert_eq!(s.feed_head().unwrap(), feed.len() as u64);
    let mut proof = EMPTY_FEED_PROOF;
    for e in &feed {
        proof = next_feed_proof(&proof, &e.doc, &e.hash);
        assert_eq!(s.feed_proof(e.seq).unwrap(), proof, "proof at {}", e.seq);
    }
}

/// Writers on several connections at once, one document each; a reader on its own connection
/// that reads `feed_after(cursor)` and moves its cursor to the highest position it saw, as the
/// server's scan does. It must see every change that committed: on PostgreSQL a sequence or
/// identity column fails this (positions are taken at insert and become visible at commit, out
/// of order). Some writers' groups roll back; they must leave no gap.
pub fn feed_order_under_concurrent_writers(f: &impl Fixture) {
    const WRITERS: u32 = 4;
    const APPENDS: u32 = 30;
    const PER_APPEND: u32 = 3;
    let done = Arc::new(AtomicBool::new(false));
    let transactional = f.transactional();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut s = f.open();
        writers.push(std::thread::spawn(move || {
            let mut committed = BTreeSet::new();
            for a in 0..APPENDS {
                let changes: Vec<(ChangeHash, Vec<u8>)> = (0..PER_APPEND)
                    .map(|c| (unique_hash(w, a, c), format!("{w}/{a}/{c}").into_bytes()))
                    .collect();
                let refs: Vec<(ChangeHash, &[u8])> =
                    changes.iter().map(|(h, b)| (*h, b.as_slice())).collect();
                let roll_back = transactional && a % 7 == 3;
                s.begin_group().unwrap();
                s.append(&doc(w), &refs, Origin::Remote).unwrap();
                if roll_back {
                    s.rollback_group();
                } else {
                    s.commit_group().unwrap();
                    committed.extend(changes.iter().map(|(h, _)| (doc(w), *h)));
                }
            }
            committed
        }));
    }
    let reader = {
        let s = f.open();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut cursor = 0u64;
            let mut seen = Vec::new();
            loop {
                // Read the flag first: a read after it saw `done` sees every commit.
                let last = done.load(Ordering::SeqCst);
                loop {
                    let batch = s.feed_after(cursor, 16).unwrap();
                    let Some(top) = batch.iter().map(|e| e.seq).max() else {
                        break;
                    };
                    seen.extend(batch.into_iter().map(|e| (e.seq, e.doc, e.hash)));
                    cursor = top;
                }
                if last {
                    return seen;
                }
                std::thread::yield_now();
            }
        })
    };
    let mut committed = BTreeSet::new();
    for w in writers {
        committed.extend(w.join().expect("a writer panicked"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().expect("the reader panicked");
    let seqs: Vec<u64> = seen.iter().map(|(s, _, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "the reader saw positions out of order"
    );
    let seen: BTreeSet<(DocumentId, ChangeHash)> =
        seen.into_iter().map(|(_, d, h)| (d, h)).collect();
    let missed = committed.difference(&seen).count();
    assert_eq!(
        missed,
        0,
        "a reader advancing to the highest position it saw missed {missed} of {} committed changes",
        committed.len()
    );
    assert_eq!(
        seen, committed,
        "the reader saw changes that never committed"
    );
    assert_dense(&f.open());
}

fn device(n: u32) -> DeviceId {
    DeviceId::new(format!("d-{n}")).unwrap()
}

fn fenced(result: Result<(), StoreError>) -> bool {
    matches!(result, Err(StoreError::Fenced { .. }))
}

/// A second claim of a device (another node, on another connection) fences the first token;
/// devices' leases are independent; a device never claimed has no valid token.
pub fn a_second_claim_fences_the_first(f: &impl Fixture) {
    let mut one = f.open();
    let mut two = f.open();
    let first = one
        .claim_device(&device(1), "node-1/conn-1", 1_000)
        .unwrap();
    one.check_lease(&device(1), first.token).unwrap();
    two.check_lease(&device(1), first.token).unwrap();
    let second = two
        .claim_device(&device(1), "node-2/conn-7", 2_000)
        .unwrap();
    assert!(second.token > first.token, "{second:?} after {first:?}");
    assert!(fenced(one.check_lease(&device(1), first.token)));
    assert!(fenced(two.check_lease(&device(1), first.token)));
    one.check_lease(&device(1), second.token).unwrap();
    // Another device's claim changes nothing of this one's.
    let other = one
        .claim_device(&device(2), "node-1/conn-2", 3_000)
        .unwrap();
    two.check_lease(&device(1), second.token).unwrap();
    one.check_lease(&device(2), other.token).unwrap();
    assert!(fenced(one.check_lease(&device(3), 1)));
    assert!(fenced(one.check_lease(&device(1), second.token + 1)));
}

/// A group that checks a fenced token fails there, and the caller's writes (made only after
/// the check, as the server's sync steps make them) never happen: nothing of the group is
/// stored. A group that checked a valid token commits whole.
pub fn a_write_group_with_a_fenced_token_writes_nothing(f: &impl Fixture) {
    let mut old = f.open();
    let mut new = f.open();
    let stale = old.claim_device(&device(1), "node-1", 1).unwrap();
    let current = new.claim_device(&device(1), "node-2", 2).unwrap();
    fn group(s: &mut impl Store, token: u64, n: u8) -> Result<(), StoreError> {
        s.begin_group()?;
        let written = s.check_lease(&device(1), token).and_then(|()| {
            s.append(&doc(1), &[(h(n), b"x")], Origin::Remote)?;
            s.set_meta("device/d-1/disclosed", &[n])
        });
        match written {
            Ok(()) => s.commit_group(),
            Err(e) => {
                s.rollback_group();
                Err(e)
            }
        }
    }
    assert!(fenced(group(&mut old, stale.token, 1)));
    let reader = f.open();
    assert_eq!(reader.meta("device/d-1/disclosed").unwrap(), None);
    assert_eq!(reader.feed_position(&doc(1), &h(1)).unwrap(), None);
    assert_eq!(reader.feed_head().unwrap(), 0);
    group(&mut new, current.token, 2).unwrap();
    assert_eq!(
        reader.meta("device/d-1/disclosed").unwrap().as_deref(),
        Some(&[2u8][..])
    );
    assert_eq!(reader.feed_position(&doc(1), &h(2)).unwrap(), Some(1));
}

/// Tokens only grow, also when the store is opened again (a node restarting).
pub fn lease_tokens_only_grow_across_reopen(f: &impl Fixture) {
    let mut last = 0;
    for round in 0..3 {
        let mut s = f.open();
        for claim in 0..3 {
            let lease = s
                .claim_device(&device(1), &format!("node-{round}"), claim)
                .unwrap();
            assert!(lease.token > last, "{} after {last}", lease.token);
            last = lease.token;
        }
        drop(s);
    }
    f.open().check_lease(&device(1), last).unwrap();
}

/// A claim made while another connection's group has checked the device's lease waits for
/// that group to end, so the group's writes all happen under a lease that was valid until its
/// commit. (Stores without transactions have one writer and nothing to wait for.)
pub fn a_claim_waits_for_a_group_that_checked_the_lease(f: &impl Fixture) {
    if !f.transactional() {
        return;
    }
    let mut serving = f.open();
    let lease = serving.claim_device(&device(1), "node-1", 1).unwrap();
    serving.begin_group().unwrap();
    serving.check_lease(&device(1), lease.token).unwrap();
    serving.set_meta("device/d-1/disclosed", b"a").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut other = f.open();
    let claimer = std::thread::spawn(move || {
        let lease = other.claim_device(&device(1), "node-2", 2);
        tx.send(lease.map(|l| l.token).map_err(|e| e.to_string()))
            .unwrap();
    });
    // Not a timing assertion: the claim must not have returned at all while the group is open.
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "a claim went through while a group that checked the lease was open"
    );
    serving.commit_group().unwrap();
    let newer = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the claim never finished")
        .unwrap();
    claimer.join().unwrap();
    assert!(newer > lease.token);
    assert_eq!(
        f.open().meta("device/d-1/disclosed").unwrap().as_deref(),
        Some(&b"a"[..])
    );
    assert!(fenced(serving.check_lease(&device(1), lease.token)));
}

fn unique_hash(w: u32, a: u32, c: u32) -> ChangeHash {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&w.to_le_bytes());
    bytes[4..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..12].copy_from_slice(&c.to_le_bytes());
    bytes[31] = 0xfe;
    ChangeHash(bytes)
}

/// Defines one `#[test]` per conformance case in the module where it is invoked, each with a
/// fresh fixture from `$fixture` (an expression giving a [`Fixture`]).
#[macro_export]
macro_rules! store_conformance {
    ($fixture:expr) => {
        $crate::store_conformance!(@cases $fixture;
            append_then_load,
            local_changes_are_pending_until_uploaded,
            compaction_keeps_uncovered_changes,
            stored_changes_are_read_by_hash_until_compacted,
            feed_numbers_new_changes_once,
            feed_proofs_chain_and_survive_an_epoch_move,
            meta_values_persist_and_epoch_is_stable,
            a_removed_document_is_gone_and_can_come_back,
            a_rolled_back_append_leaves_no_gap,
            an_inner_group_rolls_back_alone,
            feed_order_under_concurrent_writers,
            a_second_claim_fences_the_first,
            a_write_group_with_a_fenced_token_writes_nothing,
            lease_tokens_only_grow_across_reopen,
            a_claim_waits_for_a_group_that_checked_the_lease,
        );
    };
    (@cases $fixture:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                let fixture = $fixture;
                $crate::store::conformance::$case(&fixture);
            }
        )*
    };
}
