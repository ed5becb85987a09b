//! The service's metrics (`argocd_sync_*`). The `server` label is a configured URL, so its
//! values are bounded by the configuration.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::observe::Health;

/// How a poll ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PollOutcome {
    /// Listed, published and saved.
    Ok,
    /// Argo CD refused the token (401/403): not retried until the next poll.
    Unauthorized,
    /// Argo CD did not answer usefully (5xx, timeout, refused, open breaker).
    Unreachable,
    /// The intents or the state could not be stored on the bus; the next poll redoes it.
    BusUnavailable,
    /// Another replica holds the lease.
    Standby,
}

/// Change label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ChangeLabel {
    /// A new application.
    Appeared,
    /// Health or sync changed.
    Changed,
    /// No longer listed.
    Vanished,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Server {
    server: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Poll {
    server: String,
    outcome: PollOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Change {
    server: String,
    change: ChangeLabel,
}

/// How the detail of a changed application was read.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum DetailVia {
    /// `GET /api/v1/applications/{name}`, one per changed application.
    Get,
    /// One whole list, when too many changed for single requests.
    List,
    /// It came in the list: the server ignored `fields`.
    Listed,
    /// Not read (the request failed): the change waits for the next cycle.
    Deferred,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Detail {
    server: String,
    via: DetailVia,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Fleet {
    server: String,
    environment: String,
    health: Health,
}

impl EncodeLabelValue for Health {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        // Argo CD's own spelling (`status.health.status`).
        encoder.write_str(match self {
            Health::Healthy => "Healthy",
            Health::Progressing => "Progressing",
            Health::Degraded => "Degraded",
            Health::Suspended => "Suspended",
            Health::Missing => "Missing",
            Health::Unknown => "Unknown",
        })
    }
}

/// The metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    polls: Family<Poll, Counter>,
    poll_seconds: Family<Server, Histogram>,
    applications: Family<Server, Gauge>,
    list_bytes: Family<Server, Counter>,
    health_checks: Family<Change, Counter>,
    leader: Family<Server, Gauge>,
    fleet: Family<Fleet, Gauge>,
    details: Family<Detail, Counter>,
    fields_ignored: Family<Server, Counter>,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self {
            polls: Family::default(),
            poll_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14))),
            applications: Family::default(),
            list_bytes: Family::default(),
            health_checks: Family::default(),
            leader: Family::default(),
            fleet: Family::default(),
            details: Family::default(),
            fields_ignored: Family::default(),
        }
    }
}

