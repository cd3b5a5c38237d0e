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
//! * keys of one kind never run concurrently (see `queue`), so these steps do not interleave.

use std::future::Future;
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
use super::world::{ControllerRef, CrdInfo, World, controller_of, identity, template_essence};
use crate::render::{self, Owner};
use crate::runtime::Decide;
use crate::snapshot;

/// What a write touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A ValidatingAdmissionPolicy.
    Vap,
    /// A ValidatingAdmissionPolicyBinding.
    Vapb,
    /// A constraint CustomResourceDefinition (standalone mode).
    Crd,
}

impl Target {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Vap => "vap",
            Target::Vapb => "vapb",
            Target::Crd => "crd",
        }
    }
}

/// Whose status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusTarget {
    /// A ConstraintTemplate by name.
    Template(String),
    /// A constraint by exact-case kind and name.
    Constraint {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
}

/// A failed API call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    /// This replica does not hold the lease: nothing was written.
    #[error("not the leader; write dropped")]
    NotLeader,
    /// The object does not exist (deletes treat this as success).
    #[error("not found")]
    NotFound,
    /// A precondition (UID / resourceVersion) or conflict failed: the cache was stale.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The API server rejected the object (validation), with its message.
    #[error("{0}")]
    Rejected(String),
    /// Anything else (network, timeouts, RBAC).
    #[error("{0}")]
    Other(String),
}

/// The result of a readiness probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Ready for bindings.
    Ready,
    /// Not yet, with why.
    NotYet(String),
}

/// The writes and probes the reconcilers need. Implemented over kube-rs for real clusters
/// and in memory for schedule exploration.
pub trait Cluster: Send + Sync + 'static {
    /// Server-side apply of a whole object; returns the object as stored.
    fn apply(
        &self,
        target: Target,
        obj: &Value,
    ) -> impl Future<Output = Result<Value, ApiError>> + Send;
    /// Reads an object from the API server, not from the cache (`None`: it does not exist).
    fn get(
        &self,
        target: Target,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, ApiError>> + Send;
    /// Reads a constraint from the API server, not from the cache (`None`: it does not exist).
    fn get_constraint(
        &self,
        kind: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, ApiError>> + Send;
    /// Lists every object of a kind from the API server, not from the cache.
    fn list(&self, target: Target) -> impl Future<Output = Result<Vec<Value>, ApiError>> + Send;
    /// Deletes with UID and resourceVersion preconditions.
    fn delete(
        &self,
        target: Target,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Merge-patches `status.vapgen` of a template or constraint.
    fn patch_status(
        &self,
        target: &StatusTarget,
        status: &Value,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Records a Kubernetes Event on a template or constraint (best effort).
    fn event(
        &self,
        target: &StatusTarget,
        uid: &str,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
    /// Checks whether a kind is ready for its first binding.
    fn probe_kind(&self, crd: &CrdInfo) -> impl Future<Output = Probe> + Send;
    /// Removes whatever `probe_kind` left behind for `kind` (best effort).
    fn end_probe(&self, kind: &str) -> impl Future<Output = ()> + Send;
}

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
    /// Test-only: parts of the race fix to switch off, so that the schedule-exploration tests
    /// can show they find the races the fix closes. Nothing is weakened by default.
    #[doc(hidden)]
    pub weakened: Weakened,
}

/// Test-only switches that turn parts of the race fix (spec §5.7) back into Gatekeeper's
/// strategy. They exist so that `host/tests/explore.rs` can prove it detects R-a and R-b;
/// the controller never sets them (`vapgen run` has no flag for them).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Weakened {
    /// The constraint reconciler derives the decision from the cache's current copy of the
    /// template (and assumes the VAP exists) instead of reading the decision record.
    pub naive_template_reads: bool,
    /// Constraints are requeued only when a template pass creates or deletes the VAP
    /// (Gatekeeper's `triggerConstraintEvents`), not whenever the published decision changes.
    pub replay_on_vap_change_only: bool,
    /// The template reconciler leaves the kind's bindings to the constraint reconciler when
    /// the kind stops generating (Gatekeeper's template controller never deletes bindings).
    pub keep_bindings: bool,
}

impl Weakened {
    /// Gatekeeper's strategy: all three switches on.
    pub fn gatekeeper() -> Self {
        Weakened {
            naive_template_reads: true,
            replay_on_vap_change_only: true,
            keep_bindings: true,
        }
    }
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            manage_crds: false,
            wait_bound: Duration::from_secs(30),
            probe_interval: Duration::from_millis(500),
            exempt_namespaces: Vec::new(),
            weakened: Weakened::default(),
        }
    }
}

