//! A minimal HTTPS/1.1 client for the server's JSON endpoints (enrollment): one request per
//! connection, `Connection: close`, bounded response size, a deadline for the whole exchange.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ServerAddr;
use crate::error::{ClientError, Result};

/// Largest response accepted.
const MAX_RESPONSE: usize = 256 * 1024;
/// Deadline for one request, from TCP connect to the last byte of the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP connection to `addr` followed by a TLS handshake with `tls`.
pub async fn connect_tls(
    addr: &ServerAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = connect_tcp(addr).await?;
    let name = server_name(addr)?;
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Connect {
            addr: addr.authority(),
            detail: format!("TLS: {e}"),
        })
}

pub async fn connect_tcp(addr: &ServerAddr) -> Result<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| ClientError::Connect {
            addr: addr.authority(),
            detail: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

pub fn server_name(addr: &ServerAddr) -> Result<ServerName<'static>> {
    ServerName::try_from(addr.host.clone()).map_err(|e| ClientError::BadUrl {
        url: addr.authority(),
        reason: e.to_string(),
    })
}

/// POSTs `body` (JSON) to `path`; returns the status and the response body.
pub async fn post_json(
    addr: &ServerAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        addr.authority(),
        body.len()
    );
    exchange(addr, tls, request).await
}

/// GETs `path` with `authorization` (a header value); returns the status and the body.
pub async fn get_json(
    addr: &ServerAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    authorization: &str,
) -> Result<(u16, String)> {
    if authorization.contains(['\r', '\n']) || path.contains(['\r', '\n', ' ']) {
        return Err(ClientError::Transport("bad request line or header".into()));
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nAuthorization: {authorization}\r\n\r\n",
        addr.authority()
    );
    exchange(addr, tls, request).await
}

/// One request on a new connection, and its response.
async fn exchange(
    addr: &ServerAddr,
    tls: Arc<rustls::ClientConfig>,
    request: String,
) -> Result<(u16, String)> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = connect_tls(addr, tls).await?;
        let transport = |e: std::io::Error| ClientError::Transport(e.to_string());
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(transport)?;
        stream.flush().await.map_err(transport)?;
        let mut response = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(n) => n,
                // A server that closes without close_notify after a complete response.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(transport(e)),
            };
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.len() > MAX_RESPONSE {
                return Err(ClientError::Transport("response too large".into()));
            }
        }
        parse_response(&response)
    })
    .await
    .map_err(|_| ClientError::Timeout("the server did not answer the request"))?
}

/// Status and body of an HTTP/1.1 response (Content-Length, chunked, or read to close).
fn parse_response(bytes: &[u8]) -> Result<(u16, String)> {
    let bad = |what: &str| ClientError::Transport(format!("malformed HTTP response: {what}"));
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&bytes[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let body = &bytes[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| bad("content-length"))?);
        }
    }
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("chunked body"))?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or_else(|| bad("body shorter than its length"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn responses_parse() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}junk";
        assert_eq!(parse_response(r).unwrap(), (200, "{}".into()));
        let r = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), (400, "abcde".into()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
