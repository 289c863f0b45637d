//! The `auth_key` section as written: where the key comes from, never the key itself. The
//! minting APIs' sections (`headscale`, `tailscale_oauth`) are the provisioner's `mint` section
//! too.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
pub use tailjoin_common::config::{RawHeadscaleMint, RawTailscaleOAuth, RawTokenSource};

/// One of the ways the auth key reaches the machine. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawKeySource {
    /// A file only its owner can read.
    File(PathBuf),
    /// A systemd credential, by name (`LoadCredential=NAME:…` in the unit).
    Credential(String),
    /// An environment variable, by name.
    Env(String),
    /// A provisioning server over HTTP(S).
    Http(RawHttpSource),
    /// Kernel parameters (`tailjoin.key_url=`, `tailjoin.boot_token=`) that point at a
    /// provisioning server; the key itself (`tailjoin.auth_key=`) only when allowed.
    KernelCmdline(RawCmdlineSource),
    /// A key minted per machine through headscale's API.
    Headscale(RawHeadscaleMint),
    /// A key minted per machine through Tailscale's API with an OAuth client.
    TailscaleOauth(RawTailscaleOAuth),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCmdlineSource {
    /// The kernel command line [default: /proc/cmdline].
    pub path: Option<PathBuf>,
    /// Accept `tailjoin.auth_key=KEY`: the key itself, readable by every local user in
    /// /proc/cmdline and by anyone who can read the boot loader's script.
    pub allow_key: Option<bool>,
    /// `post` (default: sends the machine's identity) or `get`.
    pub method: Option<HttpMethod>,
    /// `json` (default) or `raw`.
    pub response: Option<ResponseKind>,
    pub json_field: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
    pub max_response_bytes: Option<u64>,
    /// Accept an http:// `tailjoin.key_url`.
    pub allow_plain_http: Option<bool>,
    /// Prove the machine's TPM to the provisioner: `auto` (default), `required` or `off`; the
    /// kernel parameter `tailjoin.tpm=` overrides it.
    pub tpm: Option<TpmMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSource {
    /// Where to fetch the key; https unless `allow_plain_http`.
    pub url: String,
    /// `get`, or `post` to send the machine's identity as JSON.
    pub method: Option<HttpMethod>,
    /// A bearer token for the request, read from a credential or a file (never inline).
    pub bearer_token: Option<RawTokenSource>,
    /// PEM bundle of the CA(s) that sign the server's certificate (then only these are trusted).
    pub ca_file: Option<PathBuf>,
    /// `raw` (the body is the key) or `json` (the key is in `json_field`).
    pub response: Option<ResponseKind>,
    /// The JSON field holding the key [default: "key"].
    pub json_field: Option<String>,
    /// Connect and whole-request timeout.
    pub timeout_secs: Option<u64>,
    /// Largest response accepted.
    pub max_response_bytes: Option<u64>,
    /// Accept an http:// URL (the key then crosses the network in clear text).
    pub allow_plain_http: Option<bool>,
    /// With `post`: prove the machine's TPM (a TPM-proven request, see `tailjoin_common::wire`):
    /// `auto` (default: when the machine has a TPM), `required` or `off`.
    pub tpm: Option<TpmMode>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseKind {
    #[default]
    Raw,
    Json,
}

/// Whether a POST to a provisioner proves the machine's TPM (its EK and an AK, then
/// TPM2_ActivateCredential of the provisioner's challenge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TpmMode {
    /// When the machine has a TPM (`TAILJOIN_TPM_TCTI` is set or /dev/tpmrm0 exists); if it
    /// cannot be used, a warning says why and the request goes without.
    #[default]
    Auto,
    /// Always: no usable TPM is an error.
    Required,
    /// Never.
    Off,
}

impl TpmMode {
    /// The allowed values, as written.
    pub const VALUES: &'static str = "auto, required or off";

    /// A value as written in the configuration or on the kernel command line.
    pub fn parse(value: &str) -> Option<TpmMode> {
        match value {
            "auto" => Some(TpmMode::Auto),
            "required" => Some(TpmMode::Required),
            "off" => Some(TpmMode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TpmMode::Auto => "auto",
            TpmMode::Required => "required",
            TpmMode::Off => "off",
        }
    }
}