/// Counters the reconcilers bump (exported as metrics by the runner).
pub trait Observer: Send + Sync + 'static {
    /// A write was attempted (`outcome`: ok, error, not-leader).
    fn write(&self, target: Target, verb: &str, outcome: &str);
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

/// A reconcile that must be retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(pub String);

const WAIT_FOR_SYNC: Duration = Duration::from_millis(500);
/// Delay between deleting a kind's policy and deleting its CRD (standalone mode).
const CRD_GRACE: Duration = Duration::from_secs(5);

impl<C: Cluster> Ctx<C> {
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
                super::worker::note_lost(format!("status write of {object} failed: {e}"));
            }
            return;
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

// === template reconciler ===

/// Reconciles one ConstraintTemplate (and so the decision of its kind and its VAP).
pub async fn reconcile_template<C: Cluster>(
    ctx: &Ctx<C>,
    name: &str,
) -> Result<Action, ReconcileError> {
    // Taken before anything is read: if this replica starts a new term as leader while this
    // reconcile runs, its decision is not published into the new term.
    let epoch = ctx.records.lock().expect("records lock").epoch();
    let (template, synced) = {
        let w = ctx.world.read().expect("world lock");
        (w.templates.get(name).cloned(), w.core_synced())
    };
    if !synced {
        return Ok(Action::after(WAIT_FOR_SYNC));
    }
    let Some(template) = template else {
        return template_gone(ctx, epoch, name).await;
    };
    let essence = template_essence(&template);
    let json = essence.to_string();
    let plan = ctx
        .plan_kind(&ctx.settings, &json, &[])
        .map_err(|e| ReconcileError(format!("decision module failed for template {name}: {e}")));
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            let status = template_status(&template, "error", &e.0, &[], None);
            ctx.write_status(&StatusTarget::Template(name.into()), &template, status)
                .await;
            return Err(e);
        }
    };
    let uid = identity(&template).0;
    let generation = template
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut record = DecisionRecord {
        decision: Decision::Absent,
        template_uid: Some(uid),
        template_generation: generation,
        template_json: Some(json),
        kind: plan.kind.clone(),
    };
    // Only a template without errors gets a CRD (an invalid one, e.g. a name that is not
    // its kind's, would leave a CRD nothing deletes).
    if ctx.config.manage_crds
        && !plan.kind.is_empty()
        && !matches!(plan.decision, TemplateDecision::Error(_))
        && let Err(e) = ensure_crd(ctx, &template, &plan).await
    {
        let status = template_status(&template, "error", &e, &plan.warnings, None);
        ctx.write_status(&StatusTarget::Template(name.into()), &template, status)
            .await;
        return Err(ReconcileError(e));
    }
    match (&plan.decision, &plan.policy) {
        (TemplateDecision::Generate, PolicyOutcome::Desired(vap_json)) => {
            generate(ctx, epoch, name, &template, &plan, vap_json, record).await
        }
        _ => {
            let (reason, error) = no_generate_reason(&plan);
            record.decision = Decision::NoGenerate {
                reason: reason.clone(),
                error,
            };
            // Publish first: from now on constraint reconciles delete, never create.
            ctx.publish(epoch, name, record);
            remove_kind_objects(ctx, name, &plan.kind).await?;
            let state = if error { "error" } else { "not-generated" };
            let status = template_status(&template, state, &reason, &plan.warnings, None);
            ctx.write_status(&StatusTarget::Template(name.into()), &template, status)
                .await;
            Ok(Action::done())
        }
    }
}

