//! Blocking storage calls made safe to call from anywhere, async threads included.
//!
//! The PostgreSQL client (`postgres`) drives `tokio-postgres` on a runtime of its own and
//! panics when called on a thread that is running async tasks; SQLite only blocks. The
//! server's routes are async, and much of its storage work is reached from them (the
//! directory on every login, the audit log on every admin action). So the PostgreSQL backends
//! run each call through [`offload`]: on a worker of a multi-threaded runtime it moves the
//! worker's other tasks away first (`block_in_place`), elsewhere (the group-commit thread,
//! `spawn_blocking`, a plain thread) it just runs. `nara-server serve` runs the
//! multi-threaded runtime; a current-thread runtime (some tests) can only use SQLite.

/// Runs `f`, which blocks, without stalling or breaking the async runtime it may be called
/// from (see the module comment).
pub fn offload<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
