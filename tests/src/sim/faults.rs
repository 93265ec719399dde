//! The simulation's crashes, and its faults of state going backwards: a device's store put back
//! to an earlier backup (the phone restored from a backup), the server's store put back to an
//! earlier backup (a restored disk or virtual machine: the feed epoch is the backup's, so only
//! the feed itself tells), a copied phone (a second runtime started from a copy of one
//! device's store, with the same credential) that writes too, and a phone that loses power
//! (its store back to its last durable commit: the relaxed ones after it are gone).
//!
//! Each is drawn only when its knob in [`SimConfig`](super::SimConfig) is above 0, so a world
//! without them draws exactly the random numbers it always did and a seed's run is unchanged.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ChangeHash;
use rand::Rng;
use sync_core::DocumentId;
use sync_core::repo::Repo;
use sync_core::store::{MemoryStore, Store};

use super::{Device, World, device_session};

/// Backups kept per store (the oldest is dropped), and copied phones per world.
pub(super) const MAX_BACKUPS: usize = 3;
pub(super) const MAX_COPIES: usize = 2;

impl World {
    pub(super) fn crash_device(&mut self, d: usize) {
        self.stats.crashes += 1;
        self.disconnect(d);
        let dev = &mut self.devices[d];
        dev.repo = Repo::new(dev.store.clone());
        dev.session = device_session(&dev.author, self.config.signing);
    }

    /// A server crash: with one node, the server; with several, one node the seed picks. The
    /// node's connections end and it starts again with nothing cached.
    pub(super) fn crash_server(&mut self) {
        self.stats.crashes += 1;
        let node = if self.nodes.len() > 1 {
            self.rng.random_range(0..self.nodes.len())
        } else {
            0
        };
        for d in 0..self.devices.len() {
            if self.devices[d]
                .link
                .as_ref()
                .is_some_and(|l| l.node == node)
            {
                self.disconnect(d);
            }
        }
        self.lingering.retain(|l| l.node != node);
        self.nodes[node] = Repo::new(self.server_store.clone());
    }

