//! paging-sink: pages the on-call once, at the right time.

use std::process::ExitCode;

fn main() -> ExitCode {
    sre_runtime::run::<paging_sink::Config, _, _>(paging_sink::SPEC, paging_sink::start)
}
