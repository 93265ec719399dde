//! A device's hello: its clock answered, its cursor judged, its upload received, and the
//! catch-up (backfills and feed) started.

use super::*;

impl ServerSession {
    /// The device told its clock: answer with ours (before anything else), and report how far
    /// off it is.
    pub(super) fn on_clock(&mut self, device_ms: i64, now: Timestamp) -> Result<(), RepoError> {
        self.events.push_back(ServerEvent::DeviceClock {
            offset_ms: now.0.saturating_sub(device_ms),
        });
        self.send(&ServerMessage::Time {
            device_ms,
            server_ms: now.0,
        })
    }

    /// `proof`: `Some` for a version-3 hello (the feed proof it carried, if any).
    pub(super) fn on_hello<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        hello: Hello,
        signatures: &[HeadsSignature],
        proof: Option<Option<store::FeedProof>>,
    ) -> Result<(), RepoError> {
        if hello.priority.len() > MAX_LIST
            || hello.received.len() > MAX_LIST
            || signatures.len() > crate::signing::MAX_SIGNATURES
        {
            self.close(CloseReason::ProtocolViolation, "list too long");
            return Ok(());
        }
        self.state = State::Serving;
        self.reincarnating = false;
        self.issued = device_incarnations(repo, &self.peer.author.device)?.issued;
        self.epoch = repo.store().epoch()?;
        let readable: BTreeSet<PatientId> =
            policy.readable_patients(&self.peer).into_iter().collect();
        self.priority = {
            let mut seen = BTreeSet::new();
            hello
                .priority
                .into_iter()
                .filter(|p| readable.contains(p) && seen.insert(p.clone()))
                .take(MAX_PRIORITY)
                .collect()
        };
        self.disclosed = self.load_disclosed(repo)?;
        self.load_complete(repo)?;
        if hello.backfill.len() > MAX_LIST {
            self.close(CloseReason::ProtocolViolation, "list too long");
            return Ok(());
        }
        let head = repo.store().feed_head()?;
        self.hello_head = head;
        // Readable patients only: no other's history is sent again anyway, and every patient
        // noted is kept in the store for the device (made-up ids, 10,000 a hello, grew it
        // without end).
        let forgotten: BTreeSet<PatientId> = hello
            .backfill
            .iter()
            .map(|b| b.patient.clone())
            .filter(|p| readable.contains(p))
            .collect();
        self.note_forgotten(repo, &forgotten, hello.cursor, head)?;
        if let Some(proof) = proof {
            if let recovery::CursorVerdict::Recover =
                self.judge_cursor(repo, hello.cursor, &hello.received, proof, head)?
            {
                // Told before the upload's acknowledgement: an upload refused for lack of
                // dependencies the server lost must not restart the connection.
                self.start_recovery(repo, head)?;
                self.withdraw(repo, policy)?;
                let from = self.events.len();
                self.receive_upload(repo, policy, 0, hello.upload, signatures)?;
                self.count_recovery_upload(from);
                self.withdraw(repo, policy)?;
                return self.send_orphans(repo, policy);
            }
        }
        let mut started: BTreeMap<PatientId, (u64, u64)> = BTreeMap::new();
        let (start, received) = match hello.cursor {
            Some(c) if c.epoch == self.epoch && c.position <= head => {
                self.not_held_below(c.position);
                for b in hello.backfill {
                    // The device lacks part of the patient's history, whatever the server
                    // noted: another installation of the same incarnation (a copy) may have
                    // completed it.
                    self.complete.remove(&b.patient);
                    if b.progress <= b.until && b.until <= c.position {
                        started.insert(b.patient, (b.progress, b.until));
                    }
                }
                (c.position, hello.received)
            }
            other => {
                if other.is_some() {
                    // Not a position in this feed: the feed restarts from the beginning, and
                    // Automerge's sync reconciles what the device holds that the server lacks.
                    self.send(&ServerMessage::Resync { epoch: self.epoch })?;
                }
                // From position 0 the feed holds every readable patient's whole history. A
                // patient the device forgot is not complete until a backfill (an empty one,
                // from 0) says so: the device keeps asking until one does.
                self.complete = policy.readable_patients(&self.peer).into_iter().collect();
                for p in &forgotten {
                    self.complete.remove(p);
                }
                self.complete_at.clear();
                (0, Vec::new())
            }
        };
        self.save_complete(repo)?;
        // Told first: the Hello's upload (what the device made before it could know) is still
        // within its write grace, which counts uploads from the `Withdrawn` on.
        self.withdraw(repo, policy)?;
        self.receive_upload(repo, policy, 0, hello.upload, signatures)?;
        // A person first disclosed by that upload (the device wrote for them within a grace,
        // having never been sent anything of them) is withdrawn at once too.
        self.withdraw(repo, policy)?;
        self.scanned_to = start;
        self.queue_backfills(repo, policy, &started)?;
        self.scan(repo, policy, &received)?;
        self.send_orphans(repo, policy)?;
        self.pump(repo, policy)
    }
}
