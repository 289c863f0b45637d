//! Models of what tailscaled tells us: its backend state, the IPN bus notifications and the
//! status document. Every struct ignores fields it does not know, because tailscaled adds
//! fields between versions.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// tailscaled's `ipn.State`. On the IPN bus it is an integer, in `/status` a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BackendState {
    NoState,
    InUseOtherUser,
    NeedsLogin,
    NeedsMachineAuth,
    Stopped,
    Starting,
    Running,
    /// A state this agent does not know (a newer tailscaled); treated like `NoState`.
    Unknown,
}

impl BackendState {
    /// Decodes the integer used on the IPN bus.
    pub fn from_bus_code(code: i64) -> Self {
        match code {
            0 => Self::NoState,
            1 => Self::InUseOtherUser,
            2 => Self::NeedsLogin,
            3 => Self::NeedsMachineAuth,
            4 => Self::Stopped,
            5 => Self::Starting,
            6 => Self::Running,
            _ => Self::Unknown,
        }
    }

    /// Decodes the name used in `/localapi/v0/status`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "NoState" => Self::NoState,
            "InUseOtherUser" => Self::InUseOtherUser,
            "NeedsLogin" => Self::NeedsLogin,
            "NeedsMachineAuth" => Self::NeedsMachineAuth,
            "Stopped" => Self::Stopped,
            "Starting" => Self::Starting,
            "Running" => Self::Running,
            _ => Self::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NoState => "NoState",
            Self::InUseOtherUser => "InUseOtherUser",
            Self::NeedsLogin => "NeedsLogin",
            Self::NeedsMachineAuth => "NeedsMachineAuth",
            Self::Stopped => "Stopped",
            Self::Starting => "Starting",
            Self::Running => "Running",
            Self::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for BackendState {
    /// Accepts both encodings: the bus integer and the status string.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Code(i64),
            Name(String),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Code(c) => Self::from_bus_code(c),
            Repr::Name(n) => Self::from_name(&n),
        })
    }
}

/// One `ipn.Notify` from `watch-ipn-bus`. Only the fields the agent acts on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Notify {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub state: Option<BackendState>,
    #[serde(default)]
    pub err_message: Option<String>,
    #[serde(default)]
    pub login_finished: Option<serde_json::Value>,
    #[serde(default, rename = "BrowseToURL")]
    pub browse_to_url: Option<String>,
    #[serde(default)]
    pub prefs: Option<PrefsSummary>,
    #[serde(default)]
    pub self_change: Option<serde_json::Value>,
    /// tailscaled's health warnings (sent when they change; initially with mask bit 128).
    #[serde(default)]
    pub health: Option<HealthState>,
}

/// `health.State`: the warnings currently raised, by code. Absent or empty means healthy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    #[serde(default, deserialize_with = "null_as_default")]
    pub warnings: std::collections::BTreeMap<String, HealthWarning>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthWarning {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub severity: String,
}

/// The warning tailscaled raises when its map poll to the control server keeps failing (the
/// server is down, or no longer knows this node).
pub const HEALTH_NOT_IN_MAP_POLL: &str = "not-in-map-poll";

impl HealthState {
    /// The text of the warning that says the control server cannot be reached, if raised.
    pub fn control_problem(&self) -> Option<String> {
        self.warnings.get(HEALTH_NOT_IN_MAP_POLL).map(|w| {
            if w.text.is_empty() {
                HEALTH_NOT_IN_MAP_POLL.to_owned()
            } else {
                w.text.clone()
            }
        })
    }
}

/// The few preference fields the agent reads back (the bus carries the whole `ipn.Prefs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PrefsSummary {
    #[serde(default, rename = "ControlURL")]
    pub control_url: Option<String>,
    #[serde(default)]
    pub want_running: Option<bool>,
    #[serde(default)]
    pub logged_out: Option<bool>,
}