async fn generate<C: Cluster>(
    ctx: &Ctx<C>,
    epoch: u64,
    name: &str,
    template: &Value,
    plan: &KindPlan,
    vap_json: &str,
    mut record: DecisionRecord,
) -> Result<Action, ReconcileError> {
    let desired = match render::policy_object(vap_json, &plan.policy_name) {
        Ok(mut v) => {
            ensure_owner(&mut v, template_owner(template));
            render::exempt_namespaces(&mut v, &ctx.config.exempt_namespaces);
            v
        }
        Err(e) => {
            record.decision = Decision::NoGenerate {
                reason: e.clone(),
                error: true,
            };
            ctx.publish(epoch, name, record);
            remove_kind_objects(ctx, name, &plan.kind).await?;
            let status = template_status(template, "error", &e, &plan.warnings, None);
            ctx.write_status(&StatusTarget::Template(name.into()), template, status)
                .await;
            return Ok(Action::done());
        }
    };
    let mut live = ctx
        .world
        .read()
        .expect("world lock")
        .vaps
        .get(&plan.policy_name)
        .cloned();
    // The cache may lag behind the API server (the last deletes of the previous leader, or a
    // user's). Before a Generate that licenses bindings is published on the cache's word
    // alone (the VAP is there, nothing to write), read the VAP from the API server — once
    // per term: a Generate published in this term was verified or written already.
    let licensed = match ctx.records.lock().expect("records lock").get(name) {
        Lookup::Known(r) => {
            matches!(&r.decision, Decision::Generate { policy, .. } if policy.exists())
        }
        Lookup::Unknown => false,
    };
    if !licensed
        && live
            .as_ref()
            .is_some_and(|l| compare::vap_equal(&desired, l))
    {
        live = ctx
            .cluster
            .get(Target::Vap, &plan.policy_name)
            .await
            .map_err(|e| {
                ReconcileError(format!(
                    "reading ValidatingAdmissionPolicy {}: {e}",
                    plan.policy_name
                ))
            })?;
    }
    let foreign = live.as_ref().and_then(|l| {
        let c = controller_of(l);
        match &c {
            Some(c) if is_template_owner(c, name) => None,
            _ => Some(c),
        }
    });
    let mut retry = None;
    let mut created = false;
    let policy = if let Some(owner) = foreign {
        PolicyState::Failed(format!(
            "ValidatingAdmissionPolicy {} exists and is controlled by {}; vapgen does not overwrite objects it does not own",
            plan.policy_name,
            describe_owner(owner.as_ref())
        ))
    } else if live
        .as_ref()
        .is_some_and(|l| compare::vap_equal(&desired, l))
    {
        PolicyState::Applied
    } else {
        match ctx.write_apply(Target::Vap, &desired).await {
            Ok(_) => {
                created = live.is_none();
                PolicyState::Applied
            }
            Err(ApiError::NotLeader) => return Ok(Action::done()),
            Err(e @ ApiError::Rejected(_)) => {
                let msg = format!(
                    "the API server rejected ValidatingAdmissionPolicy {}: {e}",
                    plan.policy_name
                );
                if live.is_some() {
                    PolicyState::Stale(msg)
                } else {
                    PolicyState::Failed(msg)
                }
            }
            Err(e) => {
                // Transient: keep the previous record, retry with backoff.
                retry = Some(ReconcileError(format!(
                    "applying ValidatingAdmissionPolicy {}: {e}",
                    plan.policy_name
                )));
                PolicyState::Failed(e.to_string())
            }
        }
    };
    if let Some(e) = retry {
        return Err(e);
    }
    let readiness = readiness(ctx, &plan.kind, policy.exists()).await;
    // Poll readiness only for a policy that exists: one that failed waits for a change.
    let waiting = policy.exists() && matches!(readiness, Readiness::Waiting(_));
    let permanent = match &policy {
        PolicyState::Failed(m) | PolicyState::Stale(m) => Some(m.clone()),
        PolicyState::Applied | PolicyState::Absent => None,
    };
    let (state, message) = match &policy {
        PolicyState::Applied => ("generated", String::new()),
        PolicyState::Stale(m) => (
            "error",
            format!("{m} (the previous content stays in force)"),
        ),
        PolicyState::Failed(m) => ("error", m.clone()),
        PolicyState::Absent => ("not-generated", String::new()),
    };
    let readiness_note = match &readiness {
        Readiness::Waiting(m) => Some(m.clone()),
        Readiness::TimedOut => {
            Some("readiness not proven within the wait bound; bindings created anyway".into())
        }
        Readiness::Ready => None,
    };
    record.decision = Decision::Generate { policy, readiness };
    // The VAP exists (or failed for good) before the record says Generate.
    ctx.publish(epoch, name, record);
    if created && ctx.config.weakened.replay_on_vap_change_only {
        ctx.requeue_constraints(&plan.kind);
    }
    let status = template_status(template, state, &message, &plan.warnings, readiness_note);
    ctx.write_status(&StatusTarget::Template(name.into()), template, status)
        .await;
    Ok(if let Some(m) = permanent {
        Action::permanent(m)
    } else if waiting {
        Action::after(ctx.config.probe_interval)
    } else {
        Action::done()
    })
}

