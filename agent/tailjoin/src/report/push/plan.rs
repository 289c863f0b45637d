//! What each push reporter sends, and when: pure functions of the agent's status report, so
//! every rule is table-tested without a socket.

use crate::decide::Phase;
use crate::report::status_file::StatusReport;
use serde::Serialize;

/// The version of the webhook body; `docs/schema/report-v1.json` describes it.
pub const SCHEMA_VERSION: u32 = 1;

/// The three push reporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReporterKind {
    Webhook,
    Healthchecks,
    UptimeKuma,
}

impl ReporterKind {
    /// The name in logs and metric labels (never the URL: it carries a token).
    pub fn name(self) -> &'static str {
        match self {
            ReporterKind::Webhook => "webhook",
            ReporterKind::Healthchecks => "healthchecks",
            ReporterKind::UptimeKuma => "uptime-kuma",
        }
    }
}

/// What a monitoring service needs to know about a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthClass {
    /// On the tailnet.
    Up,
    /// Not on the tailnet because something is wrong.
    Down,
    /// On the way (starting, waiting, joining): neither up nor a failure yet.
    Pending,
}

pub fn class(state: Phase) -> HealthClass {
    match state {
        Phase::Running => HealthClass::Up,
        Phase::Failed | Phase::Degraded | Phase::Retrying | Phase::Stopped => HealthClass::Down,
        Phase::Starting
        | Phase::WaitingForTailscaled
        | Phase::WaitingForBackend
        | Phase::Joining
        | Phase::AwaitingApproval
        | Phase::Resuming => HealthClass::Pending,
    }
}

/// Why a report is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Transition,
    Heartbeat,
}

/// Who this machine is, in every webhook body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    pub machine_id: String,
    pub boot_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One HTTP request to make. The URL carries the endpoint's token: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct PushRequest {
    pub method: Method,
    pub url: reqwest::Url,
    /// Content type and body.
    pub body: Option<(&'static str, String)>,
}

impl std::fmt::Debug for PushRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRequest")
            .field("method", &self.method)
            .field("url", &"<secret>")
            .field("body", &self.body)
            .finish()
    }
}

/// The webhook body, version [`SCHEMA_VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookBody<'a> {
    pub schema_version: u32,
    pub event: Trigger,
    pub hostname: &'a str,
    pub machine_id: &'a str,
    pub boot_id: &'a str,
    pub state: &'static str,
    pub previous_state: Option<&'static str>,
    pub summary: &'a str,
    pub backend_state: Option<&'a str>,
    pub tailscale_ips: &'a [String],
    pub dns_name: Option<&'a str>,
    pub tailnet: Option<&'a str>,
    pub agent_version: &'a str,
    pub tailscale_version: Option<&'a str>,
    pub time_to_join_ms: Option<u64>,
    pub joins: u32,
    pub error: Option<&'a crate::report::status_file::ErrorReport>,
    pub timestamp: &'a str,
}

pub fn webhook_body<'a>(
    report: &'a StatusReport,
    identity: &'a Identity,
    event: Trigger,
    timestamp: &'a str,
) -> WebhookBody<'a> {
    let node = report.node.as_ref();
    let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
    WebhookBody {
        schema_version: SCHEMA_VERSION,
        event,
        hostname: &identity.hostname,
        machine_id: &identity.machine_id,
        boot_id: &identity.boot_id,
        state: report.state.name(),
        previous_state: report.previous_state.map(Phase::name),
        summary: &report.summary,
        backend_state: report.backend_state.as_deref(),
        tailscale_ips: node.map(|n| n.tailscale_ips.as_slice()).unwrap_or(&[]),
        dns_name: node.and_then(|n| non_empty(&n.dns_name)),
        tailnet: node.and_then(|n| non_empty(&n.tailnet)),
        agent_version: &report.agent_version,
        tailscale_version: node.and_then(|n| non_empty(&n.tailscale_version)),
        time_to_join_ms: report.time_to_join_ms,
        joins: report.joins,
        error: report.error.as_ref(),
        timestamp,
    }
}

