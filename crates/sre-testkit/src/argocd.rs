//! A test Argo CD: `GET /api/v1/applications` as the published API serves it (see the
//! contract notes): bearer-token auth with grpc-gateway error bodies, a list sorted by
//! name with `items: null` when empty, and switchable failures (401, 403, 5xx, slow).

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
        if self.realistic {
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

/// How the server answers the next list calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the list.
    Normal,
    /// 503 from the ingress in front of argocd-server.
    Unavailable,
    /// Answer after a delay.
    Slow(Duration),
}

#[derive(Debug)]
struct Inner {
    /// Watch events (`{"result": …}` lines) for open streams.
    events: tokio::sync::broadcast::Sender<String>,
    /// Streams opened.
    watches: u64,
    apps: Vec<App>,
    /// The rendered list, kept until the applications change.
    body: Option<bytes::Bytes>,
    token: String,
    mode: Mode,
    requests: u64,
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

async fn list(State(state): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let (mode, token, body) = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.requests += 1;
        if s.body.is_none() {
            let mut apps = s.apps.clone();
            apps.sort_by(|a, b| a.name.cmp(&b.name));
            let items = if apps.is_empty() { serde_json::Value::Null } else { apps.iter().map(App::to_json).collect() };
            let list = json!({"metadata": {"resourceVersion": "722811357"}, "items": items});
            s.body = Some(bytes::Bytes::from(list.to_string()));
        }
        (s.mode, s.token.clone(), s.body.clone().unwrap_or_default())
    };
    // Argo CD takes the header only as `Bearer <jwt>`; anything else is no session.
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token.as_str()) {
        return runtime_error(StatusCode::UNAUTHORIZED, 16, "no session information");
    }
    match mode {
        Mode::Unavailable => return (StatusCode::SERVICE_UNAVAILABLE, "upstream connect error").into_response(),
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Normal => {}
    }
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn event(kind: &str, app: &App) -> String {
    let mut line = json!({"result": {"type": kind, "application": app.to_json()}}).to_string();
    line.push('\n');
    line
}

/// `GET /api/v1/stream/applications`: `ADDED` for every application, then each change as
/// newline-delimited JSON (what Argo CD sends without `Accept: text/event-stream`).
async fn watch(State(state): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let (token, snapshot, events) = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.watches += 1;
        let mut apps = s.apps.clone();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        let snapshot: Vec<String> = apps.iter().map(|a| event("ADDED", a)).collect();
        (s.token.clone(), snapshot, s.events.subscribe())
    };
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token.as_str()) {
        return runtime_error(StatusCode::UNAUTHORIZED, 16, "no session information");
    }
    let first = futures::stream::iter(snapshot.into_iter().map(Ok::<_, std::io::Error>));
    let rest = futures::stream::unfold(events, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => return Some((Ok::<_, std::io::Error>(line), rx)),
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
            body: None,
            token: token.to_owned(),
            mode: Mode::Normal,
            requests: 0,
        }));
        let app = Router::new()
            .route("/api/v1/applications", get(list))
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
            s.body = None;
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
            s.body = None;
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
}

impl Drop for FakeArgoCd {
    fn drop(&mut self) {
        self.task.abort();
    }
}
