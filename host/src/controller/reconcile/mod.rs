//! The two reconcilers. They read the [`World`] (watch caches) and the [`Records`], call the
//! decision module, and write through a [`Cluster`] — a trait, so the same code runs against
//! the real API server and against the simulated one of the schedule-exploration tests.
//!
//! Ordering rules (the race fix, spec §5.7):
//! * template, Generate: apply the VAP, **then** publish the record;
//! * template, anything else: publish the record, delete the kind's bindings, **then** the VAP;
//! * a published change requeues every constraint of the kind;
//! * constraint: reads only the record (and the template snapshot stored in it); `Unknown`
//!   means wait, never delete; a binding is created only while the record says the VAP exists;
//! * a replica that starts a term as leader resets the record (every kind Unknown until its
//!   template reconciler speaks again), and a template reconcile that began before the reset
//!   does not publish;
//! * a template key never runs beside any key of its kind (see `queue`), so a template's
//!   steps do not interleave with its constraints'; constraint keys of one kind may run side
//!   by side (each touches its own binding and status).
//!
//! Modules: [`cluster`] (the port the reconcilers write through), `template` and
//! `constraint` (the two reconcilers), `error` ([`ReconcileError`], why a reconcile is
//! retried), `removal` (deleting what vapgen made), `strategy`
//! (the test-only switches back to Gatekeeper's strategy), [`test_hooks`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vapgen_guest::model::{
    BindingOutcome, KindPlan, NoBindingReason, PolicyOutcome, Settings, SkipReason,
    TemplateDecision,
};

use super::compare;
use super::queue::{Key, Queue};
use super::record::{Decision, DecisionRecord, Lookup, PolicyState, Readiness, Records};
use super::world::{ControllerRef, World, controller_of, identity, template_essence};
use crate::render::{self, Owner};
use crate::runtime::Decide;
use crate::snapshot;

pub mod cluster;
mod constraint;
mod error;
mod removal;
mod strategy;
mod template;
#[doc(hidden)]
pub mod test_hooks;

pub use cluster::{ApiError, Cluster, Probe, StatusTarget, Target};
pub use constraint::reconcile_constraint;
pub use error::{EnsureCrdError, ReconcileError};
pub use strategy::Weakened;
pub use template::reconcile_template;

/// Static configuration of the reconcilers.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// Create and update constraint CRDs from templates (standalone mode).
    pub manage_crds: bool,
    /// Upper bound of the wait before a kind's first binding.
    pub wait_bound: Duration,
    /// How often to re-probe a kind that is not ready.
    pub probe_interval: Duration,
    /// Namespaces no generated policy applies to (`--exempt-namespace`; `vapgen run` always
    /// includes its own namespace). See [`render::exempt_namespaces`].
    pub exempt_namespaces: Vec<String>,
    /// Scope sync (Gatekeeper's `--sync-vap-enforcement-scope`): the VAP's scope follows
    /// Gatekeeper's webhook configuration, its `Config` and the exempt namespaces. `None`: off
    /// (the library's default; `vapgen run` turns it on unless told otherwise).
    pub scope_sync: Option<ScopeSyncConfig>,
    /// Test-only: parts of the race fix to switch off, so that the schedule-exploration tests
    /// can show they find the races the fix closes. Nothing is weakened by default.
    #[doc(hidden)]
    pub weakened: Weakened,
}

/// Scope sync's static part (the cluster's part is watched, see [`World::scope_inputs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSyncConfig {
    /// Exempt namespace patterns (`--exempt-namespace`, `--exempt-namespace-prefix` as
    /// `prefix*`, `--exempt-namespace-suffix` as `*suffix`), as Gatekeeper's flags give them.
    pub exempt_namespaces: Vec<String>,
    /// Which of Gatekeeper's objects to watch.
    pub watch: super::feed::ScopeWatch,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            manage_crds: false,
            wait_bound: Duration::from_secs(30),
            probe_interval: Duration::from_millis(500),
            exempt_namespaces: Vec::new(),
            scope_sync: None,
            weakened: Weakened::default(),
        }
    }
}

