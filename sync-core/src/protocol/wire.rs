//! The wire format: a version byte, then one message in postcard (a compact serde binary
//! encoding). Decoding checks the size limit and the version before anything else, and never
//! panics on hostile bytes. See `docs/protocol.md`.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, DocumentId, PatientId};
use crate::store::Epoch;

mod bytes;

/// The newest protocol version this build speaks. Each version only adds messages and changes
/// none: version 2 the clocks ([`DeviceMessage::TimedHello`], [`ServerMessage::Time`]),
/// version 3 what keeps state going backwards safe ([`DeviceMessage::Hello3`] with the store's
/// incarnation, the feed proof and signatures, [`DeviceMessage::Upload3`],
/// [`ServerMessage::Reincarnate`]). Every older message is encoded exactly as before, under its
/// own version byte. So an older peer keeps working with this build, and this build sends a
/// newer message only to a peer that spoke that version first. Any other byte is closed.
pub const PROTOCOL_VERSION: u8 = 3;
/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u8 = 1;
/// A device clock further than this from the server's (ms) is reported as off.
pub use crate::model::records::CLOCK_SKEW_LIMIT_MS;
/// Largest message accepted or sent, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest single Automerge change accepted, in bytes. Larger changes are refused.
pub const MAX_CHANGE_BYTES: usize = 1024 * 1024;
/// Target size of one batch or upload (a batch holds at least one change, even if larger).
pub const BATCH_BYTES: usize = 256 * 1024;
/// Most changes in one batch or upload.
pub const MAX_BATCH_CHANGES: usize = 4096;
/// Most batches (server to device) or uploads (device to server) awaiting acknowledgement.
pub const MAX_IN_FLIGHT: usize = 4;
/// Messages queued together are written together (one write, one TLS record) while they add
/// up to at most this many bytes: about one TCP segment's payload. A relayed change's
/// signatures and its batch then reach the device at once. Larger runs are not joined: a
/// receiver reads nothing of a TLS record until all of it has arrived, so on a slow link a
/// small message joined to a large one would wait for it (and be lost with it on a cut).
pub const ONE_WRITE_BYTES: usize = 1200;

/// Whether the messages written so far (`unflushed` bytes, not yet flushed) go out before the
/// next one of `next` bytes is added ([`ONE_WRITE_BYTES`]).
pub fn flush_before(unflushed: usize, next: usize) -> bool {
    unflushed > 0 && unflushed.saturating_add(next) > ONE_WRITE_BYTES
}

/// How the detail of an `Invalid` refusal begins when the refused change is the device's own,
/// of an earlier incarnation, and forks what the server holds of that incarnation (another
/// installation used its write counter or sequence number): the device takes it back and
/// writes its records again under its current incarnation.
pub const FORKED_DETAIL: &str = "forked:";
/// How the detail of an `Invalid` refusal begins when the refused change is another device's,
/// handed back in a recovery, and forks what the server holds of its author's history (another
/// installation of the author, or the author's store put back, used its sequence number or
/// write counter after the server lost it): the device takes it out of its documents (the
/// server holds another change under those numbers, which the device then receives), and the
/// server keeps it for its author's device, which writes its records again
/// ([`ServerMessage::Orphans`]).
pub const FORKED_OTHER_DETAIL: &str = "forked-other:";
/// Most changes the server keeps for one device in [`ServerMessage::Orphans`].
pub const MAX_ORPHANS: usize = 64;
/// handed back in a recovery, and its actor's sequence number is held by the server with
/// another change (two installations of one incarnation wrote it, and the server, put back,
/// kept the other): no replica can ever hold both, so the device withdraws it, with every change
/// built on it, and writes again the records of its own among those (the author writes its
/// own again; docs/protocol.md, "Forks withdrawn from relays"). A device of an earlier build
/// quarantines it, as any `Invalid` refusal.
pub const WITHDRAWN_FORK_DETAIL: &str = "fork withdrawn:";
/// Most documents or patients named in one list (priority, withdrawn, received ranges).
pub const MAX_LIST: usize = 10_000;
/// Most documents in one recovery chunk ([`DeviceMessage::Heads`]), unless one patient alone
/// has more (a patient's documents always go together, at most [`MAX_LIST`]).
pub const RECOVERY_CHUNK_DOCS: usize = 256;
/// Most heads named for one document in a recovery.
pub const MAX_HEADS: usize = 256;
/// Target size of the changes in one [`ServerMessage::Reconcile`] (at least one change).
pub const RECOVERY_ANSWER_BYTES: usize = 1024 * 1024;

