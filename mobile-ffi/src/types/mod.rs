//! FFI records and enums: separate from the core's types (which carry validated ids and are free
//! to change), each with a `From` impl. Identifiers cross as strings, times as milliseconds
//! since the Unix epoch.

mod alerts;
mod care;
mod handover;
mod person;
mod round;
mod staff;
mod sync;
#[cfg(test)]
mod tests;
mod visit;

pub use alerts::*;
pub use care::*;
pub use handover::*;
pub use person::*;
pub use round::*;
pub use staff::FfiStaffMember;
pub(crate) use staff::{name_of, named};
pub use sync::*;
pub use visit::*;

/// Converts every element.
pub(crate) fn all<T, U: From<T>>(v: Vec<T>) -> Vec<U> {
    v.into_iter().map(Into::into).collect()
}

/// A `usize` count as the FFI's `u64` (lossless on every platform Rust supports).
pub(crate) fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
