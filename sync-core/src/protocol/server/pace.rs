//! How large a batch to one device is: sized from how fast the device took the previous ones.
//!
//! A batch is the unit of resumption: one cut short on a weak link is sent again whole, so on
//! such a link batches stay small (`ServerConfig::batch_bytes`, 32 KiB in `nara-server`, about
//! four seconds at 64 kbit/s). A phone at base on Wi-Fi takes them as fast as it can store them,
//! and there each batch costs the phone a fixed part (a commit, a pass through the document) that
//! small batches pay many times over. So the server measures each device's delivery rate from
//! its acknowledgements and sizes the next batch to what the link delivered in [`BATCH_WINDOW_MS`],
//! between that floor and `ServerConfig::batch_bytes_fast`: a cut then still loses at most about
//! four seconds of the link's work, whatever the link.
//!
//! The rate is measured as TCP's BBR measures it (delivery rate sampling): each batch remembers,
//! when it is sent, how many bytes the device had acknowledged and when the last of them was;
//! its acknowledgement gives the bytes acknowledged since over the time since. Batches that the
//! device stores together and acknowledges in one go thus count as the one delivery they were,
//! and time the link stood idle (nothing in flight) is not counted as slowness. The estimate is
//! the highest of the last [`SAMPLES`] samples: a link is as fast as it recently showed it is.
//! Time is passed in (sans-IO); a clock that steps back gives a short interval, so at worst a
//! batch of the fast size, which the protocol allows anyway.

use std::collections::{BTreeMap, VecDeque};

use crate::ids::Timestamp;

/// A batch should take about this long on the device's link (ms): what a cut loses at most.
pub const BATCH_WINDOW_MS: u64 = 4_000;
/// How many recent delivery-rate samples the estimate is the highest of.
const SAMPLES: usize = 8;
/// A link whose batches reach this many floors is fast (`Pace::fast_link`): with
/// `nara-server`'s 32 KiB floor, 32 KiB a second, four times one bar of signal.
const FAST_LINK_FLOORS: usize = 4;

/// What was true when a batch was sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    bytes: u64,
    /// Bytes the device had acknowledged on this connection when the batch was sent.
    delivered: u64,
    /// When the last of them was acknowledged, or when the link last went from idle (nothing
    /// in flight) to busy.
    since: Timestamp,
}

/// One connection's delivery-rate estimate and the batch size it gives.
#[derive(Debug, Clone)]
pub(super) struct Pace {
    floor: usize,
    ceiling: usize,
    sent: BTreeMap<u32, Sent>,
    delivered: u64,
    /// When the last acknowledgement came, or the link last went from idle to busy.
    delivered_at: Timestamp,
    /// Recent samples, bytes per second.
    rates: VecDeque<u64>,
}

impl Pace {
    /// Batches of `floor` bytes until acknowledgements show a faster link, up to `ceiling` (a
    /// ceiling at or below the floor: always the floor).
    pub(super) fn new(floor: usize, ceiling: usize) -> Self {
        Self {
            floor,
            ceiling: ceiling.max(floor),
            sent: BTreeMap::new(),
            delivered: 0,
            delivered_at: Timestamp(0),
            rates: VecDeque::with_capacity(SAMPLES),
        }
    }

    /// Target bytes of the next batch.
    pub(super) fn batch_bytes(&self) -> usize {
        let Some(rate) = self.rates.iter().max() else {
            return self.floor;
        };
        let bytes = rate.saturating_mul(BATCH_WINDOW_MS) / 1000;
        usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .clamp(self.floor, self.ceiling)
    }

    /// Whether the link has shown itself fast: batches of at least [`FAST_LINK_FLOORS`] floors.
    /// What goes to it may be compressed for the server's CPU rather than for bytes
    /// (`compress::Effort`); a weak link never is.
    pub(super) fn fast_link(&self) -> bool {
        self.floor > 0 && self.batch_bytes() >= self.floor.saturating_mul(FAST_LINK_FLOORS)
    }

    /// Batch `batch` of `bytes` bytes of changes goes out at `now`.
    pub(super) fn sent(&mut self, batch: u32, bytes: usize, now: Timestamp) {
        if self.floor == self.ceiling {
            return;
        }
        // The link was idle: the interval starts now, not at the last acknowledgement.
        if self.sent.is_empty() {
            self.delivered_at = now;
        }
        self.sent.insert(
            batch,
            Sent {
                bytes: bytes as u64,
                delivered: self.delivered,
                since: self.delivered_at,
            },
        );
    }

