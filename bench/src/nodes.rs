//! Where the benchmarked server keeps its data, and how many nodes serve it (issue 12).
//!
//! [`Deployment`]: SQLite files in a data directory (one node), or a PostgreSQL database served
//! by `nodes` real `nara-server serve --database` processes, each with a data directory and a
//! listener of its own (the devices spread over them round robin). All nodes present one
//! certificate (node 0's development certificate, copied), so a device's pin fits every node.
//!
//! [`FreshDatabase`]: each run gets a new, empty database: `CREATE DATABASE nara_bench_<pid>_<n>`
//! on the cluster `--database` names (its user must be allowed to create databases), dropped
//! (`WITH (FORCE)`) when the run is over.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use server::directory::Directory;

use crate::procs::ServerProc;
use crate::team;

/// The server side of a run.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// A PostgreSQL database (a fresh one, see [`FreshDatabase`]); `None`: SQLite files.
    pub database: Option<String>,
    /// Server processes (1 for SQLite).
    pub nodes: usize,
}

impl Deployment {
    /// "sqlite" or "postgresql", as the results name it.
    pub fn backend(&self) -> &'static str {
        if self.database.is_some() {
            "postgresql"
        } else {
            "sqlite"
        }
    }

    /// The directory the bench sets the team up in: the data directory's SQLite file, or the
    /// database's (the server migrates either when it opens it).
    pub fn directory(&self, data: &Path) -> Result<Box<dyn Directory>> {
        match &self.database {
            None => Ok(Box::new(team::directory(data)?)),
            Some(url) => {
                let db = server::pg::PgDatabase::new(url, None)?;
                // The blocking client must not run on an async thread.
                let dir = server::offload::offload(|| db.directory())
                    .context("opening the directory in PostgreSQL")?;
                team::add_org(&dir);
                Ok(Box::new(dir))
            }
        }
    }

    /// Starts the nodes: node `k` on `base/server-k` (node 0 on `base/server`, where the
    /// SQLite stores are).
    pub fn start(&self, base: &Path) -> Result<Nodes> {
        if self.nodes == 0 {
            bail!("need --nodes >= 1");
        }
        if self.database.is_none() && self.nodes > 1 {
            bail!("--nodes above 1 needs --database (SQLite files serve one node)");
        }
        let mut args: Vec<&str> = Vec::new();
        if let Some(url) = &self.database {
            args.extend(["--database", url.as_str()]);
        }
        // More `serve` flags for every node, for comparisons within one build (say
        // `NARA_BENCH_SERVE_ARGS="--sync-lanes 1"`).
        let more = std::env::var("NARA_BENCH_SERVE_ARGS").unwrap_or_default();
        args.extend(more.split_whitespace());
        let mut procs = Vec::with_capacity(self.nodes);
        for k in 0..self.nodes {
            let data = node_dir(base, k);
            if k > 0 {
                // One certificate for all: copy node 0's development certificate.
                std::fs::create_dir_all(&data)?;
                let first = node_dir(base, 0);
                for f in ["dev-cert.pem", "dev-key.pem"] {
                    std::fs::copy(first.join(f), data.join(f))
                        .with_context(|| format!("copying {f} to node {k}"))?;
                }
            }
            let p = ServerProc::start(&data, &args)?;
            tracing::info!(node = k, pid = p.pid, addr = %p.addr, "node started");
            procs.push(p);
        }
        Ok(Nodes { procs })
    }
}

/// The data directory of node `k`.
pub fn node_dir(base: &Path, k: usize) -> std::path::PathBuf {
    if k == 0 {
        base.join("server")
    } else {
        base.join(format!("server-{k}"))
    }
}

/// The running nodes.
#[derive(Debug)]
pub struct Nodes {
    procs: Vec<ServerProc>,
}

impl Nodes {
    /// Node 0 (where setup happens).
    pub fn first(&self) -> &ServerProc {
        &self.procs[0]
    }

    /// The node device `i` connects to (round robin).
    pub fn for_device(&self, i: usize) -> &ServerProc {
        &self.procs[i % self.procs.len()]
    }

    /// The nodes' peak resident memory (VmHWM), summed (PostgreSQL's own not counted).
    pub fn peak_rss(&self) -> u64 {
        self.procs.iter().map(ServerProc::peak_rss).sum()
    }
}

/// A new, empty database on the cluster `cluster` names, dropped with this value. Create and
/// drop it outside the async runtime (the blocking client runs one of its own).
#[derive(Debug)]
pub struct FreshDatabase {
    cluster: String,
    /// The new database's name.
    pub name: String,
    /// The connection string of the new database.
    pub url: String,
}

impl FreshDatabase {
    pub fn create(cluster: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "nara_bench_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = connect(cluster)?;
        // Two statements: a batch would run them in one transaction, where neither may run.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .and_then(|()| admin.batch_execute(&format!("CREATE DATABASE {name}")))
            .with_context(|| format!("creating database {name} (the user needs CREATEDB)"))?;
        Ok(Self {
            cluster: cluster.to_owned(),
            url: with_dbname(cluster, &name)?,
            name,
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let dropped = connect(&self.cluster).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .map_err(anyhow::Error::from)
        });
        if let Err(e) = dropped {
            tracing::warn!(database = %self.name, error = %e, "could not drop the bench database");
        }
    }
}

fn connect(url: &str) -> Result<postgres::Client> {
    if url.contains("sslmode=require") {
        bail!("the bench connects to PostgreSQL without TLS: use a Unix socket or a local port");
    }
    url.parse::<postgres::Config>()
        .context("parsing --database")?
        .connect(postgres::NoTls)
        .context("connecting to --database")
}

/// `url` (a `postgres://` URL or libpq `key=value` pairs) naming database `name` instead.
pub fn with_dbname(url: &str, name: &str) -> Result<String> {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (before_query, query) = match rest.split_once('?') {
                Some((b, q)) => (b, Some(q)),
                None => (rest, None),
            };
            let authority = before_query.split('/').next().unwrap_or_default();
            let mut out = format!("{scheme}{authority}/{name}");
            if let Some(q) = query {
                // A `dbname=` in the query would win over the path: leave it out.
                let kept: Vec<&str> = q
                    .split('&')
                    .filter(|kv| !kv.starts_with("dbname="))
                    .collect();
                if !kept.is_empty() {
                    out.push('?');
                    out.push_str(&kept.join("&"));
                }
            }
            return Ok(out);
        }
    }
    if url.contains("://") {
        bail!("--database: not a postgres:// URL");
    }
    // key=value pairs: a later key wins.
    Ok(format!("{url} dbname={name}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::with_dbname;

    #[test]
    fn a_url_names_the_fresh_database() {
        assert_eq!(
            with_dbname("postgres://u:p@h:5432/postgres?sslmode=disable", "b1").unwrap(),
            "postgres://u:p@h:5432/b1?sslmode=disable"
        );
        assert_eq!(
            with_dbname("postgresql://h", "b1").unwrap(),
            "postgresql://h/b1"
        );
        assert_eq!(
            with_dbname("host=/tmp port=1 user=u dbname=postgres", "b1").unwrap(),
            "host=/tmp port=1 user=u dbname=postgres dbname=b1"
        );
        let parsed: postgres::Config = with_dbname("host=/tmp dbname=postgres", "b1")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(parsed.get_dbname(), Some("b1"));
    }
}
