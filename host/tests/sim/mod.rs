//! A deterministic simulation of vapgen's controller for schedule exploration.
//!
//! The **real** reconcilers (`reconcile::reconcile_template`, `reconcile::reconcile_constraint`)
//! run against:
//!
//! * [`Api`], a simulated API server: objects with uid, resourceVersion and generation,
//!   server-side apply/replace (no-op writes do not bump the resourceVersion), deletes with
//!   uid + resourceVersion preconditions, status merge patches, lease fencing (only the
//!   holder's writes succeed), and a watch history;
//! * per replica ([`Instance`]): its own `World` (watch caches), `Records`, `Queue` and
//!   readiness map, exactly the types the controller uses. Watch events reach each replica's
//!   caches one at a time, when the scheduler says so (informer lag, per-resource order kept);
//!   caches are (re)listed at chosen moments after a restart.
//!
//! Every write through [`SimCluster`] first yields once, so a reconcile is a sequence of
//! steps (its cache reads, then each write) and the scheduler can put user actions, watch
//! deliveries, other replicas' reconciles and leader changes between them.
//!
//! The scheduler ([`Chooser`]) picks one enabled action per step: the next user action of
//! the scenario's script, a watch delivery, a (re)list, starting any ready key of a queue
//! (not only the first: the real queue hands keys to several workers, and the order
//! between kinds is arbitrary), resuming an in-flight reconcile, firing a delayed requeue
//! (`requeue_after` and error backoff, at any later moment), a lease take-over or a stale
//! leader noticing it lost the lease. Random (seeded) or depth-first (every choice sequence
//! within a delay bound).
//!
//! Invariants (spec §5 and §6 items 29-33):
//! * (c) at every write: a binding is never **created** while its VAP does not exist;
//! * (e) at every write: a binding is written only while the writer's decision record says
//!   Generate with an existing policy (so never after it observed the template's deletion,
//!   item 32);
//! * (d) at every write: no binding of a live constraint is deleted by a replica whose
//!   record for the kind is Unknown (item 31);
//! * (f) at every write: a VAP is never deleted while a binding points at it (so no binding
//!   ever exists without its policy, given (c));
//! * at quiescence: (a) no dangling and (b) no missing binding, no missing or extra VAP, the
//!   content of every VAP and binding equal to what the decision module makes of the final
//!   objects, and every status matching (observed generation, generated or not).
//!
//! The library's own steps run here, none copied: each reconcile through `worker::admit`,
//! `worker::reconcile_key` and `worker::finish` (the queue's own backoff and timers, which the
//! scheduler fires), cache updates through `Feed::replace` and `Feed::apply` (the watches'
//! own), leadership through the real `Leader` (the lease manager's channel is a real watch
//! channel; the fence reads the simulated Lease through a `LeaseSource`; terms begin in
//! `Leader::take_change` and `Leader::end_lapse` with `controller::begin_term`), the resync
//! through `controller::resync`. What is modelled rather than run is the world: the API
//! server, the lease manager's sends, and the passing of time.

#![allow(dead_code)] // each test binary uses a subset

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde_json::{Value, json};
use vapgen::controller::leader::{Leader, LeaseFuture, LeaseSource};
use vapgen::controller::queue::{Key, Queue};
use vapgen::controller::reconcile::{
    ApiError, Cluster, Ctx, NoObserver, Probe, ReconcileConfig, ReconcileError, StatusTarget,
    Target, Weakened,
};
use vapgen::controller::record::{Decision, Lookup, Records};
use vapgen::controller::worker;
use vapgen::controller::world::{self, CrdInfo, World, controller_of};
use vapgen::model::{
    BindingOutcome, Constraint, KindPlan, PolicyOutcome, Settings, TemplateDecision,
};
use vapgen::render::{self, Owner};
use vapgen::runtime::{CallError, Decide, NativeDecider};
use vapgen::snapshot;

// === randomness and choices ===

/// xorshift64* seeded through splitmix64 (any seed, including 0, is fine).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Who decides at each choice point.
#[derive(Clone, Debug)]
pub enum Chooser {
    /// Uniformly random among the enabled actions.
    Random(Rng),
    /// Follows `prefix`, then takes option 0 (the default order); records every choice
    /// point so that [`Chooser::next_dfs`] can enumerate all sequences within the bounds.
    Dfs {
        /// Choices to replay.
        prefix: Vec<usize>,
        /// (choice, options) of every choice point so far.
        taken: Vec<(usize, usize)>,
        /// Maximum sum of choice indices ("delays" away from the default order).
        max_delays: usize,
        /// Choice points beyond this depth always take option 0.
        max_depth: usize,
    },
}

impl Chooser {
    /// A depth-first chooser starting at the default schedule.
    pub fn dfs(max_delays: usize, max_depth: usize) -> Self {
        Chooser::Dfs {
            prefix: Vec::new(),
            taken: Vec::new(),
            max_delays,
            max_depth,
        }
    }

    fn choose(&mut self, n: usize) -> usize {
        assert!(n > 0, "no option to choose from");
        if n == 1 {
            return 0;
        }
        match self {
            Chooser::Random(r) => r.below(n),
            Chooser::Dfs {
                prefix,
                taken,
                max_depth,
                ..
            } => {
                let i = taken.len();
                if i >= *max_depth {
                    return 0;
                }
                let c = prefix.get(i).copied().unwrap_or(0).min(n - 1);
                taken.push((c, n));
                c
            }
        }
    }

    /// The next schedule of a depth-first enumeration, or `None` when all are done.
    pub fn next_dfs(&self) -> Option<Chooser> {
        let Chooser::Dfs {
            taken,
            max_delays,
            max_depth,
            ..
        } = self
        else {
            return None;
        };
        let mut used: Vec<usize> = Vec::with_capacity(taken.len() + 1);
        let mut sum = 0;
        for (c, _) in taken {
            used.push(sum);
            sum += c;
        }
        for i in (0..taken.len()).rev() {
            let (c, n) = taken[i];
            if c + 1 < n && used[i] + c < *max_delays {
                let mut prefix: Vec<usize> = taken[..i].iter().map(|(c, _)| *c).collect();
                prefix.push(c + 1);
                return Some(Chooser::Dfs {
                    prefix,
                    taken: Vec::new(),
                    max_delays: *max_delays,
                    max_depth: *max_depth,
                });
            }
        }
        None
    }

    /// The choices taken so far (the replayable path of a depth-first schedule).
    pub fn path(&self) -> String {
        match self {
            Chooser::Dfs { taken, .. } => taken
                .iter()
                .map(|(c, _)| c.to_string())
                .collect::<Vec<_>>()
                .join("."),
            Chooser::Random(_) => String::new(),
        }
    }

    /// A depth-first chooser that replays `path` (as printed by [`Chooser::path`]).
    pub fn replay_path(path: &str) -> Self {
        Chooser::Dfs {
            prefix: path
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().expect("a path is dot-separated numbers"))
                .collect(),
            taken: Vec::new(),
            max_delays: usize::MAX,
            max_depth: usize::MAX,
        }
    }
}

// === the decision module (memoised: a pure function, and the sim calls it a lot) ===

/// The bundled logic, natively, with results memoised across schedules.
#[derive(Default)]
pub struct Memo {
    cache: Mutex<HashMap<String, KindPlan>>,
}

impl Decide for Memo {
    fn plan_kind(
        &self,
        settings: &Settings,
        template_json: &str,
        constraints: &[Constraint],
    ) -> Result<KindPlan, CallError> {
        let key = format!("{settings:?}\u{0}{template_json}\u{0}{constraints:?}");
        if let Some(p) = self.cache.lock().expect("memo").get(&key) {
            return Ok(p.clone());
        }
        let p = NativeDecider.plan_kind(settings, template_json, constraints)?;
        self.cache.lock().expect("memo").insert(key, p.clone());
        Ok(p)
    }
}

/// The memo shared by every simulation of this test binary.
pub fn memo() -> Arc<Memo> {
    static MEMO: OnceLock<Arc<Memo>> = OnceLock::new();
    MEMO.get_or_init(Arc::default).clone()
}

// === the simulated API server ===

/// A watched resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    /// ConstraintTemplates.
    Templates,
    /// VAPs.
    Vaps,
    /// VAPBs.
    Vapbs,
    /// Constraint CRDs (static in the simulation: one per kind, Established).
    Crds,
    /// Constraints of one kind (exact case).
    Constraints(String),
}