async fn readiness<C: Cluster>(ctx: &Ctx<C>, kind: &str, policy_exists: bool) -> Readiness {
    if !policy_exists {
        return Readiness::Waiting("the policy does not exist".into());
    }
    let key = kind.to_ascii_lowercase();
    let first_seen = {
        let mut m = ctx.readiness.lock().expect("readiness lock");
        let e = m.entry(key.clone()).or_insert((Instant::now(), false));
        if e.1 {
            return Readiness::Ready;
        }
        e.0
    };
    let (crd, enforcing) = {
        let w = ctx.world.read().expect("world lock");
        (
            w.crds.get(&key).cloned(),
            !w.bindings_of_kind(kind).is_empty(),
        )
    };
    // Bindings of the kind exist already (a restart, a new leader): the plugin serves the
    // kind, so there is nothing to prove and no canary to send.
    let probe = match crd {
        _ if enforcing => Probe::Ready,
        None => Probe::NotYet(format!(
            "no CustomResourceDefinition serves kind {kind} yet"
        )),
        Some(c) if !c.established => {
            Probe::NotYet(format!("the CRD of {kind} is not Established yet"))
        }
        Some(c) => ctx.cluster.probe_kind(&c).await,
    };
    match probe {
        Probe::Ready => {
            ctx.readiness
                .lock()
                .expect("readiness lock")
                .insert(key, (first_seen, true));
            Readiness::Ready
        }
        Probe::NotYet(m) if first_seen.elapsed() >= ctx.config.wait_bound => {
            tracing::warn!(kind, reason = %m, "readiness not proven within the wait bound; creating bindings anyway");
            ctx.readiness
                .lock()
                .expect("readiness lock")
                .insert(key, (first_seen, true));
            ctx.cluster.end_probe(kind).await;
            Readiness::TimedOut
        }
        Probe::NotYet(m) => Readiness::Waiting(m),
    }
}

fn no_generate_reason(plan: &KindPlan) -> (String, bool) {
    match (&plan.decision, &plan.policy) {
        (TemplateDecision::Skip(SkipReason::OptedOut), _) => {
            ("the template sets generateVAP: false".into(), false)
        }
        (TemplateDecision::Skip(SkipReason::FlagDefault), _) => (
            "generateVAP is not set and --default-create-vap-for-templates is false".into(),
            false,
        ),
        (TemplateDecision::NotApplicable(m), _) => (m.clone(), false),
        (TemplateDecision::Error(m), _) => (m.clone(), true),
        (_, PolicyOutcome::TransformError(m)) => (m.clone(), true),
        _ => ("the module returned no policy".into(), true),
    }
}

/// Deletes the kind's bindings and then its VAP (both only if vapgen controls them).
/// Returns how many objects it deleted.
async fn remove_kind_objects<C: Cluster>(
    ctx: &Ctx<C>,
    template_name: &str,
    kind: &str,
) -> Result<usize, ReconcileError> {
    let kind_key = if kind.is_empty() { template_name } else { kind };
    let (mut bindings, vap) = {
        let w = ctx.world.read().expect("world lock");
        let b: Vec<Value> = w
            .bindings_of_kind(kind_key)
            .into_iter()
            .filter(|_| !ctx.config.weakened.keep_bindings)
            .filter_map(|(n, _)| w.vapbs.get(&n).cloned())
            .collect();
        let v = w
            .vaps
            .get(&format!("gatekeeper-{template_name}"))
            .filter(|v| controller_of(v).is_some_and(|c| is_template_owner(&c, template_name)))
            .cloned();
        (b, v)
    };
    if vap.is_some() && !ctx.config.weakened.keep_bindings {
        // The VAP goes, so first every binding of the kind that exists, not only those in the
        // cache: the previous leader may have created one just before a take-over, and a
        // binding must not outlive its policy.
        let listed = ctx.cluster.list(Target::Vapb).await.map_err(|e| {
            ReconcileError(format!(
                "listing ValidatingAdmissionPolicyBindings before deleting the policy of {kind_key}: {e}"
            ))
        })?;
        bindings = listed
            .into_iter()
            .filter(|b| {
                controller_of(b).is_some_and(|c| {
                    c.api_version.starts_with(snapshot::CONSTRAINT_GROUP)
                        && c.kind.eq_ignore_ascii_case(kind_key)
                })
            })
            .collect();
    }
    for b in &bindings {
        delete_or_retry(ctx, Target::Vapb, b).await?;
    }
    if let Some(v) = &vap {
        delete_or_retry(ctx, Target::Vap, v).await?;
        if ctx.config.weakened.replay_on_vap_change_only && !kind.is_empty() {
            ctx.requeue_constraints(kind);
        }
    }
    Ok(bindings.len() + usize::from(vap.is_some()))
}

