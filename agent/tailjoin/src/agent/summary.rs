//! The one-line summaries the agent reports (systemd's `STATUS=`, the journal, the status file,
//! push reports), and the error that goes with each: pure functions of what the agent knows.

use crate::decide::{FailureKind, Machine, Phase};
use crate::report::status_file::ErrorReport;
use crate::state::NodeFacts;
use std::path::Path;
use std::time::Duration;

/// What a phase's summary is made from.
pub struct Facts<'a> {
    /// The control server as the summaries name it.
    pub server: &'a str,
    pub machine: &'a Machine,
    /// The last transient error talking to tailscaled: (kind, message).
    pub connect_error: Option<(String, String)>,
    /// What systemd last said about a unit being waited for.
    pub unit_wait: Option<(String, Option<ErrorReport>)>,
    pub socket: &'a Path,
    /// Where the key comes from, in words.
    pub key_source: String,
}

fn error(kind: &str, message: &str) -> Option<ErrorReport> {
    Some(ErrorReport {
        kind: kind.to_owned(),
        message: message.to_owned(),
    })
}

/// The summary and error of a phase, or `None` for the phases reported elsewhere with more to
/// say (Running, Retrying, Failed).
pub fn phase(phase: Phase, f: &Facts<'_>) -> Option<(String, Option<ErrorReport>)> {
    let server = f.server;
    let m = f.machine;
    Some(match phase {
        Phase::Starting => ("starting".to_owned(), None),
        Phase::WaitingForTailscaled => match (&f.unit_wait, &f.connect_error) {
            (Some(wait), _) => wait.clone(),
            (None, Some((kind, message))) => (
                format!("waiting for tailscaled: {message}"),
                error(kind, message),
            ),
            (None, None) => (
                format!("waiting for tailscaled at {}", f.socket.display()),
                None,
            ),
        },
        Phase::WaitingForBackend => (
            format!(
                "waiting for tailscaled to settle (backend {})",
                m.backend().map(|b| b.name()).unwrap_or("unknown")
            ),
            None,
        ),
        Phase::Joining => match (m.last_join_error(), m.last_failure()) {
            (e, Some((FailureKind::JoinTimeout, reason))) if m.join_in_flight() => (
                format!(
                    "waiting for {server}: {reason}; tailscaled keeps trying with the key it was \
                     given{}",
                    e.map(|e| format!(" and reports: {e}")).unwrap_or_default()
                ),
                error(FailureKind::JoinTimeout.name(), reason),
            ),
            (Some(e), _) => (
                format!(
                    "joining {server} (attempt {}); tailscaled reports: {e}",
                    m.attempt()
                ),
                error("control-unreachable", e),
            ),
            (None, Some((kind, reason))) => (
                format!(
                    "joining {server} (attempt {}); the last attempt failed: {reason}",
                    m.attempt()
                ),
                error(kind.name(), reason),
            ),
            (None, None) => (
                format!("joining {server} with the key from {}", f.key_source),
                None,
            ),
        },
        Phase::AwaitingApproval => (
            "key accepted; waiting for an administrator to approve this device".to_owned(),
            None,
        ),
        Phase::Resuming => (
            "tailscaled was stopped; bringing it back up (on_stopped = resume)".to_owned(),
            None,
        ),
        Phase::Stopped => (
            "tailscaled is stopped (tailscale down); leaving it down (on_stopped = respect)"
                .to_owned(),
            None,
        ),
        Phase::Degraded => {
            let problem = m.control_problem().unwrap_or("unknown");
            (
                format!(
                    "Running, but tailscaled cannot reach {server}: {problem} \
                     (if the node was deleted there, it must log in again: restart tailscaled with empty state)"
                ),
                error("control-unreachable", problem),
            )
        }
        Phase::Running | Phase::Retrying | Phase::Failed => return None,
    })
}

/// A join timeout passed while tailscaled still holds the submitted key.
pub fn keep_waiting(
    reason: &str,
    attempts: u32,
    max_attempts: u32,
    server: &str,
    timeout: Duration,
) -> String {
    format!(
        "{reason} (attempt {attempts} of {max_attempts}); tailscaled keeps trying {server} with \
         the key it was given, which is not submitted again; waiting another {}s",
        timeout.as_secs()
    )
}

