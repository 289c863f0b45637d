//! The `auth_key` section: where the key comes from. A minting API's own settings are checked
//! by [`super::mint`], shared with the provisioner.

use super::fields::{
    absolute_path, invalid, validate_credential_name, validate_credential_or_file,
};
use super::mint::{validate_expiry, validate_headscale, validate_tailscale};
use crate::config::raw::{
    HttpMethod, RawCmdlineSource, RawHttpSource, RawKeySource, ResponseKind, TpmMode,
};
use crate::config::settings::{
    CmdlineSource, HttpKeySource, KeySource, MintApi, MintSource, ResponseFormat, TpmPolicy,
};
use crate::error::ConfigError;
use std::time::Duration;

/// Checks the key source. `advertise_tags` (already checked) and `ephemeral` are the top-level
/// fields, which a minted key carries.
pub(super) fn validate(
    raw: Option<RawKeySource>,
    advertise_tags: &[String],
    ephemeral: Option<bool>,
) -> Result<KeySource, ConfigError> {
    Ok(match raw {
        None => {
            return Err(invalid(
                "auth_key",
                "no auth key source is configured".into(),
                "set one of {\"file\": PATH}, {\"credential\": NAME} or {\"env\": VAR} \
                 (flags --auth-key-file, --auth-key-credential, --auth-key-env)",
            ));
        }
        Some(RawKeySource::File(p)) => {
            if !p.is_absolute() {
                return Err(invalid(
                    "auth_key.file",
                    format!("{} is not an absolute path", p.display()),
                    "use an absolute path",
                ));
            }
            if p.starts_with("/nix/store") {
                return Err(invalid(
                    "auth_key.file",
                    format!(
                        "{} is in the Nix store, which every local user can read",
                        p.display()
                    ),
                    "keep keys out of the store: deliver the key as a systemd credential or with agenix/sops-nix",
                ));
            }
            KeySource::File(p)
        }
        Some(RawKeySource::Credential(name)) => {
            validate_credential_name("auth_key.credential", &name)?;
            KeySource::Credential(name)
        }
        Some(RawKeySource::Env(var)) => {
            let ok = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(invalid(
                    "auth_key.env",
                    format!("{var:?} is not an environment variable name"),
                    "give the variable's NAME (letters, digits, _), not the key",
                ));
            }
            KeySource::Env(var)
        }
        Some(RawKeySource::Http(h)) => KeySource::Http(validate_http_source("auth_key.http", h)?),
        Some(RawKeySource::KernelCmdline(c)) => {
            KeySource::KernelCmdline(validate_cmdline_source(c)?)
        }
        Some(RawKeySource::Headscale(h)) => {
            let (api, expiry) = validate_headscale("auth_key.headscale", h)?;
            if api.user.is_none() && advertise_tags.is_empty() {
                return Err(invalid(
                    "auth_key.headscale.user",
                    "neither a user nor advertise_tags is set, and headscale needs one to own the node".into(),
                    "set auth_key.headscale.user to a headscale user, or advertise_tags to the node's tags",
                ));
            }
            KeySource::Mint(MintSource {
                api: MintApi::Headscale(api),
                tags: advertise_tags.to_vec(),
                ephemeral: ephemeral.unwrap_or(true),
                expiry: validate_expiry("auth_key.headscale.expiry_secs", expiry, 600)?,
            })
        }
        Some(RawKeySource::TailscaleOauth(t)) => {
            let (api, expiry) = validate_tailscale("auth_key.tailscale_oauth", t)?;
            if advertise_tags.is_empty() {
                return Err(invalid(
                    "advertise_tags",
                    "Tailscale only lets an OAuth client create keys for tagged nodes".into(),
                    "set advertise_tags to tags the OAuth client owns, e.g. [\"tag:netboot\"]",
                ));
            }
            KeySource::Mint(MintSource {
                api: MintApi::Tailscale(api),
                tags: advertise_tags.to_vec(),
                ephemeral: ephemeral.unwrap_or(true),
                expiry: validate_expiry("auth_key.tailscale_oauth.expiry_secs", expiry, 600)?,
            })
        }
    })
}