    /// Device `d` loses power: the app stops, its store keeps only what was durable (the
    /// relaxed commits after its last durable one are gone), and the app starts again on it.
    /// Nothing it wrote is lost (every local write is durable), so no write is forgotten.
    pub fn power_off_device(&mut self, d: usize) {
        self.stats.power_losses += 1;
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("fault: device {d} loses power");
        }
        self.disconnect(d);
        let dev = &mut self.devices[d];
        if dev.store.power_loss().expect("a memory store") {
            self.stats.power_losses_that_took += 1;
        }
        dev.repo = Repo::new(dev.store.clone());
        dev.session = device_session(&dev.author, self.config.signing);
    }

    /// One step's draws of the faults of state going backwards.
    pub(super) fn backwards_step(&mut self) {
        if self.config.device_power_loss > 0 && self.chance(self.config.device_power_loss) {
            let d = self.rng.random_range(0..self.devices.len());
            self.power_off_device(d);
        }
        if self.config.device_restore > 0 && self.chance(self.config.device_restore) {
            let d = self.rng.random_range(0..self.devices.len());
            let backups = self.devices[d].backups.len();
            if backups == 0 || self.rng.random_bool(0.5) {
                self.back_up_device(d);
            } else {
                let i = self.rng.random_range(0..backups);
                self.restore_device(d, i);
            }
        }
        if self.config.server_restore > 0 && self.chance(self.config.server_restore) {
            let backups = self.server_backups.len();
            if backups == 0 || self.rng.random_bool(0.5) {
                self.back_up_server();
            } else {
                let i = self.rng.random_range(0..backups);
                self.restore_server(i);
            }
        }
        if self.config.copied_device > 0
            && self.chance(self.config.copied_device)
            && self.stats.copies < MAX_COPIES
        {
            let originals: Vec<usize> = (0..self.devices.len())
                .filter(|&d| self.devices[d].copy_of.is_none())
                .collect();
            let d = originals[self.rng.random_range(0..originals.len())];
            self.copy_device(d);
        }
    }

    /// A backup of device `d`'s store as it is now (what is committed; the repo in memory holds
    /// nothing unsaved).
    pub fn back_up_device(&mut self, d: usize) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("fault: device {d} is backed up");
        }
        let dev = &mut self.devices[d];
        let copy = dev.store.deep_copy().expect("copy a memory store");
        if dev.backups.len() >= MAX_BACKUPS {
            dev.backups.remove(0);
        }
        dev.backups.push(copy);
    }

    /// Device `d` is restored from its backup `i`: the app stops, its store is put back, and
    /// the app starts again on it.
    pub fn restore_device(&mut self, d: usize, i: usize) {
        self.stats.restores += 1;
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("fault: device {d} is put back to its backup {i}");
        }
        self.disconnect(d);
        let dev = &mut self.devices[d];
        dev.store
            .restore_from(&dev.backups[i])
            .expect("restore a memory store");
        dev.repo = Repo::new(dev.store.clone());
        dev.session = device_session(&dev.author, self.config.signing);
        self.forget_writes_no_store_holds();
    }

    pub fn back_up_server(&mut self) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "fault: the server is backed up (head {:?})",
                self.server_store.feed_head()
            );
        }
        let copy = self.server_store.deep_copy().expect("copy a memory store");
        if self.server_backups.len() >= MAX_BACKUPS {
            self.server_backups.remove(0);
        }
        self.server_backups.push(copy);
    }

    /// The server is restored from its backup `i`: it stops (every connection ends), its store
    /// is put back, feed and epoch included, and it starts again on it.
    pub fn restore_server(&mut self, i: usize) {
        self.stats.restores += 1;
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("fault: the server is put back to its backup {i}");
        }
        for d in 0..self.devices.len() {
            self.disconnect(d);
        }
        self.server_store
            .restore_from(&self.server_backups[i])
            .expect("restore a memory store");
        for node in &mut self.nodes {
            *node = Repo::new(self.server_store.clone());
        }
        self.forget_writes_no_store_holds();
    }

    /// A copied phone: a new device runtime on a copy of device `d`'s store, with the same
    /// credential (author and device), that writes records of its own.
    pub fn copy_device(&mut self, d: usize) {
        self.stats.copies += 1;
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "fault: device {} starts as a copy of device {d}",
                self.devices.len()
            );
        }
        let original = &self.devices[d];
        let store = original.store.deep_copy().expect("copy a memory store");
        let copy = Device {
            author: original.author.clone(),
            repo: Repo::new(store.clone()),
            store,
            session: device_session(&original.author, self.config.signing),
            link: None,
            saved: BTreeSet::new(),
            saved_records: BTreeMap::new(),
            refused_records: original.refused_records.clone(),
            next_id: 0,
            backups: Vec::new(),
            copy_of: Some(d),
        };
        self.devices.push(copy);
    }

    /// A write that no store holds any more (its writer was restored to before it, and it had
    /// not reached the server, or the server was restored too, and nobody else had it) is lost
    /// by the restores themselves: nothing can bring it back, so the "no acknowledged write
    /// lost" checker no longer asks for it. A write some store still holds stays required.
    fn forget_writes_no_store_holds(&mut self) {
        let docs: BTreeSet<DocumentId> = self
            .devices
            .iter()
            .flat_map(|dev| dev.saved.iter().map(|(doc, _)| doc.clone()))
            .collect();
        let mut held: BTreeSet<(DocumentId, ChangeHash)> = BTreeSet::new();
        let stores: Vec<MemoryStore> = std::iter::once(self.server_store.clone())
            .chain(self.devices.iter().map(|dev| dev.store.clone()))
            .collect();
        for store in stores {
            let mut repo = Repo::new(store);
            for doc in &docs {
                // A device that forgot a person refuses to load its documents: it holds none.
                if let Ok(loaded) = repo.get(doc) {
                    held.extend(
                        loaded
                            .changes_since(&[])
                            .iter()
                            .map(|c| (doc.clone(), c.hash())),
                    );
                }
            }
        }
        for dev in &mut self.devices {
            dev.saved.retain(|w| held.contains(w));
        }
    }
}
