//! Argo CD's application list (`GET /api/v1/applications`), parsed lean: only the fields
//! this service uses are kept; everything else (resources, history, managed fields) is
//! skipped by the parser without being built. The list has no paging and can be large.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::observe::{AppStatus, Health, SyncState};

/// The list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApplicationList {
    /// The applications; Argo CD writes `"items": null` for an empty list. Boxed: the
    /// vector then grows by pointers, not by whole applications (at 10,000 items its
    /// doubling would otherwise hold two copies of a 5 MB array for a moment).
    #[serde(default, deserialize_with = "null_as_empty")]
    #[allow(clippy::vec_box, reason = "measured: lowers the peak RSS of a 10,000-application cycle")]
    pub items: Vec<Box<Application>>,
}

/// One application, as much of it as is used.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Application {
    /// Name, namespace, labels.
    pub metadata: Metadata,
    /// Project and destination.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub spec: Spec,
    /// Health, sync, reconciliation.
    #[serde(default, deserialize_with = "null_as_empty")]
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
    #[serde(default, deserialize_with = "null_as_empty")]
    pub health: HealthStatus,
    /// `status.sync`.
    #[serde(default, deserialize_with = "null_as_empty")]
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
        AppStatus {
            health: Health::parse(&self.status.health.status),
            sync: SyncState::parse(&self.status.sync.status),
        }
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

/// What a watch event says happened (`result.type`, the Kubernetes watch event type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum EventType {
    /// New (also every application of the initial snapshot).
    #[serde(rename = "ADDED")]
    Added,
    /// Changed.
    #[serde(rename = "MODIFIED")]
    Modified,
    /// Deleted.
    #[serde(rename = "DELETED")]
    Deleted,
    /// Bookmarks, errors and anything newer: ignored.
    #[serde(other)]
    Other,
}

/// One line of `GET /api/v1/stream/applications`: `{"result": {...}}` or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WatchLine {
    /// The event.
    #[serde(default)]
    pub result: Option<WatchEvent>,
    /// A stream error (grpc-gateway's `runtimeStreamError`).
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// `result` of a watch line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WatchEvent {
    /// Added, modified, deleted.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The whole application (only the used fields are built).
    pub application: Application,
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

/// The parts of an item that are read; everything else is skipped unparsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Metadata,
    Spec,
    Health,
    Sync,
    ReconciledAt,
}

const FIELDS: usize = 5;

/// How a captured value ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `{…}` or `[…]`: when the depth returns.
    Container,
    /// `"…"`: when the string closes.
    Str,
    /// `null`, a number, `true`/`false`: at the next delimiter.
    Scalar,
}

/// A small key buffer: only the first 16 bytes of a key matter here.
#[derive(Debug, Default, Clone)]
struct Key {
    bytes: [u8; 16],
    len: usize,
    overflow: bool,
}

impl Key {
    fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }
    fn push(&mut self, b: &[u8]) {
        let room = 16 - self.len;
        if b.len() > room {
            self.overflow = true;
        }
        let n = b.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
    #[inline]
    fn is(&self, s: &[u8]) -> bool {
        !self.overflow && self.len == s.len() && self.bytes[..self.len].iter().zip(s).all(|(a, b)| a == b)
    }
}

/// Parses `{"metadata": …, "items": [ … ]}` as it arrives, chunk by chunk, holding at most
/// one item's bytes: a fleet of 10,000 real applications is well over 100 MB of JSON, and
/// nearly all of it (managed resources, history, the last operation) is not used.
///
/// One pass: a byte scanner (strings skipped eight bytes at a time) follows the nesting, finds
/// where each item ends, and notes where the used values lie (`metadata`, `spec`,
/// `status.health`, `status.sync`, `status.reconciledAt`). serde then reads only those
/// values. The scanner does not validate what it skips; what is read is validated by serde.
#[derive(Debug, Default)]
pub struct ListParser {
    /// Nesting depth: 1 inside the root object, 2 inside a root-level array, 3 inside an
    /// item, 4 inside an item's `status`.
    depth: u32,
    /// Bit `d`: the container at depth `d` is an array.
    arrays: u64,
    started: bool,
    expect_key: bool,
    in_string: bool,
    escaped: bool,
    /// Depth of the key being read (1, 3 or 4), 0 when the string is not a tracked key.
    key_depth: u32,
    key1: Key,
    key3: Key,
    key4: Key,
    /// Whether the array at depth 2 is `items`.
    in_items: bool,
    in_item: bool,
    /// Stream offset of the current item's `{`.
    item_start: u64,
    /// A value to capture begins at the next non-blank byte.
    await_value: Option<Field>,
    /// The value being captured: field, kind, depth it started at, stream offset.
    capturing: Option<(Field, Kind, u32, u64)>,
    /// Captured values, as offsets within the item.
    captures: [Option<(usize, usize)>; FIELDS],
    /// Nesting within a container that is skipped unread (0: not skipping).
    skip_depth: u32,
    /// Bytes of an item begun in an earlier chunk.
    pending: Vec<u8>,
    #[allow(clippy::vec_box, reason = "see ApplicationList::items")]
    items: Vec<Box<Application>>,
    bytes: u64,
}

