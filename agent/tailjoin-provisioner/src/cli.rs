//! `tailjoin-provisioner`'s command line: serve, check the configuration, or manage enrolment.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tailjoin-provisioner",
    version,
    about = "Hands allowed netbooting machines their boot and a freshly minted single-use tailnet key."
)]
pub struct Cli {
    /// The provisioner's JSON configuration file.
    #[arg(long, env = "TAILJOIN_PROVISION_CONFIG")]
    pub config: PathBuf,
    /// Validate the configuration and exit (0 valid, 2 invalid) without serving.
    #[arg(long)]
    pub check: bool,
    /// Manage netbooting machines instead of serving.
    #[command(subcommand)]
    pub action: Option<ProvisionAction>,
}

/// Enrolment of netbooting machines (the configuration's `netboot` section).
#[derive(Debug, Clone, Subcommand)]
pub enum ProvisionAction {
    /// List the MACs that asked to boot and wait for approval.
    Pending {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Approve a MAC: from its next boot request on, it boots unattended. With a TPM, this binds
    /// the EK the machine showed (`pending` lists it), or the one given with --ek.
    Approve {
        /// The machine's MAC address, e.g. 52:54:00:12:34:56.
        mac: String,
        /// Bind this EK (sha256:<64 hex>, as `pending` shows it) instead of the one the machine
        /// showed: enrolment before the first boot, from the machine's own TPM tools.
        #[arg(long, value_name = "FINGERPRINT")]
        ek: Option<String>,
    },
    /// Withdraw a MAC's approval (its unspent boot tokens stop working too).
    Revoke {
        /// The machine's MAC address, e.g. 52:54:00:12:34:56.
        mac: String,
    },
}
