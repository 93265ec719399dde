//! A fault-injecting TCP proxy for a device's link.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy on 127.0.0.1 that makes a link bad: a bandwidth cap, a delay per chunk, random
/// stalls (what loss looks like above TCP, which retransmits), and a cut after a number of
/// bytes towards the client. (The kernel here has no netem, so the proxy is ours.)
#[derive(Debug, Clone)]
pub struct LinkFaults {
    pub bytes_per_second: usize,
    pub delay: Duration,
    /// Per-mille chance that a chunk stalls for `stall`.
    pub stall_per_mille: u32,
    pub stall: Duration,
    /// Close the connection once this many bytes went from the server to the client.
    pub cut_after_down: Option<usize>,
}

#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies every connection to `upstream` through `faults` (the cut applies to the first
    /// connection only, so that a reconnect can finish).
    pub async fn start(upstream: SocketAddr, faults: LinkFaults, seed: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut first = true;
            let mut n = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let mut faults = faults.clone();
                if !first {
                    faults.cut_after_down = None;
                }
                first = false;
                n += 1;
                tokio::spawn(pipe(client, server, faults, seed.wrapping_add(n)));
            }
        });
        Self { addr, task }
    }
}

async fn pipe(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    faults: LinkFaults,
    seed: u64,
) {
    use rand::SeedableRng;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up_faults = faults.clone();
    let up = tokio::spawn(async move {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut buf = vec![0u8; 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            slow(&up_faults, n, &mut rng).await;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut buf = vec![0u8; 1024];
    let mut sent = 0usize;
    while let Ok(n) = sr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let n = match faults.cut_after_down {
            Some(limit) if sent + n >= limit => {
                // Deliver up to the limit, mid-message, then cut both ways.
                let _ = cw.write_all(&buf[..limit.saturating_sub(sent)]).await;
                break;
            }
            _ => n,
        };
        slow(&faults, n, &mut rng).await;
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    up.abort();
}

async fn slow(faults: &LinkFaults, n: usize, rng: &mut rand_chacha::ChaCha8Rng) {
    use rand::Rng;
    let mut wait =
        faults.delay + Duration::from_secs_f64(n as f64 / faults.bytes_per_second.max(1) as f64);
    if rng.random_range(0..1000) < faults.stall_per_mille {
        wait += faults.stall;
    }
    tokio::time::sleep(wait).await;
}
