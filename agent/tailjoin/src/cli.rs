//! The command line. Every setting of the configuration file is also a flag and an environment
//! variable, for machines without Nix; flags and variables win over the file.
//!
//! There is deliberately no flag that takes the key itself: the command line of every process
//! is readable by every local user.

use crate::config::{
    HttpMethod, OnStopped, RawConfig, RawHttpSource, RawKeySource, RawPrefs, RawRetry,
    RawTokenSource, ResponseKind,
};
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tailjoin",
    version,
    about = "Joins this machine to a Tailscale or headscale tailnet, unattended, and keeps it there."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: wait for tailscaled, join with the key from its source, stay joined.
    Run(Box<RunArgs>),
    /// Show what the agent and tailscaled are doing now. Exit 0 only when Running.
    Status(StatusArgs),
    /// Validate a configuration file and exit non-zero with the reason if it is invalid.
    CheckConfig(CheckConfigArgs),
    /// Moved: the provisioner is its own program now, `tailjoin-provisioner`.
    #[command(hide = true, disable_help_flag = true)]
    Provision {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The JSON configuration file.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Read state_dir and socket from this configuration file.
    #[arg(long, env = "TAILJOIN_CONFIG")]
    pub config: Option<PathBuf>,
    /// The agent's state directory [default: /run/tailjoin].
    #[arg(long, env = "TAILJOIN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// tailscaled's LocalAPI socket [default: /var/run/tailscale/tailscaled.sock].
    #[arg(long, env = "TAILJOIN_SOCKET")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HttpMethodArg {
    Get,
    Post,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnStoppedArg {
    Resume,
    Respect,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("key").multiple(false)))]
