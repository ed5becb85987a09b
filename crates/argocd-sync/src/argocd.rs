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
    /// Kubernetes uid: a new one when the application is deleted and created again.
    #[serde(default)]
    pub uid: String,
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

/// Why a list body was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The body is not a JSON object (a proxy's HTML login page, say).
    #[error("the body is not a JSON object")]
    NotAnObject,
    /// The body ended inside the list.
    #[error("the body ended before the list did")]
    Truncated,
    /// An item is not an application.
    #[error("item {index}: {source}")]
    Item {
        /// Its position in `items`.
        index: usize,
        /// serde's reason (with line and column within the item).
        source: serde_json::Error,
    },
}

/// Parses a whole list body.
pub fn parse_list(body: &[u8]) -> Result<ApplicationList, ListError> {
    let mut parser = ListParser::default();
    parser.feed(body)?;
    parser.finish()
}

/// Parses `{"metadata": …, "items": [ … ]}` as it arrives, chunk by chunk, holding at most
/// one item's bytes: a fleet of 10,000 applications of ~13 kB each is a 130 MB body, and
/// only the few fields kept per item are ever built. A byte scanner (strings skipped with
/// `memchr`) finds where each item ends; serde then reads that item alone.
#[derive(Debug, Default)]
pub struct ListParser {
    /// Nesting depth: 1 inside the root object, 2 inside a root-level array, 3+ in an item.
    depth: u32,
    started: bool,
    in_string: bool,
    escaped: bool,
    /// The root-level key being read, or last read (only its first bytes matter).
    key: Vec<u8>,
    /// Whether the array at depth 2 is `items`.
    in_items: bool,
    /// Bytes of an item begun in an earlier chunk.
    pending: Vec<u8>,
    in_item: bool,
    items: Vec<Application>,
    bytes: u64,
}

impl ListParser {
    /// Reads the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ListError> {
        self.bytes += chunk.len() as u64;
        let mut item_start = if self.in_item { Some(0) } else { None };
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                let Some(at) = memchr::memchr2(b'"', b'\\', &chunk[i..]) else {
                    self.key_bytes(&chunk[i..]);
                    break;
                };
                self.key_bytes(&chunk[i..i + at]);
                i += at;
                if chunk[i] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                }
                i += 1;
                continue;
            }
            let b = chunk[i];
            if !self.started {
                match b {
                    b' ' | b'\n' | b'\r' | b'\t' => {}
                    b'{' => {
                        self.started = true;
                        self.depth = 1;
                    }
                    _ => return Err(ListError::NotAnObject),
                }
                i += 1;
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 {
                        self.key.clear();
                    }
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 2 && b == b'[' {
                        self.in_items = self.key == b"items";
                    } else if self.depth == 3 && self.in_items && b == b'{' {
                        self.in_item = true;
                        item_start = Some(i);
                    }
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 2 && self.in_item {
                        self.in_item = false;
                        let start = item_start.take().unwrap_or(0);
                        if self.pending.is_empty() {
                            self.push_item(&chunk[start..=i])?;
                        } else {
                            let mut whole = std::mem::take(&mut self.pending);
                            whole.extend_from_slice(&chunk[start..=i]);
                            self.push_item(&whole)?;
                            whole.clear();
                            self.pending = whole;
                        }
                    } else if self.depth == 1 {
                        self.in_items = false;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        if self.in_item {
            self.pending.extend_from_slice(&chunk[item_start.unwrap_or(0)..]);
        }
        Ok(())
    }

    fn key_bytes(&mut self, bytes: &[u8]) {
        if self.depth == 1 && self.key.len() < 16 {
            self.key.extend_from_slice(&bytes[..bytes.len().min(16 - self.key.len())]);
        }
    }

    fn push_item(&mut self, bytes: &[u8]) -> Result<(), ListError> {
        let app =
            serde_json::from_slice(bytes).map_err(|source| ListError::Item { index: self.items.len(), source })?;
        self.items.push(app);
        Ok(())
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The list, once the body has ended.
    pub fn finish(self) -> Result<ApplicationList, ListError> {
        if !self.started {
            return Err(ListError::NotAnObject);
        }
        if self.depth != 0 || self.in_string {
            return Err(ListError::Truncated);
        }
        Ok(ApplicationList { items: self.items })
    }
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

    #[test]
    fn bodies_that_are_not_lists_are_refused() {
        assert!(matches!(parse_list(b"<html>login</html>"), Err(ListError::NotAnObject)));
        assert!(matches!(parse_list(b""), Err(ListError::NotAnObject)));
        assert!(matches!(parse_list(br#"{"items":[{"metadata":{"name":"a"}}"#), Err(ListError::Truncated)));
        let err = parse_list(br#"{"items":[{"metadata":{"name":"a"}},{"metadata":7}]}"#).expect_err("bad item");
        assert!(err.to_string().starts_with("item 1:"), "{err}");
    }

    #[test]
    fn other_root_arrays_and_tricky_strings_are_not_items() {
        let body = r#"{"metadata":{"x":["{"]},"warnings":[{"metadata":{"name":"no"}}],
            "items":[{"metadata":{"name":"a\\\"}{[","namespace":"n","labels":{"k":"v]"}}}, {"metadata":{"name":"b"}}]}"#;
        let list = parse_list(body.as_bytes()).expect("parses");
        let names: Vec<&str> = list.items.iter().map(|a| a.metadata.name.as_str()).collect();
        assert_eq!(names, ["a\\\"}{[", "b"]);
    }

    proptest::proptest! {
        /// Fed in chunks cut anywhere, the parser reads what serde reads from the whole body.
        #[test]
        fn chunked_equals_whole(cuts in proptest::collection::vec(0usize..25_000, 0..12)) {
            let whole: ApplicationList = serde_json::from_str(ONE).expect("serde");
            let bytes = ONE.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parser = ListParser::default();
            let mut from = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                parser.feed(&bytes[from..c]).expect("feeds");
                from = c;
            }
            proptest::prop_assert_eq!(parser.finish().expect("finishes"), whole);
        }
    }
}
