//! The device runtime tells the app what it stored before it writes what that turn queued
//! (`client/src/device/connection.rs`): a change that arrived is durable before its event, so
//! the event need not wait on the acknowledgement's write, and a connection cut right after the
//! batch was stored must not swallow the news of it (the next connection starts past that
//! batch: nothing would tell the app again).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use nara_client::{Dialer, Status, SyncOptions, Transport};
use nara_tests::care::{enroll_runtime, has_note};
use nara_tests::net::TestServer;
use nara_tests::team::{add_team, assign, journal};
use nara_tests::{at, rid};
use sync_core::model::EventBody;
use sync_core::protocol::DeviceEvent;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP stream to the server whose writes fail once [`Cut::armed`] is set and a read has
/// brought bytes since: the connection breaks right after the device took a message.
struct Cutting {
    tcp: tokio::net::TcpStream,
    cut: Arc<Cut>,
    broken: bool,
}

#[derive(Default)]
struct Cut {
    armed: AtomicBool,
    /// Writes refused.
    refused: AtomicUsize,
}

impl AsyncRead for Cutting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.cut.armed.swap(false, Ordering::SeqCst)
        {
            this.broken = true;
        }
        r
    }
}

impl AsyncWrite for Cutting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.broken {
            this.cut.refused.fetch_add(1, Ordering::SeqCst);
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

fn cutting(server: &TestServer, cut: Arc<Cut>) -> Dialer {
    let addr = server.addr;
    Arc::new(move || {
        let cut = cut.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            Ok(Box::new(Cutting {
                tcp,
                cut,
                broken: false,
            }) as Box<dyn Transport>)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stored_just_before_the_connection_breaks_is_still_reported() {
    let server = TestServer::start().await;
    add_team(&server);
    for user in ["anna", "nina"] {
        assign(&server, user, "p1");
    }
    let homes = tempfile::tempdir().unwrap();
    let options = SyncOptions {
        backoff_min: Duration::from_millis(50),
        ..SyncOptions::default()
    };
    let anna = enroll_runtime(&server, &homes.path().join("anna"), "anna", options.clone()).await;
    let cut = Arc::new(Cut::default());
    let nina = Arc::new(
        enroll_runtime(&server, &homes.path().join("nina"), "nina", options)
            .await
            .with_dialer(cutting(&server, cut.clone())),
    );
    let mut events = nina.events();
    let mut status = nina.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watching = tokio::spawn({
        let nina = nina.clone();
        async move {
            nina.watch(async {
                let _ = stopped.await;
            })
            .await
        }
    });
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| matches!(s, Status::InSync { .. })),
    )
    .await
    .expect("the nurse's phone never got in sync")
    .unwrap();

    // The next thing the nurse's phone reads is Anna's note; its acknowledgement cannot be
    // written.
    cut.armed.store(true, Ordering::SeqCst);
    anna.change(&journal("p1"), at(9, 0), |e| {
        e.record(
            rid("n-1"),
            EventBody::Note {
                body: "Fell in the hall, no injury.".into(),
                corrects: None,
            },
        )
    })
    .unwrap();
    anna.sync_once().await.unwrap();

    let reported = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await {
                Ok(DeviceEvent::DocumentUpdated { doc }) if doc == journal("p1") => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the phone's events ended: {e}"),
            }
        }
    })
    .await;
    // The phone stored the note, and its connection did break on the acknowledgement.
    assert!(has_note(&nina, "Fell in the hall, no injury."));
    assert!(cut.refused.load(Ordering::SeqCst) > 0);
    assert!(
        reported.is_ok(),
        "the note was stored but the app was never told: the event went with the cut connection"
    );
    let _ = stop.send(());
    watching.await.unwrap().unwrap();
}
