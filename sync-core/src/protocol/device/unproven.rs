//! Acknowledged, not yet proven: a change the server acknowledged is safe from a server that
//! goes back in time only once the device holds a cursor (with its proof) from after it, since
//! a restored server then sees that cursor above its head or refutes its proof, and recovers.
//! Until then (the connection was cut between the `UploadAck` and the end of the catch-up, or
//! the device never held a cursor), nothing in the feed would tell it that the server lost
//! the change. So the device keeps those changes, in the order acknowledged, and sends them
//! again at the front of each connection's uploads until a catch-up that ends after their
//! acknowledgement, on the same connection, proves them. A server that holds them ignores
//! them (by hash); one that lost them stores them again.

use super::*;

const UNPROVEN_KEY: &str = "sync.unproven";

/// At most this many are kept (the oldest are dropped, logged): a device acknowledged this
/// much without ever catching up afterwards.
const MAX_UNPROVEN: usize = 10_000;

fn load<S: Store>(repo: &Repo<S>) -> Result<Vec<(DocumentId, ChangeHash)>, RepoError> {
    Ok(match repo.store().meta(UNPROVEN_KEY)? {
        Some(bytes) if !bytes.is_empty() => postcard::from_bytes(&bytes).unwrap_or_default(),
        _ => Vec::new(),
    })
}

fn save<S: Store>(repo: &mut Repo<S>, list: &[(DocumentId, ChangeHash)]) -> Result<(), RepoError> {
    let bytes = postcard::to_stdvec(list).unwrap_or_default();
    repo.store_mut().set_meta(UNPROVEN_KEY, &bytes)?;
    Ok(())
}

impl DeviceSession {
    /// At a connection: the unproven changes the documents still hold, to go up first (a
    /// change taken back at a reincarnation, or of a person forgotten, is dropped).
    pub(super) fn unproven_to_upload<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
    ) -> Result<Vec<(DocumentId, ChangeHash)>, RepoError> {
        let list = load(repo)?;
        if list.is_empty() {
            return Ok(list);
        }
        let mut kept = Vec::with_capacity(list.len());
        for (doc, hash) in list {
            let holds = match repo.get(&doc) {
                Ok(d) => d.has_change(&hash),
                Err(RepoError::Forgotten { .. }) => false,
                Err(e) => return Err(e),
            };
            if holds {
                kept.push((doc, hash));
            }
        }
        save(repo, &kept)?;
        Ok(kept)
    }

    /// The unproven changes as kept (a reincarnation takes them back with the pending ones: a
    /// server that lost one may hold another installation's change under its numbers now).
    pub(super) fn unproven<S: Store>(
        repo: &Repo<S>,
    ) -> Result<Vec<(DocumentId, ChangeHash)>, RepoError> {
        load(repo)
    }

    /// The server acknowledged (and stored, or held) `items`.
    pub(super) fn acknowledged_unproven<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        items: &[(DocumentId, ChangeHash)],
    ) -> Result<(), RepoError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut list = load(repo)?;
        for item in items {
            if !list.contains(item) {
                list.push(item.clone());
            }
            self.acked_now.insert(item.clone());
        }
        if list.len() > MAX_UNPROVEN {
            let over = list.len() - MAX_UNPROVEN;
            tracing::warn!(
                dropped = over,
                "too many acknowledged changes without a catch-up since"
            );
            list.drain(..over);
        }
        save(repo, &list)
    }

    /// Changes of this device the server is not known to hold (`fallback.rs`): kept, not
    /// acknowledged, so they go up again until a catch-up after their acknowledgement.
    pub(super) fn keep_unproven<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        items: &[(DocumentId, ChangeHash)],
    ) -> Result<(), RepoError> {
        let mut list = load(repo)?;
        let before = list.len();
        for item in items {
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
        if list.len() == before {
            return Ok(());
        }
        if list.len() > MAX_UNPROVEN {
            let over = list.len() - MAX_UNPROVEN;
            tracing::warn!(dropped = over, "too many changes kept unproven");
            list.drain(..over);
        }
        save(repo, &list)
    }

    /// A catch-up ended on this connection: what was acknowledged on it before is proven.
    pub(super) fn prove_unproven<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        if self.acked_now.is_empty() {
            return Ok(());
        }
        let acked = std::mem::take(&mut self.acked_now);
        let mut list = load(repo)?;
        list.retain(|item| !acked.contains(item));
        save(repo, &list)
    }
}
