//! Which messages' commits may skip their fsync ([`Store::begin_relaxed_group`]).
//!
//! A message whose handling only records what the server holds durably and tells again, if
//! asked, is relaxed: an acknowledgement that refuses nothing (its changes are marked
//! uploaded and kept as unproven), and a batch of nothing new (the cursor moves past feed
//! entries this device need not receive, such as its own uploads). A power loss that takes
//! such a commit leaves the state of a connection cut before the message arrived, which the
//! protocol handles anyway: the changes go up again and the server takes them as duplicates,
//! or the server sends the same cursor again. Everything else, and anything a relaxed
//! message's handling writes in a durable group of its own (a change written again after a
//! catch-up), stays durable: the store makes the transaction durable then.
//!
//! Not relaxed: refusals (a quarantine is not told again for free), anything of a recovery,
//! the first batch of a connection (it ends what the device forgets).

use super::*;

impl DeviceSession {
    /// Whether handling `msg` may commit without an fsync of its own: the runtime opens the
    /// message's store transaction with [`Repo::grouped_as`] and this answer.
    pub fn commits_relaxed(&self, msg: &ServerMessage) -> bool {
        self.commit_relaxed_together(std::slice::from_ref(msg))
    }

    /// Whether handling `msgs`, arrived together and handled in order
    /// ([`DeviceSession::handle_messages`]), may commit without an fsync of its own: each of
    /// them may, the batches numbered one after another from the next expected.
    pub fn commit_relaxed_together(&self, msgs: &[ServerMessage]) -> bool {
        let mut next_batch = self.next_batch;
        let mut acked = BTreeSet::new();
        msgs.iter().all(|msg| match msg {
            ServerMessage::UploadAck { upload, refused } => {
                acked.insert(*upload) && self.ack_commits_relaxed(*upload, refused)
            }
            ServerMessage::Batch {
                batch,
                docs,
                backfill,
                ..
            }
            | ServerMessage::Batch3 {
                batch,
                docs,
                backfill,
                ..
            } => {
                let expected = next_batch;
                next_batch = next_batch.wrapping_add(1);
                *batch == expected && batch_commits_relaxed(*batch, docs, backfill)
            }
            _ => false,
        })
    }

    /// An acknowledgement of upload `upload` that refuses nothing, outside a recovery.
    pub(super) fn ack_commits_relaxed(&self, upload: u32, refused: &[wire::Refused]) -> bool {
        refused.is_empty()
            && self.recovering.is_none()
            && self.originals.as_ref().is_none_or(|(n, _)| *n != upload)
            && self.uploads.contains_key(&upload)
    }
}

/// A batch other than a connection's first with no changes and no backfill.
pub(super) fn batch_commits_relaxed(
    batch: u32,
    docs: &[DocChanges],
    backfill: &[Backfill],
) -> bool {
    batch != 0 && docs.is_empty() && backfill.is_empty()
}
