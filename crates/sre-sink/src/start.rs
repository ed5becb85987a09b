//! A sink's start, once: its vendors' and receivers' metrics, its receivers, then (once
//! the bus has its streams) its records, the sender lease ([`crate::lead`]), the sink
//! itself, its jobs beside the consumer, its readiness, and the durable consumer dealing
//! it facts, while this replica holds the lease, until shutdown.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::SecretString;
use sre_bus::{ConsumerConfig, Disposition, FactConsumer, FactHandler, ReceivedFact};
use sre_runtime::inbound::{Refusal, Webhook};
use sre_runtime::{ServiceContext, axum::Router};
use tokio_util::sync::CancellationToken;

use crate::facts::IncidentFact;
use crate::lead::Leadership;
use crate::receiver::{ReceiverMetrics, ReceiverSettings, Receivers};
use crate::records::{Bucket, Read, Record, RecordError, Records};
use crate::vendors::{Vendor, Vendors};
use crate::watch::SinkWatch;

/// A fact sink: what it does with each incident fact its consumer is filtered to. Must be
/// idempotent (a fact can come again after a crash, a timeout or a NAK) and must not
/// acknowledge before its effect is durable.
pub trait Sink: Send + Sync + 'static {
    /// Decides what happens to one fact.
    fn handle(&self, fact: IncidentFact) -> impl Future<Output = Disposition> + Send;
}

struct Handler<S>(Arc<S>);

impl<S: Sink> FactHandler for Handler<S> {
    async fn handle(&self, fact: ReceivedFact) -> Disposition {
        match IncidentFact::decode(&fact) {
            Ok(Some(decoded)) => crate::vendors::for_fact(fact.stream_sequence, self.0.handle(decoded)).await,
            Ok(None) => Disposition::Ack,
            Err(dead) => dead,
        }
    }
}

/// A sink's records, once open: receivers are served from the start and answer 503 until
/// then. Cheap to clone.
pub struct RecordsCell<R>(Arc<OnceLock<Records<R>>>);

impl<R> Clone for RecordsCell<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R> Default for RecordsCell<R> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<R> std::fmt::Debug for RecordsCell<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordsCell").field("open", &self.0.get().is_some()).finish()
    }
}

impl<R: Record> RecordsCell<R> {
    /// The records, once open.
    pub fn get(&self) -> Option<&Records<R>> {
        self.0.get()
    }

    /// The record of `incident_id` for a receiver: 503 while the records are not open or
    /// do not answer, or the record cannot be read (the sender retries, and the operator's
    /// alert on 503s names it).
    pub async fn read(&self, incident_id: &str) -> Result<Option<Read<R>>, Refusal> {
        let records = self.get().ok_or_else(|| Refusal::unavailable("records not open yet"))?;
        records.get(incident_id).await.map_err(|e| {
            if let RecordError::Corrupt { .. } = &e {
                tracing::error!(%incident_id, error = %e, "a webhook's record cannot be read");
            }
            Refusal::unavailable(e.to_string())
        })
    }
}

/// Work a sink does beside its consumer, every so often until shutdown (a credentials
/// check, the deferred-page scan).
pub struct Job {
    what: &'static str,
    every: Duration,
    at_start: bool,
    jittered: bool,
    leader_only: bool,
    run: Box<dyn FnMut() -> BoxFuture<'static, ()> + Send>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("what", &self.what).field("every", &self.every).finish_non_exhaustive()
    }
}

impl Job {
    /// `run`, every `every`, the first time one interval after start.
    pub fn every<F, Fut>(what: &'static str, every: Duration, mut run: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            what,
            every,
            at_start: false,
            jittered: false,
            leader_only: false,
            run: Box::new(move || Box::pin(run())),
        }
    }

    /// The first run at once.
    pub fn at_start(mut self) -> Self {
        self.at_start = true;
        self
    }

    /// Run only on the replica holding the sender lease, but for the run at start (a job
    /// that calls vendors: their limits are held there).
    pub fn leader_only(mut self) -> Self {
        self.leader_only = true;
        self
    }

    /// Each wait ±10%, so replicas doing the same job spread out.
    pub fn jittered(mut self) -> Self {
        self.jittered = true;
        self
    }

    fn wait(&self) -> Duration {
        if self.jittered { self.every.mul_f64(0.9 + rand::random::<f64>() * 0.2) } else { self.every }
    }

    /// Runs until `cancel`; a leader-only job's runs after the first only while `sending`
    /// (the lease held and the predecessor's rate windows taken on).
    async fn run(mut self, cancel: CancellationToken, sending: impl Fn() -> bool + Send) {
        tracing::debug!(job = self.what, every = ?self.every, "job started");
        let mine = |job: &Self| !job.leader_only || sending();
        // The run at start is every replica's, leader-only or not: a pod checks what it
        // was given as it starts, so a rollout stops on a bad credential.
        if self.at_start {
            (self.run)().await;
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.wait()) => {}
            }
            if mine(&self) {
                (self.run)().await;
            }
        }
    }
}

/// What the sink's `build` hands back once its records are open.
pub struct Started<S> {
    /// The sink.
    pub sink: Arc<S>,
    /// Its jobs beside the consumer.
    pub jobs: Vec<Job>,
}

/// A sink being started: what every sink wires the same way.
#[derive(Debug)]
pub struct SinkStart<'a, C, P: Vendor> {
    ctx: &'a ServiceContext<C>,
    vendors: Arc<Vendors<P>>,
    receivers: Receivers<'a, C>,
}

