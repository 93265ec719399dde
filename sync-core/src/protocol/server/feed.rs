//! The feed to the device: readable feed entries after its cursor and the earlier histories of
//! patients it does not hold completely (backfills), queued in priority order and sent in
//! bounded batches (with the feed proof at the batch's cursor for a version-3 device), never
//! the connection's incarnation's own changes.

use super::installation::{complete_key, load_set, save_set};
use super::*;

/// Where each patient an installation holds completely was completed: the cursor of the batch
/// whose acknowledgement finished their backfill, or of the recovery that reconciled them
/// (durable beside the complete set, per incarnation). A patient without an entry (completed
/// from position 0, or stored by an earlier build) counts as completed at 0.
fn complete_at_key(peer: &Peer, incarnation: u32) -> String {
    match incarnation {
        0 => format!("complete-at/{}", peer.author.device),
        k => format!("complete-at/{}/{k}", peer.author.device),
    }
}

/// Patients an installation forgot (it said so in a hello's backfill) -> the feed head then:
/// the device's own changes of theirs at or below it are sent to it like anyone's, since it no
/// longer holds them (durable, per incarnation, until its cursor passes that position with the
/// patient's history back).
fn refetch_key(peer: &Peer, incarnation: u32) -> String {
    match incarnation {
        0 => format!("refetch/{}", peer.author.device),
        k => format!("refetch/{}/{k}", peer.author.device),
    }
}