impl SyncMetrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register("argocd_sync_polls", "Polls of an Argo CD server, by outcome", self.polls.clone());
        r.register(
            "argocd_sync_poll_seconds",
            "Time of one poll cycle: list, plan, publish, save",
            self.poll_seconds.clone(),
        );
        r.register("argocd_sync_applications", "Applications in the last list", self.applications.clone());
        r.register("argocd_sync_list_bytes", "Bytes of application lists read", self.list_bytes.clone());
        r.register(
            "argocd_sync_health_checks",
            "Health-check intents published, by change",
            self.health_checks.clone(),
        );
        r.register("argocd_sync_leader", "1 while this replica holds the server's lease", self.leader.clone());
        r.register(
            "argocd_sync_fleet_applications",
            "Applications per environment and health at the last cycle this replica ran",
            self.fleet.clone(),
        );
        r.register(
            "argocd_sync_change_details",
            "Details (revision, reconciledAt, uid) of changed applications, by how they were read",
            self.details.clone(),
        );
        r.register(
            "argocd_sync_list_fields_ignored",
            "Lists that came back whole although only the needed fields were asked for",
            self.fields_ignored.clone(),
        );
    }

    /// Creates `server`'s series at 0 (every poll outcome, leadership, the configured
    /// environments' fleet), so dashboards and alert rules see them before the first poll.
    pub fn prime(&self, server: &str, environments: &[String]) {
        use PollOutcome::{BusUnavailable, Ok, Standby, Unauthorized, Unreachable};
        for outcome in [Ok, Unauthorized, Unreachable, BusUnavailable, Standby] {
            let _ = self.polls.get_or_create(&Poll { server: server.to_owned(), outcome });
        }
        let s = Server { server: server.to_owned() };
        let _ = self.leader.get_or_create(&s);
        let _ = self.applications.get_or_create(&s);
        let _ = self.list_bytes.get_or_create(&s);
        let _ = self.poll_seconds.get_or_create(&s);
        let _ = self.fields_ignored.get_or_create(&s);
        for via in [DetailVia::Get, DetailVia::List, DetailVia::Listed, DetailVia::Deferred] {
            let _ = self.details.get_or_create(&Detail { server: server.to_owned(), via });
        }
        for change in [ChangeLabel::Appeared, ChangeLabel::Changed, ChangeLabel::Vanished] {
            let _ = self.health_checks.get_or_create(&Change { server: server.to_owned(), change });
        }
        for environment in environments {
            self.fleet(server, environment, &sre_contracts::domain::v1::StateCount::default());
        }
    }

    /// Counts a poll.
    pub fn poll(&self, server: &str, outcome: PollOutcome, seconds: Option<f64>) {
        self.polls.get_or_create(&Poll { server: server.to_owned(), outcome }).inc();
        if let Some(s) = seconds {
            self.poll_seconds.get_or_create(&Server { server: server.to_owned() }).observe(s);
        }
    }

    /// Records a list.
    pub fn listed(&self, server: &str, applications: usize, bytes: u64) {
        let s = Server { server: server.to_owned() };
        self.applications.get_or_create(&s).set(applications as i64);
        self.list_bytes.get_or_create(&s).inc_by(bytes);
    }

    /// Records an environment's applications by health (environments are configured, or
    /// the few the applications name; health is Argo CD's closed set).
    pub fn fleet(&self, server: &str, environment: &str, by: &sre_contracts::domain::v1::StateCount) {
        for (health, n) in [
            (Health::Healthy, by.healthy),
            (Health::Progressing, by.progressing),
            (Health::Degraded, by.degraded),
            (Health::Suspended, by.suspended),
            (Health::Missing, by.missing),
            (Health::Unknown, by.unknown),
        ] {
            let labels = Fleet { server: server.to_owned(), environment: environment.to_owned(), health };
            self.fleet.get_or_create(&labels).set(i64::from(n));
        }
    }

    /// Counts `n` details read `via`.
    pub fn details(&self, server: &str, via: DetailVia, n: usize) {
        self.details.get_or_create(&Detail { server: server.to_owned(), via }).inc_by(n as u64);
    }

    /// Counts a list that came back whole although `fields` was given.
    pub fn fields_ignored(&self, server: &str) {
        self.fields_ignored.get_or_create(&Server { server: server.to_owned() }).inc();
    }

    /// Counts a published health check.
    pub fn health_check(&self, server: &str, change: ChangeLabel) {
        self.health_checks.get_or_create(&Change { server: server.to_owned(), change }).inc();
    }

    /// Sets leadership.
    pub fn set_leader(&self, server: &str, leader: bool) {
        self.leader.get_or_create(&Server { server: server.to_owned() }).set(i64::from(leader));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_health_is_labelled_in_argo_cds_spelling() {
        let m = SyncMetrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.prime("https://argocd.example.com", &["staging".to_owned()]);
        let by = sre_contracts::domain::v1::StateCount { healthy: 7, degraded: 2, ..Default::default() };
        m.fleet("https://argocd.example.com", "production", &by);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encodes");
        let line = |env: &str, health: &str, n: u32| {
            format!(
                "argocd_sync_fleet_applications{{server=\"https://argocd.example.com\",environment=\"{env}\",health=\"{health}\"}} {n}\n"
            )
        };
        assert!(text.contains(&line("production", "Degraded", 2)), "{text}");
        assert!(text.contains(&line("production", "Healthy", 7)), "{text}");
        // A configured environment is exported at 0 before its first cycle.
        for health in ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"] {
            assert!(text.contains(&line("staging", health, 0)), "{health}: {text}");
        }
    }
}
