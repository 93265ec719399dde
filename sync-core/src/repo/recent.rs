//! Foreign changes a [`super::Repo`] applied lately, by hash: what a server sends on to every
//! other device, decoded once instead of rebuilt from the document for each of them (Automerge
//! 0.12 rebuilds a change from the whole op set). A hash names one content, so a kept change is
//! the change itself, whichever store or node it came through.

use std::collections::{BTreeMap, VecDeque};

use automerge::{Change, ChangeHash};

/// Changes kept by default, the oldest dropped first.
const RECENT_CHANGES: usize = 4096;

#[derive(Debug)]
pub(super) struct RecentChanges {
    by_hash: BTreeMap<ChangeHash, Change>,
    order: VecDeque<ChangeHash>,
    /// At most this many kept (0: none).
    capacity: usize,
}

impl Default for RecentChanges {
    fn default() -> Self {
        Self::with_capacity(RECENT_CHANGES)
    }
}

impl RecentChanges {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            by_hash: BTreeMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(super) fn get(&self, hash: &ChangeHash) -> Option<&Change> {
        self.by_hash.get(hash)
    }

    /// Keeps `changes` (at most the capacity in all).
    pub(super) fn remember(&mut self, changes: &[Change]) {
        if self.capacity == 0 {
            return;
        }
        for c in changes {
            if self.by_hash.insert(c.hash(), c.clone()).is_none() {
                self.order.push_back(c.hash());
            }
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.by_hash.remove(&old);
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.by_hash.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn changes(n: usize) -> Vec<Change> {
        let mut doc = automerge::AutoCommit::new();
        (0..n)
            .map(|i| {
                use automerge::transaction::Transactable;
                doc.put(automerge::ROOT, "k", i as i64).unwrap();
                doc.commit();
                doc.get_last_local_change().unwrap().clone()
            })
            .collect()
    }

    #[test]
    fn at_most_the_capacity_is_kept_the_oldest_dropped_first_and_none_at_zero() {
        let cs = changes(5);
        let mut kept = RecentChanges::with_capacity(3);
        kept.remember(&cs);
        assert!(kept.get(&cs[0].hash()).is_none());
        assert!(kept.get(&cs[1].hash()).is_none());
        assert!(cs[2..].iter().all(|c| kept.get(&c.hash()).is_some()));
        let mut none = RecentChanges::with_capacity(0);
        none.remember(&cs);
        assert!(cs.iter().all(|c| none.get(&c.hash()).is_none()));
    }
}
