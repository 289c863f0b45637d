//! Kernel command line: `tailjoin.key_url=URL` names a provisioning server and
//! `tailjoin.boot_token=TOKEN` is a one-time token for it (what an iPXE script passes to each
//! machine). `tailjoin.auth_key=KEY`, the key itself, is honoured only with `allow_key`:
//! /proc/cmdline is readable by every local user and the boot script by anyone who can fetch it.
//! `tailjoin.tpm=auto|required|off` overrides the source's `tpm` setting.

use super::http;
use crate::config::{CmdlineSource, RetryPolicy, TpmMode, TpmPolicy};
use crate::error::SecretError;
use secrecy::SecretString;

pub const KEY_URL: &str = "tailjoin.key_url";
pub const BOOT_TOKEN: &str = "tailjoin.boot_token";
pub const AUTH_KEY: &str = "tailjoin.auth_key";
pub const TPM: &str = "tailjoin.tpm";

/// The tailjoin parameters found on a command line.
#[derive(Debug, Default)]
pub struct CmdlineParams {
    pub key_url: Option<String>,
    pub boot_token: Option<SecretString>,
    pub auth_key: Option<SecretString>,
    /// `tailjoin.tpm=` as written (checked when it is used).
    pub tpm: Option<String>,
}

/// Splits a kernel command line the way the kernel does: words separated by spaces, double
/// quotes group a value with spaces (and are removed). The last occurrence of a parameter wins.
pub fn parse(text: &str) -> CmdlineParams {
    let mut out = CmdlineParams::default();
    for word in split_words(text) {
        let Some((name, value)) = word.split_once('=') else {
            continue;
        };
        let value = value.to_owned();
        match name {
            KEY_URL => out.key_url = Some(value),
            BOOT_TOKEN => out.boot_token = Some(SecretString::from(value)),
            AUTH_KEY => out.auth_key = Some(SecretString::from(value)),
            TPM => out.tpm = Some(value),
            _ => drop(SecretString::from(value)),
        }
    }
    out
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

pub(crate) async fn read(src: &CmdlineSource, retry: &RetryPolicy) -> Result<String, SecretError> {
    let name = format!("kernel command line {}", src.path.display());
    let unavailable = |reason: String, fix: &str| SecretError::Unavailable {
        source_name: name.clone(),
        reason,
        fix: fix.to_owned(),
    };
    let file = crate::fs_read::open_regular(&src.path).map_err(|e| {
        unavailable(
            format!("cannot open it: {e}"),
            "check auth_key.kernel_cmdline.path",
        )
    })?;
    let text = super::read_bounded(file)
        .map_err(|r| unavailable(r, "check auth_key.kernel_cmdline.path"))?;
    let params = parse(&text);
    drop(SecretString::from(text));

    if let Some(key) = params.auth_key {
        if !src.allow_key {
            drop(key);
            return Err(unavailable(
                format!(
                    "it carries the key itself ({AUTH_KEY}=), which every local user can read in /proc/cmdline"
                ),
                "pass tailjoin.key_url= and a one-time tailjoin.boot_token= instead (the provisioner hands out \
                 a fresh key), or set auth_key.kernel_cmdline.allow_key to true if you accept the exposure",
            ));
        }
        tracing::warn!(
            "using the key given on the kernel command line ({AUTH_KEY}=, allowed by allow_key); every local user can read it"
        );
        return Ok(secrecy::ExposeSecret::expose_secret(&key).to_owned());
    }
    let Some(url) = params.key_url else {
        return Err(unavailable(
            format!("it has no {KEY_URL}= parameter"),
            "add tailjoin.key_url=https://PROVISIONER/v1/key and tailjoin.boot_token=TOKEN to the kernel \
             parameters (the kernel line of the iPXE script)",
        ));
    };
    let url = checked_url(&url, src.allow_plain_http).map_err(|r| {
        unavailable(
            format!("{KEY_URL}= {r}"),
            "give an https:// URL (auth_key.kernel_cmdline.ca_file for a home-lab CA), or set allow_plain_http on a link you trust",
        )
    })?;
    let tpm = tpm_policy(params.tpm.as_deref(), &src.http.tpm).map_err(|r| {
        unavailable(
            r,
            "use tailjoin.tpm=auto, tailjoin.tpm=required or tailjoin.tpm=off",
        )
    })?;
    let target = crate::config::HttpKeySource {
        url,
        tpm,
        ..src.http.clone()
    };
    let token = params
        .boot_token
        .map(|t| {
            super::one_token(
                secrecy::ExposeSecret::expose_secret(&t).to_owned(),
                &format!("{BOOT_TOKEN}= on the kernel command line"),
            )
        })
        .transpose()?;
    http::fetch(&target, token.as_ref(), retry).await
}

/// The TPM policy: `tailjoin.tpm=` when given (it wins), else the configured one.
fn tpm_policy(param: Option<&str>, configured: &TpmPolicy) -> Result<TpmPolicy, String> {
    let Some(value) = param else {
        return Ok(configured.clone());
    };
    match TpmMode::parse(value.trim()) {
        Some(mode) => Ok(TpmPolicy {
            mode,
            set_by: format!("the kernel parameter {TPM}={}", mode.as_str()),
        }),
        None => Err(format!(
            "{TPM}={:?} is not a TPM mode (allowed: {})",
            value
                .chars()
                .filter(|c| !c.is_control())
                .take(32)
                .collect::<String>(),
            TpmMode::VALUES
        )),
    }
}

/// The URL, if it is http(s) with a host and no credentials. The problem in words otherwise
/// (without the URL: its query may hold a token).
fn checked_url(raw: &str, allow_plain_http: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => {
            return Err("is an http:// URL: the key would cross the network in clear text".into());
        }
        other => return Err(format!("has the scheme {other:?}, not https")),
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err("has no host, or carries credentials".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn parameters_are_found_among_others_and_quotes_are_removed() {
        let p = parse(
            "BOOT_IMAGE=/bzImage init=/nix/store/x-init quiet \
             tailjoin.key_url=https://prov.lan:8443/v1/key \"tailjoin.boot_token=fake-tok\" console=ttyS0\n",
        );
        assert_eq!(p.key_url.as_deref(), Some("https://prov.lan:8443/v1/key"));
        assert_eq!(p.boot_token.unwrap().expose_secret(), "fake-tok");
        assert!(p.auth_key.is_none());
        let p = parse(
            "a tailjoin.auth_key=\"fake key with spaces\" tailjoin.key_url=x tailjoin.key_url=y",
        );
        assert_eq!(p.auth_key.unwrap().expose_secret(), "fake key with spaces");
        assert_eq!(p.key_url.as_deref(), Some("y"));
        let p = parse("");
        assert!(p.key_url.is_none() && p.boot_token.is_none());
    }

    #[test]
    fn the_tpm_parameter_overrides_the_setting_and_a_bad_value_names_the_allowed_ones() {
        let configured = TpmPolicy {
            mode: TpmMode::Auto,
            set_by: "auth_key.kernel_cmdline.tpm".into(),
        };
        let p = parse("quiet tailjoin.tpm=required tailjoin.key_url=https://p/k");
        assert_eq!(p.tpm.as_deref(), Some("required"));
        let got = tpm_policy(p.tpm.as_deref(), &configured).unwrap();
        assert_eq!(got.mode, TpmMode::Required);
        assert!(
            got.set_by.contains("tailjoin.tpm=required"),
            "{}",
            got.set_by
        );
        assert_eq!(tpm_policy(None, &configured).unwrap(), configured);
        assert_eq!(
            tpm_policy(Some("off"), &configured).unwrap().mode,
            TpmMode::Off
        );
        let e = tpm_policy(Some("maybe"), &configured).unwrap_err();
        assert!(
            e.contains("tailjoin.tpm=\"maybe\"") && e.contains("auto, required or off"),
            "{e}"
        );
    }

    #[test]
    fn urls_must_be_https_unless_allowed() {
        assert!(checked_url("https://prov.lan/v1/key?t=fake", false).is_ok());
        let e = checked_url("http://prov.lan/v1/key", false).unwrap_err();
        assert!(e.contains("clear text"));
        assert!(checked_url("http://prov.lan/v1/key", true).is_ok());
        assert!(checked_url("https://u:fakepw@prov.lan/", false).is_err());
        assert!(checked_url("ftp://prov.lan/", true).is_err());
    }

    fn source(dir: &std::path::Path, cmdline: &str, allow_key: bool) -> CmdlineSource {
        let path = dir.join("cmdline");
        std::fs::write(&path, cmdline).unwrap();
        let raw = crate::config::parse(&format!(
            r#"{{"auth_key": {{"kernel_cmdline": {{"path": "{}", "allow_key": {allow_key}}}}}}}"#,
            path.display()
        ))
        .unwrap();
        match raw.validate().unwrap().auth_key {
            crate::config::KeySource::KernelCmdline(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn retry() -> RetryPolicy {
        RetryPolicy {
            initial_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(2),
            max_attempts: 1,
            key_attempts: 1,
            key_fetch_deadline: std::time::Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_key_on_the_command_line_is_refused_unless_allowed() {
        let d = tempfile::tempdir().unwrap();
        let src = source(
            d.path(),
            "quiet tailjoin.auth_key=fake-cmdline-key-123\n",
            false,
        );
        let e = read(&src, &retry()).await.unwrap_err().to_string();
        assert!(
            e.contains("allow_key") && !e.contains("fake-cmdline-key-123"),
            "{e}"
        );
        let src = source(
            d.path(),
            "quiet tailjoin.auth_key=fake-cmdline-key-123\n",
            true,
        );
        assert_eq!(read(&src, &retry()).await.unwrap(), "fake-cmdline-key-123");
    }

    #[tokio::test]
    async fn a_command_line_without_parameters_says_what_to_add() {
        let d = tempfile::tempdir().unwrap();
        let src = source(d.path(), "quiet splash\n", false);
        let e = read(&src, &retry()).await.unwrap_err().to_string();
        assert!(e.contains("tailjoin.key_url="), "{e}");
        let src = source(
            d.path(),
            "tailjoin.key_url=http://prov/x?t=fake-secret-q\n",
            false,
        );
        let e = read(&src, &retry()).await.unwrap_err().to_string();
        assert!(
            e.contains("clear text") && !e.contains("fake-secret-q"),
            "{e}"
        );
    }
}
