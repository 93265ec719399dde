//! The samod side's network: its server process and the client transport the devices dial it with.

use super::*;

/// The samod server child; killed and waited for on drop.
pub(super) struct ServerProcess {
    child: Child,
    pub(super) addr: SocketAddr,
    _stdout: ChildStdout,
}

impl ServerProcess {
    pub(super) async fn start(dir: &Path) -> Result<Self> {
        let bin = tokio::task::spawn_blocking(|| procs::binary("nara-bench", "samod-server"))
            .await
            .context("building samod-server")??;
        let mut child = Command::new(&bin)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("samod-server has no stdout");
        };
        // Wrap the child at once, so that any failure below kills it.
        let mut guard = Starting { child: Some(child) };
        let read = tokio::task::spawn_blocking(move || -> Result<(String, ChildStdout)> {
            use std::io::BufRead;
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            reader.read_line(&mut line)?;
            Ok((line, reader.into_inner()))
        });
        let (line, stdout) = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .context("samod-server did not report its address within 60 s")?
            .context("reading samod-server's stdout")??;
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening ")
            .with_context(|| format!("unexpected samod-server output {line:?}"))?
            .parse()
            .context("samod-server's address")?;
        let child = guard.child.take().context("the server child is gone")?;
        Ok(Self {
            child,
            addr,
            _stdout: stdout,
        })
    }

    pub(super) fn peak_rss(&self) -> u64 {
        procs::peak_rss(self.child.id())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) struct Starting {
    child: Option<Child>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client transport

/// samod's WebSocket protocol over tokio-tungstenite (the workspace's version), TCP_NODELAY.
pub(super) struct WsDialer {
    pub(super) addr: SocketAddr,
    url: samod::Url,
}

impl WsDialer {
    pub(super) fn new(addr: SocketAddr) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            addr,
            url: samod::Url::parse(&format!("ws://{addr}/"))?,
        }))
    }
}

impl Dialer for WsDialer {
    type Error = std::convert::Infallible;

    fn url(&self) -> samod::Url {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<Self::Error>>> {
        let (addr, url) = (self.addr, self.url.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(DialError::transient)?;
            let _ = tcp.set_nodelay(true);
            let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
                .await
                .map_err(DialError::transient)?;
            let (sink, stream) = ws.split();
            let stream = stream
                .filter_map(|m| {
                    std::future::ready(match m {
                        Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                })
                .boxed();
            let sink = sink.with(|v: Vec<u8>| {
                std::future::ready(Ok::<_, tokio_tungstenite::tungstenite::Error>(
                    Message::Binary(v.into()),
                ))
            });
            Ok(Transport::new(stream, sink))
        })
    }
}

pub(super) fn backoff() -> BackoffConfig {
    BackoffConfig {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
        max_retries: None,
    }
}

/// Dials `addr` and waits for samod's handshake.
pub(super) async fn dial(repo: &Repo, addr: SocketAddr) -> Result<DialerHandle> {
    let d = repo
        .dial(backoff(), WsDialer::new(addr)?)
        .map_err(|_| anyhow!("the samod repo stopped"))?;
    tokio::time::timeout(SETUP_TIMEOUT, d.established())
        .await
        .context("no connection to samod-server")?
        .map_err(|e| anyhow!("dialing samod-server: {e}"))?;
    Ok(d)
}
