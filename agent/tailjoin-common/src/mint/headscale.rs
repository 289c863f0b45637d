//! headscale's REST API (`/api/v1`, bearer API key): `POST /api/v1/preauthkey` creates a
//! pre-auth key; `GET /api/v1/user?name=` turns a user name into the id the call wants.

use super::{MintFailure, MintRequest, MintedKey, client, endpoint, read_api_secret, send};
use crate::config::{HeadscaleApi, UserRef};
use crate::time::rfc3339;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::Path;
use std::time::SystemTime;

const SERVER: &str = "headscale";
const AUTH_FIX: &str = "headscale refused the API key: create a new one with `headscale apikeys create` \
     and update the credential";

#[derive(Deserialize)]
struct CreateResponse {
    #[serde(rename = "preAuthKey")]
    pre_auth_key: Option<PreAuthKey>,
}

#[derive(Deserialize)]
struct PreAuthKey {
    #[serde(default)]
    id: String,
    key: Option<String>,
    expiration: Option<String>,
}

#[derive(Deserialize)]
struct UsersResponse {
    #[serde(default)]
    users: Vec<User>,
}

#[derive(Deserialize)]
struct User {
    id: serde_json::Value,
    #[serde(default)]
    name: String,
}

pub(super) async fn mint(
    api: &HeadscaleApi,
    req: &MintRequest,
    credentials_dir: Option<&Path>,
) -> Result<MintedKey, MintFailure> {
    let api_key = read_api_secret(&api.api_key, credentials_dir, "headscale API key")?;
    let client = client(api.timeout, api.ca_file.as_deref())?;
    let user = match &api.user {
        None => None,
        Some(UserRef::Id(id)) => Some(*id),
        Some(UserRef::Name(name)) => Some(lookup_user(&client, api, &api_key, name).await?),
    };
    let mut body = serde_json::json!({
        "reusable": false,
        "ephemeral": req.ephemeral,
        "expiration": rfc3339(SystemTime::now() + req.expiry),
        "aclTags": req.tags,
    });
    if let Some(id) = user {
        body["user"] = serde_json::Value::String(id.to_string());
    }
    let text = send(
        client
            .post(endpoint(&api.url, "api/v1/preauthkey"))
            .bearer_auth(api_key.expose_secret())
            .json(&body),
        SERVER,
        AUTH_FIX,
    )
    .await?;
    let parsed: CreateResponse =
        serde_json::from_str(text.expose_secret()).map_err(|e| MintFailure {
            transient: false,
            reason: format!(
                "headscale's answer to the key request is not the JSON expected (line {}, column {})",
                e.line(),
                e.column()
            ),
            fix: "check that url points at headscale (0.23 or newer)".into(),
        })?;
    match parsed.pre_auth_key {
        Some(PreAuthKey {
            id,
            key: Some(key),
            expiration,
        }) if !key.is_empty() => Ok(MintedKey {
            key: SecretString::from(key),
            id,
            expires: expiration,
        }),
        _ => Err(MintFailure {
            transient: false,
            reason: "headscale's answer holds no key".into(),
            fix: "check that url points at headscale (0.23 or newer)".into(),
        }),
    }
}

async fn lookup_user(
    client: &reqwest::Client,
    api: &HeadscaleApi,
    api_key: &SecretString,
    name: &str,
) -> Result<u64, MintFailure> {
    let mut url = endpoint(&api.url, "api/v1/user");
    url.query_pairs_mut().append_pair("name", name);
    let text = send(
        client.get(url).bearer_auth(api_key.expose_secret()),
        SERVER,
        AUTH_FIX,
    )
    .await?;
    let users: UsersResponse =
        serde_json::from_str(text.expose_secret()).map_err(|e| MintFailure {
            transient: false,
            reason: format!("headscale's user list is not the JSON expected ({e})"),
            fix: "check that url points at headscale (0.23 or newer)".into(),
        })?;
    user_id_by_name(&users.users, name).ok_or_else(|| MintFailure {
        transient: false,
        reason: format!("headscale has no user named {name:?}"),
        fix: format!(
            "create it with `headscale users create {name}`, or set user to an existing name or id"
        ),
    })
}

fn user_id_by_name(users: &[User], name: &str) -> Option<u64> {
    users
        .iter()
        .filter(|u| u.name == name)
        .find_map(|u| match &u.id {
            serde_json::Value::String(s) => s.parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_come_as_strings_or_numbers() {
        let users: UsersResponse = serde_json::from_str(
            r#"{"users":[{"id":"3","name":"other"},{"id":"7","name":"fleet"},{"id":9,"name":"n"}]}"#,
        )
        .unwrap();
        assert_eq!(user_id_by_name(&users.users, "fleet"), Some(7));
        assert_eq!(user_id_by_name(&users.users, "n"), Some(9));
        assert_eq!(user_id_by_name(&users.users, "absent"), None);
    }

    #[test]
    fn the_create_answer_yields_key_id_and_expiry() {
        let r: CreateResponse = serde_json::from_str(
            r#"{"preAuthKey":{"user":null,"id":"12","key":"hskey-auth-fake","reusable":false,
                "ephemeral":true,"used":false,"expiration":"2026-11-21T20:00:00Z","aclTags":["tag:a"]}}"#,
        )
        .unwrap();
        let k = r.pre_auth_key.unwrap();
        assert_eq!(
            (k.id.as_str(), k.key.as_deref()),
            ("12", Some("hskey-auth-fake"))
        );
        assert_eq!(k.expiration.as_deref(), Some("2026-11-21T20:00:00Z"));
    }
}
