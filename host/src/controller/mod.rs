//! `vapgen run`: the race-free VAP controller.
//!
//! ```text
//!  watches ──► World (caches) ──► Queue (per-kind serial) ──► reconcilers ──► Cluster
//!  templates, VAPs, VAPBs,          Template(name)             template: decide, VAP,   (leader-only:
//!  CRDs, constraints per kind       Constraint(kind,name)      publish record           SSA, deletes
//!                                                               constraint: read record, with preconditions,
//!                                                               binding                   status, Events)
//! ```
//!
//! Every replica watches and keeps warm caches; only the Lease holder reconciles and writes.
//! When a replica becomes leader it requeues everything and re-derives all decisions before
//! its first write. See [`reconcile`] for the ordering rules that make it race-free.

pub mod compare;
pub mod crds;
pub mod feed;
pub mod kube;
pub mod leader;
pub mod metrics;
pub mod module_watch;
pub mod podstatus;
pub mod queue;
pub mod readiness;
pub mod reconcile;
pub mod record;
pub mod resources;
mod runner;
pub mod worker;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use vapgen_guest::model::Settings;

use self::kube::{KubeCluster, Watches};
use self::leader::Leader;
use self::metrics::Metrics;
use self::queue::{Key, Queue};
use self::reconcile::{Ctx, ReconcileConfig};
use self::record::Records;
use self::world::World;
use crate::runtime::{Decide, Decider};

/// Configuration of `vapgen run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Module settings (Gatekeeper's flags).
    pub settings: Settings,
    /// Reconciler settings.
    pub reconcile: ReconcileConfig,
    /// Use a Lease (false: this replica always leads; run one replica only).
    pub leader_elect: bool,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace (also where the readiness canary request goes).
    pub lease_namespace: String,
    /// Lease duration in seconds.
    pub lease_duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub lease_grace: u64,
    /// This replica's identity.
    pub identity: String,
    /// Where to serve /metrics, /healthz, /readyz and /debug/records.
    pub http_addr: Option<SocketAddr>,
    /// Use the admission canary in readiness probes.
    pub canary: bool,
    /// Concurrent reconciles (of different kinds).
    pub workers: usize,
    /// Requeue everything this often, as a safety net.
    pub resync: Duration,
    /// Hot swap: watch the module file (None: the module is fixed for the process's life).
    pub module_watch: Option<module_watch::ModuleWatch>,
}

/// Shared handles of a running controller (for the HTTP endpoints and tests).
#[derive(Clone)]
pub struct Handles {
    /// Caches.
    pub world: Arc<RwLock<World>>,
    /// Decision record.
    pub records: Arc<Mutex<Records>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Leadership.
    pub leader: Arc<Leader>,
    /// Work queue.
    pub queue: Queue,
    /// The module in use.
    pub decider: Arc<RwLock<Arc<dyn Decide>>>,
    /// Names of supervised tasks that ended (they never should while the controller runs).
    pub dead_tasks: Arc<Mutex<Vec<String>>>,
    /// Keys whose last reconcile panicked and that wait for their retry, with the panic
    /// message (shown by `/healthz`, which stays healthy: the panic is contained).
    pub panicked: Arc<Mutex<BTreeMap<String, String>>>,
}

/// What `/healthz` reports without failing: keys retrying after a panic.
pub fn health_notes(h: &Handles) -> Vec<String> {
    h.panicked
        .lock()
        .expect("panicked keys")
        .iter()
        .map(|(k, m)| format!("{k}: retrying after a panic: {m}"))
        .collect()
}

/// What makes `/healthz` fail, if anything: a supervised task that ended, or a reconcile
/// running for longer than [`http::STUCK_AFTER`].
pub fn health_problem(h: &Handles) -> Option<String> {
    let dead = h.dead_tasks.lock().expect("dead tasks").clone();
    if !dead.is_empty() {
        return Some(format!("tasks ended: {}", dead.join(", ")));
    }
    match h.queue.longest_running() {
        Some((key, d)) if d >= http::STUCK_AFTER => Some(format!(
            "reconcile of {key} has been running for {} s",
            d.as_secs()
        )),
        _ => None,
    }
}