async fn delete_or_retry<C: Cluster>(
    ctx: &Ctx<C>,
    target: Target,
    live: &Value,
) -> Result<(), ReconcileError> {
    // A delete refused by the fence stops the sequence: the deletes after it (the VAP after
    // its bindings) must not happen while this one has not (found by the explorer: a lapse
    // in the middle of a kind's removal let the VAP go before one of its bindings).
    match ctx.write_delete(target, live).await {
        Ok(()) => Ok(()),
        Err(e) => Err(ReconcileError(format!(
            "deleting {} {}: {e}",
            target.as_str(),
            snapshot::name_of(live)
        ))),
    }
}

async fn template_gone<C: Cluster>(
    ctx: &Ctx<C>,
    epoch: u64,
    name: &str,
) -> Result<Action, ReconcileError> {
    let known = match ctx.records.lock().expect("records lock").get(name) {
        Lookup::Known(r) if !r.kind.is_empty() => Some(r.kind.clone()),
        _ => None,
    };
    // Unknown (e.g. a new leader that never saw the template): the exact-case kind is the
    // CRD's; the template name is only its lower-case form.
    let kind = known
        .or_else(|| {
            let w = ctx.world.read().expect("world lock");
            w.crds.get(name).map(|c| c.kind.clone())
        })
        .unwrap_or_else(|| name.to_string());
    ctx.publish(
        epoch,
        name,
        DecisionRecord {
            decision: Decision::Absent,
            template_uid: None,
            template_generation: 0,
            template_json: None,
            kind: kind.clone(),
        },
    );
    ctx.readiness.lock().expect("readiness lock").remove(name);
    ctx.cluster.end_probe(&kind).await;
    if remove_kind_objects(ctx, name, &kind).await? > 0 && ctx.config.manage_crds {
        // The admission plugin learns of the deletions through its informers. Deleting the
        // CRD before it has dropped the policy makes it fail to resolve the paramKind, and a
        // `failurePolicy: Fail` policy then denies every request it matches. So the CRD
        // goes in a later pass, after CRD_GRACE.
        return Ok(Action::after(CRD_GRACE));
    }
    if ctx.config.manage_crds {
        let crd = {
            let w = ctx.world.read().expect("world lock");
            // Only a CRD that this template controls; a hand-made one is left alone.
            w.crds
                .get(name)
                .filter(|c| c.template_owner.as_deref() == Some(name))
                .map(|c| (c.uid.clone(), c.plural.clone()))
        };
        if let Some((uid, plural)) = crd {
            let crd_obj = json!({"metadata": {"name": format!("{plural}.{}", snapshot::CONSTRAINT_GROUP), "uid": uid}});
            delete_or_retry(ctx, Target::Crd, &crd_obj).await?;
        }
    }
    Ok(Action::done())
}

fn template_owner(template: &Value) -> Owner {
    Owner {
        api_version: format!("{}/v1beta1", snapshot::TEMPLATE_GROUP),
        kind: "ConstraintTemplate".into(),
        name: snapshot::name_of(template).into(),
        uid: identity(template).0,
    }
}

fn ensure_owner(obj: &mut Value, owner: Owner) {
    if owner.uid.is_empty() {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "ownerReferences".into(),
            Value::Array(vec![owner.to_reference()]),
        );
    }
}

fn is_template_owner(c: &ControllerRef, template_name: &str) -> bool {
    c.api_version.starts_with(snapshot::TEMPLATE_GROUP)
        && c.kind == "ConstraintTemplate"
        && c.name == template_name
}

fn describe_owner(c: Option<&ControllerRef>) -> String {
    match c {
        Some(c) => format!("{} {} ({})", c.kind, c.name, c.api_version),
        None => "no controller (created by hand?)".into(),
    }
}

