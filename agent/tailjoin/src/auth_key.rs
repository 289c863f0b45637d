//! Getting the auth key from its configured source: read where it is kept ([`secrets`]: a
//! file, a credential, the environment, a provisioning server, the kernel command line) or
//! minted for this machine ([`mint`]). Errors name the source and what to do, never the key.

use crate::config::{KeySource, MintSource, RetryPolicy};
use crate::error::SecretError;
use crate::mint;
use crate::secrets::{self, KeyContext};
use backon::Retryable;
use secrecy::{ExposeSecret, SecretString};

/// Reads the key from its configured source. Network sources retry transient failures with
/// `retry`'s backoff.
pub async fn read_key(
    source: &KeySource,
    ctx: &KeyContext,
    retry: &RetryPolicy,
) -> Result<SecretString, SecretError> {
    let name = source.describe();
    let raw = match source {
        KeySource::File(path) => {
            let path = path.clone();
            off_runtime(&name, move || secrets::file::read(&path)).await?
        }
        KeySource::Credential(cred) => {
            let (cred, dir) = (cred.clone(), ctx.credentials_dir.clone());
            off_runtime(&name, move || {
                secrets::credential::read(&cred, dir.as_deref())
            })
            .await?
        }
        KeySource::Env(var) => secrets::env::read(var, |n| std::env::var_os(n))?,
        KeySource::Http(h) => secrets::http::read(h, ctx, retry).await?,
        KeySource::KernelCmdline(c) => secrets::cmdline::read(c, retry).await?,
        KeySource::Mint(m) => return mint_key(m, ctx, retry).await,
    };
    secrets::normalize(raw, &name)
}

/// How long reading a key file or credential may take. Opening never blocks (see
/// [`crate::fs_read`]); this bounds a read on a hung file system.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a blocking read on tokio's blocking pool, bounded by [`READ_TIMEOUT`], so that it can
/// neither stall the runtime (and SIGTERM with it) nor wait forever.
async fn off_runtime<F>(name: &str, read: F) -> Result<String, SecretError>
where
    F: FnOnce() -> Result<String, SecretError> + Send + 'static,
{
    match tokio::time::timeout(READ_TIMEOUT, tokio::task::spawn_blocking(read)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(SecretError::Unavailable {
            source_name: name.to_owned(),
            reason: format!("the read failed: {e}"),
            fix: "check the path".into(),
        }),
        Err(_) => Err(SecretError::Unavailable {
            source_name: name.to_owned(),
            reason: format!("reading it took longer than {}s", READ_TIMEOUT.as_secs()),
            fix: "check the file system it is on (a hung network mount?)".into(),
        }),
    }
}

/// Mints a key for this machine, retrying transient failures with `retry`'s backoff.
async fn mint_key(
    m: &MintSource,
    ctx: &KeyContext,
    retry: &RetryPolicy,
) -> Result<SecretString, SecretError> {
    let source_name = m.api.describe();
    let host = secrets::identity::MachineIdentity::gather().hostname;
    let req = mint::MintRequest {
        tags: m.tags.clone(),
        ephemeral: m.ephemeral,
        expiry: m.expiry,
        description: format!("tailjoin {host}"),
    };
    let backoff = retry.key_fetch_backoff();
    let last = secrets::LastFailure::default();
    let attempt = || mint::mint(&m.api, &req, ctx.credentials_dir.as_deref());
    let attempts = attempt
        .retry(backoff)
        .when(|f: &mint::MintFailure| f.transient)
        .notify(|f: &mint::MintFailure, delay| {
            last.set(&f.reason);
            tracing::warn!(
                "minting a key failed ({}); retrying in {:.1}s",
                f.reason,
                delay.as_secs_f64()
            );
        });
    let minted = match tokio::time::timeout(retry.key_fetch_deadline, attempts).await {
        Ok(result) => result.map_err(|f| SecretError::Unavailable {
            source_name: source_name.clone(),
            reason: f.reason,
            fix: f.fix,
        })?,
        Err(_) => return Err(secrets::deadline_passed(&source_name, retry, &last)),
    };
    tracing::info!(
        tailjoin_minted_key_id = minted.id.as_str(),
        "minted a single-use{} key (id {}, expires {})",
        if m.ephemeral { " ephemeral" } else { "" },
        minted.id,
        minted.expires.as_deref().unwrap_or("per the server")
    );
    let raw = minted.key.expose_secret().to_owned();
    secrets::normalize(raw, &source_name)
}
