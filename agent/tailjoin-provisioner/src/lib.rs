//! `tailjoin-provisioner`: the provisioner for netboot fleets. It runs on the always-on box next
//! to the netboot server, holds the headscale API key or the Tailscale OAuth client, and hands
//! each allowed booting machine a freshly minted single-use key with a short expiry.
//!
//! A program of its own, apart from the agent: the netbooted machines' binary carries none of
//! its code. Minting, secret reading, the shared configuration checks and the HTTP client are
//! [`tailjoin_common`]'s, one code path to audit for secret handling in both programs.

pub mod admin;
pub mod admission;
pub mod audit;
pub mod boot_issue;
pub mod boot_policy;
pub mod boot_store;
pub mod cli;
pub mod config;
pub mod enrol;
pub mod ipxe;
pub mod l2_check;
mod netboot;
pub mod netboot_config;
pub mod policy;
pub mod range;
pub mod rate;
mod server;
pub mod tokens;
pub mod tpm;
pub mod tpm_gate;

use config::{Settings, TlsSettings};
use hyper_util::rt::{TokioIo, TokioTimer};
use secrecy::ExposeSecret;
use server::{EXCHANGE_TIMEOUT, HEADER_TIMEOUT, Provisioner};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tailjoin_common::error::exit;

/// Loads and validates a provisioner configuration file.
pub fn load(path: &Path) -> Result<Settings, tailjoin_common::error::ConfigError> {
    config::load_file(path).and_then(|raw| raw.validate().map_err(|e| e.in_file(path)))
}

/// Runs a parsed command line and returns the process exit status.
pub fn main_with(cli: cli::Cli) -> u8 {
    // The HTTPS listener and every HTTP client need a TLS crypto provider installed first:
    // rustls with ring (not aws-lc-rs). It fails only if one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.action {
        None => main(&cli.config, cli.check),
        Some(_) if cli.check => {
            eprintln!("tailjoin-provisioner: --check cannot be combined with a subcommand");
            exit::CONFIG
        }
        Some(action) => admin::main(&cli.config, &action),
    }
}

/// `tailjoin-provisioner --config FILE [--check]`.
pub fn main(config_path: &Path, check_only: bool) -> u8 {
    let settings = match load(config_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tailjoin-provisioner: {e}");
            return exit::CONFIG;
        }
    };
    if check_only {
        if let Err(e) = load_ek_cas(&settings) {
            eprintln!("tailjoin-provisioner: {}: {e}", config_path.display());
            return exit::CONFIG;
        }
        println!(
            "{}: ok; listens on {} ({}), {}",
            config_path.display(),
            settings.listen,
            if settings.tls.is_some() {
                "https"
            } else {
                "plain http"
            },
            settings.mint.describe()
        );
        if let Some(nb) = &settings.netboot {
            println!(
                "netboot: boot scripts on http://{}, key_url {}, {} initrd(s), tokens valid {}s",
                nb.listen,
                nb.key_url,
                nb.initrds.len(),
                nb.token_ttl.as_secs()
            );
        }
        return exit::OK;
    }
    tailjoin_common::logging::init(settings.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    match rt.block_on(serve(settings)) {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!("{e}");
            exit::CONFIG
        }
    }
}

/// `netboot.tpm_ek_ca_files`, read and parsed (`None` when there are none).
fn load_ek_cas(settings: &Settings) -> Result<Option<tpm::ek_cert::EkCaSet>, String> {
    match &settings.netboot {
        Some(nb) if !nb.tpm_ek_ca_files.is_empty() => {
            tpm::ek_cert::EkCaSet::load(&nb.tpm_ek_ca_files)
                .map(Some)
                .map_err(|e| format!("netboot.tpm_ek_ca_files: {e}"))
        }
        _ => Ok(None),
    }
}

/// Longest a netboot connection may stay open (downloads included).
const NETBOOT_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The netboot listener's accept loop (plain HTTP); it ends with the runtime.
async fn serve_netboot(prov: Arc<Provisioner>, listener: tokio::net::TcpListener) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("netboot listener: {e}");
            return;
        }
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("netboot accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let prov = prov.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                prov.clone().handle_netboot(local, peer, req)
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            // A generous bound (a kernel or initrd of hundreds of MB may take minutes on a slow
            // link) so a client that stops reading cannot hold a connection for ever; an idle
            // connection ends at the header timeout.
            let served = tokio::time::timeout(
                NETBOOT_CONNECTION_TIMEOUT,
                http.serve_connection(TokioIo::new(stream), service),
            )
            .await;
            match served {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("netboot connection from {peer}: {e}"),
                Err(_) => tracing::warn!(
                    "netboot connection from {peer} closed after {} s",
                    NETBOOT_CONNECTION_TIMEOUT.as_secs()
                ),
            }
        });
    }
}

fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)
}

