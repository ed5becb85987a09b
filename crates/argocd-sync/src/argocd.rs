//! Argo CD's application list (`GET /api/v1/applications`), parsed lean: only the fields
//! this service uses are kept; everything else (resources, history, managed fields) is
//! skipped by the parser without being built. The list has no paging and can be large.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::core::{AppStatus, Health, Sync};

/// The list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApplicationList {
    /// The applications; Argo CD writes `"items": null` for an empty list.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub items: Vec<Application>,
}

/// One application, as much of it as is used.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Application {
    /// Name, namespace, labels.
    pub metadata: Metadata,
    /// Project and destination.
    #[serde(default)]
    pub spec: Spec,
    /// Health, sync, reconciliation.
    #[serde(default)]
    pub status: Status,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Metadata {
    /// Name.
    pub name: String,
    /// Namespace (where the Application resource lives).
    #[serde(default)]
    pub namespace: String,
    /// Labels.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `spec`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Spec {
    /// Argo CD project.
    #[serde(default)]
    pub project: String,
    /// Where it deploys.
    #[serde(default)]
    pub destination: Destination,
}

/// `spec.destination`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Destination {
    /// Cluster API URL.
    #[serde(default)]
    pub server: String,
    /// Cluster name.
    #[serde(default)]
    pub name: String,
    /// Target namespace.
    #[serde(default)]
    pub namespace: String,
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `status.health`.
    #[serde(default)]
    pub health: HealthStatus,
    /// `status.sync`.
    #[serde(default)]
    pub sync: SyncStatus,
    /// When Argo CD last reconciled it (RFC 3339), when known.
    #[serde(default)]
    pub reconciled_at: Option<String>,
}

/// `status.health`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct HealthStatus {
    /// `Healthy`, `Progressing`, …
    #[serde(default)]
    pub status: String,
    /// Why, when not healthy.
    #[serde(default)]
    pub message: String,
}

/// `status.sync`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct SyncStatus {
    /// `Synced`, `OutOfSync`, `Unknown`.
    #[serde(default)]
    pub status: String,
    /// The revision it is synced to.
    #[serde(default)]
    pub revision: String,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Application {
    /// `<namespace>/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// Health and sync as the core sees them (missing values read as unknown).
    pub fn app_status(&self) -> AppStatus {
        AppStatus { health: Health::parse(&self.status.health.status), sync: Sync::parse(&self.status.sync.status) }
    }
}

/// The environment of `app` under `rule`, when it has one (an empty value is none).
pub fn environment_of(app: &Application, from: crate::config::EnvironmentFrom, label: &str) -> Option<String> {
    use crate::config::EnvironmentFrom;
    let value = match from {
        EnvironmentFrom::Label => app.metadata.labels.get(label).cloned().unwrap_or_default(),
        EnvironmentFrom::DestinationName => app.spec.destination.name.clone(),
        EnvironmentFrom::DestinationNamespace => app.spec.destination.namespace.clone(),
        EnvironmentFrom::Project => app.spec.project.clone(),
    };
    (!value.is_empty()).then_some(value)
}

/// Parses a list body.
pub fn parse_list(body: &[u8]) -> Result<ApplicationList, serde_json::Error> {
    serde_json::from_slice(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = include_str!("../../../tests/fixtures/argocd/application-list.one-item.from-fixture.json");
    const FILTERED: &str = include_str!("../../../tests/fixtures/argocd/application-list.fields-filtered.derived.json");

    #[test]
    fn the_fixture_list_parses_to_what_is_used() {
        let list = parse_list(ONE.as_bytes()).expect("parses");
        assert_eq!(list.items.len(), 1);
        let app = &list.items[0];
        assert_eq!(app.metadata.labels["project"], "sre");
        assert_eq!(app.spec.project, "sre");
        assert_eq!(app.spec.destination.name, "gke-alpha-01-europe-west1");
        assert_eq!(app.app_status(), AppStatus { health: Health::Healthy, sync: Sync::Synced });
        assert!(app.status.reconciled_at.is_some());
        assert!(app.key().ends_with(&format!("/{}", app.metadata.name)));
    }

    #[test]
    fn a_fields_filtered_list_parses() {
        let list = parse_list(FILTERED.as_bytes()).expect("parses");
        assert!(!list.items.is_empty());
        assert!(list.items.iter().all(|a| !a.metadata.name.is_empty()));
    }

    #[test]
    fn environment_rules() {
        use crate::config::EnvironmentFrom::*;
        let app = &parse_list(ONE.as_bytes()).expect("parses").items[0];
        assert_eq!(environment_of(app, Label, "cluster_name").as_deref(), Some("gke-alpha-01-europe-west1"));
        assert_eq!(environment_of(app, Label, "environment"), None, "no such label: no environment");
        assert_eq!(environment_of(app, DestinationName, "").as_deref(), Some("gke-alpha-01-europe-west1"));
        assert_eq!(environment_of(app, DestinationNamespace, "").as_deref(), Some("test-lla"));
        assert_eq!(environment_of(app, Project, "").as_deref(), Some("sre"));
    }

    #[test]
    fn null_and_missing_items_are_an_empty_list() {
        for body in [r#"{"metadata":{"resourceVersion":"1"},"items":null}"#, r#"{"metadata":{}}"#] {
            assert!(parse_list(body.as_bytes()).expect("parses").items.is_empty(), "{body}");
        }
        let app = r#"{"items":[{"metadata":{"name":"a","labels":null},"status":{"health":{"status":"Weird"}}}]}"#;
        let list = parse_list(app.as_bytes()).expect("parses");
        assert_eq!(list.items[0].app_status(), AppStatus { health: Health::Unknown, sync: Sync::Unknown });
        assert!(parse_list(b"{\"items\": [{}]}").is_err(), "an item without metadata is refused");
    }
}
