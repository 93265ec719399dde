//! The simulated links: connecting and cutting them, carrying each message (lost,
//! duplicated or reordered as the seed decides), waking the other sessions, and ticks.

use super::*;

impl World {
    pub(super) fn connect(&mut self, d: usize) {
        if self.devices[d].link.is_some() || self.partitioned {
            return;
        }
        // Which node the connection reaches (drawn only with several, so that a world of one
        // node draws what it always did).
        let node = if self.nodes.len() > 1 {
            self.rng.random_range(0..self.nodes.len())
        } else {
            0
        };
        self.connect_to(d, node);
    }

    /// Device `d` connects to server node `node` (for tests that place devices on nodes).
    pub fn connect_to(&mut self, d: usize, node: usize) {
        if self.devices[d].link.is_some() || self.partitioned {
            return;
        }
        let now = self.time();
        let dev = &mut self.devices[d];
        let mut server = ServerSession::new(
            Peer {
                author: dev.author.clone(),
            },
            ServerConfig {
                batch_bytes: 2_000,
                // Batches grow with a link measured fast, as `nara-server`'s do.
                batch_bytes_fast: 16_000,
                max_in_flight: 2,
                stall_after_ms: Some(5_000),
                compress: true,
            },
        );
        if self.config.signing {
            server.set_signing_key(Some(device_key(&dev.author.device).public()));
            // Half the team runs this build (uploads signed once, over their root: the server
            // says it takes that, and the device that it reads it), half the build before
            // (signed per document): relays between the two are what a fleet mid-update sees.
            let root = d % 2 == 0;
            server.set_reads_root_signatures(root);
            dev.session
                .server_takes_root_signatures(&mut dev.repo, root)
                .unwrap();
        }
        // With several nodes the connection claims the device's lease, as the server's does.
        // (With one, a device has one connection at a time here; copied phones, which share a
        // credential, would fence each other as the server's `live` map makes them do too.)
        if self.nodes.len() > 1 {
            server
                .claim_lease(&mut self.nodes[node], &format!("node-{node}"), now)
                .unwrap();
        }
        dev.session.connect(&mut dev.repo, now).unwrap();
        dev.link = Some(Link {
            up: VecDeque::new(),
            down: VecDeque::new(),
            server,
            node,
        });
        self.stats.connections += 1;
        self.pump_outboxes(d);
    }

    pub(super) fn disconnect(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        if dev.link.take().is_some() {
            dev.session.disconnected();
        }
    }

    /// Moves what the sessions want to send onto the link, checking every server message.
    pub(super) fn pump_outboxes(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        let Some(link) = dev.link.as_mut() else {
            return;
        };
        while let Some(bytes) = dev.session.poll_transmit() {
            if std::env::var_os("SIM_TRACE").is_some() {
                if let Ok(m) = wire::decode::<wire::DeviceMessage>(&bytes) {
                    let short = match &m {
                        wire::DeviceMessage::Hello(h)
                        | wire::DeviceMessage::Hello3 { hello: h, .. } => format!(
                            "Hello cursor={:?} received={:?} backfill={:?} upload={}",
                            h.cursor.map(|c| c.position),
                            h.received,
                            h.backfill,
                            h.upload.len()
                        ),
                        other => format!("{other:?}").chars().take(80).collect(),
                    };
                    eprintln!("  up[{d}]: {short}");
                }
            }
            link.up.push_back(bytes);
        }
        while let Some(bytes) = link.server.poll_transmit() {
            // Checker: no document reaches a device that may not read it.
            if let Ok(msg) = wire::decode::<ServerMessage>(&bytes) {
                let docs: Vec<DocumentId> = match &msg {
                    ServerMessage::Batch { docs, .. }
                    | ServerMessage::Batch3 { docs, .. }
                    | ServerMessage::Reconcile { docs, .. } => {
                        docs.iter().map(|d| d.doc.clone()).collect()
                    }
                    ServerMessage::AmSync { doc, .. } => vec![doc.clone()],
                    _ => vec![],
                };
                for doc in docs {
                    assert!(
                        self.policy.may_read(link.server.peer(), &doc),
                        "SIM_SEED={}: [disclosure] {doc} sent to {} without access",
                        self.seed,
                        dev.author.user
                    );
                }
            }
            if std::env::var_os("SIM_TRACE").is_some() {
                if let Ok(m) = wire::decode::<ServerMessage>(&bytes) {
                    let short = match &m {
                        ServerMessage::Batch {
                            batch,
                            docs,
                            cursor,
                            backfill,
                            remaining,
                        }
                        | ServerMessage::Batch3 {
                            batch,
                            docs,
                            cursor,
                            backfill,
                            remaining,
                            ..
                        } => format!(
                            "Batch {batch} cursor={} backfill={backfill:?} remaining={remaining} docs={:?}",
                            cursor.position,
                            docs.iter()
                                .map(|d| (d.doc.to_string(), d.positions.clone()))
                                .collect::<Vec<_>>()
                        ),
                        other => format!("{other:?}").chars().take(100).collect(),
                    };
                    eprintln!("  down[{d}]: {short}");
                }
            }
            link.down.push_back(bytes);
        }
        while let Some(ev) = dev.session.poll_event() {
            if std::env::var_os("SIM_TRACE").is_some() {
                eprintln!("  device[{d}]: {ev:?}");
            }
            // What a refused change wrote, while its document is still here (a person
            // withdrawn is forgotten later, quarantine kept).
            if let DeviceEvent::ChangeRefused(q) = &ev {
                let records = SavedRecord::written(&mut dev.repo, &q.doc, &q.change);
                dev.refused_records
                    .insert((q.doc.clone(), q.change), records);
            }
        }
        let closed_server = link.server.is_closed();
        let mut closed_device = false;
        while let Some(ev) = link.server.poll_event() {
            if std::env::var_os("SIM_TRACE").is_some() {
                eprintln!("  server[{d}]: {ev:?}");
            }
            // As the server's sync shell does: the withdrawals told and sent are access rows.
            let rows = &mut self.policy.rules.rows;
            match ev {
                ServerEvent::WithdrawalSent { patients } => {
                    for p in &patients {
                        rows.withdrawal_sent(link.server.peer(), p);
                    }
                }
                ServerEvent::GraceEnded { patients } | ServerEvent::Withdrawn { patients } => {
                    for p in &patients {
                        rows.told(link.server.peer(), p);
                    }
                }
                _ => {}
            }
        }
        if !dev.session.is_connected() {
            closed_device = true;
        }
        if closed_server || closed_device {
            self.disconnect(d);
        }
    }

