//! What a care worker's app does with a person's record: write notes, observations and
//! administrations, write and resolve medication orders, edit goals, acknowledge flags, and
//! read it all back. Thin on purpose: the rules (who may write what, validation, conflicts,
//! flags) are `sync-core`'s model; this module only picks the document, the ids and the
//! current revisions, and shapes what is read into serialisable views.
//!
//! Time comes in as a [`Clock`]: the instant, and the local date that decides which monthly
//! document a journal entry goes in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use serde::Serialize;
use sync_core::model::{
    Acknowledgement, AdministrationOutcome, Chart, Conflict, Event, EventBody, Flag, GoalStatus,
    MedicationOrder, ObservationCode, Register, RegisterState, RegisterValue, RevisionView,
    SlotStatus, TextKey,
};
use sync_core::protocol::DeviceSession;
use sync_core::repo::Repo;
use sync_core::store::SqliteStore;
use sync_core::{Author, DocKind, DocumentId, Month, PatientId, RecordId, Timestamp};

use crate::device::Device;
use crate::error::{ClientError, Result};

mod alerts;
mod corrections;
mod delegations;
mod goals;
mod handover;
mod journal;
mod medication;
mod overview;
mod person;
mod round;
mod seen;
mod views;
mod visit;

pub use alerts::*;
pub use corrections::*;
pub use delegations::{
    DelegationInput, DelegationShown, delegate, list as delegations, revoke_delegation,
};
pub use goals::*;
pub use handover::*;
pub use journal::*;
pub use medication::*;
pub use overview::*;
pub use person::*;
pub use round::*;
pub use views::*;
pub use visit::*;

/// The time of an edit: the instant, and today's local date (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub now: Timestamp,
    pub today: String,
}

impl Clock {
    pub fn new(now: Timestamp, today: impl Into<String>) -> Result<Self> {
        let today = today.into();
        month_of(&today)?;
        if today.len() != 10 {
            return Err(ClientError::Invalid(format!(
                "bad date {today:?}: expected YYYY-MM-DD"
            )));
        }
        Ok(Self { now, today })
    }

    /// The current month, whose journal takes today's entries.
    pub fn month(&self) -> Result<Month> {
        month_of(&self.today)
    }

    /// A fresh record id for a record written now ([`id_at`]).
    pub fn new_id(&self) -> RecordId {
        id_at(self.now)
    }
}

/// The month of a `YYYY-MM-DD` date or a `YYYY-MM-DDTHH:MM` slot.
fn month_of(s: &str) -> Result<Month> {
    s.get(..7)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| ClientError::Invalid(format!("bad date {s:?}: expected YYYY-MM-DD")))
}

/// A fresh record id for a record written now by this device's clock (see [`id_at`]).
pub fn new_id() -> Result<RecordId> {
    Ok(id_at(crate::device::now()))
}

/// A fresh record id for a record written at `now` ([`RecordId::countdown`]: later ones sort
/// first, which keeps Automerge's apply from walking the whole document).
pub fn id_at(now: Timestamp) -> RecordId {
    RecordId::countdown(now, next_random_part())
}

/// The 64 bits that keep this process's ids unique: drawn at random once per process, then
/// counted down by one per id (so that of two ids of one instant the later sorts first too).
/// Within the process the count alone keeps them apart; two processes (two phones, a phone
/// and a copy of its store, one app started twice) draw their own starting points at random
/// among 2^64, and their ids meet only if their counts overlap and they also fall in the same
/// millisecond. Counted rather than drawn per id for the weak link: ids of one device's day
/// then share all but their last digits, which compression takes almost whole, where 16 fresh
/// random digits per record cost about 8 bytes that cannot be compressed (`nara-bench
/// slowlink`: 24.1 KB up with a fresh draw per id, 19.8 KB counted; BENCHMARKS.md).
fn next_random_part() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| rand::rng().random());
    start.wrapping_sub(COUNT.fetch_add(1, Ordering::Relaxed))
}

/// A written record and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub document: DocumentId,
    pub record: RecordId,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_27_hex_digits_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.as_str().len(), 27);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let (c, d) = (id_at(Timestamp(5)), id_at(Timestamp(5)));
        assert_ne!(c, d, "ids of one instant differ by their random part");
    }

    /// Ids of one process share their random start and count down from it: of two ids of
    /// one instant the later sorts first, and they differ only in their last digits (what
    /// compression on the weak link takes almost whole).
    #[test]
    fn ids_of_one_instant_count_down() {
        let at = Timestamp(1_795_000_000_000);
        let ids: Vec<RecordId> = (0..64).map(|_| id_at(at)).collect();
        for pair in ids.windows(2) {
            let random = |id: &RecordId| u64::from_str_radix(&id.as_str()[11..], 16).unwrap();
            let (a, b) = (random(&pair[0]), random(&pair[1]));
            // Other tests of this process take ids meanwhile: down by at least one, and by
            // few (not a fresh draw), unless the count wrapped past zero.
            let step = a.wrapping_sub(b);
            assert!((1..1 << 20).contains(&step), "{} then {}", pair[0], pair[1]);
            assert!(pair[1] < pair[0] || b > a, "{} then {}", pair[0], pair[1]);
        }
    }

    /// The app's ids are sync-core's countdown ids: a later one sorts first.
    #[test]
    fn the_app_writes_countdown_ids() {
        let earlier = id_at(Timestamp(1_795_000_000_000));
        let later = Clock::new(Timestamp(1_795_000_000_001), "2026-11-18")
            .unwrap()
            .new_id();
        assert!(later < earlier);
        // The device's own clock: any day after 2020 sorts before this one.
        let long_ago = id_at(Timestamp(1_600_000_000_000));
        assert!(new_id().unwrap() < long_ago);
    }

    #[test]
    fn clock_months() {
        let c = Clock::new(Timestamp(0), "2026-11-24").unwrap();
        assert_eq!(c.month().unwrap().to_string(), "2026-11");
        assert!(Clock::new(Timestamp(0), "2026-1").is_err());
    }
}
