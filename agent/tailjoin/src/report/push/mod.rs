//! Push reporters: a webhook, a healthchecks.io-compatible ping URL and an Uptime Kuma push URL.
//!
//! Each configured reporter is its own task, fed through a bounded queue that the agent never
//! waits on: a down or slow endpoint cannot delay joining. A report is retried with backoff a
//! bounded number of times; heartbeats repeat the current state. The URLs carry tokens, so
//! they are read from credentials or root-only files and never logged: logs name the reporter.
//! What to send is decided in [`plan`], without I/O.

pub mod plan;

use crate::config::{PushSettings, TokenSource};
use crate::http_client;
use crate::report::listener::Shared;
use crate::report::status_file::StatusReport;
use crate::time;
use backon::Retryable;
use plan::{HealthClass, Identity, Method, PushRequest, ReporterKind, Trigger};
use secrecy::{ExposeSecret, SecretString};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Reports waiting for a reporter; beyond this the oldest news is already stale.
const QUEUE: usize = 64;

/// Outcomes counted per reporter in `tailjoin_push_reports_total`.
pub const OUTCOMES: [&str; 3] = ["sent", "failed", "dropped"];

/// What a reporter has not delivered yet, oldest first, as labels ("transition to joining",
/// "heartbeat (running)"): what the agent names in its log when it exits without them.
#[derive(Clone, Default)]
struct Backlog(Arc<Mutex<VecDeque<String>>>);

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        // A poisoned lock still holds labels worth reporting.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The report being delivered now is done (delivered, failed or not needed).
    fn done(&self) {
        self.lock().pop_front();
    }

    fn labels(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

/// The agent's side of the reporters: where to put reports. Never blocks.
#[derive(Default)]
pub struct PushQueues {
    queues: Vec<(ReporterKind, mpsc::Sender<Arc<StatusReport>>, Backlog)>,
    shared: Option<Shared>,
}

impl PushQueues {
    /// Offers `report` to every reporter; a full queue drops it (counted as `dropped`).
    pub fn offer(&self, report: &StatusReport) {
        let report = Arc::new(report.clone());
        for (kind, queue, backlog) in &self.queues {
            // Held across the send, so that the reporter never takes a report before its label.
            let mut waiting = backlog.lock();
            if queue.try_send(report.clone()).is_ok() {
                waiting.push_back(format!("transition to {}", report.state.name()));
            } else if let Some(shared) = &self.shared {
                count(shared, *kind, "dropped");
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// The running reporter tasks; [`PushTasks::flush`] waits for them once the queues are closed.
#[derive(Default)]
pub struct PushTasks {
    tasks: Vec<(ReporterKind, JoinHandle<()>, Backlog)>,
    shared: Option<Shared>,
}

impl PushTasks {
    /// Waits (at most `limit`) until every reporter has delivered what was queued, then stops
    /// the reporters; what one had not delivered is named in the log (which reports, never the
    /// URL) and counted as `dropped`. Call after the [`PushQueues`] are dropped.
    pub async fn flush(mut self, limit: Duration) {
        if self.tasks.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(self.tasks.iter_mut().map(|(_, task, _)| task));
        if tokio::time::timeout(limit, all).await.is_ok() {
            return;
        }
        for (kind, task, backlog) in self.tasks {
            task.abort();
            let undelivered = backlog.labels();
            if undelivered.is_empty() {
                continue;
            }
            if let Some(shared) = &self.shared {
                count_by(shared, kind, "dropped", undelivered.len() as u64);
            }
            tracing::warn!(
                tailjoin_reporter = kind.name(),
                "{} reporter: exiting without {} undelivered report{} after waiting {:.1}s \
                 (health.flush_timeout_secs): {}",
                kind.name(),
                undelivered.len(),
                if undelivered.len() == 1 { "" } else { "s" },
                limit.as_secs_f64(),
                undelivered.join(", ")
            );
        }
    }
}

/// Starts a task per configured reporter. A reporter whose URL cannot be read or is not
/// acceptable is disabled with an error in the log; the others still start. Must run inside
/// the Tokio runtime.
pub fn start(
    settings: &PushSettings,
    credentials_dir: Option<&Path>,
    identity: Identity,
    shared: Shared,
) -> (PushQueues, PushTasks) {
    let mut queues = PushQueues {
        queues: Vec::new(),
        shared: Some(shared.clone()),
    };
    let mut tasks = PushTasks {
        tasks: Vec::new(),
        shared: Some(shared.clone()),
    };
    let wanted: Vec<(ReporterKind, &TokenSource)> = [
        (
            ReporterKind::Webhook,
            settings.webhook.as_ref().map(|w| &w.url),
        ),
        (ReporterKind::Healthchecks, settings.healthchecks.as_ref()),
        (ReporterKind::UptimeKuma, settings.uptime_kuma.as_ref()),
    ]
    .into_iter()
    .filter_map(|(kind, src)| src.map(|s| (kind, s)))
    .collect();
    if wanted.is_empty() {
        return (queues, tasks);
    }
    let client = match http_client::build(settings.timeout, settings.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("push reporters disabled: {e}");
            return (queues, tasks);
        }
    };
    for (kind, src) in wanted {
        let endpoint = match endpoint(kind, src, settings, credentials_dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("{} reporter disabled: {e}", kind.name());
                continue;
            }
        };
        for outcome in OUTCOMES {
            count_by(&shared, kind, outcome, 0);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let backlog = Backlog::default();
        let worker = Worker {
            backlog: backlog.clone(),
            kind,
            endpoint,
            client: client.clone(),
            identity: identity.clone(),
            attempts: settings.attempts,
            shared: shared.clone(),
            last: None,
        };
        tasks.tasks.push((
            kind,
            tokio::spawn(worker.run(rx, settings.heartbeat)),
            backlog.clone(),
        ));
        queues.queues.push((kind, tx, backlog));
        tracing::info!(
            "{} reporter on{}",
            kind.name(),
            settings
                .heartbeat
                .map(|h| format!(", heartbeat every {}s", h.as_secs()))
                .unwrap_or_default()
        );
    }
    (queues, tasks)
}

struct Endpoint {
    url: reqwest::Url,
    bearer: Option<SecretString>,
}

/// Reads the reporter's URL (and the webhook's token) and checks it.
fn endpoint(
    kind: ReporterKind,
    src: &TokenSource,
    settings: &PushSettings,
    credentials_dir: Option<&Path>,
) -> Result<Endpoint, String> {
    let text =
        crate::secrets::read_token(src, credentials_dir, &format!("the {} URL", kind.name()))
            .map_err(|e| e.to_string())?;
    // The parse error names no part of the URL.
    let url = reqwest::Url::parse(text.expose_secret().trim())
        .map_err(|e| format!("its URL is not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if settings.allow_plain_http => {}
        "http" => {
            return Err(
                "its URL is http://, so its token would cross the network in clear text; use \
                 https:// or set health.allow_plain_http"
                    .into(),
            );
        }
        other => return Err(format!("its URL has scheme {other:?}; use https://")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("its URL has no host".into());
    }
    let bearer = match (kind, &settings.webhook) {
        (ReporterKind::Webhook, Some(w)) => w
            .bearer_token
            .as_ref()
            .map(|t| crate::secrets::read_token(t, credentials_dir, "the webhook bearer token"))
            .transpose()
            .map_err(|e| e.to_string())?,
        _ => None,
    };
    Ok(Endpoint { url, bearer })
}

fn count(shared: &Shared, kind: ReporterKind, outcome: &str) {
    count_by(shared, kind, outcome, 1);
}

fn count_by(shared: &Shared, kind: ReporterKind, outcome: &str, n: u64) {
    if let Ok(mut guard) = shared.lock() {
        *guard
            .1
            .push
            .entry((kind.name().to_owned(), outcome.to_owned()))
            .or_default() += n;
    }
}

struct Worker {
    kind: ReporterKind,
    endpoint: Endpoint,
    client: reqwest::Client,
    identity: Identity,
    attempts: u32,
    shared: Shared,
    /// The class this reporter last signalled.
    last: Option<HealthClass>,
    /// What is queued or being sent, for the log if the agent exits first.
    backlog: Backlog,
}

/// Why one try failed, and whether another could succeed.
struct Failure {
    reason: String,
    transient: bool,
}

impl Worker {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Arc<StatusReport>>,
        heartbeat: Option<Duration>,
    ) {
        let mut latest: Option<Arc<StatusReport>> = None;
        let mut ticks = heartbeat.map(|every| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            tokio::select! {
                // A queued transition goes before a heartbeat that would repeat an older state.
                biased;
                next = queue.recv() => {
                    // `None` only once the agent is gone and everything queued was taken.
                    let Some(report) = next else { break };
                    self.report(&report, Trigger::Transition).await;
                    self.backlog.done();
                    latest = Some(report);
                }
                _ = tick(&mut ticks) => {
                    if let Some(report) = latest.clone() {
                        self.backlog
                            .lock()
                            .push_front(format!("heartbeat ({})", report.state.name()));
                        self.report(&report, Trigger::Heartbeat).await;
                        self.backlog.done();
                    }
                }
            }
        }
    }

    async fn report(&mut self, report: &StatusReport, trigger: Trigger) {
        // A transition is stamped when it happened, however long it waited behind retries.
        let timestamp = match trigger {
            Trigger::Transition => report.since.clone(),
            Trigger::Heartbeat => time::rfc3339(SystemTime::now()),
        };
        let planned = plan::plan(
            self.kind,
            &self.endpoint.url,
            report,
            &self.identity,
            trigger,
            self.last,
            &timestamp,
        );
        self.last = Some(plan::class(report.state));
        let Some(request) = planned else { return };
        let outcome = self.deliver(&request).await;
        count(&self.shared, self.kind, outcome);
    }

    /// Sends `request`, retrying transient failures with backoff; returns the outcome label.
    async fn deliver(&self, request: &PushRequest) -> &'static str {
        let name = self.kind.name();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .with_max_times(self.attempts.saturating_sub(1) as usize);
        let result = (|| async {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.send_once(request).await
        })
        .retry(backoff)
        .when(|f: &Failure| f.transient)
        .notify(|f: &Failure, delay| {
            tracing::warn!(
                tailjoin_reporter = name,
                "{name} report failed ({}), retrying in {:.1}s",
                f.reason,
                delay.as_secs_f64()
            );
        })
        .await;
        let tries = tries.load(std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(()) if tries > 1 => {
                tracing::info!(
                    tailjoin_reporter = name,
                    "{name} report delivered after {tries} attempts"
                );
                "sent"
            }
            Ok(()) => {
                tracing::debug!(tailjoin_reporter = name, "{name} report delivered");
                "sent"
            }
            Err(f) if f.transient => {
                tracing::error!(
                    tailjoin_reporter = name,
                    "{name} report not delivered after {tries} attempts: {}",
                    f.reason
                );
                "failed"
            }
            Err(f) => {
                tracing::error!(
                    tailjoin_reporter = name,
                    "{name} report refused: {}; not retried",
                    f.reason
                );
                "failed"
            }
        }
    }

    async fn send_once(&self, request: &PushRequest) -> Result<(), Failure> {
        let mut builder = match request.method {
            Method::Get => self.client.get(request.url.clone()),
            Method::Post => self.client.post(request.url.clone()),
        };
        if let Some((content_type, body)) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        if let Some(token) = &self.endpoint.bearer {
            builder = builder.bearer_auth(token.expose_secret());
        }
        // Only the status matters. The body is never read: dropping the response unread closes
        // the connection, so a hostile endpoint cannot make the agent take in a large answer.
        let response = builder.send().await.map_err(|e| {
            let failure = http_client::describe_transport_error(e);
            Failure {
                reason: failure.reason,
                transient: !failure.tls,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        let hint = match status.as_u16() {
            401 | 403 => "; check the token in the URL or the bearer token",
            404 => "; check the URL",
            _ => "",
        };
        Err(Failure {
            reason: format!("HTTP {status}{hint}"),
            transient,
        })
    }
}

/// The next heartbeat, or never.
async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_names_what_is_queued_and_in_flight_in_order() {
        let b = Backlog::default();
        b.lock().push_back("transition to starting".into());
        b.lock().push_back("transition to joining".into());
        // The reporter takes the first transition, delivers it, then a heartbeat goes first.
        b.done();
        b.lock().push_front("heartbeat (starting)".into());
        assert_eq!(
            b.labels(),
            ["heartbeat (starting)", "transition to joining"]
        );
        b.done();
        b.done();
        b.done();
        assert!(b.labels().is_empty());
    }
}
