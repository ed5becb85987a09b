//! The lists several places need, kept once: the adapters, the bus users of
//! `deploy/nats/sre.conf`, and the demo's ports. Plain constants with no dependencies,
//! so `xtask` compiles this same file (`#[path]`) instead of keeping its own copy.

/// The adapters, each its own binary, chart, bus user and example configuration, in the
/// order of their default ports (8080…).
pub const ADAPTERS: [&str; 4] = ["alertmanager-ingress", "argocd-sync", "ticketing-sink", "paging-sink"];

/// The bus user of the SRE domain (the stand-in, in tests and the demo).
pub const DOMAIN_USER: &str = "sre-domain";

/// The bus users of `deploy/nats/sre.conf`: the domain's, then one per adapter.
pub const BUS_USERS: [&str; 5] = [DOMAIN_USER, ADAPTERS[0], ADAPTERS[1], ADAPTERS[2], ADAPTERS[3]];

/// The variable `deploy/nats/sre.conf` reads a bus user's password from
/// (`argocd-sync` → `ARGOCD_SYNC_PASSWORD`).
pub fn password_var(user: &str) -> String {
    format!("{}_PASSWORD", user.to_ascii_uppercase().replace('-', "_"))
}

/// The demo's ports on 127.0.0.1: the adapters from `ADAPTER_PORTS` on, each stand-in on
/// its own.
pub mod demo {
    /// The first adapter's port; the others follow in [`super::ADAPTERS`]' order.
    pub const ADAPTER_PORTS: u16 = 8080;
    /// The test Argo CD.
    pub const ARGOCD: u16 = 8089;
    /// The test Jira (Data Center).
    pub const JIRA: u16 = 8090;
    /// The test GitHub.
    pub const GITHUB: u16 = 8091;
    /// The test PagerDuty.
    pub const PAGERDUTY: u16 = 8092;
    /// The test Opsgenie (and JSM).
    pub const OPSGENIE: u16 = 8093;
    /// The domain stand-in's control endpoint.
    pub const DOMAIN: u16 = 8094;
    /// The OTLP/gRPC trace receiver the adapters export to (a collector's usual port).
    pub const OTLP: u16 = 4317;

    /// The demo port of `adapter`.
    pub fn adapter_port(adapter: &str) -> Option<u16> {
        let i = super::ADAPTERS.iter().position(|a| *a == adapter)?;
        u16::try_from(i).ok().map(|i| ADAPTER_PORTS + i)
    }
}