/// A position in the server's change feed, valid within one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: Epoch,
    pub position: u64,
}

/// Changes of one document. On the server-to-device path each change carries its feed
/// position, so the device can record what it holds beyond its cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChanges {
    pub doc: DocumentId,
    #[serde(with = "bytes::list")]
    pub changes: Vec<Vec<u8>>,
    /// Feed positions, one per change (empty on uploads; 0 for a change sent as part of a
    /// patient's backfill, whose progress the batch carries instead).
    pub positions: Vec<u64>,
}

/// Progress of sending one patient's earlier history (a patient newly assigned to the device,
/// or assigned again): every feed entry of the patient at positions up to `progress` is held;
/// the backfill is done when `progress` reaches `until` (later entries come with the feed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    pub patient: PatientId,
    pub progress: u64,
    pub until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `None` for a device that has never synced (or that lost its cursor).
    pub cursor: Option<Cursor>,
    /// Feed positions above the cursor already held, as inclusive ranges.
    pub received: Vec<(u64, u64)>,
    /// Patients whose documents the device needs first (today's visits).
    pub priority: Vec<PatientId>,
    /// Backfills the device has started and not finished.
    pub backfill: Vec<Backfill>,
    /// The first upload (number 0): changes the server has not acknowledged yet.
    pub upload: Vec<DocChanges>,
}

/// Version 3: which incarnation of the device's store is speaking. A store restored from a
/// backup, or copied to another phone, speaks as an incarnation that the server may already
/// know to have written more (see docs/protocol.md, "Incarnations").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncarnationClaim {
    /// The incarnation's number (0 for a store that never had another; its Automerge actor is
    /// derived from the device and this number).
    pub number: u32,
    /// How many changes the store has written under this incarnation.
    pub written: u64,
    /// The hash of the last of them (`None` when `written` is 0).
    pub last: Option<[u8; 32]>,
}

/// Version 3: one device's Ed25519 signature over one document's heads. Automerge change
/// hashes chain, so it vouches for every change in the heads' history (see docs/protocol.md,
/// "Signed changes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsSignature {
    pub doc: DocumentId,
    /// The document's heads the signer held, sorted.
    pub heads: Vec<[u8; 32]>,
    /// The device whose registered key signed.
    pub device: DeviceId,
    /// 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Version 3: a device's public signing key as the server registered it (32 bytes, Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerKey {
    pub device: DeviceId,
    pub key: [u8; 32],
}

/// Version 3, recovery: one document's heads (Automerge change hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeads {
    pub doc: DocumentId,
    pub heads: Vec<[u8; 32]>,
}