fn template_status(
    template: &Value,
    state: &str,
    message: &str,
    warnings: &[String],
    readiness: Option<String>,
) -> Value {
    let generation = template
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // Absent keys are explicit nulls so the merge patch removes what an earlier status had.
    json!({
        "observedGeneration": generation,
        "state": state,
        "policy": format!("gatekeeper-{}", snapshot::name_of(template)),
        "message": (!message.is_empty()).then_some(message),
        "warnings": (!warnings.is_empty()).then_some(warnings),
        "readiness": readiness,
    })
}

async fn ensure_crd<C: Cluster>(
    ctx: &Ctx<C>,
    template: &Value,
    plan: &KindPlan,
) -> Result<(), String> {
    let desired = super::crds::constraint_crd(template, &plan.kind)?;
    let name = snapshot::name_of(&desired).to_string();
    let up_to_date = {
        let w = ctx.world.read().expect("world lock");
        w.crds
            .get(&plan.kind.to_ascii_lowercase())
            .is_some_and(|c| super::crds::matches_generation(template, c))
    };
    if up_to_date {
        return Ok(());
    }
    match ctx.write_apply(Target::Crd, &desired).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "cannot create or update CustomResourceDefinition {name}: {e}"
        )),
    }
}

// === constraint reconciler ===

