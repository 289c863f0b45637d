use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(tailjoin_provisioner::main_with(
        tailjoin_provisioner::cli::Cli::parse(),
    ))
}