fn validate_http_source(field: &str, h: RawHttpSource) -> Result<HttpKeySource, ConfigError> {
    let url = reqwest::Url::parse(&h.url).map_err(|e| {
        invalid(
            &format!("{field}.url"),
            format!("{:?} is not a URL ({e})", h.url),
            "use e.g. \"https://provisioner.lan:8443/key\"",
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if h.allow_plain_http.unwrap_or(false) => {}
        "http" => {
            return Err(invalid(
                &format!("{field}.url"),
                "an http:// URL sends the key over the network in clear text".into(),
                "use https:// (with ca_file for a home-lab CA), or set allow_plain_http to true on a trusted link",
            ));
        }
        other => {
            return Err(invalid(
                &format!("{field}.url"),
                format!("the scheme {other:?} is not http(s)"),
                "use an https:// URL",
            ));
        }
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            &format!("{field}.url"),
            "the URL has no host, or carries credentials".into(),
            "give the server URL; put a token in bearer_token",
        ));
    }
    let bearer_token = h
        .bearer_token
        .map(|t| validate_credential_or_file(&format!("{field}.bearer_token"), t))
        .transpose()?;
    if let Some(ca) = &h.ca_file {
        if !ca.is_absolute() {
            return Err(invalid(
                &format!("{field}.ca_file"),
                format!("{} is not an absolute path", ca.display()),
                "use an absolute path to a PEM bundle",
            ));
        }
    }
    let response = match h.response.unwrap_or_default() {
        ResponseKind::Raw => {
            if h.json_field.is_some() {
                return Err(invalid(
                    &format!("{field}.json_field"),
                    "json_field is set but response is raw".into(),
                    "set response to \"json\", or drop json_field",
                ));
            }
            ResponseFormat::Raw
        }
        ResponseKind::Json => {
            let field = h
                .json_field
                .unwrap_or_else(|| tailjoin_common::wire::KEY_FIELD.to_owned());
            if field.is_empty() {
                return Err(invalid(
                    &format!("{field}.json_field"),
                    "the field name is empty".into(),
                    "name the JSON field that holds the key, e.g. \"key\"",
                ));
            }
            ResponseFormat::Json { field }
        }
    };
    let timeout_secs = h.timeout_secs.unwrap_or(10);
    if !(1..=300).contains(&timeout_secs) {
        return Err(invalid(
            &format!("{field}.timeout_secs"),
            format!("{timeout_secs} is out of range"),
            "use 1 to 300 seconds",
        ));
    }
    let max = h.max_response_bytes.unwrap_or(16 * 1024);
    if !(64..=1024 * 1024).contains(&max) {
        return Err(invalid(
            &format!("{field}.max_response_bytes"),
            format!("{max} is out of range"),
            "use 64 to 1048576 bytes",
        ));
    }
    let method = h.method.unwrap_or_default();
    let tpm = TpmPolicy {
        mode: h.tpm.unwrap_or_default(),
        set_by: format!("{field}.tpm"),
    };
    if tpm.mode == TpmMode::Required && method == HttpMethod::Get {
        return Err(invalid(
            &tpm.set_by,
            "a TPM-proven request is a POST (it sends the TPM's keys), but method is \"get\""
                .into(),
            "set method to \"post\", or tpm to \"auto\" or \"off\"",
        ));
    }
    Ok(HttpKeySource {
        url,
        method,
        bearer_token,
        ca_file: h.ca_file,
        response,
        timeout: Duration::from_secs(timeout_secs),
        max_response_bytes: max as usize,
        tpm,
    })
}

/// The kernel command line source's default request timeout, in seconds.
pub const CMDLINE_TIMEOUT_SECS: u64 = 30;