/// Why the machine is down, in one line (no secrets: the summary and error are redacted
/// already), at most `max` characters.
pub fn down_reason(report: &StatusReport, max: usize) -> String {
    let reason = match &report.error {
        Some(e) => format!("{}: {}: {}", report.state.name(), e.kind, e.message),
        None => format!("{}: {}", report.state.name(), report.summary),
    };
    truncate(&reason, max)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn up_text(report: &StatusReport) -> String {
    let node = report.node.as_ref();
    let ips = node.map(|n| n.tailscale_ips.join(" ")).unwrap_or_default();
    match node.map(|n| n.dns_name.trim_end_matches('.')) {
        Some(dns) if !dns.is_empty() => format!("running {ips} as {dns}"),
        _ => format!("running {ips}"),
    }
}

/// The request a reporter makes for `report`, or `None` when it has nothing to say.
/// `last`: the class this reporter last signalled (`None`: nothing yet). `timestamp` is now.
pub fn plan(
    kind: ReporterKind,
    url: &reqwest::Url,
    report: &StatusReport,
    identity: &Identity,
    trigger: Trigger,
    last: Option<HealthClass>,
    timestamp: &str,
) -> Option<PushRequest> {
    let now = class(report.state);
    match kind {
        ReporterKind::Webhook => {
            let body = webhook_body(report, identity, trigger, timestamp);
            let json = serde_json::to_string(&body).ok()?;
            Some(PushRequest {
                method: Method::Post,
                url: url.clone(),
                body: Some(("application/json", json)),
            })
        }
        ReporterKind::Healthchecks => {
            let changed = last != Some(now);
            let (suffix, text) = match (now, trigger) {
                (HealthClass::Pending, Trigger::Transition) if changed => (
                    Some("start"),
                    format!(
                        "tailjoin {} on {}: {}",
                        report.agent_version,
                        identity.hostname,
                        report.state.name()
                    ),
                ),
                (HealthClass::Up, _) if changed || trigger == Trigger::Heartbeat => {
                    (None, up_text(report))
                }
                (HealthClass::Down, _) if changed || trigger == Trigger::Heartbeat => {
                    (Some("fail"), down_reason(report, 1000))
                }
                _ => return None,
            };
            let mut url = url.clone();
            if let Some(suffix) = suffix {
                let mut segments = url.path_segments_mut().ok()?;
                segments.pop_if_empty().push(suffix);
            }
            Some(PushRequest {
                method: Method::Post,
                url,
                body: Some(("text/plain; charset=utf-8", text)),
            })
        }
        ReporterKind::UptimeKuma => {
            let changed = last != Some(now);
            if !(changed || trigger == Trigger::Heartbeat) {
                return None;
            }
            let (status, msg, ping) = match now {
                HealthClass::Pending => return None,
                HealthClass::Up => (
                    "up",
                    truncate(&up_text(report), 250),
                    report
                        .time_to_join_ms
                        .map(|ms| ms.to_string())
                        .unwrap_or_default(),
                ),
                HealthClass::Down => ("down", down_reason(report, 250), String::new()),
            };
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| !matches!(k.as_ref(), "status" | "msg" | "ping"))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut url = url.clone();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("status", status)
                .append_pair("msg", &msg)
                .append_pair("ping", &ping);
            Some(PushRequest {
                method: Method::Get,
                url,
                body: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::status_file::ErrorReport;
    use crate::state::NodeFacts;

    fn report(state: Phase) -> StatusReport {
        StatusReport {
            previous_state: Some(Phase::Joining),
            backend_state: Some("Running".into()),
            ..StatusReport::in_state(state, "the summary")
        }
    }

    fn running() -> StatusReport {
        let mut r = report(Phase::Running);
        r.node = Some(NodeFacts {
            tailscale_ips: vec!["100.64.0.7".into(), "fd7a:115c:a1e0::7".into()],
            dns_name: "node7.tail.example.".into(),
            tailnet: "tail.example".into(),
            key_expiry: None,
            tailscale_version: "1.100.0".into(),
        });
        r.time_to_join_ms = Some(3012);
        r.joins = 1;
        r
    }

    fn failed() -> StatusReport {
        let mut r = report(Phase::Failed);
        r.error = Some(ErrorReport {
            kind: "key-rejected".into(),
            message: "invalid pre auth key".into(),
        });
        r
    }

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    fn id() -> Identity {
        Identity {
            hostname: "node7".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
        }
    }

    fn hc(r: &StatusReport, trigger: Trigger, last: Option<HealthClass>) -> Option<PushRequest> {
        plan(
            ReporterKind::Healthchecks,
            &url("https://hc.example/ping/fake-uuid?rid=1"),
            r,
            &id(),
            trigger,
            last,
            "t",
        )
    }

    fn kuma(r: &StatusReport, trigger: Trigger, last: Option<HealthClass>) -> Option<PushRequest> {
        plan(
            ReporterKind::UptimeKuma,
            &url("https://kuma.example/api/push/fake-token?status=up&msg=OK&ping=&keep=1"),
            r,
            &id(),
            trigger,
            last,
            "t",
        )
    }

    #[test]
    fn classes() {
        assert_eq!(class(Phase::Running), HealthClass::Up);
        for p in [
            Phase::Failed,
            Phase::Degraded,
            Phase::Retrying,
            Phase::Stopped,
        ] {
            assert_eq!(class(p), HealthClass::Down, "{p:?}");
        }
        for p in [
            Phase::Starting,
            Phase::WaitingForTailscaled,
            Phase::WaitingForBackend,
            Phase::Joining,
            Phase::AwaitingApproval,
            Phase::Resuming,
        ] {
            assert_eq!(class(p), HealthClass::Pending, "{p:?}");
        }
    }

    #[test]
    fn webhook_body_carries_the_documented_fields() {
        let r = running();
        let who = id();
        let body = webhook_body(&r, &who, Trigger::Heartbeat, "2026-11-21T10:00:00.000Z");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["event"], "heartbeat");
        assert_eq!(v["state"], "running");
        assert_eq!(v["previous_state"], "joining");
        assert_eq!(v["tailscale_ips"][0], "100.64.0.7");
        assert_eq!(v["dns_name"], "node7.tail.example.");
        assert_eq!(v["time_to_join_ms"], 3012);
        assert_eq!(v["error"], serde_json::Value::Null);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 18, "{keys:?}");
        let f = failed();
        let v = serde_json::to_value(webhook_body(&f, &id(), Trigger::Transition, "t")).unwrap();
        assert_eq!(v["error"]["kind"], "key-rejected");
        assert_eq!(v["dns_name"], serde_json::Value::Null);
        assert_eq!(v["tailscale_ips"], serde_json::json!([]));
    }

    #[test]
    fn the_webhook_sends_every_transition_and_heartbeat() {
        for r in [report(Phase::Starting), running(), failed()] {
            for t in [Trigger::Transition, Trigger::Heartbeat] {
                let req = plan(
                    ReporterKind::Webhook,
                    &url("https://hook.example/x"),
                    &r,
                    &id(),
                    t,
                    Some(class(r.state)),
                    "t",
                )
                .unwrap();
                assert_eq!(req.method, Method::Post);
                assert_eq!(req.body.unwrap().0, "application/json");
            }
        }
    }

    #[test]
    fn healthchecks_start_success_fail_on_class_changes() {
        let start = hc(&report(Phase::Starting), Trigger::Transition, None).unwrap();
        assert_eq!(
            start.url.as_str(),
            "https://hc.example/ping/fake-uuid/start?rid=1"
        );
        assert!(start.body.unwrap().1.contains("node7: starting"));
        // Still pending: nothing new to say, and no heartbeat while pending.
        let joining = report(Phase::Joining);
        assert!(hc(&joining, Trigger::Transition, Some(HealthClass::Pending)).is_none());
        assert!(hc(&joining, Trigger::Heartbeat, Some(HealthClass::Pending)).is_none());

        let ok = hc(&running(), Trigger::Transition, Some(HealthClass::Pending)).unwrap();
        assert_eq!(ok.url.as_str(), "https://hc.example/ping/fake-uuid?rid=1");
        assert_eq!(
            ok.body.unwrap().1,
            "running 100.64.0.7 fd7a:115c:a1e0::7 as node7.tail.example"
        );
        assert!(hc(&running(), Trigger::Transition, Some(HealthClass::Up)).is_none());
        assert!(hc(&running(), Trigger::Heartbeat, Some(HealthClass::Up)).is_some());

        let fail = hc(&failed(), Trigger::Transition, Some(HealthClass::Up)).unwrap();
        assert_eq!(fail.url.path(), "/ping/fake-uuid/fail");
        assert_eq!(
            fail.body.unwrap().1,
            "failed: key-rejected: invalid pre auth key"
        );
        // A new join after a failure starts a new run.
        let again = hc(&joining, Trigger::Transition, Some(HealthClass::Down)).unwrap();
        assert!(again.url.path().ends_with("/start"));
    }

    #[test]
    fn a_trailing_slash_does_not_double() {
        let req = plan(
            ReporterKind::Healthchecks,
            &url("https://hc.example/fake-uuid/"),
            &failed(),
            &id(),
            Trigger::Transition,
            None,
            "t",
        )
        .unwrap();
        assert_eq!(req.url.as_str(), "https://hc.example/fake-uuid/fail");
    }

    #[test]
    fn uptime_kuma_replaces_status_msg_and_ping() {
        let up = kuma(&running(), Trigger::Transition, Some(HealthClass::Pending)).unwrap();
        assert_eq!(up.method, Method::Get);
        let q: Vec<(String, String)> = up.url.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            vec![
                ("keep".into(), "1".into()),
                ("status".into(), "up".into()),
                (
                    "msg".into(),
                    "running 100.64.0.7 fd7a:115c:a1e0::7 as node7.tail.example".into()
                ),
                ("ping".into(), "3012".into()),
            ]
        );
        let down = kuma(&failed(), Trigger::Heartbeat, Some(HealthClass::Down)).unwrap();
        let q: Vec<(String, String)> = down.url.query_pairs().into_owned().collect();
        assert!(q.contains(&("status".into(), "down".into())));
        assert!(q.contains(&("ping".into(), String::new())));
        assert!(kuma(&report(Phase::Joining), Trigger::Transition, None).is_none());
        assert!(kuma(&report(Phase::Joining), Trigger::Heartbeat, None).is_none());
        assert!(kuma(&running(), Trigger::Transition, Some(HealthClass::Up)).is_none());
    }

    #[test]
    fn reasons_are_bounded_and_the_url_is_never_debug_printed() {
        let mut r = failed();
        r.error.as_mut().unwrap().message = "x".repeat(5000);
        assert_eq!(down_reason(&r, 1000).chars().count(), 1000);
        let req = hc(&r, Trigger::Transition, None).unwrap();
        assert!(!format!("{req:?}").contains("fake-uuid"));
    }
}
