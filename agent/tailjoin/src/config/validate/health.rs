//! The `health` section: the pull side (listener, textfile) and the push reporters (webhook,
//! healthchecks.io-compatible ping URL, Uptime Kuma push URL). Every push URL is a secret (it
//! carries a token), so it is named by a credential or a root-only file, never written inline.

use super::fields::{invalid, validate_credential_or_file};
use crate::config::raw::{RawHealth, RawTokenSource};
use crate::config::settings::{
    DEFAULT_FLUSH_TIMEOUT_SECS, DEFAULT_HEARTBEAT_SECS, DEFAULT_PUSH_ATTEMPTS,
    DEFAULT_PUSH_TIMEOUT_SECS, HealthSettings, PushSettings, WebhookSettings,
};
use crate::error::ConfigError;
use std::time::Duration;

impl RawHealth {
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
    use crate::config::{HealthSettings, TokenSource};
    use std::time::Duration;

    /// Through the real parser, so syntax errors name the field path too.
    fn parse(json: &str) -> Result<HealthSettings, String> {
        let doc = format!(r#"{{"health": {json}}}"#);
        let raw = crate::config::parse(&doc).map_err(|e| e.to_string())?;
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