/// Device to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceMessage {
    Hello(Hello),
    /// More local changes. Numbered from 1 within a connection (the Hello carries upload 0).
    Upload {
        upload: u32,
        docs: Vec<DocChanges>,
    },
    /// The batch is durable on the device (changes and cursor committed).
    BatchAck {
        batch: u32,
    },
    /// Automerge's own sync message for one document (fallback when the feed cannot be used).
    AmSync {
        doc: DocumentId,
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// Entries of the device's read log (patient data shown to the user), oldest first, for the
    /// server's audit log.
    ReadLog {
        entries: Vec<ReadEntry>,
    },
    /// Version 2: a hello that also tells the device's clock (ms since the Unix epoch, when it
    /// was sent); the server answers with [`ServerMessage::Time`] before anything else.
    TimedHello {
        hello: Hello,
        device_ms: i64,
    },
    /// Version 3: a timed hello that also says which incarnation of the store speaks, proves
    /// which feed history its cursor saw (`feed_proof`: the feed's running hash at the cursor's
    /// position, `None` without a cursor), and carries signatures over the heads of the
    /// documents of its upload 0.
    Hello3 {
        hello: Hello,
        device_ms: i64,
        incarnation: IncarnationClaim,
        feed_proof: Option<[u8; 32]>,
        signatures: Vec<HeadsSignature>,
    },
    /// Version 3: an upload with signatures over the heads of its documents.
    Upload3 {
        upload: u32,
        docs: Vec<DocChanges>,
        signatures: Vec<HeadsSignature>,
    },
    /// Version 3, recovery (after [`ServerMessage::Recover`]): the heads of every document the
    /// device holds of some patients (all of each patient's documents), chunk `chunk` (from 0
    /// within the connection). The server answers with [`ServerMessage::Reconcile`].
    Heads {
        chunk: u32,
        docs: Vec<DocHeads>,
    },
    /// Version 3: the recovery is done: every document the device holds of `patients` holds
    /// what the server held at `cursor` (the cursor of the [`ServerMessage::Recover`] that
    /// started it), and the server holds what the device does (or refused it). The normal
    /// catch-up follows from `cursor`.
    Recovered {
        cursor: Cursor,
        patients: Vec<PatientId>,
    },
    /// Version 3: the changes of a [`ServerMessage::Orphans`] (by hash) whose records the
    /// device keeps to write again, durably: the server forgets them.
    OrphansTaken {
        changes: Vec<[u8; 32]>,
    },
}

impl DeviceMessage {
    /// The protocol version that introduced this message (its version byte).
    pub fn version(&self) -> u8 {
        match self {
            DeviceMessage::TimedHello { .. } => 2,
            DeviceMessage::Hello3 { .. }
            | DeviceMessage::Upload3 { .. }
            | DeviceMessage::Heads { .. }
            | DeviceMessage::Recovered { .. }
            | DeviceMessage::OrphansTaken { .. } => 3,
            _ => 1,
        }
    }
}

/// One time patient data was shown on a device: which patient, what, when (device time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEntry {
    pub patient: PatientId,
    pub what: String,
    pub at_ms: i64,
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The device may not write this document.
    NotPermitted,
    /// The change breaks the schema or the rules.
    Invalid,
    /// The change is authored under another device or user.
    ForeignAuthor,
    /// The change depends on changes the server does not have.
    MissingDependencies,
    /// The bytes are not an Automerge change, or are too large.
    Malformed,
    /// Version 3: the upload's signature for the change's document does not verify against
    /// the device's registered key, is not the device's, or does not cover the change (sent only
    /// to a device that signed).
    BadSignature,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Index of the change in the upload, counting across its documents in order.
    pub index: u32,
    pub code: RefusalCode,
    pub detail: String,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    UnsupportedVersion,
    MessageTooLarge,
    Malformed,
    /// A message that is not allowed in the current state.
    ProtocolViolation,
    /// The peer sent nothing the protocol waited for within the configured time.
    Stalled,
    /// The device's credential was revoked.
    Revoked,
    /// The server is shutting down.
    Shutdown,
    /// A store or internal error on the closing side.
    Internal,
    /// A newer connection of the device (perhaps to another server node) serves it now: this
    /// one was fenced. Added after version 3's messages; a device of an older build cannot
    /// decode it and closes the connection as `Malformed`, which ends it all the same.
    Superseded,
}

