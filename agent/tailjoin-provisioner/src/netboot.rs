//! The netboot listener (plain HTTP, for iPXE and pixiecore): `GET /v1/boot.ipxe[?mac=…]`,
//! `GET /healthz`,
//! `GET /v1/boot/<mac>` (pixiecore's API) and `GET|HEAD /v1/files/kernel`,
//! `/v1/files/initrd/<i>`. A boot request that passes [`super::boot_policy`] gets a fresh
//! one-time token from [`super::boot_store`]; every decision goes to the audit log (never the
//! token).

use super::audit::AuditLine;
use super::boot_policy::{BootRefusal, decide, retry_delay_secs};
use super::ipxe::{Boot, boot_script, chain_script, pixiecore_doc, refusal_script, safe_host};
use super::netboot_config::NetbootSettings;
use super::range::{RangeReq, parse_range};
use super::server::{Provisioner, client_ip};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tailjoin_common::time::rfc3339;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

type Body = BoxBody<Bytes, std::io::Error>;
type Reply = Response<Body>;

const CHUNK: u64 = 64 * 1024;

/// The audit's word for a boot given to an unapproved MAC whose TPM must prove it.
const TPM_TO_PROVE: &str = "tpm_to_prove";

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

fn reply(status: u16, content_type: &str, body: Body) -> Reply {
    let mut r = Response::new(body);
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

fn text(status: u16, body: &str) -> Reply {
    reply(
        status,
        "text/plain; charset=utf-8",
        full(format!("{body}\n")),
    )
}

fn script(body: String) -> Reply {
    reply(200, "text/plain; charset=utf-8", full(body))
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `%3A` → `:` (iPXE may encode the colons of `${net0/mac}`); anything else is left alone and
/// later refused as a malformed MAC.
fn decode_mac(raw: &str) -> String {
    raw.replace("%3A", ":").replace("%3a", ":")
}

/// How a boot request is answered: an iPXE script or a pixiecore document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Ipxe { attempt: u32 },
    Pixiecore,
}

impl Provisioner {
    fn netboot(&self) -> Option<&NetbootSettings> {
        self.settings.netboot.as_ref()
    }

    pub async fn handle_netboot(
        self: Arc<Self>,
        local: SocketAddr,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Reply, Infallible> {
        let client = client_ip(peer);
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok());
        let base = format!(
            "http://{}",
            safe_host(host).map_or_else(|| local.to_string(), str::to_owned)
        );
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let method = req.method().clone();
        let head = method == Method::HEAD;
        if method != Method::GET && !head {
            return Ok(text(
                405,
                "the netboot listener answers GET (and HEAD for files)",
            ));
        }
        let is_file = path == "/v1/files/kernel" || path.starts_with("/v1/files/initrd/");
        if head && !is_file {
            // A HEAD must not issue a token nobody will see.
            return Ok(text(405, "HEAD is answered for /v1/files/ only; use GET"));
        }
        Ok(match path.as_str() {
            "/healthz" => text(200, "ok"),
            "/v1/boot.ipxe" => match query_param(query.as_deref(), "mac") {
                None => script(chain_script(&base)),
                Some(mac) => {
                    let attempt = query_param(query.as_deref(), "attempt")
                        .and_then(|a| a.parse::<u32>().ok())
                        .unwrap_or(0)
                        .min(1000);
                    self.boot(client, &base, &decode_mac(mac), Via::Ipxe { attempt })
                }
            },
            "/v1/files/kernel" => match self.netboot() {
                Some(nb) => serve_file(&nb.kernel, req.headers(), head).await,
                None => text(404, "not found"),
            },
            p => {
                if let Some(mac) = p.strip_prefix("/v1/boot/") {
                    self.boot(client, &base, &decode_mac(mac), Via::Pixiecore)
                } else if let Some(i) = p.strip_prefix("/v1/files/initrd/") {
                    let file = i
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| self.netboot()?.initrds.get(i));
                    match file {
                        Some(f) => serve_file(f, req.headers(), head).await,
                        None => text(404, "not found: no such initrd"),
                    }
                } else {
                    text(
                        404,
                        "not found: the netboot listener answers /v1/boot.ipxe, /v1/boot/<mac> and /v1/files/",
                    )
                }
            }
        })
    }

    fn boot(&self, client: IpAddr, base: &str, raw_mac: &str, via: Via) -> Reply {
        let Some(nb) = self.netboot() else {
            return text(404, "netboot is not configured");
        };
        let decided = self.decide_boot(nb, client, raw_mac);
        let (mac, matched) = match decided {
            Ok(ok) => ok,
            // Nobody approved this MAC, but its TPM may prove it (`netboot.tpm`): it boots, and
            // its key request shows its EK; no key is released without that proof.
            Err(BootRefusal::Pending { mac }) if nb.boots_unknown_macs() => {
                self.note_pending(client, &mac);
                (mac, vec![TPM_TO_PROVE])
            }
            Err(refusal) => return self.refuse_boot(nb, client, base, raw_mac, via, &refusal),
        };
        let issued = match &self.issued {
            Some(store) => store
                .lock()
                .map_err(|_| "token store poisoned".to_owned())
                .and_then(|mut s| s.issue(&mac, nb.token_ttl, nb.one_boot_per_mac)),
            None => Err("no token store".to_owned()),
        };
        let (token, revoked): (SecretString, usize) = match issued {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot issue a boot token for {mac}: {e}");
                self.audit_boot(
                    "boot_refused",
                    client,
                    &mac,
                    Some(format!("store_failed: {e}")),
                    Vec::new(),
                );
                return match via {
                    Via::Ipxe { attempt } => script(refusal_script(
                        base,
                        &format!(
                            "tailjoin: the provisioner cannot issue a boot token for {mac} right now (see its log)"
                        ),
                        &mac,
                        attempt,
                        retry_delay_secs(nb.retry_secs, attempt),
                    )),
                    Via::Pixiecore => text(500, "cannot issue a boot token"),
                };
            }
        };
        if let (Some(p), false) = (&self.pending, matched.contains(&TPM_TO_PROVE)) {
            if let Ok(mut p) = p.lock() {
                if let Err(e) = p.forget(&mac) {
                    tracing::warn!("{e}");
                }
            }
        }
        let reason =
            (revoked > 0).then(|| format!("revoked {revoked} earlier token(s) of this MAC"));
        self.audit_boot("boot_issued", client, &mac, reason, matched);
        tracing::info!(
            tailjoin_client = %client,
            "issued a boot token for {mac} ({client}), valid {}s{}",
            nb.token_ttl.as_secs(),
            if revoked > 0 { format!("; revoked {revoked} earlier one(s)") } else { String::new() }
        );
        let b = Boot {
            base,
            mac: &mac,
            cmdline: &nb.cmdline,
            key_url: &nb.key_url,
            initrds: nb.initrds.len(),
            token: &token,
            retry_secs: retry_delay_secs(nb.retry_secs, 0),
        };
        match via {
            Via::Ipxe { .. } => script(boot_script(&b).expose_secret().to_owned()),
            Via::Pixiecore => reply(
                200,
                "application/json",
                full(pixiecore_doc(&b).expose_secret().to_owned()),
            ),
        }
    }

    fn decide_boot(
        &self,
        nb: &NetbootSettings,
        client: IpAddr,
        raw_mac: &str,
    ) -> Result<(String, Vec<&'static str>), BootRefusal> {
        let limited = self
            .boot_limiter
            .lock()
            .map(|mut l| l.check(client, Instant::now()))
            .unwrap_or(Ok(()));
        if limited.is_err() {
            return Err(BootRefusal::RateLimited {
                mac: super::boot_policy::shown(raw_mac),
            });
        }
        let approved = super::enrol::approved(&self.settings.state_dir).unwrap_or_else(|e| {
            tracing::error!("{e}; treating no MAC as approved");
            Default::default()
        });
        let (mac, matched) = decide(
            &self.settings.allow,
            nb.require_approval,
            &approved,
            client,
            raw_mac,
        )?;
        if nb.l2_check {
            crate::l2_check::check(client, &mac, &neighbours()).map_err(|refusal| {
                BootRefusal::L2 {
                    mac: mac.clone(),
                    refusal,
                }
            })?;
        }
        Ok((mac, matched))
    }

    /// Puts `mac` on the pending list; `true` the first time it is seen.
    fn note_pending(&self, client: IpAddr, mac: &str) -> bool {
        let Some(p) = &self.pending else {
            return true;
        };
        p.lock()
            .map_err(|_| "pending list poisoned".to_owned())
            .and_then(|mut p| p.note(mac, &client.to_string(), &rfc3339(SystemTime::now())))
            .unwrap_or_else(|e| {
                tracing::error!("{e}");
                true
            })
    }

    fn refuse_boot(
        &self,
        nb: &NetbootSettings,
        client: IpAddr,
        base: &str,
        raw_mac: &str,
        via: Via,
        refusal: &BootRefusal,
    ) -> Reply {
        let mac = refusal.mac().map(str::to_owned);
        let first_pending = match refusal {
            BootRefusal::Pending { mac } => self.note_pending(client, mac),
            _ => true,
        };
        let shown = mac
            .clone()
            .unwrap_or_else(|| super::boot_policy::shown(raw_mac));
        // A pending MAC is logged once, not at every retry of its boot loop; a rate-limited
        // request only in the log, as for /v1/key (a flood must not fill the disk).
        let audited = first_pending && !matches!(refusal, BootRefusal::RateLimited { .. });
        if audited {
            let event = if matches!(refusal, BootRefusal::Pending { .. }) {
                "pending"
            } else {
                "boot_refused"
            };
            self.audit_boot(
                event,
                client,
                &shown,
                Some(refusal.kind().to_owned()),
                Vec::new(),
            );
        }
        tracing::warn!(
            tailjoin_client = %client,
            tailjoin_refusal = refusal.kind(),
            "{} ({client})",
            refusal.console_line()
        );
        match via {
            Via::Ipxe { attempt } => script(refusal_script(
                base,
                &refusal.console_line(),
                &shown,
                attempt,
                retry_delay_secs(nb.retry_secs, attempt),
            )),
            // pixiecore ignores a machine on any answer but 200.
            Via::Pixiecore => {
                let status = if matches!(refusal, BootRefusal::RateLimited { .. }) {
                    429
                } else {
                    403
                };
                text(status, &refusal.console_line())
            }
        }
    }

    fn audit_boot(
        &self,
        event: &str,
        client: IpAddr,
        mac: &str,
        reason: Option<String>,
        matched: Vec<&'static str>,
    ) {
        let line = AuditLine {
            time: rfc3339(SystemTime::now()),
            event,
            client: client.to_string(),
            hostname: String::new(),
            machine_id: String::new(),
            macs: vec![mac.to_owned()],
            boot_token: None,
            matched,
            key_id: None,
            expires: None,
            ephemeral: None,
            tags: None,
            reason,
            ek_fingerprint: None,
        };
        if let Err(e) = self.audit.write(&line) {
            tracing::error!("{e}");
        }
    }
}

