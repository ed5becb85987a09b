//! Vendor calls, one resilience layer per vendor credential: every call a sink makes goes
//! through the [`Upstream`] of the credential it is made with (a Jira site's account, a
//! GitHub token, a PagerDuty routing key, an Opsgenie/JSM key), so the configured rate
//! limit and the circuit breaker are the credential's, as the vendors count them. A
//! credential is named by its secret *reference* or another configured name, never by
//! the secret.
//!
//! All calls of one credential are made by one replica, the one holding the sink's lease
//! ([`crate::lead`]), so its limit holds at any replica count. Within that replica, a fact
//! whose turn is more than [`HAND_BACK_OVER`] away is handed back to the bus until its
//! turn ([`CallError::Deferred`], NAK with that delay) instead of holding a worker: one
//! routing key's storm never holds up another key's page. Its grant stays reserved for it
//! ([`for_fact`]), so a deferred fact is delivered at most once more for its turn. A
//! vendor's request to slow down (a 429 with `Retry-After`, a spent or nearly spent
//! budget) pauses the credential, and only it, on every replica: the pause is kept in the
//! sink's bucket ([`Vendors::share_pauses`]) and read again every [`PAUSE_FRESH`].
//!
//! A new sender goes on holding the limits where its predecessor left them: the sender
//! keeps every credential's window in the bucket ([`Vendors::keep_windows`], key
//! [`WINDOWS_KEY`]), written off the call path as soon as a grant is taken, and the next
//! sender takes it on when it takes the lease ([`Vendors::adopt_windows`]). What is kept
//! is what fills each window (the grants made, and for a turn reserved ahead the grant it
//! waits for), so the successor gives the same turns out at the same moments. A sender
//! killed within one bucket write of a grant leaves that grant out.
//!
//! Also here: how long the calls take (`<sink>_vendor_seconds{provider}`), each vendor's
//! worst breaker (`sre_upstream_breaker_state`), and readiness per vendor (the last
//! credentials check, then the breakers).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sre_resilience::{Backoff, BreakerConfig, BreakerState, CallError, RateLimit, Retryable, Upstream, UpstreamConfig};
use tokio_util::sync::CancellationToken;

/// A turn further away than this is not waited for in a worker: the fact is handed back
/// to the bus until then. Nearer ones (a near-limit pause, the next grant of a busy
/// window) are waited for: each hand-back costs the fact a delivery of its `max_deliver`.
pub const HAND_BACK_OVER: Duration = Duration::from_secs(5);
/// A grant held for a handed-back fact that comes back later than this after its turn is
/// given up (it stays counted where it was) and a new one taken: used late, its request
/// would reach the vendor later than the window counts it, and the grants given out after
/// it could then make one too many in the vendor's minute. Within this, the window's margin
/// (2%) covers it.
pub const LATE_GRANT: Duration = Duration::from_secs(1);
/// How old a replica's knowledge of a credential's shared pause may be.
pub const PAUSE_FRESH: Duration = Duration::from_secs(2);
/// Grants reserved for facts that never came back (another replica took them) are
/// forgotten after this long.
const GRANT_FORGOTTEN: Duration = Duration::from_secs(3600);

tokio::task_local! {
    static FACT: u64;
}

/// The key of the sender's rate windows in the sink's bucket.
pub const WINDOWS_KEY: &str = "windows.sender";
/// A write of the windows, or the read of a predecessor's, not answered in this long is
/// given up (the next grant writes them again; a successor starts from empty windows).
const WINDOWS_WITHIN: Duration = Duration::from_secs(2);

/// Runs the handling of the fact at `stream_sequence`: the grants its calls reserve are
/// kept for it when it is handed back, and used when it comes again.
pub async fn for_fact<F: Future>(stream_sequence: u64, handling: F) -> F::Output {
    FACT.scope(stream_sequence, handling).await
}

/// The sender's windows as kept in the bucket, in wall-clock time (replicas share no
/// monotonic clock).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SharedWindows {
    /// The sender that kept them (a replica taking the lease again skips its own).
    holder: String,
    /// When they were written (Unix milliseconds).
    at_unix_ms: u64,
    credentials: Vec<SharedWindow>,
}