/// A watch event.
#[derive(Clone, Debug)]
pub struct Ev {
    res: Res,
    obj: Value,
    deleted: bool,
}

/// What an invariant violation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VKind {
    /// (a) at quiescence, a binding exists that the final objects do not call for.
    Dangling,
    /// (b) at quiescence, a binding the final objects call for does not exist.
    Missing,
    /// At quiescence, a VAP exists that should not, or is missing.
    Policy,
    /// At quiescence, a VAP's or binding's content differs from the decision module's.
    Content,
    /// At quiescence, a status does not describe the final state.
    Status,
    /// (c) a binding was created while its VAP did not exist.
    BindingWithoutPolicy,
    /// (e) a binding was written while the writer's record did not say Generate with an
    /// existing policy.
    BindingWithoutDecision,
    /// (d) a binding of a live constraint was deleted while the writer's record for its
    /// kind was Unknown.
    DeleteOnUnknown,
    /// The system did not become quiet.
    NoQuiescence,
    /// (f) a VAP was deleted while a binding still pointed at it (a binding never outlives
    /// its policy).
    BindingOutlivesPolicy,
    /// A reconcile failed in a way the simulation never provokes.
    UnexpectedError,
}

/// One violation.
#[derive(Clone, Debug)]
pub struct Violation {
    /// What.
    pub kind: VKind,
    /// Details.
    pub detail: String,
    /// The step at which it was found.
    pub step: usize,
}

/// One write that reached the API server.
#[derive(Clone, Debug)]
pub struct Write {
    /// Writer (instance id).
    pub by: usize,
    /// `create`, `update`, `noop-update`, `delete`, `status`.
    pub verb: &'static str,
    /// What.
    pub target: Target,
    /// Object name.
    pub name: String,
    /// Simulation step.
    pub step: usize,
}

/// An error the simulated API server gives for one controller write (`Scenario::faults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 409 Conflict: nothing written.
    Conflict,
    /// 422 Invalid: nothing written; the reconciler treats it as permanent (an error state,
    /// no requeue) until an input changes or the resync comes (`Act::Resync`).
    Invalid,
    /// 429 Too Many Requests: nothing written.
    TooManyRequests,
    /// 503 Service Unavailable: nothing written.
    Unavailable,
    /// A client timeout before the request reached etcd: nothing written.
    TimeoutLost,
    /// A client timeout after the write landed: the object changed, the caller sees an error.
    TimeoutLanded,
}

impl Fault {
    /// Every fault, for random scenarios.
    pub const ALL: [Fault; 6] = [
        Fault::Conflict,
        Fault::Invalid,
        Fault::TooManyRequests,
        Fault::Unavailable,
        Fault::TimeoutLost,
        Fault::TimeoutLanded,
    ];

    fn error(self) -> ApiError {
        match self {
            Fault::Conflict => {
                ApiError::Conflict(format!("{INJECTED_FAULT}: the object has been modified"))
            }
            Fault::Invalid => ApiError::Rejected(format!("{INJECTED_FAULT}: is invalid (422)")),
            Fault::TooManyRequests => {
                ApiError::Other(format!("{INJECTED_FAULT}: Too Many Requests (429)"))
            }
            Fault::Unavailable => {
                ApiError::Other(format!("{INJECTED_FAULT}: Service Unavailable (503)"))
            }
            Fault::TimeoutLost | Fault::TimeoutLanded => {
                ApiError::Other(format!("{INJECTED_FAULT}: request timed out"))
            }
        }
    }
}

/// The mark of an injected error's message (such failures are expected, not violations).
const INJECTED_FAULT: &str = "injected";

/// Whether a failed reconcile failed as the model allows: on a conflict (preconditioned
/// deletes meet stale caches) or on a fault the explorer injected — the API error under it,
/// found along its sources.
fn expected_failure(e: &ReconcileError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(api) = err.downcast_ref::<ApiError>() {
            return matches!(api, ApiError::Conflict(_))
                || api.to_string().contains(INJECTED_FAULT);
        }
        cur = err.source();
    }
    false
}

/// The simulated API server.
#[derive(Default)]
pub struct Api {
    rv: u64,
    uids: u64,
    /// ConstraintTemplates by name.
    pub templates: BTreeMap<String, Value>,
    /// Constraints by exact-case kind, then name.
    pub constraints: BTreeMap<String, BTreeMap<String, Value>>,
    /// VAPs by name.
    pub vaps: BTreeMap<String, Value>,
    /// VAPBs by name.
    pub vapbs: BTreeMap<String, Value>,
    /// The instance id holding the lease (`None`: free).
    pub holder: Option<usize>,
    /// The replica whose lease lapsed (a renewal slower than the lease) and whose late
    /// renewal has not landed yet (`UserAct::Lapse`, `Act::Regain`).
    pub lapsed: Option<usize>,
    /// Controller writes (applies) so far, and the one that panics (`Scenario::panic_at_write`).
    applies: usize,
    panic_at_write: Option<usize>,
    /// Controller writes of any verb so far, and the faults still to inject (by number).
    write_count: usize,
    faults: BTreeMap<usize, Fault>,
    /// A 422 was injected: the resync owes the rejected key a retry (`Act::Resync`).
    pub resync_owed: bool,
    outbox: Vec<Ev>,
    /// Violations found at write time.
    pub violations: Vec<Violation>,
    /// Every successful controller write.
    pub writes: Vec<Write>,
    /// Current step (for reports).
    pub step: usize,
    /// Check (e) (off when the constraint reconciler does not use the record).
    pub check_records: bool,
    /// Trace lines, when tracing.
    pub trace: Option<Vec<String>>,
}

