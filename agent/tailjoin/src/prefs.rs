//! The preferences sent with a join, computed from tailscaled's current prefs and the settings.
//! Pure: no I/O.
//!
//! Starting from tailscaled's own prefs (not from an empty object) keeps every field this agent
//! does not manage — netfilter mode, profile, auto-update, fields of newer versions — as
//! tailscaled has them, instead of resetting them to Go zero values.

use crate::config::Settings;
use serde_json::{Map, Value, json};

/// Fields the agent never sends back: node keys and the like are tailscaled's alone.
const NEVER_SENT: [&str; 2] = ["Persist", "Config"];

/// Whether this join is the node's first login or a new login of a node that has logged in
/// before (its key expired, it was deleted on the control server), as tailscaled's
/// `HaveNodeKey` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    First,
    Again,
}

/// The prefs a person may change with `tailscale set` once the node is up. The settings give
/// them their first values; a login again keeps what tailscaled has, so that a key renewal
/// never undoes `tailscale set --advertise-routes=…` (the classic autoconnect's `tailscale up`
/// fails there with "requires mentioning all non-default flags", nixpkgs #509367).
const USER_PREFS: [&str; 6] = [
    "RouteAll",
    "CorpDNS",
    "ShieldsUp",
    "RunSSH",
    "AdvertiseRoutes",
    "Hostname",
];

/// The `UpdatePrefs` object for `POST /localapi/v0/start`.
pub fn join_prefs(
    current: &Map<String, Value>,
    settings: &Settings,
    login: Login,
) -> Map<String, Value> {
    let mut p = current.clone();
    for field in NEVER_SENT {
        p.remove(field);
    }
    if let Some(url) = &settings.login_server {
        p.insert("ControlURL".into(), json!(url));
    }
    if let Some(op) = &settings.prefs.operator {
        p.insert("OperatorUser".into(), json!(op));
    }
    p.insert("WantRunning".into(), json!(true));
    p.insert("LoggedOut".into(), json!(false));
    p.insert("AdvertiseTags".into(), json!(settings.advertise_tags));
    let mut first = Map::new();
    if let Some(host) = &settings.hostname {
        first.insert("Hostname".into(), json!(host));
    }
    first.insert("RouteAll".into(), json!(settings.prefs.accept_routes));
    first.insert("CorpDNS".into(), json!(settings.prefs.accept_dns));
    first.insert("ShieldsUp".into(), json!(settings.prefs.shields_up));
    first.insert("RunSSH".into(), json!(settings.prefs.ssh));
    first.insert(
        "AdvertiseRoutes".into(),
        json!(settings.prefs.advertise_routes),
    );
    for (field, value) in first {
        debug_assert!(USER_PREFS.contains(&field.as_str()));
        // A login again keeps the node's own value; one tailscaled does not have (an older
        // release, an empty hostname) still gets the setting.
        let keep = login == Login::Again
            && current
                .get(&field)
                .is_some_and(|v| !v.is_null() && v != &json!(""));
        if !keep {
            p.insert(field, value);
        }
    }
    p
}

/// The MaskedPrefs for `PATCH /localapi/v0/prefs` that brings a stopped node back up.
pub fn resume_prefs() -> Value {
    json!({"WantRunning": true, "WantRunningSet": true})
}

