//! A test Argo CD: `GET /api/v1/applications` as the published API serves it (see the
//! contract notes): bearer-token auth with grpc-gateway error bodies, a list sorted by
//! name with `items: null` when empty, the `fields` allowlist of v2.10–v3.0 (or, switched,
//! a server that ignores it), `GET /api/v1/applications/{name}`, the watch stream with its
//! generic `fields` filter, and switchable failures (401, 403, 5xx, slow).
//!
//! Like Argo CD it serialises every answer anew; the time it spends doing so and the bytes
//! it sends are counted ([`FakeArgoCd::served`]), a proxy for the load a client puts on it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// One application in the test server.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Name.
    pub name: String,
    /// Namespace of the Application resource.
    pub namespace: String,
    /// Argo CD project.
    pub project: String,
    /// Labels (e.g. `environment`).
    pub labels: Vec<(String, String)>,
    /// `Healthy`, `Degraded`, …
    pub health: String,
    /// `Synced`, `OutOfSync`, …
    pub sync: String,
    /// Health message.
    pub message: String,
    /// `metadata.uid` (a new one when an application is deleted and created again).
    pub uid: String,
    /// Pad the item to the size of a real one (~13 kB: resources, history, operation
    /// state), for benchmarks.
    pub realistic: bool,
}

impl App {
    /// A healthy, synced app in `environment` (label `environment`).
    pub fn new(name: &str, environment: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: "argocd".to_owned(),
            project: "default".to_owned(),
            labels: vec![("environment".to_owned(), environment.to_owned())],
            health: "Healthy".to_owned(),
            sync: "Synced".to_owned(),
            message: String::new(),
            uid: format!(
                "8d1c5a1e-{:012x}",
                name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            ),
            realistic: false,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        self.to_json_padded(self.realistic)
    }

    /// The item; `padded`: with a real item's bulk (see `realistic`).
    fn to_json_padded(&self, padded: bool) -> serde_json::Value {
        let labels: serde_json::Map<String, serde_json::Value> =
            self.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let mut health = json!({"status": self.health});
        if !self.message.is_empty() {
            health["message"] = json!(self.message);
        }
        let mut app = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels, "resourceVersion": "1000",
                         "uid": self.uid, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"project": self.project, "destination": {"name": "in-cluster", "namespace": self.name},
                     "source": {"repoURL": "https://git.example/apps.git", "path": self.name, "targetRevision": "HEAD"}},
            "status": {
                "health": health,
                "sync": {"status": self.sync, "revision": "0123456789abcdef"},
                "reconciledAt": "2026-11-27T04:00:00Z",
                "resources": [{"kind": "Deployment", "name": self.name, "status": self.sync}],
                "summary": {"images": ["example/app:1.0"]}
            }
        });
        if padded {
            // What makes real items large: every managed resource, the sync history and the
            // last operation's per-resource results (sizes as in the contract's sample).
            let resources: Vec<serde_json::Value> = (0..30)
                .map(|i| {
                    json!({"group": "apps", "version": "v1", "kind": "Deployment", "namespace": self.name,
                    "name": format!("{}-component-{i}", self.name), "status": "Synced",
                    "health": {"status": "Healthy"}, "syncWave": i % 3})
                })
                .collect();
            let history: Vec<serde_json::Value> = (0..10)
                .map(|i| {
                    json!({"revision": format!("{i:040x}"), "deployedAt": "2026-11-20T10:00:00Z", "id": i,
                    "source": {"repoURL": "https://git.example/apps.git", "path": self.name, "targetRevision": "HEAD"},
                    "deployStartedAt": "2026-11-20T09:59:30Z", "initiatedBy": {"username": "ci-bot"}})
                })
                .collect();
            app["status"]["resources"] = json!(resources);
            app["status"]["history"] = json!(history);
            app["status"]["operationState"] = json!({"phase": "Succeeded", "message": "successfully synced (all tasks run)",
                "startedAt": "2026-11-20T09:59:30Z", "finishedAt": "2026-11-20T10:00:00Z",
                "syncResult": {"revision": "0123456789abcdef", "resources": resources}});
        }
        app
    }
}

/// Which `fields` of the list the server honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// The allowlist of Argo CD v2.10–v3.0 (see the contract notes, §2.2).
    Honoured,
    /// The parameter is ignored (an older server, or a proxy that drops it): whole items.
    Ignored,
}