impl ServerSession {
    /// A hello: the patients the device says it forgot (its backfills), at feed head `head`.
    /// Their own changes up to `head` are sent to it again; a patient it no longer asks for,
    /// with the cursor at or past that position, holds them again.
    pub(super) fn note_forgotten<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        forgotten: &BTreeSet<PatientId>,
        cursor: Option<Cursor>,
        head: u64,
    ) -> Result<(), RepoError> {
        let key = refetch_key(&self.peer, self.incarnation);
        self.refetch = match repo.store().meta(&key)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        let before = self.refetch.clone();
        if let Some(c) = cursor.filter(|c| c.epoch == self.epoch && c.position <= head) {
            self.refetch
                .retain(|p, upto| forgotten.contains(p) || *upto > c.position);
        }
        for p in forgotten {
            self.refetch.insert(p.clone(), head);
        }
        if self.refetch != before {
            let bytes = serde_json::to_vec(&self.refetch).unwrap_or_default();
            repo.store_mut().set_meta(&key, &bytes)?;
        }
        Ok(())
    }

    /// Whether the device forgot the patient of the change at feed position `seq`.
    fn refetching(&self, patient: &PatientId, seq: u64) -> bool {
        self.refetch.get(patient).is_some_and(|&upto| seq <= upto)
    }

    /// The installation's complete set and where each was completed.
    pub(super) fn load_complete<S: Store>(&mut self, repo: &Repo<S>) -> Result<(), RepoError> {
        self.complete = load_set(repo, &complete_key(&self.peer, self.incarnation))?;
        let key = complete_at_key(&self.peer, self.incarnation);
        self.complete_at = match repo.store().meta(&key)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        Ok(())
    }

    pub(super) fn save_complete<S: Store>(&mut self, repo: &mut Repo<S>) -> Result<(), RepoError> {
        let complete = &self.complete;
        self.complete_at.retain(|p, _| complete.contains(p));
        save_set(
            repo,
            &complete_key(&self.peer, self.incarnation),
            &self.complete,
        )?;
        let bytes = serde_json::to_vec(&self.complete_at).unwrap_or_default();
        repo.store_mut()
            .set_meta(&complete_at_key(&self.peer, self.incarnation), &bytes)?;
        Ok(())
    }

    /// Incarnation `incarnation` of the connected device was found behind or forked and the
    /// next one issued: two installations (a copy, or a store put back) used it, and the
    /// patients the server took as complete on it may have been completed by the one now
    /// moving on, even at the very cursor the other still presents (a backfill that brought
    /// no feed entry leaves the cursor where it was: copy seed 2148). The one that stays on it
    /// is taken to hold no patient completely: every readable patient is backfilled up to its
    /// cursor at its next hello (what it holds already is ignored by hash).
    pub(super) fn forget_complete<S: Store>(
        &self,
        repo: &mut Repo<S>,
        incarnation: u32,
    ) -> Result<(), RepoError> {
        save_set(
            repo,
            &complete_key(&self.peer, incarnation),
            &BTreeSet::new(),
        )?;
        repo.store_mut()
            .set_meta(&complete_at_key(&self.peer, incarnation), b"{}")?;
        Ok(())
    }

    /// A hello's cursor below where a patient was completed: this installation did not receive
    /// that history (a cursor only moves forward). Another installation of its incarnation (a
    /// copy) did, or the store was put back to before it and wrote nothing since: the patient
    /// is not complete on it, and is backfilled.
    pub(super) fn not_held_below(&mut self, cursor: u64) {
        let at = &self.complete_at;
        self.complete
            .retain(|p| at.get(p).is_none_or(|&completed| completed <= cursor));
    }

    /// Queues the earlier history (feed entries up to `scanned_to`) of every readable patient
    /// the device does not hold completely, resuming where the device says it got to.
    pub(super) fn queue_backfills<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        started: &BTreeMap<PatientId, (u64, u64)>,
    ) -> Result<(), RepoError> {
        let ranges: BTreeMap<PatientId, (u64, u64)> = policy
            .readable_patients(&self.peer)
            .into_iter()
            .filter(|p| !self.complete.contains(p) && !self.backfill.contains_key(p))
            .map(|p| {
                let range = started.get(&p).copied().unwrap_or((0, self.scanned_to));
                (p, range)
            })
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }
        let from = ranges.values().map(|r| r.0).min().unwrap_or(0);
        let until = ranges.values().map(|r| r.1).max().unwrap_or(0);
        let mut items = Vec::new();
        let mut after = from;
        while after < until {
            let page = repo.store().feed_after(after, 4096)?;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            for e in page {
                let wanted = ranges
                    .get(e.doc.patient())
                    .is_some_and(|&(a, b)| a < e.seq && e.seq <= b);
                if wanted && policy.may_read(&self.peer, &e.doc) {
                    items.push(Item::Backfill(e));
                }
            }
            after = last;
        }
        for (p, (progress, until)) in ranges {
            let left = items.iter().filter(|i| i.doc().patient() == &p).count();
            self.backfill.insert(
                p,
                BackfillState {
                    progress,
                    until,
                    left,
                    unreported: true,
                },
            );
        }
        self.enqueue(items);
        self.caught_up = false;
        Ok(())
    }

    pub(super) fn enqueue(&mut self, items: Vec<Item>) {
        let mut all: Vec<Item> = self.queue.drain(..).chain(items).collect();
        let rank = |p: &PatientId| {
            self.priority
                .iter()
                .position(|q| q == p)
                .unwrap_or(usize::MAX)
        };
        all.sort_by_key(|i| match i {
            Item::Backfill(e) => (rank(e.doc.patient()), 0, e.seq),
            Item::Feed(e) => (rank(e.doc.patient()), 1, e.seq),
        });
        self.queue = all.into();
    }

    /// Queues the readable feed entries after `scanned_to`, except those in `received`.
    pub(super) fn scan<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
        received: &[(u64, u64)],
    ) -> Result<(), RepoError> {
        let mut fresh = Vec::new();
        let received = Held::new(received);
        loop {
            let page = repo.store().feed_after(self.scanned_to, 4096)?;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            for e in page {
                let held = received.contains(e.seq);
                if !held && policy.may_read(&self.peer, &e.doc) {
                    fresh.push(e);
                }
            }
            self.scanned_to = last;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        self.caught_up = false;
        for e in &fresh {
            self.unsent.insert(e.seq);
        }
        self.enqueue(fresh.into_iter().map(Item::Feed).collect());
        Ok(())
    }

    /// Sends batches while the window allows.
    pub(super) fn pump<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
    ) -> Result<(), RepoError> {
        while self.state == State::Serving && self.in_flight.len() < self.config.max_in_flight {
            if self.queue.is_empty() && self.caught_up {
                break;
            }
            self.send_batch(repo, policy)?;
            if self.queue.is_empty() {
                if !self.caught_up {
                    self.caught_up = true;
                    self.events.push_back(ServerEvent::CaughtUp);
                }
                break;
            }
        }
        Ok(())
    }

    pub(super) fn send_batch<S: Store, P: AccessPolicy>(
        &mut self,
        repo: &mut Repo<S>,
        policy: &P,
    ) -> Result<(), RepoError> {
        let own_actor = self.own_actor();
        let mut docs: Vec<DocChanges> = Vec::new();
        let mut bytes = 0usize;
        let mut count = 0usize;
        let mut disclosed_now: BTreeMap<DocumentId, usize> = BTreeMap::new();
        let mut completes: Vec<PatientId> = Vec::new();
        let mut seqs: BTreeMap<DocumentId, BTreeSet<u64>> = BTreeMap::new();
        let target = self.pace.batch_bytes();
        while let Some(item) = self.queue.front().cloned() {
            if count > 0 && (bytes >= target || count >= MAX_BATCH_CHANGES) {
                break;
            }
            self.queue.pop_front();
            let seq = item.entry().seq;
            let (doc, hash, position) = match item {
                Item::Feed(e) => {
                    self.unsent.remove(&e.seq);
                    (e.doc, e.hash, Some(e.seq))
                }
                Item::Backfill(e) => {
                    if let Some(b) = self.backfill.get_mut(e.doc.patient()) {
                        b.left = b.left.saturating_sub(1);
                        b.progress = b.progress.max(e.seq);
                        b.unreported = true;
                    }
                    (e.doc, e.hash, None)
                }
            };
            if !policy.may_read(&self.peer, &doc) {
                continue;
            }
            let change = match repo.change_by_hash(&doc, &hash) {
                Ok(c) => c,
                Err(RepoError::Model(e)) => {
                    tracing::error!(%doc, error = %e, "a stored document does not load; skipping it");
                    None
                }
                Err(e) => return Err(e),
            };
            let Some(change) = change else {
                // The feed lists it, so the store holds it: a copy that lacks it is stale.
                tracing::error!(%doc, %hash, position = seq, device = %self.peer.author.device,
                    "a feed entry's change is not in the document: not sent");
                continue;
            };
            // The device wrote it, so it has it: unless it forgot the patient since (withdrawn,
            // then given back), which is exactly when the patient is not complete.
            // Nor when another installation of its incarnation (a copy) wrote it.
            if *change.actor_id() == own_actor
                && self.complete.contains(doc.patient())
                && !self.refetching(doc.patient(), seq)
                && self.holds_own(repo, &change, seq)?
            {
                continue;
            }
            bytes += change.raw_bytes().len();
            count += 1;
            seqs.entry(doc.clone()).or_default().insert(seq);
            *disclosed_now.entry(doc.clone()).or_default() += 1;
            match docs.last_mut() {
                Some(last) if last.doc == doc => {
                    last.changes.push(change.raw_bytes().to_vec());
                    last.positions.push(position.unwrap_or(0));
                }
                _ => docs.push(DocChanges {
                    doc: doc.clone(),
                    changes: vec![change.raw_bytes().to_vec()],
                    positions: vec![position.unwrap_or(0)],
                }),
            }
        }
        // Backfill progress goes with the batch; a finished backfill completes the patient
        // once this batch is acknowledged.
        let mut backfill = Vec::new();
        self.backfill.retain(|p, b| {
            if b.left == 0 {
                b.progress = b.until;
            }
            if b.unreported || b.left == 0 {
                backfill.push(Backfill {
                    patient: p.clone(),
                    progress: b.progress,
                    until: b.until,
                });
                b.unreported = false;
            }
            if b.left == 0 {
                completes.push(p.clone());
                false
            } else {
                true
            }
        });
        // Disclosure is recorded durably before anything is sent.
        let before = self.disclosed.len();
        self.disclosed
            .extend(disclosed_now.keys().map(|d| d.patient().clone()));
        if self.disclosed.len() != before {
            self.save_disclosed(repo)?;
        }
        let position = self.unsent.first().map_or(self.scanned_to, |s| s - 1);
        self.relay_signatures(repo, &seqs)?;
        let batch = self.next_batch;
        self.next_batch += 1;
        self.in_flight.insert(batch, (position, completes));
        self.pace.sent(batch, bytes, self.now);
        let cursor = Cursor {
            epoch: self.epoch,
            position,
        };
        let remaining = u32::try_from(self.queue.len()).unwrap_or(u32::MAX);
        if self.v3 {
            let proof = repo.store().feed_proof(position)?;
            self.send(&ServerMessage::Batch3 {
                batch,
                docs,
                cursor,
                backfill,
                remaining,
                proof,
            })?;
        } else {
            self.send(&ServerMessage::Batch {
                batch,
                docs,
                cursor,
                backfill,
                remaining,
            })?;
        }
        for (doc, changes) in disclosed_now {
            self.events
                .push_back(ServerEvent::Disclosed { doc, changes });
        }
        Ok(())
    }
}

