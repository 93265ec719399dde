//! Commits per live edit (issue 13, `latency`): two watching phones, a real server over TLS.
//! The writing phone commits its edit, the acknowledgement of its upload together with its
//! in-sync marks (the acknowledgement is what makes it quiet again), and the batch that moves
//! its cursor past its own change: three commits per edit, where the marks used to cost a
//! fourth. Only the edit's is durable on its own (an fsync): the other two record what the
//! server tells again, and commit relaxed (`sync-core`'s `protocol/device/relaxed.rs`). The
//! receiving phone commits once per edit, durably. Commits are counted in each phone's SQLite
//! write-ahead log (one commit frame per transaction that wrote), relaxed ones by the store.
//! The server commits once per edit: the upload, and in the same transaction its delivery to
//! the reader's session (parked with the group-commit worker, `server/src/app/parked.rs`) with
//! its disclosure record; it was two commits, each an fsync, before. What the server sends the
//! reader for an edit (the change's signatures and its batch) leaves in one write: one TLS
//! record, counted on the reader's connection (it was two writes, which a busy server could pull
//! apart).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use nara_client::{Device, Dialer, Status, SyncOptions, Transport, care};
use nara_tests::care::{clock, enroll_runtime};
use nara_tests::net::TestServer;
use nara_tests::patient;
use server::directory::Directory;
use sync_core::{Role, UserId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Commits in the write-ahead log at `wal` since it last restarted (frames whose "database size
/// after commit" is set, under the log's current salts); as `incarnation_tests/one_commit.rs`.
fn commits(wal: &Path) -> usize {
    let b = std::fs::read(wal).unwrap_or_default();
    if b.len() < 32 {
        return 0;
    }
    let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let page = word(8) as usize;
    let salt = &b[16..24];
    let (mut n, mut at) = (0, 32);
    while at + 24 + page <= b.len() && &b[at + 8..at + 16] == salt {
        if word(at + 4) != 0 {
            n += 1;
        }
        at += 24 + page;
    }
    n
}

/// A TCP connection that counts the TLS application-data records it reads (the server's writes,
/// each flushed write one record while it is under 16 KiB).
struct CountRecords {
    tcp: tokio::net::TcpStream,
    records: Arc<AtomicUsize>,
    /// The record header read so far, and the bytes of the record's body still to come.
    header: Vec<u8>,
    body_left: usize,
}

impl CountRecords {
    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 5 {
                // Content type 23: application data.
                if self.header[0] == 23 {
                    self.records.fetch_add(1, Ordering::SeqCst);
                }
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.header.clear();
            }
        }
    }
}

impl AsyncRead for CountRecords {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled()[before..].to_vec();
            self.saw(&read);
        }
        polled
    }
}

impl AsyncWrite for CountRecords {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Dials `addr`, counting into `records` the TLS records the server sends.
fn counting(addr: std::net::SocketAddr, records: Arc<AtomicUsize>) -> Dialer {
    Arc::new(move || {
        let records = records.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            Ok(Box::new(CountRecords {
                tcp,
                records,
                header: Vec::new(),
                body_left: 0,
            }) as Box<dyn Transport>)
        })
    })
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen in time"));
}

/// Whether `d` holds the note `r`.
fn has(d: &Device, r: &care::Recorded) -> bool {
    d.with_repo(|repo| {
        repo.get(&r.document)
            .map(|doc| doc.events().contains_key(&r.record))
            .unwrap_or(false)
    })
}