/// `GET /localapi/v0/status` (the same document as `tailscale status --json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    #[serde(default)]
    pub version: String,
    pub backend_state: BackendState,
    #[serde(default)]
    pub have_node_key: bool,
    #[serde(default, rename = "AuthURL")]
    pub auth_url: String,
    #[serde(default, rename = "TailscaleIPs", deserialize_with = "null_as_default")]
    pub tailscale_ips: Vec<String>,
    #[serde(default, rename = "Self")]
    pub self_node: Option<SelfNode>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub health: Vec<String>,
    #[serde(default)]
    pub current_tailnet: Option<Tailnet>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SelfNode {
    #[serde(default, rename = "DNSName")]
    pub dns_name: String,
    #[serde(default)]
    pub host_name: String,
    #[serde(default)]
    pub online: bool,
    #[serde(default)]
    pub key_expiry: Option<String>,
    #[serde(default, rename = "TailscaleIPs", deserialize_with = "null_as_default")]
    pub tailscale_ips: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tailnet {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "MagicDNSSuffix")]
    pub magic_dns_suffix: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What the agent reports about a joined node, taken from a [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub tailscale_ips: Vec<String>,
    pub dns_name: String,
    pub tailnet: String,
    pub key_expiry: Option<String>,
    pub tailscale_version: String,
}

impl From<&Status> for NodeFacts {
    fn from(s: &Status) -> Self {
        let node = s.self_node.clone().unwrap_or_default();
        let ips = if node.tailscale_ips.is_empty() {
            s.tailscale_ips.clone()
        } else {
            node.tailscale_ips
        };
        NodeFacts {
            tailscale_ips: ips,
            dns_name: node.dns_name.trim_end_matches('.').to_owned(),
            tailnet: s
                .current_tailnet
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            key_expiry: node.key_expiry.filter(|e| !e.is_empty()),
            tailscale_version: s.version.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_state_is_an_integer_and_status_state_a_string() {
        let n: Notify = serde_json::from_str(r#"{"Version":"1.100.0","State":6}"#).unwrap();
        assert_eq!(n.state, Some(BackendState::Running));
        let s: Status =
            serde_json::from_str(r#"{"BackendState":"NeedsLogin","TailscaleIPs":null}"#).unwrap();
        assert_eq!(s.backend_state, BackendState::NeedsLogin);
        assert!(s.tailscale_ips.is_empty());
    }

    #[test]
    fn unknown_states_and_fields_are_tolerated() {
        let n: Notify =
            serde_json::from_str(r#"{"State":42,"SomeFutureField":{"x":1},"Health":{}}"#).unwrap();
        assert_eq!(n.state, Some(BackendState::Unknown));
        let s: Status =
            serde_json::from_str(r#"{"BackendState":"Hibernating","NewThing":[1,2]}"#).unwrap();
        assert_eq!(s.backend_state, BackendState::Unknown);
    }

    #[test]
    fn the_control_health_warning_is_found_among_others() {
        let n: Notify = serde_json::from_str(
            r#"{"Health":{"Warnings":{"not-in-map-poll":{"WarnableCode":"not-in-map-poll",
                "Severity":"medium","Text":"Unable to connect to the coordination server."},
                "no-derp-home":{"Text":"x"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            n.health.unwrap().control_problem().as_deref(),
            Some("Unable to connect to the coordination server.")
        );
        let healthy: Notify = serde_json::from_str(r#"{"Health":{"Warnings":null}}"#).unwrap();
        assert_eq!(healthy.health.unwrap().control_problem(), None);
    }

    #[test]
    fn node_facts_prefer_self_addresses_and_strip_the_dns_dot() {
        let s: Status = serde_json::from_str(
            r#"{"Version":"1.100.0","BackendState":"Running","TailscaleIPs":["100.64.0.9"],
                "Self":{"DNSName":"web.tailnet.test.","TailscaleIPs":["100.64.0.1","fd7a:115c:a1e0::1"],
                        "KeyExpiry":"2027-01-01T00:00:00Z"},
                "CurrentTailnet":{"Name":"tailnet.test","MagicDNSSuffix":"tailnet.test"}}"#,
        )
        .unwrap();
        let f = NodeFacts::from(&s);
        assert_eq!(f.tailscale_ips, vec!["100.64.0.1", "fd7a:115c:a1e0::1"]);
        assert_eq!(f.dns_name, "web.tailnet.test");
        assert_eq!(f.tailnet, "tailnet.test");
        assert_eq!(f.key_expiry.as_deref(), Some("2027-01-01T00:00:00Z"));
    }
}