pub struct RunArgs {
    /// JSON configuration file; flags and environment variables override its values.
    #[arg(long, short = 'c', env = "TAILJOIN_CONFIG")]
    pub config: Option<PathBuf>,
    /// tailscaled's LocalAPI socket [default: /var/run/tailscale/tailscaled.sock].
    #[arg(long, env = "TAILJOIN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Control server URL, e.g. https://headscale.example.com [default: Tailscale's].
    #[arg(long, env = "TAILJOIN_LOGIN_SERVER")]
    pub login_server: Option<String>,
    /// Hostname to register [default: the OS hostname].
    #[arg(long, env = "TAILJOIN_HOSTNAME")]
    pub hostname: Option<String>,
    /// ACL tags to advertise, comma-separated (tag:a,tag:b).
    #[arg(long, env = "TAILJOIN_ADVERTISE_TAGS", value_delimiter = ',')]
    pub advertise_tags: Option<Vec<String>>,
    /// Ask for an ephemeral node (only key sources that create keys can).
    #[arg(long, env = "TAILJOIN_EPHEMERAL", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub ephemeral: Option<bool>,
    /// Accept subnet routes from other nodes [default: false].
    #[arg(long, env = "TAILJOIN_ACCEPT_ROUTES", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub accept_routes: Option<bool>,
    /// Use the tailnet's DNS settings [default: true].
    #[arg(long, env = "TAILJOIN_ACCEPT_DNS", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub accept_dns: Option<bool>,
    /// Block incoming connections [default: false].
    #[arg(long, env = "TAILJOIN_SHIELDS_UP", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub shields_up: Option<bool>,
    /// Subnet routes to advertise, comma-separated CIDR prefixes.
    #[arg(long, env = "TAILJOIN_ADVERTISE_ROUTES", value_delimiter = ',')]
    pub advertise_routes: Option<Vec<String>>,
    /// Offer this node as an exit node [default: false].
    #[arg(long, env = "TAILJOIN_ADVERTISE_EXIT_NODE", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub advertise_exit_node: Option<bool>,
    /// Run Tailscale SSH [default: false].
    #[arg(long, env = "TAILJOIN_SSH", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub ssh: Option<bool>,
    /// Local user allowed to operate tailscaled without root.
    #[arg(long, env = "TAILJOIN_OPERATOR")]
    pub operator: Option<String>,
    /// Read the auth key from this file (mode 600 or stricter).
    #[arg(long, env = "TAILJOIN_AUTH_KEY_FILE", group = "key")]
    pub auth_key_file: Option<PathBuf>,
    /// Read the auth key from this systemd credential (LoadCredential=NAME:…).
    #[arg(long, env = "TAILJOIN_AUTH_KEY_CREDENTIAL", group = "key")]
    pub auth_key_credential: Option<String>,
    /// Read the auth key from the environment variable with this NAME.
    #[arg(long, env = "TAILJOIN_AUTH_KEY_ENV", group = "key")]
    pub auth_key_env: Option<String>,
    /// Fetch the auth key from this https:// URL (a provisioning server).
    #[arg(long, env = "TAILJOIN_AUTH_KEY_URL", group = "key")]
    pub auth_key_url: Option<String>,
    /// With --auth-key-url: get, or post the machine's identity [default: get].
    #[arg(
        long,
        env = "TAILJOIN_AUTH_KEY_HTTP_METHOD",
        value_enum,
        requires = "auth_key_url"
    )]
    pub auth_key_http_method: Option<HttpMethodArg>,
    /// With --auth-key-url: PEM bundle of the CA that signs the server's certificate.
    #[arg(long, env = "TAILJOIN_AUTH_KEY_CA_FILE", requires = "auth_key_url")]
    pub auth_key_ca_file: Option<PathBuf>,
    /// With --auth-key-url: read a bearer token from this file (mode 600).
    #[arg(
        long,
        env = "TAILJOIN_AUTH_KEY_BEARER_TOKEN_FILE",
        requires = "auth_key_url",
        conflicts_with = "auth_key_bearer_token_credential"
    )]
    pub auth_key_bearer_token_file: Option<PathBuf>,
    /// With --auth-key-url: read a bearer token from this systemd credential.
    #[arg(
        long,
        env = "TAILJOIN_AUTH_KEY_BEARER_TOKEN_CREDENTIAL",
        requires = "auth_key_url"
    )]
    pub auth_key_bearer_token_credential: Option<String>,
    /// With --auth-key-url: the response is JSON with the key in this field.
    #[arg(long, env = "TAILJOIN_AUTH_KEY_JSON_FIELD", requires = "auth_key_url")]
    pub auth_key_json_field: Option<String>,
    /// When tailscaled is stopped (tailscale down): bring it up, or leave it [default: resume].
    #[arg(long, env = "TAILJOIN_ON_STOPPED", value_enum)]
    pub on_stopped: Option<OnStoppedArg>,
    /// Seconds one join attempt may take before it counts as failed [default: 60].
    #[arg(long, env = "TAILJOIN_JOIN_TIMEOUT")]
    pub join_timeout: Option<u64>,
    /// First retry delay in milliseconds [default: 500].
    #[arg(long, env = "TAILJOIN_RETRY_INITIAL_DELAY_MS")]
    pub retry_initial_delay_ms: Option<u64>,
    /// Largest retry delay in milliseconds [default: 30000].
    #[arg(long, env = "TAILJOIN_RETRY_MAX_DELAY_MS")]
    pub retry_max_delay_ms: Option<u64>,
    /// Transient failures in a row before giving up [default: 10].
    #[arg(long, env = "TAILJOIN_RETRY_MAX_ATTEMPTS")]
    pub retry_max_attempts: Option<u32>,
    /// Attempts with a rejected key before giving up [default: 2].
    #[arg(long, env = "TAILJOIN_KEY_ATTEMPTS")]
    pub key_attempts: Option<u32>,
    /// Seconds fetching or minting the key may take in all, retries included [default: 300].
    #[arg(long, env = "TAILJOIN_KEY_FETCH_DEADLINE")]
    pub key_fetch_deadline: Option<u64>,
    /// Directory for the status file [default: /run/tailjoin].
    #[arg(long, env = "TAILJOIN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long, env = "TAILJOIN_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// tailscaled's systemd unit, awaited over D-Bus [default: tailscaled.service].
    #[arg(long, env = "TAILJOIN_TAILSCALED_UNIT")]
    pub tailscaled_unit: Option<String>,
    /// Units to wait for while queued, comma-separated [default: network-online.target].
    #[arg(long, env = "TAILJOIN_WAIT_FOR_UNITS", value_delimiter = ',')]
    pub wait_for_units: Option<Vec<String>>,
    /// Seconds to wait for those units before giving up [default: 300].
    #[arg(long, env = "TAILJOIN_UNITS_TIMEOUT")]
    pub units_timeout: Option<u64>,
    /// Serve /healthz and /metrics on this IP:PORT [default: off].
    #[arg(long, env = "TAILJOIN_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Write the metrics to this node_exporter textfile-collector file (*.prom) [default: off].
    #[arg(long, env = "TAILJOIN_HEALTH_TEXTFILE")]
    pub health_textfile: Option<PathBuf>,
}

