//! Configuration: the raw JSON document (what Nix writes with `builtins.toJSON`, or what a
//! person writes by hand) and the validated [`Settings`] the agent runs with.
//!
//! Raw types reject unknown fields; validation names the offending field by its path and says
//! what to do. Command-line flags and environment variables produce a [`RawConfig`] too, laid
//! over the file's, so there is exactly one validation path.
//!
//! One module per concern, in the order they depend on each other:
//! - `raw`: the document as written (serde, unknown fields refused), [`parse`], [`load_file`]
//!   and [`RawConfig::overlay`];
//! - `settings`: the validated settings, every default applied;
//! - `validate`: from one to the other, one section at a time (top level, `auth_key`, the
//!   minting APIs, `health`), with the field checks the sections and the provisioner share.
//!
//! This module owns the configuration types of every key source, the minting APIs included:
//! `secrets`, `mint` and `report` read them and none of them is imported here.

mod raw;
mod settings;
mod validate;

pub use raw::{
    HttpMethod, OnStopped, RawCmdlineSource, RawConfig, RawHeadscaleMint, RawHealth, RawHttpSource,
    RawKeySource, RawPingUrl, RawPrefs, RawRebootOnKeyFailure, RawRetry, RawTailscaleOAuth,
    RawTokenSource, RawWebhook, ResponseKind, TpmMode, load_file, parse,
};
pub use settings::{
    CmdlineSource, DEFAULT_FLUSH_TIMEOUT_SECS, DEFAULT_HEARTBEAT_SECS,
    DEFAULT_KEY_FETCH_DEADLINE_SECS, DEFAULT_PUSH_ATTEMPTS, DEFAULT_PUSH_TIMEOUT_SECS,
    DEFAULT_SOCKET, DEFAULT_STATE_DIR, HeadscaleApi, HealthSettings, HttpKeySource, JoinPrefs,
    KeySource, LogLevel, MintApi, MintSource, PushSettings, RebootOnKeyFailure, ResponseFormat,
    RetryPolicy, Settings, TailscaleApi, TokenSource, TpmPolicy, UserRef, WebhookSettings,
};
pub use validate::{CMDLINE_TIMEOUT_SECS, validate_expiry, validate_headscale, validate_tailscale};
