//! How the minting APIs are spoken to: one client per call (strict timeouts, optional CA), the
//! answer read with a cap whatever its status, and statuses understood as retry-or-not.

use super::MintFailure;
use crate::http_client::{self, BodyError};
use secrecy::SecretString;
use std::path::Path;
use std::time::Duration;

/// The largest answer read from a minting API. Its answers (a key, a token, a user) are a few
/// hundred bytes; a user list from a server that ignores the name filter can be longer.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

fn transport_failure(e: reqwest::Error, server: &str) -> MintFailure {
    let t = http_client::describe_transport_error(e);
    MintFailure {
        transient: !t.tls,
        reason: format!("cannot reach {server}: {}", t.reason),
        fix: if t.tls {
            "the server's certificate is not trusted: set ca_file to the CA that signed it".into()
        } else {
            "check that the server is up and reachable".into()
        },
    }
}

/// Sends a request to a minting API and reads the answer (at most [`MAX_ANSWER_BYTES`]), held
/// as a secret (it may carry a key or a token). A non-2xx status becomes a [`MintFailure`] with
/// `auth_fix` for 401/403, and only the start of its body is read.
pub(super) async fn send(
    req: reqwest::RequestBuilder,
    server: &str,
    auth_fix: &str,
) -> Result<SecretString, MintFailure> {
    let mut resp = req.send().await.map_err(|e| transport_failure(e, server))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let said = http_client::error_excerpt(resp).await;
        return Err(status_failure(server, status, &said, auth_fix));
    }
    let body = http_client::read_capped(&mut resp, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { limit } => MintFailure {
                transient: false,
                reason: format!("{server}'s answer is larger than {limit} bytes"),
                fix: "check that the URL points at the minting API itself".into(),
            },
            BodyError::Transport(e) => transport_failure(e, server),
        })?;
    // Held as a secret from here; invalid UTF-8 is replaced (the JSON parse then says so).
    Ok(SecretString::from(match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            let mut bytes = e.into_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            secrecy::zeroize::Zeroize::zeroize(&mut bytes);
            text
        }
    }))
}

/// The HTTP client for a minting API; a bad CA bundle is not transient.
pub(super) fn client(
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, MintFailure> {
    http_client::build(timeout, ca_file).map_err(|e| MintFailure {
        transient: false,
        reason: e,
        fix: "check ca_file".into(),
    })
}

/// How an HTTP status from a minting API is understood; `said` is the body's excerpt as
/// [`http_client::error_excerpt`] gives it.
fn status_failure(server: &str, status: u16, said: &str, auth_fix: &str) -> MintFailure {
    let (transient, fix) = match status {
        401 | 403 => (false, auth_fix.to_owned()),
        404 => (
            false,
            "the API is not at this URL: check the server URL (and the tailnet name)".to_owned(),
        ),
        408 | 429 => (
            true,
            "the server is busy; tailjoin retries with backoff".to_owned(),
        ),
        500..=599 => (
            true,
            "the server failed; tailjoin retries with backoff".to_owned(),
        ),
        _ => (
            false,
            "the server refused the request: check the tags, the user and the expiry".to_owned(),
        ),
    };
    MintFailure {
        transient,
        reason: format!("{server} answered HTTP {status}{said}"),
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let f = status_failure("headscale", 401, ": Unauthorized", "check the API key");
        assert!(!f.transient && f.fix.contains("API key"));
        assert!(f.reason.ends_with("HTTP 401: Unauthorized"), "{}", f.reason);
        assert!(status_failure("h", 503, "", "x").transient);
        assert!(status_failure("h", 429, "", "x").transient);
        let said = http_client::body_excerpt("bad tag hskey-auth-fakefakefake-0123456789abcdef");
        let f = status_failure("h", 400, &said, "x");
        assert!(
            !f.transient && !f.reason.contains("0123456789abcdef"),
            "{}",
            f.reason
        );
    }
}
