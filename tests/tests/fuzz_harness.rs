//! The fuzz entry points of `sync_core::fuzzing` on the stable toolchain, in CI:
//!
//! - every file under `fuzz/regressions/<target>/` (crashers found by cargo-fuzz, and other
//!   interesting inputs) is replayed through its entry point;
//! - a seeded mutation harness (bit flips, byte changes, truncation, insertions, splices of valid
//!   messages, changes and stored documents) runs each entry point on `FUZZ_CASES` inputs
//!   (default 1,500 each; `FUZZ_SEED` picks another sequence).
//!
//! An entry point panics only when an invariant is broken. A failing input is written to the
//! temporary directory, with the command to keep it as a regression.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::fuzzing;

type Target = fn(&[u8]);

const DEFAULT_CASES: usize = 1_500;
const DEFAULT_SEED: u64 = 0x6e61_7261;

fn regressions(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target)
}

/// Runs `f` on `input`; on a panic, saves the input and returns where.
fn run(target: &str, f: Target, input: &[u8]) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(()) => Ok(()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let name = format!(
                "{target}-{:016x}",
                input
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b))
                        .wrapping_mul(0x100_0000_01b3))
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, input).unwrap();
            Err(format!(
                "{target}: {msg}\n  input saved: {} (keep it: cp it to fuzz/regressions/{target}/)",
                path.display()
            ))
        }
    }
}

fn replay(target: &str, f: Target) -> usize {
    let dir = regressions(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for file in &files {
        let input = std::fs::read(file).unwrap();
        if let Err(e) = run(target, f, &input) {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "regressions fail:\n{}",
        failures.join("\n")
    );
    files.len()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One mutation of `input`, sometimes mixing in another corpus entry.
fn mutate(rng: &mut ChaCha8Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = input.len();
    match rng.random_range(0..7) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = *[0u8, 1, 0x7f, 0x80, 0xff]
                .get(rng.random_range(0..6))
                .unwrap_or(&rng.random());
        }
        2 => input.truncate(rng.random_range(0..=len)),
        3 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            input.splice(at..at, bytes);
        }
        4 if len > 1 => {
            // Remove a range.
            let a = rng.random_range(0..len);
            let b = rng.random_range(a..=len.min(a + 64));
            input.drain(a..b);
        }
        5 => {
            // Splice: this input's head, another's tail.
            let other = &corpus[rng.random_range(0..corpus.len())];
            let cut = rng.random_range(0..=len);
            let from = rng.random_range(0..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ if len > 2 => {
            // Copy a chunk of the input elsewhere in it.
            let a = rng.random_range(0..len);
            let b = rng.random_range(a..=len.min(a + 32));
            let chunk = input[a..b].to_vec();
            let at = rng.random_range(0..=len);
            input.splice(at..at, chunk);
        }
        _ => input.push(rng.random()),
    }
}

fn mutation_harness(target: &str, f: Target, seeds: Vec<Vec<u8>>) {
    let cases = env_number("FUZZ_CASES", DEFAULT_CASES as u64) as usize;
    let seed = env_number("FUZZ_SEED", DEFAULT_SEED);
    let mut corpus = seeds;
    let dir = regressions(target);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            corpus.push(std::fs::read(path).unwrap());
        }
    }
    assert!(!corpus.is_empty(), "{target}: no seeds");
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ target.len() as u64);
    let mut failures = Vec::new();
    // Every seed as it is: valid inputs must pass the invariants too.
    for input in &corpus {
        if let Err(e) = run(target, f, input) {
            failures.push(e);
        }
    }
    for _ in 0..cases {
        let mut input = corpus[rng.random_range(0..corpus.len())].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut rng, &mut input, &corpus);
        }
        if let Err(e) = run(target, f, &input) {
            failures.push(e);
            if failures.len() >= 5 {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{target} (FUZZ_SEED={seed}): {} failing inputs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn wire_regressions_and_mutations() {
    replay("wire", fuzzing::wire);
    mutation_harness("wire", fuzzing::wire, fuzzing::seeds().wire);
}

#[test]
fn ingest_regressions_and_mutations() {
    replay("ingest", fuzzing::ingest);
    mutation_harness("ingest", fuzzing::ingest, fuzzing::seeds().ingest);
}

#[test]
fn store_load_regressions_and_mutations() {
    replay("store_load", fuzzing::store_load);
    mutation_harness(
        "store_load",
        fuzzing::store_load,
        fuzzing::seeds().store_load,
    );
}

/// The seeds are real: valid messages decode, valid changes parse and name their author, valid
/// stored documents load (so the harness mutates meaningful inputs, not noise).
#[test]
fn seeds_are_valid_inputs() {
    use sync_core::model::{CareDocument, ChangeMessage};
    use sync_core::protocol::wire::{DeviceMessage, ServerMessage, decode};
    let seeds = fuzzing::seeds();
    let docs = fuzzing::documents();
    assert!(seeds.wire.len() >= 12);
    for bytes in &seeds.wire {
        let device = decode::<DeviceMessage>(bytes);
        let server = decode::<ServerMessage>(bytes);
        assert!(
            device.is_ok() != server.is_ok(),
            "a wire seed decodes one way"
        );
    }
    let raw: Vec<&Vec<u8>> = seeds.ingest.iter().filter(|s| s[0] == 0).collect();
    assert!(raw.len() >= 10);
    for seed in raw {
        let change = automerge::Change::from_bytes(seed[3..].to_vec()).unwrap();
        let message: ChangeMessage = serde_json::from_str(change.message().unwrap()).unwrap();
        assert_eq!(*change.actor_id(), message.author.actor_id());
    }
    let snapshots: Vec<&Vec<u8>> = seeds.store_load.iter().filter(|s| s[0] == 0).collect();
    assert_eq!(snapshots.len(), docs.len());
    for seed in snapshots {
        let id = docs[seed[1] as usize].clone();
        let doc = CareDocument::load(id, Some(&seed[2..]), &[]).unwrap();
        assert!(!doc.revisions().is_empty() || !doc.events().is_empty());
    }
}
