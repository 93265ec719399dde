//! Ingestion of a batch of ready foreign changes in one pass through Automerge.
//!
//! Applying, reading back and diffing foreign changes one at a time costs work that grows with
//! the document for every change (Automerge decodes its op columns each time), which made a
//! device's catch-up quadratic in its documents. A batch of changes whose dependencies the
//! document holds, or that are earlier in the batch (a device's run of changes is a chain, each
//! on its predecessor), is applied in one call, read back in one call and diffed once; each
//! patch is attributed to the change that wrote it from that change's own operations, and each
//! change is then checked on its own with its author, exactly as
//! [`CareDocument::apply_changes`] checks one. The checks that read the document's graph (its
//! actor's sequence number, its place after its predecessor, its operation counters) read the
//! earlier changes of the batch where one at a time would read them in the document.
//!
//! The batch is all or nothing: if anything fails (a check, Automerge, the attribution), the
//! document is put back as it was before the batch (rebuilt from its history, checked by its
//! heads; poisoned if that fails, as one at a time poisons it when Automerge fails) and the
//! caller applies the changes pass by pass and one at a time, which refuses exactly the
//! changes it always refused, with the same errors. A batch in which two changes write one map
//! key or one text is not tried: its patches could not be attributed.
//!
//! Why a batch that passes gives the same outcome as one at a time: each change's records are
//! checked against the index before the batch and its own records only, so a change that builds
//! on a batch-mate's records or texts fails here (and goes one at a time); two changes writing
//! one key (concurrent, or one over the other) have two writers, so the patch has no single
//! owner and the batch fails; and the checks against the index only look records up, so a change
//! that passes against the index before the batch also passes with its batch-mates' records
//! added (as one at a time checks it).

use std::collections::{BTreeMap, BTreeSet};

use automerge::legacy::{Key, ObjectId};
use automerge::{ActorId, Change, ObjId, Patch, PatchAction, PatchLog};

use super::ingest::{Earlier, NewRecords, ReadBack};
use super::{CareDocument, guarded};

/// An object, as named by a patch ([`ObjId`]) and by a decoded change ([`ObjectId`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Obj {
    Root,
    Id(u64, ActorId),
}

impl Obj {
    fn of_patch(id: &ObjId) -> Self {
        match id {
            ObjId::Root => Obj::Root,
            ObjId::Id(counter, actor, _) => Obj::Id(*counter, actor.clone()),
        }
    }

    fn of_op(id: &ObjectId) -> Self {
        match id {
            ObjectId::Root => Obj::Root,
            ObjectId::Id(op) => Obj::Id(op.counter(), op.actor().clone()),
        }
    }
}

/// Which changes of a batch wrote to each object and each map key, from their own operations.
#[derive(Debug, Default)]
struct Writers {
    objs: BTreeMap<Obj, BTreeSet<usize>>,
    keys: BTreeMap<(Obj, String), BTreeSet<usize>>,
    /// Objects written by sequence operations (a text's splices), by change.
    sequences: BTreeMap<Obj, BTreeSet<usize>>,
}

impl Writers {
    /// `None` if Automerge fails to decode a change (it panics on some malformed ones).
    fn of(changes: &[Change]) -> Option<Self> {
        let mut writers = Writers::default();
        for (i, change) in changes.iter().enumerate() {
            let decoded = guarded(|| change.decode())?;
            for op in decoded.operations {
                let obj = Obj::of_op(&op.obj);
                match &op.key {
                    Key::Map(key) => {
                        writers
                            .keys
                            .entry((obj.clone(), key.to_string()))
                            .or_default()
                            .insert(i);
                    }
                    Key::Seq(_) => {
                        writers.sequences.entry(obj.clone()).or_default().insert(i);
                    }
                }
                writers.objs.entry(obj).or_default().insert(i);
            }
        }
        Some(writers)
    }

    /// Whether two changes of the batch wrote one map key or one text: their patches would have
    /// no single owner ([`Writers::owner`]), so the batch would fail after Automerge's apply.
    /// Told before it, the batch is not tried (nothing to undo).
    fn contested(&self) -> bool {
        self.keys
            .values()
            .chain(self.sequences.values())
            .any(|w| w.len() > 1)
    }

    /// The one change of the batch that made this patch, if exactly one did.
    fn owner(&self, patch: &Patch) -> Option<usize> {
        let obj = Obj::of_patch(&patch.obj);
        let owners = match &patch.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
                self.keys.get(&(obj, key.clone()))
            }
            _ => self.objs.get(&obj),
        }?;
        let mut it = owners.iter();
        match (it.next(), it.next()) {
            (Some(i), None) => Some(*i),
            _ => None,
        }
    }
}