fn validate_cmdline_source(c: RawCmdlineSource) -> Result<CmdlineSource, ConfigError> {
    let field = "auth_key.kernel_cmdline";
    let path = absolute_path(&format!("{field}.path"), c.path, "/proc/cmdline")?;
    let allow_plain_http = c.allow_plain_http.unwrap_or(false);
    // Everything but the URL is checked now; the URL comes from the command line at run time.
    let http = validate_http_source(
        field,
        RawHttpSource {
            url: "https://kernel-cmdline.invalid/".into(),
            method: Some(c.method.unwrap_or(HttpMethod::Post)),
            bearer_token: None,
            ca_file: c.ca_file,
            response: Some(c.response.unwrap_or(ResponseKind::Json)),
            json_field: c.json_field,
            // Longer than the provisioner's own mint timeout (10 s by default): it answers (a
            // key, or 502 and the token freed) before this machine gives up on the request.
            timeout_secs: Some(c.timeout_secs.unwrap_or(CMDLINE_TIMEOUT_SECS)),
            max_response_bytes: c.max_response_bytes,
            allow_plain_http: Some(allow_plain_http),
            tpm: c.tpm,
        },
    )?;
    Ok(CmdlineSource {
        path,
        allow_key: c.allow_key.unwrap_or(false),
        allow_plain_http,
        http,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{HttpMethod, KeySource, RawConfig, ResponseFormat, TokenSource, parse};
    use std::time::Duration;

    #[test]
    fn an_http_source_gets_defaults_and_hides_its_query_in_descriptions() {
        let s = parse(
            r#"{"auth_key": {"http": {"url": "https://prov.lan:8443/key?boot_token=fake-one-time",
                "method": "post", "response": "json",
                "bearer_token": {"credential": "prov-token"}}}}"#,
        )
        .unwrap()
        .validate()
        .unwrap();
        let KeySource::Http(h) = &s.auth_key else {
            panic!("{:?}", s.auth_key)
        };
        assert_eq!(h.method, HttpMethod::Post);
        assert_eq!(
            h.response,
            ResponseFormat::Json {
                field: "key".into()
            }
        );
        assert_eq!(h.timeout, Duration::from_secs(10));
        assert_eq!(h.max_response_bytes, 16 * 1024);
        assert_eq!(
            h.bearer_token,
            Some(TokenSource::Credential("prov-token".into()))
        );
        assert_eq!(
            s.auth_key.describe(),
            "HTTP source https://prov.lan:8443/key"
        );
        let plain = parse(
            r#"{"auth_key": {"http": {"url": "http://127.0.0.1:8/k", "allow_plain_http": true}}}"#,
        )
        .unwrap()
        .validate();
        assert!(plain.is_ok());
    }

    #[test]
    fn the_tpm_setting_defaults_to_auto_names_its_field_and_refuses_other_values() {
        use crate::config::TpmMode;
        let http = |extra: &str| {
            parse(&format!(
                r#"{{"auth_key": {{"http": {{"url": "https://p/k", "method": "post"{extra}}}}}}}"#
            ))
            .and_then(|raw| raw.validate())
        };
        let KeySource::Http(h) = http("").unwrap().auth_key else {
            panic!("not http")
        };
        assert_eq!(h.tpm.mode, TpmMode::Auto);
        assert_eq!(h.tpm.set_by, "auth_key.http.tpm");
        for (value, mode) in [
            ("auto", TpmMode::Auto),
            ("required", TpmMode::Required),
            ("off", TpmMode::Off),
        ] {
            let KeySource::Http(h) = http(&format!(r#", "tpm": "{value}""#)).unwrap().auth_key
            else {
                panic!("not http")
            };
            assert_eq!(h.tpm.mode, mode);
            assert_eq!(TpmMode::parse(value), Some(mode));
            assert_eq!(mode.as_str(), value);
        }
        let e = http(r#", "tpm": "yes""#).unwrap_err().to_string();
        assert!(e.contains("auth_key.http.tpm"), "{e}");
        assert!(
            e.contains("auto") && e.contains("required") && e.contains("off"),
            "{e}"
        );
        assert_eq!(TpmMode::parse("Auto"), None);

        // A TPM-proven request is a POST: required with a GET is refused, auto is not.
        let get = |tpm: &str| {
            parse(&format!(
                r#"{{"auth_key": {{"http": {{"url": "https://p/k", "tpm": "{tpm}"}}}}}}"#
            ))
            .and_then(|raw| raw.validate())
        };
        let e = get("required").unwrap_err().to_string();
        assert!(e.contains("auth_key.http.tpm") && e.contains("post"), "{e}");
        assert!(get("auto").is_ok() && get("off").is_ok());

        let cmdline = parse(r#"{"auth_key": {"kernel_cmdline": {"tpm": "required"}}}"#)
            .and_then(|raw| raw.validate())
            .unwrap();
        let KeySource::KernelCmdline(c) = cmdline.auth_key else {
            panic!("not kernel_cmdline")
        };
        assert_eq!(c.http.tpm.mode, TpmMode::Required);
        assert_eq!(c.http.tpm.set_by, "auth_key.kernel_cmdline.tpm");
        let e = parse(r#"{"auth_key": {"kernel_cmdline": {"tpm": 1}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth_key.kernel_cmdline.tpm"), "{e}");
    }

    #[test]
    fn missing_key_source_says_how_to_set_one() {
        let e = RawConfig::default().validate().unwrap_err().to_string();
        assert!(e.contains("auth_key"), "{e}");
        assert!(e.contains("--auth-key-file"), "{e}");
    }
}
