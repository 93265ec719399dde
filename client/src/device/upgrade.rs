//! The WebSocket upgrade of the sync connection, with early frames: the device writes its
//! upgrade request and may go on writing WebSocket frames (the hello and the first uploads)
//! right behind it, without waiting a round trip for the server's `101 Switching Protocols`.
//! The server's HTTP layer (hyper) keeps the bytes that arrived behind a request and hands them
//! to the upgraded connection, so the session reads them in order once the upgrade is decided;
//! a refused upgrade (401 for a revoked device) drops them unread. Nothing is lost either way:
//! the device treats nothing as stored before the server's acknowledgement. TLS is complete
//! (the server's key checked against the pin) before any of it is written.
//!
//! [`Upgrading`] wraps the TLS stream: writes go straight through; the first reads take the
//! server's answer off the front (bounded), check it is the upgrade this request asked for,
//! and only then pass the bytes behind it to the WebSocket. A refusal is kept ([`Refusal`]) for
//! the runtime to tell apart ([`Upgrading::answered`]: `Unauthorized` erases a revoked device)
//! and every read fails.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::Request;

use crate::error::ClientError;

/// Largest answer to the upgrade request read (head and, for a refusal, the body kept).
const MAX_ANSWER: usize = 16 * 1024;
/// Most header lines of the answer read.
const MAX_HEADERS: usize = 32;
/// Most characters of a refusal's body kept for its error.
const MAX_MESSAGE_CHARS: usize = 200;

/// The server's answer when it is not the upgrade: its status and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    /// The runtime's error for it: 401 is the credential refused.
    pub fn error(&self) -> ClientError {
        if self.status == 401 {
            ClientError::Unauthorized
        } else {
            ClientError::Http {
                status: self.status,
                message: self.message.clone(),
            }
        }
    }
}

/// The request's bytes: `GET <path> HTTP/1.1`, its headers (tungstenite's client request
/// carries Host, Connection, Upgrade, the WebSocket version and key), and the accept value
/// the server must answer with.
pub(crate) fn request_bytes(request: &Request<()>) -> Result<(Vec<u8>, String), ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: request.uri().to_string(),
        reason: reason.to_owned(),
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let key = request
        .headers()
        .get("sec-websocket-key")
        .ok_or_else(|| bad("no WebSocket key"))?;
    let accept = derive_accept_key(key.as_bytes());
    let mut out = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok((out, accept))
}

#[derive(Debug)]
enum State {
    /// Reading the answer's head (and a refusal's body) into the buffer.
    Answer,
    /// Upgraded: `buf[at..]` came behind the answer and is read first.
    Open { at: usize },
    /// Refused: every read fails.
    Refused(Refusal),
    /// Broken: every read fails with this.
    Failed(String),
}

