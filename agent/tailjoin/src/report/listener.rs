//! The optional health listener: `GET /healthz` and `GET /metrics` over plain HTTP on a
//! configured address (127.0.0.1, or the tailnet address for a scraper on the tailnet). Off by
//! default; a failure here is logged and never stops the agent from joining.

use super::metrics::{Counters, healthz, render};
use super::status_file::StatusReport;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the listener serves, updated by the reporter on every transition.
pub type Shared = Arc<Mutex<(StatusReport, Counters)>>;

fn answer(shared: &Shared, method: &Method, path: &str) -> (u16, &'static str, String) {
    let Ok(guard) = shared.lock() else {
        return (500, "text/plain", "internal error\n".into());
    };
    let (report, counters) = &*guard;
    match (method, path) {
        (&Method::GET, "/healthz") => {
            let (code, body) = healthz(report);
            (code, "text/plain; charset=utf-8", body + "\n")
        }
        (&Method::GET, "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render(report, counters),
        ),
        (_, "/healthz" | "/metrics") => (405, "text/plain", "use GET\n".into()),
        _ => (
            404,
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
    }
}

/// Binds `addr` and serves until the process ends. Returns the bind error, if any.
pub async fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "health listener on http://{}/healthz and /metrics",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("health listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (code, ctype, body) = answer(&shared, req.method(), req.uri().path());
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if let Ok(v) = ctype.parse() {
                    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                }
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5));
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Phase;

    #[test]
    fn routes_answer_with_the_right_codes() {
        let report = StatusReport {
            agent_version: "0.1.0".into(),
            pid: 1,
            started_at: String::new(),
            state: Phase::Joining,
            previous_state: None,
            summary: "joining".into(),
            since: String::new(),
            backend_state: None,
            login_server: None,
            key_source: String::new(),
            node: None,
            time_to_join_ms: None,
            joins: 0,
            error: None,
        };
        let shared: Shared = Arc::new(Mutex::new((report, Counters::default())));
        assert_eq!(answer(&shared, &Method::GET, "/healthz").0, 503);
        let (code, ctype, body) = answer(&shared, &Method::GET, "/metrics");
        assert_eq!(code, 200);
        assert!(ctype.contains("0.0.4") && body.contains("tailjoin_state{state=\"joining\"} 1"));
        assert_eq!(answer(&shared, &Method::POST, "/metrics").0, 405);
        assert_eq!(answer(&shared, &Method::GET, "/").0, 404);
    }
}
