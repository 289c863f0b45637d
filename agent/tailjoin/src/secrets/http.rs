//! A key fetched over HTTP(S): a GET, or a POST carrying the machine's identity, to a URL on a
//! provisioning server. Optional bearer token (read from a credential or a file), custom CA
//! bundle for home-lab TLS, strict timeouts, a response size limit, raw or JSON responses, and
//! retries with backoff for transient failures only. A POST proves the machine's TPM when it
//! has one and the `tpm` setting allows ([`super::http_tpm`]).

use super::KeyContext;
use super::identity::MachineIdentity;
use crate::config::{HttpKeySource, HttpMethod, ResponseFormat, RetryPolicy};
use crate::error::{KeyServerFailure, SecretError};
use backon::Retryable;
use secrecy::{ExposeSecret, SecretString};

/// A failed attempt, and whether another attempt may help.
pub(super) struct Attempt {
    pub(super) transient: bool,
    pub(super) reason: String,
    pub(super) fix: String,
    /// What the agent decides on when this is the last attempt (a refusal and its kind, or
    /// the server unavailable); `None` for what is neither (TLS, a bad response).
    pub(super) failure: Option<KeyServerFailure>,
}

impl Attempt {
    /// The error when this was the last attempt.
    pub(super) fn into_error(self, source_name: &str) -> SecretError {
        let source_name = source_name.to_owned();
        match self.failure {
            Some(failure) => SecretError::KeyServer {
                source_name,
                reason: self.reason,
                fix: self.fix,
                failure,
            },
            None => SecretError::Unavailable {
                source_name,
                reason: self.reason,
                fix: self.fix,
            },
        }
    }
}

pub(crate) async fn read(
    src: &HttpKeySource,
    ctx: &KeyContext,
    retry: &RetryPolicy,
) -> Result<String, SecretError> {
    let token = match &src.bearer_token {
        None => None,
        Some(t) => Some(super::read_token(
            t,
            ctx.credentials_dir.as_deref(),
            "bearer token",
        )?),
    };
    fetch(src, token.as_ref(), retry).await
}

/// Fetches the key with `token` as the bearer token (from the configuration, or a boot token
/// from the kernel command line).
pub(super) async fn fetch(
    src: &HttpKeySource,
    token: Option<&SecretString>,
    retry: &RetryPolicy,
) -> Result<String, SecretError> {
    let source_name = src.describe();
    let unavailable = |reason: String, fix: String| SecretError::Unavailable {
        source_name: source_name.clone(),
        reason,
        fix,
    };
    let client = crate::http_client::build(src.timeout, src.ca_file.as_deref())
        .map_err(|e| unavailable(e, "check the ca_file setting".into()))?;
    let identity = match src.method {
        HttpMethod::Post => Some(MachineIdentity::gather()),
        HttpMethod::Get => None,
    };
    let tpm = match identity {
        Some(_) => super::http_tpm::prepare(src)
            .await
            .map_err(|a| unavailable(a.reason, a.fix))?,
        None => None,
    };
    let backoff = retry.key_fetch_backoff();
    let last = super::LastFailure::default();
    let fetch = || fetch_once(&client, src, token, identity.as_ref(), tpm.as_ref());
    let attempts =
        fetch
            .retry(backoff)
            .when(|a: &Attempt| a.transient)
            .notify(|a: &Attempt, delay| {
                last.set(&a.reason);
                tracing::warn!(
                    "fetching the key from {source_name} failed ({}); retrying in {:.1}s",
                    a.reason,
                    delay.as_secs_f64()
                );
            });
    let result = match tokio::time::timeout(retry.key_fetch_deadline, attempts).await {
        Ok(result) => result.map_err(|a| a.into_error(&source_name)),
        Err(_) => Err(super::deadline_passed(&source_name, retry, &last)),
    };
    if let Some(tpm) = tpm {
        tpm.close().await;
    }
    result
}

async fn fetch_once(
    client: &reqwest::Client,
    src: &HttpKeySource,
    token: Option<&SecretString>,
    identity: Option<&MachineIdentity>,
    tpm: Option<&super::http_tpm::TpmSession>,
) -> Result<String, Attempt> {
    if let (Some(id), Some(tpm)) = (identity, tpm) {
        return super::http_tpm::exchange(client, src, token, id, tpm).await;
    }
    let body = request(client, src, token, identity, status_error).await?;
    parse_body(body, &src.response)
}

