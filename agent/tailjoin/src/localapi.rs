//! tailscaled's LocalAPI over its unix socket: status, the IPN notification bus, and the
//! requests that join a node (`start` with the key in the body, `login-interactive`, `prefs`).

use crate::error::LocalApiError;
use crate::state::{Notify, Status};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// tailscaled accepts this Host (or none) on its socket.
const BASE: &str = "http://local-tailscaled.sock/localapi/v0";

/// Bus subscription: the current state first (2), the current health first (128), no netmap on
/// platforms that still send it (8192). Not NotifyRateLimit (256): tailscale v1.102 answers 400
/// "NotifyRateLimit is incompatible with new-style IPN bus subscription bits ipn.NotifyNoNetMap"
/// (found by tests/matrix.sh), and with no netmap on the bus there is nothing left to rate-limit.
pub const WATCH_MASK: u64 = 2 | 128 | 8192;

/// One bus line is one `ipn.Notify`, and one answer (status, prefs) is one JSON document;
/// anything this large is not one the agent can use.
const MAX_NOTIFY_BYTES: usize = 16 * 1024 * 1024;

/// Requests other than the bus must answer quickly; tailscaled answers them locally.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct LocalApi {
    client: reqwest::Client,
    socket: PathBuf,
    timeout: Duration,
}

