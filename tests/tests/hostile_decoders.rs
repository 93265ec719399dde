//! Issue 11, hole 1: no device input reaches Automerge's decoders unbounded. An enrolled but
//! hostile device (bo) attacks the real server over TLS with
//!
//! - a sync message whose Bloom filter asks for 2^27 probes per hash (Automerge 0.12 would
//!   allocate 512 MiB for every hash it checks; with `u32::MAX` it aborts the process),
//! - an upload of a "compressed change" chunk that inflates to 600 MiB,
//! - a fallback sync message carrying a "document" whose DEFLATE column inflates to 600 MiB,
//!
//! - valid fallback sync messages whose Bloom filters (3 MiB each, kept until the next message
//!   of their document) add up across documents,
//!
//! and, found by fuzzing `wire`, a hello claiming incarnation 4 billion (work without bound on
//! the server's sync lane rather than memory), while an honest pair of devices keeps syncing
//! and converges. Each is refused with a typed
//! reason (the connection's `Close` as `Malformed`, or the change's `Malformed` refusal), is
//! audited, and the process's peak resident memory (VmHWM, reset just before the attack through
//! `/proc/self/clear_refs`) stays within 256 MiB of its resident memory before the attack.
//! Without `sync_core::model::admit` each attack allocates more than twice that.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::Write;

use nara_tests::hostile::*;
use nara_tests::net::{TestDevice, TestServer};
use nara_tests::raw::*;
use sync_core::protocol::wire::{
    self, CloseReason, DeviceMessage, Hello, IncarnationClaim, RefusalCode, ServerMessage,
};

/// The attacks measure the whole process's memory: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How far above its idle figure the process's resident memory may go under an attack.
const MEMORY_HEADROOM: u64 = 256 * 1024 * 1024;

/// What each bomb inflates to (more than twice the headroom).
const BOMB_BYTES: usize = 600 * 1024 * 1024;

/// A field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs `attack` and asserts that the process's peak resident memory during it stayed within
/// [`MEMORY_HEADROOM`] of its resident memory before it.
async fn within_memory<T>(attack: impl Future<Output = T>) -> T {
    let idle = status_bytes("VmRSS:");
    // Resets VmHWM to the current resident size (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let out = attack.await;
    let peak = status_bytes("VmHWM:");
    assert!(
        peak <= idle + MEMORY_HEADROOM,
        "resident memory peaked at {} MiB, {} MiB above idle",
        peak >> 20,
        (peak.saturating_sub(idle)) >> 20
    );
    out
}

// ---- the bombs ----

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// `BOMB_BYTES` zeros, raw DEFLATE (about 600 KiB).
fn deflate_bomb() -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB_BYTES >> 20 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

/// An Automerge chunk: magic bytes, a checksum, the type, the length, the data.
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    leb(&mut out, data.len() as u64);
    out.extend_from_slice(data);
    out
}

/// A sync message (v1): no heads, no needs, the given `have` blooms, the given chunks.
fn sync_message(blooms: &[Vec<u8>], chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0x42, 0, 0];
    leb(&mut out, blooms.len() as u64);
    for bloom in blooms {
        out.push(0); // no last_sync hashes
        leb(&mut out, bloom.len() as u64);
        out.extend_from_slice(bloom);
    }
    leb(&mut out, chunks.len() as u64);
    for c in chunks {
        leb(&mut out, c.len() as u64);
        out.extend_from_slice(c);
    }
    out
}

/// One entry, 10 bits per entry, `probes` probes, and its two bytes of bits.
fn bloom(probes: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [1, 10, u64::from(probes)] {
        leb(&mut out, v);
    }
    out.extend([0xff, 0xff]);
    out
}

/// A `have` filter of `bytes` bytes of bits, all clear (8 bits an entry, 7 probes): valid, and
/// kept by Automerge until the device's next message of the document.
fn clear_bloom(bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [bytes as u64, 8, 7] {
        leb(&mut out, v);
    }
    out.resize(out.len() + bytes, 0);
    out
}