/// The first `"` in `s`, eight bytes at a time: JSON strings here are mostly short (keys,
/// names), where this beats a vectorised search's set-up cost. Whether the quote is
/// escaped is decided by the caller, from the backslashes before it.
#[inline]
fn find_quote(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let q = u64::from_le_bytes(word) ^ (LO * u64::from(b'"'));
        // A zero byte in q is a quote; the lowest flagged byte is the first one.
        let m = q.wrapping_sub(LO) & !q & HI;
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&b| b == b'"').map(|p| i + p)
}

/// Backslashes immediately before the end of `s`.
#[inline]
fn trailing_backslashes(s: &[u8]) -> usize {
    s.iter().rev().take_while(|&&b| b == b'\\').count()
}

const OTHER: u8 = 0;
const QUOTE: u8 = 1;
const OPEN: u8 = 2;
const CLOSE: u8 = 3;

/// Byte classes for skipping.
static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    t[b'"' as usize] = QUOTE;
    t[b'{' as usize] = OPEN;
    t[b'[' as usize] = OPEN;
    t[b'}' as usize] = CLOSE;
    t[b']' as usize] = CLOSE;
    t
};

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

impl ListParser {
    /// Reads the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ListError> {
        let base = self.bytes;
        self.bytes += chunk.len() as u64;
        let mut i = 0;
        if self.in_string {
            // A string cut by the previous chunk.
            match self.skip_string(chunk, 0, base) {
                Some(end) => i = end,
                None => {
                    self.keep_item_tail(chunk, base);
                    return Ok(());
                }
            }
        }
        if self.skip_depth > 0 {
            if !self.skip(chunk, &mut i, base) {
                self.keep_item_tail(chunk, base);
                return Ok(());
            }
            self.close(chunk, i - 1, base)?;
        }
        if !self.started {
            while i < chunk.len() && is_blank(chunk[i]) {
                i += 1;
            }
            match chunk.get(i) {
                None => return Ok(()),
                Some(b'{') => {
                    self.started = true;
                    self.depth = 1;
                    self.expect_key = true;
                    i += 1;
                }
                Some(_) => return Err(ListError::NotAnObject),
            }
        }
        while i < chunk.len() {
            let b = chunk[i];
            if self.await_value.is_some() || self.capturing.is_some() {
                self.track_capture(b, base + i as u64);
            }
            match b {
                b'"' => {
                    self.key_depth = 0;
                    if self.expect_key {
                        match self.depth {
                            1 => {
                                self.key1.clear();
                                self.key_depth = 1;
                            }
                            3 if self.in_item => {
                                self.key3.clear();
                                self.key_depth = 3;
                            }
                            4 if self.in_item => {
                                self.key4.clear();
                                self.key_depth = 4;
                            }
                            _ => {}
                        }
                    }
                    self.in_string = true;
                    match self.skip_string(chunk, i + 1, base) {
                        Some(end) => {
                            i = end;
                            continue;
                        }
                        None => break,
                    }
                }
                b':' => {
                    self.expect_key = false;
                    if self.in_item && self.depth >= 3 {
                        self.await_value = self.wanted();
                    }
                }
                b',' => self.expect_key = self.depth < 64 && self.arrays & (1 << self.depth) == 0,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.expect_key = b == b'{';
                    if self.depth < 64 {
                        if b == b'[' {
                            self.arrays |= 1 << self.depth;
                        } else {
                            self.arrays &= !(1 << self.depth);
                        }
                    }
                    if self.depth == 2 && b == b'[' {
                        self.in_items = self.key1.is(b"items");
                    } else if self.depth == 3 && self.in_items && b == b'{' {
                        self.in_item = true;
                        self.item_start = base + i as u64;
                        self.captures = [None; FIELDS];
                        self.key3.clear();
                    } else if self.depth > 3 && !(self.depth == 4 && b == b'{' && self.key3.is(b"status")) {
                        // Nothing inside is read key by key: skip to the matching close.
                        self.skip_depth = 1;
                        i += 1;
                        if !self.skip(chunk, &mut i, base) {
                            break;
                        }
                        self.close(chunk, i - 1, base)?;
                        continue;
                    }
                }
                b'}' | b']' => self.close(chunk, i, base)?,
                _ => {}
            }
            i += 1;
        }
        self.keep_item_tail(chunk, base);
        Ok(())
    }

    /// The container ending at `chunk[i]` is closed.
    fn close(&mut self, chunk: &[u8], i: usize, base: u64) -> Result<(), ListError> {
        self.depth = self.depth.saturating_sub(1);
        self.expect_key = false;
        if let Some((field, Kind::Container, depth, start)) = self.capturing
            && depth == self.depth
        {
            self.capture(field, start, base + i as u64 + 1);
        }
        if self.depth == 2 && self.in_item {
            self.in_item = false;
            let start = self.item_start.saturating_sub(base) as usize;
            if self.pending.is_empty() {
                self.push_item(&chunk[start..=i])?;
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(&chunk[..=i]);
                self.push_item(&whole)?;
                whole.clear();
                self.pending = whole;
            }
        } else if self.depth == 1 {
            self.in_items = false;
        }
        Ok(())
    }

    /// Skips to the close matching the container being skipped; `false` when the chunk
    /// ends first. `i` is left just after the close.
    #[inline]
    fn skip(&mut self, chunk: &[u8], i: &mut usize, base: u64) -> bool {
        while *i < chunk.len() {
            let b = chunk[*i];
            *i += 1;
            match CLASS[b as usize] {
                QUOTE => {
                    self.in_string = true;
                    self.key_depth = 0;
                    match self.skip_string(chunk, *i, base) {
                        Some(end) => *i = end,
                        None => return false,
                    }
                }
                OPEN => self.skip_depth += 1,
                CLOSE => {
                    self.skip_depth -= 1;
                    if self.skip_depth == 0 {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }

    /// Keeps the bytes of an item that continues in the next chunk.
    fn keep_item_tail(&mut self, chunk: &[u8], base: u64) {
        if self.in_item {
            let start = self.item_start.saturating_sub(base) as usize;
            self.pending.extend_from_slice(&chunk[start.min(chunk.len())..]);
        }
    }

    /// The field whose value follows the `:` just read, if it is one that is used.
    fn wanted(&self) -> Option<Field> {
        match self.depth {
            3 if self.key3.is(b"metadata") => Some(Field::Metadata),
            3 if self.key3.is(b"spec") => Some(Field::Spec),
            4 if self.key3.is(b"status") => {
                if self.key4.is(b"health") {
                    Some(Field::Health)
                } else if self.key4.is(b"sync") {
                    Some(Field::Sync)
                } else if self.key4.is(b"reconciledAt") {
                    Some(Field::ReconciledAt)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Starts or ends a captured value at byte `b` (stream offset `at`).
    #[inline]
    fn track_capture(&mut self, b: u8, at: u64) {
        if let Some(field) = self.await_value
            && !is_blank(b)
        {
            self.await_value = None;
            let kind = match b {
                b'{' | b'[' => Kind::Container,
                b'"' => Kind::Str,
                _ => Kind::Scalar,
            };
            self.capturing = Some((field, kind, self.depth, at));
        }
        if let Some((field, Kind::Scalar, depth, start)) = self.capturing
            && depth == self.depth
            && (is_blank(b) || matches!(b, b',' | b'}' | b']'))
        {
            self.capture(field, start, at);
        }
    }

    /// Skips string bytes from `from` (just after the opening quote, or the start of a
    /// chunk when resuming): the index after the closing quote, or `None` when the chunk
    /// ends inside the string.
    #[inline]
    fn skip_string(&mut self, chunk: &[u8], from: usize, base: u64) -> Option<usize> {
        let mut start = from;
        if self.escaped {
            if start >= chunk.len() {
                return None;
            }
            self.escaped = false;
            start += 1;
        }
        let start = start.min(chunk.len());
        let mut i = start;
        loop {
            let Some(at) = find_quote(&chunk[i..]) else {
                if self.key_depth != 0 {
                    self.key_bytes(&chunk[i..]);
                }
                // An odd run of backslashes at the end escapes the next chunk's first byte.
                self.escaped = trailing_backslashes(&chunk[start..]) % 2 == 1;
                return None;
            };
            if self.key_depth != 0 {
                self.key_bytes(&chunk[i..i + at]);
            }
            i += at;
            if trailing_backslashes(&chunk[start..i]) % 2 == 1 {
                i += 1;
                continue;
            }
            self.in_string = false;
            if let Some((field, Kind::Str, _, begun)) = self.capturing {
                self.capture(field, begun, base + i as u64 + 1);
            }
            return Some(i + 1);
        }
    }

    #[inline]
    fn key_bytes(&mut self, bytes: &[u8]) {
        match self.key_depth {
            1 => self.key1.push(bytes),
            3 => self.key3.push(bytes),
            4 => self.key4.push(bytes),
            _ => {}
        }
    }

    fn capture(&mut self, field: Field, start: u64, end: u64) {
        self.capturing = None;
        let from = start.saturating_sub(self.item_start) as usize;
        let to = end.saturating_sub(self.item_start) as usize;
        self.captures[field as usize] = Some((from, to));
    }

    fn push_item(&mut self, item: &[u8]) -> Result<(), ListError> {
        let index = self.items.len();
        let err = |source| ListError::Item { index, source };
        let value = |f: Field| self.captures[f as usize].and_then(|(a, b)| item.get(a..b));
        let Some(metadata) = value(Field::Metadata) else {
            return Err(err(serde::de::Error::missing_field("metadata")));
        };
        let metadata: Metadata = serde_json::from_slice(metadata).map_err(err)?;
        let read = |f: Field| -> Result<Option<&[u8]>, ListError> { Ok(value(f).filter(|v| *v != b"null")) };
        let spec = match read(Field::Spec)? {
            Some(v) => serde_json::from_slice(v).map_err(err)?,
            None => Spec::default(),
        };
        let health = match read(Field::Health)? {
            Some(v) => serde_json::from_slice(v).map_err(err)?,
            None => HealthStatus::default(),
        };
        let sync = match read(Field::Sync)? {
            Some(v) => serde_json::from_slice(v).map_err(err)?,
            None => SyncStatus::default(),
        };
        let reconciled_at = match read(Field::ReconciledAt)? {
            Some(v) => serde_json::from_slice(v).map_err(err)?,
            None => None,
        };
        self.items.push(Box::new(Application { metadata, spec, status: Status { health, sync, reconciled_at } }));
        Ok(())
    }

    /// Takes the items read so far, so a caller can plan each one as the list streams in
    /// and drop it (then [`ListParser::finish`] returns only those not taken).
    pub fn take_items(&mut self) -> std::vec::Drain<'_, Box<Application>> {
        self.items.drain(..)
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
        assert_eq!(app.app_status(), AppStatus { health: Health::Healthy, sync: SyncState::Synced });
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
        assert_eq!(list.items[0].app_status(), AppStatus { health: Health::Unknown, sync: SyncState::Unknown });
        assert!(parse_list(b"{\"items\": [{}]}").is_err(), "an item without metadata is refused");
    }

    #[test]
    fn watch_lines_of_the_contract_parse() {
        const STREAM: &str = include_str!("../../../tests/fixtures/argocd/stream-applications.ndjson.derived.txt");
        let lines: Vec<WatchLine> =
            STREAM.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("line")).collect();
        assert!(lines.len() >= 2);
        let kinds: Vec<EventType> = lines.iter().filter_map(|l| l.result.as_ref().map(|r| r.kind)).collect();
        assert_eq!(&kinds[..2], &[EventType::Added, EventType::Modified]);
        assert!(lines.iter().all(|l| l.result.as_ref().is_some_and(|r| !r.application.metadata.name.is_empty())));
        let err: WatchLine =
            serde_json::from_str(r#"{"error":{"grpc_code":16,"http_code":401,"message":"no session information"}}"#)
                .expect("error line");
        assert!(err.result.is_none() && err.error.is_some());
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

    #[test]
    fn any_field_order_nulls_and_nesting_read_like_serde() {
        let body = r#"{"items":[
          {"status":{"resources":[{"health":{"status":"Degraded"},"sync":"x"}],"reconciledAt":null,
                     "sync":{"status":"OutOfSync","revision":"r1","comparedTo":{"source":{"repoURL":"{["}}},
                     "health":{"message":"m, \"q\" \\\\\"x\\","status":"Progressing"}},
           "spec":null,"metadata":{"labels":{"environment":"production"},"name":"late","namespace":"argocd",
                     "annotations":{"status":"{\"health\":1}"}}},
          {"metadata":{"name":"bare"},"status":{"reconciledAt":"2026-11-27T04:00:00Z","health":null}}
        ]}"#;
        #[derive(serde::Deserialize)]
        struct Whole {
            #[allow(clippy::vec_box, reason = "the same shape as ApplicationList")]
            items: Vec<Box<Application>>,
        }
        let whole: Whole = serde_json::from_str(body).expect("serde reads it");
        for cut in 0..body.len() {
            let mut parser = ListParser::default();
            parser.feed(&body.as_bytes()[..cut]).expect("feeds");
            parser.feed(&body.as_bytes()[cut..]).expect("feeds");
            assert_eq!(parser.finish().expect("finishes").items, whole.items, "cut at {cut}");
        }
        assert_eq!(whole.items[0].status.health.status, "Progressing");
        assert_eq!(whole.items[0].status.health.message, r#"m, "q" \\"x\"#);
        assert_eq!(whole.items[0].status.sync.revision, "r1");
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
