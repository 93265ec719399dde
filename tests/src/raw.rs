//! A raw sync client for the hostile tests: TLS from the device runtime's pinned configuration,
//! then WebSocket frames written by hand, so that a test can break the framing on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustls::pki_types::ServerName;
use sync_core::protocol::wire::{
    self, CloseReason, DeviceMessage, DocChanges, Hello, Refused, ServerMessage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::hostile::PATIENCE;
use crate::net::{TestDevice, TestServer, client_config};

// ---- a raw client ----

pub type Tls = TlsStream<TcpStream>;

pub async fn tcp(server: &TestServer, recv_buffer: Option<u32>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(server.addr).await.unwrap()
}

pub async fn tls(server: &TestServer, tcp: TcpStream) -> Tls {
    tokio_rustls::TlsConnector::from(client_config(&server.fingerprint))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// A WebSocket client whose frames are written by hand.
pub struct Raw {
    pub io: Tls,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raw").finish_non_exhaustive()
    }
}

impl Raw {
    /// TLS, then the WebSocket upgrade with `device`'s credential.
    pub async fn connect(server: &TestServer, device: &TestDevice) -> Raw {
        Self::connect_with(server, device, None).await
    }

    pub async fn connect_with(
        server: &TestServer,
        device: &TestDevice,
        recv_buffer: Option<u32>,
    ) -> Raw {
        let mut io = tls(server, tcp(server, recv_buffer).await).await;
        let request = format!(
            "GET /v1/sync HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {}.{}\r\n\r\n",
            device.author.device, device.secret
        );
        io.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(io.read_u8().await.unwrap());
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Raw { io }
    }

    /// A masked frame header announcing `len` bytes (the payload is written separately).
    pub fn header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out
    }

    pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Self::header(opcode, fin, payload.len() as u64);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    pub async fn send_binary(&mut self, payload: &[u8]) {
        self.write(&Self::frame(BINARY, true, payload)).await;
    }

    pub async fn send(&mut self, msg: &DeviceMessage) {
        self.send_binary(&wire::encode(msg).unwrap()).await;
    }

    pub async fn hello(&mut self, upload: Vec<DocChanges>) {
        self.send(&DeviceMessage::Hello(Hello {
            cursor: None,
            received: Vec::new(),
            priority: Vec::new(),
            backfill: Vec::new(),
            upload,
        }))
        .await;
    }

    /// The next frame from the server: (opcode, payload); `None` at the end of the stream.
    pub async fn frame_in(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.io.read_exact(&mut head).await.ok()?;
        let len = match head[1] & 0x7f {
            126 => u64::from(self.io.read_u16().await.ok()?),
            127 => self.io.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        self.io.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    }

    /// The next protocol message (pings and pongs skipped); `None` once the connection ends.
    pub async fn message(&mut self) -> Option<ServerMessage> {
        loop {
            match tokio::time::timeout(PATIENCE, self.frame_in())
                .await
                .expect("the server neither answered nor closed")?
            {
                (BINARY, bytes) => return Some(wire::decode(&bytes).unwrap()),
                (CLOSE, _) => return None,
                _ => {}
            }
        }
    }

    /// Reads until the acknowledgement of upload `upload`; returns its refusals. Panics if the
    /// server closes first.
    pub async fn upload_ack(&mut self, upload: u32) -> Vec<Refused> {
        loop {
            match self.message().await {
                Some(ServerMessage::UploadAck { upload: n, refused }) if n == upload => {
                    return refused;
                }
                Some(ServerMessage::Close { reason, detail }) => {
                    panic!("the connection was closed: {reason:?} {detail}")
                }
                Some(_) => {}
                None => panic!("the connection ended before the upload was answered"),
            }
        }
    }

    /// Reads until the server closes; returns the protocol's reason and what came before it.
    pub async fn refusal(&mut self) -> (CloseReason, Vec<ServerMessage>) {
        let mut before = Vec::new();
        loop {
            match self.message().await {
                Some(ServerMessage::Close { reason, .. }) => {
                    // After the reason the connection ends.
                    assert!(self.message().await.is_none());
                    return (reason, before);
                }
                Some(other) => before.push(other),
                None => panic!("closed without a reason, after {before:?}"),
            }
        }
    }
}

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;

/// Waits until the server has closed the connection (EOF or reset), reading and discarding;
/// returns the bytes read.
pub async fn closed_by_server(mut io: impl tokio::io::AsyncRead + Unpin) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the server kept a stalled connection open");
    total
}
