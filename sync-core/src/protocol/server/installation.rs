//! What the server keeps per installation of a device (per incarnation of its store): the
//! people disclosed to it and the people it holds completely, and how they are loaded and saved.

use super::*;

/// The people whose data an installation was sent, per incarnation of the device's store (a
/// withdrawal one installation confirmed is still owed to a copy). Incarnation 0 keeps the key
/// of stores from before incarnations.
pub(super) fn disclosed_key(peer: &Peer, incarnation: u32) -> String {
    match incarnation {
        0 => format!("disclosed/{}", peer.author.device),
        k => format!("disclosed/{}/{k}", peer.author.device),
    }
}

/// The people an installation holds completely, per incarnation of the device's store: a copy
/// (or a store put back) does not hold what its original was sent since they parted.
/// Incarnation 0 keeps the key of stores from before incarnations.
pub(super) fn complete_key(peer: &Peer, incarnation: u32) -> String {
    match incarnation {
        0 => format!("complete/{}", peer.author.device),
        k => format!("complete/{}/{k}", peer.author.device),
    }
}

pub(super) fn load_set<S: Store>(
    repo: &Repo<S>,
    key: &str,
) -> Result<BTreeSet<PatientId>, RepoError> {
    Ok(match repo.store().meta(key)? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => BTreeSet::new(),
    })
}

pub(super) fn save_set<S: Store>(
    repo: &mut Repo<S>,
    key: &str,
    set: &BTreeSet<PatientId>,
) -> Result<(), RepoError> {
    let bytes = serde_json::to_vec(set).unwrap_or_default();
    repo.store_mut().set_meta(key, &bytes)?;
    Ok(())
}

impl ServerSession {
    pub(super) fn save_disclosed<S: Store>(&self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        save_set(
            repo,
            &disclosed_key(&self.peer, self.incarnation),
            &self.disclosed,
        )
    }

    /// The people disclosed to this connection's incarnation. One the server has no record of
    /// (just issued, or issued by a server since put back) holds what its store held before:
    /// it starts from everything disclosed to the device's other incarnations.
    pub(super) fn load_disclosed<S: Store>(
        &self,
        repo: &mut Repo<S>,
    ) -> Result<BTreeSet<PatientId>, RepoError> {
        let key = disclosed_key(&self.peer, self.incarnation);
        if self.incarnation == 0 || repo.store().meta(&key)?.is_some() {
            return load_set(repo, &key);
        }
        let mut inherited = BTreeSet::new();
        // Bounded also where a store holds a larger number (written before the bound was).
        let last = self.issued.max(self.incarnation).min(MAX_INCARNATION);
        for k in (0..=last).filter(|k| *k != self.incarnation) {
            inherited.extend(load_set(repo, &disclosed_key(&self.peer, k))?);
        }
        save_set(repo, &key, &inherited)?;
        Ok(inherited)
    }
}
