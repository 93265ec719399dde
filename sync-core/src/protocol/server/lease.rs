//! One connection serves a device at a time, across server nodes: the session claims the
//! device's lease in the store before it handles its first message
//! ([`ServerSession::claim_lease`]; the server does it in that message's transaction), and
//! every entry point that can write the device's state (a message, a feed push, changed
//! access) first checks that lease in the store, in the caller's transaction. A session whose
//! lease a newer connection took (on this node or another sharing the database) writes nothing
//! more and closes as [`CloseReason::Superseded`]. The store makes a claim wait for a group
//! that checked the lease (see `Store::check_lease`), so every write of a step is made under a
//! lease that held until the step committed.
//!
//! A session that never claimed (tests of the protocol alone) is not checked.

use crate::error::StoreError;
use crate::ids::Timestamp;
use crate::protocol::wire::CloseReason;
use crate::repo::Repo;
use crate::store::Store;

use super::ServerSession;

impl ServerSession {
    /// Claims the device for this connection, in the store, for `holder` (the node and
    /// connection, kept for operators) at `now`: every older connection of the device is
    /// fenced from now on. Call it once the device is authenticated, before its first message
    /// is handled (in the same transaction, or before it).
    pub fn claim_lease<S: Store>(
        &mut self,
        repo: &mut Repo<S>,
        holder: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let lease = repo
            .store_mut()
            .claim_device(&self.peer.author.device, holder, now.0)?;
        self.lease = Some(lease.token);
        Ok(())
    }

    /// The fencing token this connection holds, once claimed.
    pub fn lease(&self) -> Option<u64> {
        self.lease
    }

    /// Whether this session may go on writing the device's state; if not, it is closed
    /// (`Superseded` when fenced, `Internal` when the store could not tell).
    pub(super) fn leased<S: Store>(&mut self, repo: &Repo<S>) -> bool {
        let Some(token) = self.lease else {
            return true;
        };
        match repo.store().check_lease(&self.peer.author.device, token) {
            Ok(()) => true,
            Err(StoreError::Fenced { .. }) => {
                self.close(
                    CloseReason::Superseded,
                    "a newer connection of this device serves it now (perhaps on another node)",
                );
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "checking the device's lease failed");
                self.close(
                    CloseReason::Internal,
                    "the server could not complete the request",
                );
                false
            }
        }
    }
}
