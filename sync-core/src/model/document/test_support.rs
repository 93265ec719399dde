//! What the document's tests of forged changes share: the journal they write, its authors, and
//! a document's stored rows with one change more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::{AutoCommit, Change};

use super::{CareDocument, ChangeMessage};
use crate::ids::{Author, DeviceId, DocumentId, Month, PatientId, Role, UserId};

/// p-1's journal of November 2026.
pub(super) fn journal() -> DocumentId {
    DocumentId::journal(
        &PatientId::new("p-1").unwrap(),
        Month::new(2026, 11).unwrap(),
    )
}

/// The carer `user` on their phone, `<user>-phone`.
pub(super) fn carer(user: &str) -> Author {
    Author::new(
        UserId::new(user).unwrap(),
        Role::Carer,
        DeviceId::new(format!("{user}-phone")).unwrap(),
    )
}

/// `doc` as `author`'s device would change it (its actor), and the message of a change of
/// theirs that lists no writes.
pub(super) fn fork_as(doc: &CareDocument, author: &Author) -> (AutoCommit, String) {
    let message = serde_json::to_string(&ChangeMessage {
        author: author.clone(),
        writes: vec![],
    })
    .unwrap();
    let fork = AutoCommit::load(&doc.save())
        .unwrap()
        .with_actor(author.actor_id());
    (fork, message)
}

/// The stored rows of `doc` (all but genesis), then `extra`.
pub(super) fn rows_with(
    doc: &CareDocument,
    extra: &Change,
) -> Vec<(automerge::ChangeHash, Vec<u8>)> {
    let mut rows: Vec<_> = doc
        .automerge()
        .get_changes(&[])
        .iter()
        .filter(|c| c.message().is_some_and(|m| m != "genesis"))
        .map(|c| (c.hash(), c.raw_bytes().to_vec()))
        .collect();
    rows.push((extra.hash(), extra.raw_bytes().to_vec()));
    rows
}
