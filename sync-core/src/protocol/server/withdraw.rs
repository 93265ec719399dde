//! Withdrawals: what a device may no longer read is dropped from what it is sent, and the device
//! is told (and told again on its next connection until it confirms).

use super::*;

impl ServerSession {
    /// The device's user lost access to some patients: forget that the device holds them
    /// completely (their history is sent again if access comes back), drop what is queued for
    /// them, and tell the device to forget those it was sent. They stay disclosed until the
    /// device acknowledges a later batch, so that a withdrawal lost with its connection is sent
    /// again on the next one.
    pub(super) fn withdraw<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
    ) -> Result<(), RepoError> {
        let peer = self.peer.clone();
        let readable = |p: &PatientId| policy.may_read(&peer, &DocumentId::patient_header(p));
        let gone: Vec<PatientId> = self
            .disclosed
            .iter()
            .filter(|p| !readable(p) && !self.withdrawing.contains_key(*p))
            .cloned()
            .collect();
        let incomplete_before = self.complete.len();
        self.complete.retain(|p| readable(p));
        self.backfill.retain(|p, _| readable(p));
        self.queue.retain(|i| readable(i.doc().patient()));
        if self.complete.len() != incomplete_before {
            self.save_complete(repo)?;
        }
        if gone.is_empty() {
            return Ok(());
        }
        self.send(&ServerMessage::Withdrawn {
            patients: gone.clone(),
        })?;
        for p in &gone {
            self.withdrawn_at_upload
                .entry(p.clone())
                .or_insert(self.next_upload);
        }
        self.events.push_back(ServerEvent::WithdrawalSent {
            patients: gone.clone(),
        });
        for p in gone {
            self.withdrawing.insert(p, self.next_batch);
        }
        // A batch follows (empty if nothing is queued): its acknowledgement confirms receipt.
        self.caught_up = false;
        Ok(())
    }

    /// Batch `acked` was acknowledged: withdrawals sent before it have arrived.
    pub(super) fn confirm_withdrawals<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        acked: u32,
    ) -> Result<(), RepoError> {
        let arrived: Vec<PatientId> = self
            .withdrawing
            .iter()
            .filter(|(_, first)| **first <= acked)
            .map(|(p, _)| p.clone())
            .collect();
        if arrived.is_empty() {
            return Ok(());
        }
        let peer = self.peer.clone();
        let mut told = Vec::new();
        for p in arrived {
            self.withdrawing.remove(&p);
            // Readable again meanwhile: still disclosed, nothing to confirm.
            if !policy.may_read(&peer, &DocumentId::patient_header(&p)) {
                self.disclosed.remove(&p);
                told.push(p);
            }
        }
        if !told.is_empty() {
            self.save_disclosed(repo)?;
            self.events
                .push_back(ServerEvent::Withdrawn { patients: told });
        }
        Ok(())
    }
}
