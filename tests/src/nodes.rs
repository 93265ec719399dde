//! Several server nodes on one database, in process: each its own `AppState` (its own store
//! connection, document cache, commit worker and `live` map) and its own port, all on one
//! SQLite store, directory and audit log, with one certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use server::app::Limits;

use crate::net::TestServer;

impl TestServer {
    /// Another node beside this one, on this server's files (store, directory, audit log,
    /// certificate), on a port of its own. Its `data` is an empty directory of its own: admin
    /// helpers that take the data directory belong on the first node.
    pub async fn another_node(&self) -> TestServer {
        let data = tempfile::tempdir().unwrap();
        TestServer::start_at(self.data.path(), data, Limits::default(), false).await
    }
}