impl LocalApi {
    pub fn new(socket: &Path) -> Result<Self, LocalApiError> {
        let client = reqwest::Client::builder()
            .unix_socket(socket)
            .connect_timeout(Duration::from_secs(5))
            // No idle connections kept: a unix socket costs nothing to open, and an idle pooled
            // connection keeps a timer waking the agent every 90 s (measured: tests/bench idle).
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| LocalApiError::Connect {
                path: socket.to_owned(),
                message: e.to_string(),
            })?;
        Ok(LocalApi {
            client,
            socket: socket.to_owned(),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client with another bound for requests other than the bus (`tailjoin status`
    /// answers a person, who should not wait 30 s for a hung tailscaled).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /status?peers=false`.
    pub async fn status(&self) -> Result<Status, LocalApiError> {
        let resp = self
            .send(
                "status",
                self.client.get(format!("{BASE}/status?peers=false")),
            )
            .await?;
        decode("status", resp).await
    }

    /// `GET /prefs`: the current preferences as tailscaled's JSON object, all fields kept.
    pub async fn prefs(&self) -> Result<Map<String, Value>, LocalApiError> {
        let resp = self
            .send("prefs", self.client.get(format!("{BASE}/prefs")))
            .await?;
        decode("prefs", resp).await
    }

    /// `POST /start` with the key in the body (never in a URL or header) and the full prefs.
    pub async fn start(
        &self,
        key: &SecretString,
        prefs: &Map<String, Value>,
    ) -> Result<(), LocalApiError> {
        // The key exists in this buffer only until the request is written.
        let body = serde_json::to_vec(&serde_json::json!({
            "AuthKey": key.expose_secret(),
            "UpdatePrefs": prefs,
        }))
        .map_err(|e| LocalApiError::Decode {
            endpoint: "start",
            message: e.to_string(),
        })?;
        self.send(
            "start",
            self.client
                .post(format!("{BASE}/start"))
                .header("Content-Type", "application/json")
                .body(body),
        )
        .await?;
        Ok(())
    }

    /// `POST /login-interactive`: asks tailscaled to log in now (with the key given to start).
    pub async fn login_interactive(&self) -> Result<(), LocalApiError> {
        self.send(
            "login-interactive",
            self.client.post(format!("{BASE}/login-interactive")),
        )
        .await?;
        Ok(())
    }

    /// `PATCH /prefs` with MaskedPrefs (each field plus `<Field>Set: true`).
    pub async fn edit_prefs(&self, masked: &Value) -> Result<(), LocalApiError> {
        self.send(
            "prefs",
            self.client.patch(format!("{BASE}/prefs")).json(masked),
        )
        .await?;
        Ok(())
    }

    /// `GET /watch-ipn-bus?mask=…`: a stream of notifications until tailscaled goes away.
    pub async fn watch(&self, mask: u64) -> Result<Bus, LocalApiError> {
        // No overall timeout: the stream lives as long as tailscaled.
        let resp = self
            .send_untimed(
                "watch-ipn-bus",
                self.client.get(format!("{BASE}/watch-ipn-bus?mask={mask}")),
            )
            .await?;
        Ok(Bus {
            resp,
            buf: Vec::new(),
        })
    }

    async fn send(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LocalApiError> {
        self.send_untimed(endpoint, req.timeout(self.timeout)).await
    }

    async fn send_untimed(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LocalApiError> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // Only the start of an error body is read, and for a few seconds at most (this request
        // may have no timeout of its own).
        let body = crate::http_client::error_text(resp).await;
        let body = body.trim();
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(LocalApiError::PermissionDenied {
                path: self.socket.clone(),
            });
        }
        Err(LocalApiError::Http {
            endpoint,
            status: status.as_u16(),
            body: truncate(body, 300),
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> LocalApiError {
        let path = self.socket.clone();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::NotFound => LocalApiError::SocketAbsent { path },
                    std::io::ErrorKind::PermissionDenied => {
                        LocalApiError::PermissionDenied { path }
                    }
                    _ => LocalApiError::Connect {
                        path,
                        message: io.to_string(),
                    },
                };
            }
            source = err.source();
        }
        if !self.socket.exists() {
            return LocalApiError::SocketAbsent { path };
        }
        LocalApiError::Connect {
            path,
            message: e.to_string(),
        }
    }
}

async fn decode<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    mut resp: reqwest::Response,
) -> Result<T, LocalApiError> {
    let bytes = crate::http_client::read_capped(&mut resp, MAX_NOTIFY_BYTES)
        .await
        .map_err(|e| LocalApiError::Decode {
            endpoint,
            message: match e {
                crate::http_client::BodyError::TooLarge { limit } => {
                    format!("the answer is larger than {limit} bytes")
                }
                crate::http_client::BodyError::Transport(e) => e.to_string(),
            },
        })?;
    serde_json::from_slice(&bytes).map_err(|e| LocalApiError::Decode {
        endpoint,
        message: e.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The IPN bus: newline-delimited `ipn.Notify` JSON.
pub struct Bus {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Bus {
    /// The next notification. `Err(BusClosed)` when tailscaled ends the stream (it stopped or
    /// restarted). Lines that do not decode are skipped with a warning.
    pub async fn next(&mut self) -> Result<Notify, LocalApiError> {
        loop {
            if let Some(line) = take_line(&mut self.buf) {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Notify>(&line) {
                    Ok(n) => return Ok(n),
                    Err(e) => {
                        tracing::warn!("skipping an IPN bus message that does not decode: {e}");
                        continue;
                    }
                }
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => {
                    if self.buf.len() + chunk.len() > MAX_NOTIFY_BYTES {
                        return Err(LocalApiError::Decode {
                            endpoint: "watch-ipn-bus",
                            message: format!("a message is larger than {MAX_NOTIFY_BYTES} bytes"),
                        });
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(None) | Err(_) => return Err(LocalApiError::BusClosed),
            }
        }
    }
}

/// Removes and returns the first complete line (without its newline) from `buf`.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let pos = buf.iter().position(|&b| b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=pos).collect();
    line.pop();
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks() {
        let mut buf = b"{\"State\":2}\n{\"St".to_vec();
        assert_eq!(take_line(&mut buf).unwrap(), b"{\"State\":2}");
        assert_eq!(take_line(&mut buf), None);
        buf.extend_from_slice(b"ate\":6}\n");
        assert_eq!(take_line(&mut buf).unwrap(), b"{\"State\":6}");
        assert!(buf.is_empty());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