/// Server to device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Every change of the upload not listed in `refused` is durable on the server.
    UploadAck {
        upload: u32,
        refused: Vec<Refused>,
    },
    /// Changes for the device. `cursor`: every feed entry up to it has now been sent (for the
    /// patients the device holds completely). `backfill`: progress of earlier histories.
    /// `remaining`: how many changes are still to come in this catch-up.
    Batch {
        batch: u32,
        docs: Vec<DocChanges>,
        cursor: Cursor,
        backfill: Vec<Backfill>,
        remaining: u32,
    },
    /// The device may no longer read these patients: upload what is pending, then forget them.
    Withdrawn {
        patients: Vec<PatientId>,
    },
    /// The device's cursor is from another epoch: the feed restarts from the beginning, and the
    /// device reconciles each document it holds with Automerge's sync messages.
    Resync {
        epoch: Epoch,
    },
    AmSync {
        doc: DocumentId,
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    Close {
        reason: CloseReason,
        detail: String,
    },
    /// The read log entries of the last `ReadLog` are in the audit log.
    ReadLogAck {
        count: u32,
    },
    /// Version 2, the answer to [`DeviceMessage::TimedHello`]: the device's clock as it told
    /// it, and the server's when the hello arrived (ms since the Unix epoch).
    Time {
        device_ms: i64,
        server_ms: i64,
    },
    /// Version 3, an answer to [`DeviceMessage::Hello3`]: the server already holds more from
    /// the device's incarnation than the device does (its store went back in time, or was
    /// copied). The device goes on as incarnation `incarnation` (see docs/protocol.md,
    /// "Incarnations"); nothing of its hello's upload was stored.
    Reincarnate {
        incarnation: u32,
    },
    /// Version 3, sent to a version-3 device right before the [`ServerMessage::Batch`] whose
    /// changes they cover: the signatures the server verified over those changes' documents,
    /// and the registered keys of their signers. The device checks each against its key and
    /// keeps them with the changes (see docs/protocol.md, "Signed changes").
    Signatures {
        keys: Vec<SignerKey>,
        signatures: Vec<HeadsSignature>,
    },
    /// Version 3: a [`ServerMessage::Batch`] that also carries the feed's running hash at its
    /// cursor, which the device keeps with the cursor and proves it with in its next hello.
    /// Sent only to a device that said [`DeviceMessage::Hello3`].
    Batch3 {
        batch: u32,
        docs: Vec<DocChanges>,
        cursor: Cursor,
        backfill: Vec<Backfill>,
        remaining: u32,
        proof: [u8; 32],
    },
    /// Version 3, an answer to [`DeviceMessage::Hello3`]: the device's cursor does not prove a
    /// history of this feed (the server was restored, replaced, or its feed was reused). The
    /// device reconciles what it holds ([`DeviceMessage::Heads`]), then goes on from `cursor`
    /// (the feed's head now, with its `proof`). Nothing else of the feed is sent until then.
    Recover {
        cursor: Cursor,
        proof: [u8; 32],
    },
    /// Version 3, the answer to [`DeviceMessage::Heads`] `chunk`: `docs`, changes the device
    /// lacks (in causal order; the device's heads were all known); `lacks`, the server's heads
    /// of documents where the device holds changes the server lacks (the device uploads what
    /// lies beyond them, then asks again if it did not hold them all); `again`, documents not
    /// (completely) answered for size: the device asks again.
    Reconcile {
        chunk: u32,
        docs: Vec<DocChanges>,
        lacks: Vec<DocHeads>,
        again: Vec<DocumentId>,
    },
    /// Version 3, after the hello: changes of the connected device (of any of its incarnations
    /// or installations) that another device handed back to a restored server and that fork
    /// what the server holds of their author's history (see [`FORKED_OTHER_DETAIL`]): the
    /// server cannot store them, and the device writes their records again under its current
    /// incarnation, then answers [`DeviceMessage::OrphansTaken`].
    Orphans {
        docs: Vec<DocChanges>,
    },
}

impl ServerMessage {
    /// The protocol version that introduced this message (its version byte).
    pub fn version(&self) -> u8 {
        match self {
            ServerMessage::Time { .. } => 2,
            ServerMessage::Reincarnate { .. }
            | ServerMessage::Signatures { .. }
            | ServerMessage::Batch3 { .. }
            | ServerMessage::Recover { .. }
            | ServerMessage::Reconcile { .. }
            | ServerMessage::Orphans { .. } => 3,
            _ => 1,
        }
    }
}

