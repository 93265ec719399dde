//! How `morning` judges a device in sync, and what a run that did not complete left behind
//! (issue 12).
//!
//! In sync: the device's store gained, since its day was written, as many changes as the
//! other devices wrote (its feed's head, read at each of its `Progress` events). It used to add
//! up the events' `received`, which counts per connection: a device reconnects (a sync step
//! that fails closes its session with `Internal`) and the sum must see where one connection
//! ended; a new connection whose first batch brought at least as many changes as the whole
//! last one looked like the same connection, and its changes were never counted. A three-node
//! run then waited out its timeout with one device "short" that held every change (device 14
//! counted 3,123 of 3,190: its first connection's 67 lost; its 200 documents equal to the
//! server's).
//!
//! A run that did not complete logs (`warn`) each device short of its target, how far it got
//! and over how many connections, and, document by document, whether its copy differs from
//! the server's store (PostgreSQL). With `NARA_BENCH_LOGS_TO=DIR` the nodes' logs are copied
//! there (`DIR/BACKEND-xNODES/node-K.log`, for every run, finished or not), and with `NARA_BENCH_HOLD_SECS` the run waits that long before it tears the nodes
//! and the database down, to look at them by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;
use nara_client::Device;
use sync_core::protocol::DeviceEvent;
use sync_core::protocol::wire::CloseReason;
use sync_core::{ChangeHash, DocumentId};

/// One device's count of changes received from the others.
#[derive(Debug, Default)]
pub struct Tally {
    /// The store's feed head when the timed part started.
    base: u64,
    /// Changes received so far (the feed's head less `base`).
    pub counted: AtomicU64,
    /// Connections seen to end (a `Closed` event).
    pub closed: AtomicU64,
    /// Of those, the ones the server closed because it could not complete a step
    /// (`CloseReason::Internal`: a failed store or audit write), each followed by the device's
    /// reconnect backoff.
    pub failed: AtomicU64,
    in_sync: AtomicBool,
}

impl Tally {
    /// A device whose store's feed head is `base` now.
    pub fn new(base: u64) -> Self {
        Self {
            base,
            ..Self::default()
        }
    }

    /// Takes one of the device's events (`None`: some were lost to a lagging receiver);
    /// `head` reads its store's feed head. Whether the device holds `target` changes more
    /// than at the start (once true, it stays true).
    pub fn observe(
        &self,
        event: Option<&DeviceEvent>,
        target: u64,
        head: impl FnOnce() -> Result<u64>,
    ) -> Result<bool> {
        match event {
            Some(DeviceEvent::Closed { reason, .. }) => {
                self.closed.fetch_add(1, Ordering::Relaxed);
                if *reason == CloseReason::Internal {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Once in sync, the store is not read again: the run keeps watching a device that
            // is in sync only for its sessions that end, and a read takes the device's lock.
            Some(DeviceEvent::Progress { .. } | DeviceEvent::CaughtUp) | None
                if !self.in_sync.load(Ordering::Relaxed) =>
            {
                let counted = head()?.saturating_sub(self.base);
                self.counted.store(counted, Ordering::Relaxed);
                if counted >= target {
                    self.in_sync.store(true, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        Ok(self.in_sync.load(Ordering::Relaxed))
    }
}

/// Logs every device short of `target` and how its documents compare with the server's.
pub fn report(
    devices: &[Arc<Device>],
    tallies: &[Arc<Tally>],
    target: u64,
    nodes: usize,
    docs: &[DocumentId],
    server: impl Fn(&DocumentId) -> Result<Vec<ChangeHash>>,
) -> Result<()> {
    for (i, (d, t)) in devices.iter().zip(tallies).enumerate() {
        let counted = t.counted.load(Ordering::Relaxed);
        if counted >= target {
            continue;
        }
        tracing::warn!(
            device = i,
            node = i % nodes.max(1),
            counted,
            target,
            closed = t.closed.load(Ordering::Relaxed),
            failed = t.failed.load(Ordering::Relaxed),
            "a device was not counted in sync"
        );
        let mut differ = 0usize;
        for doc in docs {
            let theirs = server(doc)?;
            let mine = d.with_repo(|r| -> Result<_> {
                let mut h = r.get(doc)?.heads();
                h.sort();
                Ok(h)
            })?;
            if mine != theirs {
                differ += 1;
                let lacks = d.with_repo(|r| -> Result<usize> {
                    let doc_here = r.get(doc)?;
                    Ok(theirs.iter().filter(|h| !doc_here.has_change(h)).count())
                })?;
                tracing::warn!(device = i, %doc, server_heads = theirs.len(), device_heads = mine.len(),
                    server_heads_the_device_lacks = lacks, "the device's copy differs from the server's");
            }
        }
        tracing::warn!(
            device = i,
            documents = docs.len(),
            differ,
            "documents compared with the server's store"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(received: u64, remaining: u32) -> DeviceEvent {
        DeviceEvent::Progress {
            received,
            remaining,
        }
    }

    /// Issue 12's hang: a device gets 67 changes on its first connection, which the server
    /// closes (`Internal`); its second connection's first batch brings 150 and the rest
    /// follows. It holds all 3,190 it was waiting for: it is in sync.
    #[test]
    fn a_device_whose_second_connection_starts_with_a_larger_batch_is_counted_in_sync() {
        let target = 3_190;
        let tally = Tally::new(1_000);
        let mut stored = 1_000u64;
        let mut events = vec![(progress(67, 3_000), 67)];
        events.push((
            DeviceEvent::Closed {
                reason: CloseReason::Internal,
                detail: "the server could not complete the request".into(),
            },
            0,
        ));
        let mut received = 0;
        for batch in [150, 1_000, 1_000, 973] {
            received += batch;
            events.push((progress(received, 3_123 - received as u32), batch));
        }
        let mut in_sync = false;
        for (event, arrived) in &events {
            stored += arrived;
            in_sync = tally.observe(Some(event), target, || Ok(stored)).unwrap();
        }
        assert_eq!(stored - 1_000, target, "the device holds every change");
        assert!(in_sync, "counted {}", tally.counted.load(Ordering::Relaxed));
        assert_eq!(
            tally.failed.load(Ordering::Relaxed),
            1,
            "one failed session"
        );
    }

    /// Events lost to a lagging receiver: the count is read again then.
    #[test]
    fn events_lost_to_a_lagging_receiver_are_not_needed() {
        let tally = Tally::new(0);
        assert!(
            !tally
                .observe(Some(&progress(10, 5)), 15, || Ok(10))
                .unwrap()
        );
        assert!(tally.observe(None, 15, || Ok(15)).unwrap());
    }

    /// In sync, a device's later events read nothing (its store's lock stays its own) and it
    /// stays in sync; its failed sessions are still counted.
    #[test]
    fn a_device_in_sync_is_not_read_again() {
        let tally = Tally::new(0);
        assert!(tally.observe(None, 15, || Ok(15)).unwrap());
        let unread = || -> Result<u64> { anyhow::bail!("read after the device was in sync") };
        assert!(tally.observe(Some(&progress(20, 0)), 15, unread).unwrap());
        let closed = DeviceEvent::Closed {
            reason: CloseReason::Internal,
            detail: "the server could not complete the request".into(),
        };
        assert!(tally.observe(Some(&closed), 15, unread).unwrap());
        assert_eq!(tally.failed.load(Ordering::Relaxed), 1);
    }
}
