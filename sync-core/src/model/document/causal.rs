//! The operations a foreign change names (the objects it writes into, the elements it inserts
//! after, the operations it overwrites or deletes) must lie in its causal past: in its
//! dependencies or their history, or in the change itself.
//!
//! Automerge 0.12 does not check this. Given a change that depends on the genesis only but
//! splices into a text another device created later, a replica holding that text takes it, and
//! the server would pass it on; a replica that meets it before the text (a phone catching up in
//! two batches) panics inside Automerge (an actor it does not know yet), and its copy of the
//! person's document refuses every change after it until it is loaded again. One device could
//! stop everyone else's phones from syncing a person's record. No honest peer writes such a
//! change: Automerge names only what its document holds, and a change depends on all of it.
//!
//! Cheap for what honest peers write: a change that names only its own actor's operations and
//! the genesis's (a new record, a new text, a splice into its own text) needs nothing more,
//! since its actor's earlier changes are in its past (`admit_after` checks that it builds on its
//! predecessor) and so is the genesis (every change descends from it). A change naming another
//! device's operations (an edit of a text someone else wrote) is decoded and each such operation
//! looked up, once per change.

use std::collections::BTreeSet;

use automerge::legacy::{ElementId, Key, ObjectId, OpId};
use automerge::{ActorId, Change, ChangeHash, ObjId};

use super::ingest::Earlier;
use super::{CareDocument, guarded};

impl CareDocument {
    /// Why `change` names an operation outside its causal past, if it does. `earlier` are the
    /// changes of its batch admitted before it: a change that names another device's
    /// operations and builds on a batch-mate is refused here, and the caller applies the batch
    /// pass by pass, where its dependencies are in the document.
    pub(super) fn outside_causal_past(&self, change: &Change, earlier: &Earlier) -> Option<String> {
        let own = change.actor_id();
        let genesis = &self.objs.genesis_actor;
        let others: Vec<&ActorId> = change
            .other_actor_ids()
            .iter()
            .filter(|a| *a != genesis && *a != own)
            .collect();
        if others.is_empty() {
            return None;
        }
        if change
            .deps()
            .iter()
            .any(|d| earlier.changes.contains_key(d))
        {
            return Some(
                "it names other devices' operations and builds on a change of its batch".into(),
            );
        }
        let Some(decoded) = guarded(|| change.decode()) else {
            return Some("Automerge cannot decode it".into());
        };
        let mut named: BTreeSet<(u64, ActorId)> = BTreeSet::new();
        let mut name = |id: &OpId| {
            if id.actor() != own && id.actor() != genesis {
                named.insert((id.counter(), id.actor().clone()));
            }
        };
        for op in &decoded.operations {
            if let ObjectId::Id(id) = &op.obj {
                name(id);
            }
            if let Key::Seq(ElementId::Id(id)) = &op.key {
                name(id);
            }
            for id in op.pred.iter() {
                name(id);
            }
        }
        // Every actor it lists is one it names (Automerge lists no other; an actor this
        // replica does not know makes Automerge panic on apply).
        if let Some(unused) = others.iter().find(|a| !named.iter().any(|(_, n)| n == **a)) {
            return Some(format!(
                "it lists actor {unused} and names none of its operations"
            ));
        }
        let mut holders: BTreeSet<ChangeHash> = BTreeSet::new();
        for (counter, actor) in &named {
            // The index is a hint Automerge corrects from the actor itself.
            let id = ObjId::Id(*counter, actor.clone(), usize::MAX);
            match guarded(|| self.doc.hash_for_opid(&id)).flatten() {
                Some(h) => {
                    holders.insert(h);
                }
                None => {
                    return Some(format!(
                        "it names operation {counter}@{actor}, which this document does not hold"
                    ));
                }
            }
        }
        // The changes outside its past are few (those concurrent with it), found from
        // Automerge's cached clocks.
        let Some(outside) = guarded(|| {
            self.doc
                .get_changes_meta(change.deps())
                .iter()
                .map(|m| m.hash)
                .collect::<BTreeSet<ChangeHash>>()
        }) else {
            return Some("Automerge cannot read its dependencies' history".into());
        };
        holders.iter().find(|h| outside.contains(h)).map(|h| {
            format!(
                "it names an operation of change {h}, which is not among its dependencies or \
                 their history"
            )
        })
    }
}