impl CareDocument {
    /// Applies `changes` (each after its dependencies among them; the document holds their
    /// other dependencies, and none of them) as one batch, if every one of them passes every check; returns whether it did. If it
    /// returns `false`, the document is as it was ([`CareDocument::restore`]; or poisoned, if
    /// it could not be put back) and the caller must apply the changes one at a time.
    pub(super) fn apply_batch(&mut self, changes: &[Change], read_back: ReadBack) -> bool {
        if self.poisoned || changes.len() < 2 {
            return false;
        }
        // The checks of a change that need no Automerge call but its dependencies' metadata.
        // In their order, so that a change of an actor is checked after its predecessor in the
        // batch, against it, as one at a time checks it.
        let mut admitted = Vec::with_capacity(changes.len());
        let mut earlier = Earlier::default();
        for change in changes {
            match self.admit_after(change, &earlier) {
                Ok(a) => admitted.push(a),
                Err(_) => return false,
            }
            earlier.add(change);
        }
        let Some(writers) = Writers::of(changes) else {
            return false;
        };
        if writers.contested() {
            return false;
        }
        let before = self.doc.get_heads();
        match self.apply_batch_to_doc(changes, &before, &writers, &admitted, read_back) {
            Some(news) => {
                for (new, a) in news.into_iter().zip(admitted) {
                    self.commit_index(new);
                    if let Some(seqs) = self.actor_seqs.as_mut() {
                        seqs.insert(a.actor, a.seq);
                    }
                }
                true
            }
            None => {
                self.restore(&before);
                false
            }
        }
    }

    /// Puts the document back to `heads` after a batch failed: rebuilt from its history up to
    /// them (as [`CareDocument::apply_one`] takes back a refused change), and taken only if
    /// the rebuilt document has exactly those heads, which name every change of that history
    /// by hash (Automerge may have failed half-way through the batch, and the rebuild reads
    /// the changes back from its op set). Otherwise the copy is poisoned, to be loaded again
    /// from the store.
    ///
    /// Instead of a copy of the document before every batch: that copy and its drop were 8.6%
    /// of the phones' work in the 200-device morning, for a failure that only a malformed or
    /// refused change causes (two writers of one key or text are told before the batch).
    fn restore(&mut self, heads: &[automerge::ChangeHash]) {
        let wanted: BTreeSet<_> = heads.iter().copied().collect();
        let rebuilt = guarded(|| self.doc.fork_at(heads))
            .and_then(Result::ok)
            .filter(|doc| doc.get_heads().into_iter().collect::<BTreeSet<_>>() == wanted);
        match rebuilt {
            Some(doc) => {
                self.doc = doc;
                self.actor_seqs = None;
            }
            None => self.poisoned = true,
        }
    }

    /// The Automerge part of [`CareDocument::apply_batch`]: the new records of each change, or
    /// `None` if anything failed (the document is then left changed for the caller to restore).
    fn apply_batch_to_doc(
        &mut self,
        changes: &[Change],
        before: &[automerge::ChangeHash],
        writers: &Writers,
        admitted: &[super::ingest::Admitted],
        read_back: ReadBack,
    ) -> Option<Vec<NewRecords>> {
        let mut log = PatchLog::active();
        guarded(|| {
            self.doc
                .apply_changes_log_patches(changes.to_vec(), &mut log)
        })?
        .ok()?;
        // Automerge took some malformed changes into its graph and then panicked when reading
        // them back (to send them on): read the whole batch back, while it can still be refused
        // (unless the server that relayed it did, `ReadBack::Upstream`).
        if read_back == ReadBack::Here {
            let back: BTreeSet<_> = guarded(|| self.doc.get_changes(before))?
                .iter()
                .map(Change::hash)
                .collect();
            let sent: BTreeSet<_> = changes.iter().map(Change::hash).collect();
            if back != sent {
                return None;
            }
        }
        let patches = guarded(|| self.doc.make_patches(&mut log))?;
        let mut by_change: Vec<Vec<Patch>> = vec![Vec::new(); changes.len()];
        for p in patches {
            let owner = writers.owner(&p)?;
            by_change.get_mut(owner)?.push(p);
        }
        let mut news = Vec::with_capacity(changes.len());
        for (patches, a) in by_change.iter().zip(admitted) {
            let touched = self.check_patches(patches).ok()?;
            let new = self
                .check_new_records(&touched, &a.message.author, &a.message.writes)
                .ok()?;
            news.push(new);
        }
        Some(news)
    }
}
