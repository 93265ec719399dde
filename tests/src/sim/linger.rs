//! Connections that linger on their node ([`SimConfig::linger`]): a fault cuts a link on the
//! device's side, the device gives it up and connects again (to any node), while the node
//! still serves the old connection: what the device sent on it before the cut still arrives
//! there, one message at a time, and the node pushes feed changes into it. Whatever the node
//! sends on it is lost. With several nodes each connection claimed the device's lease, so the
//! old session is fenced at its next step once a newer connection claimed (it writes nothing
//! of the device's state and closes as `Superseded`); without leases both sessions would write
//! the device's per-connection state in the shared store.

use super::*;
use sync_core::protocol::ServerEvent;

/// Lingering connections kept at most (the oldest is noticed first).
const MAX_LINGERING: usize = 8;
/// Per-mille chances, per step: that a lingering connection's node acts on it, and that a node
/// with nothing more arriving on it notices it is dead.
const LINGERING_ACTS: u32 = 300;
const NOTICED: u32 = 200;

impl World {
    /// A fault cuts device `d`'s link; with the seed's chance it lingers on its node.
    pub(super) fn cut(&mut self, d: usize) {
        let Some(link) = self.devices[d].link.take() else {
            return;
        };
        self.devices[d].session.disconnected();
        if self.config.linger > 0 && !link.server.is_closed() && self.chance(self.config.linger) {
            self.keep_lingering(link);
        }
    }

    /// Device `d`'s link lingers on its node from now on, the device having given it up (for
    /// tests that place the fault).
    pub fn linger(&mut self, d: usize) {
        if let Some(link) = self.devices[d].link.take() {
            self.devices[d].session.disconnected();
            self.keep_lingering(link);
        }
    }

    /// Connections lingering now.
    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }

    fn keep_lingering(&mut self, link: Link) {
        if self.lingering.len() >= MAX_LINGERING {
            self.lingering.remove(0);
        }
        self.stats.lingered += 1;
        self.lingering.push(link);
    }

    /// Now and then, one message the device sent before the cut reaches a lingering
    /// connection's node, or, with none left on the way, the node may notice the connection is
    /// dead (until then, it pushes stored changes into it).
    pub(super) fn lingering_step(&mut self) {
        if self.lingering.is_empty() || !self.chance(LINGERING_ACTS) {
            return;
        }
        let now = self.time();
        let i = self.rng.random_range(0..self.lingering.len());
        if self.lingering[i].up.is_empty() {
            if self.chance(NOTICED) {
                self.lingering.remove(i);
            }
            return;
        }
        let link = &mut self.lingering[i];
        let Some(bytes) = link.up.pop_front() else {
            return;
        };
        let before = self.server_store.feed_head().unwrap();
        link.server
            .handle_bytes(&mut self.nodes[link.node], &self.policy, &bytes, now);
        let stored = self.server_store.feed_head().unwrap() != before;
        self.drain_lingering();
        if stored {
            self.notify_others();
        }
    }

    /// Stored changes are pushed into lingering connections too.
    pub(super) fn push_lingering(&mut self) {
        for link in &mut self.lingering {
            link.server
                .feed_advanced(&mut self.nodes[link.node], &self.policy);
        }
        self.drain_lingering();
    }

    /// What lingering sessions send is lost; closed ones are gone.
    fn drain_lingering(&mut self) {
        for link in &mut self.lingering {
            while link.server.poll_transmit().is_some() {}
            while let Some(event) = link.server.poll_event() {
                if matches!(
                    event,
                    ServerEvent::Closed {
                        reason: wire::CloseReason::Superseded,
                        ..
                    }
                ) {
                    self.stats.fenced += 1;
                }
            }
        }
        self.lingering.retain(|l| !l.server.is_closed());
    }
}
