//! `nara-server`: the Nära Sync server binary.
//!
//! Today it manages the server's store (`check`). The TLS sync service (`serve`) is built in
//! issue #4; until then `serve` says so and exits with an error rather than pretend.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sync_core::store::{SqliteStore, Store};

#[derive(Debug, Parser)]
#[command(name = "nara-server", version, about = "Nära Sync server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync service (not built yet: see issue #4).
    Serve {
        #[arg(long, default_value = "./nara-data")]
        data: PathBuf,
    },
    /// Open (creating or migrating) the store in DATA and check its integrity.
    Check {
        #[arg(long, default_value = "./nara-data")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { data } => anyhow::bail!(
            "the TLS sync service is not built yet (issue #4); `nara-server check --data {}` checks the store",
            data.display()
        ),
        Command::Check { data, json } => {
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            let path = data.join("nara.db");
            let store =
                SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let documents = store.documents()?.len();
            let pending = store.pending()?.len();
            let integrity = match store.integrity_check()? {
                Ok(()) => "ok".to_owned(),
                Err(problems) => problems.join("; "),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "store": path.display().to_string(),
                        "documents": documents,
                        "pending": pending,
                        "integrity": integrity,
                    })
                );
            } else {
                println!(
                    "store {}: {documents} documents, {pending} pending, integrity {integrity}",
                    path.display()
                );
            }
            anyhow::ensure!(integrity == "ok", "integrity check failed");
            Ok(())
        }
    }
}
