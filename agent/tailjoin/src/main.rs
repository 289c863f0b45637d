use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_tss2_log();
    ExitCode::from(tailjoin::main_with(tailjoin::cli::Cli::parse()))
}

/// tpm2-tss writes its own ERROR/WARNING lines to stderr (the journal) unless `TSS2_LOG` says
/// otherwise, even for what the agent handles (no TPM, a refused challenge). The agent reports
/// every TPM failure itself, with what to do, so the library's lines are off unless `TSS2_LOG`
/// is set (`TSS2_LOG=all+ERROR` brings them back).
fn quiet_tss2_log() {
    if std::env::var_os("TSS2_LOG").is_none() {
        // SAFETY: the first thing main does, before any other thread exists.
        unsafe { std::env::set_var("TSS2_LOG", "all+NONE") };
    }
}
