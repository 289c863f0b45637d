//! Checks of single fields, shared by the sections (and by the provisioner's configuration):
//! paths, names, URLs, tags, routes. Each error names the field and says what to do.

use super::log_level::LogLevel;
use super::mint::RawTokenSource;
use super::mint::TokenSource;
use crate::error::ConfigError;
use std::net::IpAddr;
use std::path::PathBuf;

/// `log_level`: error, warn, info (default), debug or trace.
pub fn parse_log_level(level: Option<&str>) -> Result<LogLevel, ConfigError> {
    Ok(match level.unwrap_or("info") {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        other => {
            return Err(invalid(
                "log_level",
                format!("{other:?} is not a log level"),
                "use one of error, warn, info, debug, trace",
            ));
        }
    })
}

/// A secret (bearer token, API key, client secret) named by a credential or a root-only file.
pub fn validate_credential_or_file(
    field: &str,
    t: RawTokenSource,
) -> Result<TokenSource, ConfigError> {
    match t {
        RawTokenSource::File(p) => {
            if !p.is_absolute() || p.starts_with("/nix/store") {
                return Err(invalid(
                    &format!("{field}.file"),
                    format!(
                        "{} is not an absolute path outside the Nix store",
                        p.display()
                    ),
                    "keep secrets out of the store; use a credential or a file under /run",
                ));
            }
            Ok(TokenSource::File(p))
        }
        RawTokenSource::Credential(c) => {
            validate_credential_name(&format!("{field}.credential"), &c)?;
            Ok(TokenSource::Credential(c))
        }
    }
}

pub fn validate_unit_name(field: &str, unit: &str) -> Result<(), ConfigError> {
    let ok = unit.contains('.')
        && !unit.starts_with('.')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '\\'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{unit:?} is not a systemd unit name"),
            "use a full unit name such as \"tailscaled.service\" or \"network-online.target\"",
        ))
    }
}

pub fn invalid(field: &str, problem: String, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        file: None,
        field: field.to_owned(),
        problem,
        fix: fix.to_owned(),
    }
}

pub fn absolute_path(
    field: &str,
    value: Option<PathBuf>,
    default: &str,
) -> Result<PathBuf, ConfigError> {
    require_absolute(
        field,
        value.unwrap_or_else(|| PathBuf::from(default)),
        "use an absolute path",
    )
}

/// `p` when it is absolute; else the error naming `field`, with `fix` as the advice.
pub fn require_absolute(field: &str, p: PathBuf, fix: &str) -> Result<PathBuf, ConfigError> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(invalid(
            field,
            format!("{} is not an absolute path", p.display()),
            fix,
        ))
    }
}

pub fn validate_login_server(url: String) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(&url).map_err(|e| {
        invalid(
            "login_server",
            format!("{url:?} is not a URL ({e})"),
            "use e.g. \"https://headscale.example.com\"",
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(
            "login_server",
            format!("{url:?} is not an http(s) URL with a host"),
            "use e.g. \"https://headscale.example.com\"",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some() {
        return Err(invalid(
            "login_server",
            "the URL carries credentials or a query".into(),
            "give the bare server URL; keys belong in the auth_key source",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// A hostname as tailscaled registers it: one DNS label.
pub fn validate_hostname(field: &str, h: String) -> Result<String, ConfigError> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(h)
    } else {
        Err(invalid(
            field,
            format!("{h:?} is not a valid hostname"),
            "use 1-63 letters, digits and '-', not starting or ending with '-'",
        ))
    }
}

pub fn validate_tag(field: &str, tag: &str) -> Result<(), ConfigError> {
    let name = tag.strip_prefix("tag:").unwrap_or("");
    let ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{tag:?} is not a tag"),
            "write tags as \"tag:name\" (letters, digits, '-', '_', starting with a letter)",
        ))
    }
}

pub fn validate_cidr(field: &str, route: &str) -> Result<(), ConfigError> {
    let parsed = route.split_once('/').and_then(|(addr, bits)| {
        let addr: IpAddr = addr.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(())
    });
    parsed.ok_or_else(|| {
        invalid(
            field,
            format!("{route:?} is not a CIDR prefix"),
            "write routes as e.g. \"192.168.1.0/24\" or \"fd00::/64\"",
        )
    })
}

pub fn validate_credential_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(invalid(
            field,
            format!("{name:?} is not a credential name"),
            "use the NAME from LoadCredential=NAME:… (no slashes)",
        ));
    }
    Ok(())
}
