//! The clinical document model: what a person's record holds, how it merges, and who may
//! write what. Pure: no IO, no clock, no randomness; time and ids are arguments.

pub mod admit;
pub mod alerts;
pub mod chart;
pub mod corrections;
pub mod delegation;
pub mod document;
pub mod dose;
pub mod handover;
pub(crate) mod panic_guard;
pub mod person;
pub mod prn;
pub mod records;
pub mod round;

pub use chart::{Acknowledgement, Chart, Flag, FlagKind, SlotStatus};
pub use document::{
    ApplyOutcome, CareDocument, ChangeMessage, Conflict, Edit, HistoryEntry, LocalChange,
    RegisterState, RevisionView, genesis_hash,
};
pub use records::*;
