//! Early frames (issue 13, docs/protocol.md "Early frames"): the device runtime writes its hello
//! and first uploads right behind the WebSocket upgrade request, so the real server stores them
//! before the device has read a byte of the server's answer; a refused upgrade still erases a
//! revoked phone (tests/tests/hostile_device.rs); a device told to wait for the upgrade, or
//! whose last connection failed before the answer was read, sends nothing before it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use nara_client::{Dialer, SyncOptions, Transport};
use nara_tests::care::{enroll_runtime, has_note, write_note};
use nara_tests::net::TestServer;
use nara_tests::team::{add_team, assign, uid};
use server::directory::Directory;
use sync_core::Role;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP stream to the server whose reads stop for good once the device, having read the
/// server's TLS flight, has written more than [`CLOSE_AFTER`] bytes (its TLS finish and the
/// upgrade request, which carries the credential: a few hundred bytes; TLS's own messages in
/// between are a few dozen): the device never sees the upgrade's answer, nor anything after
/// it. Writes go through.
struct Gate {
    tcp: tokio::net::TcpStream,
    read_any: AtomicBool,
    written_after: AtomicUsize,
    /// Once closed, reads end the stream (a connection cut before the answer) instead of
    /// waiting forever.
    eof: bool,
}

const CLOSE_AFTER: usize = 200;

impl AsyncRead for Gate {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.written_after.load(Ordering::SeqCst) > CLOSE_AFTER {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Never woken: the answer never arrives.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.read_any.store(true, Ordering::SeqCst);
        }
        r
    }
}

impl AsyncWrite for Gate {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if this.read_any.load(Ordering::SeqCst) {
                this.written_after.fetch_add(n, Ordering::SeqCst);
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Gated connections to `server`; the first `cut` of them are cut before the answer.
fn gated(server: &TestServer, cut: usize) -> Dialer {
    let addr = server.addr;
    let dialed = Arc::new(AtomicUsize::new(0));
    Arc::new(move || {
        let n = dialed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let gate = Gate {
                tcp,
                read_any: AtomicBool::new(false),
                written_after: AtomicUsize::new(0),
                eof: n < cut,
            };
            Ok(Box::new(gate) as Box<dyn Transport>)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_stored_before_the_device_reads_the_upgrade_answer() {
    let server = TestServer::start().await;
    add_team(&server);
    server
        .directory
        .add_user(&uid("carl"), "Carl", Role::Carer, "norr")
        .unwrap();
    for user in ["anna", "bo", "carl", "nina"] {
        assign(&server, user, "p1");
    }
    let homes = tempfile::tempdir().unwrap();
    let options = SyncOptions {
        connect_timeout: Duration::from_secs(600),
        ..SyncOptions::default()
    };
    let nina = enroll_runtime(&server, &homes.path().join("nina"), "nina", options.clone()).await;
    // Anna's phone writes early frames (the default); Bo's waits for the upgrade first.
    let anna = Arc::new(
        enroll_runtime(&server, &homes.path().join("anna"), "anna", options.clone())
            .await
            .with_dialer(gated(&server, 0)),
    );
    let bo = Arc::new(
        enroll_runtime(
            &server,
            &homes.path().join("bo"),
            "bo",
            SyncOptions {
                early_frames: false,
                ..options.clone()
            },
        )
        .await
        .with_dialer(gated(&server, 0)),
    );
    // Carl's phone writes early frames, but its first connection is cut before the answer:
    // the next one waits for the upgrade.
    let carl = Arc::new(
        enroll_runtime(&server, &homes.path().join("carl"), "carl", options.clone())
            .await
            .with_dialer(gated(&server, 1)),
    );
    write_note(&carl, "p1", "n-carl", "After a cut, waits for the upgrade.");
    assert!(carl.sync_once().await.is_err());
    write_note(&anna, "p1", "n-anna", "Sent behind the upgrade.");
    write_note(&bo, "p1", "n-bo", "Waits for the upgrade.");
    let anna_sync = tokio::spawn({
        let anna = anna.clone();
        async move { anna.sync_once().await }
    });
    let bo_sync = tokio::spawn({
        let bo = bo.clone();
        async move { bo.sync_once().await }
    });
    let carl_sync = tokio::spawn({
        let carl = carl.clone();
        async move { carl.sync_once().await }
    });

    // The server stored Anna's note (the nurse receives it), though Anna's phone never read
    // the server's answer to its upgrade.
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            nina.sync_once().await.unwrap();
            if has_note(&nina, "Sent behind the upgrade.") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the server never stored the upload written behind the upgrade request");
    // Anna's phone, which saw no acknowledgement, still holds its note as pending: nothing is
    // taken as stored before the server says so.
    assert!(!anna_sync.is_finished());
    assert_eq!(anna.pending_count().unwrap(), 1);
    // Bo's phone, told to wait for the upgrade, has sent nothing: its hello is never written
    // while the answer is unread.
    assert!(!bo_sync.is_finished());
    assert!(!has_note(&nina, "Waits for the upgrade."));
    assert_eq!(bo.pending_count().unwrap(), 1);
    assert!(!carl_sync.is_finished());
    assert!(!has_note(&nina, "After a cut, waits for the upgrade."));
    assert_eq!(carl.pending_count().unwrap(), 1);
    anna_sync.abort();
    bo_sync.abort();
    carl_sync.abort();
}
