//! Validation: from the [raw document](super::raw) to the [settings](super::settings), one
//! section at a time. The first problem found is returned with the field's path and what to do.

mod auth_key;
mod health;
mod reboot;

// The field checks and the minting sections are shared with the provisioner.
use tailjoin_common::config::{fields, validate_mint as mint};

pub use auth_key::CMDLINE_TIMEOUT_SECS;
pub use mint::{validate_expiry, validate_headscale, validate_tailscale};
use tailjoin_common::config::{invalid, parse_log_level, validate_tag};

use super::raw::RawConfig;
use super::settings::{
    DEFAULT_KEY_FETCH_DEADLINE_SECS, DEFAULT_SOCKET, DEFAULT_STATE_DIR, JoinPrefs, KeySource,
    RetryPolicy, Settings,
};
use crate::error::ConfigError;
use fields::{
    absolute_path, validate_cidr, validate_hostname, validate_login_server, validate_unit_name,
};
use std::time::Duration;

impl RawConfig {
    /// Applies defaults and checks every value. The first problem found is returned with the
    /// field's path.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let socket = absolute_path("socket", self.socket, DEFAULT_SOCKET)?;
        let state_dir = absolute_path("state_dir", self.state_dir, DEFAULT_STATE_DIR)?;

        let login_server = self.login_server.map(validate_login_server).transpose()?;
        let hostname = self
            .hostname
            .map(|h| validate_hostname("hostname", h))
            .transpose()?;

        let advertise_tags = self.advertise_tags.unwrap_or_default();
        for (i, tag) in advertise_tags.iter().enumerate() {
            validate_tag(&format!("advertise_tags[{i}]"), tag)?;
        }

        let raw_prefs = self.prefs.unwrap_or_default();
        let mut advertise_routes = raw_prefs.advertise_routes.unwrap_or_default();
        for (i, route) in advertise_routes.iter().enumerate() {
            validate_cidr(&format!("prefs.advertise_routes[{i}]"), route)?;
        }
        if raw_prefs.advertise_exit_node.unwrap_or(false) {
            for default_route in ["0.0.0.0/0", "::/0"] {
                if !advertise_routes.iter().any(|r| r == default_route) {
                    advertise_routes.push(default_route.to_owned());
                }
            }
        }
        if let Some(op) = &raw_prefs.operator {
            if op.is_empty() || op.contains(['/', ':', ' ']) {
                return Err(invalid(
                    "prefs.operator",
                    format!("{op:?} is not a user name"),
                    "give the name of a local user, e.g. \"alice\"",
                ));
            }
        }
        let prefs = JoinPrefs {
            accept_routes: raw_prefs.accept_routes.unwrap_or(false),
            accept_dns: raw_prefs.accept_dns.unwrap_or(true),
            shields_up: raw_prefs.shields_up.unwrap_or(false),
            advertise_routes,
            ssh: raw_prefs.ssh.unwrap_or(false),
            operator: raw_prefs.operator,
        };

        let auth_key = auth_key::validate(self.auth_key, &advertise_tags, self.ephemeral)?;

        let ephemeral = match &auth_key {
            KeySource::Mint(m) => m.ephemeral,
            _ => self.ephemeral.unwrap_or(false),
        };
        if ephemeral && !matches!(auth_key, KeySource::Mint(_)) {
            return Err(invalid(
                "ephemeral",
                format!(
                    "the {} holds a pre-made key, and whether a node is ephemeral is decided when its key is made",
                    auth_key.describe()
                ),
                "create the key as ephemeral (`headscale preauthkeys create --ephemeral`, or tick \
                 Ephemeral in Tailscale's admin console) and drop this field, or let the agent mint \
                 keys (auth_key.headscale or auth_key.tailscale_oauth)",
            ));
        }

        let join_timeout_secs = self.join_timeout_secs.unwrap_or(60);
        if !(1..=3600).contains(&join_timeout_secs) {
            return Err(invalid(
                "join_timeout_secs",
                format!("{join_timeout_secs} is out of range"),
                "use 1 to 3600 seconds",
            ));
        }

