//! The checkers of a healed world (see the module documentation of `sim`).

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ChangeHash, ReadDoc};
use sync_core::DocumentId;
use sync_core::protocol::wire::RefusalCode;
use sync_core::protocol::{AccessPolicy, DeviceSession, Peer};
use sync_core::store::Store;

use super::{World, docs_of};

impl World {
    /// The checkers of a healed world.
    pub fn check(&mut self) {
        self.check_record_ids();
        self.check_recovery_ends();
        self.check_devices();
    }

    /// No acknowledged write lost; every device converges with the server on every document it
    /// may read.
    fn check_devices(&mut self) {
        let seed = self.seed;
        let quarantine: Vec<BTreeSet<(DocumentId, ChangeHash)>> = self
            .devices
            .iter()
            .map(|dev| {
                DeviceSession::quarantined(&dev.repo)
                    .unwrap()
                    .into_iter()
                    .map(|q| (q.doc, q.change))
                    .collect()
            })
            .collect();
        let refused_for_permission: BTreeSet<(DocumentId, ChangeHash)> = self
            .devices
            .iter()
            .flat_map(|dev| DeviceSession::quarantined(&dev.repo).unwrap())
            .filter(|q| q.code == RefusalCode::NotPermitted)
            .map(|q| (q.doc, q.change))
            .collect();
        // What every installation of a credential (a phone and its copies) holds quarantined.
        let mut quarantine_of_credential: BTreeMap<_, BTreeSet<(DocumentId, ChangeHash)>> =
            BTreeMap::new();
        for (d, dev) in self.devices.iter().enumerate() {
            quarantine_of_credential
                .entry(dev.author.device.clone())
                .or_default()
                .extend(quarantine[d].iter().cloned());
        }
        // What the changes refused and quarantined on every installation of a credential
        // wrote, by document: a record taken back at a reincarnation may have been written
        // again on a copy of the store (which held the change too), and refused there.
        let mut refused_of_credential: BTreeMap<_, Vec<(DocumentId, super::SavedRecord)>> =
            BTreeMap::new();
        for (d, dev) in self.devices.iter().enumerate() {
            let list = refused_of_credential
                .entry(dev.author.device.clone())
                .or_default();
            for q in &quarantine[d] {
                if let Some(records) = dev.refused_records.get(q) {
                    list.extend(records.iter().map(|r| (q.0.clone(), r.clone())));
                }
            }
        }
        for (d, dev) in self.devices.iter_mut().enumerate() {
            // No acknowledged write lost: every change the device saved is on the server, or
            // was refused and is quarantined on the device (on one of the credential's
            // installations: a store put back to before the change forgot its refusal, and a
            // copy made after it keeps the change quarantined, visible, as the device would).
            let quarantined_here = &quarantine_of_credential[&dev.author.device];
            for (doc, hash) in &dev.saved {
                let server_doc = self.nodes[0].get(doc).unwrap();
                let on_server = server_doc.automerge().get_change_by_hash(hash).is_some();
                // Taken back at a reincarnation and written again under the new incarnation:
                // another change, the same records with the same content (a text's token in
                // its text), held by the server or written by a change the server refused that
                // is quarantined on one of the credential's installations (the one that
                // wrote it again: a copy of the store that held the change when this one was
                // put back to before it).
                let refused: Vec<&super::SavedRecord> = refused_of_credential[&dev.author.device]
                    .iter()
                    .filter(|(qd, _)| qd == doc)
                    .map(|(_, r)| r)
                    .collect();
                let written_again =
                    dev.saved_records
                        .get(&(doc.clone(), *hash))
                        .is_some_and(|rs| {
                            !rs.is_empty()
                                && rs.iter().all(|r| {
                                    r.held_by(server_doc) || refused.iter().any(|x| r.covered_by(x))
                                })
                        });
                assert!(
                    on_server || quarantined_here.contains(&(doc.clone(), *hash)) || written_again,
                    "SIM_SEED={seed}: [write lost] change {hash} to {doc} saved on device {d} is lost \
                     (held by the device: {}; it wrote {:?}; the server holds {:?}; the device's \
                     incarnation {:?})",
                    dev.repo
                        .get(doc)
                        .map(|x| x.automerge().get_change_by_hash(hash).is_some())
                        .unwrap_or(false),
                    dev.saved_records.get(&(doc.clone(), *hash)),
                    dev.saved_records
                        .get(&(doc.clone(), *hash))
                        .into_iter()
                        .flatten()
                        .map(|r| r.as_held_by(server_doc))
                        .collect::<Vec<_>>(),
                    dev.repo.incarnation().ok(),
                );
            }
            // Convergence on every document the device may read.
            let peer = Peer {
                author: dev.author.clone(),
            };
            for p in &self.patients {
                for doc in docs_of(p) {
                    if !self.policy.may_read(&peer, &doc) {
                        continue;
                    }
                    let mut server_heads = self.nodes[0].get(&doc).unwrap().heads();
                    let mut device_heads = dev.repo.get(&doc).unwrap().heads();
                    server_heads.sort();
                    device_heads.sort();
                    if quarantine[d].iter().any(|(qd, _)| qd == &doc) {
                        // A device keeps its refused change: it may be ahead, never behind.
                        let device_doc = dev.repo.get(&doc).unwrap();
                        for h in &server_heads {
                            assert!(
                                device_doc.automerge().get_change_by_hash(h).is_some(),
                                "SIM_SEED={seed}: [convergence] device {d} lacks {h} of {doc}"
                            );
                        }
                        continue;
                    }
                    if server_heads != device_heads {
                        // Ahead only by changes refused for a permission their author lost
                        // (quarantined on the author's device, where the record stays): a
                        // server put back to before them takes them from nobody, since their
                        // author may no longer write, and another device's relay is not vouched
                        // for (the simulation's devices do not sign).
                        let server_has: BTreeSet<ChangeHash> = self.nodes[0]
                            .get(&doc)
                            .unwrap()
                            .changes_since(&[])
                            .iter()
                            .map(|c| c.hash())
                            .collect();
                        let dd = dev.repo.get(&doc).unwrap();
                        let ahead_by_lost_permission = server_heads
                            .iter()
                            .all(|h| dd.automerge().get_change_by_hash(h).is_some())
                            && dd
                                .changes_since(&[])
                                .iter()
                                .map(|c| c.hash())
                                .filter(|h| !server_has.contains(h))
                                .all(|h| refused_for_permission.contains(&(doc.clone(), h)));
                        if ahead_by_lost_permission {
                            continue;
                        }
                        let sd = self.nodes[0].get(&doc).unwrap();
                        let server_has: BTreeSet<ChangeHash> =
                            sd.changes_since(&[]).iter().map(|c| c.hash()).collect();
                        let dd = dev.repo.get(&doc).unwrap();
                        let dev_has: BTreeSet<ChangeHash> =
                            dd.changes_since(&[]).iter().map(|c| c.hash()).collect();
                        let feed: Vec<_> = self.nodes[0]
                            .store()
                            .feed_after(0, 100_000)
                            .unwrap()
                            .into_iter()
                            .filter(|e| e.doc == doc)
                            .map(|e| (e.seq, e.hash))
                            .collect();
                        panic!(
                            "SIM_SEED={seed}: [convergence] device {d} and the server differ on {doc}: server lacks {:?}, device lacks {:?}; device sync state {:?}; feed {:?}; stats {:?}",
                            dev_has.difference(&server_has).collect::<Vec<_>>(),
                            server_has.difference(&dev_has).collect::<Vec<_>>(),
                            DeviceSession::load_state(&dev.repo).unwrap(),
                            feed,
                            self.stats,
                        );
                    }
                }
            }
        }
    }