impl<'a, C, P: Vendor> SinkStart<'a, C, P> {
    /// Starts wiring the sink of `ctx` calling `vendors`; registers the vendors' and the
    /// receivers' metrics under the sink's name (`ticketing_sink_vendor_seconds`, …).
    pub fn new(ctx: &'a ServiceContext<C>, vendors: Vendors<P>) -> Self {
        let prefix = ctx.spec.name.replace('-', "_");
        let receiver_metrics = ReceiverMetrics::default();
        ctx.metrics.register(|r| {
            vendors.register(r, &prefix);
            receiver_metrics.register(r, &prefix);
        });
        Self { ctx, vendors: Arc::new(vendors), receivers: Receivers::new(ctx, receiver_metrics) }
    }

    /// The vendors, shared with the sink.
    pub fn vendors(&self) -> Arc<Vendors<P>> {
        self.vendors.clone()
    }

    /// The receivers' metrics, for the receivers to count in.
    pub fn receiver_metrics(&self) -> ReceiverMetrics {
        self.receivers.metrics().clone()
    }

    /// Mounts a vendor's receiver when its settings turn it on (see [`Receivers::mount`]).
    pub fn mount<S, W>(
        &mut self,
        vendor: P,
        key: &str,
        settings: Option<&S>,
        build: impl FnOnce(Vec<SecretString>, &S) -> W,
    ) -> anyhow::Result<()>
    where
        S: ReceiverSettings,
        W: Webhook,
    {
        self.receivers.mount(vendor.name(), key, settings, build)
    }

    /// Spawns the sink: once the bus has its streams, opens the records in `bucket` (into
    /// `cell`, for the receivers), has `build` make the sink and its jobs, registers each
    /// vendor's readiness and the breakers' gauge, then binds `consumer` and deals it
    /// facts until shutdown. Returns the receivers' routes.
    pub fn spawn<R, S>(
        self,
        bucket: Bucket,
        consumer: ConsumerConfig,
        cell: RecordsCell<R>,
        build: impl FnOnce(Records<R>) -> Started<S> + Send + 'static,
    ) -> Router
    where
        R: Record,
        S: Sink,
    {
        let ctx = self.ctx;
        let (bus, cancel, tasks, health) =
            (ctx.bus.clone(), ctx.shutdown.clone(), ctx.tasks.clone(), ctx.health.clone());
        let watch = SinkWatch::register(&ctx.health, &ctx.metrics, &ctx.spec.name.replace('-', "_"), bucket.name);
        let vendors = self.vendors;
        ctx.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = bus.wait_for_topology() => {}
            }
            let Some(records) =
                sre_runtime::until_ok("records", &cancel, || Records::<R>::open(&bus, &bucket, watch.kv.clone())).await
            else {
                return;
            };
            tasks.spawn({
                let (records, stop) = (records.clone(), cancel.clone());
                async move { records.probe(SinkWatch::KV_PROBE_EVERY, stop).await }
            });
            let _ = cell.0.set(records.clone());
            vendors.share_pauses(records.kv().unwatched());
            let holder = format!("{}/{:08x}", bus.source().instance, rand::random::<u32>());
            let (lead, leasing) = Leadership::run(records.kv().unwatched(), holder.clone(), cancel.clone(), {
                let leader = watch.leader.clone();
                move |leading| {
                    leader.set(i64::from(leading));
                }
            });
            tasks.spawn(leasing);
            tasks.spawn({
                let (vendors, lead, holder, stop) = (vendors.clone(), lead.clone(), holder.clone(), cancel.clone());
                async move { vendors.keep_windows(holder, lead, stop).await }
            });
            let Started { sink, jobs } = build(records);
            tasks.spawn({
                let (vendors, stop) = (vendors.clone(), cancel.clone());
                watch.breakers.clone().watch(sre_runtime::BreakerMetrics::EVERY, stop, move || vendors.breaker_states())
            });
            for vendor in vendors.configured() {
                let vendors = vendors.clone();
                health.register(vendor.name(), Arc::new(move || vendors.ready(vendor)));
            }
            for job in jobs {
                let (lead, vendors) = (lead.clone(), vendors.clone());
                tasks.spawn(job.run(cancel.clone(), move || lead.leading() && vendors.windows_taken_on()));
            }
            // Every replica binds (the consumer is checked and readiness follows it); only
            // the lease holder pulls.
            let Some(bound) =
                sre_runtime::until_ok("fact consumer", &cancel, || FactConsumer::bind(&bus, consumer.clone())).await
            else {
                return;
            };
            watch.consumer.set(bound.reachability());
            let mut bound = Some(bound);
            let mut lead = lead;
            while lead.until_leading(&cancel).await {
                let consumer = match bound.take() {
                    Some(c) => c,
                    None => match sre_runtime::until_ok("fact consumer", &cancel, || {
                        FactConsumer::bind(&bus, consumer.clone())
                    })
                    .await
                    {
                        Some(c) => {
                            watch.consumer.set(c.reachability());
                            c
                        }
                        None => return,
                    },
                };
                let adopted = vendors.adopt_windows(&holder).await;
                tracing::info!(
                    credentials = adopted,
                    "consuming incident facts (the previous sender's rate windows taken on)"
                );
                let term = cancel.child_token();
                let mut lost = lead.clone();
                let mut run = std::pin::pin!(consumer.run(Handler(sink.clone()), term.clone()));
                let result = tokio::select! {
                    result = &mut run => result,
                    () = lost.until_not_leading() => {
                        term.cancel();
                        run.await
                    }
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "fact consumer stopped");
                }
                vendors.stand_by();
                if !cancel.is_cancelled() {
                    tracing::info!("no longer the sender: facts handed back, standing by");
                }
            }
        });
        self.receivers.into_router()
    }
}
