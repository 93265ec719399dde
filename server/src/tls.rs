//! TLS for the server: a given certificate, or a self-signed development certificate kept in the
//! data directory; rustls with the ring provider, TLS 1.2 and 1.3 only. And a listener that
//! hands axum only connections whose TLS handshake succeeded (there is no plaintext listener).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Limits;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a PEM certificate or key: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("creating the development certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server's TLS configuration and the certificate it presents.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    pub cert_der: Vec<u8>,
    /// SHA-256 of the certificate (DER), hex (changes with every renewal).
    pub fingerprint: String,
    /// SHA-256 of the certificate's public key (SPKI), base64url: what a device pins (stays
    /// the same across renewals that keep the key).
    pub spki_pin: String,
    /// Whether this is the self-signed development certificate.
    pub development: bool,
}

/// SHA-256 of a certificate's DER bytes, lowercase hex.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER), base64url without padding: the pin
/// of the server's key that devices keep (see `docs/protocol.md`, Enrollment).
pub fn spki_pin(cert_der: &[u8]) -> Result<String, TlsError> {
    use base64::Engine;
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| TlsError::Generate(format!("reading the certificate's key: {e:?}")))?;
    let spki = cert.subject_public_key_info();
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(spki.as_ref())))
}

/// The key pin of the first certificate in a PEM file.
pub fn spki_pin_of_pem(path: &Path) -> Result<String, TlsError> {
    let pem = |detail: String| TlsError::Pem {
        path: path.to_path_buf(),
        detail,
    };
    let cert = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .next()
        .ok_or_else(|| pem("no certificate".into()))?
        .map_err(|e| pem(e.to_string()))?;
    spki_pin(cert.as_ref())
}

/// Issues a new development certificate in `data` for the key already there: a renewal, which
/// devices that pinned the key accept without enrolling again.
pub fn renew_dev_cert(data: &Path) -> Result<(), TlsError> {
    let (cert, key) = (data.join("dev-cert.pem"), data.join("dev-key.pem"));
    let key_pem = std::fs::read_to_string(&key).map_err(|source| TlsError::Io {
        path: key.clone(),
        source,
    })?;
    let key_pair =
        rcgen::KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(dev_names())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params.serial_number = Some(rcgen::SerialNumber::from(
        rand::random::<[u8; 16]>().to_vec(),
    ));
    let renewed = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::write(&cert, renewed.pem()).map_err(|source| TlsError::Io { path: cert, source })?;
    Ok(())
}

fn dev_names() -> Vec<String> {
    vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ]
}

/// The certificate and key given, or the development certificate in `data` (created on first use).
pub fn load_or_create(
    data: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<TlsMaterial, TlsError> {
    let (cert_path, key_path, development) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        _ => {
            let c = data.join("dev-cert.pem");
            let k = data.join("dev-key.pem");
            if !c.exists() || !k.exists() {
                create_dev_cert(&c, &k)?;
            }
            (c, k, true)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            detail: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            detail: e.to_string(),
        })?;
    let first = certs.first().ok_or_else(|| TlsError::Pem {
        path: cert_path.clone(),
        detail: "no certificate".into(),
    })?;
    let cert_der = first.as_ref().to_vec();
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        config: Arc::new(config),
        fingerprint: fingerprint(&cert_der),
        spki_pin: spki_pin(&cert_der)?,
        cert_der,
        development,
    })
}

fn create_dev_cert(cert: &Path, key: &Path) -> Result<(), TlsError> {
    let generated = rcgen::generate_simple_self_signed(dev_names())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    fn io(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
        move |source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    write_private(key, generated.signing_key.serialize_pem().as_bytes()).map_err(io(key))?;
    std::fs::write(cert, generated.cert.pem()).map_err(io(cert))?;
    tracing::info!(cert = %cert.display(), "created a self-signed development certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// A TLS connection that holds one of the server's connection permits while it lives. `S` is
/// the accepted byte stream: TCP, or a simulated network's stream in tests.
#[derive(Debug)]
pub struct TlsConn<S = TcpStream> {
    io: TlsStream<S>,
    _permit: OwnedSemaphorePermit,
    /// How long a pending read may make no progress.
    read_timeout: Duration,
    /// Running while a read is pending; reset by every read that returns.
    read_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<S> {
    /// Reads, failing with `TimedOut` when a read has been pending for the read timeout: a
    /// client that sends half a TLS record or half a request, or keeps an idle connection, does
    /// not hold its connection permit for ever.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = this.read_timeout;
                let deadline = this
                    .read_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.read_deadline = None;
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no data from the client within the read timeout",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts TCP connections, completes TLS handshakes concurrently (bounded in time and in
/// number), and yields only the connections that succeeded. A plaintext client fails its
/// handshake and is dropped.
#[derive(Debug)]
pub struct TlsListener<S = TcpStream> {
    rx: mpsc::Receiver<(TlsConn<S>, SocketAddr)>,
    local: SocketAddr,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsListener<S> {
    /// Serves TLS on `tcp` (a `tokio::net::TcpListener`, or any listener of byte streams),
    /// with at most `max_connections` open at once (handshakes included), and the default
    /// timeouts of [`Limits`].
    pub fn new<L>(
        tcp: L,
        tls: Arc<rustls::ServerConfig>,
        max_connections: usize,
    ) -> io::Result<Self>
    where
        L: axum::serve::Listener<Io = S, Addr = SocketAddr>,
    {
        let limits = Limits {
            max_connections,
            ..Limits::default()
        };
        Self::with_limits(tcp, tls, &limits)
    }

    /// Serves TLS on `tcp` with the connection bound, handshake timeout and read timeout of
    /// `limits`.
    pub fn with_limits<L>(
        mut tcp: L,
        tls: Arc<rustls::ServerConfig>,
        limits: &Limits,
    ) -> io::Result<Self>
    where
        L: axum::serve::Listener<Io = S, Addr = SocketAddr>,
    {
        let (max_connections, handshake_timeout, read_timeout) = (
            limits.max_connections,
            limits.handshake_timeout,
            limits.read_timeout,
        );
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(tls);
        let permits = Arc::new(Semaphore::new(max_connections.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                // Accept errors are handled (logged, retried) by the listener.
                let (stream, addr) = tcp.accept().await;
                let acceptor = acceptor.clone();
                let handed = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(io)) => {
                            let _ = handed
                                .send((
                                    TlsConn {
                                        io,
                                        _permit: permit,
                                        read_timeout,
                                        read_deadline: None,
                                    },
                                    addr,
                                ))
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { rx, local })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> axum::serve::Listener for TlsListener<S> {
    type Io = TlsConn<S>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop is gone (it only stops when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A TCP listener whose connections send small writes at once (`TCP_NODELAY`). Without it,
/// Nagle's algorithm holds a second small write (a TLS record, a WebSocket frame) until the
/// first is acknowledged, and the peer's delayed acknowledgement adds up to 40 ms to an
/// exchange: a catch-up or an edit reaching another device would wait for it.
pub fn no_delay(
    tcp: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    tcp.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
    })
}
