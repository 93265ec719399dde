//! Messages that arrived together: a run of consecutive batches is stored as one.
//!
//! The server keeps up to [`MAX_IN_FLIGHT`] batches in flight, each at most its batch size
//! (from 32 KiB, the unit of resumption on a weak link, up to 256 KiB on a link its
//! acknowledgements show fast: `protocol/server/pace.rs`). A phone that is slower than its
//! link finds several of them waiting when it finishes one, and each one stored on its own
//! costs work that grows with its documents (Automerge walks a document on every apply, the
//! flags of a medication chart are read before and after, the store commits). Stored as one,
//! they cost that once: in a team's morning at base a phone took its colleagues' 2,190 changes
//! in about 36 batches of about 60 changes before batches were sized from the link, in about
//! 22 runs stored together, and in about 12 since.
//!
//! Merging changes nothing the device ends up with. The changes go in their order (each
//! document's in the order the batches listed them), the cursor and feed proof are the last
//! batch's (the server sends cursors in order), the backfills' progress is taken in order,
//! the signatures relayed between the batches are kept as one at a time keeps them (the last
//! one of each colleague for each document), and every batch is acknowledged once the one
//! commit holds them all. A run stops after a batch that ends a catch-up (`remaining` 0), so
//! the catch-up's end, and what it triggers, comes exactly where it would one at a time; the
//! first batch of a connection goes on its own (it ends what the device forgets, and it
//! commits durably), and so does a batch of another epoch.

use super::*;

/// Most messages the runtime hands over together ([`DeviceSession::handle_messages`]): the
/// server's window of batches, each with its relayed signatures, and room for an
/// acknowledgement of an upload.
pub const MAX_TOGETHER: usize = 2 * MAX_IN_FLIGHT + 2;

/// A batch, from either version of the message (or several merged: `batch` is the last).
pub(super) struct Part {
    pub(super) batch: u32,
    pub(super) docs: Vec<DocChanges>,
    pub(super) cursor: Cursor,
    pub(super) backfill: Vec<Backfill>,
    pub(super) remaining: u32,
    pub(super) proof: Option<FeedProof>,
}

impl Part {
    fn of(msg: ServerMessage) -> Result<Part, ServerMessage> {
        match msg {
            ServerMessage::Batch {
                batch,
                docs,
                cursor,
                backfill,
                remaining,
            } => Ok(Part {
                batch,
                docs,
                cursor,
                backfill,
                remaining,
                proof: None,
            }),
            ServerMessage::Batch3 {
                batch,
                docs,
                cursor,
                backfill,
                remaining,
                proof,
            } => Ok(Part {
                batch,
                docs,
                cursor,
                backfill,
                remaining,
                proof: Some(proof),
            }),
            other => Err(other),
        }
    }

    /// Whether batch `batch` (at `cursor`, version 3 or not) may be stored together with this
    /// one: this one not the connection's first nor ending a catch-up, the next number, the
    /// same epoch, the same version.
    fn takes(&self, batch: u32, cursor: &Cursor, v3: bool) -> bool {
        self.remaining > 0
            && self.batch != 0
            && batch == self.batch.wrapping_add(1)
            && cursor.epoch == self.cursor.epoch
            && v3 == self.proof.is_some()
    }
}