fn meta_str(v: &Value, field: &str) -> String {
    v.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

// What `KubeCluster` puts onto a live object: the real `controller::kube::overlay`.
use vapgen::controller::kube::overlay;

impl Api {
    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let line = f();
            t.push(format!("{:>5}   {line}", self.step));
        }
    }

    fn violation(&mut self, kind: VKind, detail: String) {
        self.log(|| format!("VIOLATION {kind:?}: {detail}"));
        self.violations.push(Violation {
            kind,
            detail,
            step: self.step,
        });
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn new_uid(&mut self) -> String {
        self.uids += 1;
        format!("uid-{}", self.uids)
    }

    fn emit(&mut self, res: Res, obj: Value, deleted: bool) {
        self.outbox.push(Ev { res, obj, deleted });
    }

    fn record_write(&mut self, by: usize, verb: &'static str, target: Target, name: &str) {
        self.log(|| format!("write by #{by}: {verb} {} {name}", target.as_str()));
        self.writes.push(Write {
            by,
            verb,
            target,
            name: name.to_string(),
            step: self.step,
        });
    }

    // --- user writes (no fencing) ---

    /// Creates or updates an object as a user would (spec replaced; generation bumped when
    /// the spec changes; a no-op write changes nothing).
    fn user_put(&mut self, res: Res, mut obj: Value) {
        let name = meta_str(&obj, "name");
        let existing = self.map_of(&res).get(&name).cloned();
        match existing {
            Some(live) => {
                let mut new = live.clone();
                new["spec"] = obj["spec"].clone();
                if let Some(l) = obj.pointer("/metadata/labels") {
                    new["metadata"]["labels"] = l.clone();
                }
                if new == live {
                    return;
                }
                if new["spec"] != live["spec"] {
                    let g = live
                        .pointer("/metadata/generation")
                        .and_then(Value::as_u64)
                        .unwrap_or(1);
                    new["metadata"]["generation"] = json!(g + 1);
                }
                new["metadata"]["resourceVersion"] = json!(self.next_rv());
                self.map_of(&res).insert(name, new.clone());
                self.emit(res, new, false);
            }
            None => {
                obj["metadata"]["uid"] = json!(self.new_uid());
                obj["metadata"]["generation"] = json!(1);
                obj["metadata"]["resourceVersion"] = json!(self.next_rv());
                self.map_of(&res).insert(name, obj.clone());
                self.emit(res, obj, false);
            }
        }
    }

    fn user_delete(&mut self, res: Res, name: &str) {
        if let Some(mut old) = self.map_of(&res).remove(name) {
            old["metadata"]["resourceVersion"] = json!(self.next_rv());
            self.emit(res, old, true);
        }
    }

    fn map_of(&mut self, res: &Res) -> &mut BTreeMap<String, Value> {
        match res {
            Res::Templates => &mut self.templates,
            Res::Vaps => &mut self.vaps,
            Res::Vapbs => &mut self.vapbs,
            Res::Crds => unreachable!("CRDs are static"),
            Res::Constraints(k) => self.constraints.entry(k.clone()).or_default(),
        }
    }

    fn list(&mut self, res: &Res) -> Vec<Value> {
        if *res == Res::Crds {
            return Vec::new();
        }
        self.map_of(res).values().cloned().collect()
    }

    // --- controller writes (fenced by the lease) ---

    fn fenced(&self, by: usize) -> Result<(), ApiError> {
        if self.holder == Some(by) {
            Ok(())
        } else {
            Err(ApiError::NotLeader)
        }
    }

    /// Counts a controller write and returns the fault to inject into it, if any.
    fn next_fault(&mut self, by: usize, what: &str) -> Option<Fault> {
        self.write_count += 1;
        let n = self.write_count;
        let f = self.faults.remove(&n)?;
        if f == Fault::Invalid {
            self.resync_owed = true;
        }
        self.log(|| format!("#{by}: write {n} ({what}) gets injected {f:?}"));
        Some(f)
    }

    /// Runs `write` unless `fault` says it never lands; returns the fault's error if any.
    fn with_fault<T>(
        fault: Option<Fault>,
        write: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        match fault {
            None => write(),
            Some(Fault::TimeoutLanded) => write().and(Err(Fault::TimeoutLanded.error())),
            Some(f) => Err(f.error()),
        }
    }

    fn apply(
        &mut self,
        by: usize,
        target: Target,
        obj: &Value,
        writer: &Records,
    ) -> Result<Value, ApiError> {
        self.fenced(by)?;
        let fault = self.next_fault(by, &format!("apply {}", meta_str(obj, "name")));
        Self::with_fault(fault, || self.apply_landed(by, target, obj, writer))
    }

    fn apply_landed(
        &mut self,
        by: usize,
        target: Target,
        obj: &Value,
        writer: &Records,
    ) -> Result<Value, ApiError> {
        self.applies += 1;
        if self.panic_at_write == Some(self.applies) {
            self.panic_at_write = None;
            let n = self.applies;
            self.log(|| format!("#{by}: injected panic in apply number {n}"));
            // Unlock before unwinding: the panic is the reconcile's, not the API server's.
            return Err(ApiError::Other(INJECTED_PANIC.into()));
        }
        let res = match target {
            Target::Vap => Res::Vaps,
            Target::Vapb => Res::Vapbs,
            Target::Crd => return Ok(obj.clone()),
        };
        let name = meta_str(obj, "name");
        if target == Target::Vapb {
            self.check_binding_write(obj, writer, !self.vapbs.contains_key(&name));
        }
        match self.map_of(&res).get(&name).cloned() {
            Some(live) => {
                let mut new = live.clone();
                overlay(&mut new, obj);
                if new == live {
                    self.record_write(by, "noop-update", target, &name);
                    return Ok(live);
                }
                if new["spec"] != live["spec"] {
                    let g = live
                        .pointer("/metadata/generation")
                        .and_then(Value::as_u64)
                        .unwrap_or(1);
                    new["metadata"]["generation"] = json!(g + 1);
                }
                new["metadata"]["resourceVersion"] = json!(self.next_rv());
                self.map_of(&res).insert(name.clone(), new.clone());
                self.emit(res, new.clone(), false);
                self.record_write(by, "update", target, &name);
                Ok(new)
            }
            None => {
                let mut new = obj.clone();
                new["metadata"]["uid"] = json!(self.new_uid());
                new["metadata"]["generation"] = json!(1);
                new["metadata"]["resourceVersion"] = json!(self.next_rv());
                self.map_of(&res).insert(name.clone(), new.clone());
                self.emit(res, new.clone(), false);
                self.record_write(by, "create", target, &name);
                Ok(new)
            }
        }
    }

    fn check_binding_write(&mut self, obj: &Value, writer: &Records, create: bool) {
        let name = meta_str(obj, "name");
        let policy = obj
            .pointer("/spec/policyName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if create && !self.vaps.contains_key(&policy) {
            self.violation(
                VKind::BindingWithoutPolicy,
                format!(
                    "binding {name} created while ValidatingAdmissionPolicy {policy} does not exist"
                ),
            );
        }
        if !self.check_records {
            return;
        }
        let kind = controller_of(obj).map(|c| c.kind).unwrap_or_default();
        let ok = match writer.get(&kind) {
            Lookup::Known(r) => {
                matches!(&r.decision, Decision::Generate { policy, .. } if policy.exists())
            }
            Lookup::Unknown => false,
        };
        if !ok {
            let state = match writer.get(&kind) {
                Lookup::Known(r) => r.state_name(),
                Lookup::Unknown => "unknown",
            };
            self.violation(
                VKind::BindingWithoutDecision,
                format!("binding {name} written while the writer's record for {kind} is {state}"),
            );
        }
    }

    fn delete(
        &mut self,
        by: usize,
        target: Target,
        name: &str,
        uid: &str,
        rv: &str,
        writer: &Records,
    ) -> Result<(), ApiError> {
        self.fenced(by)?;
        let fault = self.next_fault(by, &format!("delete {name}"));
        Self::with_fault(fault, || {
            self.delete_landed(by, target, name, uid, rv, writer)
        })
    }

    fn delete_landed(
        &mut self,
        by: usize,
        target: Target,
        name: &str,
        uid: &str,
        rv: &str,
        writer: &Records,
    ) -> Result<(), ApiError> {
        let res = match target {
            Target::Vap => Res::Vaps,
            Target::Vapb => Res::Vapbs,
            Target::Crd => return Ok(()),
        };
        let Some(live) = self.map_of(&res).get(name).cloned() else {
            return Err(ApiError::NotFound);
        };
        if !uid.is_empty() && meta_str(&live, "uid") != uid {
            return Err(ApiError::Conflict(format!(
                "uid precondition failed for {name}"
            )));
        }
        if !rv.is_empty() && meta_str(&live, "resourceVersion") != rv {
            return Err(ApiError::Conflict(format!(
                "resourceVersion precondition failed for {name}"
            )));
        }
        if target == Target::Vapb {
            // Deleting the binding of a constraint that is gone needs no decision; deleting
            // one whose constraint lives does, and Unknown must never be acted on.
            let owner = controller_of(&live).unwrap_or_else(|| world::ControllerRef {
                api_version: String::new(),
                kind: String::new(),
                name: String::new(),
                uid: String::new(),
            });
            let kind = owner.kind.clone();
            let owner_lives = self
                .constraints
                .get(&kind)
                .and_then(|m| m.get(&owner.name))
                .is_some_and(|c| meta_str(c, "uid") == owner.uid);
            if owner_lives && matches!(writer.get(&kind), Lookup::Unknown) {
                self.violation(
                    VKind::DeleteOnUnknown,
                    format!(
                        "binding {name} deleted while the writer's record for {kind} is Unknown"
                    ),
                );
            }
        }
        self.user_delete(res, name);
        self.record_write(by, "delete", target, name);
        if target == Target::Vap {
            let left: Vec<String> = self
                .vapbs
                .iter()
                .filter(|(_, b)| {
                    b.pointer("/spec/policyName").and_then(Value::as_str) == Some(name)
                })
                .map(|(n, _)| n.clone())
                .collect();
            if !left.is_empty() {
                self.violation(
                    VKind::BindingOutlivesPolicy,
                    format!("VAP {name} deleted while bindings {left:?} point at it"),
                );
            }
        }
        Ok(())
    }

    fn patch_status(
        &mut self,
        by: usize,
        target: &StatusTarget,
        status: &Value,
    ) -> Result<(), ApiError> {
        self.fenced(by)?;
        let fault = self.next_fault(by, &format!("status {target:?}"));
        Self::with_fault(fault, || self.patch_status_landed(by, target, status))
    }

    fn patch_status_landed(
        &mut self,
        by: usize,
        target: &StatusTarget,
        status: &Value,
    ) -> Result<(), ApiError> {
        let (res, name) = match target {
            StatusTarget::Template(n) => (Res::Templates, n.clone()),
            StatusTarget::Constraint { kind, name } => {
                (Res::Constraints(kind.clone()), name.clone())
            }
        };
        let Some(live) = self.map_of(&res).get(&name).cloned() else {
            return Err(ApiError::NotFound);
        };
        let mut new = live.clone();
        merge_patch(&mut new, &json!({"status": {"vapgen": status}}));
        if new == live {
            return Ok(());
        }
        new["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.map_of(&res).insert(name.clone(), new.clone());
        self.emit(res, new, false);
        self.record_write(by, "status", Target::Vap, &name);
        Ok(())
    }
}

// === the Cluster ===

/// Yields once: turns every write into a scheduling point.
#[derive(Default)]
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// One replica's writer: the simulated API server, fenced by the lease.
pub struct SimCluster {
    api: Arc<Mutex<Api>>,
    me: usize,
    leader: Arc<Leader>,
    records: Arc<Mutex<Records>>,
    probes: Mutex<HashMap<String, u32>>,
    probe_not_ready: u32,
}

/// The message by which the simulated API server asks its caller to panic (the panic
/// happens in the reconcile's task, outside the API server's lock).
const INJECTED_PANIC: &str = "injected panic (test hook)";

impl SimCluster {
    /// A write leaves this replica: as `Leader::ensure` in the real cluster port, the lease
    /// is checked before the request is sent (and the simulated API server checks it again
    /// when the write lands, a stricter fence than the real one). Returns the writer's
    /// records as they are when the request is sent: what licensed the write, for the
    /// checks (d) and (e) when it lands (possibly in a later term of the same replica,
    /// which the controller then notes as fenced).
    async fn send(&self) -> Result<Records, ApiError> {
        if !self.leader.ensure().await {
            return Err(ApiError::NotLeader);
        }
        Ok(self.records.lock().expect("records").clone())
    }
}

/// The simulated Lease as the fence reads it: held by the holder (renewed now), expired
/// after a lapse (the lapsed replica's renewal is a second past its 15 s), or free.
struct SimLease(Arc<Mutex<Api>>);

/// The identity of replica `id`.
fn identity(id: usize) -> String {
    format!("replica-{id}")
}

impl LeaseSource for SimLease {
    fn read(&self) -> LeaseFuture<'_> {
        let (holder, lapsed) = {
            let api = self.0.lock().expect("api");
            (api.holder, api.lapsed)
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let spec = match (holder, lapsed) {
            (Some(h), _) => json!({"holderIdentity": identity(h), "renewTime": now}),
            (None, Some(l)) => json!({"holderIdentity": identity(l), "renewTime": now - 16}),
            (None, None) => json!({}),
        };
        Box::pin(async move {
            let mut spec = spec;
            if let Some(t) = spec.get("renewTime").and_then(Value::as_i64) {
                let ts = k8s_openapi::jiff::Timestamp::from_second(t)?;
                spec["renewTime"] = json!(ts.to_string());
                spec["leaseDurationSeconds"] = json!(15);
            }
            Ok(serde_json::from_value(
                json!({"metadata": {"name": "vapgen"}, "spec": spec}),
            )?)
        })
    }
}

/// Polls a future that must complete without waiting (the simulated API answers at once).
fn now_or_never<T>(fut: impl Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a step that should not wait did"),
    }
}

