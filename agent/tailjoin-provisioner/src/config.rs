//! The provisioner's configuration: raw JSON (deny unknown fields) → validated [`Settings`].

use super::admission::AdmissionSettings;
use super::netboot_config::{NetbootSettings, RawNetboot};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tailjoin_common::config::{
    LogLevel, MintApi, RawHeadscaleMint, RawTailscaleOAuth, RawTokenSource, TokenSource, invalid,
    validate_credential_or_file,
};
use tailjoin_common::error::ConfigError;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/tailjoin-provisioner";

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvisionConfig {
    /// `ip:port` to listen on.
    pub listen: Option<String>,
    pub tls: Option<RawTls>,
    /// Serve plain HTTP (keys cross the network in clear text).
    pub allow_plain_http: Option<bool>,
    pub mint: Option<RawMint>,
    /// Tags of the minted keys (and so of the nodes).
    pub tags: Option<Vec<String>>,
    /// Minted nodes are ephemeral [default: true].
    pub ephemeral: Option<bool>,
    /// Lifetime of a minted, unused key [default: 300].
    pub key_expiry_secs: Option<u64>,
    pub allow: Option<RawAllow>,
    pub rate_limit: Option<RawRateLimit>,
    pub state_dir: Option<PathBuf>,
    pub audit_log: Option<PathBuf>,
    pub log_level: Option<String>,
    /// Issue boots, not just keys: iPXE scripts with a fresh one-time boot token.
    pub netboot: Option<RawNetboot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain (public).
    pub cert_file: PathBuf,
    /// PEM private key, from a credential or a file.
    pub key: RawTokenSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawMint {
    Headscale(RawHeadscaleMint),
    TailscaleOauth(RawTailscaleOAuth),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    /// MAC addresses; a machine passes if one it reports is listed.
    pub macs: Option<Vec<String>>,
    /// CIDR prefixes; the client's address must be in one.
    pub networks: Option<Vec<String>>,
    /// One-time boot tokens: a file of `TOKEN [LABEL]` lines, from a credential or a file.
    pub boot_tokens: Option<RawTokenSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub per_client_per_minute: Option<u32>,
    /// Mint calls in flight at most; other key requests wait their turn [default: 4].
    pub concurrent_mints: Option<u32>,
    /// How long a key request waits for its turn before a 503 with Retry-After [default: 20].
    pub mint_queue_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls: Option<TlsSettings>,
    pub mint: MintApi,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub key_expiry: Duration,
    pub allow: AllowRules,
    pub boot_tokens: Option<TokenSource>,
    pub rate_limit: RateLimit,
    pub admission: AdmissionSettings,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    pub log_level: LogLevel,
    pub netboot: Option<NetbootSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key: TokenSource,
}

/// The allowlists that need no secret: what [`super::policy`] checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowRules {
    pub macs: Option<Vec<String>>,
    pub networks: Option<Vec<Cidr>>,
    pub tokens_required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
    pub per_client_per_minute: u32,
}

pub fn load_file(path: &Path) -> Result<RawProvisionConfig, ConfigError> {
    let text = tailjoin_common::fs_read::read_config(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let raw: RawProvisionConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Syntax {
            file: Some(path.to_owned()),
            field: if field == "." { String::new() } else { field },
            message: e.into_inner().to_string(),
        }
    })?;
    Ok(raw)
}

pub use tailjoin_common::wire::normalize_mac;

