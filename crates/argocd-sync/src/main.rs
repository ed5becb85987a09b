//! argocd-sync: polls Argo CD and publishes fleet state and health-change intents.

use std::process::ExitCode;

fn main() -> ExitCode {
    sre_runtime::run::<argocd_sync::Config, _, _>(argocd_sync::SPEC, argocd_sync::start)
}
