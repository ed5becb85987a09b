//! ticketing-sink: one Jira or GitHub ticket per incident.

use std::process::ExitCode;

fn main() -> ExitCode {
    sre_runtime::run::<ticketing_sink::Config, _, _>(ticketing_sink::SPEC, ticketing_sink::start)
}
