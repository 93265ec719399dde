//! `nara-server`: the Nära Sync server binary.

/// mimalloc instead of the system's allocator: glibc's malloc and free were 15% of a morning's
/// samples (BENCHMARKS.md, "Session 27").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::admin_cli::{self, AdminArgs};
use server::directory::SqliteDirectory;
use server::offload::offload;
use server::pg::PgDatabase;
use server::tls::{self, TlsListener};
use server::{AppState, Limits};
use sync_core::store::{SqliteStore, Store};

#[derive(Debug, Parser)]
#[command(name = "nara-server", version, about = "Nära Sync server")]
struct Cli {
    /// Log more: `-v` info, `-vv` debug (default: `serve` logs info, other commands only
    /// warnings). `RUST_LOG` overrides both.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync service over TLS (HTTPS and WSS only; there is no plaintext listener).
    Serve {
        /// The data directory: the SQLite stores (without --database), the development
        /// certificate, the admin token, the web sessions.
        #[arg(long, default_value = "./nara-data")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// Serve the admin API (`/v1/admin/...`) on this address only (TLS, the same
        /// certificate), say one reachable from the office network alone; without it, the admin
        /// API is on --listen beside the device routes.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// A PEM certificate chain; without it (and --tls-key) a self-signed development
        /// certificate is created in the data directory.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Most connections open at once.
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
        /// Keep documents, the feed, the directory and the audit log in this PostgreSQL
        /// database (`postgres://user@host/db?sslmode=require`, or libpq `key=value` pairs;
        /// also `NARA_DATABASE_URL`, this flag wins) instead of SQLite files in the data
        /// directory. Several nodes can serve one database. Its schema is migrated at start; a
        /// newer one is refused.
        #[arg(long)]
        database: Option<String>,
        /// The CA certificate (PEM) that signed the PostgreSQL server's certificate: TLS to the
        /// database, required and verified.
        #[arg(long, requires = "database")]
        database_ca: Option<PathBuf>,
        /// Connections in each of the directory's and the audit log's pools on PostgreSQL
        /// (1 to 64; also `NARA_DATABASE_POOL`, this flag wins; default 4).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        database_pool: Option<u32>,
        /// Sync lanes on PostgreSQL (1 to 16, default 4): each its own connection for
        /// documents and the feed and its own group-commit worker, so that a device's step
        /// that waits holds up only its lane's. SQLite has one writer: one lane there.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
        sync_lanes: Option<u16>,
        /// How often (milliseconds) a node reads the feed's head to learn of changes stored by
        /// other nodes. On PostgreSQL each node also listens for them (LISTEN/NOTIFY) and
        /// hears at once; the poll is the fallback.
        #[arg(long, default_value_t = server::app::FEED_POLL.as_millis() as u64)]
        feed_poll_ms: u64,
        #[command(flatten)]
        audit_heads: AuditHeadArgs,
    },
    /// Administration on the data directory, or with --database on the PostgreSQL database
    /// (effective on a running server within a second).
    Admin(AdminArgs),
    /// Open (creating or migrating) the stores in DATA and check their integrity.
    Check {
        #[arg(long, default_value = "./nara-data")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// The signed audit head: the key it is signed with, where it is exported, how often.
#[derive(Debug, clap::Args)]
struct AuditHeadArgs {
    /// The audit signing key (Ed25519), made owner-only on first start (default:
    /// DATA/audit-key). Nodes on one PostgreSQL database: give every node the same file, or
    /// keep each node's public key (`nara-server admin audit key`).
    #[arg(long, value_name = "FILE")]
    audit_key: Option<PathBuf>,
    /// Append the signed audit head to this file, outside the database (default:
    /// DATA/audit-heads.jsonl); `nara-server admin audit verify` checks the chain against it.
    #[arg(long, value_name = "FILE")]
    audit_heads: Option<PathBuf>,
    /// Export the signed audit head this often, in seconds, when it moved (and at a clean
    /// shutdown).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    audit_heads_every: u64,
}

impl AuditHeadArgs {
    /// The key (made if there is none) and the export.
    fn export(self, data: &Path) -> anyhow::Result<server::audit::heads::HeadExport> {
        use server::audit::heads::{AuditKey, HEADS_FILE, HeadExport, KEY_FILE};
        let key_path = self.audit_key.unwrap_or_else(|| data.join(KEY_FILE));
        let (key, made) = AuditKey::load_or_create(&key_path)
            .with_context(|| format!("the audit key {}", key_path.display()))?;
        println!(
            "audit key{} {}: public key {}",
            if made { " (new)" } else { "" },
            key_path.display(),
            key.public_hex()
        );
        let file = self.audit_heads.unwrap_or_else(|| data.join(HEADS_FILE));
        println!(
            "signed audit heads to {} every {} s",
            file.display(),
            self.audit_heads_every
        );
        Ok(HeadExport {
            key,
            file,
            every: std::time::Duration::from_secs(self.audit_heads_every),
        })
    }
}

fn main() -> anyhow::Result<()> {
    // Patient data, credentials and the audit log: nothing this process creates is readable by
    // other local users.
    server::datadir::owner_only_umask();
    let cli = Cli::parse();
    init_logs(&cli);
    match cli.command {
        Command::Serve {
            data,
            listen,
            admin_listen,
            tls_cert,
            tls_key,
            max_connections,
            database,
            database_ca,
            database_pool,
            sync_lanes,
            feed_poll_ms,
            audit_heads,
        } => {
            let database = database.or_else(|| std::env::var("NARA_DATABASE_URL").ok());
            let pool = match database_pool {
                Some(n) => Some(n),
                None => std::env::var("NARA_DATABASE_POOL")
                    .ok()
                    .map(|n| n.trim().parse::<u32>())
                    .transpose()
                    .context("NARA_DATABASE_POOL is not a number of connections")?,
            };
            let database = database
                .map(|url| {
                    let db = PgDatabase::new(&url, database_ca.as_deref())?;
                    match pool {
                        Some(n) => db.with_pool_size(n),
                        None => Ok(db),
                    }
                })
                .transpose()
                .context("the database (--database or NARA_DATABASE_URL, --database-pool or NARA_DATABASE_POOL)")?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(
                data,
                Listen {
                    devices: listen,
                    admin: admin_listen,
                },
                tls_cert,
                tls_key,
                Limits {
                    max_connections,
                    feed_poll: std::time::Duration::from_millis(feed_poll_ms.max(1)),
                    ..Limits::default()
                },
                postgres(database, sync_lanes)?,
                audit_heads,
            ))
        }
        Command::Admin(args) => admin_cli::run(args),
        Command::Check { data, json } => check(&data, json),
    }
}

/// Logs to stderr: a command's own answer is its output, so only `serve` logs at info by
/// default; `-v`/`-vv` or `RUST_LOG` ask for more. Colour only on a terminal.
fn init_logs(cli: &Cli) {
    use std::io::IsTerminal;
    let default = match (cli.verbose, &cli.command) {
        (0, Command::Serve { .. }) | (1, _) => "info",
        (0, _) => "warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The admin token in the data directory, created (random, owner-only) on first start.
fn admin_token(data: &Path) -> anyhow::Result<(PathBuf, String)> {
    let path = data.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok((path, token.trim().to_owned()));
    }
    let mut bytes = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading random bytes for the admin token")?;
    let token = hex::encode(bytes);
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(&path)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((path, token))
}

/// Sync lanes on PostgreSQL unless `--sync-lanes` says otherwise: enough that a few devices
/// whose steps wait do not hold up the rest, few enough that each node's cached documents and
/// connections stay small (each lane caches its own).
const DEFAULT_SYNC_LANES: u16 = 4;

/// The PostgreSQL database a server serves from, and its sync lanes.
struct Postgres {
    db: PgDatabase,
    lanes: usize,
}

/// The database from `serve`'s flags, if one was given; `--sync-lanes` above one without it is
/// refused (SQLite has one writer).
fn postgres(database: Option<PgDatabase>, lanes: Option<u16>) -> anyhow::Result<Option<Postgres>> {
    match database {
        Some(db) => Ok(Some(Postgres {
            db,
            lanes: usize::from(lanes.unwrap_or(DEFAULT_SYNC_LANES)),
        })),
        None if lanes.is_some_and(|n| n > 1) => anyhow::bail!(
            "--sync-lanes: SQLite has one writer, so the embedded store has one sync lane; \
             more need PostgreSQL (--database)"
        ),
        None => Ok(None),
    }
}

/// Where the server listens: the devices' address, and the admin API's if it has its own.
struct Listen {
    devices: SocketAddr,
    admin: Option<SocketAddr>,
}

async fn serve(
    data: PathBuf,
    listen: Listen,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    limits: Limits,
    database: Option<Postgres>,
    audit_heads: AuditHeadArgs,
) -> anyhow::Result<()> {
    server::datadir::prepare(&data).with_context(|| format!("preparing {}", data.display()))?;
    let head_export = audit_heads.export(&data)?;
    let tls = tls::load_or_create(&data, tls_cert.as_deref(), tls_key.as_deref())?;
    let (token_path, token) = admin_token(&data)?;
    let state = match database {
        None => {
            let store =
                SqliteStore::open(data.join("nara.db")).context("opening the document store")?;
            let directory = Arc::new(SqliteDirectory::open(&admin_cli::directory_path(&data))?);
            let audit = Arc::new(admin_cli::open_audit(&data)?);
            AppState::new(store, directory, audit, token, limits.clone())?
        }
        Some(Postgres { db, lanes }) => {
            // The blocking PostgreSQL client must not run on an async thread.
            let state = offload(|| -> anyhow::Result<AppState> {
                let mut stores: Vec<Box<dyn server::store::ServerStore>> = Vec::new();
                for _ in 0..lanes {
                    let store = db
                        .store()
                        .context("opening the document store in PostgreSQL")?;
                    stores.push(Box::new(store));
                }
                let directory = Arc::new(
                    db.directory()
                        .context("opening the directory in PostgreSQL")?,
                );
                let audit = Arc::new(db.audit().context("opening the audit log in PostgreSQL")?);
                AppState::new_lanes(stores, directory, audit, token, limits.clone())
            })?;
            state.read_head_with(Box::new(db.head_reader()));
            println!(
                "documents, directory and audit log in PostgreSQL (directory and audit log: \
                 pools of {} connections each; documents: {lanes} sync lanes, a connection each)",
                db.pool_size()
            );
            tracing::info!(
                pool_size = db.pool_size(),
                lanes,
                "postgresql: the directory and the audit log on pools, the document store on a connection per sync lane"
            );
            state.wake_with(Box::new(db.feed_listener()));
            state
        }
    };
    state.export_audit_heads(head_export);
    let sessions = server::web::SqliteSessions::open(&admin_cli::web_path(&data))
        .context("opening the web sessions")?;
    state.enable_web(server::web::Web::new(
        Arc::new(sessions),
        server::web::Clock::system(),
    ));
    let tcp = tokio::net::TcpListener::bind(listen.devices)
        .await
        .with_context(|| format!("listening on {}", listen.devices))?;
    let local = tcp.local_addr()?;
    let listener =
        TlsListener::with_limits(server::tls::no_delay(tcp), tls.config.clone(), &limits)?;
    println!(
        "Nära Sync server on https://{local} (sync: wss://{local}/v1/sync; web: https://{local}/app/)"
    );
    let admin = match listen.admin {
        Some(addr) => {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (admin)"))?;
            let local = tcp.local_addr()?;
            println!("admin API on https://{local}/v1/admin/ only");
            Some(TlsListener::with_limits(
                server::tls::no_delay(tcp),
                tls.config.clone(),
                &limits,
            )?)
        }
        None => None,
    };
    println!(
        "TLS certificate{} SHA-256 fingerprint: {}",
        if tls.development {
            " (self-signed, development)"
        } else {
            ""
        },
        tls.fingerprint
    );
    println!("server key pin (SPKI SHA-256): {}", tls.spki_pin);
    println!("admin token: {}", token_path.display());
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutting down: closing sync sessions");
    };
    server::app::serve_with_admin(listener, admin, state, shutdown).await?;
    Ok(())
}

fn check(data: &Path, json: bool) -> anyhow::Result<()> {
    server::datadir::prepare(data).with_context(|| format!("preparing {}", data.display()))?;
    let path = data.join("nara.db");
    let store = SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
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
