//! `cargo fuzz run ingest`: see `fuzz/README.md` and `sync_core::fuzzing::ingest`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: sync_core::fuzzing::install_panic_hook(),
    |data: &[u8]| sync_core::fuzzing::ingest(data)
);
