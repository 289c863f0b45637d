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

/// The `UpdatePrefs` object for `POST /localapi/v0/start`.
pub fn join_prefs(current: &Map<String, Value>, settings: &Settings) -> Map<String, Value> {
    let mut p = current.clone();
    for field in NEVER_SENT {
        p.remove(field);
    }
    if let Some(url) = &settings.login_server {
        p.insert("ControlURL".into(), json!(url));
    }
    if let Some(host) = &settings.hostname {
        p.insert("Hostname".into(), json!(host));
    }
    if let Some(op) = &settings.prefs.operator {
        p.insert("OperatorUser".into(), json!(op));
    }
    p.insert("WantRunning".into(), json!(true));
    p.insert("LoggedOut".into(), json!(false));
    p.insert("RouteAll".into(), json!(settings.prefs.accept_routes));
    p.insert("CorpDNS".into(), json!(settings.prefs.accept_dns));
    p.insert("ShieldsUp".into(), json!(settings.prefs.shields_up));
    p.insert("RunSSH".into(), json!(settings.prefs.ssh));
    p.insert("AdvertiseTags".into(), json!(settings.advertise_tags));
    p.insert(
        "AdvertiseRoutes".into(),
        json!(settings.prefs.advertise_routes),
    );
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
        let p = join_prefs(&current, &s);
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
        let p = join_prefs(&current, &settings(r#"{"auth_key":{"env":"K"}}"#));
        assert_eq!(p["ControlURL"], "https://controlplane.tailscale.com");
        assert_eq!(p["Hostname"], "h");
    }

    #[test]
    fn resume_only_sets_want_running() {
        assert_eq!(
            resume_prefs(),
            json!({"WantRunning": true, "WantRunningSet": true})
        );
    }
}