impl DeviceSession {
    /// Handles messages that arrived together, in order, as [`DeviceSession::handle_message`]
    /// handles each, except that a run of consecutive batches (and the signatures relayed
    /// between them) is stored as one batch, in one commit (see the module's documentation).
    pub fn handle_messages<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        msgs: Vec<ServerMessage>,
        now: Timestamp,
    ) {
        let mut msgs: VecDeque<ServerMessage> = msgs.into();
        while let Some(msg) = msgs.pop_front() {
            if self.state != State::Connected {
                return;
            }
            let first = match Part::of(msg) {
                Ok(part) => part,
                Err(other) => {
                    self.handle_message(repo, other, now);
                    continue;
                }
            };
            // The run: the batches that follow it, each after the signatures relayed for it.
            let mut run: Vec<Part> = Vec::new();
            let mut signatures: Vec<ServerMessage> = Vec::new();
            loop {
                let last = run.last().unwrap_or(&first);
                let relayed = usize::from(matches!(
                    msgs.front(),
                    Some(ServerMessage::Signatures { .. })
                ));
                let fits = match msgs.get(relayed) {
                    Some(ServerMessage::Batch { batch, cursor, .. }) => {
                        last.takes(*batch, cursor, false)
                    }
                    Some(ServerMessage::Batch3 { batch, cursor, .. }) => {
                        last.takes(*batch, cursor, true)
                    }
                    _ => false,
                };
                if !fits {
                    break;
                }
                signatures.extend(msgs.drain(..relayed));
                match msgs.pop_front().map(Part::of) {
                    Some(Ok(part)) => run.push(part),
                    _ => break,
                }
            }
            self.handle_run(repo, first, run, signatures, now);
        }
    }

    /// Stores `first` and the batches of `run` after it as one, the signatures relayed
    /// between them taken first.
    fn handle_run<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        first: Part,
        run: Vec<Part>,
        signatures: Vec<ServerMessage>,
        now: Timestamp,
    ) {
        if self.state != State::Connected {
            return;
        }
        self.heard_nothing = false;
        for s in signatures {
            self.handle_message(repo, s, now);
        }
        if let Err(e) = self.store_run(repo, first, run) {
            tracing::error!(error = %e, "device sync failed");
            self.close(CloseReason::Internal, e.to_string());
        }
    }

    /// One batch message ([`ServerMessage::Batch`] or [`ServerMessage::Batch3`]), a run of one.
    pub(super) fn on_batch_message<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        msg: ServerMessage,
    ) -> Result<(), RepoError> {
        match Part::of(msg) {
            Ok(part) => self.store_run(repo, part, Vec::new()),
            Err(_) => Ok(()),
        }
    }

    /// Stores `first` and the batches of `run` after it as one batch.
    fn store_run<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        first: Part,
        run: Vec<Part>,
    ) -> Result<(), RepoError> {
        let start = first.batch;
        let mut merged = first;
        for part in run {
            merged.batch = part.batch;
            merged.docs.extend(part.docs);
            merged.backfill.extend(part.backfill);
            merged.cursor = part.cursor;
            merged.remaining = part.remaining;
            merged.proof = part.proof;
        }
        self.on_batch(repo, start, merged)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn part(batch: u32, epoch: crate::store::Epoch, remaining: u32, v3: bool) -> Part {
        Part {
            batch,
            docs: Vec::new(),
            cursor: Cursor { epoch, position: 7 },
            backfill: Vec::new(),
            remaining,
            proof: v3.then_some([0; 32]),
        }
    }

    #[test]
    fn a_run_takes_only_the_next_batch_of_its_epoch_and_version_and_stops_at_a_catch_ups_end() {
        let e = [0; 16];
        let other = [9; 16];
        let cursor = |epoch| Cursor { epoch, position: 9 };
        let p = part(3, e, 5, true);
        assert!(p.takes(4, &cursor(e), true));
        assert!(!p.takes(5, &cursor(e), true), "a gap");
        assert!(!p.takes(3, &cursor(e), true), "the same number");
        assert!(!p.takes(4, &cursor(other), true), "another epoch");
        assert!(!p.takes(4, &cursor(e), false), "another version");
        assert!(
            !part(3, e, 0, true).takes(4, &cursor(e), true),
            "after the end of a catch-up"
        );
        assert!(
            !part(0, e, 5, true).takes(1, &cursor(e), true),
            "after a connection's first batch"
        );
        assert!(part(3, e, 5, false).takes(4, &cursor(e), false));
    }
}
