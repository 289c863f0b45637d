//! The outbound HTTPS client shared by the key sources, the minting APIs and the push reporters:
//! strict timeouts, no redirects (a redirect could carry a bearer token elsewhere), an optional CA
//! bundle that then is the only trust anchor, transport errors described without the URL (its
//! query may carry a one-time token), and bodies read with a cap whatever the status: a hostile
//! or broken server cannot make the agent hold more than the cap in memory.

use crate::redact::redact;
use secrecy::zeroize::Zeroize;
use std::path::Path;
use std::time::Duration;

/// How much of an error body is kept (for a short excerpt in the log); the rest is not read.
pub const ERROR_BODY_BYTES: usize = 4 * 1024;

/// How long reading an error body's excerpt may take, beyond any timeout of the request.
pub const ERROR_BODY_TIME: Duration = Duration::from_secs(3);

/// Why a body was not read in full.
pub enum BodyError {
    /// The body is (or announces itself as) larger than `limit` bytes; reading stopped there.
    TooLarge { limit: usize },
    /// The connection failed or timed out while reading.
    Transport(reqwest::Error),
}

/// Reads `resp`'s body, at most `limit` bytes, chunk by chunk. A larger body (by its
/// Content-Length or by what arrives) stops the reading at once; the caller then drops the
/// response, which closes the connection instead of draining it. Whatever was read before a
/// failure is zeroed, as it may be part of a secret.
pub async fn read_capped(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    body.zeroize();
                    return Err(BodyError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                body.zeroize();
                return Err(BodyError::Transport(e));
            }
        }
    }
}

/// The start of an error body as text: at most [`ERROR_BODY_BYTES`], read for at most
/// [`ERROR_BODY_TIME`]; a failure to read just shortens it. The response is consumed, so an
/// unread rest is never drained: the connection is closed.
pub async fn error_text(mut resp: reqwest::Response) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let read = async {
        while kept.len() < ERROR_BODY_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = ERROR_BODY_BYTES - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_TIME, read).await;
    let text = String::from_utf8_lossy(&kept).into_owned();
    kept.zeroize();
    text
}

/// [`error_text`] as a short redacted excerpt, `": …"` (empty when there is none).
pub async fn error_excerpt(resp: reqwest::Response) -> String {
    body_excerpt(&error_text(resp).await)
}

/// Builds a client. `Err` says what is wrong with the CA bundle, in words.
pub fn build(timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tailjoin/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        // Opened without blocking and only as a regular file (a FIFO would hang the fetch).
        let pem = crate::fs_read::read_text(ca, 4 * 1024 * 1024)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", ca.display()))?
            .into_bytes();
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM CA bundle: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", ca.display()));
        }
        // Only the given CA: a home-lab server is not vouched for by public CAs.
        b = b.tls_certs_only(certs);
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A transport failure in words: the chain of causes, redacted, without the URL.
pub struct TransportFailure {
    pub reason: String,
    /// A certificate problem: waiting does not help.
    pub tls: bool,
}

pub fn describe_transport_error(e: reqwest::Error) -> TransportFailure {
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    let tls = reason.contains("certificate") || reason.contains("tls") || reason.contains("TLS");
    TransportFailure {
        reason: redact(&reason),
        tls,
    }
}

/// The first 200 characters of an error body, redacted, as `": …"` (empty when there is none).
pub fn body_excerpt(body: &str) -> String {
    let body = redact(body.trim());
    if body.is_empty() {
        return String::new();
    }
    let mut b: String = body.chars().take(200).collect();
    if body.chars().count() > 200 {
        b.push('…');
    }
    format!(": {b}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real loopback server that answers one request with `head` and then sends words without
    /// end (until the client goes away); returns its URL and how many body bytes it got out.
    async fn endless(head: &'static str) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req).await;
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = b"oops ".repeat(13 * 1024);
            let mut sent = 0;
            while s.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
                if sent > 1 << 30 {
                    break;
                }
            }
            sent
        });
        (url, task)
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        build(Duration::from_secs(10), None).unwrap()
    }

    #[tokio::test]
    async fn an_endless_success_body_stops_at_the_cap() {
        let (url, server) = endless("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
        let mut resp = client().get(&url).send().await.unwrap();
        let r = read_capped(&mut resp, 16 * 1024).await;
        assert!(matches!(r, Err(BodyError::TooLarge { limit: 16384 })));
        drop(resp);
        let sent = server.await.unwrap();
        assert!(sent < 64 << 20, "the server got {sent} bytes out");
    }

    #[tokio::test]
    async fn a_huge_content_length_is_refused_before_reading() {
        let (url, server) = endless("HTTP/1.1 200 OK\r\nContent-Length: 5368709120\r\n\r\n").await;
        let mut resp = client().get(&url).send().await.unwrap();
        let r = read_capped(&mut resp, 1024).await;
        assert!(matches!(r, Err(BodyError::TooLarge { limit: 1024 })));
        drop(resp);
        assert!(server.await.unwrap() < 64 << 20);
    }

    #[tokio::test]
    async fn an_endless_error_body_yields_a_short_excerpt() {
        let (url, server) =
            endless("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1073741824\r\n\r\n")
                .await;
        let resp = client().get(&url).send().await.unwrap();
        let text = error_text(resp).await;
        assert_eq!(text.len(), ERROR_BODY_BYTES);
        let said = body_excerpt(&text);
        assert!(
            said.starts_with(": oops oops") && said.chars().count() < 210,
            "{said}"
        );
        assert!(server.await.unwrap() < 64 << 20);
    }
}
