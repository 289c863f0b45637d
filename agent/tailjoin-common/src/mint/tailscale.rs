//! Tailscale's API with an OAuth client (client-credentials grant):
//! `POST /api/v2/oauth/token` (form: client_id, client_secret, grant_type) gives a short-lived
//! access token; `POST /api/v2/tailnet/{tailnet}/keys` with it creates an auth key with the
//! requested capabilities (Tailscale requires tags on keys made by an OAuth client).

use super::{MintFailure, MintRequest, MintedKey, client, endpoint, read_api_secret, send};
use crate::config::TailscaleApi;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::Path;

const SERVER: &str = "Tailscale's API";

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct CreateKey {
    capabilities: Capabilities,
    expiry_seconds: u64,
    description: String,
}

#[derive(Serialize, Debug, PartialEq)]
struct Capabilities {
    devices: Devices,
}

#[derive(Serialize, Debug, PartialEq)]
struct Devices {
    create: Create,
}

#[derive(Serialize, Debug, PartialEq)]
struct Create {
    reusable: bool,
    ephemeral: bool,
    preauthorized: bool,
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct KeyResponse {
    #[serde(default)]
    id: String,
    key: Option<String>,
    expires: Option<String>,
}

pub(super) async fn mint(
    api: &TailscaleApi,
    req: &MintRequest,
    credentials_dir: Option<&Path>,
) -> Result<MintedKey, MintFailure> {
    let secret = read_api_secret(&api.client_secret, credentials_dir, "OAuth client secret")?;
    let client = client(api.timeout, api.ca_file.as_deref())?;

    let form = [
        ("client_id", api.client_id.as_str()),
        ("client_secret", secret.expose_secret()),
        ("grant_type", "client_credentials"),
    ];
    let text = send(
        client
            .post(endpoint(&api.api_url, "api/v2/oauth/token"))
            .form(&form),
        SERVER,
        "the OAuth client was refused: check client_id and the client secret, and that the \
         client has the auth_keys scope",
    )
    .await?;
    let token = serde_json::from_str::<TokenResponse>(text.expose_secret())
        .ok()
        .and_then(|t| t.access_token)
        .filter(|t| !t.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| MintFailure {
            transient: false,
            reason: "the OAuth token answer holds no access_token".into(),
            fix: "check api_url: it must be Tailscale's API".into(),
        })?;
    drop(text);

    let body = create_body(req);
    let text = send(
        client
            .post(endpoint(
                &api.api_url,
                &format!("api/v2/tailnet/{}/keys", api.tailnet),
            ))
            .bearer_auth(token.expose_secret())
            .json(&body),
        SERVER,
        "the OAuth client may not create keys with these tags: give it the auth_keys scope \
         and make it an owner of the tags",
    )
    .await?;
    let parsed: KeyResponse =
        serde_json::from_str(text.expose_secret()).map_err(|e| MintFailure {
            transient: false,
            reason: format!(
                "the key answer is not the JSON expected (line {}, column {})",
                e.line(),
                e.column()
            ),
            fix: "check api_url: it must be Tailscale's API".into(),
        })?;
    match parsed.key {
        Some(key) if !key.is_empty() => Ok(MintedKey {
            key: SecretString::from(key),
            id: parsed.id,
            expires: parsed.expires,
        }),
        _ => Err(MintFailure {
            transient: false,
            reason: "the key answer holds no key".into(),
            fix: "check api_url: it must be Tailscale's API".into(),
        }),
    }
}

fn create_body(req: &MintRequest) -> CreateKey {
    CreateKey {
        capabilities: Capabilities {
            devices: Devices {
                create: Create {
                    reusable: false,
                    ephemeral: req.ephemeral,
                    preauthorized: true,
                    tags: req.tags.clone(),
                },
            },
        },
        expiry_seconds: req.expiry.as_secs(),
        description: description(&req.description),
    }
}

/// Tailscale accepts up to 50 letters, digits, hyphens and spaces.
fn description(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == ' ' {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_key_request_follows_the_documented_shape() {
        let req = MintRequest {
            tags: vec!["tag:netboot".into()],
            ephemeral: true,
            expiry: Duration::from_secs(300),
            description: "tailjoin rack1.node_7 (boot)".into(),
        };
        let v = serde_json::to_value(create_body(&req)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "capabilities": {"devices": {"create": {
                    "reusable": false, "ephemeral": true, "preauthorized": true,
                    "tags": ["tag:netboot"]}}},
                "expirySeconds": 300,
                "description": "tailjoin rack1-node-7 -boot-"
            })
        );
        assert_eq!(description(&"x".repeat(80)).len(), 50);
    }
}
