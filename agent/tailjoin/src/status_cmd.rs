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
    /// Whether the process that wrote the status file is still running (`None`: no file).
    pub agent_alive: Option<bool>,
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

/// How long `tailjoin status` waits for tailscaled.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A timeout in words a person can act on.
fn not_responding(socket: &Path) -> String {
    format!(
        "tailscaled is not responding: no answer within {}s on {} (is it hung or stopped? `systemctl status tailscaled`)",
        STATUS_TIMEOUT.as_secs(),
        socket.display()
    )
}

pub async fn gather(state_dir: &Path, socket: &Path) -> Combined {
    let (agent, agent_error) = match status_file::read(state_dir) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    let live: Result<Status, String> = match LocalApi::new(socket) {
        Ok(api) => {
            let api = api.with_timeout(STATUS_TIMEOUT);
            // The whole exchange is bounded too: connecting to a socket whose listener hangs.
            let asked = std::time::Instant::now();
            match tokio::time::timeout(STATUS_TIMEOUT, api.status()).await {
                // reqwest's own timeout says only "error sending request": tell by the clock.
                Ok(Err(_)) if asked.elapsed() >= STATUS_TIMEOUT => Err(not_responding(socket)),
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(not_responding(socket)),
            }
        }
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
    let agent_alive = agent
        .as_ref()
        .map(|a| process_is_tailjoin(Path::new("/proc"), a.pid));
    let agent_ok =
        agent.as_ref().is_none_or(|a| a.state == Phase::Running) && agent_alive != Some(false);
    Combined {
        running: ts_running && agent_ok,
        agent,
        agent_alive,
        agent_error,
        tailscaled,
        tailscaled_error,
    }
}

/// Whether `pid` is a live tailjoin process: the status file outlives the agent (a crash, a
/// SIGKILL), and its pid may since belong to something else.
pub fn process_is_tailjoin(proc_root: &Path, pid: u32) -> bool {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .is_ok_and(|comm| comm.trim_end() == "tailjoin")
}

pub fn render_text(c: &Combined) -> String {
    let mut out = String::new();
    match (&c.agent, &c.agent_error) {
        (Some(a), _) if c.agent_alive == Some(false) => {
            let _ = writeln!(
                out,
                "tailjoin    NOT RUNNING: the agent (pid {}) is gone; the last state it recorded was {} at {}",
                a.pid, a.state, a.since
            );
            let _ = writeln!(out, "            its last summary: {}", a.summary);
            if let Some(e) = &a.error {
                let _ = writeln!(out, "            last error ({}): {}", e.kind, e.message);
            }
            let _ = writeln!(
                out,
                "            see `journalctl -u tailjoin` for why it ended; `systemctl restart tailjoin` starts it again"
            );
        }
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
            agent_alive: None,
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

    #[test]
    fn a_dead_agent_is_not_vouched_for() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("42")).unwrap();
        std::fs::write(d.path().join("42/comm"), "tailjoin\n").unwrap();
        std::fs::create_dir_all(d.path().join("43")).unwrap();
        std::fs::write(d.path().join("43/comm"), "bash\n").unwrap();
        assert!(process_is_tailjoin(d.path(), 42));
        assert!(!process_is_tailjoin(d.path(), 43), "a reused pid");
        assert!(!process_is_tailjoin(d.path(), 44), "a gone pid");
        let c = Combined {
            agent: Some(StatusReport::in_state(Phase::Running, "running 100.64.0.1")),
            agent_alive: Some(false),
            agent_error: None,
            tailscaled: None,
            tailscaled_error: Some("tailscaled is not responding".into()),
            running: false,
        };
        let text = render_text(&c);
        assert!(text.contains("NOT RUNNING"), "{text}");
        assert!(
            text.contains("the last state it recorded was running at"),
            "{text}"
        );
        assert!(!text.contains("running since"), "{text}");
    }
}