/// Counters the reconcilers bump (exported as metrics by the runner).
pub trait Observer: Send + Sync + 'static {
    /// A write was attempted (`outcome`: ok, error, not-leader).
    fn write(&self, target: Target, verb: &str, outcome: &str);
    /// The status vapgen computed for a template or constraint (`live`: the object as
    /// cached), written or not. Coexist mode mirrors it into Gatekeeper's per-pod status
    /// objects (`controller::podstatus`).
    fn status(&self, _target: &StatusTarget, _live: &Value, _status: &Value) {}
    /// The template or constraint is gone (the API server does not have it): coexist mode
    /// deletes its per-pod status object, which has no owner to be collected with.
    fn gone(&self, _target: &StatusTarget) {}
}

/// Ignores observations.
#[derive(Default)]
pub struct NoObserver;
impl Observer for NoObserver {
    fn write(&self, _: Target, _: &str, _: &str) {}
}

/// Everything a reconcile needs.
pub struct Ctx<C: Cluster> {
    /// Writes.
    pub cluster: C,
    /// Watch caches.
    pub world: Arc<RwLock<World>>,
    /// The decision record.
    pub records: Arc<Mutex<Records>>,
    /// The decision module in use (swappable).
    pub decider: Arc<RwLock<Arc<dyn Decide>>>,
    /// Module settings (Gatekeeper's flags).
    pub settings: Settings,
    /// Where requeues go.
    pub queue: Queue,
    /// Static configuration.
    pub config: ReconcileConfig,
    /// When each kind was first seen wanting bindings (for the wait bound).
    pub readiness: Mutex<std::collections::BTreeMap<String, (Instant, bool)>>,
    /// Metrics sink.
    pub observer: Arc<dyn Observer>,
}

/// What the worker does after a reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Action {
    /// Reconcile the key again after this delay.
    pub requeue_after: Option<Duration>,
    /// The object is in an error state that retrying will not change (the API server
    /// rejected what vapgen must write, or another controller owns it). Status and an Event
    /// say why; the key runs again on its next input change or on the resync, never hot.
    pub permanent_error: Option<String>,
}

impl Action {
    fn done() -> Self {
        Action::default()
    }
    fn after(d: Duration) -> Self {
        Action {
            requeue_after: Some(d),
            ..Action::default()
        }
    }
    fn permanent(message: impl Into<String>) -> Self {
        Action {
            permanent_error: Some(message.into()),
            ..Action::default()
        }
    }
}

const WAIT_FOR_SYNC: Duration = Duration::from_millis(500);

/// The `status.vapgen.state` of templates and constraints while a rival generator runs.
pub const PAUSED: &str = "paused";

/// Why vapgen writes nothing while `rivals` (Gatekeeper pods running `generate`) run: the
/// status message of every template and constraint, and the Event's note.
pub fn yield_message(rivals: &[String]) -> String {
    format!(
        "Gatekeeper pod(s) {} run the generate operation: vapgen writes no ValidatingAdmissionPolicy, \
         binding or constraint CRD while another generator does (the two would fight over the same \
         objects). Turn generate off in every Gatekeeper pod (chart: audit.disableGenerateOperation=true); \
         vapgen resumes when their status objects no longer list it",
        rivals.join(", ")
    )
}
/// Delay between deleting a kind's policy and deleting its CRD (standalone mode): the time
/// the API server's admission plugin may take to drop a deleted policy and binding. Over 5 s
/// was measured on the loaded 2-core CI machine (a new policy's paramKind took as long to be
/// resolved), and with 5 s a deleted template's CRD went while the plugin still held its
/// policy, so every request the policy matched was refused ("failed to configure policy") —
/// other tests' namespace and template creates in tests/tests/controller.rs. A CRD left a
/// little longer denies nothing.
const CRD_GRACE: Duration = Duration::from_secs(15);

impl<C: Cluster> Ctx<C> {
    /// The module settings a plan is made with now: the configured ones and, with scope sync
    /// on, what the watches currently know of Gatekeeper's webhook configuration and `Config`.
    pub fn current_settings(&self) -> Settings {
        let mut s = self.settings.clone();
        if let Some(sync) = &self.config.scope_sync {
            let inputs = self.world.read().expect("world lock").scope_inputs();
            s.scope_sync = Some(inputs.into_scope_sync(sync.exempt_namespaces.clone()));
        }
        s
    }

    fn decider(&self) -> Arc<dyn Decide> {
        self.decider.read().expect("decider lock").clone()
    }

