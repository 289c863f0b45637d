//! A key fetched over HTTP(S): a GET, or a POST carrying the machine's identity, to a URL on a
//! provisioning server. Optional bearer token (read from a credential or a file), custom CA
//! bundle for home-lab TLS, strict timeouts, a response size limit, raw or JSON responses, and
//! retries with backoff for transient failures only.

use super::KeyContext;
use super::identity::MachineIdentity;
use crate::config::{HttpKeySource, HttpMethod, ResponseFormat, RetryPolicy, TokenSource};
use crate::error::SecretError;
use crate::redact::redact;
use backon::{ExponentialBuilder, Retryable};
use secrecy::{ExposeSecret, SecretString};

/// A failed attempt, and whether another attempt may help.
struct Attempt {
    transient: bool,
    reason: String,
    fix: String,
}

pub(super) async fn read(
    src: &HttpKeySource,
    ctx: &KeyContext,
    retry: &RetryPolicy,
) -> Result<String, SecretError> {
    let source_name = src.describe();
    let unavailable = |reason: String, fix: String| SecretError::Unavailable {
        source_name: source_name.clone(),
        reason,
        fix,
    };
    let token = match &src.bearer_token {
        None => None,
        Some(t) => Some(read_token(t, ctx)?),
    };
    let client = client(src).map_err(|e| unavailable(e, "check auth_key.http.ca_file".into()))?;
    let identity = match src.method {
        HttpMethod::Post => Some(MachineIdentity::gather()),
        HttpMethod::Get => None,
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(retry.initial_delay)
        .with_max_delay(retry.max_delay)
        .with_jitter()
        .with_max_times(retry.max_attempts.saturating_sub(1) as usize);
    let fetch = || fetch_once(&client, src, token.as_ref(), identity.as_ref());
    fetch
        .retry(backoff)
        .when(|a: &Attempt| a.transient)
        .notify(|a: &Attempt, delay| {
            tracing::warn!(
                "fetching the key from {source_name} failed ({}); retrying in {:.1}s",
                a.reason,
                delay.as_secs_f64()
            );
        })
        .await
        .map_err(|a| unavailable(a.reason, a.fix))
}

fn client(src: &HttpKeySource) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(src.timeout)
        .timeout(src.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tailjoin/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &src.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM CA bundle: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", ca.display()));
        }
        // Only the given CA: a home-lab provisioner is not vouched for by public CAs.
        b = b.tls_certs_only(certs);
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

async fn fetch_once(
    client: &reqwest::Client,
    src: &HttpKeySource,
    token: Option<&SecretString>,
    identity: Option<&MachineIdentity>,
) -> Result<String, Attempt> {
    let mut req = match (src.method, identity) {
        (HttpMethod::Post, Some(id)) => client.post(src.url.clone()).json(id),
        _ => client.get(src.url.clone()),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t.expose_secret());
    }
    let mut resp = req.send().await.map_err(transport_error)?;
    let status = resp.status();
    if !status.is_success() {
        // The body of an error may say why; it is shown redacted and short.
        let body = resp.text().await.unwrap_or_default();
        return Err(status_error(
            status,
            &redact(body.trim()),
            src.bearer_token.is_some(),
        ));
    }
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > src.max_response_bytes {
            drop(SecretString::from(
                String::from_utf8_lossy(&body).into_owned(),
            ));
            return Err(Attempt {
                transient: false,
                reason: format!(
                    "the response is larger than {} bytes",
                    src.max_response_bytes
                ),
                fix: "the server must answer with just the key (or a small JSON object)".into(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|e| {
        drop(SecretString::from(
            String::from_utf8_lossy(e.as_bytes()).into_owned(),
        ));
        Attempt {
            transient: false,
            reason: "the response is not UTF-8 text".into(),
            fix: "the server must answer with the key as text".into(),
        }
    })?;
    match &src.response {
        ResponseFormat::Raw => Ok(text),
        ResponseFormat::Json { field } => extract_json_field(text, field),
    }
}

/// Takes `field` (a string) out of a JSON object, without echoing the document in errors.
fn extract_json_field(text: String, field: &str) -> Result<String, Attempt> {
    let text = SecretString::from(text);
    let doc: serde_json::Value =
        serde_json::from_str(text.expose_secret()).map_err(|e| Attempt {
            transient: false,
            reason: format!(
                "the response is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
            fix: "set auth_key.http.response to \"raw\" if the server answers with the bare key"
                .into(),
        })?;
    match doc.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Attempt {
            transient: false,
            reason: format!("the JSON field {field:?} is not a string"),
            fix: "the server must put the key in that field as a string".into(),
        }),
        None => Err(Attempt {
            transient: false,
            reason: format!("the JSON response has no field {field:?}"),
            fix: "set auth_key.http.json_field to the field that holds the key".into(),
        }),
    }
}

fn status_error(status: reqwest::StatusCode, body: &str, has_token: bool) -> Attempt {
    let said = if body.is_empty() {
        String::new()
    } else {
        let mut b: String = body.chars().take(200).collect();
        if body.chars().count() > 200 {
            b.push('…');
        }
        format!(": {b}")
    };
    let code = status.as_u16();
    let (transient, fix) = match code {
        401 if has_token => (
            false,
            "the bearer token was refused: check auth_key.http.bearer_token",
        ),
        401 => (
            false,
            "the server wants a bearer token: set auth_key.http.bearer_token",
        ),
        403 => (
            false,
            "the server does not hand this machine a key: check its allowlist (MAC/IP) or the boot token",
        ),
        404 => (
            false,
            "there is no key at this URL: check auth_key.http.url",
        ),
        408 | 429 => (true, "the server is busy; tailjoin retries with backoff"),
        500..=599 => (true, "the server failed; tailjoin retries with backoff"),
        _ => (false, "the server refused the request"),
    };
    Attempt {
        transient,
        reason: format!("HTTP {status}{said}"),
        fix: fix.into(),
    }
}

fn transport_error(e: reqwest::Error) -> Attempt {
    // Without the URL: its query may carry a one-time boot token. The chain of causes says
    // what went wrong (refused, timed out, certificate …).
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    let tls = reason.contains("certificate") || reason.contains("tls") || reason.contains("TLS");
    Attempt {
        // A certificate problem does not go away by waiting; a refused or timed-out connection may.
        transient: !tls,
        reason: redact(&reason),
        fix: if tls {
            "the server's certificate is not trusted: set auth_key.http.ca_file to the CA that signed it".into()
        } else {
            "check that the server is up and reachable from this machine".into()
        },
    }
}

fn read_token(t: &TokenSource, ctx: &KeyContext) -> Result<SecretString, SecretError> {
    let (raw, name) = match t {
        TokenSource::File(p) => (super::file::read(p)?, format!("file {}", p.display())),
        TokenSource::Credential(c) => (
            super::credential::read(c, ctx.credentials_dir.as_deref())?,
            format!("systemd credential {c}"),
        ),
    };
    super::one_token(raw, &format!("bearer token from {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_responses_yield_the_named_field_and_errors_never_echo_it() {
        let k = extract_json_field(r#"{"key":"fake-key-1","expires":"soon"}"#.into(), "key")
            .ok()
            .unwrap();
        assert_eq!(k, "fake-key-1");
        let e = extract_json_field(r#"{"authkey":"fake-key-secret"}"#.into(), "key")
            .err()
            .unwrap();
        assert!(e.reason.contains("no field \"key\""));
        assert!(!e.reason.contains("fake-key-secret"));
        let e = extract_json_field("fake-key-secret".into(), "key")
            .err()
            .unwrap();
        assert!(!e.reason.contains("fake-key-secret") && !e.transient);
    }

    #[test]
    fn statuses_are_classified_with_advice() {
        use reqwest::StatusCode as S;
        let cases = [
            (S::UNAUTHORIZED, false, "bearer_token"),
            (S::FORBIDDEN, false, "allowlist"),
            (S::NOT_FOUND, false, "url"),
            (S::TOO_MANY_REQUESTS, true, "busy"),
            (S::INTERNAL_SERVER_ERROR, true, "retries"),
            (S::BAD_GATEWAY, true, "retries"),
            (S::IM_A_TEAPOT, false, "refused"),
        ];
        for (status, transient, advice) in cases {
            let a = status_error(status, "", true);
            assert_eq!(a.transient, transient, "{status}");
            assert!(a.fix.contains(advice), "{status}: {}", a.fix);
            assert!(a.reason.contains(&status.as_u16().to_string()));
        }
    }
}