/// The feed positions a device's hello says it holds: its ranges (up to `MAX_LIST`, in any
/// order, overlapping or not) merged once, so that each feed entry of a catch-up is looked up
/// in them (log n) rather than compared with every range (10,000 comparisons an entry for a
/// device that sends the most ranges there may be).
struct Held(BTreeMap<u64, u64>);

impl Held {
    fn new(ranges: &[(u64, u64)]) -> Self {
        let mut sorted: Vec<(u64, u64)> = ranges.iter().copied().filter(|(a, b)| a <= b).collect();
        sorted.sort_unstable();
        let mut merged: BTreeMap<u64, u64> = BTreeMap::new();
        let mut last: Option<(u64, u64)> = None;
        for (a, b) in sorted {
            last = match last {
                Some((start, end)) if a <= end.saturating_add(1) => Some((start, end.max(b))),
                Some(done) => {
                    merged.insert(done.0, done.1);
                    Some((a, b))
                }
                None => Some((a, b)),
            };
        }
        if let Some((start, end)) = last {
            merged.insert(start, end);
        }
        Self(merged)
    }

    fn contains(&self, seq: u64) -> bool {
        self.0
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq <= end)
    }
}

#[cfg(test)]
mod held_tests {
    use super::Held;

    /// Whatever the ranges' order and overlaps, a position is held exactly when some range
    /// holds it (as the comparison with every range said).
    #[test]
    fn held_positions_are_those_of_some_range() {
        let ranges = [
            (50, 60),
            (1, 100),
            (200, 200),
            (7, 3),
            (150, 180),
            (181, 190),
            (300, 310),
            (305, 320),
        ];
        let held = Held::new(&ranges);
        for seq in 0..400 {
            let any = ranges.iter().any(|&(a, b)| a <= seq && seq <= b);
            assert_eq!(held.contains(seq), any, "position {seq}");
        }
        assert!(!Held::new(&[]).contains(0));
        assert!(Held::new(&[(u64::MAX, u64::MAX)]).contains(u64::MAX));
    }
}
