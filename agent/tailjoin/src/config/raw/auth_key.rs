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