/// The MaskedPrefs that stop tailscaled from retrying a login by itself (it retries a rejected
/// key against the control server forever otherwise).
pub fn stop_prefs() -> Value {
    json!({"WantRunning": false, "WantRunningSet": true})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn settings(json: &str) -> Settings {
        parse(json).unwrap().validate().unwrap()
    }

    #[test]
    fn managed_fields_are_set_and_others_kept() {
        let current: Map<String, Value> = serde_json::from_str(
            r#"{"ControlURL":"https://controlplane.tailscale.com","WantRunning":false,
                "LoggedOut":true,"NetfilterMode":2,"AutoUpdate":{"Check":true},
                "Persist":{"PrivateNodeKey":"privkey:redacted"},"FutureField":7,"Hostname":""}"#,
        )
        .unwrap();
        let s = settings(
            r#"{"auth_key":{"env":"K"},"login_server":"http://127.0.0.1:8080",
                "hostname":"web1","advertise_tags":["tag:web"],
                "prefs":{"accept_routes":true,"accept_dns":false,"advertise_routes":["10.1.0.0/16"]}}"#,
        );
        let p = join_prefs(&current, &s, Login::First);
        assert_eq!(p["ControlURL"], "http://127.0.0.1:8080");
        assert_eq!(p["Hostname"], "web1");
        assert_eq!(p["WantRunning"], true);
        assert_eq!(p["LoggedOut"], false);
        assert_eq!(p["RouteAll"], true);
        assert_eq!(p["CorpDNS"], false);
        assert_eq!(p["AdvertiseTags"], json!(["tag:web"]));
        assert_eq!(p["AdvertiseRoutes"], json!(["10.1.0.0/16"]));
        assert_eq!(p["NetfilterMode"], 2);
        assert_eq!(p["FutureField"], 7);
        assert!(!p.contains_key("Persist"));
        assert!(!p.contains_key("OperatorUser"));
    }

    #[test]
    fn without_login_server_or_hostname_tailscaled_keeps_its_own() {
        let current: Map<String, Value> = serde_json::from_str(
            r#"{"ControlURL":"https://controlplane.tailscale.com","Hostname":"h"}"#,
        )
        .unwrap();
        let p = join_prefs(
            &current,
            &settings(r#"{"auth_key":{"env":"K"}}"#),
            Login::First,
        );
        assert_eq!(p["ControlURL"], "https://controlplane.tailscale.com");
        assert_eq!(p["Hostname"], "h");
    }

    #[test]
    fn a_login_again_keeps_what_the_user_set_and_a_first_login_applies_the_settings() {
        // The node's prefs after `tailscale set --advertise-routes=10.99.0.0/24 --ssh
        // --accept-dns=false --hostname=renamed` (field names as tailscale v1.100.0 has them).
        let current: Map<String, Value> = serde_json::from_str(
            r#"{"ControlURL":"http://127.0.0.1:8080","Hostname":"renamed","RouteAll":false,
                "CorpDNS":false,"ShieldsUp":false,"RunSSH":true,
                "AdvertiseRoutes":["10.99.0.0/24"],"AdvertiseTags":null,"WantRunning":true}"#,
        )
        .unwrap();
        let s = settings(
            r#"{"auth_key":{"env":"K"},"login_server":"http://127.0.0.1:8080","hostname":"web1",
                "prefs":{"accept_dns":true}}"#,
        );
        let again = join_prefs(&current, &s, Login::Again);
        assert_eq!(again["AdvertiseRoutes"], json!(["10.99.0.0/24"]));
        assert_eq!(again["RunSSH"], true);
        assert_eq!(again["CorpDNS"], false);
        assert_eq!(again["Hostname"], "renamed");
        assert_eq!(again["ControlURL"], "http://127.0.0.1:8080");
        assert_eq!(again["WantRunning"], true);
        let first = join_prefs(&current, &s, Login::First);
        assert_eq!(first["AdvertiseRoutes"], json!([]));
        assert_eq!(first["RunSSH"], false);
        assert_eq!(first["CorpDNS"], true);
        assert_eq!(first["Hostname"], "web1");
        // A field tailscaled lacks, or an empty hostname, still gets the setting on a login again.
        let bare: Map<String, Value> =
            serde_json::from_str(r#"{"Hostname":"","WantRunning":false}"#).unwrap();
        let again = join_prefs(&bare, &s, Login::Again);
        assert_eq!(again["Hostname"], "web1");
        assert_eq!(again["CorpDNS"], true);
    }

    #[test]
    fn resume_only_sets_want_running() {
        assert_eq!(
            resume_prefs(),
            json!({"WantRunning": true, "WantRunningSet": true})
        );
    }
}
