//! `nara-bench`: measurements of Nära Sync as JSON (never test assertions).
//!
//! ```text
//! nara-bench store [--people 200] [--days 30] [--writes 1000] [--seed 1] [--json]
//! nara-bench reconnect [--docs 1000] [--changed 5] [--side server|device] [--json]
//! ```

mod reconnect;
#[allow(dead_code)] // used by the morning/reconnect/latency runners as they land
mod spec;
mod stats;
mod store_bench;
mod workload;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "nara-bench", about = "Nära Sync measurements")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a SQLite store of N people's month of home care (in a temporary directory), then
    /// measure opening it, loading one person and a local durable write.
    Store {
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
    /// A device holding DOCS documents reconnects after CHANGED of them changed on one SIDE:
    /// messages, bytes and round trips of the catch-up, over an in-process link.
    Reconnect {
        #[arg(long, default_value_t = 1000)]
        docs: usize,
        #[arg(long, default_value_t = 5)]
        changed: usize,
        /// Where the changes are: on the server (the device lacks them) or on the device.
        #[arg(long, value_enum, default_value_t = reconnect::Side::Server)]
        side: reconnect::Side,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Store {
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
            side,
            json,
        } => {
            let result = reconnect::run(&reconnect::Params {
                docs,
                changed,
                side,
            })?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&result)?);
            }
        }
    }
    Ok(())
}