    /// Whether the server is short of CPU (`ServerSession::server_busy`): every other two
    /// seconds of simulated time, so that batches to a link measured fast go at both of the
    /// server's compression efforts (from time, not the seeded generator: the faults each seed
    /// draws stay as they were).
    fn server_busy(&self) -> bool {
        (self.now / 2_000) % 2 == 1
    }

    /// After the server stored something, live sessions push it (lingering ones too).
    pub(super) fn notify_others(&mut self) {
        let busy = self.server_busy();
        for d in 0..self.devices.len() {
            if let Some(link) = self.devices[d].link.as_mut() {
                link.server.server_busy(busy);
                link.server
                    .feed_advanced(&mut self.nodes[link.node], &self.policy);
            }
            self.pump_outboxes(d);
        }
        self.push_lingering();
    }

    /// Delivers one message on device `d`'s link, with faults. Returns whether one moved.
    pub(super) fn deliver(&mut self, d: usize, faults: bool) -> bool {
        let now = self.time();
        let busy = self.server_busy();
        let upward = {
            let Some(link) = self.devices[d].link.as_ref() else {
                return false;
            };
            match (link.up.is_empty(), link.down.is_empty()) {
                (true, true) => return false,
                (false, true) => true,
                (true, false) => false,
                (false, false) => self.rng.random_bool(0.5),
            }
        };
        if faults && self.chance(self.config.cut) {
            self.stats.faults += 1;
            self.cut(d);
            return true;
        }
        let (drop, dup, reorder) = if faults {
            (
                self.chance(self.config.drop),
                self.chance(self.config.duplicate),
                self.chance(self.config.reorder),
            )
        } else {
            (false, false, false)
        };
        let dev = &mut self.devices[d];
        let Some(link) = dev.link.as_mut() else {
            return false;
        };
        let queue = if upward { &mut link.up } else { &mut link.down };
        if reorder && queue.len() > 1 {
            self.stats.faults += 1;
            queue.swap(0, 1);
        }
        let Some(bytes) = queue.pop_front() else {
            return false;
        };
        if dup {
            self.stats.faults += 1;
            queue.push_front(bytes.clone());
        }
        self.stats.messages += 1;
        if drop {
            // A stream loses nothing silently: a lost message is a broken connection.
            self.stats.faults += 1;
            self.cut(d);
            return true;
        }
        let mut stored = false;
        if upward {
            let before = self.server_store.feed_head().unwrap();
            link.server.server_busy(busy);
            link.server
                .handle_bytes(&mut self.nodes[link.node], &self.policy, &bytes, now);
            stored = self.server_store.feed_head().unwrap() != before;
        } else {
            dev.session.handle_bytes(&mut dev.repo, &bytes, now);
        }
        self.pump_outboxes(d);
        if stored {
            self.notify_others();
        }
        true
    }

    /// Delivers every message, without faults, until nothing moves (at most `bound` messages).
    pub fn settle(&mut self, bound: usize) {
        for d in 0..self.devices.len() {
            self.pump_outboxes(d);
        }
        let mut moved = 0;
        while moved < bound {
            let before = moved;
            for d in 0..self.devices.len() {
                while moved < bound && self.deliver(d, false) {
                    moved += 1;
                }
            }
            if moved == before {
                break;
            }
        }
    }

    pub(super) fn tick_all(&mut self) {
        let now = self.time();
        for d in 0..self.devices.len() {
            let dev = &mut self.devices[d];
            dev.session.tick(now);
            if let Some(link) = dev.link.as_mut() {
                link.server.tick(now);
            }
            self.pump_outboxes(d);
        }
    }
}