    /// Recovery ends: after healing, every device, copied phones too, is caught up, holds
    /// nothing pending, and holds no quarantined change but one refused for a permission it
    /// lost (the one refusal an honest device meets) or one building on such a change. A change
    /// refused for its history (a store gone back writing again under its old actor, a copy
    /// writing beside its original, a change building on what a restored server lost) left
    /// quarantined is a device stuck out of sync for good.
    fn check_recovery_ends(&mut self) {
        let seed = self.seed;
        for (d, dev) in self.devices.iter_mut().enumerate() {
            assert!(
                dev.session.is_caught_up(),
                "SIM_SEED={seed}: [recovery] recovery does not end: device {d} (copy of {:?}) is not caught up",
                dev.copy_of
            );
            let pending = dev.repo.pending().expect("pending changes");
            assert!(
                pending.is_empty(),
                "SIM_SEED={seed}: [recovery] recovery does not end: device {d} (copy of {:?}) has {} changes pending",
                dev.copy_of,
                pending.len()
            );
            let quarantined = DeviceSession::quarantined(&dev.repo).expect("quarantine");
            let held: BTreeSet<(DocumentId, ChangeHash)> = quarantined
                .iter()
                .map(|q| (q.doc.clone(), q.change))
                .collect();
            for q in &quarantined {
                let builds_on_quarantined = q.code == RefusalCode::MissingDependencies && {
                    let doc = dev
                        .repo
                        .get(&q.doc)
                        .expect("a quarantined change's document");
                    let on_server = self.nodes[0].get(&q.doc).expect("the server's document");
                    doc.automerge_change(&q.change).is_some_and(|c| {
                        c.deps().iter().all(|dep| {
                            held.contains(&(q.doc.clone(), *dep))
                                || on_server.automerge_change(dep).is_some()
                        })
                    })
                };
                if q.code == RefusalCode::NotPermitted || builds_on_quarantined {
                    continue;
                }
                // Whose change it is (this device's own, or another's it holds), for the trace.
                let author = dev
                    .repo
                    .get(&q.doc)
                    .ok()
                    .and_then(|doc| doc.automerge_change(&q.change))
                    .and_then(|c| c.message().map(str::to_string))
                    .and_then(|m| serde_json::from_str::<sync_core::model::ChangeMessage>(&m).ok())
                    .map(|m| m.author);
                panic!(
                    "SIM_SEED={seed}: [recovery] recovery does not end: device {d} (copy of {:?}, {}) holds change {} to {} by {:?} refused as {:?}: {}",
                    dev.copy_of, dev.author.device, q.change, q.doc, author, q.code, q.detail
                );
            }
        }
    }

