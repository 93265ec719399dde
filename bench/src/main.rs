//! `nara-bench`: measurements of Nära Sync as JSON (never test assertions). Each workload
//! prints one JSON object per result line with `--json`.
//!
//! ```text
//! nara-bench device [--people 200] [--days 30] [--writes 1000] [--seed 1] [--json]   (alias: store)
//! nara-bench reconnect [--transport memory|tls] [--docs 1000] [--changed 5] [--baseline samod] [--json]
//! nara-bench morning [--devices 30] [--people 40] [--visited 10] [--quick] [--baseline samod] [--json]
//!                    [--database URL] [--nodes N] [--compare-backends]
//! nara-bench latency [--edits 1000] [--quick] [--baseline samod] [--json]
//!                    [--database URL] [--nodes N] [--compare-backends]
//! nara-bench idle [--devices 10000] [--quick] [--json]
//! nara-bench recovery [--docs 1000] [--changed-percent 5] [--json]
//! nara-bench slowlink [--people 10] [--per-event] [--plain] [--upload-kib 32] [--no-early-frames] [--quick] [--json]
//! ```

/// The allocator every binary of the workspace runs on (`server/src/main.rs` says why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backends;
mod idle;
mod latency;
#[allow(dead_code)] // shared with the samod baseline
mod meter;
mod morning;
mod morning_check;
mod nodes;
#[allow(dead_code)]
mod procs;
mod reconnect;
mod recovery;
mod samod_baseline;
mod slowlink;
mod spec;
mod stats;
mod store_bench;
mod team;
mod workload;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "nara-bench", about = "Nära Sync measurements")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    /// samod 0.16 (the Rust automerge-repo): its axum server and its client.
    Samod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// The protocol state machines and SQLite stores over an in-process link (no sockets).
    Memory,
    /// The real nara-server process and a real device over TLS WebSockets.
    Tls,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A device's store of N people's month of home care (in a temporary directory): opening
    /// it, loading one person, and local durable writes (p50, p99).
    #[command(alias = "store")]
    Device {
        /// People in the store, five documents each.
        #[arg(long, default_value_t = 200)]
        people: usize,
        /// Days of visits and doses (1-30, all in 2026-11).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=30))]
        days: u32,
        /// Timed local writes (one note each).
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        /// Seed of the generated data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How often to time opening the store.
        #[arg(long, default_value_t = 20)]
        open_repeats: usize,
        /// Directory to create the temporary store in (default: the system's temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print one JSON object on stdout instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// A device holding DOCS documents reconnects after CHANGED of them changed elsewhere:
    /// time, bytes and round trips of the catch-up.
    Reconnect {
        #[arg(long, default_value_t = 1000)]
        docs: usize,
        #[arg(long, default_value_t = 5)]
        changed: usize,
        /// memory: in-process link (messages and bytes of the protocol itself); tls: the real
        /// server process and device runtime over TLS, counted at a TCP proxy.
        #[arg(long, value_enum, default_value_t = Transport::Memory)]
        transport: Transport,
        /// (memory only) Where the changes are: on the server (the device lacks them) or on
        /// the device.
        #[arg(long, value_enum, default_value_t = reconnect::Side::Server)]
        side: reconnect::Side,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Also run the same spec on a baseline (implies --transport tls) and print ratios.
        #[arg(long, value_enum)]
        baseline: Option<Baseline>,
        #[arg(long)]
        json: bool,
    },
    /// A device holding DOCS documents reconnects to a server restored from a backup taken
    /// before CHANGED_PERCENT of them changed on the device: the recovery's messages, bytes,
    /// audit records and seconds, beside a fresh device's full sync and the version-1 fallback.
    Recovery {
        #[arg(long, default_value_t = 1000)]
        docs: usize,
        #[arg(long, default_value_t = 5)]
        changed_percent: usize,
        #[arg(long)]
        json: bool,
    },
    /// S8, the morning sync at base: DEVICES phones (each its own carer, all holding the team's
    /// PEOPLE) wrote a day offline for VISITED people each, then all connect at once: time until
    /// all are in sync, throughput, server peak RSS.
    Morning {
        #[arg(long, default_value_t = 30)]
        devices: usize,
        #[arg(long, default_value_t = 40)]
        people: usize,
        /// People each worker visited (WORKLOAD.md: 6-15 in a shift).
        #[arg(long, default_value_t = 10)]
        visited: usize,
        /// Visits by each worker to each person visited. One: with 30 workers visiting 10 of 40
        /// people each, a person already gets 7.5 visits a day (WORKLOAD.md: 3-6).
        #[arg(long, default_value_t = 1)]
        visits: usize,
        /// Journal events per visit.
        #[arg(long, default_value_t = 7)]
        events: usize,
        /// Administrations per visit.
        #[arg(long, default_value_t = 4)]
        doses: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// A small run for iterating: 5 devices, 10 people, 3 visited, 2 visits.
        #[arg(long)]
        quick: bool,
        #[arg(long, value_enum)]
        baseline: Option<Baseline>,
        /// Run the server on PostgreSQL instead of SQLite files: each run gets a new database
        /// on the cluster this names (`CREATE DATABASE nara_bench_<pid>_<n>`, so the user needs
        /// CREATEDB), dropped when the run ends. A postgres:// URL or libpq key=value pairs;
        /// no TLS (a Unix socket or a local port).
        #[arg(long)]
        database: Option<String>,
        /// Server processes on the one --database, each with its own listener and data
        /// directory; the devices are spread over them round robin.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
        nodes: u64,
        /// SQLite with one node, PostgreSQL with one node, PostgreSQL with --nodes nodes (3
        /// when --nodes is 1) and samod, one after another, then their ratios (needs
        /// --database).
        #[arg(long, requires = "database", conflicts_with = "baseline")]
        compare_backends: bool,
        #[arg(long)]
        json: bool,
    },
    /// Device A writes, device B (both connected to the server) sees it: EDITS one after
    /// another, p50 and p99 from A's local write to B's runtime reporting the change.
    Latency {
        #[arg(long, default_value_t = 1000)]
        edits: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// 100 edits.
        #[arg(long)]
        quick: bool,
        #[arg(long, value_enum)]
        baseline: Option<Baseline>,
        /// Run the server on PostgreSQL instead of SQLite files: each run gets a new database
        /// on the cluster this names (`CREATE DATABASE nara_bench_<pid>_<n>`, so the user needs
        /// CREATEDB), dropped when the run ends. A postgres:// URL or libpq key=value pairs;
        /// no TLS (a Unix socket or a local port).
        #[arg(long)]
        database: Option<String>,
        /// Server processes on the one --database, each with its own listener and data
        /// directory; the devices are spread over them round robin.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
        nodes: u64,
        /// SQLite with one node, PostgreSQL with one node, PostgreSQL with --nodes nodes (3
        /// when --nodes is 1) and samod, one after another, then their ratios (needs
        /// --database).
        #[arg(long, requires = "database", conflicts_with = "baseline")]
        compare_backends: bool,
        #[arg(long)]
        json: bool,
    },
    /// One worker's day (PEOPLE visited) uploaded over a bad mobile link: 64 kbit/s, 500 ms
    /// round trip, 5% loss; seconds and bytes against the floors of LIMITS.md.
    Slowlink {
        #[arg(long, default_value_t = 10)]
        people: usize,
        #[arg(long, default_value_t = 4)]
        visits: usize,
        #[arg(long, default_value_t = 7)]
        events: usize,
        #[arg(long, default_value_t = 4)]
        doses: usize,
        #[arg(long, default_value_t = 64_000)]
        bits_per_second: usize,
        #[arg(long, default_value_t = 500)]
        round_trip_ms: u64,
        #[arg(long, default_value_t = 5)]
        loss_percent: u32,
        /// The wait one lost segment costs (a retransmission timeout).
        #[arg(long, default_value_t = 700)]
        loss_stall_ms: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// 2 people.
        #[arg(long)]
        quick: bool,
        /// One commit per event (the app's shape before issue 13), instead of a visit's
        /// records saved together.
        #[arg(long)]
        per_event: bool,
        /// Plain frames (no compression), as before issue 13.
        #[arg(long)]
        plain: bool,
        /// Target KiB of changes per upload (each acknowledged on its own).
        #[arg(long, default_value_t = 32)]
        upload_kib: usize,
        /// Wait for the WebSocket upgrade's answer before the hello (as before early frames).
        #[arg(long)]
        no_early_frames: bool,
        #[arg(long)]
        json: bool,
    },
    /// DEVICES authenticated, idle sync sessions held open to the server: its resident memory.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Connections opening at once.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Seconds all stay connected and idle before the server's memory is read.
        #[arg(long, default_value_t = 5)]
        idle_secs: u64,
        /// Connections counted through a proxy (bytes per connection).
        #[arg(long, default_value_t = 100)]
        sampled: usize,
        /// 500 devices.
        #[arg(long)]
        quick: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Prints one result: a JSON line, or pretty JSON for people.
fn emit(value: &impl Serialize, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

/// ours / theirs, or null when theirs is zero (or either is missing).
fn ratio(ours: f64, theirs: f64) -> serde_json::Value {
    if theirs > 0.0 && ours.is_finite() && theirs.is_finite() {
        serde_json::json!(stats::round3(ours / theirs))
    } else {
        serde_json::Value::Null
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Device {
            people,
            days,
            writes,
            seed,
            open_repeats,
            dir,
            json,
        } => {
            let params = store_bench::Params {
                people,
                days,
                writes,
                seed,
                open_repeats,
                dir,
            };
            let result = store_bench::run(&params)?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                print!("{}", store_bench::summary(&result));
            }
        }
        Command::Reconnect {
            docs,
            changed,
            transport,
            side,
            seed,
            timeout,
            baseline,
            json,
        } => {
            if transport == Transport::Memory && baseline.is_none() {
                let result = reconnect::run(&reconnect::Params {
                    docs,
                    changed,
                    side,
                })?;
                return emit(&result, json);
            }
            let spec = spec::ReconnectSpec {
                docs,
                changed,
                seed,
                timeout_secs: timeout,
            };
            let rt = runtime()?;
            let ours = rt.block_on(reconnect::run_tls(&spec))?;
            emit(&ours, json)?;
            if baseline == Some(Baseline::Samod) {
                let theirs = rt.block_on(samod_baseline::reconnect(&spec))?;
                emit(&theirs, json)?;
                let bytes = |r: &spec::ReconnectResult| (r.bytes_up + r.bytes_down) as f64;
                emit(
                    &serde_json::json!({
                        "workload": "reconnect",
                        "ratio": "ours/samod",
                        "completed": [ours.completed, theirs.completed],
                        "bytes": ratio(bytes(&ours), bytes(&theirs)),
                        "seconds": ratio(ours.seconds, theirs.seconds),
                        "round_trips": ratio(ours.round_trips as f64, theirs.round_trips as f64),
                    }),
                    json,
                )?;
            }
        }
        Command::Recovery {
            docs,
            changed_percent,
            json,
        } => {
            let result = recovery::run(&recovery::Params {
                docs,
                changed_percent,
            })?;
            emit(&result, json)?;
        }
        Command::Morning {
            devices,
            people,
            visited,
            visits,
            events,
            doses,
            seed,
            timeout,
            quick,
            baseline,
            database,
            nodes,
            compare_backends,
            json,
        } => {
            let nodes = nodes as usize;
            let spec = if quick {
                spec::MorningSpec {
                    devices: 5,
                    people: 10,
                    visited: 3,
                    visits_per_person: 2,
                    events_per_visit: events,
                    doses_per_visit: doses,
                    seed,
                    timeout_secs: timeout,
                }
            } else {
                spec::MorningSpec {
                    devices,
                    people,
                    visited,
                    visits_per_person: visits,
                    events_per_visit: events,
                    doses_per_visit: doses,
                    seed,
                    timeout_secs: timeout,
                }
            };
            if let (true, Some(cluster)) = (compare_backends, &database) {
                return backends::compare_morning(
                    &spec,
                    cluster,
                    if nodes > 1 { nodes } else { 3 },
                    json,
                );
            }
            let ours = backends::morning_on(&spec, database.as_deref(), nodes)?;
            emit(&ours, json)?;
            let rt = runtime()?;
            if baseline == Some(Baseline::Samod) {
                let theirs = rt.block_on(samod_baseline::morning(&spec))?;
                emit(&theirs, json)?;
                emit(
                    &serde_json::json!({
                        "workload": "morning",
                        "ratio": "ours/samod",
                        "completed": [ours.completed, theirs.completed],
                        "seconds": ratio(ours.seconds_to_all_in_sync, theirs.seconds_to_all_in_sync),
                        "throughput": ratio(ours.changes_per_second, theirs.changes_per_second),
                        "server_peak_rss": ratio(
                            ours.server_peak_rss_bytes as f64,
                            theirs.server_peak_rss_bytes as f64,
                        ),
                    }),
                    json,
                )?;
            }
        }
        Command::Latency {
            edits,
            seed,
            timeout,
            quick,
            baseline,
            database,
            nodes,
            compare_backends,
            json,
        } => {
            let nodes = nodes as usize;
            let spec = spec::LatencySpec {
                edits: if quick { 100 } else { edits },
                seed,
                timeout_secs: timeout,
            };
            if let (true, Some(cluster)) = (compare_backends, &database) {
                return backends::compare_latency(
                    &spec,
                    cluster,
                    if nodes > 1 { nodes } else { 3 },
                    json,
                );
            }
            let ours = backends::latency_on(&spec, database.as_deref(), nodes)?;
            emit(&ours, json)?;
            let rt = runtime()?;
            if baseline == Some(Baseline::Samod) {
                let theirs = rt.block_on(samod_baseline::latency(&spec))?;
                emit(&theirs, json)?;
                emit(
                    &serde_json::json!({
                        "workload": "latency",
                        "ratio": "ours/samod",
                        "completed": [ours.completed, theirs.completed],
                        "p50": ratio(ours.p50_ms, theirs.p50_ms),
                        "p99": ratio(ours.p99_ms, theirs.p99_ms),
                        "max": ratio(ours.max_ms, theirs.max_ms),
                    }),
                    json,
                )?;
            }
        }
        Command::Idle {
            devices,
            parallel,
            idle_secs,
            sampled,
            quick,
            json,
        } => {
            let params = idle::Params {
                devices: if quick { 500 } else { devices },
                parallel,
                idle_secs,
                sampled,
            };
            let result = runtime()?.block_on(idle::run(&params))?;
            emit(&result, json)?;
        }
        Command::Slowlink {
            people,
            visits,
            events,
            doses,
            bits_per_second,
            round_trip_ms,
            loss_percent,
            loss_stall_ms,
            seed,
            timeout,
            quick,
            per_event,
            plain,
            upload_kib,
            no_early_frames,
            json,
        } => {
            let params = slowlink::Params {
                per_event,
                plain,
                upload_kib,
                early_frames: !no_early_frames,
                people: if quick { 2 } else { people },
                visits_per_person: visits,
                events_per_visit: events,
                doses_per_visit: doses,
                bits_per_second,
                round_trip_ms,
                loss_percent,
                loss_stall_ms,
                seed,
                timeout_secs: timeout,
            };
            let result = runtime()?.block_on(slowlink::run(&params))?;
            emit(&result, json)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn morning_and_latency_take_database_and_nodes() {
        for workload in ["morning", "latency"] {
            let cli = Cli::try_parse_from([
                "nara-bench",
                workload,
                "--database",
                "host=/tmp dbname=postgres",
                "--nodes",
                "3",
                "--compare-backends",
            ])
            .unwrap();
            match cli.command {
                Command::Morning {
                    database,
                    nodes,
                    compare_backends,
                    ..
                }
                | Command::Latency {
                    database,
                    nodes,
                    compare_backends,
                    ..
                } => {
                    assert_eq!(database.as_deref(), Some("host=/tmp dbname=postgres"));
                    assert_eq!(nodes, 3);
                    assert!(compare_backends);
                }
                other => panic!("parsed as {other:?}"),
            }
            // Comparing needs a database; no nodes is no server.
            assert!(Cli::try_parse_from(["nara-bench", workload, "--compare-backends"]).is_err());
            assert!(Cli::try_parse_from(["nara-bench", workload, "--nodes", "0"]).is_err());
        }
    }
}
