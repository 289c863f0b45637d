//! The provisioner's optional `netboot` section: a second, plain-HTTP listener that hands booting
//! machines their iPXE script (or pixiecore's API answer) with a fresh one-time boot token, and
//! serves the kernel and initrds. Raw JSON (deny unknown fields) → validated [`NetbootSettings`].

use crate::tpm_gate::TpmMode;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tailjoin_common::config::invalid;
use tailjoin_common::error::ConfigError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetboot {
    /// `ip:port` of the plain-HTTP listener for boot scripts, the pixiecore API and the files.
    pub listen: Option<String>,
    /// The provisioner's key URL, written on the kernel command line as `tailjoin.key_url=`.
    pub key_url: Option<String>,
    /// The kernel image served at `/v1/files/kernel`.
    pub kernel: Option<PathBuf>,
    /// The initrds served at `/v1/files/initrd/<i>`.
    pub initrds: Option<Vec<PathBuf>>,
    /// Base kernel command line (without `tailjoin.*` parameters).
    pub cmdline: Option<String>,
    /// Lifetime of an issued, unspent boot token [default: 300].
    pub token_ttl_secs: Option<u64>,
    /// A MAC must be in allow.macs or approved; unknown MACs are put on the pending list
    /// [default: true].
    pub require_approval: Option<bool>,
    /// Issuing a token for a MAC revokes its earlier unspent tokens [default: true].
    pub one_boot_per_mac: Option<bool>,
    /// First delay of a refused machine's retry, doubling up to [`MAX_RETRY_SECS`] [default: 30].
    pub retry_secs: Option<u64>,
    /// The MAC a boot-script or key request names must be the MAC its packets came from (the
    /// neighbour-table entry of the client's IPv4 address); see `l2_check.rs` for what this does
    /// and does not stop [default: false].
    pub l2_check: Option<bool>,
    /// TPM policy: "required", "when-enrolled" or "off" [default: "when-enrolled"]; see
    /// `tpm_gate.rs`.
    pub tpm: Option<String>,
    /// PEM files of EK certificate authorities (roots and intermediates): a machine whose EK
    /// certificate chains to one counts as approved without a per-machine `approve`.
    pub tpm_ek_ca_files: Option<Vec<PathBuf>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbootSettings {
    pub listen: SocketAddr,
    pub key_url: String,
    pub kernel: PathBuf,
    pub initrds: Vec<PathBuf>,
    pub cmdline: String,
    pub token_ttl: Duration,
    pub require_approval: bool,
    pub one_boot_per_mac: bool,
    pub retry_secs: u64,
    pub l2_check: bool,
    pub tpm: TpmMode,
    pub tpm_ek_ca_files: Vec<PathBuf>,
}

impl NetbootSettings {
    /// Whether a MAC nobody approved gets a boot anyway: its TPM may prove it (a certificate from
    /// `tpm_ek_ca_files`), or must show its EK for `approve` to bind (`tpm` "required"). No key
    /// is released to it without that proof.
    pub fn boots_unknown_macs(&self) -> bool {
        self.tpm == TpmMode::Required
            || (self.tpm == TpmMode::WhenEnrolled && !self.tpm_ek_ca_files.is_empty())
    }
}

pub const MIN_TOKEN_TTL_SECS: u64 = 30;
pub const MAX_TOKEN_TTL_SECS: u64 = 3600;
pub const MAX_RETRY_SECS: u64 = 300;

/// Characters that would change the meaning of an iPXE script line or a pixiecore template.
fn unsafe_for_scripts(s: &str) -> Option<&'static str> {
    if s.chars().any(char::is_control) {
        Some("a control character (a new line would start a new iPXE command)")
    } else if s.contains('$') {
        Some("`$` (iPXE would expand it as a setting)")
    } else if s.contains("{{") {
        Some("`{{` (pixiecore would expand it as a template)")
    } else {
        None
    }
}

fn absolute(field: &str, p: PathBuf) -> Result<PathBuf, ConfigError> {
    tailjoin_common::config::fields::require_absolute(
        field,
        p,
        "use an absolute path (e.g. a /nix/store path of the netboot image)",
    )
}

