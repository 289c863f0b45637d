//! The provisioner's HTTP(S) server: `POST /v1/key` (and `GET /v1/key` for clients that send no
//! identity), `GET /healthz`. Each request is rate-limited, checked against the allowlists and
//! boot tokens, answered with a freshly minted key, and written to the audit log.

use super::admission::MintAdmission;
use super::audit::{AuditLine, AuditLog};
use super::boot_issue::IssuedReservation;
use super::boot_policy::mac_still_allowed;
use super::boot_store::BootStore;
use super::config::Settings;
use super::enrol::Pending;
use super::policy::check_network;
use super::policy::{KeyRequest, Refusal, check_lists};
use super::rate::RateLimiter;
use super::tokens::{BootTokens, Reservation};
use super::tpm::challenge::Challenges;
use super::tpm_gate::{TpmMode, gate_plain};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use secrecy::SecretString;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tailjoin_common::time::rfc3339;

mod mint_answer;
mod tpm_steps;

pub use tpm_steps::ChallengeGrant;

/// Largest request body read (an identity is a few hundred bytes).
const MAX_BODY: usize = 16 * 1024;

pub struct Provisioner {
    pub settings: Settings,
    pub credentials_dir: Option<PathBuf>,
    pub tokens: Option<Mutex<BootTokens>>,
    pub limiter: Mutex<RateLimiter>,
    pub audit: AuditLog,
    /// Netboot: the tokens this provisioner issues itself, its own rate limiter for boot
    /// requests, and the pending list.
    pub issued: Option<Mutex<BootStore>>,
    pub boot_limiter: Mutex<RateLimiter>,
    pub pending: Option<Mutex<Pending>>,
    /// A few mints at a time; the other key requests wait their turn.
    pub admission: MintAdmission,
    /// TPM-proven requests between their two steps.
    pub challenges: Mutex<Challenges<ChallengeGrant>>,
    /// `netboot.tpm_ek_ca_files`, loaded.
    pub ek_cas: Option<super::tpm::ek_cert::EkCaSet>,
}

/// The token a request holds while its key is minted.
enum Held {
    None,
    PreShared(Reservation),
    Issued(IssuedReservation),
}

impl Held {
    fn label(&self) -> Option<String> {
        match self {
            Held::None => None,
            Held::PreShared(r) => Some(r.label.clone()),
            Held::Issued(r) => Some(r.label.clone()),
        }
    }
}

/// A held token that goes back to "issued" if the request ends before its key was handed out:
/// when the client gives up (its timeout) and hyper drops this request's future mid-mint, the
/// machine's retry with the same token must find it usable, not "in use" for ever.
struct HeldGuard<'a> {
    prov: &'a Provisioner,
    held: Option<Held>,
}

impl HeldGuard<'_> {
    fn label(&self) -> Option<String> {
        self.held.as_ref().and_then(Held::label)
    }

    fn release(mut self) {
        if let Some(h) = self.held.take() {
            self.prov.release(h);
        }
    }

    fn commit(mut self) -> Result<(), String> {
        match self.held.take() {
            Some(h) => self.prov.commit(h),
            None => Ok(()),
        }
    }
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            tracing::info!(
                "a key request ended before its key was handed out; its boot token is usable again"
            );
            self.prov.release(h);
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-store".parse() {
        h.insert(hyper::header::CACHE_CONTROL, v);
    }
    r
}

fn text(status: u16, body: impl Into<String>) -> Reply {
    let mut b = body.into();
    b.push('\n');
    reply(status, "text/plain; charset=utf-8", b)
}

/// A refusal of `/v1/key`: its status, its message, and its kind in the `Tailjoin-Refusal`
/// header for the agent to tell a refusal a new boot cures from one it does not.
pub(super) fn refusal_reply(refusal: &Refusal) -> Reply {
    let mut r = text(refusal.http_status(), refusal.message());
    if let Ok(v) = refusal.kind().parse() {
        r.headers_mut()
            .insert(tailjoin_common::wire::REFUSAL_HEADER, v);
    }
    // Too many TPM challenges at once: they expire within minutes; ask again soon.
    if matches!(refusal, Refusal::TpmBusy) {
        if let Ok(v) = "5".parse() {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
    }
    r
}

/// A refusal that says when to ask again: `Retry-After` in whole seconds, at least 1.
fn retry_later(status: u16, body: &str, after: Duration) -> Reply {
    let mut r = text(status, body);
    if let Ok(v) = format!("{}", after.as_secs_f64().ceil().max(1.0)).parse() {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    r
}

/// The client's address, with IPv4-mapped IPv6 shown as IPv4.
pub(super) fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer.ip()),
        v4 => v4,
    }
}

fn bearer_token(req: &Request<Incoming>) -> Option<SecretString> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then(|| SecretString::from(token.to_owned()))
}