    /// One call of the decision module, off the async worker threads where it can be: a
    /// module may run up to its deadline (500 ms by default), which must not stall the
    /// runtime's other tasks (lease renewals, watches). On a multi-threaded runtime the call
    /// runs in `block_in_place`; elsewhere (a current-thread runtime, the explorer's own
    /// scheduler) it runs inline.
    fn plan_kind(
        &self,
        settings: &Settings,
        template_json: &str,
        constraints: &[vapgen_guest::model::Constraint],
    ) -> Result<KindPlan, crate::runtime::CallError> {
        let d = self.decider();
        let call = || d.plan_kind(settings, template_json, constraints);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
            _ => call(),
        }
    }

    /// Refuses writes of a reconcile that began in an earlier term ([`super::worker`]).
    fn term_fence(&self) -> Result<(), ApiError> {
        let current = self.records.lock().expect("records lock").epoch();
        if super::worker::in_term(current) {
            Ok(())
        } else {
            Err(ApiError::NotLeader)
        }
    }

    /// After a write that left in this reconcile's term: if a new term began while it was in
    /// flight (a lapse and re-acquire), the reconcile is noted as fenced, so its key runs
    /// again under the new term's decisions (which correct whatever the late write did).
    fn landed_in_term<T>(&self, r: &Result<T, ApiError>) {
        if !matches!(r, Err(ApiError::NotLeader)) && self.term_fence().is_err() {
            super::worker::note_fenced();
        }
    }

    async fn write_apply(&self, target: Target, obj: &Value) -> Result<Value, ApiError> {
        let r = match self.term_fence() {
            Ok(()) => self.cluster.apply(target, obj).await,
            Err(e) => Err(e),
        };
        self.landed_in_term(&r);
        self.observed(target, "apply", snapshot::name_of(obj), &r);
        if let Ok(stored) = &r {
            // Read-your-writes: later reconciles of this kind must see it before the watch does.
            let mut w = self.world.write().expect("world lock");
            let name = snapshot::name_of(stored).to_string();
            let cached = || super::world::without_managed_fields(stored.clone());
            match target {
                Target::Vap => drop(w.vaps.insert(name, cached())),
                Target::Vapb => drop(w.vapbs.insert(name, cached())),
                Target::Crd => {}
            }
        }
        r
    }

    async fn write_delete(&self, target: Target, live: &Value) -> Result<(), ApiError> {
        let name = snapshot::name_of(live).to_string();
        let (uid, rv) = identity(live);
        let r = match self.term_fence() {
            Ok(()) => self.cluster.delete(target, &name, &uid, &rv).await,
            Err(e) => Err(e),
        };
        self.landed_in_term(&r);
        let r = match r {
            Err(ApiError::NotFound) => Ok(()),
            other => other,
        };
        self.observed(target, "delete", &name, &r);
        if r.is_ok() {
            let mut w = self.world.write().expect("world lock");
            match target {
                Target::Vap => drop(w.vaps.remove(&name)),
                Target::Vapb => drop(w.vapbs.remove(&name)),
                Target::Crd => {}
            }
        }
        r
    }

    /// Writes `status.vapgen` unless the live object already has it.
    async fn write_status(&self, target: &StatusTarget, live: &Value, status: Value) {
        self.observer.status(target, live, &status);
        if live.pointer("/status/vapgen") == Some(&without_nulls(&status)) {
            return;
        }
        let r = match self.term_fence() {
            Ok(()) => self.cluster.patch_status(target, &status).await,
            Err(e) => Err(e),
        };
        self.landed_in_term(&r);
        let object = match target {
            StatusTarget::Template(n) => format!("ConstraintTemplate {n}"),
            StatusTarget::Constraint { kind, name } => format!("{kind} {name}"),
        };
        self.observed(
            match target {
                StatusTarget::Template(_) => Target::Vap,
                StatusTarget::Constraint { .. } => Target::Vapb,
            },
            "status",
            &object,
            &r,
        );
        if let Err(e) = r {
            // Refused by the fence: already noted. Not found: the object is gone, and its
            // deletion event requeues what depends on it. Anything else: the key runs again
            // with backoff (the worker logs the failure).
            if !matches!(e, ApiError::NotLeader | ApiError::NotFound) {
                super::worker::note_lost(ReconcileError::api(
                    format!("status write of {object} failed"),
                    e,
                ));
            }
            return;
        }
        // Read-your-writes, as for VAPs and bindings: a reconcile of the same object that runs
        // before the watch delivers the new status must not write it again (with 2,000
        // constraints created live, 0.47 extra status writes per constraint came from that).
        {
            let mut w = self.world.write().expect("world lock");
            let cached = match target {
                StatusTarget::Template(n) => w.templates.get_mut(n),
                StatusTarget::Constraint { kind, name } => w
                    .constraints
                    .get_mut(&kind.to_ascii_lowercase())
                    .and_then(|m| m.get_mut(name)),
            };
            if let Some(Value::Object(o)) = cached {
                let st = o.entry("status").or_insert_with(|| json!({}));
                if let Value::Object(st) = st {
                    st.insert("vapgen".into(), without_nulls(&status));
                }
            }
        }
        // Error states entered and left, once each (the status write happens only on change).
        let state = status.get("state").and_then(Value::as_str).unwrap_or("");
        let was = live
            .pointer("/status/vapgen/state")
            .and_then(Value::as_str)
            .unwrap_or("");
        let message = status.get("message").and_then(Value::as_str).unwrap_or("");
        if state == "error" {
            tracing::warn!(%object, %message, "error: {}", remedy(message));
        } else if was == "error" {
            tracing::info!(%object, %state, "error resolved");
        }
        // Events accompany state changes, so they are not repeated on every reconcile.
        let (uid, _) = identity(live);
        if let Some(msg) = status.get("message").and_then(Value::as_str) {
            let error = status.get("state").and_then(Value::as_str) == Some("error");
            if error {
                self.cluster
                    .event(target, &uid, true, "VAPGenerationFailed", msg)
                    .await;
            }
        }
    }

    /// Counts and logs (at debug) one write; a write refused by the lease fence marks the
    /// running reconcile as fenced, so its key runs again ([`super::worker`]).
    fn observed<T>(&self, target: Target, verb: &str, name: &str, r: &Result<T, ApiError>) {
        let outcome = outcome_label(r);
        self.observer.write(target, verb, outcome);
        match r {
            Ok(_) => tracing::debug!(verb, target = target.as_str(), name, "write ok"),
            Err(ApiError::NotLeader) => {
                super::worker::note_fenced();
                tracing::debug!(
                    verb,
                    target = target.as_str(),
                    name,
                    "write refused by the lease fence; the key will run again"
                );
            }
            Err(e) => {
                tracing::debug!(verb, target = target.as_str(), name, error = %e, "write failed")
            }
        }
    }

    fn requeue_constraints(&self, kind: &str) {
        // Keys carry each object's own (exact-case) kind, like the keys of the watches: a
        // key with another spelling would be a second key for the same constraint.
        let keys: Vec<Key> = {
            let w = self.world.read().expect("world lock");
            w.constraints_of(kind)
                .iter()
                .map(|c| Key::Constraint {
                    kind: Some(snapshot::kind_of(c))
                        .filter(|k| !k.is_empty())
                        .unwrap_or(kind)
                        .to_string(),
                    name: snapshot::name_of(c).to_string(),
                })
                .collect()
        };
        for key in keys {
            self.queue.add(key);
        }
    }

    /// Publishes for a reconcile that began in `epoch` (ignored after a reset of the records,
    /// i.e. when this replica started a new term as leader meanwhile).
    fn publish(&self, epoch: u64, key: &str, record: DecisionRecord) {
        let kind = record.kind.clone();
        let changed = self
            .records
            .lock()
            .expect("records lock")
            .publish_in(epoch, key, record);
        if changed && !kind.is_empty() && !self.config.weakened.replay_on_vap_change_only {
            self.requeue_constraints(&kind);
        }
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// What a person can do about an error state, from the API server's or module's message.
fn remedy(message: &str) -> &'static str {
    if message.contains("rejected") {
        "the API server refused the generated object; fix the template or constraint (the message says what the API server said) — vapgen retries on the next change or resync"
    } else if message.contains("controlled by") {
        "another controller owns the object; delete it or let vapgen own it"
    } else {
        "see the message; vapgen retries on the next change of the object"
    }
}

fn outcome_label<T>(r: &Result<T, ApiError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(ApiError::NotLeader) => "not-leader",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod rival_tests;
