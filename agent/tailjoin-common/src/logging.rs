//! Logging through `tracing`: to journald with structured fields when stderr is connected to
//! the journal (systemd says so in `$JOURNAL_STREAM`), else human-readable to stderr.

use crate::config::LogLevel;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// `$JOURNAL_STREAM` is `DEVICE:INODE` of the journal stream given as stdout/stderr; it only
/// counts if it is still what stderr is (a child may have redirected it).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Installs the global subscriber. Returns where logs go, for the first log line.
pub fn init(level: LogLevel) -> &'static str {
    // The agent's own events at the configured level; libraries (HTTP, D-Bus) only warnings.
    let filter = Targets::new()
        .with_target("tailjoin", level_filter(level))
        .with_default(LevelFilter::WARN);
    if stderr_is_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("tailjoin".to_owned());
            tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .init();
            return "journald";
        }
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
    "stderr"
}