/// Paths of an item the list's `fields` may select (v2.10–v3.0); anything else is dropped,
/// and `metadata.resourceVersion`, `status.reconciledAt`, `status.operationState.message`
/// are never selectable.
pub const LIST_FIELDS_ALLOWLIST: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.annotations",
    "metadata.labels",
    "metadata.creationTimestamp",
    "metadata.deletionTimestamp",
    "spec",
    "status.sync.status",
    "status.health",
    "status.summary",
    "status.resources",
    "status.operationState.startedAt",
    "status.operationState.finishedAt",
    "status.operationState.phase",
    "status.operationState.operation.sync",
    "operation.sync",
];

/// What the server has served so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Served {
    /// List requests answered 200.
    pub lists: u64,
    /// Single-application requests answered (any status).
    pub gets: u64,
    /// Body bytes of the 200 list and get answers.
    pub bytes: u64,
    /// Time spent serialising those answers.
    pub serialize: Duration,
}

/// Copies the value at `path` (dot-separated) of `from` into `to`, creating the objects
/// on the way; absent paths are skipped.
fn copy_path(from: &serde_json::Value, to: &mut serde_json::Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(value) = from.get(first) else { return };
    let Some(obj) = to.as_object_mut() else { return };
    if rest.is_empty() {
        obj.insert((*first).to_owned(), value.clone());
        return;
    }
    let child = obj.entry((*first).to_owned()).or_insert_with(|| json!({}));
    copy_path(value, child, rest);
}

/// `value` with only `paths` kept (each dot-separated, relative to `value`).
fn select(value: &serde_json::Value, paths: &[&str]) -> serde_json::Value {
    let mut out = json!({});
    for p in paths {
        let parts: Vec<&str> = p.split('.').collect();
        copy_path(value, &mut out, &parts);
    }
    out
}

/// The `fields` query parameter, split (empty when absent).
fn fields_param(query: Option<&str>) -> Vec<String> {
    let Some(query) = query else { return Vec::new() };
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "fields")
        .flat_map(|(_, v)| {
            let v = v.replace("%2C", ",").replace("%2c", ",");
            v.split(',').map(str::to_owned).collect::<Vec<_>>()
        })
        .filter(|f| !f.is_empty())
        .collect()
}

/// How the server answers the next list calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the list.
    Normal,
    /// 503 from the ingress in front of argocd-server.
    Unavailable,
    /// Answer after a delay.
    Slow(Duration),
    /// 429 with `Retry-After` (whole seconds), as a rate-limiting ingress in front of
    /// argocd-server answers.
    Throttled(Duration),
}

#[derive(Debug)]
struct Inner {
    /// Watch events (`{"result": …}`) for open streams.
    events: tokio::sync::broadcast::Sender<serde_json::Value>,
    /// Streams opened.
    watches: u64,
    apps: Vec<App>,
    token: String,
    mode: Mode,
    /// How single-application requests are answered.
    get_mode: Mode,
    fields: Fields,
    requests: u64,
    served: Served,
}

/// A running test Argo CD; shuts down when dropped (its task is aborted).
#[derive(Debug)]
pub struct FakeArgoCd {
    state: Arc<Mutex<Inner>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

fn runtime_error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, axum::Json(json!({"error": message, "code": code, "message": message, "details": []}))).into_response()
}

/// Renders the list as Argo CD does, item by item into one buffer: `fields` (already
/// reduced to what the server honours) selects paths of each item; empty: whole items.
fn render_list(apps: &[App], fields: &[&str]) -> Vec<u8> {
    let mut apps: Vec<&App> = apps.iter().collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::with_capacity(64 + apps.len() * if fields.is_empty() { 1024 } else { 256 });
    out.extend_from_slice(br#"{"metadata":{"resourceVersion":"722811357"},"items":"#);
    if apps.is_empty() {
        out.extend_from_slice(b"null");
    }
    for (i, app) in apps.iter().enumerate() {
        out.push(if i == 0 { b'[' } else { b',' });
        // The bulk is built only when a selected path reaches into it, as a server reading
        // only the selected fields would.
        let bulky = fields.is_empty()
            || fields.iter().any(|f| f.starts_with("status.resources") || f.starts_with("status.operationState"));
        let item = app.to_json_padded(app.realistic && bulky);
        let item = if fields.is_empty() { item } else { select(&item, fields) };
        let _ = serde_json::to_writer(&mut out, &item);
    }
    if !apps.is_empty() {
        out.push(b']');
    }
    out.push(b'}');
    out
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    // Argo CD takes the header only as `Bearer <jwt>`; anything else is no session.
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    presented == Some(token)
}

/// What every request meets first: the token (401 otherwise), then the switched mode
/// (503, or a delay). `None`: go on.
async fn gate(headers: &HeaderMap, token: &str, mode: Mode) -> Option<Response> {
    if !authorized(headers, token) {
        return Some(runtime_error(StatusCode::UNAUTHORIZED, 16, "no session information"));
    }
    match mode {
        Mode::Unavailable => Some((StatusCode::SERVICE_UNAVAILABLE, "upstream connect error").into_response()),
        Mode::Throttled(after) => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, after.as_secs().to_string())],
                "Too Many Requests",
            )
                .into_response(),
        ),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Mode::Normal => None,
    }
}

