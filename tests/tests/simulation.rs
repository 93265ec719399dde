//! Deterministic simulation of devices and a server running the real protocol over faulty
//! links (see `nara_tests::sim`). `SIM_SEEDS=N` runs N seeds (default 500); `SIM_SEED=S` runs
//! one. A failing seed prints itself; add it to `REGRESSIONS` so it runs first, forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nara_tests::sim::{SimConfig, World};

/// Seeds that once failed.
const REGRESSIONS: &[u64] = &[3, 68, 2397];

fn run(seed: u64) {
    let result = std::panic::catch_unwind(|| World::run(seed, SimConfig::default()));
    if let Err(e) = result {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("simulation failed: SIM_SEED={seed}\n{msg}");
    }
}

#[test]
fn simulated_devices_and_server_converge_under_faults() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return run(seed);
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    for &seed in REGRESSIONS {
        run(seed);
    }
    for seed in 0..seeds {
        run(seed);
    }
}

#[test]
fn a_run_is_reproducible_from_its_seed() {
    let a = World::run(42, SimConfig::default());
    let b = World::run(42, SimConfig::default());
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(a.edits > 0 && a.connections > 0 && a.messages > 0, "{a:?}");
}
