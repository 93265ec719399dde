//! The device's read log: what patient data was shown, kept durably until the server has it in
//! its audit log.

use super::*;

impl DeviceSession {
    /// The device's read log: patient data shown to its user and not yet in the server's audit
    /// log.
    pub fn read_log<S: Store>(repo: &Repo<S>) -> Result<Vec<ReadEntry>, RepoError> {
        Ok(match repo.store().meta(READ_LOG_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Vec::new(),
        })
    }

    /// Records, durably, that `what` of `patient` was shown at `at`; call it before showing.
    /// Refused once [`MAX_READ_LOG`] entries wait for upload.
    pub fn log_read<S: Store>(
        repo: &mut Repo<S>,
        patient: &PatientId,
        what: &str,
        at: Timestamp,
    ) -> Result<(), RepoError> {
        let mut log = Self::read_log(repo)?;
        if log.len() >= MAX_READ_LOG {
            return Err(RepoError::Store(crate::error::StoreError::BadRow(format!(
                "the read log holds {MAX_READ_LOG} entries: sync before showing more patient data"
            ))));
        }
        log.push(ReadEntry {
            patient: patient.clone(),
            what: what.chars().take(200).collect(),
            at_ms: at.0,
        });
        let bytes = serde_json::to_vec(&log).unwrap_or_default();
        repo.store_mut().set_meta(READ_LOG_KEY, &bytes)?;
        Ok(())
    }

    pub(super) fn send_read_log<S: Store>(&mut self, repo: &Repo<S>) -> Result<(), RepoError> {
        if self.read_log_in_flight > 0 {
            return Ok(());
        }
        let log = Self::read_log(repo)?;
        if log.is_empty() {
            return Ok(());
        }
        let entries: Vec<ReadEntry> = log.into_iter().take(MAX_LIST).collect();
        self.read_log_in_flight = entries.len();
        self.send(&DeviceMessage::ReadLog { entries });
        Ok(())
    }

    pub(super) fn on_read_log_ack<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        count: u32,
    ) -> Result<(), RepoError> {
        let count = (count as usize).min(self.read_log_in_flight);
        self.read_log_in_flight = 0;
        let mut log = Self::read_log(repo)?;
        log.drain(..count.min(log.len()));
        let bytes = serde_json::to_vec(&log).unwrap_or_default();
        repo.store_mut().set_meta(READ_LOG_KEY, &bytes)?;
        self.send_read_log(repo)
    }
}
