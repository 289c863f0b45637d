//! The `health` section: the pull side (listener, textfile) and the push reporters (webhook,
//! healthchecks.io-compatible ping URL, Uptime Kuma push URL). Every push URL is a secret (it
//! carries a token), so it is named by a credential or a root-only file, never written inline.

use super::{RawTokenSource, TokenSource, invalid, validate_credential_or_file};
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// `IP:PORT` for the `/healthz` and `/metrics` listener (off when absent).
    pub listen: Option<String>,
    /// node_exporter textfile-collector file the metrics are written to on every transition.
    pub textfile: Option<PathBuf>,
    /// Seconds between heartbeats of the push reporters; 0 turns them off [default: 300].
    pub heartbeat_secs: Option<u64>,
    /// Connect and whole-request timeout of one push [default: 10].
    pub push_timeout_secs: Option<u64>,
    /// Tries per report, the first included [default: 5].
    pub push_attempts: Option<u32>,
    /// How long the agent, when it stops, waits for reports still queued [default: 2].
    pub flush_timeout_secs: Option<u64>,
    /// PEM bundle of the CA(s) that sign the push endpoints' certificates.
    pub ca_file: Option<PathBuf>,
    /// Accept `http://` push URLs (their token then crosses the network in clear text).
    pub allow_plain_http: Option<bool>,
    pub webhook: Option<RawWebhook>,
    pub healthchecks: Option<RawPingUrl>,
    pub uptime_kuma: Option<RawPingUrl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Where the URL is: `{"credential": NAME}` or `{"file": PATH}`.
    pub url: Option<RawTokenSource>,
    /// A token sent as `Authorization: Bearer …`, named the same way.
    pub bearer_token: Option<RawTokenSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPingUrl {
    /// Where the URL is: `{"credential": NAME}` or `{"file": PATH}`.
    pub url: Option<RawTokenSource>,
}

/// Validated health settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSettings {
    pub listen: Option<std::net::SocketAddr>,
    pub textfile: Option<PathBuf>,
    pub push: PushSettings,
}

/// The push reporters and how they deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// `None`: no heartbeats.
    pub heartbeat: Option<Duration>,
    pub timeout: Duration,
    pub attempts: u32,
    /// How long the agent waits on exit for reports not yet delivered (0: not at all).
    pub flush_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub allow_plain_http: bool,
    pub webhook: Option<WebhookSettings>,
    pub healthchecks: Option<TokenSource>,
    pub uptime_kuma: Option<TokenSource>,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            heartbeat: Some(Duration::from_secs(DEFAULT_HEARTBEAT_SECS)),
            timeout: Duration::from_secs(DEFAULT_PUSH_TIMEOUT_SECS),
            attempts: DEFAULT_PUSH_ATTEMPTS,
            flush_timeout: Duration::from_secs(DEFAULT_FLUSH_TIMEOUT_SECS),
            ca_file: None,
            allow_plain_http: false,
            webhook: None,
            healthchecks: None,
            uptime_kuma: None,
        }
    }
}

impl PushSettings {
    /// Whether any push reporter is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some() || self.healthchecks.is_some() || self.uptime_kuma.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: TokenSource,
    pub bearer_token: Option<TokenSource>,
}

pub const DEFAULT_HEARTBEAT_SECS: u64 = 300;
pub const DEFAULT_PUSH_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_PUSH_ATTEMPTS: u32 = 5;
/// Short: a netbooted machine pays it at every shutdown when an endpoint hangs.
pub const DEFAULT_FLUSH_TIMEOUT_SECS: u64 = 2;

impl RawHealth {
    /// `over`'s settings win, field by field.
    pub fn overlay(self, over: RawHealth) -> RawHealth {
        RawHealth {
            listen: over.listen.or(self.listen),
            textfile: over.textfile.or(self.textfile),
            heartbeat_secs: over.heartbeat_secs.or(self.heartbeat_secs),
            push_timeout_secs: over.push_timeout_secs.or(self.push_timeout_secs),
            push_attempts: over.push_attempts.or(self.push_attempts),
            flush_timeout_secs: over.flush_timeout_secs.or(self.flush_timeout_secs),
            ca_file: over.ca_file.or(self.ca_file),
            allow_plain_http: over.allow_plain_http.or(self.allow_plain_http),
            webhook: over.webhook.or(self.webhook),
            healthchecks: over.healthchecks.or(self.healthchecks),
            uptime_kuma: over.uptime_kuma.or(self.uptime_kuma),
        }
    }