/// One request: a POST of `body` (with a POST source), else a GET. The body of a 2xx answer;
/// any other status is read by `on_status` (the status, what the server said, whether a token
/// was sent); the refusal's kind from its `Tailjoin-Refusal` header is added to what it says.
pub(super) async fn request(
    client: &reqwest::Client,
    src: &HttpKeySource,
    token: Option<&SecretString>,
    body: Option<&MachineIdentity>,
    on_status: impl FnOnce(reqwest::StatusCode, &str, bool) -> Attempt,
) -> Result<Vec<u8>, Attempt> {
    let mut req = match (src.method, body) {
        (HttpMethod::Post, Some(id)) => client.post(src.url.clone()).json(id),
        _ => client.get(src.url.clone()),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t.expose_secret());
    }
    let mut resp = req.send().await.map_err(transport_error)?;
    let status = resp.status();
    if !status.is_success() {
        // The body of an error may say why: its start is shown redacted and short; the rest is
        // not read (a hostile server may send gigabytes).
        let kind = refusal_kind(resp.headers());
        let said = crate::http_client::error_excerpt(resp).await;
        let mut attempt = on_status(status, &said, token.is_some());
        if let Some(KeyServerFailure::Refused { kind: k, .. }) = &mut attempt.failure {
            *k = kind;
        }
        return Err(attempt);
    }
    crate::http_client::read_capped(&mut resp, src.max_response_bytes)
        .await
        .map_err(|e| match e {
            crate::http_client::BodyError::TooLarge { limit } => Attempt {
                failure: None,
                transient: false,
                reason: format!("the response is larger than {limit} bytes"),
                fix: "the server must answer with just the key (or a small JSON object)".into(),
            },
            crate::http_client::BodyError::Transport(e) => transport_error(e),
        })
}

/// The key out of a successful response's body, raw or from a JSON field.
pub(super) fn parse_body(body: Vec<u8>, format: &ResponseFormat) -> Result<String, Attempt> {
    let text = String::from_utf8(body).map_err(|e| {
        drop(SecretString::from(
            String::from_utf8_lossy(e.as_bytes()).into_owned(),
        ));
        Attempt {
            failure: None,
            transient: false,
            reason: "the response is not UTF-8 text".into(),
            fix: "the server must answer with the key as text".into(),
        }
    })?;
    match format {
        ResponseFormat::Raw => Ok(text),
        ResponseFormat::Json { field } => extract_json_field(text, field),
    }
}

/// The HTTP key-response parser as the fuzzer drives it: a body and a format in, the key (or
/// the reason it is refused) out, after the same checks as a fetched key.
pub fn parse_key_response(body: &[u8], format: &ResponseFormat) -> Result<String, String> {
    let raw = parse_body(body.to_vec(), format).map_err(|a| a.reason)?;
    super::normalize(raw, "fuzz")
        .map(|k| k.expose_secret().to_owned())
        .map_err(|e| e.to_string())
}

/// Takes `field` (a string) out of a JSON object, without echoing the document in errors.
fn extract_json_field(text: String, field: &str) -> Result<String, Attempt> {
    let text = SecretString::from(text);
    let doc: serde_json::Value =
        serde_json::from_str(text.expose_secret()).map_err(|e| Attempt {
            failure: None,
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
            failure: None,
            transient: false,
            reason: format!("the JSON field {field:?} is not a string"),
            fix: "the server must put the key in that field as a string".into(),
        }),
        None => Err(Attempt {
            failure: None,
            transient: false,
            reason: format!("the JSON response has no field {field:?}"),
            fix: "set auth_key.http.json_field to the field that holds the key".into(),
        }),
    }
}

/// The provisioner's `Tailjoin-Refusal` header: a short token of `[a-z0-9_-]`, else ignored.
fn refusal_kind(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let v = headers
        .get(tailjoin_common::wire::REFUSAL_HEADER)?
        .to_str()
        .ok()?;
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    ok.then(|| v.to_owned())
}

