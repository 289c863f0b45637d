//! The agent's status file (`<state_dir>/status.json`): what `tailjoin status` reads. Written
//! atomically (temporary file + rename) so a reader never sees half a document.

use crate::decide::Phase;
use crate::state::NodeFacts;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "status.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent_version: String,
    pub pid: u32,
    pub started_at: String,
    pub state: Phase,
    pub previous_state: Option<Phase>,
    /// The same one-line summary as systemd's status line.
    pub summary: String,
    pub since: String,
    /// tailscaled's BackendState as last seen.
    pub backend_state: Option<String>,
    pub login_server: Option<String>,
    /// Where the key comes from (a description, never the key).
    pub key_source: String,
    pub node: Option<NodeFacts>,
    /// From the agent's start to the first Running.
    pub time_to_join_ms: Option<u64>,
    /// How many times the node reached Running since the agent started.
    pub joins: u32,
    pub error: Option<ErrorReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub kind: String,
    pub message: String,
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Writes `report` to `<state_dir>/status.json` atomically, mode 0644: it holds no secret and
/// `tailjoin status` must work for unprivileged users, even under the unit's UMask=0077.
pub fn write(state_dir: &Path, report: &StatusReport) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let mut text = serde_json::to_vec_pretty(report)?;
    text.push(b'\n');
    crate::fs_write::write_atomic(&path_in(state_dir), &text, 0o644)
}

pub fn read(state_dir: &Path) -> Result<StatusReport, String> {
    let path = path_in(state_dir);
    let text = crate::fs_read::read_config(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} does not exist: the agent has not run on this machine since boot (or uses another state_dir)",
                path.display()
            )
        } else {
            format!("cannot read {}: {e}", path.display())
        }
    })?;
    parse(&text).map_err(|e| format!("{} is not a tailjoin status file: {e}", path.display()))
}

/// A status file's text as a report (what `tailjoin status` and the fuzzer read).
pub fn parse(text: &str) -> Result<StatusReport, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
impl StatusReport {
    /// A report in `state` with nothing else known yet, for tests.
    pub fn in_state(state: Phase, summary: &str) -> Self {
        StatusReport {
            agent_version: "0.1.0".into(),
            pid: 1,
            started_at: String::new(),
            state,
            previous_state: None,
            summary: summary.into(),
            since: String::new(),
            backend_state: None,
            login_server: None,
            key_source: "file /k".into(),
            node: None,
            time_to_join_ms: None,
            joins: 0,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> StatusReport {
        StatusReport {
            agent_version: "0.1.0".into(),
            pid: 42,
            started_at: "2026-11-21T19:00:00.000Z".into(),
            state: Phase::Running,
            previous_state: Some(Phase::Joining),
            summary: "Running".into(),
            since: "2026-11-21T19:00:01.000Z".into(),
            backend_state: Some("Running".into()),
            login_server: None,
            key_source: "file /k".into(),
            node: Some(NodeFacts::default()),
            time_to_join_ms: Some(1000),
            joins: 1,
            error: None,
        }
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let d = tempfile::tempdir().unwrap();
        let mut r = sample();
        write(d.path(), &r).unwrap();
        r.joins = 2;
        write(d.path(), &r).unwrap();
        assert_eq!(read(d.path()).unwrap(), r);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn a_missing_file_is_explained() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(d.path()).unwrap_err().contains("has not run"));
    }
}
