//! What a server session reports: [`ServerEvent`], for the audit log and for the server shell.

use super::*;

/// What happened on a session, for the audit log and for the server shell.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// Changes of `doc` were sent to the device (a disclosure).
    Disclosed {
        doc: DocumentId,
        changes: usize,
    },
    /// Changes from the device were stored.
    Accepted {
        doc: DocumentId,
        changes: Vec<ChangeHash>,
    },
    /// A change from the device was refused and not stored.
    Refused {
        doc: DocumentId,
        change: Option<ChangeHash>,
        code: RefusalCode,
        detail: String,
    },
    /// The device has received word that it may no longer read these patients (it
    /// acknowledged a batch sent after the `Withdrawn` message; a withdrawal sent into a dead
    /// connection is sent again on the next one).
    Withdrawn {
        patients: Vec<PatientId>,
    },
    /// `Withdrawn` for these patients was just queued for the device (for the first time, or
    /// again on a new connection). The policy counts these: a withdrawal sent into connections
    /// that died each time ends the grace after a few (the device might be avoiding it).
    WithdrawalSent {
        patients: Vec<PatientId>,
    },
    /// The device went on uploading for these patients past [`GRACE_UPLOADS`] after `Withdrawn`
    /// was sent on this connection: its write grace for them is over (from that upload on),
    /// whether or not it ever acknowledges. The server decides that, not the device.
    GraceEnded {
        patients: Vec<PatientId>,
    },
    /// The device reports that it showed patient data to its user (to be audited before the
    /// acknowledgement is sent).
    Read {
        entries: Vec<crate::protocol::wire::ReadEntry>,
    },
    /// The catch-up is complete; the session is live.
    CaughtUp,
    /// The device's store is behind what the server holds from its incarnation `old` (it was
    /// restored from a backup, or copied): it was told to go on as incarnation `new`, and
    /// nothing of its hello was stored.
    Reincarnated {
        old: u32,
        new: u32,
    },
    /// Incarnation `incarnation` of the device connected or wrote while the later incarnation
    /// `later` was in use: two installations use one credential. Reported once per pair; both
    /// installations' changes are still accepted and distributed, for an administrator to
    /// settle.
    CopyDetected {
        incarnation: u32,
        later: u32,
    },
    /// A device had seen a history of this feed that the server does not hold (its feed went
    /// back in time: restored or copied back without a new epoch): the feed moved from epoch
    /// `old` to `new`, so every device that saw the lost history recovers. `seen`: the device's
    /// position; `head`: the server's.
    FeedDiverged {
        old: Epoch,
        new: Epoch,
        head: u64,
        seen: u64,
    },
    /// In a recovery, changes of `docs` documents of `patient` were sent to the device (a
    /// disclosure; one per patient and chunk, never one per document).
    RecoveryDisclosed {
        patient: PatientId,
        docs: usize,
        changes: usize,
    },
    /// A device finished its recovery (see [`RecoveryCounts`]); the feed goes on.
    Recovered {
        counts: RecoveryCounts,
    },
    /// The device told its clock in its hello: the server's time minus the device's (ms; the
    /// transit time is in it, so only large offsets mean anything, see
    /// [`crate::protocol::wire::CLOCK_SKEW_LIMIT_MS`]).
    DeviceClock {
        offset_ms: i64,
    },
    Closed {
        reason: CloseReason,
        detail: String,
    },
}