    /// No record id with two contents: a record (revision or event) held by the server and
    /// by any device is the same record everywhere it is held.
    pub fn check_record_ids(&mut self) {
        let seed = self.seed;
        let docs: Vec<DocumentId> = self.patients.iter().flat_map(docs_of).collect();
        // (document, record id) -> (its JSON, who holds it)
        let mut seen: BTreeMap<(DocumentId, String), (String, String)> = BTreeMap::new();
        let mut holders: Vec<(
            String,
            &mut sync_core::repo::Repo<sync_core::store::MemoryStore>,
        )> = vec![("the server".to_string(), &mut self.nodes[0])];
        for (d, dev) in self.devices.iter_mut().enumerate() {
            holders.push((format!("device {d}"), &mut dev.repo));
        }
        for (who, repo) in holders {
            for doc in &docs {
                // A device that forgot a person holds none of its records.
                let Ok(loaded) = repo.get(doc) else {
                    continue;
                };
                let revisions = loaded
                    .revisions()
                    .iter()
                    .map(|(id, r)| (format!("revision {id}"), serde_json::to_string(r)));
                let events = loaded
                    .events()
                    .iter()
                    .map(|(id, e)| (format!("event {id}"), serde_json::to_string(e)));
                for (id, json) in revisions.chain(events) {
                    let json = json.expect("a record as JSON");
                    match seen.get(&(doc.clone(), id.clone())) {
                        Some((first, first_who)) => assert!(
                            *first == json,
                            "SIM_SEED={seed}: [record ids] {id} of {doc} has two contents: {first_who} holds {first}, {who} holds {json}"
                        ),
                        None => {
                            seen.insert((doc.clone(), id), (json, who.clone()));
                        }
                    }
                }
            }
        }
    }
}