impl Cluster for SimCluster {
    async fn apply(&self, target: Target, obj: &Value) -> Result<Value, ApiError> {
        let sent = self.send().await?;
        YieldOnce::default().await;
        let r = self
            .api
            .lock()
            .expect("api")
            .apply(self.me, target, obj, &sent);
        if matches!(&r, Err(ApiError::Other(m)) if m == INJECTED_PANIC) {
            panic!("{INJECTED_PANIC}");
        }
        r
    }

    async fn get(&self, target: Target, name: &str) -> Result<Option<Value>, ApiError> {
        YieldOnce::default().await;
        let api = self.api.lock().expect("api");
        Ok(match target {
            Target::Vap => api.vaps.get(name).cloned(),
            Target::Vapb => api.vapbs.get(name).cloned(),
            Target::Crd => None,
        })
    }

    async fn get_constraint(&self, kind: &str, name: &str) -> Result<Option<Value>, ApiError> {
        YieldOnce::default().await;
        let api = self.api.lock().expect("api");
        Ok(api
            .constraints
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(kind))
            .and_then(|(_, m)| m.get(name))
            .cloned())
    }

    async fn list(&self, target: Target) -> Result<Vec<Value>, ApiError> {
        YieldOnce::default().await;
        let api = self.api.lock().expect("api");
        Ok(match target {
            Target::Vap => api.vaps.values().cloned().collect(),
            Target::Vapb => api.vapbs.values().cloned().collect(),
            Target::Crd => Vec::new(),
        })
    }

    async fn delete(
        &self,
        target: Target,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> Result<(), ApiError> {
        let sent = self.send().await?;
        YieldOnce::default().await;
        self.api
            .lock()
            .expect("api")
            .delete(self.me, target, name, uid, resource_version, &sent)
    }

    async fn patch_status(&self, target: &StatusTarget, status: &Value) -> Result<(), ApiError> {
        self.send().await?;
        YieldOnce::default().await;
        self.api
            .lock()
            .expect("api")
            .patch_status(self.me, target, status)
    }

    async fn event(&self, _: &StatusTarget, _: &str, _: bool, _: &str, _: &str) {}

    async fn probe_kind(&self, crd: &CrdInfo) -> Probe {
        let mut p = self.probes.lock().expect("probes");
        let n = p.entry(crd.kind.clone()).or_insert(0);
        *n += 1;
        if *n <= self.probe_not_ready {
            Probe::NotYet("the simulated kind is not ready yet".into())
        } else {
            Probe::Ready
        }
    }

    async fn end_probe(&self, _: &str) {}
}

// === replicas ===

type ReconcileFuture = Pin<Box<dyn Future<Output = worker::Outcome>>>;

struct Task {
    key: Key,
    fut: ReconcileFuture,
}

/// One replica of the controller.
pub struct Instance {
    /// Unique id (a restarted replica gets a new one).
    pub id: usize,
    /// The reconcilers' context (real types).
    pub ctx: Arc<Ctx<SimCluster>>,
    /// The real leadership state, fed by `tx`.
    pub leader: Arc<Leader>,
    /// The lease manager's channel ("I hold the lease"), which the workers read. Stale after
    /// a take-over until this replica's manager notices (`Notice`).
    tx: tokio::sync::watch::Sender<bool>,
    /// The last value the leadership loop took in (for the trace).
    was: bool,
    listed: BTreeSet<Res>,
    pending: BTreeMap<Res, VecDeque<Ev>>,
    tasks: Vec<Task>,
}

impl Instance {
    fn new(id: usize, api: &Arc<Mutex<Api>>, scn: &Scenario, decider: Arc<dyn Decide>) -> Self {
        let records = Arc::new(Mutex::new(Records::default()));
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Verified at every write: the scheduler's steps take no time.
        let leader = Arc::new(
            Leader::with_lease(&identity(id), rx, Arc::new(SimLease(api.clone())))
                .verify_window(Duration::ZERO),
        );
        let cluster = SimCluster {
            api: api.clone(),
            me: id,
            leader: leader.clone(),
            records: records.clone(),
            probes: Mutex::default(),
            probe_not_ready: scn.probe_not_ready,
        };
        let ctx = Ctx {
            cluster,
            world: Arc::new(RwLock::new(World::default())),
            records,
            decider: Arc::new(RwLock::new(decider)),
            settings: scn.settings.clone(),
            queue: Queue::default(),
            config: ReconcileConfig {
                manage_crds: false,
                // Readiness never times out (wall-clock time plays no part in a schedule).
                wait_bound: Duration::from_secs(86_400),
                probe_interval: Duration::from_millis(1),
                exempt_namespaces: Vec::new(),
                scope_sync: None,
                weakened: scn.weakened,
            },
            readiness: Mutex::default(),
            observer: Arc::new(NoObserver),
        };
        Instance {
            id,
            ctx: Arc::new(ctx),
            leader,
            tx,
            was: false,
            listed: BTreeSet::new(),
            pending: BTreeMap::new(),
            tasks: Vec::new(),
        }
    }

    /// The real watches' feed of a resource.
    fn feed(res: &Res) -> vapgen::controller::kube::Feed {
        use vapgen::controller::kube::Feed;
        match res {
            Res::Templates => Feed::Templates,
            Res::Vaps => Feed::Vaps,
            Res::Vapbs => Feed::Vapbs,
            Res::Crds => Feed::Crds,
            Res::Constraints(kind) => Feed::Constraints { kind: kind.clone() },
        }
    }

