//! Uploads: the device's local changes (and, in a recovery, what the server lacks) sent in
//! bounded, numbered uploads, and the server's acknowledgements (refusals quarantined).

use super::*;

impl DeviceSession {
    /// Takes the next upload's worth of local changes off the queue.
    pub(super) fn take_upload<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
    ) -> Result<Vec<DocChanges>, RepoError> {
        let mut docs: Vec<DocChanges> = Vec::new();
        let mut list = Vec::new();
        let mut bytes = 0;
        while let Some((doc, hash)) = self.to_upload.front().cloned() {
            if !list.is_empty() && (bytes >= BATCH_BYTES || list.len() >= MAX_BATCH_CHANGES) {
                break;
            }
            self.to_upload.pop_front();
            let Some(change) = repo.get(&doc)?.automerge_change(&hash) else {
                // A pending mark whose change the document does not hold (only possible if the
                // store was written behind the repo's back): it cannot be uploaded now; it
                // stays marked and is tried again on the next connection.
                tracing::warn!(%doc, %hash, "pending change not in the loaded document");
                continue;
            };
            bytes += change.raw_bytes().len();
            match docs.last_mut() {
                Some(last) if last.doc == doc => last.changes.push(change.raw_bytes().to_vec()),
                _ => docs.push(DocChanges {
                    doc: doc.clone(),
                    changes: vec![change.raw_bytes().to_vec()],
                    positions: Vec::new(),
                }),
            }
            self.sent.insert((doc.clone(), hash));
            list.push((doc, hash));
        }
        let number = self.next_upload;
        self.next_upload += 1;
        self.uploads.insert(number, list);
        Ok(docs)
    }

    pub(super) fn flush_uploads<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        while self.state == State::Connected
            && !self.to_upload.is_empty()
            && self.uploads.len() < MAX_IN_FLIGHT
        {
            let upload = self.next_upload;
            let docs = self.take_upload(repo)?;
            self.send(&DeviceMessage::Upload { upload, docs });
        }
        Ok(())
    }

    /// Access to `patients` was withdrawn: what this device made for them and has not sent yet
    /// goes up now, first and whatever the upload window, before anything is acknowledged. The
    /// server's write grace lets a told device finish only a few uploads (what crossed the
    /// `Withdrawn` on the wire, and this one); waiting for the window would lose the rest.
    pub(super) fn flush_withdrawn<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        patients: &[PatientId],
    ) -> Result<(), RepoError> {
        let (first, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.to_upload)
            .into_iter()
            .partition(|(doc, _)| patients.contains(doc.patient()));
        if first.is_empty() {
            self.to_upload = rest;
            return Ok(());
        }
        self.to_upload = first;
        while self.state == State::Connected && !self.to_upload.is_empty() {
            let upload = self.next_upload;
            let docs = self.take_upload(repo)?;
            self.send(&DeviceMessage::Upload { upload, docs });
        }
        self.to_upload.extend(rest);
        Ok(())
    }

    pub(super) fn on_upload_ack<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        upload: u32,
        refused: Vec<wire::Refused>,
    ) -> Result<(), RepoError> {
        let Some(list) = self.uploads.remove(&upload) else {
            self.close(
                CloseReason::ProtocolViolation,
                format!("ack of unknown upload {upload}"),
            );
            return Ok(());
        };
        let mut quarantine = Self::quarantined(repo)?;
        let mut retry: BTreeSet<usize> = BTreeSet::new();
        // Changes handed back in a recovery that the server would not take: another device's
        // (not vouched for), or built on what it lost. They stay here, never quarantined: the
        // author's own recovery, or a later one, brings them back.
        let mut left: BTreeSet<usize> = BTreeSet::new();
        let recovery_items: Vec<(DocumentId, ChangeHash)> = match &self.recovering {
            Some(rec) => list
                .iter()
                .filter(|(d, h)| rec.is_item(d, h))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        for r in &refused {
            let Some((doc, hash)) = list.get(r.index as usize) else {
                continue;
            };
            if recovery_items.contains(&(doc.clone(), *hash))
                && matches!(
                    r.code,
                    RefusalCode::ForeignAuthor | RefusalCode::MissingDependencies
                )
            {
                left.insert(r.index as usize);
                continue;
            }
            if r.code == RefusalCode::MissingDependencies {
                // It builds on a change that was refused: it can never be accepted either.
                // Otherwise the server lacks something it should have: keep it pending and
                // start the connection over.
                let builds_on_refused = repo.get(doc)?.automerge_change(hash).is_some_and(|c| {
                    c.deps()
                        .iter()
                        .any(|d| quarantine.iter().any(|q| q.change == *d))
                });
                if !builds_on_refused {
                    retry.insert(r.index as usize);
                    continue;
                }
            }
            let q = QuarantinedChange {
                doc: doc.clone(),
                change: *hash,
                code: r.code,
                detail: r.detail.clone(),
            };
            if !quarantine.contains(&q) {
                quarantine.push(q.clone());
            }
            self.events.push_back(DeviceEvent::ChangeRefused(q));
        }
        if refused.len() > retry.len() + left.len() {
            let bytes = serde_json::to_vec(&quarantine).unwrap_or_default();
            repo.store_mut().set_meta(QUARANTINE_KEY, &bytes)?;
        }
        let mut by_doc: BTreeMap<DocumentId, Vec<ChangeHash>> = BTreeMap::new();
        for (i, (doc, hash)) in list.iter().enumerate() {
            if !retry.contains(&i) && !left.contains(&i) {
                by_doc.entry(doc.clone()).or_default().push(*hash);
            }
        }
        for (doc, hashes) in by_doc {
            repo.mark_uploaded(&doc, &hashes)?;
        }
        if !retry.is_empty() && !self.is_recovering() {
            self.close(
                CloseReason::ProtocolViolation,
                "the server lacks changes ours depend on",
            );
            return Ok(());
        }
        // In a recovery, the server may lack what they depend on until the recovery has
        // handed it back: they stay pending and go up again when it is done.
        self.events.push_back(DeviceEvent::UploadAcknowledged {
            changes: list.len() - refused.len().min(list.len()),
        });
        self.flush_uploads(repo)?;
        if recovery_items.is_empty() {
            Ok(())
        } else {
            self.recovery_uploaded(repo, &recovery_items)
        }
    }
}