/// A document chunk with one change column, DEFLATE-compressed, holding `column`.
fn document_bomb(column: &[u8]) -> Vec<u8> {
    let mut data = vec![0, 0]; // no actors, no heads
    data.push(1); // one change column:
    leb(&mut data, 0x10 | 0b1000); // id 1, type 0, deflated
    leb(&mut data, column.len() as u64);
    data.push(0); // no op columns
    data.extend_from_slice(column);
    chunk(0, &data)
}

/// Sends hello, then `msg`, from bo's raw connection; returns the reason the server closed with.
async fn closed_for(server: &TestServer, bo: &TestDevice, msg: DeviceMessage) -> CloseReason {
    let mut raw = Raw::connect(server, bo).await;
    raw.hello(Vec::new()).await;
    raw.send(&msg).await;
    raw.refusal().await.0
}

// ---- the attacks ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_bloom_bomb_sync_message_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    // The server holds changes of p1's journal to check against the filter.
    let mut bo = bo;
    note(&mut bo, "p1", "bo-1", "A visit.");
    quiet(bo.sync(&server).await);
    let bomb = sync_message(&[bloom(1 << 27)], &[]);
    let reason = within_memory(with_honest_pair(
        &server,
        &mut nina,
        &mut anna,
        "bloom",
        closed_for(
            &server,
            &bo,
            DeviceMessage::AmSync {
                doc: journal("p1"),
                message: bomb,
            },
        ),
    ))
    .await;
    assert_eq!(reason, CloseReason::Malformed);
    let audited = audited(&server, "disconnect", &bo.author, 1).await;
    // The reason only: what a decoder says can quote the device's bytes.
    assert!(
        audited.iter().any(|d| d.contains("Malformed")),
        "{audited:?}"
    );
    // An honest filter is still answered: bo syncs normally afterwards.
    quiet(bo.sync(&server).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_compressed_change_inflation_bomb_upload_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let bomb = chunk(2, &deflate_bomb());
    assert!(bomb.len() < wire::MAX_CHANGE_BYTES);
    let codes = within_memory(with_honest_pair(
        &server,
        &mut nina,
        &mut anna,
        "inflate",
        async {
            let mut raw = Raw::connect(&server, &bo).await;
            raw.hello(changes(journal("p1"), vec![bomb])).await;
            loop {
                match raw.message().await {
                    Some(ServerMessage::UploadAck { upload: 0, refused }) => {
                        raw.write(&Raw::frame(CLOSE, true, &[])).await;
                        return refused.into_iter().map(|r| r.code).collect::<Vec<_>>();
                    }
                    Some(ServerMessage::Close { reason, detail }) => {
                        panic!("the connection was closed: {reason:?} {detail}")
                    }
                    Some(_) => {}
                    None => panic!("the connection ended before the upload was answered"),
                }
            }
        },
    ))
    .await;
    assert_eq!(codes, vec![RefusalCode::Malformed]);
    let audited = audited(&server, "refuse", &bo.author, 1).await;
    assert!(
        audited.iter().any(|d| d.contains("Malformed")),
        "{audited:?}"
    );
}