    /// A (re)list: the library's own step ([`Feed::replace`]); CRDs are static here, one
    /// Established CRD per scenario kind.
    fn replace(&mut self, res: &Res, objs: Vec<Value>, kinds: &[String]) {
        self.listed.insert(res.clone());
        self.pending.insert(res.clone(), VecDeque::new());
        let mut keys = Vec::new();
        {
            let mut w = self.ctx.world.write().expect("world");
            if *res == Res::Crds {
                for k in kinds {
                    w.crds.insert(
                        k.to_ascii_lowercase(),
                        CrdInfo {
                            kind: k.clone(),
                            plural: k.to_ascii_lowercase(),
                            established: true,
                            uid: format!("crd-{k}"),
                            template_generation: None,
                            template_owner: None,
                        },
                    );
                    keys.push(Key::Template(k.to_ascii_lowercase()));
                }
                w.synced.insert(Self::feed(res).sync_name());
            } else {
                keys = Self::feed(res).replace(&mut w, objs);
            }
        }
        for k in keys {
            self.ctx.queue.add(k);
        }
    }

    /// One watch event: the library's own step ([`Feed::apply`]).
    fn deliver(&mut self, ev: Ev) {
        let keys = Self::feed(&ev.res).apply(
            &mut self.ctx.world.write().expect("world"),
            ev.obj,
            ev.deleted,
        );
        for k in keys {
            self.ctx.queue.add(k);
        }
    }

    /// `Leader::may_reconcile`.
    pub fn may_reconcile(&self) -> bool {
        self.leader.may_reconcile()
    }

    /// The lease manager's latest value ("I hold the lease").
    pub fn chan(&self) -> bool {
        *self.tx.borrow()
    }

    /// The lease manager publishes a value (kube-lease-manager sends only changes).
    fn send(&mut self, v: bool) {
        self.tx
            .send_if_modified(|cur| std::mem::replace(cur, v) != v);
    }

    /// The leadership loop's step (`controller::leadership`): takes in the channel's latest
    /// value; every `true` begins a term.
    fn take_change(&mut self) -> bool {
        let ctx = &self.ctx;
        let now = self
            .leader
            .take_change(|| vapgen::controller::begin_term(&ctx.records, &ctx.world, &ctx.queue));
        self.was = now;
        now
    }

    fn busy(&self) -> bool {
        !self.tasks.is_empty()
            || !self.ctx.queue.delayed_keys().is_empty()
            || !self.ctx.queue.is_empty()
            || self.leader.change_pending()
            || (self.leader.is_lapsed() && self.chan())
            || self.pending.values().any(|q| !q.is_empty())
    }
}

// === scenarios ===

/// A user (or operator) action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserAct {
    /// Create or update the template of `kind` with this `generateVAP` (`None`: unset).
    Template {
        /// Exact-case kind.
        kind: String,
        /// `source.generateVAP`.
        generate: Option<bool>,
    },
    /// Delete the template of `kind`.
    DeleteTemplate {
        /// Kind.
        kind: String,
    },
    /// Create or update a constraint with one of the [`constraint_spec`] variants.
    Constraint {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Variant.
        variant: u8,
    },
    /// Change a constraint's labels only (a reconcile "for an unrelated reason").
    Touch {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
    /// Delete a constraint.
    DeleteConstraint {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
    /// Kill replica `slot` (its in-flight reconciles die mid-way) and start a fresh one.
    Restart {
        /// Replica slot.
        slot: usize,
    },
    /// The leader is paused past its lease and another replica takes over (it learns of
    /// the loss only later: a `Notice` step).
    LeaderChange,
    /// The leader's renewal is slower than its lease: the Lease expires while its manager
    /// still says "leader"; the late renewal lands later (`Regain`) unless another replica
    /// takes the lease first.
    Lapse,
}

impl std::fmt::Display for UserAct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserAct::Template { kind, generate } => {
                write!(f, "put template {kind} generateVAP={generate:?}")
            }
            UserAct::DeleteTemplate { kind } => write!(f, "delete template {kind}"),
            UserAct::Constraint {
                kind,
                name,
                variant,
            } => write!(
                f,
                "put constraint {kind}/{name} as {}",
                VARIANTS[*variant as usize % VARIANTS.len()]
            ),
            UserAct::Touch { kind, name } => write!(f, "relabel constraint {kind}/{name}"),
            UserAct::DeleteConstraint { kind, name } => {
                write!(f, "delete constraint {kind}/{name}")
            }
            UserAct::Restart { slot } => write!(f, "restart replica {slot}"),
            UserAct::LeaderChange => write!(f, "leader paused past its lease; take-over"),
            UserAct::Lapse => write!(f, "the leader's lease lapses (slow renewal)"),
        }
    }
}

/// Names of the constraint variants.
pub const VARIANTS: [&str; 5] = ["deny", "warn", "scoped-vap", "scoped-no-vap", "selector"];

/// The template object of `kind`.
pub fn template_obj(kind: &str, generate: Option<bool>) -> Value {
    let mut source = json!({
        "validations": [{"expression": "object.metadata.name != 'forbidden'", "message": "forbidden name"}]
    });
    if let Some(g) = generate {
        source["generateVAP"] = json!(g);
    }
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.to_ascii_lowercase()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [{"engine": "K8sNativeValidation", "source": source}]}]
        }
    })
}

/// The spec of constraint variant `v` (see [`VARIANTS`]): deny, warn, scoped on vap.k8s.io,
/// scoped without vap.k8s.io (no binding intent), deny with a label selector.
pub fn constraint_spec(v: u8) -> Value {
    let m = json!({"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}]});
    match v as usize % VARIANTS.len() {
        0 => json!({"match": m}),
        1 => json!({"match": m, "enforcementAction": "warn"}),
        2 => json!({"match": m, "enforcementAction": "scoped",
                    "scopedEnforcementActions": [{"action": "deny", "enforcementPoints": [{"name": "vap.k8s.io"}]}]}),
        3 => json!({"match": m, "enforcementAction": "scoped",
                    "scopedEnforcementActions": [{"action": "deny", "enforcementPoints": [{"name": "validation.gatekeeper.sh"}]}]}),
        _ => {
            json!({"match": {"kinds": m["kinds"], "labelSelector": {"matchLabels": {"team": "a"}}}})
        }
    }
}

fn constraint_obj(kind: &str, name: &str, v: u8) -> Value {
    json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": constraint_spec(v)
    })
}

/// A simulation set-up: objects, replicas, the script, and the knobs.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name (for reports and replay).
    pub name: String,
    /// Module settings.
    pub settings: Settings,
    /// Test-only weakening of the race fix.
    pub weakened: Weakened,
    /// Constraint kinds (each has a static, Established CRD).
    pub kinds: Vec<String>,
    /// Replicas (1: no leader election, the replica always leads).
    pub replicas: usize,
    /// Concurrent reconciles per replica.
    pub workers: usize,
    /// Hand out keys only in queue order (otherwise any ready key may start).
    pub fifo: bool,
    /// The first probes of each kind per replica that report "not ready".
    pub probe_not_ready: u32,
    /// Applied before the controller starts; the controller then converges (not explored).
    pub initial: Vec<UserAct>,
    /// The explored part: these actions, interleaved with everything else.
    pub script: Vec<UserAct>,
    /// Steps after which the rest runs in the default order.
    pub max_steps: usize,
    /// The n-th controller apply (counted from the start of the explored part) panics in
    /// the reconcile that makes it (a bug in a reconciler, contained by the worker).
    pub panic_at_write: Option<usize>,
    /// Errors the API server gives for the n-th controller write of any verb (counted from
    /// the start of the explored part).
    pub faults: Vec<(usize, Fault)>,
    /// Watch streams that may break with 410 Gone (their undelivered events are lost and
    /// the cache is replaced by a relist), in the whole explored part.
    pub relists: usize,
}

impl Scenario {
    /// A scenario with defaults: one replica, two workers, any ready key may start.
    pub fn new(name: &str, kinds: &[&str]) -> Self {
        Scenario {
            name: name.into(),
            settings: Settings::default(),
            weakened: Weakened::default(),
            kinds: kinds.iter().map(|k| (*k).to_string()).collect(),
            replicas: 1,
            workers: 2,
            fifo: false,
            probe_not_ready: 0,
            initial: Vec::new(),
            script: Vec::new(),
            max_steps: 400,
            panic_at_write: None,
            faults: Vec::new(),
            relists: 0,
        }
    }
}

