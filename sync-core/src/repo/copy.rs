//! A repo over an in-memory store copied whole, for runs that start from one prepared state.

use super::{Repo, recent::RecentChanges};
use crate::error::StoreError;
use crate::store::MemoryStore;

impl Repo<MemoryStore> {
    /// A copy sharing nothing with this repo: its store deep-copied, its loaded documents
    /// cloned. Fuzzing and simulation start many runs from one prepared state this way
    /// instead of loading the documents again for each.
    pub fn deep_copy(&self) -> Result<Self, StoreError> {
        Ok(Self {
            store: self.store.deep_copy()?,
            loaded: self.loaded.clone(),
            clock: self.clock,
            max_loaded: self.max_loaded,
            compact_after: self.compact_after,
            // The copied documents hold every change of the copied store up to here.
            seen: self.seen,
            group_depth: 0,
            // A cache only: the copy decodes again what it sends.
            recent: RecentChanges::default(),
            loads: 0,
        })
    }
}
