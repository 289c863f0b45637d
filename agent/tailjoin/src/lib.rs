//! tailjoin: a boot agent that joins a machine to a Tailscale or headscale tailnet through
//! tailscaled's LocalAPI, keeps it joined, and reports its health.
//!
//! One module per concern. `decide` and `prefs` are pure; `agent` performs their decisions.

pub mod agent;
pub mod auth_key;
pub mod cli;
pub mod config;
pub mod decide;
pub mod error;
pub mod localapi;
pub mod prefs;
pub mod reboot;
pub mod report;
pub mod secrets;
pub mod socket_watch;
pub mod state;
pub mod status_cmd;
pub mod systemd;
pub mod tpm;
pub mod unit_wait;

// The pieces shared with the provisioner, under the names the agent's modules use.
pub use tailjoin_common::{fs_read, fs_write, http_client, logging, mint, redact, time};

use cli::{CheckConfigArgs, Cli, Command, RunArgs, StatusArgs};
use config::{RawConfig, Settings};
use error::{AgentError, ConfigError, exit};
use std::path::PathBuf;

/// Runs a parsed command line and returns the process exit status.
pub fn main_with(cli: Cli) -> u8 {
    // Every HTTP client (the LocalAPI one too) needs a TLS crypto provider installed first:
    // rustls with ring (not aws-lc-rs), for a smaller binary and no C toolchain in the build.
    // It fails only if one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::CheckConfig(args) => check_config(&args),
        Command::Status(args) => status(&args),
        Command::Run(args) => run(&args),
        Command::Provision { .. } => {
            eprintln!(
                "tailjoin: the provisioner is a program of its own now: run `tailjoin-provisioner` \
                 with the same arguments (tailjoin-provisioner --config FILE [--check] \
                 [pending|approve MAC|revoke MAC]); the netbooted machines' agent no longer \
                 carries it"
            );
            exit::CONFIG
        }
    }
}

fn check_config(args: &CheckConfigArgs) -> u8 {
    match config::load_file(&args.file)
        .and_then(|raw| raw.validate().map_err(|e| e.in_file(&args.file)))
    {
        Ok(s) => {
            println!(
                "{}: ok; joins {} as {} with the key from {}",
                args.file.display(),
                s.login_server
                    .as_deref()
                    .unwrap_or("the Tailscale control server"),
                s.hostname.as_deref().unwrap_or("the OS hostname"),
                s.auth_key.describe()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("tailjoin: {e}");
            exit::CONFIG
        }
    }
}

fn settings_for_run(args: &RunArgs) -> Result<Settings, ConfigError> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => RawConfig::default(),
    };
    file.overlay(args.to_raw())
        .validate()
        .map_err(|e| match &args.config {
            Some(path) => e.in_file(path),
            None => e,
        })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn run(args: &RunArgs) -> u8 {
    let settings = match settings_for_run(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tailjoin: {e}");
            return exit::CONFIG;
        }
    };
    let sink = logging::init(settings.log_level);
    let notifier = match report::sd_notify::Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("ignoring NOTIFY_SOCKET: {e}");
            report::sd_notify::Notifier::disabled()
        }
    };
    tracing::info!(
        "tailjoin {} starting: socket {}, control server {}, key from {}, logging to {sink}{}",
        env!("CARGO_PKG_VERSION"),
        settings.socket.display(),
        settings
            .login_server
            .as_deref()
            .unwrap_or("(Tailscale default)"),
        settings.auth_key.describe(),
        if notifier.enabled() {
            ", notifying systemd"
        } else {
            ""
        },
    );
    let reporter = report::Reporter::new(
        notifier,
        settings.state_dir.clone(),
        settings.login_server.clone(),
        settings.auth_key.describe(),
    );
    let keys = secrets::KeyContext::from_process_env();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{e}");
            return exit::INTERNAL;
        }
    };
    let reporter = reporter.with_textfile(settings.health.textfile.clone());
    let shared = reporter.shared();
    // Drawn once: the agent's Failed report and the wait below use the same plan.
    let fraction = reboot::random_fraction();
    let reboot_setting = settings.reboot_on_key_failure;
    let key_source = settings.auth_key.clone();
    let status: u8 = rt.block_on(async {
        // Push reporters run beside the agent, fed by queues it never waits on; whatever is
        // still queued when the agent stops (why it gave up) is delivered before exiting.
        let (queues, pushing) = report::push::start(
            &settings.health.push,
            keys.credentials_dir.as_deref(),
            push_identity(&settings),
            shared.clone(),
        );
        let reporter = reporter.with_push(queues);
        let flush_timeout = settings.health.push.flush_timeout;
        let result = run_agent(settings, keys, reporter, shared, fraction).await;
        let plan = result.as_ref().err().and_then(|e| {
            decide::stranded::plan(reboot_setting.as_ref(), &key_source, e, fraction)
        });
        match (&result, &plan) {
            (Err(e), Some(plan)) => tracing::error!(
                tailjoin_error_kind = e.kind(),
                tailjoin_stranded = plan.cure.kind(),
                "{}; the key failure: {e}",
                reboot::announcement(plan)
            ),
            (Err(e), None) => tracing::error!(tailjoin_error_kind = e.kind(), "giving up: {e}"),
            (Ok(()), _) => {}
        }
        let started = tokio::time::Instant::now();
        pushing.flush(flush_timeout).await;
        match (result, plan) {
            (Ok(()), _) => exit::OK,
            (Err(_), Some(plan)) => reboot::reboot_after(&plan, started).await,
            (Err(e), None) => e.exit_code(),
        }
    });
    // Nothing left is worth waiting for: a blocking task still running (a name lookup that
    // hangs) must not hold up the exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    status
}