/// Streams one configured file (never a path from the URL), honouring a single byte range.
/// The provisioner's IPv4 neighbour table; unreadable, it is empty (every check then refuses).
pub(crate) fn neighbours() -> Vec<crate::l2_check::Neighbour> {
    crate::l2_check::read_neighbours().unwrap_or_else(|e| {
        tracing::error!(
            "netboot.l2_check: cannot read /proc/net/arp: {e}; refusing what it cannot check"
        );
        Vec::new()
    })
}

async fn serve_file(path: &Path, headers: &hyper::HeaderMap, head: bool) -> Reply {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("cannot open {}: {e}", path.display());
            return text(
                500,
                "the boot file cannot be read (see the provisioner's log)",
            );
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            tracing::error!("cannot stat {}: {e}", path.display());
            return text(
                500,
                "the boot file cannot be read (see the provisioner's log)",
            );
        }
    };
    let range = parse_range(
        headers
            .get(hyper::header::RANGE)
            .and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, start, count) = match range {
        RangeReq::Full => (200, 0, len),
        RangeReq::Partial { start, end } => (206, start, end - start + 1),
        RangeReq::Unsatisfiable => {
            let mut r = text(416, "range not satisfiable");
            if let Ok(v) = format!("bytes */{len}").parse() {
                r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    if start > 0 {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            tracing::error!("cannot seek in {}: {e}", path.display());
            return text(500, "the boot file cannot be read");
        }
    }
    let body = if head {
        full(Bytes::new())
    } else {
        let stream = futures_util::stream::unfold((file, count), |(mut f, left)| async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left.min(CHUNK)).unwrap_or(64 * 1024);
            let mut buf = vec![0u8; want];
            match f.read(&mut buf).await {
                Ok(0) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the boot file shrank while being served",
                    )),
                    (f, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), (f, left - n as u64)))
                }
                Err(e) => Some((Err(e), (f, 0))),
            }
        });
        StreamBody::new(stream).boxed()
    };
    let mut r = reply(status, "application/octet-stream", body);
    let h = r.headers_mut();
    for (name, value) in [
        (hyper::header::CONTENT_LENGTH, count.to_string()),
        (hyper::header::ACCEPT_RANGES, "bytes".to_owned()),
    ] {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    }
    if status == 206 {
        if let Ok(v) = format!("bytes {start}-{}/{len}", start + count - 1).parse() {
            h.insert(hyper::header::CONTENT_RANGE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_encoded_macs() {
        let q = Some("mac=52%3A54%3A00%3A12%3A34%3A56&attempt=3");
        assert_eq!(query_param(q, "attempt"), Some("3"));
        assert_eq!(
            decode_mac(query_param(q, "mac").unwrap()),
            "52:54:00:12:34:56"
        );
        assert_eq!(query_param(Some("x=1"), "mac"), None);
        assert_eq!(query_param(None, "mac"), None);
    }
}
