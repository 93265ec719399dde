//! Forgetting withdrawn patients. A patient withdrawn from this device is forgotten once
//! nothing of theirs waits for upload or for proof: first upload, then forget. At a connection
//! the hello already says the patients are forgotten, but their data goes only once the
//! server's answer shows it was not put back (the connection's first batch): a server restored
//! to before it acknowledged this device's changes of such a patient answers with a recovery
//! instead, which asks about them first, so that what it lost goes up again (taken or refused
//! and quarantined) rather than going with the patient (simulation `state_goes_backwards` seeds
//! 669 and 156).

use super::*;

impl DeviceSession {
    /// The withdrawn patients that may be forgotten now: nothing of theirs in flight, pending,
    /// taken back to be written again, or acknowledged and not yet proven (`unproven.rs`: it
    /// goes up again first), and, while a cut recovery resumes, already reconciled.
    pub(super) fn purgeable<S: Store>(
        &self,
        repo: &mut Repo<S>,
    ) -> Result<BTreeSet<PatientId>, RepoError> {
        // Not in the middle of a recovery: the server was put back, and the recovery asks
        // about the withdrawn patients too, so that changes of ours there that the server lost
        // go up and are refused (quarantined, the user told) before they are forgotten. The
        // next connection forgets them; one that resumes a recovery cut before it reconciled
        // them, once it has.
        if self.recovering.is_some() || self.sync.purge.is_empty() {
            return Ok(BTreeSet::new());
        }
        let reconciled = recovery::reconciled(repo)?;
        let rewriting = Self::patients_rewriting(repo)?;
        let pending = repo.pending()?;
        let unproven = Self::unproven(repo)?;
        let mut out = BTreeSet::new();
        for patient in &self.sync.purge {
            if reconciled
                .as_ref()
                .is_some_and(|done| !done.contains(patient))
            {
                continue;
            }
            let in_flight = self
                .uploads
                .values()
                .flatten()
                .chain(pending.iter())
                .any(|(d, _)| d.patient() == patient);
            let mut held_unproven = false;
            for (d, h) in unproven.iter().filter(|(d, _)| d.patient() == patient) {
                if repo.get(d).is_ok_and(|doc| doc.has_change(h)) {
                    held_unproven = true;
                    break;
                }
            }
            // Records taken back at a reincarnation wait to be written again and uploaded
            // first: first upload, then forget.
            if in_flight || held_unproven || rewriting.contains(patient) {
                continue;
            }
            out.insert(patient.clone());
        }
        Ok(out)
    }

    /// The sync state as the hello tells it: the patients being forgotten already forgotten.
    pub(super) fn as_told(&self) -> SyncState {
        let mut told = self.sync.clone();
        if !self.forgetting.is_empty() {
            told.received.clear();
            for p in &self.forgetting {
                told.backfill.insert(p.clone(), (0, FORGOTTEN));
            }
        }
        told
    }

    /// The server answered the hello with a batch, not a recovery: the patients the hello said
    /// were forgotten are.
    pub(super) fn forget_told<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        let told = std::mem::take(&mut self.forgetting);
        if told.is_empty() {
            return Ok(());
        }
        self.purge_among(repo, Some(&told))
    }

    /// Forgets the withdrawn patients that may be forgotten now. Runs when the withdrawal
    /// arrives and at a connection's first batch, never in the middle of a catch-up: access
    /// may have been given back meanwhile, and forgetting after part of the history came back
    /// would leave holes.
    pub(super) fn try_purge<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        self.purge_among(repo, None)
    }

    fn purge_among<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        among: Option<&BTreeSet<PatientId>>,
    ) -> Result<(), RepoError> {
        let mut changed = false;
        for patient in self.purgeable(repo)? {
            if among.is_some_and(|a| !a.contains(&patient)) {
                continue;
            }
            let docs: Vec<DocumentId> = repo
                .document_ids()?
                .into_iter()
                .filter(|d| d.patient() == &patient)
                .collect();
            if !repo.forget_patient(&patient)? {
                continue;
            }
            for doc in &docs {
                signatures::forget(repo, doc)?;
            }
            self.sync.purge.remove(&patient);
            // Whatever was received of it is gone: a later backfill starts from the beginning,
            // and every hello says so (a backfill from 0 up to the cursor, whichever it is
            // then) until one arrives. The server's record that this installation holds the
            // patient completely may be another's: a copy of the store, under the same
            // incarnation, that got the history back meanwhile. Without a cursor too: the
            // catch-up from 0 brings everyone's changes but this device's own, which the
            // server sends only to a device that says it forgot them.
            self.sync.backfill.insert(patient.clone(), (0, FORGOTTEN));
            // Feed positions above the cursor may have held the patient's changes: sent again.
            self.sync.received.clear();
            changed = true;
            self.events.push_back(DeviceEvent::Purged { patient });
        }
        if changed {
            self.save_state(repo)?;
        }
        Ok(())
    }
}