impl RunArgs {
    /// The flags and variables that were given, as a configuration layer.
    pub fn to_raw(&self) -> RawConfig {
        let auth_key = if let Some(p) = &self.auth_key_file {
            Some(RawKeySource::File(p.clone()))
        } else if let Some(c) = &self.auth_key_credential {
            Some(RawKeySource::Credential(c.clone()))
        } else if let Some(v) = &self.auth_key_env {
            Some(RawKeySource::Env(v.clone()))
        } else {
            self.auth_key_url.as_ref().map(|url| {
                RawKeySource::Http(RawHttpSource {
                    url: url.clone(),
                    method: self.auth_key_http_method.map(|m| match m {
                        HttpMethodArg::Get => HttpMethod::Get,
                        HttpMethodArg::Post => HttpMethod::Post,
                    }),
                    bearer_token: match (
                        &self.auth_key_bearer_token_file,
                        &self.auth_key_bearer_token_credential,
                    ) {
                        (Some(f), _) => Some(RawTokenSource::File(f.clone())),
                        (None, Some(c)) => Some(RawTokenSource::Credential(c.clone())),
                        (None, None) => None,
                    },
                    ca_file: self.auth_key_ca_file.clone(),
                    response: self
                        .auth_key_json_field
                        .as_ref()
                        .map(|_| ResponseKind::Json),
                    json_field: self.auth_key_json_field.clone(),
                    ..Default::default()
                })
            })
        };
        let prefs = RawPrefs {
            accept_routes: self.accept_routes,
            accept_dns: self.accept_dns,
            shields_up: self.shields_up,
            advertise_routes: self.advertise_routes.clone(),
            advertise_exit_node: self.advertise_exit_node,
            ssh: self.ssh,
            operator: self.operator.clone(),
        };
        let retry = RawRetry {
            initial_delay_ms: self.retry_initial_delay_ms,
            max_delay_ms: self.retry_max_delay_ms,
            max_attempts: self.retry_max_attempts,
            key_attempts: self.key_attempts,
            key_fetch_deadline_secs: self.key_fetch_deadline,
        };
        RawConfig {
            socket: self.socket.clone(),
            login_server: self.login_server.clone(),
            hostname: self.hostname.clone(),
            advertise_tags: self.advertise_tags.clone(),
            ephemeral: self.ephemeral,
            prefs: (prefs != RawPrefs::default()).then_some(prefs),
            auth_key,
            on_stopped: self.on_stopped.map(|o| match o {
                OnStoppedArg::Resume => OnStopped::Resume,
                OnStoppedArg::Respect => OnStopped::Respect,
            }),
            join_timeout_secs: self.join_timeout,
            retry: (retry != RawRetry::default()).then_some(retry),
            state_dir: self.state_dir.clone(),
            log_level: self.log_level.clone(),
            tailscaled_unit: self.tailscaled_unit.clone(),
            wait_for_units: self.wait_for_units.clone(),
            units_timeout_secs: self.units_timeout,
            health: (self.health_listen.is_some() || self.health_textfile.is_some()).then(|| {
                crate::config::RawHealth {
                    listen: self.health_listen.clone(),
                    textfile: self.health_textfile.clone(),
                    ..Default::default()
                }
            }),
            reboot_on_key_failure: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let mut all = vec!["tailjoin", "run"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Run(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_become_a_config_layer() {
        let raw = run_args(&[
            "--login-server=http://127.0.0.1:8080",
            "--auth-key-file=/run/keys/ts",
            "--advertise-tags=tag:a,tag:b",
            "--accept-routes",
            "--accept-dns=false",
            "--key-attempts=1",
        ])
        .to_raw();
        assert_eq!(
            raw.auth_key,
            Some(RawKeySource::File("/run/keys/ts".into()))
        );
        assert_eq!(
            raw.advertise_tags,
            Some(vec!["tag:a".to_owned(), "tag:b".to_owned()])
        );
        let prefs = raw.prefs.unwrap();
        assert_eq!(prefs.accept_routes, Some(true));
        assert_eq!(prefs.accept_dns, Some(false));
        assert_eq!(raw.retry.unwrap().key_attempts, Some(1));
    }

    #[test]
    fn nothing_given_is_an_empty_layer() {
        assert_eq!(run_args(&[]).to_raw(), RawConfig::default());
    }

    #[test]
    fn an_http_source_from_flags() {
        let raw = run_args(&[
            "--auth-key-url=https://prov.lan/key",
            "--auth-key-http-method=post",
            "--auth-key-ca-file=/etc/ca.pem",
            "--auth-key-bearer-token-credential=prov-token",
            "--auth-key-json-field=authkey",
        ])
        .to_raw();
        let Some(RawKeySource::Http(h)) = raw.auth_key else {
            panic!("{:?}", raw.auth_key)
        };
        assert_eq!(h.url, "https://prov.lan/key");
        assert_eq!(h.method, Some(HttpMethod::Post));
        assert_eq!(
            h.bearer_token,
            Some(RawTokenSource::Credential("prov-token".into()))
        );
        assert_eq!(h.response, Some(ResponseKind::Json));
        assert_eq!(h.json_field.as_deref(), Some("authkey"));
        // HTTP options need the URL.
        assert!(
            Cli::try_parse_from(["tailjoin", "run", "--auth-key-ca-file=/etc/ca.pem"]).is_err()
        );
    }

    #[test]
    fn two_key_sources_conflict() {
        let r = Cli::try_parse_from(["tailjoin", "run", "--auth-key-file=/k", "--auth-key-env=K"]);
        assert!(r.is_err());
    }
}
