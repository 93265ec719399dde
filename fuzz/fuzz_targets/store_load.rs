//! `cargo fuzz run store_load`: see `fuzz/README.md` and `sync_core::fuzzing::store_load`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: sync_core::fuzzing::install_panic_hook(),
    |data: &[u8]| sync_core::fuzzing::store_load(data)
);