        let raw_retry = self.retry.unwrap_or_default();
        let retry = RetryPolicy {
            initial_delay: Duration::from_millis(raw_retry.initial_delay_ms.unwrap_or(500)),
            max_delay: Duration::from_millis(raw_retry.max_delay_ms.unwrap_or(30_000)),
            max_attempts: raw_retry.max_attempts.unwrap_or(10),
            key_attempts: raw_retry.key_attempts.unwrap_or(2),
            key_fetch_deadline: Duration::from_secs(
                raw_retry
                    .key_fetch_deadline_secs
                    .unwrap_or(DEFAULT_KEY_FETCH_DEADLINE_SECS),
            ),
        };
        if retry.initial_delay.is_zero() || retry.initial_delay > Duration::from_secs(600) {
            return Err(invalid(
                "retry.initial_delay_ms",
                format!("{} ms is out of range", retry.initial_delay.as_millis()),
                "use 1 to 600000 ms",
            ));
        }
        if retry.max_delay < retry.initial_delay || retry.max_delay > Duration::from_secs(3600) {
            return Err(invalid(
                "retry.max_delay_ms",
                format!("{} ms is out of range", retry.max_delay.as_millis()),
                "use a value between retry.initial_delay_ms and 3600000 ms",
            ));
        }
        if !(1..=1000).contains(&retry.max_attempts) {
            return Err(invalid(
                "retry.max_attempts",
                format!("{} is out of range", retry.max_attempts),
                "use 1 to 1000",
            ));
        }
        if !(1..=10).contains(&retry.key_attempts) {
            return Err(invalid(
                "retry.key_attempts",
                format!("{} is out of range", retry.key_attempts),
                "use 1 to 10: a rejected key rarely becomes valid, and each try costs a login at the control server",
            ));
        }
        let deadline_secs = retry.key_fetch_deadline.as_secs();
        if !(1..=3600).contains(&deadline_secs) {
            return Err(invalid(
                "retry.key_fetch_deadline_secs",
                format!("{deadline_secs} is out of range"),
                "use 1 to 3600 seconds: how long fetching or minting the key may take in all, \
                 retries included",
            ));
        }

        let log_level = parse_log_level(self.log_level.as_deref())?;

        let tailscaled_unit = self
            .tailscaled_unit
            .unwrap_or_else(|| "tailscaled.service".to_owned());
        validate_unit_name("tailscaled_unit", &tailscaled_unit)?;
        let wait_for_units = self
            .wait_for_units
            .unwrap_or_else(|| vec!["network-online.target".to_owned()]);
        for (i, unit) in wait_for_units.iter().enumerate() {
            validate_unit_name(&format!("wait_for_units[{i}]"), unit)?;
        }
        let units_timeout_secs = self.units_timeout_secs.unwrap_or(300);
        if !(1..=86_400).contains(&units_timeout_secs) {
            return Err(invalid(
                "units_timeout_secs",
                format!("{units_timeout_secs} is out of range"),
                "use 1 to 86400 seconds",
            ));
        }

        let health = self.health.unwrap_or_default().validate()?;

        // A minted key carries the tags and the control server tags the node from it; headscale
        // (0.29) refuses a pre-auth-key registration that also requests tags.
        let advertise_tags = match &auth_key {
            KeySource::Mint(_) => Vec::new(),
            _ => advertise_tags,
        };
        Ok(Settings {
            socket,
            login_server,
            hostname,
            advertise_tags,
            ephemeral,
            prefs,
            auth_key,
            on_stopped: self.on_stopped.unwrap_or_default(),
            join_timeout: Duration::from_secs(join_timeout_secs),
            retry,
            state_dir,
            log_level,
            tailscaled_unit,
            wait_for_units,
            units_timeout: Duration::from_secs(units_timeout_secs),
            health,
            reboot_on_key_failure: reboot::validate(self.reboot_on_key_failure)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogLevel, OnStopped, parse};
    use std::path::PathBuf;

    fn minimal() -> &'static str {
        r#"{"auth_key": {"credential": "tailscale-auth-key"}}"#
    }

