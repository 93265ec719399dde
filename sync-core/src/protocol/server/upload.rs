//! Uploads: a device's own changes, checked (size, admission, authorship, the write grace's
//! horizon) and stored before they are acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Change, ChangeHash};

use super::*;

impl ServerSession {
    pub(super) fn on_upload<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        upload: u32,
        docs: Vec<DocChanges>,
        signatures: &[HeadsSignature],
    ) -> Result<(), RepoError> {
        if signatures.len() > crate::signing::MAX_SIGNATURES {
            self.close(CloseReason::ProtocolViolation, "too many signatures");
            return Ok(());
        }
        if upload != self.next_upload {
            self.close(
                CloseReason::ProtocolViolation,
                format!("upload {upload} arrived, expected {}", self.next_upload),
            );
            return Ok(());
        }
        // Another installation of this incarnation wrote under the same numbers: a fork, as
        // at the hello (nothing of the upload is stored).
        if self.fork_in_upload(repo, &docs)? {
            return Ok(());
        }
        // Writing under an incarnation while a later one is in use: a copy.
        self.note_copy(repo)?;
        self.receive_upload(repo, policy, upload, docs, signatures)?;
        // Anything the upload disclosed that the device may not read is withdrawn at once.
        self.withdraw(repo, policy)
    }

    /// Stores what may be stored of an upload, then acknowledges it: every change not listed as
    /// refused is durable when the acknowledgement is queued.
    pub(super) fn receive_upload<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        upload: u32,
        docs: Vec<DocChanges>,
        signatures: &[HeadsSignature],
    ) -> Result<(), RepoError> {
        self.next_upload = upload + 1;
        let mut refused = Vec::new();
        let total: usize = docs.iter().map(|d| d.changes.len()).sum();
        if total > MAX_BATCH_CHANGES {
            self.close(
                CloseReason::ProtocolViolation,
                "upload holds too many changes",
            );
            return Ok(());
        }
        // An upload signed once, over its root: each document's path, rebuilt from the upload.
        let mut signatures = signatures.to_vec();
        crate::signing::expand_upload(&mut signatures, &self.peer.author.device);
        let mut signed_by_doc: BTreeMap<&DocumentId, Vec<&HeadsSignature>> = BTreeMap::new();
        for s in &signatures {
            signed_by_doc.entry(&s.doc).or_default().push(s);
        }
        // A signed document sent in several parts of one upload (a device of this build sends
        // each once): its signature covers all of them, so each part's coverage is checked with
        // the others' changes too.
        let mut parts: BTreeMap<&DocumentId, usize> = BTreeMap::new();
        for d in &docs {
            *parts.entry(&d.doc).or_default() += 1;
        }
        let mut whole: BTreeMap<DocumentId, Vec<Change>> = BTreeMap::new();
        for d in &docs {
            if parts.get(&d.doc).is_some_and(|n| *n > 1) && signed_by_doc.contains_key(&d.doc) {
                let all = whole.entry(d.doc.clone()).or_default();
                for bytes in d.changes.iter().filter(|b| b.len() <= MAX_CHANGE_BYTES) {
                    if let Ok(c) = admit::change(bytes) {
                        all.push(c);
                    }
                }
            }
        }
        drop(parts);
        for (doc, changes) in by_document(docs) {
            let first = changes.first().map_or(0, |(i, _)| *i);
            let mut refuse = |this: &mut Self,
                              i: u32,
                              change: Option<ChangeHash>,
                              code: RefusalCode,
                              detail: String| {
                this.events.push_back(ServerEvent::Refused {
                    doc: doc.clone(),
                    change,
                    code,
                    detail: detail.clone(),
                });
                refused.push(Refused {
                    index: i,
                    code,
                    detail,
                });
            };
            let told_here =
                !policy.may_read(&self.peer, &doc) && self.grace_over(doc.patient(), upload);
            if told_here || !policy.may_write(&self.peer, &doc) {
                // A change the server stored already (sent again after an acknowledgement lost
                // with its connection) is acknowledged as the duplicate it is: it changes
                // nothing, and refusing it would quarantine, then lose, a stored record on the
                // device. Anything else is refused.
                // A refused change of the device's own still used its write counter: the
                // server records it, so that another installation of the same incarnation (a
                // copy) writing another change under that counter is seen as the fork it is.
                // Another device's change handed back in a recovery, vouched for by its
                // author, is the author's to write, not this device's (see `take_relayed`).
                let mut own_refused = Vec::new();
                let mut relayed: Vec<(u32, Change)> = Vec::new();
                for (i, bytes) in changes {
                    let change = admit::change(&bytes)
                        .ok()
                        .filter(|_| bytes.len() <= MAX_CHANGE_BYTES);
                    let stored = match &change {
                        Some(c) => repo.store().feed_position(&doc, &c.hash())?.is_some(),
                        None => false,
                    };
                    if stored {
                        continue;
                    }
                    match change {
                        Some(c) if !self.authored_by_peer(&c) => relayed.push((i, c)),
                        change => {
                            refuse(
                                self,
                                i,
                                None,
                                RefusalCode::NotPermitted,
                                format!("no write access to {doc}"),
                            );
                            own_refused.extend(change);
                        }
                    }
                }
                let taken = self.take_relayed(
                    repo,
                    policy,
                    &doc,
                    relayed.iter().map(|(_, c)| c.clone()).collect(),
                    &signed_by_doc,
                )?;
                for (i, c) in relayed {
                    if !taken.contains(&c.hash()) {
                        refuse(
                            self,
                            i,
                            None,
                            RefusalCode::NotPermitted,
                            format!("no write access to {doc}"),
                        );
                    }
                }
                self.record_refused_written(repo, &own_refused)?;
                continue;
            }
            let mut accepted: Vec<(u32, Change)> = Vec::new();
            for (i, bytes) in changes {
                if bytes.len() > MAX_CHANGE_BYTES {
                    refuse(
                        self,
                        i,
                        None,
                        RefusalCode::Malformed,
                        "change too large".into(),
                    );
                    continue;
                }
                match admit::change(&bytes) {
                    Ok(c) => accepted.push((i, c)),
                    Err(e) => refuse(self, i, None, RefusalCode::Malformed, e.to_string()),
                }
            }
            // Authorship: a change the server does not hold must be this device's, by this user.
            let held: BTreeSet<ChangeHash> = {
                let d = repo.get(&doc)?;
                accepted
                    .iter()
                    .map(|(_, c)| c.hash())
                    .filter(|h| d.has_change(h))
                    .collect()
            };
            // One change may come in several copies (the same change, bytes that differ only
            // in encoding): every copy shares the fate of the first, so that no copy is
            // acknowledged as stored when the change was refused.
            let mut to_apply = Vec::new();
            let mut index_of: BTreeMap<ChangeHash, Vec<u32>> = BTreeMap::new();
            for (i, c) in accepted {
                let copies = index_of.entry(c.hash()).or_default();
                copies.push(i);
                if copies.len() == 1 {
                    to_apply.push(c);
                }
            }
            let copies = |h: &ChangeHash| index_of.get(h).cloned().unwrap_or_else(|| vec![first]);
            // Another device's change the server lacks (handed back in a recovery) is taken
            // only if its author's own signature, relayed with it, vouches for it.
            let foreign: Vec<Change> = to_apply
                .iter()
                .filter(|c| !held.contains(&c.hash()) && !self.authored_by_peer(c))
                .cloned()
                .collect();
            let (vouched, vouchers) = self.vouched(repo, policy, &doc, &foreign, &signed_by_doc)?;
            let mut authored = Vec::with_capacity(to_apply.len());
            for c in to_apply {
                // The device's own change under a write counter the server holds with another
                // change of that incarnation: a fork, never stored beside it.
                if !held.contains(&c.hash())
                    && self.authored_by_peer(&c)
                    && self.forks_own(repo, &doc, &c)?
                {
                    for i in copies(&c.hash()) {
                        refuse(
                            self,
                            i,
                            Some(c.hash()),
                            RefusalCode::Invalid,
                            format!(
                                "{} its write counter or sequence number is another change's",
                                crate::protocol::wire::FORKED_DETAIL
                            ),
                        );
                    }
                    continue;
                }
                // Another device's change, vouched for, under numbers of its author that the
                // server holds with another change (it lost this one; another installation of
                // the author wrote under them since): refused, and kept for its author's
                // device to write its records again (`orphans.rs`).
                if !held.contains(&c.hash())
                    && vouched.contains(&c.hash())
                    && self.forks_other(repo, &doc, &c)?
                {
                    let detail = self.keep_orphan(repo, &doc, &c)?;
                    for i in copies(&c.hash()) {
                        refuse(
                            self,
                            i,
                            Some(c.hash()),
                            RefusalCode::Invalid,
                            detail.clone(),
                        );
                    }
                    continue;
                }
                // Otherwise (not vouched for, so not kept for its author), another device's
                // change under a sequence number of its actor that the document holds with
                // another change: a fork no replica can hold beside it (the server, put back,
                // kept the other installation's). Once its author has written its records
                // again, the relay withdraws it.
                if !held.contains(&c.hash())
                    && !self.authored_by_peer(&c)
                    && Self::forks_actor(repo, &doc, &c)?
                    && Self::written_again(repo, &doc, &c)?
                {
                    for i in copies(&c.hash()) {
                        refuse(
                            self,
                            i,
                            Some(c.hash()),
                            RefusalCode::Invalid,
                            format!(
                                "{} its actor's sequence number is another change's",
                                crate::protocol::wire::WITHDRAWN_FORK_DETAIL
                            ),
                        );
                    }
                    continue;
                }
                if held.contains(&c.hash())
                    || self.authored_by_peer(&c)
                    || vouched.contains(&c.hash())
                {
                    authored.push(c);
                } else {
                    for i in copies(&c.hash()) {
                        refuse(
                            self,
                            i,
                            Some(c.hash()),
                            RefusalCode::ForeignAuthor,
                            "authored under another device or user".into(),
                        );
                    }
                }
            }
            let mut to_apply = authored;
            if let Some(horizon) = policy.write_horizon(&self.peer, &doc) {
                let mut within = Vec::new();
                for c in self.within_horizon(repo, &doc, horizon, to_apply, &held)? {
                    match c {
                        Ok(c) => within.push(c),
                        Err(c) => {
                            // Its write counter was used all the same (see above).
                            if self.authored_by_peer(&c) {
                                self.record_refused_written(repo, std::slice::from_ref(&c))?;
                            }
                            for i in copies(&c.hash()) {
                                refuse(
                                    self,
                                    i,
                                    Some(c.hash()),
                                    RefusalCode::NotPermitted,
                                    "access to this person has ended: the change builds on \
                                     what was stored after that"
                                        .into(),
                                );
                            }
                        }
                    }
                }
                to_apply = within;
            }
            // Signed (version 3): the signature must be the device's, verify against its
            // registered key and cover the changes; it is kept with them, in one transaction.
            let sigs = signed_by_doc
                .get(&doc)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let signed = match whole.get(&doc) {
                Some(all) => {
                    let mut extra = to_apply.clone();
                    extra.extend(all.iter().cloned());
                    self.check_signed(repo, policy, &doc, sigs, &to_apply, &extra, &held)?
                }
                None => self.check_signed(repo, policy, &doc, sigs, &to_apply, &to_apply, &held)?,
            };
            if !signed.refused.is_empty() {
                let bad: BTreeSet<ChangeHash> = signed.refused.iter().map(|(h, _)| *h).collect();
                for (hash, why) in signed.refused {
                    for i in copies(&hash) {
                        refuse(self, i, Some(hash), RefusalCode::BadSignature, why.clone());
                    }
                }
                to_apply.retain(|c| !bad.contains(&c.hash()));
            }
            let keep: Vec<crate::protocol::signatures::StoredSignature> =
                signed.keep.into_iter().chain(vouchers).collect();
            let outcome = if keep.is_empty() {
                repo.apply_changes(&doc, to_apply)?
            } else {
                repo.grouped(|repo| {
                    let outcome = repo.apply_changes(&doc, to_apply)?;
                    if !outcome.applied.is_empty() {
                        for sig in keep {
                            Self::keep_signature(repo, sig)?;
                        }
                    }
                    Ok(outcome)
                })?
            };
            for (hash, err) in outcome.refused {
                let code = match err {
                    ModelError::MissingDependencies { .. } => RefusalCode::MissingDependencies,
                    ModelError::NotPermitted { .. } => RefusalCode::NotPermitted,
                    _ => RefusalCode::Invalid,
                };
                for i in copies(&hash) {
                    refuse(self, i, Some(hash), code, err.to_string());
                }
            }
            self.record_written(repo, &outcome.applied)?;
            if !outcome.applied.is_empty() {
                // The device holds this patient's data (it wrote it): a later withdrawal must
                // tell it, even if nothing was ever sent to it.
                if self.disclosed.insert(doc.patient().clone()) {
                    self.save_disclosed(repo)?;
                }
                self.events.push_back(ServerEvent::Accepted {
                    doc: doc.clone(),
                    changes: outcome.applied.iter().map(Change::hash).collect(),
                });
            }
        }
        refused.sort_by_key(|r| r.index);
        self.send(&ServerMessage::UploadAck { upload, refused })
    }

    /// Whether upload number `upload` comes too long after `Withdrawn` for `patient` was sent on
    /// this connection (ending the grace, once, if so).
    pub(super) fn grace_over(&mut self, patient: &PatientId, upload: u32) -> bool {
        if self.told.contains(patient) {
            return true;
        }
        let Some(first) = self.withdrawn_at_upload.get(patient) else {
            return false;
        };
        if upload < first.saturating_add(GRACE_UPLOADS) {
            return false;
        }
        self.told.insert(patient.clone());
        self.events.push_back(ServerEvent::GraceEnded {
            patients: vec![patient.clone()],
        });
        true
    }

    /// Splits `changes` (in upload order) of `doc` into those that build only on what the
    /// server held at feed position `horizon`, on this device's own changes (which got in by the
    /// same rule), or on earlier changes of the list that do, and those that do not.
    #[allow(clippy::type_complexity)]
    pub(super) fn within_horizon<S: Store>(
        &self,
        repo: &mut Repo<S>,
        doc: &DocumentId,
        horizon: u64,
        changes: Vec<Change>,
        held: &BTreeSet<ChangeHash>,
    ) -> Result<Vec<Result<Change, Change>>, RepoError> {
        let genesis = genesis_hash(doc)?;
        let own = self.own_actor();
        let mut ok: BTreeSet<ChangeHash> = BTreeSet::new();
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            let mut fine = held.contains(&c.hash());
            if !fine {
                fine = true;
                for dep in c.deps() {
                    if *dep == genesis || ok.contains(dep) {
                        continue;
                    }
                    match repo.store().feed_position(doc, dep)? {
                        Some(p) if p <= horizon => {}
                        Some(_)
                            if repo
                                .get(doc)?
                                .automerge_change(dep)
                                .is_some_and(|d| *d.actor_id() == own) => {}
                        _ => {
                            fine = false;
                            break;
                        }
                    }
                }
            }
            if fine {
                ok.insert(c.hash());
                out.push(Ok(c));
            } else {
                out.push(Err(c));
            }
        }
        Ok(out)
    }
}

/// A document's changes in an upload, each with its index in the upload.
type Indexed = Vec<(u32, Vec<u8>)>;

/// The changes of an upload, each with its index in the upload (refusals name changes by it),
/// one entry per document in the order documents first appear, however many parts name it
/// (a device of this build sends each document once; an older one may split it, a hostile one
/// may split it into thousands). So every check made per document (its signatures verified,
/// their coverage walked, forks looked for) runs once per document, not once per part: with
/// one part per change, a 4,096-change upload carrying 4,096 signatures of the document made
/// about 50 million signature checks.
fn by_document(docs: Vec<DocChanges>) -> Vec<(DocumentId, Indexed)> {
    let mut out: Vec<(DocumentId, Indexed)> = Vec::new();
    let mut slot: BTreeMap<DocumentId, usize> = BTreeMap::new();
    let mut index = 0u32;
    for DocChanges { doc, changes, .. } in docs {
        let at = *slot.entry(doc.clone()).or_insert_with(|| {
            out.push((doc, Vec::new()));
            out.len() - 1
        });
        for bytes in changes {
            out[at].1.push((index, bytes));
            index = index.saturating_add(1);
        }
    }
    out
}