/// A message of the protocol: it knows the version that introduced it.
pub trait Versioned {
    fn version(&self) -> u8;
}

impl Versioned for DeviceMessage {
    fn version(&self) -> u8 {
        DeviceMessage::version(self)
    }
}

impl Versioned for ServerMessage {
    fn version(&self) -> u8 {
        ServerMessage::version(self)
    }
}

/// Why bytes could not be decoded; each maps to a [`CloseReason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes is larger than {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    #[error("empty message")]
    Empty,
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl WireError {
    pub fn close_reason(&self) -> CloseReason {
        match self {
            WireError::TooLarge(_) => CloseReason::MessageTooLarge,
            WireError::UnsupportedVersion(_) => CloseReason::UnsupportedVersion,
            WireError::Empty | WireError::Malformed(_) => CloseReason::Malformed,
        }
    }
}

/// Encodes a message with its version byte (the version that introduced the message). A
/// message over the limit is an error: callers build batches under [`BATCH_BYTES`], far below
/// it.
pub fn encode<M: Serialize + Versioned>(msg: &M) -> Result<Vec<u8>, WireError> {
    let out = postcard::to_extend(msg, vec![msg.version()])
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Decodes one message: size, then version, then body. Trailing bytes are malformed, and so
/// is a message under another version byte than the one that introduced it (one encoding per
/// message). A compressed frame ([`super::compress`]) is inflated first, with its bound; a
/// session that did not negotiate compressed frames refuses them before calling this.
pub fn decode<M: serde::de::DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<M, WireError> {
    let plain = super::compress::unpack(bytes)?;
    decode_plain(&plain)
}

/// Decodes one plain (not compressed) frame.
fn decode_plain<M: serde::de::DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<M, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return Err(WireError::UnsupportedVersion(version));
    }
    let (msg, rest): (M, _) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    if msg.version() != version {
        return Err(WireError::Malformed(format!(
            "a version-{} message under version byte {version}",
            msg.version()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> DocumentId {
        "p-1/journal/2026-11".parse().unwrap()
    }

    #[test]
    fn small_messages_share_a_write_and_a_large_one_goes_alone() {
        // Nothing written yet: never a flush, however large the message.
        assert!(!flush_before(0, 10 * ONE_WRITE_BYTES));
        // A relay's signatures (about 200 bytes) and its batch (about 400) share one write.
        assert!(!flush_before(213, 395));
        // Exactly full is still one write; one byte more is two.
        assert!(!flush_before(ONE_WRITE_BYTES - 100, 100));
        assert!(flush_before(ONE_WRITE_BYTES - 100, 101));
        // A small message never waits for a large batch behind it.
        assert!(flush_before(29, 32 * 1024));
    }

    /// Snapshots of the encodings: a change here breaks deployed peers, so it needs a new
    /// protocol version.
    #[test]
    fn encodings_are_stable() {
        let hello = DeviceMessage::Hello(Hello {
            cursor: Some(Cursor {
                epoch: [7; 16],
                position: 300,
            }),
            received: vec![(302, 305)],
            priority: vec![PatientId::new("p-1").unwrap()],
            backfill: vec![],
            upload: vec![DocChanges {
                doc: doc(),
                changes: vec![vec![1, 2, 3]],
                positions: vec![],
            }],
        });
        assert_eq!(
            hex::encode(encode(&hello).unwrap()),
            "01000107070707070707070707070707070707ac0201ae02b10201".to_owned()
                + "03702d31000113702d312f6a6f75726e616c2f323032362d3131010301020300"
        );
        let ack = ServerMessage::UploadAck {
            upload: 0,
            refused: vec![Refused {
                index: 2,
                code: RefusalCode::NotPermitted,
                detail: "x".into(),
            }],
        };
        assert_eq!(hex::encode(encode(&ack).unwrap()), "0100000102000178");
        let batch = ServerMessage::Batch {
            batch: 1,
            docs: vec![DocChanges {
                doc: doc(),
                changes: vec![vec![9]],
                positions: vec![301],
            }],
            cursor: Cursor {
                epoch: [0; 16],
                position: 301,
            },
            backfill: vec![Backfill {
                patient: PatientId::new("p-2").unwrap(),
                progress: 7,
                until: 9,
            }],
            remaining: 0,
        };
        assert_eq!(
            hex::encode(encode(&batch).unwrap()),
            "0101010113702d312f6a6f75726e616c2f323032362d3131010109".to_owned()
                + "01ad0200000000000000000000000000000000ad020103702d32070900"
        );
        let bytes = encode(&hello).unwrap();
        assert_eq!(decode::<DeviceMessage>(&bytes).unwrap(), hello);
        for msg in [ack, batch] {
            let bytes = encode(&msg).unwrap();
            assert_eq!(decode::<ServerMessage>(&bytes).unwrap(), msg);
        }
    }

    /// Version 2 only adds messages: the clocks, each under version byte 2.
    #[test]
    fn version_2_messages_are_stable() {
        let hello = DeviceMessage::TimedHello {
            hello: Hello {
                cursor: None,
                received: vec![],
                priority: vec![],
                backfill: vec![],
                upload: vec![],
            },
            device_ms: 1_000,
        };
        assert_eq!(hex::encode(encode(&hello).unwrap()), "02050000000000d00f");
        let time = ServerMessage::Time {
            device_ms: 1_000,
            server_ms: -1,
        };
        assert_eq!(hex::encode(encode(&time).unwrap()), "0207d00f01");
        assert_eq!(
            decode::<DeviceMessage>(&encode(&hello).unwrap()).unwrap(),
            hello
        );
        assert_eq!(
            decode::<ServerMessage>(&encode(&time).unwrap()).unwrap(),
            time
        );
        // One encoding per message: a version-1 message under byte 2, or the reverse, is
        // malformed.
        let mut ack = encode(&DeviceMessage::BatchAck { batch: 1 }).unwrap();
        ack[0] = 2;
        assert!(matches!(
            decode::<DeviceMessage>(&ack),
            Err(WireError::Malformed(_))
        ));
        let mut time = encode(&time).unwrap();
        time[0] = 1;
        assert!(matches!(
            decode::<ServerMessage>(&time),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            decode::<DeviceMessage>(&[4, 0]),
            Err(WireError::UnsupportedVersion(4))
        );
    }

    /// Version 3's signed uploads and relayed signatures, each under version byte 3.
    #[test]
    fn signature_messages_are_stable() {
        let sig = HeadsSignature {
            doc: doc(),
            heads: vec![[1; 32]],
            device: DeviceId::new("d").unwrap(),
            signature: vec![2; 64],
        };
        let upload = DeviceMessage::Upload3 {
            upload: 1,
            docs: vec![],
            signatures: vec![sig.clone()],
        };
        let bytes = encode(&upload).unwrap();
        assert_eq!(bytes[0], 3);
        // Per document: its id, the heads (32 bytes each), the device and 64 bytes.
        assert_eq!(bytes.len(), 1 + 1 + 1 + 1 + 1 + 20 + 1 + 32 + 2 + 1 + 64);
        assert_eq!(decode::<DeviceMessage>(&bytes).unwrap(), upload);
        let relay = ServerMessage::Signatures {
            keys: vec![SignerKey {
                device: DeviceId::new("d").unwrap(),
                key: [3; 32],
            }],
            signatures: vec![sig],
        };
        let bytes = encode(&relay).unwrap();
        assert_eq!(hex::encode(&bytes[..6]), "030901016403");
        assert_eq!(decode::<ServerMessage>(&bytes).unwrap(), relay);
        let ack = ServerMessage::UploadAck {
            upload: 0,
            refused: vec![Refused {
                index: 0,
                code: RefusalCode::BadSignature,
                detail: String::new(),
            }],
        };
        assert_eq!(hex::encode(encode(&ack).unwrap()), "01000001000500");
    }

    /// Version 3's recovery messages, each under version byte 3.
    #[test]
    fn version_3_recovery_messages_are_stable() {
        let cursor = Cursor {
            epoch: [1; 16],
            position: 5,
        };
        let heads = DeviceMessage::Heads {
            chunk: 1,
            docs: vec![DocHeads {
                doc: doc(),
                heads: vec![[2; 32]],
            }],
        };
        let recovered = DeviceMessage::Recovered {
            cursor,
            patients: vec![PatientId::new("p-1").unwrap()],
        };
        let batch = ServerMessage::Batch3 {
            batch: 0,
            docs: vec![],
            cursor,
            backfill: vec![],
            remaining: 0,
            proof: [3; 32],
        };
        let recover = ServerMessage::Recover {
            cursor,
            proof: [4; 32],
        };
        let reconcile = ServerMessage::Reconcile {
            chunk: 1,
            docs: vec![DocChanges {
                doc: doc(),
                changes: vec![vec![9]],
                positions: vec![],
            }],
            lacks: vec![],
            again: vec![doc()],
        };
        let hex_of = |b: Vec<u8>| hex::encode(b);
        assert_eq!(
            hex_of(encode(&heads).unwrap()),
            "03080101".to_owned()
                + "13702d312f6a6f75726e616c2f323032362d3131"
                + "01"
                + &"02".repeat(32)
        );
        assert_eq!(
            hex_of(encode(&recovered).unwrap()),
            "0309".to_owned() + &"01".repeat(16) + "050103702d31"
        );
        assert_eq!(
            hex_of(encode(&batch).unwrap()),
            "030a0000".to_owned() + &"01".repeat(16) + "050000" + &"03".repeat(32)
        );
        assert_eq!(
            hex_of(encode(&recover).unwrap()),
            "030b".to_owned() + &"01".repeat(16) + "05" + &"04".repeat(32)
        );
        assert_eq!(
            hex_of(encode(&reconcile).unwrap()),
            "030c0101".to_owned()
                + "13702d312f6a6f75726e616c2f323032362d3131"
                + "01010900"
                + "00"
                + "01"
                + "13702d312f6a6f75726e616c2f323032362d3131"
        );
        for msg in [heads, recovered] {
            assert_eq!(
                decode::<DeviceMessage>(&encode(&msg).unwrap()).unwrap(),
                msg
            );
        }
        for msg in [batch, recover, reconcile] {
            assert_eq!(
                decode::<ServerMessage>(&encode(&msg).unwrap()).unwrap(),
                msg
            );
        }
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        assert_eq!(decode::<DeviceMessage>(&[]), Err(WireError::Empty));
        assert_eq!(
            decode::<DeviceMessage>(&[0, 0]),
            Err(WireError::UnsupportedVersion(0))
        );
        assert!(matches!(
            decode::<DeviceMessage>(&[1, 200]),
            Err(WireError::Malformed(_))
        ));
        let ok = encode(&DeviceMessage::BatchAck { batch: 1 }).unwrap();
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<DeviceMessage>(&trailing),
            Err(WireError::Malformed(_))
        ));
        let huge = vec![1u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode::<DeviceMessage>(&huge),
            Err(WireError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        // A bad document id inside an otherwise well-formed message.
        let bad = encode(&DeviceMessage::AmSync {
            doc: doc(),
            message: vec![],
        })
        .unwrap();
        let text = hex::encode(&bad).replace(&hex::encode("journal"), &hex::encode("journox"));
        let bad = hex::decode(text).unwrap();
        assert!(matches!(
            decode::<DeviceMessage>(&bad),
            Err(WireError::Malformed(_))
        ));
    }
}