impl Provisioner {
    pub async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Reply, Infallible> {
        let path = req.uri().path().to_owned();
        Ok(match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => text(200, "ok"),
            (&Method::POST | &Method::GET, "/v1/key") => self.issue(client_ip(peer), req).await,
            (_, "/v1/key") => text(405, "use POST /v1/key"),
            _ => text(
                404,
                "not found: the provisioner answers POST /v1/key and GET /healthz",
            ),
        })
    }

    async fn issue(&self, client: IpAddr, req: Request<Incoming>) -> Reply {
        let limited = self
            .limiter
            .lock()
            .map(|mut l| l.check(client, Instant::now()))
            .unwrap_or(Ok(()));
        if let Err(wait) = limited {
            tracing::warn!(
                tailjoin_client = %client,
                "rate limit: refusing a key request from {client}; retry in {:.0}s",
                wait.as_secs_f64().ceil()
            );
            return retry_later(429, "too many requests; retry later", wait);
        }

        let token = bearer_token(&req);
        let is_post = req.method() == Method::POST;
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return text(
                    400,
                    format!("the request body is unreadable or larger than {MAX_BODY} bytes"),
                );
            }
        };
        let mut ident: KeyRequest = if is_post && !body.is_empty() {
            match serde_json::from_slice(&body) {
                Ok(i) => i,
                Err(e) => {
                    return text(
                        400,
                        format!(
                            "the body is not the identity JSON expected ({e}); send {{\"hostname\", \"machine_id\", \"boot_id\", \"mac_addresses\"}}"
                        ),
                    );
                }
            }
        } else {
            KeyRequest::default()
        };

        if self.tpm_mode() != TpmMode::Off {
            if let Some(proof) = ident.tpm_proof.take() {
                return self.tpm_step2(client, &ident, token, &proof).await;
            }
            if let Some(evidence) = ident.tpm.take() {
                return self.tpm_step1(client, &ident, &evidence);
            }
        }
        let (matched, held) = match self.authorize_plain(client, &ident, token) {
            Ok(ok) => ok,
            Err(reply) => return *reply,
        };
        self.mint_and_answer(client, &ident, matched, held, None)
            .await
    }

    /// The TPM policy in force (`off` without a netboot section).
    fn tpm_mode(&self) -> TpmMode {
        self.settings
            .netboot
            .as_ref()
            .map_or(TpmMode::Off, |n| n.tpm)
    }

    /// A request without TPM proof: the allowlists and the boot token decide, and `netboot.tpm`
    /// may demand proof for this machine.
    fn authorize_plain(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        token: Option<SecretString>,
    ) -> Result<(Vec<&'static str>, Held), Box<Reply>> {
        if self.tpm_mode() == TpmMode::Required {
            return Err(Box::new(self.refuse(
                client,
                ident,
                None,
                &Refusal::TpmRequired { mac: None },
            )));
        }
        let (matched, held) = self.authorize_token(client, ident, token)?;
        let token_mac = match &held {
            Held::Issued(r) => Some(r.mac.clone()),
            _ => None,
        };
        let macs = token_mac.map_or_else(|| ident.macs(), |m| vec![m]);
        let approved = super::enrol::approved(&self.settings.state_dir).unwrap_or_default();
        if let Err(mac) = gate_plain(self.tpm_mode(), macs.iter().map(String::as_str), &approved) {
            let label = held.label();
            self.release(held);
            return Err(Box::new(self.refuse(
                client,
                ident,
                label,
                &Refusal::TpmRequired { mac },
            )));
        }
        Ok((matched, held))
    }

    /// The boot-token and allowlist part of a request's authorization.
    fn authorize_token(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        token: Option<SecretString>,
    ) -> Result<(Vec<&'static str>, Held), Box<Reply>> {
        let issued_token = match (&self.issued, &token) {
            (Some(store), Some(tok)) => store.lock().map(|s| s.knows(tok)).unwrap_or(false),
            _ => false,
        };
        if issued_token {
            return self.hold_issued(client, ident, token.as_ref());
        }
        if token.is_some() && self.issued.is_some() && self.tokens.is_none() {
            // Netboot is on and no pre-shared tokens are configured: a token we do not know is
            // an expired-and-forgotten or made-up one.
            return Err(Box::new(self.refuse(
                client,
                ident,
                None,
                &Refusal::TokenUnknown,
            )));
        }
        let matched = check_lists(&self.settings.allow, client, ident, token.is_some())
            .map_err(|refusal| Box::new(self.refuse(client, ident, None, &refusal)))?;
        let held = match (&self.tokens, &token) {
            (Some(tokens), Some(tok)) => {
                let reserved = match tokens.lock() {
                    Ok(mut t) => t.reserve(tok),
                    Err(_) => return Err(Box::new(text(500, "internal error (token store)"))),
                };
                match reserved {
                    Ok(r) => Held::PreShared(r),
                    Err(refusal) => {
                        return Err(Box::new(self.refuse(client, ident, None, &refusal)));
                    }
                }
            }
            _ => Held::None,
        };
        Ok((matched, held))
    }

    /// Checks and reserves a netboot-issued token: the network list, the token's state, its MAC
    /// binding, and that its MAC is still approved.
    fn hold_issued(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        token: Option<&SecretString>,
    ) -> Result<(Vec<&'static str>, Held), Box<Reply>> {
        let (Some(store), Some(tok)) = (&self.issued, token) else {
            return Err(Box::new(text(500, "internal error (token store)")));
        };
        let matched = check_network(&self.settings.allow, client)
            .map_err(|r| Box::new(self.refuse(client, ident, None, &r)))?;
        let reserved = match store.lock() {
            Ok(mut s) => s.reserve(tok, &ident.macs()),
            Err(_) => return Err(Box::new(text(500, "internal error (token store)"))),
        };
        let r = reserved.map_err(|r| Box::new(self.refuse(client, ident, None, &r)))?;
        if self.settings.netboot.as_ref().is_some_and(|n| n.l2_check) {
            if let Err(refusal) =
                crate::l2_check::check(client, &r.mac, &super::netboot::neighbours())
            {
                if let Ok(mut s) = store.lock() {
                    s.release(&r);
                }
                let refusal = Refusal::L2 {
                    mac: r.mac.clone(),
                    refusal,
                };
                return Err(Box::new(self.refuse(
                    client,
                    ident,
                    Some(r.label.clone()),
                    &refusal,
                )));
            }
        }
        let require = self
            .settings
            .netboot
            .as_ref()
            .is_none_or(|n| n.require_approval);
        let approved = super::enrol::approved(&self.settings.state_dir).unwrap_or_default();
        if !mac_still_allowed(&self.settings.allow, require, &approved, &r.mac) {
            if self
                .settings
                .netboot
                .as_ref()
                .is_some_and(|n| n.boots_unknown_macs())
            {
                // Booted unapproved for its TPM to prove it; without a TPM it gets nothing.
                if let Ok(mut s) = store.lock() {
                    s.release(&r);
                }
                let refusal = Refusal::NotApproved { mac: r.mac.clone() };
                return Err(Box::new(self.refuse(
                    client,
                    ident,
                    Some(r.label.clone()),
                    &refusal,
                )));
            }
            let refusal = Refusal::TokenRevoked {
                label: r.label.clone(),
            };
            if let Ok(mut s) = store.lock() {
                s.release(&r);
                if let Err(e) = s.revoke_mac(&r.mac) {
                    tracing::error!("{e}");
                }
            }
            return Err(Box::new(self.refuse(
                client,
                ident,
                Some(r.label.clone()),
                &refusal,
            )));
        }
        Ok((matched, Held::Issued(r)))
    }

    fn release(&self, held: Held) {
        match held {
            Held::None => {}
            Held::PreShared(r) => {
                if let Some(Ok(mut t)) = self.tokens.as_ref().map(Mutex::lock) {
                    t.release(r);
                }
            }
            Held::Issued(r) => {
                if let Some(Ok(mut s)) = self.issued.as_ref().map(Mutex::lock) {
                    s.release(&r);
                }
            }
        }
    }

    /// Spends the held token durably before the key is handed out.
    fn commit(&self, held: Held) -> Result<(), String> {
        match held {
            Held::None => Ok(()),
            Held::PreShared(r) => match &self.tokens {
                Some(tokens) => tokens
                    .lock()
                    .map_err(|_| "token store poisoned".to_owned())
                    .and_then(|mut t| t.commit(r)),
                None => Ok(()),
            },
            Held::Issued(r) => match &self.issued {
                Some(store) => {
                    let mut s = store
                        .lock()
                        .map_err(|_| "token store poisoned".to_owned())?;
                    s.commit(&r).inspect_err(|_| s.release(&r))
                }
                None => Ok(()),
            },
        }
    }

    fn line<'a>(&self, event: &'a str, client: IpAddr, ident: &KeyRequest) -> AuditLine<'a> {
        AuditLine {
            time: rfc3339(SystemTime::now()),
            event,
            client: client.to_string(),
            hostname: ident.hostname_for_log(),
            machine_id: ident.machine_id_for_log(),
            macs: ident.macs(),
            boot_token: None,
            matched: Vec::new(),
            key_id: None,
            expires: None,
            ephemeral: None,
            tags: None,
            reason: None,
            ek_fingerprint: None,
        }
    }

    fn refuse(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        label: Option<String>,
        refusal: &Refusal,
    ) -> Reply {
        self.refuse_naming(client, ident, refusal, label, None)
    }

    /// Logs, audits (with the boot token's label and the EK shown, where there are) and answers
    /// a refusal.
    fn refuse_naming(
        &self,
        client: IpAddr,
        ident: &KeyRequest,
        refusal: &Refusal,
        label: Option<String>,
        ek_fingerprint: Option<String>,
    ) -> Reply {
        tracing::warn!(
            tailjoin_client = %client,
            tailjoin_refusal = refusal.kind(),
            "{} ({client}): {}",
            ident.hostname_for_log(),
            refusal.message()
        );
        self.audit_or_log(&AuditLine {
            reason: Some(refusal.kind().to_owned()),
            boot_token: label,
            ek_fingerprint,
            ..self.line("refused", client, ident)
        });
        refusal_reply(refusal)
    }

    fn audit_or_log(&self, line: &AuditLine<'_>) {
        if let Err(e) = self.audit.write(line) {
            tracing::error!("{e}");
        }
    }
}

/// How long a client may take to send its request headers, and a whole exchange.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);
