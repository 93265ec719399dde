//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the stable-toolchain
//! harness in `tests/tests/fuzz_harness.rs`. Built only with the `fuzzing` feature.
//!
//! - [`wire`]: bytes as a message in either direction; decoded messages must re-encode to bytes
//!   that decode to the same message; the bytes are also fed to both session state machines.
//! - [`ingest`]: bytes as foreign Automerge changes (raw, a mutated valid change, or a change
//!   forged through Automerge's API), run through the server's upload path and through
//!   [`Repo::apply_changes`] on a small deterministic record. A refused change leaves the
//!   document as it was; an accepted one survives a reload from the store, which validates.
//! - [`store_load`]: bytes as a stored snapshot or change row (or edits to valid ones) in a real
//!   SQLite store in a temporary file; opening and loading gives a document that validates or a
//!   typed error naming the document, and every other document still loads.
//!
//! Each entry point panics only when an invariant is broken, which is a bug. [`seeds`] gives
//! valid inputs built from real messages, changes and stored documents.
//!
//! An execution starts from state prepared once per process (`prepared`): the fixture's
//! documents loaded in a repo, a server session already serving them, the fixture stores as read
//! back. It clones or deep-copies that state instead of loading the documents again, and compares
//! against a prepared document only when the bytes it would load are the prepared ones.

// The fixtures below are constant (they cannot fail on any input), and an entry point panics on
// purpose when an invariant breaks: that is how a fuzzer learns of a bug.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod fixtures;
mod ingest;
mod prepared;
mod reader;
mod seeds;
mod store_load;
mod wire;

pub use ingest::ingest;
pub use seeds::{Seeds, documents, seeds};
pub use store_load::store_load;
pub use wire::wire;

/// For cargo-fuzz targets (call it in `init`): libFuzzer's panic hook aborts on every panic,
/// even one that `sync-core` catches (Automerge's asserts on malformed input, see
/// `model::panic_guard`). This hook lets a panic raised while the guard runs (in Automerge, or
/// in the standard library Automerge called: a sort told its order is not total) unwind
/// quietly to the guard's `catch_unwind`, as it does in production; any other panic (an
/// invariant of an entry point) prints and aborts, so libFuzzer records the crash. An
/// Automerge panic raised outside the guard aborts too (it would reach the top in
/// production); replay the input with the harness to see its message.
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !crate::model::panic_guard::inside() {
            default_hook(info);
            std::process::abort();
        }
    }));
}