fn in_sync(d: &Device) -> bool {
    matches!(d.status(), Status::InSync { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_edit_costs_the_writer_three_commits_one_durable_the_server_one_and_the_reader_one()
{
    let server = TestServer::start().await;
    let d = &server.directory;
    d.add_org("norr", "Hemtjänst Norr").unwrap();
    for u in ["anna", "bo"] {
        d.add_user(&UserId::new(u).unwrap(), u, Role::Carer, "norr")
            .unwrap();
    }
    d.add_patient(&patient("p1"), "p1").unwrap();
    for u in ["anna", "bo"] {
        d.assign(&UserId::new(u).unwrap(), &patient("p1")).unwrap();
    }
    server.state.refresh().unwrap();
    let homes = tempfile::tempdir().unwrap();
    let (home_a, home_b) = (homes.path().join("anna"), homes.path().join("bo"));
    let a = Arc::new(enroll_runtime(&server, &home_a, "anna", SyncOptions::default()).await);
    let records_b = Arc::new(AtomicUsize::new(0));
    let b = Arc::new(
        enroll_runtime(&server, &home_b, "bo", SyncOptions::default())
            .await
            .with_dialer(counting(server.addr, records_b.clone())),
    );
    let (wal_a, wal_b) = (home_a.join("device.db-wal"), home_b.join("device.db-wal"));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|d| {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                d.watch(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
            })
        })
        .collect();
    until("both phones in sync", || in_sync(&a) && in_sync(&b)).await;
    // A first edit settles what a first upload does once (the document created on the reader).
    let first = care::add_note(&a, &patient("p1"), "first", &clock()).unwrap();
    until("the first note on the reader", || has(&b, &first)).await;
    until("both phones quiet", || {
        in_sync(&a) && in_sync(&b) && a.pending_count().unwrap() == 0
    })
    .await;

    const EDITS: usize = 5;
    let (before_a, before_b) = (commits(&wal_a), commits(&wal_b));
    let wal_server = server.data.path().join("nara.db-wal");
    let before_server = commits(&wal_server);
    let relaxed = |d: &Device| d.with_repo(|repo| repo.store().relaxed_commits());
    let (relaxed_a, relaxed_b) = (relaxed(&a), relaxed(&b));
    let parked_steps = || {
        server
            .state
            .metrics()
            .parked_steps
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let parked_before = parked_steps();
    let records_before = records_b.load(Ordering::SeqCst);
    for n in 0..EDITS {
        // Both connections wait, their sessions parked (`server/src/app/parked.rs`): the reader's
        // is not on a step of its own (its last acknowledgement) when the upload's group runs.
        until("both sessions parked", || {
            server.state.parked_sessions() == 2
        })
        .await;
        let saved = care::add_note(&a, &patient("p1"), &format!("note {n}"), &clock()).unwrap();
        until("the note on the reader", || has(&b, &saved)).await;
        // The writer's acknowledgement and its cursor's batch are in before the next edit.
        until("the writer quiet", || {
            in_sync(&a) && a.pending_count().unwrap() == 0
        })
        .await;
    }
    // The writer's last cursor batch may still be on its way: wait until its count settles.
    let mut last = commits(&wal_a);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = commits(&wal_a);
        if now == last {
            break;
        }
        last = now;
    }
    let (spent_a, spent_b) = (commits(&wal_a) - before_a, commits(&wal_b) - before_b);
    let spent_server = commits(&wal_server) - before_server;
    let delivered_in_group = parked_steps() - parked_before;
    let records = records_b.load(Ordering::SeqCst) - records_before;
    let durable_a = spent_a - (relaxed(&a) - relaxed_a) as usize;
    let durable_b = spent_b - (relaxed(&b) - relaxed_b) as usize;
    stop.send(true).unwrap();
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("watch did not stop")
            .unwrap()
            .unwrap();
    }
    // At least one commit per edit on each phone: the logs were not restarted meanwhile.
    assert!(spent_a >= EDITS && spent_b >= EDITS, "{spent_a} {spent_b}");
    assert!(
        spent_a <= 3 * EDITS,
        "the writer: the edit, the acknowledgement with the in-sync marks, the cursor's batch; \
         {spent_a} commits for {EDITS} edits"
    );
    assert!(
        spent_b <= EDITS,
        "the reader: one commit per received batch; {spent_b} commits for {EDITS} edits"
    );
    assert_eq!(
        durable_a, EDITS,
        "the writer: one fsync per edit, its own ({spent_a} commits, {durable_a} durable)"
    );
    assert!(
        delivered_in_group >= EDITS as u64,
        "each upload's group stepped the reader's parked session: {delivered_in_group}"
    );
    assert_eq!(
        spent_server, EDITS,
        "the server: the upload and its delivery to the reader, with their audit records, in one \
         commit; {spent_server} commits for {EDITS} edits"
    );
    // One record per edit (a ping of the server's may add one); two writes per edit were
    // two records.
    assert!(
        (EDITS..2 * EDITS).contains(&records),
        "the reader: each edit's signatures and batch in one write from the server; {records} \
         TLS records for {EDITS} edits"
    );
    assert_eq!(
        durable_b, spent_b,
        "the reader's batches hold changes: each commit durable before its acknowledgement"
    );
}