/// One credential's window. The credential is its configured name (a secret *reference*),
/// never the secret.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SharedWindow {
    vendor: String,
    credential: String,
    /// How long before `at_unix_ms` each grant was made, oldest first.
    grants_ago_ms: Vec<u64>,
}

/// A credential's pause as this replica knows it.
#[derive(Debug, Clone, Copy, Default)]
struct Pause {
    until: Option<Instant>,
    read_at: Option<Instant>,
}

/// The pause kept in the bucket, in wall-clock time (replicas share no monotonic clock).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SharedPause {
    until_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A vendor a sink calls (each sink's provider enum).
pub trait Vendor: Copy + Ord + Hash + Debug + Send + Sync + 'static {
    /// Its name in logs, metrics, readiness and errors (`jira`, `pagerduty`).
    fn name(self) -> &'static str;
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VendorLabels {
    provider: &'static str,
}

/// The vendors of one sink, with an upstream per credential; shared by every task of
/// the sink.
pub struct Vendors<P: Vendor> {
    limits: BTreeMap<P, Option<NonZeroU32>>,
    upstreams: Mutex<HashMap<(P, String), Upstream>>,
    grants: Mutex<HashMap<(P, String, u64), Instant>>,
    pauses: Mutex<HashMap<(P, String), Pause>>,
    shared: OnceLock<sre_bus::Kv>,
    /// Told of every grant, so [`Vendors::keep_windows`] writes the windows again.
    granted: tokio::sync::Notify,
    /// This sender has taken on its predecessor's windows ([`Vendors::adopt_windows`]):
    /// only then are its own written over them.
    adopted: std::sync::atomic::AtomicBool,
    /// The vendors whose credentials take one request at a time ([`Vendors::one_at_a_time`]),
    /// and each such credential's turn.
    serial: std::collections::BTreeSet<P>,
    turns: Mutex<HashMap<(P, String), std::sync::Arc<tokio::sync::Semaphore>>>,
    verdicts: Mutex<BTreeMap<P, Result<(), String>>>,
    seconds: Family<VendorLabels, Histogram>,
}

impl<P: Vendor> Debug for Vendors<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vendors").field("vendors", &self.limits.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// The breaker states from worst to best.
fn rank(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

impl<P: Vendor> Vendors<P> {
    /// The configured vendors, each with its requests per minute per credential (0: no
    /// limit of ours).
    pub fn new(per_minute: impl IntoIterator<Item = (P, u32)>) -> Self {
        Self {
            limits: per_minute.into_iter().map(|(p, n)| (p, NonZeroU32::new(n))).collect(),
            upstreams: Mutex::new(HashMap::new()),
            grants: Mutex::new(HashMap::new()),
            pauses: Mutex::new(HashMap::new()),
            shared: OnceLock::new(),
            granted: tokio::sync::Notify::new(),
            adopted: std::sync::atomic::AtomicBool::new(false),
            serial: std::collections::BTreeSet::new(),
            turns: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(BTreeMap::new()),
            seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 12))),
        }
    }

    /// Makes `vendor`'s calls one at a time per credential, in this replica (the sender):
    /// GitHub asks for a token's requests to be made serially, not concurrently, to stay
    /// clear of its secondary limits. The rest go on meanwhile.
    #[must_use]
    pub fn one_at_a_time(mut self, vendor: P) -> Self {
        self.serial.insert(vendor);
        self
    }

    /// The turn of a serial vendor's credential (`None` for the others).
    fn serial_turn(&self, vendor: P, credential: &str) -> Option<std::sync::Arc<tokio::sync::Semaphore>> {
        if !self.serial.contains(&vendor) {
            return None;
        }
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        let turn = turns
            .entry((vendor, credential.to_owned()))
            .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));
        Some(turn.clone())
    }

    /// Registers `<prefix>_vendor_seconds{provider}`, each configured vendor's series at 0.
    pub fn register(&self, r: &mut Registry, prefix: &str) {
        for vendor in self.limits.keys() {
            let _ = self.seconds.get_or_create(&VendorLabels { provider: vendor.name() });
        }
        r.register(format!("{prefix}_vendor_seconds"), "Time of a vendor call, retries included", self.seconds.clone());
    }

    /// The configured vendors.
    pub fn configured(&self) -> impl Iterator<Item = P> + '_ {
        self.limits.keys().copied()
    }

    /// Whether `vendor` is configured.
    pub fn is_configured(&self, vendor: P) -> bool {
        self.limits.contains_key(&vendor)
    }

    /// The upstream of `vendor`'s `credential`, made on first use.
    pub fn upstream(&self, vendor: P, credential: &str) -> Upstream {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        upstreams
            .entry((vendor, credential.to_owned()))
            .or_insert_with(|| {
                Upstream::new(UpstreamConfig {
                    name: vendor.name(),
                    backoff: Backoff::default(),
                    breaker: BreakerConfig::default(),
                    rate_limit: self.limits.get(&vendor).copied().flatten().map(RateLimit::per_minute),
                })
            })
            .clone()
    }

    /// Keeps the credentials' pauses in `kv` (the sink's bucket, keys `pause.<vendor>.<token>`),
    /// so a pause one replica was asked for holds on every replica.
    pub fn share_pauses(&self, kv: sre_bus::Kv) {
        let _ = self.shared.set(kv);
    }

    /// Every credential's window as it fills now, for a successor.
    fn windows(&self, holder: &str) -> SharedWindows {
        let upstreams: Vec<((P, String), Upstream)> = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, u)| (k.clone(), u.clone()))
            .collect();
        let now = Instant::now();
        let credentials = upstreams
            .into_iter()
            .filter_map(|((vendor, credential), upstream)| {
                let grants = upstream.recent_grants();
                (!grants.is_empty()).then(|| SharedWindow {
                    vendor: vendor.name().to_owned(),
                    credential,
                    grants_ago_ms: grants
                        .iter()
                        .map(|g| u64::try_from(now.saturating_duration_since(*g).as_millis()).unwrap_or(u64::MAX))
                        .collect(),
                })
            })
            .collect();
        SharedWindows { holder: holder.to_owned(), at_unix_ms: unix_ms(SystemTime::now()), credentials }
    }

    /// While this replica sends (`lead`), keeps its windows in the bucket for the next
    /// sender: written again after each grant, one write at a time (grants made meanwhile
    /// go with the next), off the calls' path. Runs until `cancel`, then writes once more
    /// if the windows kept are still this replica's.
    pub async fn keep_windows(&self, holder: String, lead: crate::lead::Leadership, cancel: CancellationToken) {
        let Some(kv) = self.shared.get() else { return };
        let write = |value: Vec<u8>, revision: Option<u64>| async move {
            let put = async {
                match revision {
                    Some(revision) => kv.update(WINDOWS_KEY, value.into(), revision).await,
                    None => kv.put(WINDOWS_KEY, value.into()).await,
                }
            };
            match tokio::time::timeout(WINDOWS_WITHIN, put).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "rate windows not kept for a successor"),
                Err(_) => tracing::debug!("rate windows not kept for a successor: no answer in time"),
            }
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.granted.notified() => {}
            }
            // Not before the predecessor's windows are taken on: a job's first call right
            // after the lease was taken would otherwise write over them unread.
            if lead.leading() && self.adopted.load(std::sync::atomic::Ordering::SeqCst) {
                write(serde_json::to_vec(&self.windows(&holder)).unwrap_or_default(), None).await;
            }
        }
        // Stopping: the calls that ended meanwhile, unless a successor already keeps its own.
        let Ok(Ok(Some(entry))) = tokio::time::timeout(WINDOWS_WITHIN, kv.get(WINDOWS_KEY)).await else { return };
        if serde_json::from_slice::<SharedWindows>(&entry.value).is_ok_and(|kept| kept.holder == holder) {
            write(serde_json::to_vec(&self.windows(&holder)).unwrap_or_default(), Some(entry.revision)).await;
        }
    }

    /// Takes on the windows the previous sender kept, as this replica (`holder`) takes the
    /// lease, so every credential's limit holds across the handover; returns how many
    /// credentials. Its own windows (the lease taken again) are not counted twice.
    pub async fn adopt_windows(&self, holder: &str) -> usize {
        let adopted = self.adopt_windows_inner(holder).await;
        self.adopted.store(true, std::sync::atomic::Ordering::SeqCst);
        adopted
    }

    /// Whether this replica sends with its predecessor's windows taken on: what a leader-only
    /// job waits for, so its calls are counted in the windows the vendor sees.
    pub fn windows_taken_on(&self) -> bool {
        self.adopted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This replica no longer sends: its windows are not written again until it has taken
    /// on the next predecessor's.
    pub fn stand_by(&self) {
        self.adopted.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    async fn adopt_windows_inner(&self, holder: &str) -> usize {
        let Some(kv) = self.shared.get() else { return 0 };
        let entry = match tokio::time::timeout(WINDOWS_WITHIN, kv.get(WINDOWS_KEY)).await {
            Ok(Ok(entry)) => entry,
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("the previous sender's rate windows could not be read: starting from empty ones");
                return 0;
            }
        };
        let Some(kept) = entry.and_then(|e| serde_json::from_slice::<SharedWindows>(&e.value).ok()) else { return 0 };
        self.take_on(kept, holder)
    }

    /// Seeds the upstreams with the windows `kept` by another sender than `holder`.
    fn take_on(&self, kept: SharedWindows, holder: &str) -> usize {
        if kept.holder == holder {
            return 0;
        }
        let now = Instant::now();
        // How long ago they were written, by the wall clock.
        let since = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(kept.at_unix_ms));
        let mut adopted = 0;
        for window in kept.credentials {
            let Some(vendor) = self.limits.keys().copied().find(|v| v.name() == window.vendor) else { continue };
            let grants: Vec<Instant> = window
                .grants_ago_ms
                .iter()
                .filter_map(|ago| now.checked_sub(since + Duration::from_millis(*ago)))
                .collect();
            self.upstream(vendor, &window.credential).seed_grants(grants);
            adopted += 1;
        }
        adopted
    }

    fn pause_key(vendor: P, credential: &str) -> String {
        format!("pause.{}.{}", vendor.name(), crate::records::token(credential))
    }

    /// How long `vendor`'s `credential` is still paused, as every replica sees it.
    pub async fn paused_for(&self, vendor: P, credential: &str) -> Option<Duration> {
        let id = (vendor, credential.to_owned());
        let now = Instant::now();
        let known = self.pauses.lock().unwrap_or_else(PoisonError::into_inner).get(&id).copied().unwrap_or_default();
        let fresh = known.read_at.is_some_and(|at| now.duration_since(at) < PAUSE_FRESH);
        let mut until = known.until;
        if !fresh && let Some(kv) = self.shared.get() {
            // Not answering is no pause: the local one still holds, and the limit too.
            if let Ok(entry) = kv.get(&Self::pause_key(vendor, credential)).await {
                let shared = entry.and_then(|e| serde_json::from_slice::<SharedPause>(&e.value).ok());
                let left = shared.map(|p| p.until_unix_ms.saturating_sub(unix_ms(SystemTime::now())));
                let theirs = left.filter(|ms| *ms > 0).map(|ms| now + Duration::from_millis(ms));
                until = until.max(theirs);
                let mut pauses = self.pauses.lock().unwrap_or_else(PoisonError::into_inner);
                let entry = pauses.entry(id).or_default();
                entry.until = entry.until.max(until);
                entry.read_at = Some(now);
            }
        }
        until.filter(|u| *u > now).map(|u| u - now)
    }

    /// Pauses `vendor`'s `credential` for `wait` on this replica, and on the others
    /// through the bucket.
    pub async fn pause(&self, vendor: P, credential: &str, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let mut pauses = self.pauses.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = pauses.entry((vendor, credential.to_owned())).or_default();
            if entry.until.is_some_and(|u| u >= until) {
                return;
            }
            entry.until = Some(until);
        }
        tracing::warn!(
            provider = vendor.name(),
            wait_ms = wait.as_millis() as u64,
            "the vendor asked to slow down: every replica pauses this credential"
        );
        if let Some(kv) = self.shared.get() {
            let shared = SharedPause { until_unix_ms: unix_ms(SystemTime::now() + wait) };
            let value = serde_json::to_vec(&shared).unwrap_or_default();
            if let Err(e) = kv.put(&Self::pause_key(vendor, credential), value.into()).await {
                tracing::warn!(provider = vendor.name(), error = %e, "pause not shared: the other replicas learn it from the vendor");
            }
        }
    }

    /// This fact's turn with the upstream: `Ok(true)` with a grant due now (waited for
    /// when near), `Ok(false)` outside a fact (the call waits for its grant itself), or
    /// how long until the turn when that is further than [`HAND_BACK_OVER`].
    async fn turn(&self, vendor: P, credential: &str, upstream: &Upstream) -> Result<bool, Duration> {
        let Ok(fact) = FACT.try_with(|f| *f) else { return Ok(false) };
        let id = (vendor, credential.to_owned(), fact);
        let now = Instant::now();
        let held = self.grants.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        let held = held.filter(|at| now.saturating_duration_since(*at) <= LATE_GRANT);
        let Some(at) = held.or_else(|| upstream.reserve()) else { return Ok(false) };
        if at > now + HAND_BACK_OVER {
            let mut grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
            grants.retain(|_, g| now.saturating_duration_since(*g) < GRANT_FORGOTTEN);
            grants.insert(id, at);
            return Err(at - now);
        }
        tokio::time::sleep_until(at).await;
        Ok(true)
    }

    /// Makes one call with `vendor`'s `credential` through its upstream (the only retry
    /// loop), and times it. Within a fact, a turn further than [`HAND_BACK_OVER`] away
    /// (the rate limit, a pause) ends the call with [`CallError::Deferred`] and nothing
    /// sent; outside one, the call waits for it. A slowdown the answers ask for pauses the
    /// credential for everyone.
    pub async fn call<T, E, F, Fut>(&self, vendor: P, credential: &str, op: F) -> Result<T, CallError<E>>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let upstream = self.upstream(vendor, credential);
        let in_fact = FACT.try_with(|_| ()).is_ok();
        // A serial credential's request waits for the one before it to be answered (within
        // a fact, no longer than a turn is waited for), then for a pause that answer asked
        // for, then for its rate turn, so it leaves when its grant is counted.
        let serial = self.serial_turn(vendor, credential);
        let _one = match &serial {
            Some(turn) if in_fact => match tokio::time::timeout(HAND_BACK_OVER, turn.acquire()).await {
                Ok(permit) => permit.ok(),
                Err(_) => {
                    return Err(CallError::Deferred {
                        retry_in: HAND_BACK_OVER,
                        why: "the credential's previous request still running",
                    });
                }
            },
            Some(turn) => turn.acquire().await.ok(),
            None => None,
        };
        if let Some(left) = self.paused_for(vendor, credential).await {
            if left > HAND_BACK_OVER && in_fact {
                return Err(CallError::Deferred { retry_in: left, why: "the vendor asked to slow down" });
            }
            tokio::time::sleep(left).await;
        }
        let granted = match self.turn(vendor, credential, &upstream).await {
            Ok(granted) => granted,
            Err(retry_in) => return Err(CallError::Deferred { retry_in, why: "rate limit of the credential" }),
        };
        // The window changed (this grant), or will within the call (a grant taken by it).
        self.granted.notify_one();
        let started = tokio::time::Instant::now();
        let call = async {
            if in_fact {
                upstream.call_handing_back(op, granted, HAND_BACK_OVER).await
            } else {
                upstream.call(op).await
            }
        };
        let (result, slowdown) = sre_runtime::outbound::observing_slowdown(call).await;
        self.seconds.get_or_create(&VendorLabels { provider: vendor.name() }).observe(started.elapsed().as_secs_f64());
        self.granted.notify_one();
        if let Some(wait) = slowdown.filter(|w| !w.is_zero()) {
            self.pause(vendor, credential, wait).await;
        }
        result
    }

    /// Records the verdict of `vendor`'s credentials check (readiness reports a refusal).
    pub fn credentials_checked(&self, vendor: P, verdict: Result<(), String>) {
        if let Err(reason) = &verdict {
            tracing::error!(provider = vendor.name(), reason = %reason, "vendor check failed: not ready");
        }
        self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).insert(vendor, verdict);
    }

    /// Readiness of `vendor`: its credentials were not refused, and none of its breakers
    /// is open.
    pub fn ready(&self, vendor: P) -> Result<(), String> {
        if let Some(Err(e)) = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).get(&vendor) {
            return Err(e.clone());
        }
        let upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = upstreams.iter().filter(|((p, _), u)| *p == vendor && u.breaker_state() == BreakerState::Open);
        match open.count() {
            0 => Ok(()),
            n => Err(format!("circuit open for {n} credential(s): the vendor is failing; facts wait on the bus")),
        }
    }

    /// Each configured vendor's worst breaker (closed before any call), for the metrics.
    pub fn breaker_states(&self) -> Vec<(&'static str, BreakerState)> {
        let upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        self.limits
            .keys()
            .map(|vendor| {
                let worst = upstreams
                    .iter()
                    .filter(|((p, _), _)| p == vendor)
                    .map(|(_, u)| u.breaker_state())
                    .max_by_key(|s| rank(*s))
                    .unwrap_or(BreakerState::Closed);
                (vendor.name(), worst)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Tool {
        Pager,
        Tracker,
    }

    impl Vendor for Tool {
        fn name(self) -> &'static str {
            match self {
                Tool::Pager => "pager",
                Tool::Tracker => "tracker",
            }
        }
    }

    #[derive(Debug)]
    struct Down;

    impl Retryable for Down {
        fn class(&self) -> sre_resilience::ErrorClass {
            sre_resilience::ErrorClass::Transient
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_credential_has_its_own_breaker_and_readiness_names_the_vendor() {
        let vendors = Vendors::new([(Tool::Pager, 120), (Tool::Tracker, 0)]);
        assert_eq!(vendors.breaker_states(), vec![("pager", BreakerState::Closed), ("tracker", BreakerState::Closed)]);
        // One routing key fails until its breaker opens; the other key's stays closed.
        for _ in 0..10 {
            let _ = vendors.call(Tool::Pager, "platform/pd-payments", || async { Err::<(), _>(Down) }).await;
        }
        let ok = vendors.call(Tool::Pager, "platform/pd-default", || async { Ok::<_, Down>(7) }).await;
        assert_eq!(ok.ok(), Some(7));
        assert_eq!(vendors.upstream(Tool::Pager, "platform/pd-default").breaker_state(), BreakerState::Closed);
        assert_eq!(vendors.upstream(Tool::Pager, "platform/pd-payments").breaker_state(), BreakerState::Open);
        assert_eq!(vendors.breaker_states()[0], ("pager", BreakerState::Open), "the worst of the vendor's");
        let not_ready = vendors.ready(Tool::Pager).expect_err("a breaker is open");
        assert!(not_ready.starts_with("circuit open for 1 credential(s)"), "{not_ready}");
        assert_eq!(vendors.ready(Tool::Tracker), Ok(()));
        vendors.credentials_checked(Tool::Tracker, Err("credentials refused: 401".into()));
        assert_eq!(vendors.ready(Tool::Tracker), Err("credentials refused: 401".into()));
        vendors.credentials_checked(Tool::Tracker, Ok(()));
        assert_eq!(vendors.ready(Tool::Tracker), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_serial_credential_takes_one_request_at_a_time_and_the_others_go_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let vendors = Vendors::new([(Tool::Pager, 0), (Tool::Tracker, 0)]).one_at_a_time(Tool::Tracker);
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let request = || async {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Down>(())
        };
        let started = Instant::now();
        let token = futures::future::join_all((0..5).map(|_| vendors.call(Tool::Tracker, "gh-token", request))).await;
        assert!(token.iter().all(Result::is_ok));
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once on one token");
        assert_eq!(started.elapsed(), Duration::from_millis(500), "one after the other");
        // Two tokens, and a vendor without the rule: concurrent.
        most.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let _ = futures::future::join(
            vendors.call(Tool::Tracker, "gh-token", request),
            vendors.call(Tool::Tracker, "gh-other-token", request),
        )
        .await;
        let _ = futures::future::join_all((0..3).map(|_| vendors.call(Tool::Pager, "pd", request))).await;
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handed_back_fact_uses_its_grant_on_time_and_takes_a_new_one_when_late() {
        let vendors = Vendors::new([(Tool::Pager, 1), (Tool::Tracker, 0)]);
        let send = |fact| for_fact(fact, vendors.call(Tool::Pager, "pd", || async { Ok::<_, Down>(()) }));
        assert!(send(1).await.is_ok());
        let Err(CallError::Deferred { retry_in, .. }) = send(2).await else { panic!("the second in the minute waits") };
        let Err(CallError::Deferred { retry_in: third, .. }) = send(3).await else { panic!("and the third") };
        // Back on time: its held grant is used.
        tokio::time::advance(retry_in).await;
        assert!(send(2).await.is_ok());
        // Back 5 s late: its grant is given up and the next free one (after fact 2's
        // minute) reserved instead; sent now, it would be one too many in the vendor's minute.
        tokio::time::advance(third - retry_in + Duration::from_secs(5)).await;
        match send(3).await {
            Err(CallError::Deferred { retry_in, .. }) => assert!(retry_in > Duration::from_secs(50), "{retry_in:?}"),
            other => panic!("a late grant is not used: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_sender_holds_the_window_its_predecessor_began() {
        let first = Vendors::new([(Tool::Pager, 3), (Tool::Tracker, 0)]);
        for fact in 0..3 {
            let sent = for_fact(fact, first.call(Tool::Pager, "pd-payments", || async { Ok::<_, Down>(()) })).await;
            assert!(sent.is_ok());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        // Kept as the bucket keeps it, and taken on by the next sender.
        let kept = serde_json::to_vec(&first.windows("first")).expect("encodes");
        let decode = || serde_json::from_slice::<SharedWindows>(&kept).expect("decodes");
        let next = Vendors::new([(Tool::Pager, 3), (Tool::Tracker, 0)]);
        assert_eq!(next.take_on(decode(), "next"), 1, "the one credential with grants");
        let deferred = for_fact(9, next.call(Tool::Pager, "pd-payments", || async { Ok::<_, Down>(()) })).await;
        match deferred {
            Err(CallError::Deferred { retry_in, .. }) => {
                // The first grant leaves the window (a minute and 2%) 10 s after it was made.
                let left = Duration::from_millis(61_200 - 10_000);
                assert!(retry_in.abs_diff(left) < Duration::from_millis(5), "{retry_in:?}");
            }
            other => panic!("the fourth event in the minute is handed back, not sent: {other:?}"),
        }
        // Another credential is not held by it.
        let other = for_fact(10, next.call(Tool::Pager, "pd-default", || async { Ok::<_, Down>(()) })).await;
        assert!(other.is_ok());
        // A replica taking the lease again does not count its own grants twice.
        assert_eq!(first.take_on(decode(), "first"), 0);
        let fresh = Vendors::new([(Tool::Pager, 3), (Tool::Tracker, 0)]);
        let mut stale = decode();
        stale.at_unix_ms -= 70_000;
        assert_eq!(fresh.take_on(stale, "fresh"), 1);
        let sent = for_fact(11, fresh.call(Tool::Pager, "pd-payments", || async { Ok::<_, Down>(()) })).await;
        assert!(sent.is_ok(), "grants older than the window are not taken on");
    }
}
