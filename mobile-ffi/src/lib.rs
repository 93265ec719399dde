//! UniFFI bindings of `sync-core` for Kotlin and Swift.
//!
//! Empty on purpose until the device runtime exists (issue #5): exported objects will be thin
//! wrappers that forward to `sync-core`, with FFI records and one flat error type. This crate
//! must never hold sync or model logic of its own.