/// Reconciles one constraint's binding and status.
pub async fn reconcile_constraint<C: Cluster>(
    ctx: &Ctx<C>,
    kind: &str,
    name: &str,
) -> Result<Action, ReconcileError> {
    test_hooks::maybe_panic(kind, name);
    let (obj, synced) = {
        let w = ctx.world.read().expect("world lock");
        let obj = w
            .constraints
            .get(&kind.to_ascii_lowercase())
            .and_then(|m| m.get(name))
            .cloned();
        (obj, w.core_synced() && w.kind_synced(kind))
    };
    if !synced {
        // Never act on a partial cache: an unlisted constraint is not a deleted one.
        return Ok(Action::after(WAIT_FOR_SYNC));
    }
    let Some(obj) = obj else {
        // Not in the cache: deleted, or not seen yet — its watch may lag behind the bindings'
        // (a binding the previous leader made for a constraint created just before a
        // take-over, or a constraint created between the two initial lists). Only a
        // constraint the API server does not have either loses its bindings.
        let owns_bindings = {
            let w = ctx.world.read().expect("world lock");
            w.bindings_of_kind(kind).iter().any(|(_, c)| c.name == name)
        };
        if owns_bindings {
            match ctx.cluster.get_constraint(kind, name).await {
                Ok(None) => {}
                Ok(Some(_)) => return Ok(Action::after(WAIT_FOR_SYNC)),
                Err(e) => {
                    return Err(ReconcileError(format!(
                        "reading constraint {kind}/{name}: {e}"
                    )));
                }
            }
        }
        delete_bindings_of(ctx, kind, name).await?;
        return Ok(Action::done());
    };
    let record = if ctx.config.weakened.naive_template_reads {
        Some(record_from_cached_template(ctx, kind)?)
    } else {
        match ctx.records.lock().expect("records lock").get(kind) {
            Lookup::Unknown => None,
            Lookup::Known(r) => Some(r.clone()),
        }
    };
    let Some(record) = record else {
        // Unknown: the template reconciler has not spoken since start-up. Wait; never delete.
        return Ok(Action::after(WAIT_FOR_SYNC));
    };
    let target = StatusTarget::Constraint {
        kind: kind.into(),
        name: name.into(),
    };
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let Some(template_json) = &record.template_json else {
        delete_bindings_of(ctx, kind, name).await?;
        let msg =
            format!("no ConstraintTemplate defines kind {kind}; the constraint has no binding");
        let status = constraint_status("error", &msg, generation, None);
        ctx.write_status(&target, &obj, status).await;
        return Ok(Action::done());
    };
    let input = snapshot::extract_constraint(&obj);
    let plan = ctx
        .plan_kind(&ctx.settings, template_json, std::slice::from_ref(&input))
        .map_err(|e| ReconcileError(format!("decision module failed for {kind}/{name}: {e}")))?;
    let Some(b) = plan.bindings.first() else {
        return Err(ReconcileError(format!(
            "decision module returned no binding plan for {kind}/{name}"
        )));
    };
    let live = ctx
        .world
        .read()
        .expect("world lock")
        .vapbs
        .get(&b.binding_name)
        .cloned();
    let ours = |v: &Value| controller_of(v).is_some_and(|c| is_constraint_owner(&c, kind, name));
    if let Some(l) = live.as_ref().filter(|l| !ours(l)) {
        let msg = format!(
            "ValidatingAdmissionPolicyBinding {} exists and is controlled by {}; vapgen does not overwrite or delete objects it does not own",
            b.binding_name,
            describe_owner(controller_of(l).as_ref())
        );
        ctx.write_status(
            &target,
            &obj,
            constraint_status("error", &msg, generation, Some(&b.binding_name)),
        )
        .await;
        return Ok(Action::done());
    }
    let (state, message) = match (&b.outcome, &record.decision) {
        (BindingOutcome::Bind(spec), Decision::Generate { policy, readiness }) => {
            if !policy.exists() {
                delete_if_ours(ctx, live.as_ref()).await?;
                let m = match policy {
                    PolicyState::Failed(m) => m.clone(),
                    _ => "the policy does not exist".into(),
                };
                (
                    "error",
                    format!("no binding: the policy could not be created: {m}"),
                )
            } else {
                let owner = Owner::constraint(kind, name, &identity(&obj).0);
                let desired = render::binding_object(spec, Some(&owner))
                    .map_err(|e| ReconcileError(format!("{kind}/{name}: {e}")))?;
                if live
                    .as_ref()
                    .is_some_and(|l| compare::vapb_equal(&desired, l))
                {
                    ("generated", String::new())
                } else if live.is_none() && !readiness.allows_bindings() {
                    // The kind waits for readiness (at most the wait bound); the template's
                    // status says why. No status write per constraint meanwhile: with a
                    // backlog of N constraints that was N writes more (and more again as the
                    // probe's message changed). Readiness published requeues every
                    // constraint of the kind.
                    return Ok(Action::done());
                } else {
                    match ctx.write_apply(Target::Vapb, &desired).await {
                        Ok(_) => ("generated", String::new()),
                        Err(ApiError::NotLeader) => return Ok(Action::done()),
                        Err(e @ ApiError::Rejected(_)) => (
                            "error",
                            format!(
                                "the API server rejected ValidatingAdmissionPolicyBinding {}: {e}",
                                spec.name
                            ),
                        ),
                        Err(e) => {
                            return Err(ReconcileError(format!(
                                "applying binding {}: {e}",
                                spec.name
                            )));
                        }
                    }
                }
            }
        }
        (BindingOutcome::Bind(_), _) => {
            delete_if_ours(ctx, live.as_ref()).await?;
            (
                "not-applicable",
                "the template does not generate a policy".into(),
            )
        }
        (BindingOutcome::None(reason), _) => {
            delete_if_ours(ctx, live.as_ref()).await?;
            match reason {
                NoBindingReason::NoIntent => ("none", String::new()),
                NoBindingReason::TemplateSkipped => (
                    "not-applicable",
                    "the template does not generate a ValidatingAdmissionPolicy".into(),
                ),
                NoBindingReason::TemplateNotApplicable => (
                    "not-applicable",
                    "the template has no K8sNativeValidation code".into(),
                ),
                NoBindingReason::TemplateError => {
                    let why = match &record.decision {
                        Decision::NoGenerate { reason, .. } => reason.clone(),
                        _ => "see the template's status".into(),
                    };
                    (
                        "error",
                        format!("no binding: the template has an error: {why}"),
                    )
                }
            }
        }
        (BindingOutcome::Error(m), _) => {
            // Invalid constraints are reconciled away: no stale binding keeps enforcing.
            delete_if_ours(ctx, live.as_ref()).await?;
            ("error", m.clone())
        }
    };
    if let Some(legacy) = &b.legacy_binding_name
        && matches!(state, "generated" | "none" | "not-applicable")
    {
        let l = ctx
            .world
            .read()
            .expect("world lock")
            .vapbs
            .get(legacy)
            .cloned();
        if l.as_ref().is_some_and(ours) {
            delete_if_ours(ctx, l.as_ref()).await?;
        }
    }
    let binding = matches!(b.outcome, BindingOutcome::Bind(_)).then_some(b.binding_name.as_str());
    ctx.write_status(
        &target,
        &obj,
        constraint_status(state, &message, generation, binding),
    )
    .await;
    // Every error state here changes only with an input (the constraint, the record of its
    // kind, which requeues it, or the binding): no timed retry.
    Ok(if state == "error" {
        Action::permanent(message)
    } else {
        Action::done()
    })
}