// === the simulation ===

#[derive(Clone, Debug)]
enum Act {
    User,
    List(usize, Res),
    Deliver(usize, Res),
    Leadership(usize),
    Start(usize, Key),
    Advance(usize, usize),
    Fire(usize, usize),
    Acquire(usize),
    Notice(usize),
    Regain(usize),
    EndLapse(usize),
    /// The periodic resync of replica i (`controller::resync`), enabled while a 422 is owed.
    Resync(usize),
    /// Replica i's watch of a resource breaks with 410 Gone: pending events are lost and
    /// the watch relists (`Act::List`).
    WatchGone(usize, Res),
}

/// A running simulation.
pub struct Sim {
    /// The scenario.
    pub scn: Scenario,
    /// The API server.
    pub api: Arc<Mutex<Api>>,
    /// Replicas by slot.
    pub instances: Vec<Instance>,
    next_id: usize,
    decider: Arc<Memo>,
    script: VecDeque<UserAct>,
    /// Steps taken.
    pub steps: usize,
    /// Watch breaks left (`Scenario::relists`).
    relists_left: usize,
}

/// The result of one schedule.
#[derive(Debug)]
pub struct Outcome {
    /// Violations (empty: the schedule passed).
    pub violations: Vec<Violation>,
    /// Steps taken.
    pub steps: usize,
    /// The trace, when asked for.
    pub trace: Vec<String>,
    /// Successful writes after the warm-up.
    pub writes: Vec<Write>,
}

impl Sim {
    /// Sets up the scenario: the initial objects, the replicas, and a converged controller.
    pub fn new(scn: &Scenario, trace: bool) -> Self {
        let api = Arc::new(Mutex::new(Api {
            check_records: !scn.weakened.naive_template_reads,
            trace: trace.then(Vec::new),
            ..Api::default()
        }));
        let mut sim = Sim {
            scn: scn.clone(),
            api,
            instances: Vec::new(),
            next_id: 0,
            decider: memo(),
            script: scn.script.iter().cloned().collect(),
            steps: 0,
            relists_left: scn.relists,
        };
        for a in &scn.initial {
            sim.user(a);
        }
        sim.api.lock().expect("api").outbox.clear();
        for _ in 0..scn.replicas {
            let inst = sim.fresh_instance();
            sim.instances.push(inst);
        }
        // Replica 0 leads at the start.
        let first = sim.instances[0].id;
        sim.api.lock().expect("api").holder = Some(first);
        sim.instances[0].send(true);
        if scn.replicas == 1 {
            // One replica: its first term begins before anything is cached.
            sim.instances[0].take_change();
        }
        sim.log(|| "--- warm-up (default order, not explored) ---".into());
        sim.drain();
        sim.log(|| "--- explored part ---".into());
        {
            let mut api = sim.api.lock().expect("api");
            api.writes.clear();
            api.applies = 0;
            api.panic_at_write = scn.panic_at_write;
            api.write_count = 0;
            api.faults = scn.faults.iter().copied().collect();
        }
        sim
    }

    fn fresh_instance(&mut self) -> Instance {
        self.next_id += 1;
        let d: Arc<dyn Decide> = self.decider.clone();
        Instance::new(self.next_id, &self.api, &self.scn, d)
    }

    fn log(&self, f: impl FnOnce() -> String) {
        self.api.lock().expect("api").log(f);
    }

    fn distribute(&mut self) {
        let events: Vec<Ev> = std::mem::take(&mut self.api.lock().expect("api").outbox);
        for ev in events {
            for inst in &mut self.instances {
                if inst.listed.contains(&ev.res) {
                    inst.pending
                        .entry(ev.res.clone())
                        .or_default()
                        .push_back(ev.clone());
                }
            }
        }
    }

    fn all_res(&self) -> Vec<Res> {
        let mut v = vec![Res::Crds, Res::Templates, Res::Vaps, Res::Vapbs];
        v.extend(self.scn.kinds.iter().map(|k| Res::Constraints(k.clone())));
        v
    }

