//! The clinical document model: what a person's record holds, how it merges, and who may
//! write what. Pure: no IO, no clock, no randomness; time and ids are arguments.

pub mod admit;
pub mod chart;
pub mod document;
pub mod person;
pub mod records;

pub use chart::{Acknowledgement, Chart, Flag, FlagKind, SlotStatus};
pub use document::{
    ApplyOutcome, CareDocument, ChangeMessage, Conflict, Edit, HistoryEntry, LocalChange,
    RegisterState, RevisionView, genesis_hash,
};
pub use records::*;
