//! `samod-server`: the baseline the benchmarks compare against, run as its own process so that
//! its memory can be read. A samod 0.16 repo (the Rust automerge-repo) with samod's on-disk
//! storage (`TokioFilesystemStorage`, the automerge-repo-storage-nodefs layout) in `--dir`,
//! accepting samod's WebSocket protocol with its axum integration on `/`, default share policy
//! (every peer may read and write every document), documents run on the tokio runtime.
//!
//! Prints `listening <addr>` on stdout once it accepts connections, then runs until killed.
//!
//! ```text
//! samod-server --dir DIR [--port 0]
//! ```

/// The allocator `nara-server` and the devices run on, so that the comparison is of the
/// protocols, not of the allocators (BENCHMARKS.md, "Session 27").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use axum::serve::ListenerExt;
use clap::Parser;
use samod::storage::TokioFilesystemStorage;
use samod::{PeerId, Repo};

#[derive(Debug, Parser)]
#[command(
    name = "samod-server",
    about = "samod's sync server, for the benchmark baseline"
)]
struct Args {
    /// Storage directory (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Port on 127.0.0.1 (0: any free port; the bound address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let repo = Repo::build_tokio()
        .with_storage(TokioFilesystemStorage::new(&args.dir))
        .with_peer_id(PeerId::from("samod-server"))
        .load()
        .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .context("binding the listener")?;
    let addr = listener.local_addr()?;
    let url = samod::Url::parse(&format!("ws://{addr}/")).context("the listener's URL")?;
    let acceptor = repo
        .make_acceptor(url)
        .map_err(|_| anyhow::anyhow!("the samod repo stopped"))?;
    let app = Router::new().route(
        "/",
        get(move |upgrade: WebSocketUpgrade| {
            let acceptor = acceptor.clone();
            async move {
                upgrade
                    .max_message_size(256 << 20)
                    .on_upgrade(move |socket| async move {
                        if acceptor.accept_axum(socket, None).is_err() {
                            eprintln!("samod-server: the repo stopped");
                        }
                    })
            }
        }),
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr}")?;
        out.flush()?;
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.context("serving")?;
    repo.stop().await;
    Ok(())
}
