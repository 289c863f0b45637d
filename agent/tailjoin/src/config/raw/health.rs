//! The `health` section as written. Every push URL is a secret (it carries a token), so it is
//! named by a credential or a root-only file, never written inline.

use super::RawTokenSource;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
}
