//! Foreign changes a [`super::Repo`] applied lately, by hash: what a server sends on to every
//! other device, decoded once instead of rebuilt from the document for each of them (Automerge
//! 0.12 rebuilds a change from the whole op set). A hash names one content, so a kept change is
//! the change itself, whichever store or node it came through.

use std::collections::{BTreeMap, VecDeque};

use automerge::{Change, ChangeHash};

/// Changes kept, the oldest dropped first.
const RECENT_CHANGES: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct RecentChanges {
    by_hash: BTreeMap<ChangeHash, Change>,
    order: VecDeque<ChangeHash>,
}

impl RecentChanges {
    pub(super) fn get(&self, hash: &ChangeHash) -> Option<&Change> {
        self.by_hash.get(hash)
    }

    /// Keeps `changes` (at most [`RECENT_CHANGES`] in all).
    pub(super) fn remember(&mut self, changes: &[Change]) {
        for c in changes {
            if self.by_hash.insert(c.hash(), c.clone()).is_none() {
                self.order.push_back(c.hash());
            }
        }
        while self.order.len() > RECENT_CHANGES {
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
