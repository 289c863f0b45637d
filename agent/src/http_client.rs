//! The outbound HTTPS client shared by the key sources and the minting APIs: strict timeouts,
//! no redirects (a redirect could carry a bearer token elsewhere), an optional CA bundle that then
//! is the only trust anchor, and transport errors described without the URL (its query may carry
//! a one-time token).

use crate::redact::redact;
use std::path::Path;
use std::time::Duration;

/// Builds a client. `Err` says what is wrong with the CA bundle, in words.
pub fn build(timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tailjoin/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", ca.display()))?;
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
