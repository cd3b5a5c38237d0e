//! Prometheus metrics of the controller.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::reconcile::{Observer, Target};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    target: String,
    verb: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    key: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    name: String,
    version: String,
    interface: String,
    sha256: String,
}

/// All metrics, registered in one registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    writes: Family<WriteLabels, Counter>,
    reconciles: Family<ReconcileLabels, Counter>,
    decisions: Family<StateLabels, Gauge>,
    queue_depth: Gauge,
    leader: Gauge,
    module: Family<ModuleLabels, Gauge>,
    module_rejected: Family<ShaLabels, Gauge>,
    module_swaps: Family<ResultLabels, Counter>,
    panics: Counter,
    rivals: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShaLabels {
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vapgen");
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "writes",
            "API writes by target (vap, vapb, crd), verb (apply, delete, status) and outcome",
            writes.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by key type (template, constraint) and result (ok, error, fenced, panic)",
            reconciles.clone(),
        );
        let decisions = Family::<StateLabels, Gauge>::default();
        registry.register(
            "decisions",
            "Decision record entries by state",
            decisions.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Keys waiting in the work queue",
            queue_depth.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        let module = Family::<ModuleLabels, Gauge>::default();
        registry.register("module_info", "The decision module in use", module.clone());
        let module_rejected = Family::<ShaLabels, Gauge>::default();
        registry.register(
            "module_rejected",
            "1 for the last module file that was rejected (the active one stays in use)",
            module_rejected.clone(),
        );
        let module_swaps = Family::<ResultLabels, Counter>::default();
        registry.register(
            "module_swaps",
            "Hot-swap attempts by result (swapped, rejected)",
            module_swaps.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked (each is retried with backoff)",
            panics.clone(),
        );
        let rivals = Gauge::default();
        registry.register(
            "rival_generators",
            "Gatekeeper pods seen running the generate operation beside vapgen (coexist mode); while it is above 0 vapgen writes no VAP, binding or constraint CRD",
            rivals.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            writes,
            reconciles,
            decisions,
            queue_depth,
            leader,
            module,
            module_rejected,
            module_swaps,
            panics,
            rivals,
        }
    }
}

impl Metrics {
    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().expect("registry");
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }

    /// Counts a reconcile.
    /// `result`: ok, error (failed, or ended in an error state), fenced (a write refused by
    /// the lease fence; retried), panic.
    pub fn reconcile(&self, key: &str, result: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                key: key.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Counts a reconcile that panicked (it is retried with backoff).
    pub fn panic(&self) {
        self.panics.inc();
    }

    /// Sets the decision gauges from the record's counts.
    pub fn decisions(&self, counts: &std::collections::BTreeMap<&'static str, i64>) {
        self.decisions.clear();
        for (state, n) in counts {
            self.decisions
                .get_or_create(&StateLabels {
                    state: (*state).into(),
                })
                .set(*n);
        }
    }

    /// Sets the number of rival generators.
    pub fn rival_generators(&self, n: usize) {
        self.rivals.set(n as i64);
    }

    /// Sets the queue depth.
    pub fn queue_depth(&self, n: usize) {
        self.queue_depth.set(n as i64);
    }

    /// Sets the leader gauge.
    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records the module in use.
    pub fn module(&self, name: &str, version: &str, interface: &str, sha256: &str) {
        self.module.clear();
        self.module
            .get_or_create(&ModuleLabels {
                name: name.into(),
                version: version.into(),
                interface: interface.into(),
                sha256: sha256.into(),
            })
            .set(1);
    }

    /// Records the last rejected module (`None` clears it).
    pub fn module_rejected(&self, sha256: Option<&str>) {
        self.module_rejected.clear();
        if let Some(s) = sha256 {
            self.module_rejected
                .get_or_create(&ShaLabels { sha256: s.into() })
                .set(1);
        }
    }

    /// Counts a swap attempt.
    pub fn module_swap(&self, ok: bool) {
        self.module_swaps
            .get_or_create(&ResultLabels {
                result: if ok { "swapped" } else { "rejected" }.into(),
            })
            .inc();
    }

    /// Total writes with outcome `ok` (for tests and logs).
    pub fn successful_writes(&self) -> u64 {
        let text = self.encode();
        text.lines()
            .filter(|l| l.starts_with("vapgen_writes_total{") && l.contains("outcome=\"ok\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Observer for Metrics {
    fn write(&self, target: Target, verb: &str, outcome: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                target: target.as_str().into(),
                verb: verb.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}
