//! `tailjoin status`: the agent's status file and tailscaled's live status on one screen.

use crate::decide::Phase;
use crate::localapi::LocalApi;
use crate::report::status_file::{self, StatusReport};
use crate::state::{BackendState, NodeFacts, Status};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Combined {
    pub agent: Option<StatusReport>,
    pub agent_error: Option<String>,
    pub tailscaled: Option<TailscaledView>,
    pub tailscaled_error: Option<String>,
    /// True when tailscaled is Running and the agent (if any) agrees.
    pub running: bool,
}

#[derive(Debug, Serialize)]
pub struct TailscaledView {
    pub backend_state: String,
    pub version: String,
    pub node: NodeFacts,
    pub health: Vec<String>,
}

pub async fn gather(state_dir: &Path, socket: &Path) -> Combined {
    let (agent, agent_error) = match status_file::read(state_dir) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    let live: Result<Status, String> = match LocalApi::new(socket) {
        Ok(api) => api.status().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (tailscaled, tailscaled_error) = match live {
        Ok(s) => (
            Some(TailscaledView {
                backend_state: s.backend_state.name().to_owned(),
                version: s.version.clone(),
                node: NodeFacts::from(&s),
                health: s.health.clone(),
            }),
            None,
        ),
        Err(e) => (None, Some(e)),
    };
    let ts_running = tailscaled
        .as_ref()
        .is_some_and(|t| t.backend_state == BackendState::Running.name());
    let agent_ok = agent.as_ref().is_none_or(|a| a.state == Phase::Running);
    Combined {
        running: ts_running && agent_ok,
        agent,
        agent_error,
        tailscaled,
        tailscaled_error,
    }
}

pub fn render_text(c: &Combined) -> String {
    let mut out = String::new();
    match (&c.agent, &c.agent_error) {
        (Some(a), _) => {
            let _ = writeln!(
                out,
                "tailjoin    {} since {} (pid {}, version {})",
                a.state, a.since, a.pid, a.agent_version
            );
            let _ = writeln!(out, "            {}", a.summary);
            if let Some(ms) = a.time_to_join_ms {
                let _ = writeln!(
                    out,
                    "            joined {} time(s); first join {:.1}s after start",
                    a.joins,
                    ms as f64 / 1000.0
                );
            }
            if let Some(e) = &a.error {
                let _ = writeln!(out, "            last error ({}): {}", e.kind, e.message);
            }
            let _ = writeln!(
                out,
                "            key from {}; control server {}",
                a.key_source,
                a.login_server.as_deref().unwrap_or("(Tailscale default)")
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "tailjoin    unknown: {e}");
        }
        (None, None) => {}
    }
    match (&c.tailscaled, &c.tailscaled_error) {
        (Some(t), _) => {
            let _ = writeln!(
                out,
                "tailscaled  {} (version {})",
                t.backend_state, t.version
            );
            if !t.node.tailscale_ips.is_empty() {
                let _ = writeln!(
                    out,
                    "            {} {} on tailnet {}",
                    t.node.dns_name,
                    t.node.tailscale_ips.join(" "),
                    t.node.tailnet
                );
            }
            if let Some(exp) = &t.node.key_expiry {
                let _ = writeln!(out, "            node key expires {exp}");
            }
            for h in &t.health {
                let _ = writeln!(out, "            health: {h}");
            }
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "tailscaled  unreachable: {e}");
        }
        (None, None) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_both_sides_and_errors() {
        let c = Combined {
            agent: None,
            agent_error: Some("no status file".into()),
            tailscaled: Some(TailscaledView {
                backend_state: "Running".into(),
                version: "1.100.0".into(),
                node: NodeFacts {
                    tailscale_ips: vec!["100.64.0.1".into()],
                    dns_name: "a.tailnet.test".into(),
                    tailnet: "tailnet.test".into(),
                    key_expiry: None,
                    tailscale_version: "1.100.0".into(),
                },
                health: vec!["no DERP home".into()],
            }),
            tailscaled_error: None,
            running: true,
        };
        let text = render_text(&c);
        assert!(
            text.contains("tailjoin    unknown: no status file"),
            "{text}"
        );
        assert!(
            text.contains("tailscaled  Running (version 1.100.0)"),
            "{text}"
        );
        assert!(
            text.contains("a.tailnet.test 100.64.0.1 on tailnet tailnet.test"),
            "{text}"
        );
        assert!(text.contains("health: no DERP home"), "{text}");
    }
}
