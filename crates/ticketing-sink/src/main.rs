//! ticketing-sink: one Jira or GitHub ticket per incident.

use std::process::ExitCode;

fn main() -> ExitCode {
    sre_runtime::run_with_online::<ticketing_sink::Config, _, _, _>(
        ticketing_sink::SPEC,
        ticketing_sink::start,
        ticketing_sink::online_check,
    )
}
