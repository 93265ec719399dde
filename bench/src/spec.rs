//! The workloads that Nära Sync and the baseline (samod) both run, so that a ratio compares the
//! same work. Sizes default to `../shared/WORKLOAD.md` and S8 of `../shared/SCENARIOS.md`.
//!
//! Each system's runner takes a spec and returns the common result type; `main.rs` prints one
//! JSON object per result and, with `--baseline samod`, a ratio object (ours / samod).

use serde::Serialize;

/// S8, the morning sync at base: `devices` phones each hold the team's `people` (five documents
/// each for Nära Sync; the same number of documents for the baseline), were offline overnight,
/// and each wrote a day of edits for the `visited` people it saw (`visits_per_person` visits of
/// `events_per_visit` journal events and `doses_per_visit` administrations, one commit per event).
/// Then all connect within the same moment.
#[derive(Debug, Clone, Serialize)]
pub struct MorningSpec {
    pub devices: usize,
    pub people: usize,
    pub visited: usize,
    pub visits_per_person: usize,
    pub events_per_visit: usize,
    pub doses_per_visit: usize,
    pub seed: u64,
    /// Give up (result `completed: false`) after this many seconds.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MorningResult {
    pub system: String,
    /// Where the server keeps its data: "sqlite", "postgresql" or, for samod, "filesystem".
    pub backend: String,
    /// Server processes serving the devices (round robin).
    pub nodes: usize,
    pub spec: MorningSpec,
    /// Every device holds every change of every other device for the people it holds.
    pub completed: bool,
    /// From the first connection attempt until the last device is in sync (seconds).
    pub seconds_to_all_in_sync: f64,
    /// Changes written offline (all devices) that had to reach the server and the other devices.
    pub changes_written: u64,
    /// changes_written / seconds_to_all_in_sync (uploads; each also fans out to the others).
    pub changes_per_second: f64,
    /// Peak resident memory of the server process (VmHWM), in bytes; with several nodes their
    /// sum (a PostgreSQL server's own memory is not counted).
    pub server_peak_rss_bytes: u64,
    /// Devices in sync when the run ended (== devices when completed).
    pub devices_in_sync: usize,
    /// Sync sessions the server closed because it could not complete a step
    /// (`CloseReason::Internal`), all devices, until the run ended; each costs its device a
    /// reconnect backoff. 0 for the baseline (not counted there).
    pub sessions_failed: u64,
    /// Ed25519 checks the devices made of the signatures relayed to them, all devices (each
    /// colleague's upload once: `sync_core::signing::Verifier`). 0 for the baseline.
    pub relayed_signature_checks: u64,
}

/// A device holding `docs` documents reconnects after `changed` of them changed elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct ReconnectSpec {
    pub docs: usize,
    pub changed: usize,
    pub seed: u64,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconnectResult {
    pub system: String,
    pub spec: ReconnectSpec,
    pub completed: bool,
    /// From opening the connection until the device holds all `changed` changes (seconds).
    pub seconds: f64,
    /// Bytes on the wire (TCP payload: TLS records for Nära Sync, as counted by a proxy).
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Flights counted at the proxy: runs of bytes in one direction (connection setup included).
    pub flights_up: u64,
    pub flights_down: u64,
    /// Application round trips where the system can tell (Nära Sync's protocol can; for the
    /// baseline this is derived from flights after connection setup).
    pub round_trips: u64,
    /// Sum of the raw change bytes the device lacked: the floor.
    pub missing_change_bytes: u64,
}

/// Device A writes, device B (connected to the same server) sees it: `edits` one after another.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySpec {
    pub edits: usize,
    pub seed: u64,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub system: String,
    /// Where the server keeps its data: "sqlite", "postgresql" or, for samod, "filesystem".
    pub backend: String,
    /// Server processes serving the devices (round robin).
    pub nodes: usize,
    pub spec: LatencySpec,
    pub completed: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}