    #[test]
    fn defaults_are_applied() {
        let s = parse(minimal()).unwrap().validate().unwrap();
        assert_eq!(s.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(
            s.auth_key,
            KeySource::Credential("tailscale-auth-key".into())
        );
        assert_eq!(s.on_stopped, OnStopped::Resume);
        assert!(s.prefs.accept_dns);
        assert!(!s.prefs.accept_routes);
        assert_eq!(s.join_timeout, Duration::from_secs(60));
        assert_eq!(s.retry.max_attempts, 10);
        assert_eq!(s.retry.key_attempts, 2);
        assert_eq!(s.retry.key_fetch_deadline, Duration::from_secs(300));
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.tailscaled_unit, "tailscaled.service");
        assert_eq!(s.wait_for_units, vec!["network-online.target"]);
        assert_eq!(s.units_timeout, Duration::from_secs(300));
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases = [
            (r#"{"socket": "relative.sock"}"#, "socket"),
            (r#"{"login_server": "ftp://x"}"#, "login_server"),
            (
                r#"{"login_server": "https://u:p@hs.example"}"#,
                "login_server",
            ),
            (r#"{"hostname": "-bad"}"#, "hostname"),
            (
                r#"{"advertise_tags": ["tag:ok", "server"]}"#,
                "advertise_tags[1]",
            ),
            (
                r#"{"prefs": {"advertise_routes": ["10.0.0.0/33"]}}"#,
                "prefs.advertise_routes[0]",
            ),
            (r#"{"auth_key": {"file": "key.txt"}}"#, "auth_key.file"),
            (
                r#"{"auth_key": {"file": "/nix/store/abc-key"}}"#,
                "auth_key.file",
            ),
            (
                r#"{"auth_key": {"credential": "../etc"}}"#,
                "auth_key.credential",
            ),
            (
                r#"{"auth_key": {"env": "tskey-auth-fake"}}"#,
                "auth_key.env",
            ),
            (r#"{"join_timeout_secs": 0}"#, "join_timeout_secs"),
            (
                r#"{"retry": {"initial_delay_ms": 0}}"#,
                "retry.initial_delay_ms",
            ),
            (
                r#"{"retry": {"initial_delay_ms": 500, "max_delay_ms": 100}}"#,
                "retry.max_delay_ms",
            ),
            (r#"{"retry": {"max_attempts": 0}}"#, "retry.max_attempts"),
            (r#"{"retry": {"key_attempts": 50}}"#, "retry.key_attempts"),
            (
                r#"{"retry": {"key_fetch_deadline_secs": 0}}"#,
                "retry.key_fetch_deadline_secs",
            ),
            (
                r#"{"retry": {"key_fetch_deadline_secs": 3601}}"#,
                "retry.key_fetch_deadline_secs",
            ),
            (r#"{"log_level": "loud"}"#, "log_level"),
            (r#"{"ephemeral": true}"#, "ephemeral"),
            (r#"{"tailscaled_unit": "tailscaled"}"#, "tailscaled_unit"),
            (
                r#"{"wait_for_units": ["a.target", "../x"]}"#,
                "wait_for_units[1]",
            ),
            (r#"{"units_timeout_secs": 0}"#, "units_timeout_secs"),
            (
                r#"{"auth_key": {"http": {"url": "http://prov.lan/key"}}}"#,
                "auth_key.http.url",
            ),
            (
                r#"{"auth_key": {"http": {"url": "ftp://prov.lan/key"}}}"#,
                "auth_key.http.url",
            ),
            (
                r#"{"auth_key": {"http": {"url": "https://u:p@prov.lan/key"}}}"#,
                "auth_key.http.url",
            ),
            (
                r#"{"auth_key": {"http": {"url": "https://p/k", "bearer_token": {"file": "/nix/store/x"}}}}"#,
                "auth_key.http.bearer_token.file",
            ),
            (
                r#"{"auth_key": {"http": {"url": "https://p/k", "bearer_token": {"credential": "a/b"}}}}"#,
                "auth_key.http.bearer_token.credential",
            ),
            (
                r#"{"auth_key": {"http": {"url": "https://p/k", "ca_file": "ca.pem"}}}"#,
                "auth_key.http.ca_file",
            ),
            (
                r#"{"auth_key": {"http": {"url": "https://p/k", "json_field": "k"}}}"#,
                "auth_key.http.json_field",
            ),
            (
                r#"{"auth_key": {"http": {"url": "https://p/k", "timeout_secs": 0}}}"#,
                "auth_key.http.timeout_secs",
            ),
            (
                r#"{"auth_key": {"http": {"url": "https://p/k", "max_response_bytes": 1}}}"#,
                "auth_key.http.max_response_bytes",
            ),
        ];
        for (json, field) in cases {
            let base = parse(minimal()).unwrap();
            let e = base
                .overlay(parse(json).unwrap())
                .validate()
                .expect_err(json);
            match &e {
                ConfigError::Invalid { field: f, .. } => assert_eq!(f, field, "{json}: {e}"),
                other => panic!("{json}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn exit_node_adds_default_routes_once() {
        let s = parse(minimal())
            .unwrap()
            .overlay(parse(r#"{"prefs": {"advertise_exit_node": true, "advertise_routes": ["0.0.0.0/0"]}}"#).unwrap())
            .validate()
            .unwrap();
        assert_eq!(s.prefs.advertise_routes, vec!["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn login_server_loses_its_trailing_slash() {
        let s = parse(minimal())
            .unwrap()
            .overlay(parse(r#"{"login_server": "http://127.0.0.1:8080/"}"#).unwrap())
            .validate()
            .unwrap();
        assert_eq!(s.login_server.as_deref(), Some("http://127.0.0.1:8080"));
    }
}
