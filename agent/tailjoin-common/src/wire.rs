//! The wire types of the provisioner's `POST /v1/key`, written by the agent and read by the
//! provisioner: one definition, so the two programs cannot drift apart.
//!
//! The request is who the machine says it is. Nothing in it is secret, nor proven: a machine can
//! claim any MAC, which is why MACs alone are a weak check (secrets/README.md). The answer holds
//! the key; it is built from borrowed parts so that the key is never copied into a plain
//! `String` that outlives the reply.

use crate::secrets::identity::hardware_macs;
use serde::{Deserialize, Serialize};

/// The JSON field of [`KeyAnswer`] that holds the key: the agent's default `json_field`.
pub const KEY_FIELD: &str = "key";

/// Most MACs a request's list is read for; the rest are ignored.
pub const MAX_REQUEST_MACS: usize = 64;

/// `POST /v1/key`'s body: hostname, machine id, boot id and MAC addresses. Every field may be
/// missing (an empty body or a GET is an empty request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub machine_id: String,
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub mac_addresses: Vec<String>,
}

impl KeyRequest {
    /// The hostname as it may appear in logs: printable, bounded.
    pub fn hostname_for_log(&self) -> String {
        printable(&self.hostname, 64)
    }

    pub fn machine_id_for_log(&self) -> String {
        printable(&self.machine_id, 64)
    }

    /// The request's MACs that are well-formed, normalised (lower case, colons).
    pub fn macs(&self) -> Vec<String> {
        self.mac_addresses
            .iter()
            .take(MAX_REQUEST_MACS)
            .filter_map(|m| normalize_mac(m))
            .collect()
    }
}

/// A MAC as the provisioner keeps it: lower case with colons (`52-54-00-…` is accepted), or
/// `None` when it is not six hex pairs or is all zeros.
pub fn normalize_mac(m: &str) -> Option<String> {
    let lower = m.trim().to_ascii_lowercase().replace('-', ":");
    hardware_macs(vec![lower]).pop()
}

fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect()
}

/// `POST /v1/key`'s 200 answer.
#[derive(Debug, Serialize)]
pub struct KeyAnswer<'a> {
    /// The single-use auth key ([`KEY_FIELD`]).
    pub key: &'a str,
    /// The key's id at the minting API (not secret), for the audit trail.
    pub id: &'a str,
    /// When the key stops working if unused (RFC 3339), when the minting API said.
    pub expires: Option<&'a str>,
    pub ephemeral: bool,
    pub tags: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_the_agent_writes_is_the_request_the_provisioner_reads() {
        let sent = KeyRequest {
            hostname: "node-1".into(),
            machine_id: "0123".into(),
            boot_id: "b-1".into(),
            mac_addresses: vec!["52:54:00:12:34:56".into()],
        };
        let text = serde_json::to_string(&sent).unwrap();
        let read: KeyRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(read, sent);
        let empty: KeyRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, KeyRequest::default());
    }

    #[test]
    fn macs_are_normalised_bounded_and_malformed_ones_dropped() {
        let mut req = KeyRequest {
            mac_addresses: vec![
                "52-54-00-AB-CD-EF".into(),
                "00:00:00:00:00:00".into(),
                "not-a-mac".into(),
            ],
            ..KeyRequest::default()
        };
        assert_eq!(req.macs(), vec!["52:54:00:ab:cd:ef".to_owned()]);
        req.mac_addresses = vec!["52:54:00:00:00:01".into(); MAX_REQUEST_MACS + 10];
        assert_eq!(req.macs().len(), MAX_REQUEST_MACS);
        req.hostname = "bad\nhost\u{7}name".into();
        assert_eq!(req.hostname_for_log(), "badhostname");
    }

    #[test]
    fn the_answer_names_the_key_in_the_agents_default_field() {
        let tags = vec!["tag:netboot".to_owned()];
        let answer = KeyAnswer {
            key: "fake-key",
            id: "7",
            expires: Some("2026-12-07T20:00:00Z"),
            ephemeral: true,
            tags: &tags,
        };
        let v: serde_json::Value = serde_json::to_value(&answer).unwrap();
        assert_eq!(v[KEY_FIELD], "fake-key");
        assert_eq!(v["tags"][0], "tag:netboot");
    }
}