/// Who this machine is, for the webhook body. The hostname falls back to the configured one
/// when /proc/sys is hidden.
fn push_identity(settings: &Settings) -> report::push::plan::Identity {
    let id = secrets::identity::MachineIdentity::gather();
    report::push::plan::Identity {
        hostname: if id.hostname.is_empty() {
            settings.hostname.clone().unwrap_or_default()
        } else {
            id.hostname
        },
        machine_id: id.machine_id,
        boot_id: id.boot_id,
    }
}

/// Starts the health listener (if asked for) beside the agent and runs the agent.
async fn run_agent(
    settings: Settings,
    keys: secrets::KeyContext,
    reporter: report::Reporter,
    shared: report::listener::Shared,
    reboot_fraction: f64,
) -> Result<(), AgentError> {
    if let Some(addr) = settings.health.listen {
        // Never in the way of joining: a listener that cannot start is reported and skipped.
        tokio::spawn(async move {
            if let Err(e) = report::listener::serve(addr, shared).await {
                tracing::error!(
                    "health listener on {addr} cannot start: {e}; joining continues without it"
                );
            }
        });
    }
    agent::Agent::new(settings, keys, reporter)?
        .with_reboot_fraction(reboot_fraction)
        .run()
        .await
}

fn status(args: &StatusArgs) -> u8 {
    let file = match &args.config {
        Some(path) => match config::load_file(path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("tailjoin: {e}");
                return exit::CONFIG;
            }
        },
        None => RawConfig::default(),
    };
    let state_dir = args
        .state_dir
        .clone()
        .or(file.state_dir)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_STATE_DIR));
    let socket = args
        .socket
        .clone()
        .or(file.socket)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_SOCKET));
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tailjoin: {e}");
            return exit::INTERNAL;
        }
    };
    let combined = rt.block_on(status_cmd::gather(&state_dir, &socket));
    if args.json {
        match serde_json::to_string_pretty(&combined) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("tailjoin: {e}");
                return exit::INTERNAL;
            }
        }
    } else {
        print!("{}", status_cmd::render_text(&combined));
    }
    if combined.running {
        exit::OK
    } else {
        exit::NOT_RUNNING
    }
}