/// `said` is the server's explanation as [`crate::http_client::error_excerpt`] gives it.
pub(super) fn status_error(status: reqwest::StatusCode, said: &str, has_token: bool) -> Attempt {
    let code = status.as_u16();
    let (transient, fix) = match code {
        401 if has_token => (
            false,
            "the bearer token was refused: check the bearer_token setting (or the tailjoin.boot_token= kernel parameter: boot tokens work once)",
        ),
        401 => (
            false,
            "the server wants a bearer token: set bearer_token (or pass tailjoin.boot_token= on the kernel command line)",
        ),
        403 => (
            false,
            "the server does not hand this machine a key: check its allowlist (MAC/IP) or the boot token",
        ),
        404 => (
            false,
            "there is no key at this URL: check auth_key.http.url (or tailjoin.key_url= on the kernel command line)",
        ),
        408 | 429 => (true, "the server is busy; tailjoin retries with backoff"),
        // The provisioner still holds this boot token for an earlier try of this machine (one
        // that timed out here): it frees it when that try ends, so ask again.
        409 => (
            true,
            "an earlier request with this boot token is still being served; tailjoin retries with backoff",
        ),
        500..=599 => (true, "the server failed; tailjoin retries with backoff"),
        _ => (false, "the server refused the request"),
    };
    let failure = if transient {
        KeyServerFailure::Unavailable
    } else {
        KeyServerFailure::Refused {
            status: code,
            kind: None,
        }
    };
    Attempt {
        failure: Some(failure),
        transient,
        reason: format!("HTTP {status}{said}"),
        fix: fix.into(),
    }
}

fn transport_error(e: reqwest::Error) -> Attempt {
    let t = crate::http_client::describe_transport_error(e);
    Attempt {
        failure: (!t.tls).then_some(KeyServerFailure::Unavailable),
        // A certificate problem does not go away by waiting; a refused or timed-out connection may.
        transient: !t.tls,
        reason: t.reason,
        fix: if t.tls {
            "the server's certificate is not trusted: set ca_file to the CA that signed it".into()
        } else {
            "check that the server is up and reachable from this machine".into()
        },
    }
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
    fn refusals_carry_their_kind_and_failures_their_class() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut h = HeaderMap::new();
        assert_eq!(refusal_kind(&h), None);
        h.insert(
            "tailjoin-refusal",
            HeaderValue::from_static("boot_token_expired"),
        );
        assert_eq!(refusal_kind(&h).as_deref(), Some("boot_token_expired"));
        h.insert("tailjoin-refusal", HeaderValue::from_static("ek-mismatch"));
        assert_eq!(refusal_kind(&h).as_deref(), Some("ek-mismatch"));
        for odd in ["", "Boot Token", "x\u{7f}", &"a".repeat(65)] {
            if let Ok(v) = HeaderValue::from_str(odd) {
                h.insert("tailjoin-refusal", v);
                assert_eq!(refusal_kind(&h), None, "{odd:?}");
            }
        }
        use reqwest::StatusCode as S;
        let refused = |s| {
            Some(KeyServerFailure::Refused {
                status: s,
                kind: None,
            })
        };
        assert_eq!(status_error(S::FORBIDDEN, "", true).failure, refused(403));
        assert_eq!(
            status_error(S::UNAUTHORIZED, "", true).failure,
            refused(401)
        );
        for s in [
            S::SERVICE_UNAVAILABLE,
            S::BAD_GATEWAY,
            S::TOO_MANY_REQUESTS,
            S::CONFLICT,
        ] {
            assert_eq!(
                status_error(s, "", true).failure,
                Some(KeyServerFailure::Unavailable)
            );
        }
        let e = status_error(S::FORBIDDEN, ": refused", true).into_error("kernel command line");
        assert!(matches!(e, SecretError::KeyServer { .. }), "{e:?}");
        assert!(e.to_string().contains("HTTP 403 Forbidden: refused"), "{e}");
        let plain = Attempt {
            failure: None,
            transient: false,
            reason: "r".into(),
            fix: "f".into(),
        };
        assert!(matches!(
            plain.into_error("s"),
            SecretError::Unavailable { .. }
        ));
    }

    #[test]
    fn statuses_are_classified_with_advice() {
        use reqwest::StatusCode as S;
        let cases = [
            (S::UNAUTHORIZED, false, "bearer_token"),
            (S::FORBIDDEN, false, "allowlist"),
            (S::NOT_FOUND, false, "URL"),
            (S::TOO_MANY_REQUESTS, true, "busy"),
            (S::CONFLICT, true, "earlier request"),
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