/// Gatekeeper's strategy ([`Weakened::naive_template_reads`], test-only): the decision
/// derived from whatever copy of the template the cache holds now, with the VAP assumed to
/// exist (Gatekeeper's constraint controller does not look at it).
fn record_from_cached_template<C: Cluster>(
    ctx: &Ctx<C>,
    kind: &str,
) -> Result<DecisionRecord, ReconcileError> {
    let template = ctx
        .world
        .read()
        .expect("world lock")
        .templates
        .get(&kind.to_ascii_lowercase())
        .cloned();
    let Some(template) = template else {
        return Ok(DecisionRecord {
            decision: Decision::Absent,
            template_uid: None,
            template_generation: 0,
            template_json: None,
            kind: kind.into(),
        });
    };
    let json = template_essence(&template).to_string();
    let plan = ctx
        .plan_kind(&ctx.settings, &json, &[])
        .map_err(|e| ReconcileError(format!("decision module failed for kind {kind}: {e}")))?;
    let decision = match (&plan.decision, &plan.policy) {
        (TemplateDecision::Generate, PolicyOutcome::Desired(_)) => Decision::Generate {
            policy: PolicyState::Applied,
            readiness: Readiness::Ready,
        },
        _ => {
            let (reason, error) = no_generate_reason(&plan);
            Decision::NoGenerate { reason, error }
        }
    };
    Ok(DecisionRecord {
        decision,
        template_uid: Some(identity(&template).0),
        template_generation: template
            .pointer("/metadata/generation")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        template_json: Some(json),
        kind: plan.kind,
    })
}

async fn delete_if_ours<C: Cluster>(
    ctx: &Ctx<C>,
    live: Option<&Value>,
) -> Result<(), ReconcileError> {
    match live {
        Some(l) => delete_or_retry(ctx, Target::Vapb, l).await,
        None => Ok(()),
    }
}

/// Deletes every binding controlled by the constraint `kind/name` (it is gone).
async fn delete_bindings_of<C: Cluster>(
    ctx: &Ctx<C>,
    kind: &str,
    name: &str,
) -> Result<(), ReconcileError> {
    let owned: Vec<Value> = {
        let w = ctx.world.read().expect("world lock");
        w.bindings_of_kind(kind)
            .into_iter()
            .filter(|(_, c)| c.name == name)
            .filter_map(|(n, _)| w.vapbs.get(&n).cloned())
            .collect()
    };
    for b in &owned {
        delete_or_retry(ctx, Target::Vapb, b).await?;
    }
    Ok(())
}

fn is_constraint_owner(c: &ControllerRef, kind: &str, name: &str) -> bool {
    c.api_version.starts_with(snapshot::CONSTRAINT_GROUP) && c.kind == kind && c.name == name
}

fn constraint_status(state: &str, message: &str, generation: u64, binding: Option<&str>) -> Value {
    let mut ep = json!({
        "enforcementPoint": "vap.k8s.io",
        "state": state,
        "observedGeneration": generation,
    });
    if !message.is_empty() {
        ep["message"] = Value::String(message.into());
    }
    // No intent: no vap.k8s.io enforcement point at all (as Gatekeeper, test 7).
    let points = if state == "none" {
        json!([])
    } else {
        json!([ep])
    };
    json!({
        "observedGeneration": generation,
        "state": state,
        "message": (!message.is_empty()).then_some(message),
        "binding": binding,
        "enforcementPointsStatus": points,
    })
}

/// Test hook: make the next reconcile of one constraint panic, so that cluster tests can
/// check that a panic is contained to its key (`tests/tests/controller.rs`). Nothing sets it
/// outside tests; the check is one uncontended lock per constraint reconcile.
#[doc(hidden)]
pub mod test_hooks {
    use std::sync::Mutex;

    static PANIC_ONCE: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

    /// The next reconcile of constraint `kind/name` panics.
    pub fn panic_once(kind: &str, name: &str) {
        PANIC_ONCE
            .lock()
            .expect("test hook")
            .push((kind.into(), name.into()));
    }

    pub(super) fn maybe_panic(kind: &str, name: &str) {
        let hit = {
            let mut v = PANIC_ONCE.lock().expect("test hook");
            match v.iter().position(|(k, n)| k == kind && n == name) {
                Some(i) => {
                    v.remove(i);
                    true
                }
                None => false,
            }
        };
        if hit {
            panic!("test hook: injected panic in the reconcile of {kind}/{name}");
        }
    }
}
