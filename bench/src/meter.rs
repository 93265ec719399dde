//! A counting TCP proxy: every connection accepted on `addr` is relayed to `upstream`, and the
//! bytes and flights (maximal runs of bytes in one direction) are counted over all connections.
//!
//! Flights are counted per connection: a read in one direction after the last read on that
//! connection was in the other direction (or the first read) starts a new flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes and flights seen by a [`CountingProxy`] since it started (or was last reset).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Traffic {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub flights_up: u64,
    pub flights_down: u64,
}

#[derive(Debug, Default)]
struct Counters {
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    flights_up: AtomicU64,
    flights_down: AtomicU64,
}

/// A TCP relay on localhost that counts what passes through it. Dropping it stops accepting
/// (connections already open keep relaying until either side closes).
#[derive(Debug)]
pub struct CountingProxy {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

const UP: u8 = 1;
const DOWN: u8 = 2;

/// Starts a proxy on 127.0.0.1 (an ephemeral port) relaying to `upstream`.
pub async fn start(upstream: SocketAddr) -> std::io::Result<CountingProxy> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(client, server, c).await;
            });
        }
    });
    Ok(CountingProxy {
        addr,
        counters,
        accept,
    })
}

impl CountingProxy {
    pub fn traffic(&self) -> Traffic {
        let c = &self.counters;
        Traffic {
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
            flights_up: c.flights_up.load(Ordering::SeqCst),
            flights_down: c.flights_down.load(Ordering::SeqCst),
        }
    }

    /// Zeroes the counters (connections already open keep being counted from zero; the
    /// direction of their last flight is remembered, so a flight in progress is not recounted).
    pub fn reset(&self) {
        let c = &self.counters;
        c.bytes_up.store(0, Ordering::SeqCst);
        c.bytes_down.store(0, Ordering::SeqCst);
        c.flights_up.store(0, Ordering::SeqCst);
        c.flights_down.store(0, Ordering::SeqCst);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, c: Arc<Counters>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // The direction of the last bytes relayed on this connection (0: none yet).
    let last = Arc::new(Mutex::new(0u8));
    let (c1, l1) = (c.clone(), last.clone());
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            count(&c1, &l1, UP, n);
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            count(&c, &last, DOWN, n);
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

fn count(c: &Counters, last: &Mutex<u8>, dir: u8, n: usize) {
    let new_flight = match last.lock() {
        Ok(mut l) => {
            let new = *l != dir;
            *l = dir;
            new
        }
        Err(_) => false,
    };
    let (bytes, flights) = if dir == UP {
        (&c.bytes_up, &c.flights_up)
    } else {
        (&c.bytes_down, &c.flights_down)
    };
    bytes.fetch_add(n as u64, Ordering::SeqCst);
    if new_flight {
        flights.fetch_add(1, Ordering::SeqCst);
    }
}
