//! Command-line flags shared by every adapter.

use std::path::PathBuf;

/// Flags of every adapter binary.
#[derive(Debug, Clone, clap::Parser)]
pub struct Cli {
    /// Configuration file (YAML). Without it the service runs on local defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration and exit: 0 when valid, 2 with the key path and the reason
    /// when not.
    #[arg(long)]
    pub check_config: bool,
    /// With `--check-config`: also check against the vendors themselves, with the
    /// configured secrets (e.g. that Jira's create screens take the configured fields), as
    /// a team runs it in CI against its real Jira. Exit 2 naming each problem.
    #[arg(long, requires = "check_config")]
    pub online: bool,
}