/// The TLS stream of a sync connection whose upgrade answer has not been read yet.
#[derive(Debug)]
pub(crate) struct Upgrading<S> {
    inner: S,
    accept: String,
    buf: Vec<u8>,
    state: State,
    /// The upgrade's answer said the server takes root signatures (`None` before it is read).
    root_signatures: Option<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Upgrading<S> {
    /// Writes the upgrade request to `inner` (flushed) and returns the stream, whose reads
    /// start after the server's answer.
    pub async fn start(mut inner: S, request: &[u8], accept: String) -> io::Result<Self> {
        inner.write_all(request).await?;
        inner.flush().await?;
        Ok(Self {
            inner,
            accept,
            buf: Vec::new(),
            state: State::Answer,
            root_signatures: None,
        })
    }

    /// Whether the server's answer was read (the upgrade, or a refusal).
    pub fn answer_read(&self) -> bool {
        matches!(self.state, State::Open { .. } | State::Refused(_))
    }

    /// Whether the server's upgrade answer said it takes uploads signed once over their root
    /// ([`sync_core::signing::ROOT_SIGNATURES_HEADER`]); `None` until it is read.
    pub fn takes_root_signatures(&self) -> Option<bool> {
        self.root_signatures
    }

    /// Waits for the server's answer (at once if it was read): `Ok` once upgraded, the
    /// refusal's error if refused, `Transport` if the connection broke first.
    pub async fn answered(&mut self) -> Result<(), ClientError> {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        loop {
            match &self.state {
                State::Open { .. } => return Poll::Ready(Ok(())),
                State::Refused(r) => return Poll::Ready(Err(r.error())),
                State::Failed(why) => return Poll::Ready(Err(ClientError::Transport(why.clone()))),
                State::Answer => {}
            }
            let mut chunk = [0u8; 2048];
            let mut rb = ReadBuf::new(&mut chunk);
            let eof = match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.state = State::Failed(format!("reading the upgrade answer: {e}"));
                    continue;
                }
                Poll::Ready(Ok(())) => rb.filled().is_empty(),
            };
            self.buf.extend_from_slice(rb.filled());
            self.state = self.judge(eof);
        }
    }

    /// The state after reading more of the answer (`eof`: the server closed). The head is
    /// parsed by `httparse` (hyper's parser); this reader only bounds it and judges it.
    fn judge(&mut self, eof: bool) -> State {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut answer = httparse::Response::new(&mut slots);
        let end = match answer.parse(&self.buf) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) if eof => {
                return State::Failed("the server closed before answering the upgrade".into());
            }
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_ANSWER => {
                return State::Failed("the upgrade answer's head is too long".into());
            }
            Ok(httparse::Status::Partial) => return State::Answer,
            Err(e) => return State::Failed(format!("the upgrade answer is not HTTP: {e}")),
        };
        let Some(status) = answer.code else {
            return State::Failed("the upgrade answer has no status".into());
        };
        let headers = answer.headers;
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::trim)
        };
        if status == 101 {
            let upgraded = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            let accepted = header("sec-websocket-accept") == Some(self.accept.as_str());
            if !upgraded || !accepted {
                return State::Failed("the server's upgrade answer does not match".into());
            }
            self.root_signatures = Some(
                header(sync_core::signing::ROOT_SIGNATURES_HEADER)
                    == Some(sync_core::signing::ROOT_SIGNATURES),
            );
            return State::Open { at: end };
        }
        // A refusal: its body (as far as it says, bounded) becomes the error's message.
        let body = &self.buf[end..];
        let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
        let complete = eof
            || self.buf.len() > MAX_ANSWER
            || length.is_some_and(|n| body.len() >= n)
            || (length.is_none() && header("transfer-encoding").is_none());
        if !complete {
            return State::Answer;
        }
        let body = match length {
            Some(n) => &body[..n.min(body.len())],
            None => body,
        };
        let message: String = String::from_utf8_lossy(body)
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect();
        tracing::debug!(status, "the server refused the sync upgrade");
        State::Refused(Refusal { status, message })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Upgrading<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_answer(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e.to_string()))),
            Poll::Ready(Ok(())) => {}
        }
        if let State::Open { at } = &mut this.state {
            if *at < this.buf.len() {
                let n = out.remaining().min(this.buf.len() - *at);
                out.put_slice(&this.buf[*at..*at + n]);
                *at += n;
                if *at == this.buf.len() {
                    this.buf = Vec::new();
                    *at = 0;
                }
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Upgrading<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    fn request() -> (Vec<u8>, String) {
        let r = "wss://example.test:7443/v1/sync"
            .into_client_request()
            .unwrap();
        request_bytes(&r).unwrap()
    }

    async fn answered_with(answer: &[u8]) -> (Result<Vec<u8>, String>, Option<Refusal>) {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let (req, accept) = request();
        let mut up = Upgrading::start(ours, &req, accept.clone()).await.unwrap();
        let mut got = vec![0u8; req.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, req);
        let answer = String::from_utf8_lossy(answer).replace("{accept}", &accept);
        theirs.write_all(answer.as_bytes()).await.unwrap();
        drop(theirs);
        let mut rest = Vec::new();
        let read = up
            .read_to_end(&mut rest)
            .await
            .map(|_| rest)
            .map_err(|e| e.to_string());
        let refusal = match &up.state {
            State::Refused(r) => Some(r.clone()),
            _ => None,
        };
        // What `answered` tells agrees with what the reads saw.
        assert_eq!(up.answered().await.is_ok(), read.is_ok());
        (read, refusal)
    }

    #[tokio::test]
    async fn the_request_is_an_http_upgrade_with_its_headers() {
        let (req, _) = request();
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("GET /v1/sync HTTP/1.1\r\n"), "{text}");
        for h in [
            "host: example.test:7443",
            "upgrade: websocket",
            "sec-websocket-key: ",
        ] {
            assert!(text.to_ascii_lowercase().contains(h), "{h} in {text}");
        }
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn bytes_behind_the_101_are_the_websockets() {
        let (read, refusal) = answered_with(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\nframes",
        )
        .await;
        assert_eq!(read.unwrap(), b"frames");
        assert_eq!(refusal, None);
    }

    #[tokio::test]
    async fn a_401_is_kept_as_the_refusal_and_reads_fail() {
        let (read, refusal) =
            answered_with(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope").await;
        assert!(read.is_err());
        let refusal = refusal.unwrap();
        assert_eq!(refusal.status, 401);
        assert_eq!(refusal.message, "nope");
        assert!(matches!(refusal.error(), ClientError::Unauthorized));
    }

    #[tokio::test]
    async fn a_101_with_another_accept_key_is_not_an_upgrade() {
        let (read, refusal) = answered_with(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: forged\r\n\r\n",
        )
        .await;
        assert!(read.is_err());
        assert_eq!(refusal, None);
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_fails() {
        let (read, refusal) = answered_with(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        assert!(read.unwrap_err().contains("not HTTP"));
        assert_eq!(refusal, None);
    }

    #[tokio::test]
    async fn header_names_are_matched_in_any_case() {
        let (read, _) = answered_with(
            b"HTTP/1.1 101 Switching Protocols\r\nUPGRADE: WebSocket\r\nsec-websocket-ACCEPT:  {accept} \r\n\r\n",
        )
        .await;
        assert_eq!(read.unwrap(), b"");
    }

    #[tokio::test]
    async fn an_endless_head_is_bounded() {
        let mut long = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_ANSWER + 10));
        let (read, _) = answered_with(&long).await;
        assert!(read.unwrap_err().contains("too long"));
    }
}
