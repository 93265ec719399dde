//! Uploads: the device's local changes (and, in a recovery, what the server lacks) sent in
//! bounded, numbered uploads, and the server's acknowledgements (refusals quarantined).

use super::*;

/// The epoch of the cursor a device presents to ask for a recovery (see `on_upload_ack`): no
/// server's (epochs are random or derived by hashing); were one to have it, the cursor comes
/// without a proof and is reconciled all the same.
pub(super) const LOST_FEED: crate::store::Epoch = *b"nara-lost-feed\0\0";

impl DeviceSession {
    /// The next hello asks for a recovery: a cursor of no feed (`LOST_FEED`, no proof).
    pub(super) fn ask_for_recovery<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
    ) -> Result<(), RepoError> {
        tracing::warn!(
            "the server lacks what this device was told it holds: asking for a recovery"
        );
        self.sync = SyncState {
            cursor: Some(Cursor {
                epoch: LOST_FEED,
                position: 0,
            }),
            purge: std::mem::take(&mut self.sync.purge),
            ..SyncState::default()
        };
        self.save_state(repo)
    }

    /// Takes the next upload's worth of local changes off the queue, with this device's
    /// signature over each document's heads after them (if it signs).
    pub(super) fn take_upload<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
    ) -> Result<(Vec<DocChanges>, Vec<HeadsSignature>), RepoError> {
        let mut docs: Vec<DocChanges> = Vec::new();
        let mut changes: BTreeMap<DocumentId, Vec<automerge::Change>> = BTreeMap::new();
        // Where each document's changes are in `docs` (a signing device's documents, once each).
        let mut slot: BTreeMap<DocumentId, usize> = BTreeMap::new();
        let mut list = Vec::new();
        let mut bytes = 0;
        while let Some((doc, hash)) = self.to_upload.front().cloned() {
            let target = self.config.upload_bytes.clamp(1, BATCH_BYTES);
            if !list.is_empty() && (bytes >= target || list.len() >= MAX_BATCH_CHANGES) {
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
            // A signing device sends each document once per upload (its signature covers the
            // document's changes in the upload together); changes keep their order within it.
            let at = match docs.last() {
                Some(last) if last.doc == doc => Some(docs.len() - 1),
                _ if self.signer.is_some() => slot.get(&doc).copied(),
                _ => None,
            };
            match at {
                Some(i) => docs[i].changes.push(change.raw_bytes().to_vec()),
                None => {
                    slot.insert(doc.clone(), docs.len());
                    docs.push(DocChanges {
                        doc: doc.clone(),
                        changes: vec![change.raw_bytes().to_vec()],
                        positions: Vec::new(),
                    });
                }
            }
            if self.signer.is_some() {
                changes.entry(doc.clone()).or_default().push(change);
            }
            self.sent.insert((doc.clone(), hash));
            list.push((doc, hash));
        }
        if self.signer.is_some() {
            // Refusals name changes by their index in the upload, in the order sent.
            let mut by_doc: BTreeMap<DocumentId, Vec<(DocumentId, ChangeHash)>> = BTreeMap::new();
            for item in list.drain(..) {
                by_doc.entry(item.0.clone()).or_default().push(item);
            }
            for d in &docs {
                list.extend(by_doc.remove(&d.doc).unwrap_or_default());
            }
        }
        let number = self.next_upload;
        self.next_upload += 1;
        self.uploads.insert(number, list);
        let mut signatures = self.sign_upload(number, &changes);
        // Other devices' changes handed back (a recovery): their authors' signatures, as
        // relayed to this device, vouch for them.
        if let Some(own) = self.signer.as_ref().map(|s| s.device.clone()) {
            for (doc, cs) in &changes {
                let authors: BTreeSet<DeviceId> = cs
                    .iter()
                    .filter_map(signing::author_device)
                    .filter(|a| *a != own)
                    .collect();
                if authors.is_empty() {
                    continue;
                }
                for stored in signatures::stored(repo, doc)? {
                    if authors.contains(&stored.signature.device)
                        && signatures.len() < MAX_SIGNATURES
                    {
                        signatures.push(stored.signature);
                    }
                }
            }
        }
        Ok((docs, signatures))
    }

    pub(super) fn flush_uploads<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        while self.state == State::Connected
            && !self.to_upload.is_empty()
            && self.uploads.len() < MAX_IN_FLIGHT
        {
            let upload = self.next_upload;
            let (docs, signatures) = self.take_upload(repo)?;
            self.send_upload(upload, docs, signatures);
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
            let (docs, signatures) = self.take_upload(repo)?;
            self.send_upload(upload, docs, signatures);
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
        if let Some((_, items)) = self.originals.take_if(|(n, _)| *n == upload) {
            return self.on_originals_ack(repo, items, &refused);
        }
        let Some(list) = self.uploads.remove(&upload) else {
            self.close(
                CloseReason::ProtocolViolation,
                format!("ack of unknown upload {upload}"),
            );
            return Ok(());
        };
        let refused = first_refusals(refused, list.len());
        let mut quarantine = Quarantine::new(Self::quarantined(repo)?);
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
        let in_recovery: BTreeSet<&(DocumentId, ChangeHash)> = recovery_items.iter().collect();
        // Acknowledged changes sent again until proven (`unproven.rs`), not pending.
        let pending: BTreeSet<(DocumentId, ChangeHash)> = if refused.is_empty() {
            BTreeSet::new()
        } else {
            repo.pending()?.into_iter().collect()
        };
        let mut forked = Vec::new();
        let mut forked_others = Vec::new();
        // Other devices' changes the server holds another change of their actor's in place of:
        // withdrawn from this device (`withdrawn.rs`), neither quarantined nor sent again.
        let mut withdrawn_forks = Vec::new();
        let mut root_refused = false;
        for r in &refused {
            let Some((doc, hash)) = list.get(r.index as usize) else {
                continue;
            };
            if r.code == RefusalCode::Invalid
                && r.detail.starts_with(wire::WITHDRAWN_FORK_DETAIL)
                && !pending.contains(&(doc.clone(), *hash))
            {
                left.insert(r.index as usize);
                withdrawn_forks.push((doc.clone(), *hash));
                continue;
            }
            // One sent again that the server now takes for lack of what it depends on: the
            // server lost that too (another device's, which comes back with its author). It
            // stays unproven and goes up again; nothing to quarantine, nothing to restart.
            if r.code == RefusalCode::MissingDependencies
                && !pending.contains(&(doc.clone(), *hash))
            {
                left.insert(r.index as usize);
                continue;
            }
            // Signed over its root, which this server does not take after all (it was put
            // back to a build from before root signatures): it stays pending and goes up
            // signed per document on the next connection.
            if r.code == RefusalCode::BadSignature && self.root_signed.contains(&upload) {
                left.insert(r.index as usize);
                root_refused = true;
                continue;
            }
            if in_recovery.contains(&(doc.clone(), *hash))
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
                let builds_on_refused = repo
                    .get(doc)?
                    .change_deps(hash)
                    .is_some_and(|deps| deps.iter().any(|d| quarantine.holds_change(d)));
                if !builds_on_refused {
                    retry.insert(r.index as usize);
                    continue;
                }
            }
            // Another device's change, handed back, forks what the server holds of its
            // author: taken out below (its author writes its records again).
            if r.code == RefusalCode::Invalid && r.detail.starts_with(wire::FORKED_OTHER_DETAIL) {
                forked_others.push((doc.clone(), *hash, r));
                continue;
            }
            // A change of an earlier incarnation of this store that another installation's
            // forks: taken back below, its records written again.
            if r.code == RefusalCode::Invalid
                && r.detail.starts_with(wire::FORKED_DETAIL)
                && !pending.contains(&(doc.clone(), *hash))
            {
                forked.push((doc.clone(), *hash, r));
                continue;
            }
            quarantine.once(
                &mut self.events,
                QuarantinedChange {
                    doc: doc.clone(),
                    change: *hash,
                    code: r.code,
                    detail: r.detail.clone(),
                },
            );
        }
        let items: Vec<(DocumentId, ChangeHash)> =
            forked.iter().map(|(d, h, _)| (d.clone(), *h)).collect();
        let not_taken = self.take_back_forked(repo, items)?;
        let mut forked_docs: BTreeSet<DocumentId> = BTreeSet::new();
        let others: Vec<(DocumentId, ChangeHash)> = forked_others
            .iter()
            .map(|(d, h, _)| (d.clone(), *h))
            .collect();
        let not_dropped = self.drop_forked_others(repo, others)?;
        for (doc, hash, r) in forked_others.into_iter().chain(forked) {
            forked_docs.insert(doc.clone());
            if !not_taken.contains(&(doc.clone(), hash))
                && !not_dropped.contains(&(doc.clone(), hash))
            {
                continue;
            }
            quarantine.once(
                &mut self.events,
                QuarantinedChange {
                    doc,
                    change: hash,
                    code: r.code,
                    detail: r.detail.clone(),
                },
            );
        }
        // A change taken back (with those built on it) is no longer held: an earlier
        // quarantine of it is stale, its records are written again under a new change.
        let mut stale = false;
        for doc in &forked_docs {
            let held = match repo.get(doc) {
                Ok(d) => d,
                Err(RepoError::Forgotten { .. }) => continue,
                Err(e) => return Err(e),
            };
            stale |= quarantine.keep_held(doc, |h| held.has_change(h));
        }
        if stale || refused.len() > retry.len() + left.len() {
            let bytes = serde_json::to_vec(&quarantine.list).unwrap_or_default();
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
        let refused_at: BTreeSet<usize> = refused.iter().map(|r| r.index as usize).collect();
        let stored: Vec<(DocumentId, ChangeHash)> = list
            .iter()
            .enumerate()
            .filter(|(i, _)| !refused_at.contains(i))
            .map(|(_, item)| item.clone())
            .collect();
        self.acknowledged_unproven(repo, &stored)?;
        self.withdraw_forks(repo, withdrawn_forks)?;
        if root_refused {
            self.server_refused_root_signatures(repo)?;
            return Ok(());
        }
        if !retry.is_empty() && !self.is_recovering() {
            // What they depend on the server had (it acknowledged it, or sent it): its store
            // went back. Its feed may not show it (this device may hold no cursor from before,
            // or one from after), so the next hello asks for a recovery, which hands back what
            // the server lacks: a cursor of no feed it holds.
            self.ask_for_recovery(repo)?;
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

/// The server's refusals as the device takes them: the first for each change of the upload,
/// none past its end. A server (broken or hostile) that names a change many times, or changes
/// the upload did not hold, then costs the device no more work than the upload's own size:
/// before, each repetition read the change back and scanned the quarantine again.
fn first_refusals(refused: Vec<wire::Refused>, len: usize) -> Vec<wire::Refused> {
    let mut seen = BTreeSet::new();
    refused
        .into_iter()
        .filter(|r| (r.index as usize) < len && seen.insert(r.index))
        .collect()
}

/// The device's quarantine while an acknowledgement is handled, with its changes indexed.
struct Quarantine {
    list: Vec<QuarantinedChange>,
    held: BTreeSet<(DocumentId, ChangeHash)>,
    changes: BTreeSet<ChangeHash>,
}

impl Quarantine {
    fn new(list: Vec<QuarantinedChange>) -> Self {
        let held = list.iter().map(|q| (q.doc.clone(), q.change)).collect();
        let changes = list.iter().map(|q| q.change).collect();
        Self {
            list,
            held,
            changes,
        }
    }

    fn holds_change(&self, hash: &ChangeHash) -> bool {
        self.changes.contains(hash)
    }

    /// Quarantines a refused change once: a change already held quarantined (sent again, say
    /// in a recovery, and refused anew under another code because of what came with it) keeps
    /// its first refusal, which is the one reported.
    fn once(&mut self, events: &mut std::collections::VecDeque<DeviceEvent>, q: QuarantinedChange) {
        if !self.held.insert((q.doc.clone(), q.change)) {
            return;
        }
        self.changes.insert(q.change);
        self.list.push(q.clone());
        events.push_back(DeviceEvent::ChangeRefused(q));
    }

    /// Keeps of `doc`'s quarantined changes those `holds` says the device still holds; whether
    /// any went.
    fn keep_held(&mut self, doc: &DocumentId, holds: impl Fn(&ChangeHash) -> bool) -> bool {
        let before = self.list.len();
        self.list.retain(|q| &q.doc != doc || holds(&q.change));
        if self.list.len() == before {
            return false;
        }
        self.held = self
            .list
            .iter()
            .map(|q| (q.doc.clone(), q.change))
            .collect();
        self.changes = self.list.iter().map(|q| q.change).collect();
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::EventBody;
    use crate::store::{MemoryStore, SqliteStore};
    use crate::{Author, DeviceId, PatientId, RecordId, Role, UserId};

    const NOW: Timestamp = Timestamp(1_795_000_000_000);

    /// Two notes of one device written in `repo`, and a session that has sent them in one
    /// upload: the session, the upload's number and what it holds.
    fn two_notes_in_flight<S: Store>(
        repo: &mut Repo<S>,
    ) -> (DeviceSession, u32, Vec<(DocumentId, ChangeHash)>) {
        let author = Author::new(
            UserId::new("anna").unwrap(),
            Role::Carer,
            DeviceId::new("phone-a").unwrap(),
        );
        let journal =
            DocumentId::journal(&PatientId::new("p1").unwrap(), "2026-11".parse().unwrap());
        for id in ["n1", "n2"] {
            repo.change(&journal, &author, NOW, |e| {
                e.record(
                    RecordId::new(id).unwrap(),
                    EventBody::Note {
                        body: format!("note {id}"),
                        corrects: None,
                    },
                )
            })
            .unwrap();
        }
        assert_eq!(repo.pending().unwrap().len(), 2);
        let mut device = DeviceSession::new(DeviceConfig::default());
        device.connect(repo, NOW).unwrap();
        while device.poll_transmit().is_some() {}
        let (upload, list) = device
            .uploads
            .iter()
            .next()
            .map(|(n, l)| (*n, l.clone()))
            .expect("an upload in flight");
        assert_eq!(list.len(), 2, "both changes in one upload");
        (device, upload, list)
    }

    /// An acknowledgement that refuses nothing commits without an fsync of its own (what it
    /// records, the server tells again: `Store::relax_group`), and what it marked stays
    /// marked for the next opening of the store. One that refuses a change commits fully: a
    /// quarantine is not learned again for free.
    #[test]
    fn a_clean_acknowledgement_commits_relaxed_and_a_refusal_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.db");
        let mut repo = Repo::new(SqliteStore::open(&path).unwrap());
        let (mut device, upload, _) = two_notes_in_flight(&mut repo);
        let ack = ServerMessage::UploadAck {
            upload,
            refused: vec![],
        };
        device.handle_bytes(&mut repo, &wire::encode(&ack).unwrap(), NOW);
        assert_eq!(repo.store().relaxed_commits(), 1, "the clean ack relaxed");
        assert!(repo.pending().unwrap().is_empty());
        drop((device, repo));
        let reopened = Repo::new(SqliteStore::open(&path).unwrap());
        assert!(
            reopened.pending().unwrap().is_empty(),
            "marked uploaded for the next opening too"
        );

        let dir = tempfile::tempdir().unwrap();
        let mut repo = Repo::new(SqliteStore::open(dir.path().join("phone.db")).unwrap());
        let (mut device, upload, _) = two_notes_in_flight(&mut repo);
        let ack = ServerMessage::UploadAck {
            upload,
            refused: vec![wire::Refused {
                index: 1,
                code: RefusalCode::NotPermitted,
                detail: "refused".into(),
            }],
        };
        device.handle_bytes(&mut repo, &wire::encode(&ack).unwrap(), NOW);
        assert_eq!(DeviceSession::quarantined(&repo).unwrap().len(), 1);
        assert_eq!(repo.store().relaxed_commits(), 0, "a refusal commits fully");
    }

    /// A server (broken or hostile) whose acknowledgement names the first change of an upload
    /// of two three times, under two codes, and a change past the upload's end: the first
    /// refusal of each change is the one taken (quarantined once, under its code), the rest is
    /// ignored, and the other change counts as acknowledged. Before, every repetition was
    /// handled again (reading the change back each time) and counted against what was
    /// acknowledged: none of the two, here.
    #[test]
    fn refusals_repeated_or_past_the_upload_count_once() {
        let now = NOW;
        let mut repo = Repo::new(MemoryStore::new());
        let (mut device, upload, list) = two_notes_in_flight(&mut repo);
        let refusal = |index: u32, code: RefusalCode| wire::Refused {
            index,
            code,
            detail: format!("refused as {code:?}"),
        };
        let ack = ServerMessage::UploadAck {
            upload,
            refused: vec![
                refusal(0, RefusalCode::NotPermitted),
                refusal(0, RefusalCode::NotPermitted),
                refusal(0, RefusalCode::Invalid),
                refusal(7, RefusalCode::NotPermitted),
            ],
        };
        device.handle_bytes(&mut repo, &wire::encode(&ack).unwrap(), now);
        let events: Vec<DeviceEvent> = std::iter::from_fn(|| device.poll_event()).collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, DeviceEvent::Closed { .. })),
            "{events:?}"
        );
        let refused: Vec<&QuarantinedChange> = events
            .iter()
            .filter_map(|e| match e {
                DeviceEvent::ChangeRefused(q) => Some(q),
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 1, "{events:?}");
        assert_eq!(refused[0].change, list[0].1);
        assert_eq!(refused[0].code, RefusalCode::NotPermitted);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DeviceEvent::UploadAcknowledged { changes: 1 })),
            "{events:?}"
        );
        let quarantined = DeviceSession::quarantined(&repo).unwrap();
        assert_eq!(quarantined.len(), 1);
        assert_eq!(quarantined[0].code, RefusalCode::NotPermitted);
        assert!(repo.pending().unwrap().is_empty(), "both are settled");
    }
}