async fn list(State(state): State<Arc<Mutex<Inner>>>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let (mode, token, honoured) = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.requests += 1;
        (s.mode, s.token.clone(), s.fields)
    };
    if let Some(refused) = gate(&headers, &token, mode).await {
        return refused;
    }
    let asked = fields_param(uri.query());
    let fields: Vec<&str> = match honoured {
        Fields::Ignored => Vec::new(),
        Fields::Honoured => asked
            .iter()
            .filter_map(|f| f.strip_prefix("items."))
            .filter(|f| LIST_FIELDS_ALLOWLIST.contains(f))
            .collect(),
    };
    let apps = state.lock().unwrap_or_else(PoisonError::into_inner).apps.clone();
    let fields: Vec<String> = fields.into_iter().map(str::to_owned).collect();
    let (body, took) = tokio::task::spawn_blocking(move || {
        let started = tokio::time::Instant::now();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let body = render_list(&apps, &fields);
        (body, started.elapsed())
    })
    .await
    .unwrap_or_default();
    {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.served.lists += 1;
        s.served.bytes += body.len() as u64;
        s.served.serialize += took;
    }
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /api/v1/applications/{name}` (`ApplicationService_Get`): the whole application;
/// `appNamespace` picks it among namespaces (default: Argo CD's own, `argocd`).
async fn get_one(
    State(state): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let (mode, token, app) = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.served.gets += 1;
        let namespace = uri
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("appNamespace=")))
            .unwrap_or("argocd")
            .to_owned();
        let app = s.apps.iter().find(|a| a.name == name && a.namespace == namespace).cloned();
        let mode = if s.get_mode == Mode::Normal { s.mode } else { s.get_mode };
        (mode, s.token.clone(), app)
    };
    if let Some(refused) = gate(&headers, &token, mode).await {
        return refused;
    }
    let Some(app) = app else {
        return runtime_error(StatusCode::NOT_FOUND, 5, &format!("applications.argoproj.io \"{name}\" not found"));
    };
    let started = tokio::time::Instant::now();
    let body = app.to_json().to_string();
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    s.served.bytes += body.len() as u64;
    s.served.serialize += started.elapsed();
    drop(s);
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn event(kind: &str, app: &App) -> serde_json::Value {
    json!({"result": {"type": kind, "application": app.to_json()}})
}

/// One stream line, filtered by the stream's generic `fields` (paths from the line's root,
/// e.g. `result.application.metadata.name`; empty: the whole event).
fn event_line(event: &serde_json::Value, fields: &[String]) -> String {
    let mut line = if fields.is_empty() {
        event.to_string()
    } else {
        let paths: Vec<&str> = fields.iter().map(String::as_str).collect();
        select(event, &paths).to_string()
    };
    line.push('\n');
    line
}

/// `GET /api/v1/stream/applications`: `ADDED` for every application, then each change as
/// newline-delimited JSON (what Argo CD sends without `Accept: text/event-stream`).
async fn watch(State(state): State<Arc<Mutex<Inner>>>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let fields = match state.lock().unwrap_or_else(PoisonError::into_inner).fields {
        Fields::Honoured => fields_param(uri.query()),
        Fields::Ignored => Vec::new(),
    };
    let (token, snapshot, events) = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.watches += 1;
        let mut apps = s.apps.clone();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        let snapshot: Vec<String> = apps.iter().map(|a| event_line(&event("ADDED", a), &fields)).collect();
        (s.token.clone(), snapshot, s.events.subscribe())
    };
    if !authorized(&headers, &token) {
        return runtime_error(StatusCode::UNAUTHORIZED, 16, "no session information");
    }
    let first = futures::stream::iter(snapshot.into_iter().map(Ok::<_, std::io::Error>));
    let rest = futures::stream::unfold((events, fields), |(mut rx, fields)| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let line = event_line(&event, &fields);
                    return Some((Ok::<_, std::io::Error>(line), (rx, fields)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(first.chain(rest)))
        .into_response()
}

/// A TLS listener for `axum::serve`: accepts TCP, completes the handshake, hands over the
/// stream (failed handshakes are dropped, as a server does).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

async fn page(State(state): State<Arc<Mutex<Inner>>>) -> axum::response::Html<String> {
    let s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let rows: Vec<Vec<String>> = s
        .apps
        .iter()
        .map(|a| vec![a.name.clone(), a.project.clone(), a.health.clone(), a.sync.clone(), a.message.clone()])
        .collect();
    let note = format!("Applications served; {} list requests and {} watch streams so far.", s.requests, s.watches);
    crate::vendor::page("Test Argo CD", &note, &["application", "project", "health", "sync", "message"], &rows)
}

impl FakeArgoCd {
    /// Starts over HTTPS with a certificate for `127.0.0.1` issued by a fresh private CA;
    /// returns the CA certificate (PEM) a client must trust.
    pub async fn start_tls(token: &str, apps: Vec<App>) -> std::io::Result<(Self, String)> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().map_err(io_error)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(io_error)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).map_err(io_error)?;
        let key = KeyPair::generate().map_err(io_error)?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(io_error)?
            .signed_by(&key, &ca, &ca_key)
            .map_err(io_error)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io_error)?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(io_error)?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", tcp.local_addr()?);
        let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
        let (state, app) = Self::router(token, apps);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((Self { state, url, task }, ca.pem()))
    }

    fn router(token: &str, apps: Vec<App>) -> (Arc<Mutex<Inner>>, Router) {
        let state = Arc::new(Mutex::new(Inner {
            events: tokio::sync::broadcast::channel(1024).0,
            watches: 0,
            apps,
            token: token.to_owned(),
            mode: Mode::Normal,
            get_mode: Mode::Normal,
            fields: Fields::Honoured,
            requests: 0,
            served: Served::default(),
        }));
        let app = Router::new()
            .route("/api/v1/applications", get(list))
            .route("/api/v1/applications/{name}", get(get_one))
            .route("/api/v1/stream/applications", get(watch))
            .route("/", get(page))
            .with_state(state.clone());
        (state, app)
    }

    /// Starts on a free loopback port; requests must carry `Bearer <token>`.
    pub async fn start(token: &str, apps: Vec<App>) -> std::io::Result<Self> {
        Self::start_on(0, token, apps).await
    }

    /// Starts on `127.0.0.1:<port>` (0: a free one).
    pub async fn start_on(port: u16, token: &str, apps: Vec<App>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (state, app) = Self::router(token, apps);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, url, task })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the applications.
    pub fn set_apps(&self, apps: Vec<App>) {
        self.with(|s| {
            for old in &s.apps {
                if !apps.iter().any(|a| a.name == old.name && a.uid == old.uid) {
                    let _ = s.events.send(event("DELETED", old));
                }
            }
            for new in &apps {
                match s.apps.iter().find(|a| a.name == new.name && a.uid == new.uid) {
                    None => drop(s.events.send(event("ADDED", new))),
                    Some(old) if old != new => drop(s.events.send(event("MODIFIED", new))),
                    Some(_) => {}
                }
            }
            s.apps = apps;
        });
    }

    /// Watch streams opened so far.
    pub fn watches(&self) -> u64 {
        self.with(|s| s.watches)
    }

    /// Ends every open watch stream (as an argocd-server restart does).
    pub fn close_watches(&self) {
        self.with(|s| s.events = tokio::sync::broadcast::channel(1024).0);
    }

    /// Changes one application's health (and message).
    pub fn set_health(&self, name: &str, health: &str, message: &str) {
        self.with(|s| {
            for a in s.apps.iter_mut().filter(|a| a.name == name) {
                a.health = health.to_owned();
                a.message = message.to_owned();
                let _ = s.events.send(event("MODIFIED", a));
            }
        });
    }

    /// Sets how the next calls are answered.
    pub fn set_mode(&self, mode: Mode) {
        self.with(|s| s.mode = mode);
    }

    /// List requests received so far.
    pub fn requests(&self) -> u64 {
        self.with(|s| s.requests)
    }

    /// Sets how single-application requests are answered (the list keeps its own mode).
    pub fn set_get_mode(&self, mode: Mode) {
        self.with(|s| s.get_mode = mode);
    }

    /// Sets whether the list's and the stream's `fields` are honoured.
    pub fn set_fields(&self, fields: Fields) {
        self.with(|s| s.fields = fields);
    }

    /// What has been served so far (lists, single gets, bytes, serialisation time).
    pub fn served(&self) -> Served {
        self.with(|s| s.served)
    }
}

impl Drop for FakeArgoCd {
    fn drop(&mut self) {
        self.task.abort();
    }
}