    pub fn validate(self) -> Result<HealthSettings, ConfigError> {
        let listen = self
            .listen
            .map(|l| {
                l.parse().map_err(|_| {
                    invalid(
                        "health.listen",
                        format!("{l:?} is not IP:PORT"),
                        "use e.g. \"127.0.0.1:9901\" (or the node's tailnet address)",
                    )
                })
            })
            .transpose()?;
        let textfile = match self.textfile {
            Some(p) if !p.is_absolute() || p.extension().is_none_or(|e| e != "prom") => {
                return Err(invalid(
                    "health.textfile",
                    format!("{} is not an absolute path ending in .prom", p.display()),
                    "use a file in node_exporter's --collector.textfile.directory, e.g. \
                     /var/lib/prometheus-node-exporter-text-files/tailjoin.prom",
                ));
            }
            other => other,
        };
        let heartbeat = match self.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS) {
            0 => None,
            s @ 1..=86_400 => Some(Duration::from_secs(s)),
            s => {
                return Err(invalid(
                    "health.heartbeat_secs",
                    format!("{s} is out of range"),
                    "use 1 to 86400 seconds, or 0 for no heartbeats",
                ));
            }
        };
        let timeout_secs = self.push_timeout_secs.unwrap_or(DEFAULT_PUSH_TIMEOUT_SECS);
        if !(1..=300).contains(&timeout_secs) {
            return Err(invalid(
                "health.push_timeout_secs",
                format!("{timeout_secs} is out of range"),
                "use 1 to 300 seconds",
            ));
        }
        let attempts = self.push_attempts.unwrap_or(DEFAULT_PUSH_ATTEMPTS);
        if !(1..=20).contains(&attempts) {
            return Err(invalid(
                "health.push_attempts",
                format!("{attempts} is out of range"),
                "use 1 (no retries) to 20",
            ));
        }
        let flush_secs = self
            .flush_timeout_secs
            .unwrap_or(DEFAULT_FLUSH_TIMEOUT_SECS);
        if flush_secs > 60 {
            return Err(invalid(
                "health.flush_timeout_secs",
                format!("{flush_secs} is out of range"),
                "use 0 (do not wait) to 60 seconds: the agent's stop waits this long for \
                 undelivered reports",
            ));
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_absolute() {
                return Err(invalid(
                    "health.ca_file",
                    format!("{} is not an absolute path", ca.display()),
                    "give the absolute path of a PEM bundle",
                ));
            }
        }
        let url = |field: &str, src: Option<RawTokenSource>| {
            let src = src.ok_or_else(|| {
                invalid(
                    &format!("{field}.url"),
                    "is missing".into(),
                    "name the URL by {\"credential\": NAME} or {\"file\": PATH}: it carries a \
                     token, so it is never written into the configuration",
                )
            })?;
            validate_credential_or_file(&format!("{field}.url"), src)
        };
        let webhook = self
            .webhook
            .map(|w| {
                Ok::<_, ConfigError>(WebhookSettings {
                    url: url("health.webhook", w.url)?,
                    bearer_token: w
                        .bearer_token
                        .map(|t| validate_credential_or_file("health.webhook.bearer_token", t))
                        .transpose()?,
                })
            })
            .transpose()?;
        let healthchecks = self
            .healthchecks
            .map(|h| url("health.healthchecks", h.url))
            .transpose()?;
        let uptime_kuma = self
            .uptime_kuma
            .map(|h| url("health.uptime_kuma", h.url))
            .transpose()?;
        Ok(HealthSettings {
            listen,
            textfile,
            push: PushSettings {
                heartbeat,
                timeout: Duration::from_secs(timeout_secs),
                attempts,
                flush_timeout: Duration::from_secs(flush_secs),
                ca_file: self.ca_file,
                allow_plain_http: self.allow_plain_http.unwrap_or(false),
                webhook,
                healthchecks,
                uptime_kuma,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the real parser, so syntax errors name the field path too.
    fn parse(json: &str) -> Result<HealthSettings, String> {
        let doc = format!(r#"{{"health": {json}}}"#);
        let raw = super::super::parse(&doc).map_err(|e| e.to_string())?;
        raw.health
            .unwrap_or_default()
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_push_nowhere() {
        let s = parse("{}").unwrap();
        assert!(!s.push.any());
        assert_eq!(s.push.heartbeat, Some(Duration::from_secs(300)));
        assert_eq!(s.push.attempts, 5);
        assert_eq!(s.push.flush_timeout, Duration::from_secs(2));
        let s = parse(r#"{"flush_timeout_secs": 0}"#).unwrap();
        assert_eq!(s.push.flush_timeout, Duration::ZERO);
    }

    #[test]
    fn reporters_take_urls_from_credentials_or_files() {
        let s = parse(
            r#"{"heartbeat_secs": 0, "push_attempts": 3,
                "webhook": {"url": {"credential": "hook-url"}, "bearer_token": {"file": "/run/t"}},
                "healthchecks": {"url": {"file": "/run/secrets/hc"}},
                "uptime_kuma": {"url": {"credential": "kuma"}}}"#,
        )
        .unwrap();
        assert_eq!(s.push.heartbeat, None);
        assert_eq!(s.push.attempts, 3);
        let hook = s.push.webhook.unwrap();
        assert_eq!(hook.url, TokenSource::Credential("hook-url".into()));
        assert_eq!(hook.bearer_token, Some(TokenSource::File("/run/t".into())));
        assert_eq!(
            s.push.healthchecks,
            Some(TokenSource::File("/run/secrets/hc".into()))
        );
    }

    #[test]
    fn an_inline_url_is_refused_naming_the_field() {
        let e = parse(r#"{"healthchecks": {"url": "https://hc-ping.com/fake-uuid"}}"#).unwrap_err();
        assert!(e.contains("health.healthchecks.url"), "{e}");
        let e = parse(r#"{"webhook": {}}"#).unwrap_err();
        assert!(
            e.contains("health.webhook.url") && e.contains("credential"),
            "{e}"
        );
        let e = parse(r#"{"uptime_kuma": {"url": {"file": "relative"}}}"#).unwrap_err();
        assert!(e.contains("health.uptime_kuma.url.file"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_field() {
        for (json, field) in [
            (r#"{"heartbeat_secs": 90000}"#, "health.heartbeat_secs"),
            (r#"{"push_timeout_secs": 0}"#, "health.push_timeout_secs"),
            (r#"{"push_attempts": 0}"#, "health.push_attempts"),
            (r#"{"push_attempts": 21}"#, "health.push_attempts"),
            (r#"{"flush_timeout_secs": 61}"#, "health.flush_timeout_secs"),
            (r#"{"ca_file": "ca.pem"}"#, "health.ca_file"),
            (r#"{"listen": "localhost"}"#, "health.listen"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}