impl RawProvisionConfig {
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let listen_raw = self.listen.ok_or_else(|| {
            invalid(
                "listen",
                "no listen address is set".into(),
                "set listen to IP:PORT, e.g. \"0.0.0.0:8443\" (the netboot LAN) or \"127.0.0.1:8443\"",
            )
        })?;
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_raw:?} is not IP:PORT"),
                "use e.g. \"0.0.0.0:8443\" or \"[::]:8443\"",
            )
        })?;
        let tls = match self.tls {
            Some(t) => {
                if !t.cert_file.is_absolute() {
                    return Err(invalid(
                        "tls.cert_file",
                        format!("{} is not an absolute path", t.cert_file.display()),
                        "use an absolute path to the PEM certificate chain",
                    ));
                }
                Some(TlsSettings {
                    cert_file: t.cert_file,
                    key: validate_credential_or_file("tls.key", t.key)?,
                })
            }
            None if self.allow_plain_http.unwrap_or(false) => None,
            None => {
                return Err(invalid(
                    "tls",
                    "no TLS certificate is set, so keys would cross the network in clear text"
                        .into(),
                    "set tls.cert_file and tls.key (a home-lab CA is fine; give the machines its \
                     certificate as ca_file), or set allow_plain_http to true on a network you trust",
                ));
            }
        };
        let tags = self.tags.unwrap_or_default();
        for (i, t) in tags.iter().enumerate() {
            tailjoin_common::config::validate_tag(&format!("tags[{i}]"), t)?;
        }
        let (mint, expiry_in_mint) = match self.mint {
            None => {
                return Err(invalid(
                    "mint",
                    "no minting API is set".into(),
                    "set mint to {\"headscale\": {…}} or {\"tailscale_oauth\": {…}}",
                ));
            }
            Some(RawMint::Headscale(h)) => {
                let (api, exp) = tailjoin_common::config::validate_headscale("mint.headscale", h)?;
                if api.user.is_none() && tags.is_empty() {
                    return Err(invalid(
                        "mint.headscale.user",
                        "neither a user nor tags is set, and headscale needs one to own the nodes"
                            .into(),
                        "set mint.headscale.user, or tags",
                    ));
                }
                (MintApi::Headscale(api), exp)
            }
            Some(RawMint::TailscaleOauth(t)) => {
                let (api, exp) =
                    tailjoin_common::config::validate_tailscale("mint.tailscale_oauth", t)?;
                if tags.is_empty() {
                    return Err(invalid(
                        "tags",
                        "Tailscale only lets an OAuth client create keys for tagged nodes".into(),
                        "set tags to tags the OAuth client owns, e.g. [\"tag:netboot\"]",
                    ));
                }
                (MintApi::Tailscale(api), exp)
            }
        };
        if expiry_in_mint.is_some() {
            return Err(invalid(
                "mint",
                "expiry_secs is set inside mint".into(),
                "set key_expiry_secs at the top level instead",
            ));
        }
        let key_expiry =
            tailjoin_common::config::validate_expiry("key_expiry_secs", self.key_expiry_secs, 300)?;

        let raw_allow = self.allow.unwrap_or_default();
        let macs = match raw_allow.macs {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for (i, m) in list.iter().enumerate() {
                    out.push(normalize_mac(m).ok_or_else(|| {
                        invalid(
                            &format!("allow.macs[{i}]"),
                            format!("{m:?} is not a MAC address"),
                            "write MACs as \"52:54:00:12:34:56\"",
                        )
                    })?);
                }
                Some(out)
            }
        };
        let networks = match raw_allow.networks {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for (i, n) in list.iter().enumerate() {
                    out.push(Cidr::parse(n).ok_or_else(|| {
                        invalid(
                            &format!("allow.networks[{i}]"),
                            format!("{n:?} is not an address or CIDR prefix"),
                            "write networks as \"10.0.0.0/24\" or single addresses as \"10.0.0.7\"",
                        )
                    })?);
                }
                Some(out)
            }
        };
        let boot_tokens = raw_allow
            .boot_tokens
            .map(|t| validate_credential_or_file("allow.boot_tokens", t))
            .transpose()?;
        let empty_list = macs.as_ref().is_some_and(Vec::is_empty)
            || networks.as_ref().is_some_and(Vec::is_empty);
        if empty_list {
            return Err(invalid(
                "allow",
                "an allowlist is set but empty, so it would refuse every machine".into(),
                "list the machines, or drop the empty list",
            ));
        }
        if macs.is_none() && networks.is_none() && boot_tokens.is_none() {
            return Err(invalid(
                "allow",
                "no allowlist is set, so the provisioner would hand a key to anyone who asks"
                    .into(),
                "set allow.macs, allow.networks and/or allow.boot_tokens (every one that is set must match)",
            ));
        }
        let rl = self.rate_limit.unwrap_or_default();
        let rate_limit = RateLimit {
            per_minute: rl.per_minute.unwrap_or(60),
            burst: rl.burst.unwrap_or(10),
            per_client_per_minute: rl.per_client_per_minute.unwrap_or(6),
        };
        for (field, v) in [
            ("rate_limit.per_minute", rate_limit.per_minute),
            ("rate_limit.burst", rate_limit.burst),
            (
                "rate_limit.per_client_per_minute",
                rate_limit.per_client_per_minute,
            ),
        ] {
            if !(1..=100_000).contains(&v) {
                return Err(invalid(
                    field,
                    format!("{v} is out of range"),
                    "use 1 to 100000",
                ));
            }
        }
        let admission = AdmissionSettings {
            concurrent_mints: rl.concurrent_mints.unwrap_or(4),
            queue_wait: Duration::from_secs(rl.mint_queue_secs.unwrap_or(20)),
        };
        if !(1..=64).contains(&admission.concurrent_mints) {
            return Err(invalid(
                "rate_limit.concurrent_mints",
                format!("{} is out of range", admission.concurrent_mints),
                "use 1 to 64 (mint calls in flight at once; the default 4 suits one headscale)",
            ));
        }
        if !(1..=300).contains(&admission.queue_wait.as_secs()) {
            return Err(invalid(
                "rate_limit.mint_queue_secs",
                format!("{} is out of range", admission.queue_wait.as_secs()),
                "use 1 to 300 (keep it below the machines' key request timeout, 30 s by default)",
            ));
        }
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(invalid(
                "state_dir",
                format!("{} is not an absolute path", state_dir.display()),
                "use an absolute path",
            ));
        }
        let audit_log = self
            .audit_log
            .unwrap_or_else(|| state_dir.join("audit.jsonl"));
        if !audit_log.is_absolute() {
            return Err(invalid(
                "audit_log",
                format!("{} is not an absolute path", audit_log.display()),
                "use an absolute path",
            ));
        }
        let log_level = tailjoin_common::config::parse_log_level(self.log_level.as_deref())?;
        let netboot = self
            .netboot
            .map(|n| n.validate(self.allow_plain_http.unwrap_or(false)))
            .transpose()?;
        if netboot
            .as_ref()
            .is_some_and(|n| !n.require_approval && macs.is_none() && networks.is_none())
        {
            return Err(invalid(
                "netboot.require_approval",
                "it is false and neither allow.macs nor allow.networks is set, so any machine that asks would get a boot token"
                    .into(),
                "keep require_approval true (approve machines with `tailjoin-provisioner approve MAC`), or set allow.macs or allow.networks",
            ));
        }
        Ok(Settings {
            listen,
            tls,
            mint,
            tags,
            ephemeral: self.ephemeral.unwrap_or(true),
            key_expiry,
            allow: AllowRules {
                macs,
                networks,
                tokens_required: boot_tokens.is_some(),
            },
            boot_tokens,
            rate_limit,
            admission,
            state_dir,
            audit_log,
            log_level,
            netboot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "listen": "127.0.0.1:8443",
            "allow_plain_http": true,
            "mint": {"headscale": {"url": "http://127.0.0.1:8080", "allow_plain_http": true,
                                   "api_key": {"credential": "headscale-api-key"}}},
            "tags": ["tag:netboot"],
            "allow": {"networks": ["10.0.0.0/24"]}
        })
    }

    fn validate(v: serde_json::Value) -> Result<Settings, ConfigError> {
        let raw: RawProvisionConfig = serde_json::from_value(v).unwrap();
        raw.validate()
    }

    #[test]
    fn a_minimal_config_gets_safe_defaults() {
        let s = validate(base()).unwrap();
        assert!(s.ephemeral);
        assert_eq!(s.key_expiry, Duration::from_secs(300));
        assert_eq!(s.rate_limit.per_client_per_minute, 6);
        assert_eq!(
            s.audit_log,
            PathBuf::from("/var/lib/tailjoin-provisioner/audit.jsonl")
        );
    }

    #[test]
    fn an_open_provisioner_is_refused() {
        let mut v = base();
        v["allow"] = serde_json::json!({});
        let e = validate(v).unwrap_err().to_string();
        assert!(e.contains("allow:") && e.contains("anyone"), "{e}");
        let mut v = base();
        v["allow"] = serde_json::json!({"macs": []});
        assert!(validate(v).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn plain_http_must_be_asked_for() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("allow_plain_http");
        let e = validate(v).unwrap_err().to_string();
        assert!(e.contains("tls") && e.contains("clear text"), "{e}");
    }

    #[test]
    fn bad_entries_are_named_by_their_path() {
        let mut v = base();
        v["allow"] = serde_json::json!({"macs": ["52:54:00:12:34:56", "nope"]});
        let e = validate(v).unwrap_err().to_string();
        assert!(e.contains("allow.macs[1]"), "{e}");
        let mut v = base();
        v["allow"] = serde_json::json!({"networks": ["10.0.0.0/33"]});
        assert!(
            validate(v)
                .unwrap_err()
                .to_string()
                .contains("allow.networks[0]")
        );
        let mut v = base();
        v["mint"]["headscale"]["expiry_secs"] = 600.into();
        assert!(
            validate(v)
                .unwrap_err()
                .to_string()
                .contains("key_expiry_secs")
        );
        let mut v = base();
        v["mint"] = serde_json::json!({"tailscale_oauth": {"client_id": "kFAKE", "client_secret": {"file": "/run/fake"}}});
        v["tags"] = serde_json::json!([]);
        assert!(validate(v).unwrap_err().to_string().contains("tags"));
    }

    #[test]
    fn cidrs_match_v4_v6_and_mapped_addresses() {
        let n = Cidr::parse("10.0.0.0/24").unwrap();
        assert!(n.contains("10.0.0.77".parse().unwrap()));
        assert!(!n.contains("10.0.1.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.5".parse().unwrap()));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/64").unwrap();
        assert!(v6.contains("fd00::1".parse().unwrap()));
        assert!(!v6.contains("fd01::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/40").is_none());
    }
}
