//! Compaction and loading with several nodes on one PostgreSQL database (issue 12): each node
//! compacts the documents it holds (`Repo::maintain`, every second in `serve`), so a node's
//! snapshot may replace one another node wrote a moment before, and a node may load a document
//! while another compacts it. Neither may lose a stored change, nor leave a node with a copy
//! lacking one (its sessions would skip that change when sending the feed: a device's cursor
//! passes a change it never received).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sync_core::RecordId;
use sync_core::repo::Repo;

use super::race_tests::{Interleaved, journal, phone_note};
use super::testing::TestDatabase;

/// Whether a fresh node finds `record` in p-1's journal.
fn stored(db: &TestDatabase, record: &str) -> bool {
    let mut fresh = Repo::new(db.open());
    fresh
        .get(&journal("p-1"))
        .map(|d| d.event(&RecordId::new(record).unwrap()).is_some())
        .unwrap_or(false)
}

/// Node one holds p-1's journal and starts compacting it; meanwhile node two stores a note in
/// it and compacts it too (its snapshot holds that note, whose change row it deletes). Node
/// one's snapshot, made from a copy without the note, must not replace node two's.
#[test]
fn a_snapshot_never_replaces_one_holding_a_change_it_lacks() {
    let db = TestDatabase::new();
    let mut one = Repo::new(Interleaved::new(db.open()));
    one.apply_changes(&journal("p-1"), vec![phone_note("anna", "p-1", "a0")])
        .unwrap();
    let b1 = phone_note("bo", "p-1", "b1");
    let b1_hash = b1.hash();
    let other = db.config();
    one.store_mut().before_compact(move || {
        let mut two = Repo::new(super::PgStore::open_config(other).unwrap());
        let out = two.apply_changes(&journal("p-1"), vec![b1]).unwrap();
        assert_eq!(out.applied.len(), 1);
        two.compact(&journal("p-1")).unwrap();
    });
    // Node one's compaction may give up (it is done later, from a fresh copy); it must not lose.
    let _ = one.compact(&journal("p-1"));
    assert_eq!(one.store().waiting(), 0, "node two wrote");
    assert!(stored(&db, "a0"), "node one's own note");
    assert!(
        stored(&db, "b1"),
        "node two's note, stored and compacted meanwhile, is lost"
    );
    // Node one, going on, serves the note too.
    assert!(
        one.change_by_hash(&journal("p-1"), &b1_hash)
            .unwrap()
            .is_some()
    );
}

/// Node one loads p-1's journal inside a group (as every sync step does, in the group commit)
/// while node two compacts it between the load's reads: the copy must still hold every change.
#[test]
fn a_copy_loaded_in_a_group_while_another_node_compacts_holds_every_change() {
    let db = TestDatabase::new();
    let note = phone_note("anna", "p-1", "a0");
    let a0 = note.hash();
    let mut seed = Repo::new(db.open());
    seed.apply_changes(&journal("p-1"), vec![note]).unwrap();
    drop(seed);
    let mut one = Repo::new(db.open());
    let other = db.config();
    one.store().after_first_read(Box::new(move || {
        let mut two = Repo::new(super::PgStore::open_config(other).unwrap());
        two.compact(&journal("p-1")).unwrap();
    }));
    let held = one
        .grouped(|repo| Ok(repo.change_by_hash(&journal("p-1"), &a0)?.is_some()))
        .unwrap();
    assert!(held, "the copy loaded in the group lacks a stored change");
    // Nothing new in the feed makes the node look again: the copy stays as it is.
    assert!(one.change_by_hash(&journal("p-1"), &a0).unwrap().is_some());
    assert!(stored(&db, "a0"));
}