/// Each fallback sync message of a document is kept (its Bloom filters) until the device's
/// next one of that document, for up to 10,000 documents a connection: bo sends one valid
/// filter of 3 MiB for each month's journal of p1 (one of zeros compresses to a few KiB on the
/// wire). The connection keeps at most `MAX_AM_STATE_BYTES` of them, then is closed; without
/// the bound, 120 filters were 360 MiB, kept while the connection lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_fallback_sync_filters_kept_are_bounded_per_connection() {
    use sync_core::protocol::server::MAX_AM_STATE_BYTES;

    let _one = ONE_AT_A_TIME.lock().await;
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    const FILTER: usize = 3 << 20;
    const MONTHS: u16 = 120;
    let filter = sync_message(&[clear_bloom(FILTER)], &[]);
    assert!(filter.len() + 1024 < wire::MAX_MESSAGE_BYTES);
    let (reason, kept) = within_memory(with_honest_pair(
        &server,
        &mut nina,
        &mut anna,
        "filters",
        async {
            let mut raw = Raw::connect(&server, &bo).await;
            raw.hello(Vec::new()).await;
            for n in 0..MONTHS {
                raw.send(&DeviceMessage::AmSync {
                    doc: nara_tests::team::journal_of_month("p1", n),
                    message: filter.clone(),
                })
                .await;
                // The server answers each (a first message of a document always is).
                loop {
                    match raw.message().await {
                        Some(ServerMessage::AmSync { .. }) => break,
                        Some(ServerMessage::Close { reason, .. }) => return (reason, n),
                        Some(_) => {}
                        None => panic!("the connection ended without a reason"),
                    }
                }
            }
            panic!("{MONTHS} filters of {FILTER} bytes were all kept");
        },
    ))
    .await;
    assert_eq!(reason, CloseReason::ProtocolViolation);
    assert_eq!(usize::from(kept), MAX_AM_STATE_BYTES / filter.len());
    audited(&server, "disconnect", &bo.author, 1).await;
    // bo's honest app syncs after.
    quiet(bo.sync(&server).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_fallback_document_bomb_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let World {
        server,
        mut nina,
        mut anna,
        bo,
    } = world(short()).await;
    let bomb = sync_message(&[], &[document_bomb(&deflate_bomb())]);
    assert!(bomb.len() < wire::MAX_MESSAGE_BYTES);
    let reason = within_memory(with_honest_pair(
        &server,
        &mut nina,
        &mut anna,
        "document",
        closed_for(
            &server,
            &bo,
            DeviceMessage::AmSync {
                doc: journal("p1"),
                message: bomb,
            },
        ),
    ))
    .await;
    assert_eq!(reason, CloseReason::Malformed);
    let audited = audited(&server, "disconnect", &bo.author, 1).await;
    assert!(
        audited.iter().any(|d| d.contains("Malformed")),
        "{audited:?}"
    );
}

/// Found by fuzzing `wire` (a 21-byte input that took 17 s): a hello claiming incarnation
/// `u32::MAX` with no cursor, which a server whose store was put back from a backup cannot
/// refute, was taken, and the server then read one row per number below it for the people
/// disclosed to the device's other incarnations: billions of reads on the sync lane, which
/// every device's sync waits for on SQLite. The claim is refused at once (a device has at most
/// `MAX_INCARNATION`), the device's record is unchanged, and its honest app syncs after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_hello_claiming_four_billion_incarnations_is_refused() {
    let World {
        server,
        mut nina,
        mut anna,
        mut bo,
    } = world(short()).await;
    let hello = DeviceMessage::Hello3 {
        hello: Hello {
            cursor: None,
            received: Vec::new(),
            priority: Vec::new(),
            backfill: Vec::new(),
            upload: Vec::new(),
        },
        device_ms: server::app::now_ms(),
        incarnation: IncarnationClaim {
            number: u32::MAX,
            written: 0,
            last: None,
        },
        feed_proof: None,
        signatures: Vec::new(),
    };
    let reason = with_honest_pair(&server, &mut nina, &mut anna, "incarnation", async {
        let mut raw = Raw::connect(&server, &bo).await;
        raw.send(&hello).await;
        raw.refusal().await.0
    })
    .await;
    assert_eq!(reason, CloseReason::ProtocolViolation);
    audited(&server, "disconnect", &bo.author, 1).await;
    // Nothing of the claim was stored: no number was issued to bo.
    let key = format!("incarnations/{}", bo.author.device);
    let record: Option<Vec<u8>> = raw_db(&server)
        .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| {
            r.get(0)
        })
        .ok();
    let issued = record
        .map(|v| {
            serde_json::from_slice::<sync_core::protocol::server::DeviceIncarnations>(&v)
                .unwrap()
                .issued
        })
        .unwrap_or(0);
    assert_eq!(issued, 0);
    quiet(bo.sync(&server).await);
}