    /// The device acknowledged batch `batch` at `now`.
    pub(super) fn acknowledged(&mut self, batch: u32, now: Timestamp) {
        let Some(sent) = self.sent.remove(&batch) else {
            return;
        };
        self.delivered += sent.bytes;
        self.delivered_at = now;
        let ms = u64::try_from(now.0.saturating_sub(sent.since.0))
            .unwrap_or(0)
            .max(1);
        let rate = (self.delivered - sent.delivered).saturating_mul(1000) / ms;
        if self.rates.len() == SAMPLES {
            self.rates.pop_front();
        }
        self.rates.push_back(rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    /// Sends batches as the window allows and acknowledges each `service_ms` after the link
    /// is free for it (the device takes one at a time at `bytes_per_s`), returning the sizes
    /// sent.
    fn run(pace: &mut Pace, bytes_per_s: u64, batches: u32) -> Vec<usize> {
        let mut now = 1_000_000i64;
        let mut sizes = Vec::new();
        let mut in_flight: VecDeque<(u32, usize)> = VecDeque::new();
        let mut free_at = now;
        for b in 0..batches {
            let size = pace.batch_bytes();
            sizes.push(size);
            pace.sent(b, size, Timestamp(now));
            in_flight.push_back((b, size));
            if in_flight.len() == 4 {
                let (first, bytes) = in_flight.pop_front().expect("four in flight");
                let done = free_at.max(now) + (bytes as u64 * 1000 / bytes_per_s) as i64;
                free_at = done;
                now = done;
                pace.acknowledged(first, Timestamp(now));
            }
        }
        sizes
    }

    #[test]
    fn a_weak_link_keeps_the_floor() {
        // 64 kbit/s: 8,000 bytes a second; four seconds of it is below 32 KiB.
        let mut pace = Pace::new(32 * KIB, 256 * KIB);
        let sizes = run(&mut pace, 8_000, 40);
        assert!(sizes.iter().all(|&s| s == 32 * KIB), "{sizes:?}");
    }

    #[test]
    fn a_fast_link_grows_to_the_ceiling_and_a_middling_one_to_four_seconds_of_it() {
        let mut pace = Pace::new(32 * KIB, 256 * KIB);
        let sizes = run(&mut pace, 10_000_000, 40);
        assert_eq!(sizes[0], 32 * KIB);
        assert_eq!(*sizes.last().expect("sizes"), 256 * KIB, "{sizes:?}");

        // 20,000 bytes a second: about 80,000 bytes in four seconds.
        let mut pace = Pace::new(32 * KIB, 256 * KIB);
        let last = *run(&mut pace, 20_000, 40).last().expect("sizes");
        assert!((78_000..=82_000).contains(&last), "{last}");
    }

    #[test]
    fn batches_acknowledged_together_count_as_one_delivery() {
        // Four batches of 32 KiB sent at once, stored together and acknowledged in one go two
        // seconds later: 64 KiB a second, not four deliveries in no time at all.
        let mut pace = Pace::new(32 * KIB, 256 * KIB);
        for b in 0..4 {
            pace.sent(b, 32 * KIB, Timestamp(0));
        }
        for b in 0..4 {
            pace.acknowledged(b, Timestamp(2_000));
        }
        assert_eq!(pace.batch_bytes(), 256 * KIB);
        let mut pace = Pace::new(32 * KIB, 1024 * KIB);
        for b in 0..4 {
            pace.sent(b, 32 * KIB, Timestamp(0));
        }
        for b in 0..4 {
            pace.acknowledged(b, Timestamp(2_000));
        }
        assert_eq!(pace.batch_bytes(), 4 * 64 * KIB);
    }

    #[test]
    fn a_link_is_fast_from_four_floors_a_window_and_never_before_it_is_measured() {
        let fast_after = |bytes_per_s: u64| {
            let mut pace = Pace::new(32 * KIB, 256 * KIB);
            assert!(!pace.fast_link());
            run(&mut pace, bytes_per_s, 40);
            pace.fast_link()
        };
        // One bar of signal (64 kbit/s) and twice it: weak.
        assert!(!fast_after(8_000));
        assert!(!fast_after(16_000));
        // 32 KiB a second and up: fast.
        assert!(fast_after(34_000));
        assert!(fast_after(10_000_000));
        // A ceiling below four floors: never.
        let mut pace = Pace::new(32 * KIB, 64 * KIB);
        run(&mut pace, 10_000_000, 40);
        assert!(!pace.fast_link());
    }

    #[test]
    fn time_the_link_stood_idle_is_not_slowness() {
        let mut pace = Pace::new(32 * KIB, 256 * KIB);
        pace.sent(0, 32 * KIB, Timestamp(0));
        pace.acknowledged(0, Timestamp(100));
        // Nothing to send for a minute, then one batch, taken as fast as the first.
        pace.sent(1, 32 * KIB, Timestamp(60_100));
        pace.acknowledged(1, Timestamp(60_200));
        assert_eq!(pace.rates.back(), Some(&(32 * KIB as u64 * 10)));
    }

    #[test]
    fn without_a_ceiling_above_the_floor_nothing_is_measured() {
        let mut pace = Pace::new(600, 600);
        pace.sent(0, 600, Timestamp(0));
        pace.acknowledged(0, Timestamp(1));
        assert_eq!(pace.batch_bytes(), 600);
        assert!(pace.sent.is_empty() && pace.rates.is_empty());
        // Nor a ceiling below it.
        assert_eq!(Pace::new(600, 1).batch_bytes(), 600);
    }

    #[test]
    fn an_acknowledgement_of_a_batch_not_sent_or_from_the_past_is_harmless() {
        let mut pace = Pace::new(32 * KIB, 256 * KIB);
        pace.acknowledged(7, Timestamp(5));
        assert_eq!(pace.batch_bytes(), 32 * KIB);
        // A clock that steps back: the shortest interval, at most the ceiling.
        pace.sent(0, 32 * KIB, Timestamp(10_000));
        pace.acknowledged(0, Timestamp(9_000));
        assert_eq!(pace.batch_bytes(), 256 * KIB);
    }
}