    /// The enabled actions, in the default order (index 0 is what the default schedule
    /// does: finish what is in flight, then react, and only then the next user action).
    fn enabled(&self, user: bool) -> Vec<Act> {
        let mut acts = Vec::new();
        for (i, inst) in self.instances.iter().enumerate() {
            for t in 0..inst.tasks.len() {
                acts.push(Act::Advance(i, t));
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            if inst.may_reconcile() && inst.tasks.len() >= self.scn.workers {
                continue;
            }
            let ready = inst.ctx.queue.ready_keys();
            let n = if self.scn.fifo || !inst.may_reconcile() {
                ready.len().min(1)
            } else {
                ready.len()
            };
            for k in ready.into_iter().take(n) {
                acts.push(Act::Start(i, k));
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            for (res, q) in &inst.pending {
                if !q.is_empty() {
                    acts.push(Act::Deliver(i, res.clone()));
                }
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            if inst.leader.change_pending() {
                acts.push(Act::Leadership(i));
            }
        }
        let (holder, lapsed) = {
            let api = self.api.lock().expect("api");
            (api.holder, api.lapsed)
        };
        for (i, inst) in self.instances.iter().enumerate() {
            if holder.is_none() && lapsed == Some(inst.id) && inst.chan() {
                acts.push(Act::Regain(i));
            }
            if inst.leader.is_lapsed() && inst.chan() && holder == Some(inst.id) {
                acts.push(Act::EndLapse(i));
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            if inst.chan() && holder != Some(inst.id) {
                acts.push(Act::Notice(i));
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            for r in self.all_res() {
                let ready = match &r {
                    Res::Constraints(_) => inst.listed.contains(&Res::Crds),
                    _ => true,
                };
                if ready && !inst.listed.contains(&r) {
                    acts.push(Act::List(i, r));
                }
            }
        }
        if holder.is_none() {
            for (i, inst) in self.instances.iter().enumerate() {
                // In-flight reconciles of an earlier term reach their next (fenced) write long
                // before the lease can be won back (see `UserAct::LeaderChange`).
                if !inst.chan() && inst.tasks.is_empty() {
                    acts.push(Act::Acquire(i));
                }
            }
        }
        for (i, inst) in self.instances.iter().enumerate() {
            for d in 0..inst.ctx.queue.delayed_keys().len() {
                acts.push(Act::Fire(i, d));
            }
        }
        if self.api.lock().expect("api").resync_owed {
            for (i, inst) in self.instances.iter().enumerate() {
                if inst.may_reconcile() {
                    acts.push(Act::Resync(i));
                }
            }
        }
        if self.relists_left > 0 {
            for (i, inst) in self.instances.iter().enumerate() {
                for (res, q) in &inst.pending {
                    if !q.is_empty() && inst.listed.contains(res) {
                        acts.push(Act::WatchGone(i, res.clone()));
                    }
                }
            }
        }
        if user {
            acts.push(Act::User);
        }
        acts
    }

    fn step(&mut self, act: Act) {
        self.steps += 1;
        self.api.lock().expect("api").step = self.steps;
        match act {
            Act::User => {
                let a = self.script.pop_front().expect("a user action");
                self.user(&a);
            }
            Act::List(i, res) => {
                let objs = self.api.lock().expect("api").list(&res);
                let id = self.instances[i].id;
                self.log(|| format!("#{id} lists {res:?} ({} objects)", objs.len()));
                let kinds = self.scn.kinds.clone();
                self.instances[i].replace(&res, objs, &kinds);
            }
            Act::Deliver(i, res) => {
                let ev = self.instances[i]
                    .pending
                    .get_mut(&res)
                    .and_then(VecDeque::pop_front)
                    .expect("an event");
                let id = self.instances[i].id;
                self.log(|| {
                    format!(
                        "#{id} watch: {}{res:?} {} rv={}",
                        if ev.deleted { "DELETED " } else { "" },
                        snapshot::name_of(&ev.obj),
                        meta_str(&ev.obj, "resourceVersion")
                    )
                });
                self.instances[i].deliver(ev);
            }
            Act::Leadership(i) => {
                let inst = &mut self.instances[i];
                let (was, id) = (inst.was, inst.id);
                let now = inst.take_change();
                self.log(|| {
                    format!(
                        "#{id} leadership loop sees {now} (was {was}){}",
                        if now {
                            ": new term, records reset, requeue everything"
                        } else {
                            ""
                        }
                    )
                });
            }
            Act::Start(i, key) => {
                let inst = &mut self.instances[i];
                assert!(inst.ctx.queue.take(&key), "ready key {key}");
                let id = inst.id;
                if !worker::admit(&inst.leader, &inst.ctx.queue, &key) {
                    self.log(|| format!("#{id} follower drops {key}"));
                    return;
                }
                let ctx = inst.ctx.clone();
                self.log(|| format!("#{id} starts {key}"));
                let inst = &mut self.instances[i];
                let k = key.clone();
                let fut: ReconcileFuture =
                    Box::pin(async move { worker::reconcile_key(&ctx, &k).await });
                inst.tasks.push(Task { key, fut });
                let t = inst.tasks.len() - 1;
                self.advance(i, t);
            }
            Act::Advance(i, t) => self.advance(i, t),
            Act::Fire(i, d) => {
                let inst = &mut self.instances[i];
                let key = inst.ctx.queue.delayed_keys().swap_remove(d);
                let id = inst.id;
                assert!(inst.ctx.queue.fire(&key), "a timer of {key}");
                self.log(|| format!("#{id} requeue fires: {key}"));
            }
            Act::Acquire(i) => {
                let inst = &mut self.instances[i];
                inst.send(true);
                let id = inst.id;
                {
                    let mut api = self.api.lock().expect("api");
                    api.holder = Some(id);
                    api.lapsed = None;
                }
                self.log(|| format!("#{id} acquires the free lease"));
            }
            Act::Regain(i) => {
                // The late renewal lands: the same replica holds the lease again, and its
                // manager never said `false`.
                let id = self.instances[i].id;
                {
                    let mut api = self.api.lock().expect("api");
                    api.holder = Some(id);
                    api.lapsed = None;
                }
                self.log(|| format!("#{id} renews its lapsed lease"));
            }
            Act::EndLapse(i) => {
                // Housekeeping's poll: a replica that saw the lapse and holds the lease again
                // begins a new term before it reconciles again.
                let inst = &mut self.instances[i];
                let ctx = inst.ctx.clone();
                let ended = now_or_never(inst.leader.end_lapse(|| {
                    vapgen::controller::begin_term(&ctx.records, &ctx.world, &ctx.queue)
                }));
                assert!(ended, "the lapse ends once the lease is held again");
                let id = inst.id;
                self.log(|| format!("#{id} holds the lease again after a lapse: new term, records reset, requeue everything"));
            }
            Act::Resync(i) => {
                self.api.lock().expect("api").resync_owed = false;
                let inst = &self.instances[i];
                vapgen::controller::resync(&inst.ctx.world, &inst.ctx.queue);
                let id = inst.id;
                self.log(|| format!("#{id} resync: requeue everything"));
            }
            Act::WatchGone(i, res) => {
                self.relists_left -= 1;
                let inst = &mut self.instances[i];
                let lost = inst.pending.get(&res).map_or(0, VecDeque::len);
                inst.pending.insert(res.clone(), VecDeque::new());
                inst.listed.remove(&res);
                let id = inst.id;
                self.log(|| {
                    format!("#{id} watch of {res:?}: 410 Gone, {lost} events lost, relisting")
                });
            }
            Act::Notice(i) => {
                let inst = &mut self.instances[i];
                inst.send(false);
                let id = inst.id;
                self.log(|| format!("#{id} notices it lost the lease"));
            }
        }
        self.distribute();
    }

    fn advance(&mut self, i: usize, t: usize) {
        let inst = &mut self.instances[i];
        let id = inst.id;
        let mut cx = Context::from_waker(Waker::noop());
        let poll = inst.tasks[t].fut.as_mut().poll(&mut cx);
        let Poll::Ready(result) = poll else {
            return;
        };
        let task = inst.tasks.remove(t);
        worker::finish(&inst.ctx.queue, &task.key, &result);
        let mut unexpected = None;
        match &result {
            worker::Outcome::Failed(e) if !expected_failure(e) => {
                unexpected = Some(format!("{}: {e}", task.key));
            }
            _ => {}
        }
        let key = task.key;
        self.log(|| format!("#{id} finishes {key}: {result:?}"));
        if let Some(msg) = unexpected {
            self.api
                .lock()
                .expect("api")
                .violation(VKind::UnexpectedError, msg);
        }
    }

    fn user(&mut self, a: &UserAct) {
        self.log(|| format!("user: {a}"));
        match a {
            UserAct::Template { kind, generate } => self
                .api
                .lock()
                .expect("api")
                .user_put(Res::Templates, template_obj(kind, *generate)),
            UserAct::DeleteTemplate { kind } => self
                .api
                .lock()
                .expect("api")
                .user_delete(Res::Templates, &kind.to_ascii_lowercase()),
            UserAct::Constraint {
                kind,
                name,
                variant,
            } => self.api.lock().expect("api").user_put(
                Res::Constraints(kind.clone()),
                constraint_obj(kind, name, *variant),
            ),
            UserAct::Touch { kind, name } => {
                let mut api = self.api.lock().expect("api");
                let live = api.constraints.get(kind).and_then(|m| m.get(name)).cloned();
                if let Some(mut o) = live {
                    let n = o
                        .pointer("/metadata/labels/touched")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0);
                    o["metadata"]["labels"] = json!({"touched": (n + 1).to_string()});
                    api.user_put(Res::Constraints(kind.clone()), o);
                }
            }
            UserAct::DeleteConstraint { kind, name } => self
                .api
                .lock()
                .expect("api")
                .user_delete(Res::Constraints(kind.clone()), name),
            UserAct::Restart { slot } => {
                let slot = slot % self.instances.len();
                let old = self.instances[slot].id;
                let mut fresh = self.fresh_instance();
                let new = fresh.id;
                let mut api = self.api.lock().expect("api");
                if self.scn.replicas == 1 {
                    // No leader election: the one replica always leads.
                    api.holder = Some(new);
                    drop(api);
                    fresh.send(true);
                    fresh.take_change();
                    api = self.api.lock().expect("api");
                } else if api.holder == Some(old) {
                    // Released on a clean stop, expired after a kill: free either way.
                    api.holder = None;
                }
                drop(api);
                self.log(|| format!("replica {slot}: #{old} killed, #{new} starts"));
                self.instances[slot] = fresh;
            }
            UserAct::Lapse => {
                let mut api = self.api.lock().expect("api");
                if let Some(h) = api.holder.take() {
                    api.lapsed = Some(h);
                }
            }
            UserAct::LeaderChange => {
                if self.instances.len() < 2 {
                    return;
                }
                let api = self.api.lock().expect("api");
                let cur = self.instances.iter().position(|x| Some(x.id) == api.holder);
                let next = match cur {
                    Some(c) => (c + 1) % self.instances.len(),
                    None => 0,
                };
                drop(api);
                // Reconciles still in flight on the new holder began in an earlier term of
                // it. In reality they reach their next write right after the process resumes
                // (and fail the lease check) long before its manager can win the lease back
                // (that takes at least the old holder's expiry plus a random back-off), so
                // they finish first.
                while !self.instances[next].tasks.is_empty() {
                    self.advance(next, 0);
                }
                self.api.lock().expect("api").holder = Some(self.instances[next].id);
                let inst = &mut self.instances[next];
                // Its manager first notices it lost the lease of an earlier term (if it still
                // believed it held it), then acquires: two values on the channel, which the
                // leadership loop may see as one.
                inst.send(false);
                inst.send(true);
                let id = inst.id;
                self.log(|| format!("#{id} takes the lease over"));
            }
        }
        self.distribute();
    }

    fn busy(&self) -> bool {
        let holder = self.api.lock().expect("api").holder;
        holder.is_none()
            || self
                .instances
                .iter()
                .any(|i| i.busy() || (i.chan() && holder != Some(i.id)))
            || self
                .instances
                .iter()
                .any(|i| self.all_res().iter().any(|r| !i.listed.contains(r)))
    }

    /// Runs in the default order (no choices) until nothing is left to do.
    pub fn drain(&mut self) {
        let limit = self.steps + 20_000;
        loop {
            let acts = self.enabled(false);
            let Some(act) = acts.into_iter().next() else {
                return;
            };
            if self.steps >= limit {
                let detail = "no quiescence within 20,000 steps".to_string();
                self.api
                    .lock()
                    .expect("api")
                    .violation(VKind::NoQuiescence, detail);
                return;
            }
            self.step(act);
        }
    }

    /// Runs the explored part with `chooser`, then drains and checks quiescence.
    pub fn run(mut self, chooser: &mut Chooser) -> Outcome {
        while self.steps < self.scn.max_steps {
            let acts = self.enabled(!self.script.is_empty());
            if acts.is_empty() {
                break;
            }
            let c = chooser.choose(acts.len());
            let act = acts[c].clone();
            self.step(act);
        }
        while let Some(a) = self.script.pop_front() {
            self.user(&a);
        }
        self.log(|| "--- drain ---".into());
        self.drain();
        debug_assert!(!self.busy());
        self.check_quiescent();
        let mut api = self.api.lock().expect("api");
        Outcome {
            violations: std::mem::take(&mut api.violations),
            steps: self.steps,
            trace: api.trace.take().unwrap_or_default(),
            writes: std::mem::take(&mut api.writes),
        }
    }

    /// (a), (b), VAPs, content and statuses at quiescence.
    fn check_quiescent(&self) {
        let mut api = self.api.lock().expect("api");
        let mut want_vaps: BTreeMap<String, Value> = BTreeMap::new();
        let mut want_vapbs: BTreeMap<String, Value> = BTreeMap::new();
        let mut problems: Vec<(VKind, String)> = Vec::new();
        for kind in &self.scn.kinds {
            let tname = kind.to_ascii_lowercase();
            let constraints: Vec<Value> = api
                .constraints
                .get(kind)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let Some(t) = api.templates.get(&tname).cloned() else {
                for c in &constraints {
                    if status_state(c) == "generated" {
                        problems.push((
                            VKind::Status,
                            format!(
                                "{kind}/{} says generated; its template is gone",
                                snapshot::name_of(c)
                            ),
                        ));
                    }
                }
                continue;
            };
            let inputs: Vec<Constraint> = constraints
                .iter()
                .map(snapshot::extract_constraint)
                .collect();
            let plan = self
                .decider
                .plan_kind(
                    &self.scn.settings,
                    &world::template_essence(&t).to_string(),
                    &inputs,
                )
                .expect("the decision module plans the final objects");
            let generate = matches!(
                (&plan.decision, &plan.policy),
                (TemplateDecision::Generate, PolicyOutcome::Desired(_))
            );
            if let (true, PolicyOutcome::Desired(vap_json)) = (generate, &plan.policy) {
                let mut v = render::policy_object(vap_json, &plan.policy_name).expect("vap");
                v["metadata"]["ownerReferences"] = json!([Owner {
                    api_version: format!("{}/v1beta1", snapshot::TEMPLATE_GROUP),
                    kind: "ConstraintTemplate".into(),
                    name: tname.clone(),
                    uid: meta_str(&t, "uid"),
                }
                .to_reference()]);
                want_vaps.insert(plan.policy_name.clone(), v);
            }
            let gen_of = |o: &Value| o.pointer("/metadata/generation").cloned();
            let observed = |o: &Value| o.pointer("/status/vapgen/observedGeneration").cloned();
            let tstate = status_state(&t);
            if (tstate == "generated") != generate || observed(&t) != gen_of(&t) {
                problems.push((
                    VKind::Status,
                    format!(
                        "template {tname}: status {tstate} observedGeneration {:?}, generation {:?}, generate={generate}",
                        observed(&t),
                        gen_of(&t)
                    ),
                ));
            }
            for (c, b) in constraints.iter().zip(&plan.bindings) {
                let cname = snapshot::name_of(c);
                let bound = match (&b.outcome, generate) {
                    (BindingOutcome::Bind(spec), true) => {
                        let owner = Owner::constraint(kind, cname, &meta_str(c, "uid"));
                        want_vapbs.insert(
                            b.binding_name.clone(),
                            render::binding_object(spec, Some(&owner)).expect("binding"),
                        );
                        true
                    }
                    _ => false,
                };
                let cstate = status_state(c);
                if (cstate == "generated") != bound || observed(c) != gen_of(c) {
                    problems.push((
                        VKind::Status,
                        format!(
                            "constraint {kind}/{cname}: status {cstate} observedGeneration {:?}, generation {:?}, binding expected={bound}",
                            observed(c),
                            gen_of(c)
                        ),
                    ));
                }
            }
        }
        for (name, want) in &want_vaps {
            match api.vaps.get(name) {
                None => problems.push((VKind::Policy, format!("VAP {name} is missing"))),
                Some(live) if !vapgen::controller::compare::vap_equal(want, live) => {
                    problems.push((VKind::Content, format!("VAP {name} has stale content")))
                }
                Some(_) => {}
            }
        }
        for name in api.vaps.keys() {
            if !want_vaps.contains_key(name) {
                problems.push((VKind::Policy, format!("VAP {name} should not exist")));
            }
        }
        for (name, want) in &want_vapbs {
            match api.vapbs.get(name) {
                None => problems.push((VKind::Missing, format!("binding {name} is missing"))),
                Some(live) if !vapgen::controller::compare::vapb_equal(want, live) => {
                    problems.push((VKind::Content, format!("binding {name} has stale content")))
                }
                Some(_) => {}
            }
        }
        for name in api.vapbs.keys() {
            if !want_vapbs.contains_key(name) {
                problems.push((VKind::Dangling, format!("binding {name} dangles")));
            }
        }
        for (k, d) in problems {
            api.violation(k, format!("at quiescence: {d}"));
        }
    }
}

fn status_state(o: &Value) -> String {
    o.pointer("/status/vapgen/state")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Runs one schedule.
pub fn run_schedule(scn: &Scenario, chooser: &mut Chooser, trace: bool) -> Outcome {
    Sim::new(scn, trace).run(chooser)
}

/// A failing schedule, with what replays it.
#[derive(Debug)]
pub struct Failure {
    /// Scenario name.
    pub scenario: String,
    /// The seed of a random schedule.
    pub seed: Option<u64>,
    /// The path of a depth-first schedule.
    pub path: Option<String>,
    /// What went wrong.
    pub violations: Vec<Violation>,
}

impl Failure {
    /// The report: violations, how to replay, and the replayed trace.
    pub fn report(&self, trace: &[String]) -> String {
        let mut s = String::new();
        let replay = match (&self.seed, &self.path) {
            (Some(seed), _) => format!("VAPGEN_EXPLORE_SEED={}:{seed}", self.scenario),
            (_, Some(p)) => format!("VAPGEN_EXPLORE_PATH={}:{p}", self.scenario),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "schedule failed in scenario {}; replay: {replay} cargo test -p vapgen --test explore replay -- --nocapture",
            self.scenario
        );
        for v in &self.violations {
            let _ = writeln!(s, "  step {}: {:?}: {}", v.step, v.kind, v.detail);
        }
        if !trace.is_empty() {
            let _ = writeln!(s, "trace:");
            for l in trace {
                let _ = writeln!(s, "{l}");
            }
        }
        s
    }
}

/// Runs random schedules for `seeds`; returns the number run, or the first failure.
pub fn explore_random(
    build: &dyn Fn(u64) -> Scenario,
    seeds: std::ops::Range<u64>,
) -> Result<usize, Failure> {
    let mut n = 0;
    for seed in seeds {
        let scn = build(seed);
        let mut ch = Chooser::Random(Rng::new(seed));
        let out = run_schedule(&scn, &mut ch, false);
        n += 1;
        if !out.violations.is_empty() {
            return Err(Failure {
                scenario: scn.name.clone(),
                seed: Some(seed),
                path: None,
                violations: out.violations,
            });
        }
    }
    Ok(n)
}

/// Enumerates every schedule within `max_delays` of the default order (choices beyond
/// `max_depth` take the default), up to `budget` schedules. Returns the number run and
/// whether the enumeration completed, or the first failure.
pub fn explore_dfs(
    scn: &Scenario,
    max_delays: usize,
    max_depth: usize,
    budget: usize,
) -> Result<(usize, bool), Failure> {
    let mut ch = Chooser::dfs(max_delays, max_depth);
    let mut n = 0;
    loop {
        let out = run_schedule(scn, &mut ch, false);
        n += 1;
        if !out.violations.is_empty() {
            return Err(Failure {
                scenario: scn.name.clone(),
                seed: None,
                path: Some(ch.path()),
                violations: out.violations,
            });
        }
        match ch.next_dfs() {
            Some(next) if n < budget => ch = next,
            Some(_) => return Ok((n, false)),
            None => return Ok((n, true)),
        }
    }
}
