//! The feed counter as one transaction sees it (see `store.rs`'s module comment for why one
//! counter row orders the feed).
//!
//! A transaction's first append locks the row (`SELECT .. FOR UPDATE`) and reads it; every
//! later append of the same transaction numbers its rows from the copy kept here, and the row
//! is written once, just before the transaction commits, by the transaction itself (no
//! savepoint open). Why not one update per append: a group of sync steps appends in savepoints
//! (one per step, one per append), and every update of a row locked by another
//! (sub)transaction of the same transaction makes PostgreSQL record both in a new multixact.
//! One update per step made the hot row a chain of versions and multixacts that every node's
//! waiter and every reader of the head resolved again (`GetMultiXactIdMembers` was 30% of the
//! database's CPU in a three-node morning). The lock is still taken at the first append and
//! held to commit, so nothing changes for readers or for another node's writer: the row moves
//! only at commit, and positions stay visible in order.
//!
//! A savepoint rolled back takes its rows back, and with them its positions (and the lock, if
//! the savepoint took it): [`TxFeed::savepoint`], [`TxFeed::release`] and
//! [`TxFeed::rollback_to`] follow every savepoint on the connection, so that the copy always
//! numbers from the last row the transaction still holds (no gap, no position twice).

use sync_core::store::FeedProof;

/// The counter row's values: the newest position and the feed's running hash there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counter {
    pub seq: i64,
    pub proof: FeedProof,
}

/// The open transaction's view of the counter.
#[derive(Debug, Default)]
pub(crate) struct TxFeed {
    /// As read under the lock: what the row holds. `None` until the transaction's first
    /// append.
    taken: Option<Counter>,
    /// Moved past the rows the transaction numbered.
    now: Option<Counter>,
    /// At each open savepoint, innermost last: what to go back to if it is rolled back.
    marks: Vec<(Option<Counter>, Option<Counter>)>,
}

impl TxFeed {
    /// The counter to number the next rows from, if the transaction holds the row's lock.
    pub fn current(&self) -> Option<Counter> {
        self.now
    }

    /// The row was just locked and read: `read` is what it holds.
    pub fn took(&mut self, read: Counter) {
        self.taken = Some(read);
        self.now = Some(read);
    }

    /// The transaction numbered rows up to `now`.
    pub fn moved(&mut self, now: Counter) {
        self.now = Some(now);
    }

    /// What the row must be set to before the transaction commits: `None` if it numbered no
    /// row.
    pub fn to_write(&self) -> Option<Counter> {
        match (self.taken, self.now) {
            (Some(taken), Some(now)) if taken != now => Some(now),
            _ => None,
        }
    }

    /// A savepoint was set.
    pub fn savepoint(&mut self) {
        self.marks.push((self.taken, self.now));
    }

    /// The innermost savepoint was released: what it numbered stays.
    pub fn release(&mut self) {
        self.marks.pop();
    }

    /// The transaction went back to its innermost savepoint (and released it): so does the
    /// counter.
    pub fn rollback_to(&mut self) {
        if let Some((taken, now)) = self.marks.pop() {
            self.taken = taken;
            self.now = now;
        }
    }

    /// The transaction ended (committed, rolled back, or lost with its connection).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(seq: i64) -> Counter {
        Counter {
            seq,
            proof: [seq as u8; 32],
        }
    }

    #[test]
    fn a_rolled_back_savepoint_takes_its_positions_and_its_lock_back() {
        let mut t = TxFeed::default();
        t.savepoint();
        t.took(c(5));
        t.moved(c(7));
        t.savepoint();
        t.moved(c(9));
        t.rollback_to();
        assert_eq!(t.current(), Some(c(7)));
        t.release();
        assert_eq!(t.to_write(), Some(c(7)));

        // The savepoint that took the lock is rolled back: the lock went with it.
        let mut t = TxFeed::default();
        t.savepoint();
        t.took(c(5));
        t.moved(c(6));
        t.rollback_to();
        assert_eq!(t.current(), None);
        assert_eq!(t.to_write(), None);
    }

    #[test]
    fn a_transaction_that_numbered_nothing_writes_nothing() {
        let mut t = TxFeed::default();
        t.took(c(3));
        assert_eq!(t.to_write(), None);
        t.moved(c(4));
        assert_eq!(t.to_write(), Some(c(4)));
        t.reset();
        assert_eq!(t.current(), None);
    }
}
