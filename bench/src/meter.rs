//! A counting TCP proxy: every connection accepted on `addr` is relayed to `upstream`, and the
//! bytes and flights (maximal runs of bytes in one direction) are counted over all connections.
//!
//! Flights are counted per connection: a read in one direction after the last read on that
//! connection was in the other direction (or the first read) starts a new flight. The first
//! [`MAX_LOGGED_FLIGHTS`] flights since the last reset are also logged with their times (the
//! per-phase timeline of `slowlink`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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

/// Most flights kept in the log (the counters go on past it).
pub const MAX_LOGGED_FLIGHTS: usize = 4096;

/// One flight as the proxy relayed it: when its first and last bytes were read (ms since the
/// last reset), on the client's side of the link.
#[derive(Debug, Clone, Serialize)]
pub struct Flight {
    /// The connection's number, from 0 in the order accepted.
    pub connection: u64,
    /// `"up"` (device to server) or `"down"`.
    pub dir: &'static str,
    pub start_ms: f64,
    pub end_ms: f64,
    pub bytes: u64,
}

#[derive(Debug)]
struct FlightLog {
    since: Instant,
    /// Counts resets, so that a connection's flight from before one is not extended.
    generation: u64,
    flights: Vec<Flight>,
}

#[derive(Debug)]
struct Counters {
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    flights_up: AtomicU64,
    flights_down: AtomicU64,
    connections: AtomicU64,
    log: Mutex<FlightLog>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            bytes_up: AtomicU64::default(),
            bytes_down: AtomicU64::default(),
            flights_up: AtomicU64::default(),
            flights_down: AtomicU64::default(),
            connections: AtomicU64::default(),
            log: Mutex::new(FlightLog {
                since: Instant::now(),
                generation: 0,
                flights: Vec::new(),
            }),
        }
    }
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

    /// The flights logged since the last reset (at most [`MAX_LOGGED_FLIGHTS`]), in the order
    /// they started.
    pub fn flights(&self) -> Vec<Flight> {
        match self.counters.log.lock() {
            Ok(log) => log.flights.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Zeroes the counters and the flight log, whose times start now (connections already
    /// open keep being counted from zero; the direction of their last flight is remembered,
    /// so a flight in progress is not recounted).
    pub fn reset(&self) {
        let c = &self.counters;
        c.bytes_up.store(0, Ordering::SeqCst);
        c.bytes_down.store(0, Ordering::SeqCst);
        c.flights_up.store(0, Ordering::SeqCst);
        c.flights_down.store(0, Ordering::SeqCst);
        if let Ok(mut log) = c.log.lock() {
            log.since = Instant::now();
            log.generation += 1;
            log.flights.clear();
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Per connection: its number, the direction of the last bytes relayed (0: none yet), and
/// where its current flight is in the log (if logged: the log's generation and the index).
#[derive(Debug)]
struct Last {
    connection: u64,
    dir: u8,
    logged: Option<(u64, usize)>,
}

async fn relay(client: TcpStream, server: TcpStream, c: Arc<Counters>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let last = Arc::new(Mutex::new(Last {
        connection: c.connections.fetch_add(1, Ordering::SeqCst),
        dir: 0,
        logged: None,
    }));
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

fn count(c: &Counters, last: &Mutex<Last>, dir: u8, n: usize) {
    let new_flight = match last.lock() {
        Ok(mut l) => {
            let new = l.dir != dir;
            l.dir = dir;
            if let Ok(mut log) = c.log.lock() {
                let at = log.since.elapsed().as_secs_f64() * 1000.0;
                let generation = log.generation;
                let current = l
                    .logged
                    .filter(|&(g, i)| !new && g == generation && i < log.flights.len())
                    .map(|(_, i)| i);
                match current {
                    Some(i) => {
                        log.flights[i].end_ms = at;
                        log.flights[i].bytes += n as u64;
                    }
                    None if log.flights.len() < MAX_LOGGED_FLIGHTS => {
                        l.logged = Some((generation, log.flights.len()));
                        log.flights.push(Flight {
                            connection: l.connection,
                            dir: if dir == UP { "up" } else { "down" },
                            start_ms: at,
                            end_ms: at,
                            bytes: n as u64,
                        });
                    }
                    None => l.logged = None,
                }
            }
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