fn tls_acceptor(
    tls: &TlsSettings,
    creds: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "tls.cert_file {}: not a PEM certificate chain ({e})",
                tls.cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_file {} holds no certificate",
            tls.cert_file.display()
        ));
    }
    let key_text = tailjoin_common::secrets::read_secret_text(&tls.key, creds, "TLS private key")
        .map_err(|e| format!("tls.key: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_text.expose_secret().as_bytes())
        .map_err(|_| "tls.key: not a PEM private key".to_owned())?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: the certificate and the key do not go together ({e})"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve(settings: Settings) -> Result<(), String> {
    let creds = credentials_dir();
    std::fs::create_dir_all(&settings.state_dir).map_err(|e| {
        format!(
            "cannot create state_dir {}: {e}",
            settings.state_dir.display()
        )
    })?;
    let tokens = match &settings.boot_tokens {
        None => None,
        Some(src) => {
            let text = tailjoin_common::secrets::read_secret_text(
                src,
                creds.as_deref(),
                "boot tokens file",
            )
            .map_err(|e| format!("allow.boot_tokens: {e}"))?;
            let mut t =
                tokens::BootTokens::parse(&text, settings.state_dir.join("used-boot-tokens"))
                    .map_err(|e| format!("allow.boot_tokens: {e}"))?;
            t.load_used()?;
            Some(t)
        }
    };
    let acceptor = settings
        .tls
        .as_ref()
        .map(|t| tls_acceptor(t, creds.as_deref()))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let rules = &settings.allow;
    tracing::info!(
        "tailjoin {} provisioner listening on {bound} ({}); {}; allow: {}{}{}; keys {}single-use, {}s, tags [{}]; audit log {}",
        env!("CARGO_PKG_VERSION"),
        if acceptor.is_some() {
            "https"
        } else {
            "plain http"
        },
        settings.mint.describe(),
        rules
            .networks
            .as_ref()
            .map(|n| format!("{} network(s) ", n.len()))
            .unwrap_or_default(),
        rules
            .macs
            .as_ref()
            .map(|m| format!("{} MAC(s) ", m.len()))
            .unwrap_or_default(),
        tokens
            .as_ref()
            .map(|t| format!("{} unused boot token(s)", t.unused()))
            .unwrap_or_default(),
        if settings.ephemeral { "ephemeral " } else { "" },
        settings.key_expiry.as_secs(),
        settings.tags.join(","),
        settings.audit_log.display(),
    );
    let ek_cas = load_ek_cas(&settings)?;
    let (issued, pending, netboot_listener) = match &settings.netboot {
        None => (None, None, None),
        Some(nb) => {
            for f in std::iter::once(&nb.kernel).chain(&nb.initrds) {
                std::fs::File::open(f).map_err(|e| {
                    format!("netboot: cannot read the boot file {}: {e}", f.display())
                })?;
            }
            let store = boot_store::BootStore::open(&settings.state_dir)?;
            let pending = enrol::Pending::open(&settings.state_dir)?;
            enrol::approved(&settings.state_dir)?;
            let l = tokio::net::TcpListener::bind(nb.listen)
                .await
                .map_err(|e| format!("cannot listen on {} (netboot.listen): {e}", nb.listen))?;
            tracing::info!(
                "netboot listener on {} (plain http): boot scripts, pixiecore API, {} boot file(s); tokens valid {}s, {} outstanding; {}; TPM {}{}",
                l.local_addr().map_err(|e| e.to_string())?,
                1 + nb.initrds.len(),
                nb.token_ttl.as_secs(),
                store.outstanding(),
                if nb.boots_unknown_macs() {
                    "unknown MACs boot and must prove their TPM"
                } else if nb.require_approval {
                    "unknown MACs wait for approval"
                } else {
                    "no approval needed"
                },
                nb.tpm.word(),
                if nb.tpm_ek_ca_files.is_empty() {
                    String::new()
                } else {
                    format!(", {} EK CA file(s)", nb.tpm_ek_ca_files.len())
                },
            );
            (Some(store), Some(pending), Some(l))
        }
    };
    let prov = Arc::new(Provisioner {
        challenges: Mutex::new(Default::default()),
        ek_cas,
        limiter: Mutex::new(rate::RateLimiter::new(settings.rate_limit, Instant::now())),
        boot_limiter: Mutex::new(rate::RateLimiter::new(settings.rate_limit, Instant::now())),
        admission: admission::MintAdmission::new(settings.admission),
        audit: audit::AuditLog::new(settings.audit_log.clone()),
        tokens: tokens.map(Mutex::new),
        issued: issued.map(Mutex::new),
        pending: pending.map(Mutex::new),
        credentials_dir: creds,
        settings,
    });
    if let Some(l) = netboot_listener {
        tokio::spawn(serve_netboot(prov.clone(), l));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let prov = prov.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| prov.clone().handle(peer, req));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false);
            let done = async {
                match acceptor {
                    Some(acc) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acc.accept(stream)).await {
                            Ok(Ok(tls)) => http.serve_connection(TokioIo::new(tls), service).await,
                            Ok(Err(e)) => {
                                tracing::debug!("TLS handshake with {peer} failed: {e}");
                                Ok(())
                            }
                            Err(_) => Ok(()),
                        }
                    }
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                }
            };
            if let Ok(Err(e)) = tokio::time::timeout(EXCHANGE_TIMEOUT, done).await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    tracing::info!("provisioner stopping");
    Ok(())
}
