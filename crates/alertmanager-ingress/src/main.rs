//! alertmanager-ingress: Alertmanager webhooks to domain intents, durable and deduplicated.

use std::process::ExitCode;

fn main() -> ExitCode {
    sre_runtime::run::<alertmanager_ingress::Config, _, _>(alertmanager_ingress::SPEC, alertmanager_ingress::start)
}