/// A started controller: its handles, and the tasks to stop.
pub struct Controller {
    /// Shared state (caches, records, metrics, leadership, queue, module).
    pub handles: Handles,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ctx: Option<Arc<Ctx<KubeCluster>>>,
    watches: Option<Watches>,
    lease_task: Option<
        tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    >,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Lease could not be set up (read or created) in its namespace.
    #[error("cannot set up the lease {namespace}/{name}: {source}")]
    Lease {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// What the lease manager said.
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// The HTTP endpoints could not listen on their address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address of `--http-addr`.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: ::kube::Client,
    decider: Decider,
    cfg: RunConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let c = start(client, decider, cfg).await?;
    shutdown.await;
    tracing::info!("shutting down");
    c.stop().await;
    Ok(())
}

/// Starts watches, leader election, workers and the HTTP endpoints.
pub async fn start(
    client: ::kube::Client,
    decider: Decider,
    cfg: RunConfig,
) -> Result<Controller, StartError> {
    let world = Arc::new(RwLock::new(World::default()));
    let queue = Queue::default();
    let records = Arc::new(Mutex::new(Records::default()));
    let metrics = Arc::new(Metrics::default());
    let info = decider.info().clone();
    metrics.module(
        &info.name,
        &info.version,
        &info.interface_version,
        decider.sha256(),
    );
    tracing::info!(module = %info.name, version = %info.version, sha256 = %decider.sha256(), "decision module loaded");

    let (leader, lease_task) = if cfg.leader_elect {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
            .with_namespace(&cfg.lease_namespace)
            .with_identity(&cfg.identity)
            .with_duration(cfg.lease_duration)
            .with_grace(cfg.lease_grace)
            .build()
            .await
            .map_err(|source| StartError::Lease {
                namespace: cfg.lease_namespace.clone(),
                name: cfg.lease_name.clone(),
                source,
            })?;
        let (rx, task) = manager.watch().await;
        let l = Leader::elected(
            &cfg.identity,
            rx,
            client.clone(),
            &cfg.lease_namespace,
            &cfg.lease_name,
        );
        (Arc::new(l), Some(task))
    } else {
        (Arc::new(Leader::always(&cfg.identity)), None)
    };

    let dead: Arc<Mutex<Vec<String>>> = Arc::default();
    // Coexist mode (scope sync on, Gatekeeper's namespace known): Gatekeeper's per-pod status
    // objects show whether one of its pods runs `generate` too; while one does, vapgen writes
    // none of the objects both would write.
    let rivals = cfg.reconcile.scope_sync.as_ref().map(|s| feed::RivalWatch {
        namespace: s.watch.config_namespace.clone(),
        own_id: cfg.lease_name.clone(),
    });
    let watches = Watches::start(
        client.clone(),
        world.clone(),
        queue.clone(),
        dead.clone(),
        cfg.reconcile.scope_sync.as_ref().map(|s| &s.watch),
        rivals.as_ref(),
    );
    let cluster = KubeCluster::new(
        client.clone(),
        world.clone(),
        leader.clone(),
        &cfg.identity,
        cfg.canary.then(|| cfg.lease_namespace.clone()),
    );
    // Coexist mode (scope sync on, Gatekeeper's namespace known): statuses also go to
    // Gatekeeper's per-pod status objects, so its status operation shows vapgen in byPod.
    let (observer, pod_status_task): (Arc<dyn reconcile::Observer>, _) =
        match &cfg.reconcile.scope_sync {
            Some(s) => {
                let (o, task) = podstatus::PodStatusObserver::start(
                    client.clone(),
                    podstatus::PodStatusConfig {
                        namespace: s.watch.config_namespace.clone(),
                        id: cfg.lease_name.clone(),
                    },
                    metrics.clone(),
                );
                (Arc::new(o), Some(task))
            }
            None => (metrics.clone(), None),
        };
    let wasm_runtime = decider.runtime().clone();
    let active_sha256 = decider.sha256().to_string();
    let decider: Arc<RwLock<Arc<dyn Decide>>> = Arc::new(RwLock::new(Arc::new(decider)));
    let ctx = Arc::new(Ctx {
        cluster,
        world: world.clone(),
        records: records.clone(),
        decider: decider.clone(),
        settings: cfg.settings.clone(),
        queue: queue.clone(),
        config: cfg.reconcile.clone(),
        readiness: Mutex::default(),
        observer,
    });
    let handles = Handles {
        world: world.clone(),
        records: records.clone(),
        metrics: metrics.clone(),
        leader: leader.clone(),
        queue: queue.clone(),
        decider,
        dead_tasks: dead.clone(),
        panicked: Arc::default(),
    };

    let mut tasks: Vec<_> = pod_status_task.into_iter().collect();
    if let Some(addr) = cfg.http_addr {
        let h = handles.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz, /debug/records");
        tasks.push(tokio::spawn(async move { http::serve(listener, h).await }));
    }
    tasks.push(runner::supervise(
        &dead,
        &queue,
        "leadership",
        runner::leadership(handles.clone()),
    ));
    // Events on vapgen's Pod (or its Lease), for the module watch and the rival watch.
    let events = || {
        module_watch::ModuleEvents::new(
            client.clone(),
            &cfg.identity,
            &cfg.lease_namespace,
            &cfg.lease_name,
        )
    };
    if let Some(w) = cfg.module_watch.clone() {
        tasks.push(runner::supervise(
            &dead,
            &queue,
            "module-watch",
            module_watch::run(handles.clone(), wasm_runtime, w, active_sha256, events()),
        ));
    }
    if rivals.is_some() {
        tasks.push(runner::supervise(
            &dead,
            &queue,
            "rival-generators",
            runner::rivals(handles.clone(), events()),
        ));
    }
    tasks.push(runner::supervise(
        &dead,
        &queue,
        "housekeeping",
        runner::housekeeping(handles.clone(), cfg.resync),
    ));
    for i in 0..cfg.workers.max(1) {
        tasks.push(runner::supervise(
            &dead,
            &queue,
            &format!("worker-{i}"),
            runner::worker(
                ctx.clone(),
                leader.clone(),
                metrics.clone(),
                handles.panicked.clone(),
            ),
        ));
    }
    Ok(Controller {
        handles,
        tasks,
        ctx: Some(ctx),
        watches: Some(watches),
        lease_task,
    })
}

impl Controller {
    /// Stops every task and releases the lease, so a follower takes over at once.
    pub async fn stop(mut self) {
        self.handles.queue.close();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(w) = self.watches.take() {
            w.stop();
        }
        self.ctx = None;
        let lease_task = self.lease_task.take();
        drop(self);
        if let Some(t) = lease_task {
            // Every receiver is gone now: the lease manager releases the lease and ends.
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Every key a new leader (or a resync) reconciles to re-derive all decisions: each
/// template, each kind with a CRD and its constraints, and the owner of each VAP and binding
/// in the cache. The owners matter when they are gone: a follower drops the keys that the
/// watch of a deletion enqueued, so without them a binding whose constraint was deleted
/// just before a take-over (or a VAP whose template was) would never be looked at again.
pub fn requeue_keys(w: &World) -> Vec<Key> {
    let mut keys: Vec<Key> = w.templates.keys().cloned().map(Key::Template).collect();
    for c in w.crds.values() {
        keys.push(Key::Template(c.kind.to_ascii_lowercase()));
        for name in w
            .constraints
            .get(&c.kind.to_ascii_lowercase())
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            keys.push(Key::Constraint {
                kind: c.kind.clone(),
                name,
            });
        }
    }
    for v in w.vaps.values() {
        if let Some(c) = world::controller_of(v)
            && c.api_version.starts_with(crate::snapshot::TEMPLATE_GROUP)
        {
            keys.push(Key::Template(c.name));
        }
    }
    for b in w.vapbs.values() {
        if let Some(c) = world::controller_of(b)
            && c.api_version.starts_with(crate::snapshot::CONSTRAINT_GROUP)
        {
            keys.push(Key::Constraint {
                kind: c.kind,
                name: c.name,
            });
        }
    }
    keys
}

/// What a replica does when it starts a term as leader: forget the decisions of its earlier
/// terms (another leader may have undone them; every kind is Unknown until the template
/// reconciler speaks again, so nothing acts on them) and requeue everything.
pub fn begin_term(records: &Mutex<Records>, world: &RwLock<World>, queue: &Queue) {
    records.lock().expect("records").reset();
    resync(world, queue);
}

/// The periodic resync (and the requeue of a new term): every key of [`requeue_keys`] is
/// queued, so keys in a permanent error state are retried too.
pub fn resync(world: &RwLock<World>, queue: &Queue) {
    let keys = requeue_keys(&world.read().expect("world"));
    for k in keys {
        queue.add(k);
    }
}

pub(crate) fn requeue_all(h: &Handles) {
    resync(&h.world, &h.queue);
}

pub mod http;