/// Running: who the node is, and how long the first join took (`joined_in_ms` only for it).
pub fn running(node: Option<&NodeFacts>, joined_in_ms: Option<u64>) -> String {
    let joined_in = joined_in_ms
        .map(|ms| format!(" (joined in {:.1}s)", ms as f64 / 1000.0))
        .unwrap_or_default();
    match node {
        Some(n) => format!(
            "Running as {} {} on tailnet {}{joined_in}",
            if n.dns_name.is_empty() {
                "(no DNS name)"
            } else {
                &n.dns_name
            },
            n.tailscale_ips.join(" "),
            if n.tailnet.is_empty() {
                "(unnamed)"
            } else {
                &n.tailnet
            },
        ),
        None => format!("Running{joined_in}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnStopped;
    use crate::decide::{Event, Policy};
    use crate::state::BackendState;

    fn machine() -> Machine {
        Machine::new(Policy {
            on_stopped: OnStopped::Resume,
            key_attempts: 2,
            max_attempts: 3,
        })
    }

    fn facts(m: &Machine) -> Facts<'_> {
        Facts {
            server: "http://hs:8080",
            machine: m,
            connect_error: None,
            unit_wait: None,
            socket: Path::new("/run/tailscale/tailscaled.sock"),
            key_source: "file /etc/key".into(),
        }
    }

    #[test]
    fn a_join_says_where_the_key_comes_from_then_what_went_wrong() {
        let mut m = machine();
        m.on(Event::Backend(BackendState::NeedsLogin));
        let (s, e) = phase(Phase::Joining, &facts(&m)).expect("a summary");
        assert_eq!(s, "joining http://hs:8080 with the key from file /etc/key");
        assert_eq!(e, None);
        m.on(Event::BackendError("connection refused".into()));
        let (s, e) = phase(Phase::Joining, &facts(&m)).expect("a summary");
        assert_eq!(
            s,
            "joining http://hs:8080 (attempt 1); tailscaled reports: connection refused"
        );
        assert_eq!(e.map(|e| e.kind), Some("control-unreachable".to_owned()));
    }

    #[test]
    fn after_a_join_timeout_the_summary_says_the_key_is_not_submitted_again() {
        let mut m = machine();
        m.on(Event::Backend(BackendState::NeedsLogin));
        m.on(Event::JoinTimedOut);
        let (s, e) = phase(Phase::Joining, &facts(&m)).expect("a summary");
        assert!(
            s.starts_with("waiting for http://hs:8080: not Running within the join timeout;"),
            "{s}"
        );
        assert!(s.contains("keeps trying with the key it was given"), "{s}");
        assert_eq!(e.map(|e| e.kind), Some("join-timeout".to_owned()));
        let k = keep_waiting("late", 2, 10, "http://hs:8080", Duration::from_secs(60));
        assert_eq!(
            k,
            "late (attempt 2 of 10); tailscaled keeps trying http://hs:8080 with the key it was \
             given, which is not submitted again; waiting another 60s"
        );
    }

    #[test]
    fn waiting_for_tailscaled_prefers_the_unit_then_the_error_then_the_socket() {
        let m = machine();
        let mut f = facts(&m);
        assert_eq!(
            phase(Phase::WaitingForTailscaled, &f).map(|p| p.0),
            Some("waiting for tailscaled at /run/tailscale/tailscaled.sock".to_owned())
        );
        f.connect_error = Some(("connect".into(), "connection refused".into()));
        let (s, e) = phase(Phase::WaitingForTailscaled, &f).expect("a summary");
        assert_eq!(s, "waiting for tailscaled: connection refused");
        assert_eq!(e.map(|e| e.kind), Some("connect".to_owned()));
        f.unit_wait = Some(("tailscaled.service failed".into(), None));
        assert_eq!(
            phase(Phase::WaitingForTailscaled, &f).map(|p| p.0),
            Some("tailscaled.service failed".to_owned())
        );
    }

    #[test]
    fn running_names_the_node_and_the_first_join_time() {
        let node = NodeFacts {
            dns_name: "a.tailnet.test".into(),
            tailscale_ips: vec!["100.64.0.1".into(), "fd7a::1".into()],
            tailnet: "tailnet.test".into(),
            ..NodeFacts::default()
        };
        assert_eq!(
            running(Some(&node), Some(2650)),
            "Running as a.tailnet.test 100.64.0.1 fd7a::1 on tailnet tailnet.test (joined in 2.6s)"
        );
        assert_eq!(running(None, None), "Running");
        for p in [Phase::Running, Phase::Retrying, Phase::Failed] {
            assert!(phase(p, &facts(&machine())).is_none(), "{p}");
        }
    }
}