impl RawNetboot {
    /// `allow_plain_http` is the top-level setting: it also allows an `http://` key URL.
    pub fn validate(self, allow_plain_http: bool) -> Result<NetbootSettings, ConfigError> {
        let listen_raw = self.listen.ok_or_else(|| {
            invalid(
                "netboot.listen",
                "no listen address is set".into(),
                "set netboot.listen to IP:PORT, e.g. \"0.0.0.0:8081\" (plain HTTP, for iPXE)",
            )
        })?;
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            invalid(
                "netboot.listen",
                format!("{listen_raw:?} is not IP:PORT"),
                "use e.g. \"0.0.0.0:8081\" or \"[::]:8081\"",
            )
        })?;
        let key_url = self.key_url.ok_or_else(|| {
            invalid(
                "netboot.key_url",
                "no key URL is set".into(),
                "set netboot.key_url to this provisioner's https://HOST:PORT/v1/key as the booting machines reach it",
            )
        })?;
        let scheme_ok =
            key_url.starts_with("https://") || (allow_plain_http && key_url.starts_with("http://"));
        if !scheme_ok {
            return Err(invalid(
                "netboot.key_url",
                format!("{key_url:?} is not an https:// URL"),
                "use https://HOST:PORT/v1/key (http:// only with allow_plain_http set to true)",
            ));
        }
        if key_url.chars().any(char::is_whitespace) || key_url.contains('"') {
            return Err(invalid(
                "netboot.key_url",
                "the URL contains white space or a quote".into(),
                "write the URL without spaces or quotes",
            ));
        }
        if let Some(what) = unsafe_for_scripts(&key_url) {
            return Err(invalid(
                "netboot.key_url",
                format!("the URL contains {what}"),
                "write the URL literally",
            ));
        }
        let kernel = absolute(
            "netboot.kernel",
            self.kernel.ok_or_else(|| {
                invalid(
                    "netboot.kernel",
                    "no kernel is set".into(),
                    "set netboot.kernel to the path of the kernel image (bzImage)",
                )
            })?,
        )?;
        let raw_initrds = self.initrds.unwrap_or_default();
        if raw_initrds.is_empty() {
            return Err(invalid(
                "netboot.initrds",
                "no initrd is listed".into(),
                "set netboot.initrds to a list of at least one initrd path",
            ));
        }
        let mut initrds = Vec::new();
        for (i, p) in raw_initrds.into_iter().enumerate() {
            initrds.push(absolute(&format!("netboot.initrds[{i}]"), p)?);
        }
        let cmdline = self.cmdline.unwrap_or_default().trim().to_owned();
        if let Some(what) = unsafe_for_scripts(&cmdline) {
            return Err(invalid(
                "netboot.cmdline",
                format!("the command line contains {what}"),
                "write the kernel parameters literally, on one line",
            ));
        }
        if let Some(word) = cmdline
            .split_whitespace()
            .find(|w| w.starts_with("tailjoin."))
        {
            let name = word.split('=').next().unwrap_or(word);
            return Err(invalid(
                "netboot.cmdline",
                format!("it sets {name}, which the provisioner writes itself"),
                "drop the tailjoin.* parameters: key_url comes from netboot.key_url and the boot token is issued per boot",
            ));
        }
        let ttl = self.token_ttl_secs.unwrap_or(300);
        if !(MIN_TOKEN_TTL_SECS..=MAX_TOKEN_TTL_SECS).contains(&ttl) {
            return Err(invalid(
                "netboot.token_ttl_secs",
                format!("{ttl} is out of range"),
                "use 30 to 3600 seconds (a boot token should be worth something for minutes only)",
            ));
        }
        let retry_secs = self.retry_secs.unwrap_or(30);
        if !(1..=MAX_RETRY_SECS).contains(&retry_secs) {
            return Err(invalid(
                "netboot.retry_secs",
                format!("{retry_secs} is out of range"),
                "use 1 to 300 seconds",
            ));
        }
        let tpm = match self.tpm.as_deref() {
            None => TpmMode::default(),
            Some(word) => TpmMode::parse(word).ok_or_else(|| {
                invalid(
                    "netboot.tpm",
                    format!("{word:?} is not a TPM policy"),
                    &format!("use {}", TpmMode::WORDS),
                )
            })?,
        };
        let mut tpm_ek_ca_files = Vec::new();
        for (i, p) in self
            .tpm_ek_ca_files
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            tpm_ek_ca_files.push(absolute(&format!("netboot.tpm_ek_ca_files[{i}]"), p)?);
        }
        if tpm == TpmMode::Off && !tpm_ek_ca_files.is_empty() {
            return Err(invalid(
                "netboot.tpm_ek_ca_files",
                "EK certificate authorities are listed but netboot.tpm is \"off\"".into(),
                "set netboot.tpm to \"when-enrolled\" or \"required\", or drop tpm_ek_ca_files",
            ));
        }
        Ok(NetbootSettings {
            tpm,
            tpm_ek_ca_files,
            listen,
            key_url,
            kernel,
            initrds,
            cmdline,
            token_ttl: Duration::from_secs(ttl),
            require_approval: self.require_approval.unwrap_or(true),
            one_boot_per_mac: self.one_boot_per_mac.unwrap_or(true),
            l2_check: self.l2_check.unwrap_or(false),
            retry_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "listen": "127.0.0.1:8081",
            "key_url": "https://10.0.2.2:8443/v1/key",
            "kernel": "/boot/bzImage",
            "initrds": ["/boot/initrd"],
        })
    }

    fn validate(v: serde_json::Value, plain: bool) -> Result<NetbootSettings, String> {
        let raw: RawNetboot = serde_json::from_value(v).map_err(|e| e.to_string())?;
        raw.validate(plain).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_safe() {
        let s = validate(base(), false).unwrap();
        assert_eq!(s.token_ttl, Duration::from_secs(300));
        assert!(s.require_approval && s.one_boot_per_mac && !s.l2_check);
        assert_eq!((s.retry_secs, s.cmdline.as_str()), (30, ""));
        assert_eq!(s.tpm, TpmMode::WhenEnrolled);
        assert!(!s.boots_unknown_macs());
    }

    #[test]
    fn tpm_policies_and_who_boots_unknown_macs() {
        let with = |tpm: &str, cas: serde_json::Value| {
            let mut v = base();
            v["tpm"] = tpm.into();
            v["tpm_ek_ca_files"] = cas;
            validate(v, false)
        };
        assert!(
            with("required", serde_json::json!([]))
                .unwrap()
                .boots_unknown_macs()
        );
        assert!(
            with("when-enrolled", serde_json::json!(["/etc/ek-ca.pem"]))
                .unwrap()
                .boots_unknown_macs()
        );
        assert!(
            !with("off", serde_json::json!([]))
                .unwrap()
                .boots_unknown_macs()
        );
        let e = with("off", serde_json::json!(["/etc/ek-ca.pem"])).unwrap_err();
        assert!(
            e.contains("netboot.tpm_ek_ca_files") && e.contains("off"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named_with_a_fix() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("listen", "nowhere".into(), "netboot.listen"),
            ("key_url", "http://10.0.2.2/v1/key".into(), "https://"),
            ("key_url", "https://x/$foo".into(), "`$`"),
            ("kernel", "bzImage".into(), "netboot.kernel"),
            ("initrds", serde_json::json!([]), "at least one"),
            (
                "initrds",
                serde_json::json!(["/a", "b"]),
                "netboot.initrds[1]",
            ),
            (
                "cmdline",
                "quiet tailjoin.boot_token=x".into(),
                "tailjoin.boot_token",
            ),
            (
                "cmdline",
                "quiet\nchain http://evil".into(),
                "control character",
            ),
            ("cmdline", "a={{ URL \"x\" }}".into(), "template"),
            ("token_ttl_secs", 29.into(), "30 to 3600"),
            ("token_ttl_secs", 3601.into(), "30 to 3600"),
            ("retry_secs", 0.into(), "netboot.retry_secs"),
            (
                "tpm",
                "yes".into(),
                "\"required\", \"when-enrolled\" or \"off\"",
            ),
            (
                "tpm_ek_ca_files",
                serde_json::json!(["ca.pem"]),
                "netboot.tpm_ek_ca_files[0]",
            ),
        ];
        for (field, value, want) in cases {
            let mut v = base();
            v[*field] = value.clone();
            let e = validate(v, false).unwrap_err();
            assert!(e.contains(want), "{field}={value}: {e}");
        }
        let mut v = base();
        v["color"] = "blue".into();
        assert!(validate(v, false).unwrap_err().contains("unknown field"));
        for missing in ["listen", "key_url", "kernel", "initrds"] {
            let mut v = base();
            v.as_object_mut().unwrap().remove(missing);
            let e = validate(v, false).unwrap_err();
            assert!(e.contains(&format!("netboot.{missing}")), "{e}");
        }
    }

    #[test]
    fn plain_http_key_url_needs_allow_plain_http() {
        let mut v = base();
        v["key_url"] = "http://127.0.0.1:8443/v1/key".into();
        assert!(validate(v.clone(), false).is_err());
        assert!(validate(v, true).is_ok());
    }
}
