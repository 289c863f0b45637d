//! The pull side of health reporting, as pure functions of the agent's state: Prometheus text
//! exposition for `/metrics` (and the node_exporter textfile collector), and the `/healthz`
//! verdict.

use super::status_file::StatusReport;
use crate::decide::Phase;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Every phase, for the one-hot `tailjoin_state` gauge.
pub const PHASES: [Phase; 11] = [
    Phase::Starting,
    Phase::WaitingForTailscaled,
    Phase::WaitingForBackend,
    Phase::Joining,
    Phase::AwaitingApproval,
    Phase::Resuming,
    Phase::Stopped,
    Phase::Running,
    Phase::Degraded,
    Phase::Retrying,
    Phase::Failed,
];

/// Counters kept across transitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reported failures by kind (each transition that carries a new error counts once).
    pub failures: BTreeMap<String, u64>,
    /// When the state last changed, in Unix milliseconds.
    pub last_transition_ms: u64,
    /// Push reports by (reporter, outcome): sent, failed (given up), dropped (queue full).
    pub push: BTreeMap<(String, String), u64>,
}

/// Prometheus text format (version 0.0.4).
pub fn render(report: &StatusReport, counters: &Counters) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP tailjoin_info The agent's version.\n# TYPE tailjoin_info gauge\ntailjoin_info{{version=\"{}\"}} 1",
        escape(&report.agent_version)
    );
    out.push_str(
        "# HELP tailjoin_state The agent's current state (1 for the current one).\n# TYPE tailjoin_state gauge\n",
    );
    for p in PHASES {
        let _ = writeln!(
            out,
            "tailjoin_state{{state=\"{}\"}} {}",
            p.name(),
            u8::from(p == report.state)
        );
    }
    let _ = writeln!(
        out,
        "# HELP tailjoin_joins_total Times the node reached Running since the agent started.\n# TYPE tailjoin_joins_total counter\ntailjoin_joins_total {}",
        report.joins
    );
    out.push_str(
        "# HELP tailjoin_failures_total Failures reported, by kind.\n# TYPE tailjoin_failures_total counter\n",
    );
    for (kind, n) in &counters.failures {
        let _ = writeln!(
            out,
            "tailjoin_failures_total{{kind=\"{}\"}} {n}",
            escape(kind)
        );
    }
    if let Some(ms) = report.time_to_join_ms {
        let _ = writeln!(
            out,
            "# HELP tailjoin_time_to_join_seconds From the agent's start to the first Running.\n# TYPE tailjoin_time_to_join_seconds gauge\ntailjoin_time_to_join_seconds {:.3}",
            ms as f64 / 1000.0
        );
    }
    if !counters.push.is_empty() {
        out.push_str(
            "# HELP tailjoin_push_reports_total Push reports by reporter and outcome (sent, failed after all attempts, dropped).\n# TYPE tailjoin_push_reports_total counter\n",
        );
        for ((reporter, outcome), n) in &counters.push {
            let _ = writeln!(
                out,
                "tailjoin_push_reports_total{{reporter=\"{}\",outcome=\"{}\"}} {n}",
                escape(reporter),
                escape(outcome)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP tailjoin_last_transition_timestamp_seconds When the state last changed (Unix time).\n# TYPE tailjoin_last_transition_timestamp_seconds gauge\ntailjoin_last_transition_timestamp_seconds {:.3}",
        counters.last_transition_ms as f64 / 1000.0
    );
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/healthz`: 200 when Running with an address, 503 with the reason otherwise.
pub fn healthz(report: &StatusReport) -> (u16, String) {
    let addresses = report
        .node
        .as_ref()
        .map(|n| n.tailscale_ips.join(" "))
        .unwrap_or_default();
    if report.state == Phase::Running && !addresses.is_empty() {
        (200, format!("ok: running {addresses}"))
    } else if report.state == Phase::Running {
        (
            503,
            "not ok: running but without a tailnet address yet".into(),
        )
    } else {
        (
            503,
            format!("not ok: {}: {}", report.state.name(), report.summary),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NodeFacts;

    fn report(state: Phase) -> StatusReport {
        StatusReport::in_state(state, "retrying in 2s after control-unreachable")
    }

    #[test]
    fn healthz_is_200_only_when_running_with_an_address() {
        let mut r = report(Phase::Retrying);
        let (code, body) = healthz(&r);
        assert_eq!(code, 503);
        assert!(body.contains("retrying") && body.contains("control-unreachable"));
        r.state = Phase::Running;
        assert_eq!(healthz(&r).0, 503);
        r.node = Some(NodeFacts {
            tailscale_ips: vec!["100.64.0.1".into()],
            ..Default::default()
        });
        assert_eq!(healthz(&r), (200, "ok: running 100.64.0.1".into()));
    }

    #[test]
    fn metrics_are_one_hot_with_counters() {
        let mut r = report(Phase::Running);
        r.joins = 2;
        r.time_to_join_ms = Some(4_250);
        let mut c = Counters::default();
        c.failures.insert("key-rejected".into(), 3);
        c.last_transition_ms = 1_795_000_000_123;
        c.push.insert(("webhook".into(), "sent".into()), 4);
        let text = render(&r, &c);
        assert!(text.contains("tailjoin_state{state=\"running\"} 1\n"));
        assert!(text.contains("tailjoin_state{state=\"failed\"} 0\n"));
        assert_eq!(text.matches("tailjoin_state{").count(), PHASES.len());
        assert!(text.contains("tailjoin_joins_total 2\n"));
        assert!(text.contains("tailjoin_failures_total{kind=\"key-rejected\"} 3\n"));
        assert!(text.contains("tailjoin_time_to_join_seconds 4.250\n"));
        assert!(text.contains("tailjoin_last_transition_timestamp_seconds 1795000000.123\n"));
        assert!(
            text.contains("tailjoin_push_reports_total{reporter=\"webhook\",outcome=\"sent\"} 4\n")
        );
        assert!(text.ends_with('\n'));
    }
}
