//! `vapgen verify`: gatekeeper-library / gator `Suite` files run in VAP mode against a real
//! cluster, with the API server's own admission as the judge.
//!
//! For each test of a suite (`kind: Suite`, `apiVersion: test.gatekeeper.sh/v1alpha1`), the
//! template and the constraint are planned with [`planner`] and the decision module, exactly
//! as `vapgen plan` does, and the constraint CRD, the policy, the constraint and the binding
//! are applied to a temporary scope:
//!
//! * the kind is renamed for the run (`K8sRequiredLabels` → `K8sRequiredLabelsV<run>`), so
//!   that the CRD, the policy and the binding are new objects that clash with nothing in the
//!   cluster (Gatekeeper's or vapgen's own included);
//! * every case object gets two labels, [`RUN_LABEL`] and [`TEST_LABEL`]; the policy's
//!   `matchConstraints` and the binding's `matchResources` require them, so that no other
//!   request of the cluster is ever matched (not even while the API server re-resolves the
//!   policy's paramKind, which fails every request a policy matches);
//! * namespaced case objects are put in a fresh namespace.
//!
//! Each case object is then sent as a server-side dry-run request (a create; an
//! `AdmissionReview` case is reproduced as an update of an object created first), and the
//! answer is compared with the suite's assertions: `violations: yes` (or a count above 0)
//! expects a denial by the run's policy, with `message` as a substring of the denial when
//! given; otherwise admission. Before the first verdict of a test, a canary policy and binding
//! created after the test's own objects must deny a canary request: the API server has then
//! seen the test's policy and binding.
//!
//! Cases that a real API server cannot run are skipped with a reason: ephemeral containers
//! (`spec.ephemeralContainers` is forbidden on create), objects the API server rejects with
//! no policy at all (a baseline dry-run before the binding), kinds the API server does not
//! serve, `skip: true` in the suite, `inventory` (referential data), templates vapgen
//! generates no policy for and constraints it generates no binding for.
//!
//! Everything is deleted at the end of each test and suite, also when a case fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::{Value, json};
use vapgen_guest::model::Settings;

use crate::planner::{self, Inputs};
use crate::runtime::Decide;
use crate::snapshot;

mod cluster;
mod error;
mod gator;
mod report;

use cluster::*;
pub use cluster::{send_request, stage_request};
pub use error::VerifyError;
use error::kube_message;
pub use gator::{
    CaseOp, CaseProblem, CaseRequest, GatorAssertion, GatorCase, GatorSuite, GatorTest,
    case_request, is_gator_suite, read_one, read_suite, suite_files,
};
pub use report::{CaseRow, Report, Verdict};

/// Label that every case object of a run carries; the run's policies require it.
pub const RUN_LABEL: &str = "vapgen.dev/verify-run";
/// Label that every case object of a test carries; the test's binding requires it.
pub const TEST_LABEL: &str = "vapgen.dev/verify-test";
/// Field manager of the objects `verify` applies.
pub const FIELD_MANAGER: &str = "vapgen-verify";

/// How `verify` plans and how long it waits.
#[derive(Clone, Debug)]
pub struct VerifyConfig {
    /// Settings of the decision module (Gatekeeper's flags).
    pub settings: Settings,
    /// How long a case expecting a denial is retried (the API server's param informer may lag).
    pub deny_timeout: Duration,
    /// How long a case expecting admission is retried.
    pub admit_timeout: Duration,
    /// How long to wait for the canary to prove that a test's policy is enforced, and for a
    /// constraint CRD to be served.
    pub enforce_timeout: Duration,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            settings: Settings::default(),
            deny_timeout: Duration::from_secs(30),
            admit_timeout: Duration::from_secs(15),
            enforce_timeout: Duration::from_secs(60),
        }
    }
}

/// A new run id: 8 lowercase hex digits from the pid and the clock.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}",
        (nanos as u64) ^ (u64::from(std::process::id()) << 40)
    )
    .chars()
    .rev()
    .take(8)
    .collect()
}

/// Adds `key In [value]` to the label selector at `pointer` of `obj` (created if absent).
fn require_label(obj: &mut Value, pointer: &str, key: &str, value: &str) {
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let Some(parent) = obj.pointer_mut(parent).and_then(Value::as_object_mut) else {
        return;
    };
    let sel = parent.entry(field).or_insert_with(|| json!({}));
    if !sel.is_object() {
        *sel = json!({});
    }
    let exprs = sel
        .as_object_mut()
        .map(|m| m.entry("matchExpressions").or_insert_with(|| json!([])));
    if let Some(Value::Array(a)) = exprs {
        a.push(json!({"key": key, "operator": "In", "values": [value]}));
    }
}

fn strip_owners(obj: &mut Value) {
    if let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("ownerReferences");
    }
}

/// What discovery found for a case object's kind (cached per run).
#[derive(Clone)]
enum Served {
    Yes(ApiResource, bool),
    No(String),
}

struct Runner<'a> {
    client: kube::Client,
    decider: &'a dyn Decide,
    cfg: &'a VerifyConfig,
    run: String,
    namespace: String,
    serial: usize,
    /// Per `apiVersion/kind`: its resource and whether it is namespaced, or why it is not served.
    discovery: BTreeMap<String, Served>,
    report: Report,
}

/// Runs every suite below `paths` against the cluster of `client`, with a new [`run_id`].
///
/// Creates a namespace `vapgen-verify-<run>` for the namespaced case objects, and deletes it
/// and everything else it created at the end.
pub async fn verify(
    client: &kube::Client,
    decider: &dyn Decide,
    paths: &[PathBuf],
    cfg: &VerifyConfig,
) -> Report {
    verify_run(client, decider, paths, cfg, &run_id()).await
}

/// Deletes what a run that was interrupted may have left: the policies, bindings and CRDs
/// whose name contains the run id (policies and bindings first), and its namespace. Returns
/// what could not be deleted.
pub async fn sweep(client: &kube::Client, run: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for r in [vapb_resource(), vap_resource(), crd_resource()] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &r);
        match api.list(&kube::api::ListParams::default()).await {
            Ok(list) => {
                let mut c = Cleanup::default();
                for o in list.items {
                    let name = o.metadata.name.unwrap_or_default();
                    if name.contains(run) {
                        c.push(api.clone(), &name, r.kind.clone());
                    }
                }
                c.run(&mut errors).await;
            }
            Err(e) => errors.push(format!("cannot list {}: {e}", r.plural)),
        }
    }
    let mut c = Cleanup::default();
    c.push(
        Api::all_with(client.clone(), &ns_resource()),
        &format!("vapgen-verify-{run}"),
        "Namespace",
    );
    c.run(&mut errors).await;
    errors
}

/// [`verify`] with a given run id (so that a caller can [`sweep`] it after an interruption).
pub async fn verify_run(
    client: &kube::Client,
    decider: &dyn Decide,
    paths: &[PathBuf],
    cfg: &VerifyConfig,
    run: &str,
) -> Report {
    let run = run.to_string();
    let namespace = format!("vapgen-verify-{run}");
    let mut r = Runner {
        client: client.clone(),
        decider,
        cfg,
        run,
        namespace,
        serial: 0,
        discovery: BTreeMap::new(),
        report: Report::default(),
    };
    r.report.run = r.run.clone();
    let files = suite_files(paths);
    if files.is_empty() {
        r.report.errors.push(format!(
            "no gator Suite file (kind Suite, apiVersion test.gatekeeper.sh/v1alpha1) in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return r.report;
    }
    let ns_api: Api<DynamicObject> = Api::all_with(client.clone(), &ns_resource());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": r.namespace, "labels": {RUN_LABEL: r.run}}});
    if let Err(e) = apply(&ns_api, &ns).await {
        r.report.errors.push(e.to_string());
        return r.report;
    }
    for f in &files {
        r.suite(f).await;
    }
    let mut errors = Vec::new();
    let mut c = Cleanup::default();
    c.push(ns_api, &r.namespace.clone(), "Namespace");
    c.run(&mut errors).await;
    r.report.errors.extend(errors);
    r.report
}

impl Runner<'_> {
    fn row(&mut self, suite: &str, test: &str, case: &GatorCase) -> usize {
        let (violated, needle) = case.expectation();
        let expected = match (violated, needle) {
            (false, _) => "admit".to_string(),
            (true, None) => "deny".to_string(),
            (true, Some(m)) => format!("deny {m:?}"),
        };
        self.report.rows.push(CaseRow {
            suite: suite.to_string(),
            test: test.to_string(),
            case: case.name.clone(),
            expected,
            got: "-".into(),
            verdict: Verdict::Skip,
            reason: String::new(),
        });
        self.report.rows.len() - 1
    }

    fn set(&mut self, row: usize, verdict: Verdict, got: &str, reason: impl Into<String>) {
        let r = &mut self.report.rows[row];
        r.verdict = verdict;
        r.got = got.to_string();
        r.reason = reason.into();
    }

    async fn suite(&mut self, path: &Path) {
        self.report.suites += 1;
        let suite = match read_suite(path) {
            Ok(s) => s,
            Err(e) => {
                self.report.errors.push(e.to_string());
                return;
            }
        };
        let name = suite.metadata["name"]
            .as_str()
            .map_or_else(|| path.display().to_string(), str::to_string);
        let base = path.parent().unwrap_or(Path::new("."));
        // The CRD and policy of the kind live as long as the suite (or until a test plans a
        // different one); constraints, bindings and case objects as long as their test.
        let mut kind_scope = Cleanup::default();
        let mut current: Option<(Value, Value)> = None;
        for test in &suite.tests {
            self.test(&name, base, test, &mut kind_scope, &mut current)
                .await;
        }
        let mut errors = Vec::new();
        kind_scope.run(&mut errors).await;
        self.report.errors.extend(errors);
    }

    async fn test(
        &mut self,
        suite: &str,
        base: &Path,
        test: &GatorTest,
        kind_scope: &mut Cleanup,
        current: &mut Option<(Value, Value)>,
    ) {
        let rows: Vec<usize> = test
            .cases
            .iter()
            .map(|c| self.row(suite, &test.name, c))
            .collect();
        let all = |me: &mut Self, v: Verdict, why: &str| {
            for &r in &rows {
                me.set(r, v, "-", why);
            }
        };
        if test.skip {
            return all(self, Verdict::Skip, "skip: true in the suite");
        }
        // Plan with the kind renamed for this run.
        let (mut template, mut constraint) = match (
            read_one(base, &test.template),
            read_one(base, &test.constraint),
        ) {
            (Ok(t), Ok(c)) => (t, c),
            (Err(e), _) | (_, Err(e)) => return all(self, Verdict::Fail, &e.to_string()),
        };
        let Some(kind) = snapshot::template_kind(&template.object).map(str::to_string) else {
            return all(
                self,
                Verdict::Fail,
                "the template has no spec.crd.spec.names.kind",
            );
        };
        let run_kind = format!("{kind}V{}", self.run);
        template.object["spec"]["crd"]["spec"]["names"]["kind"] = json!(run_kind);
        template.object["metadata"]["name"] = json!(run_kind.to_ascii_lowercase());
        if snapshot::kind_of(&constraint.object) != kind {
            return all(
                self,
                Verdict::Fail,
                &format!(
                    "the constraint's kind {:?} is not the template's {kind:?}",
                    snapshot::kind_of(&constraint.object)
                ),
            );
        }
        constraint.object["kind"] = json!(run_kind);
        let inputs = Inputs {
            templates: vec![template],
            constraints: vec![constraint],
            ignored: Vec::new(),
        };
        let report = planner::plan(self.decider, &self.cfg.settings, &inputs);
        if let Some(e) = report.errors().first() {
            return all(self, Verdict::Fail, &format!("vapgen plan: {e}"));
        }
        let Some(k) = report.kinds.first() else {
            return all(self, Verdict::Fail, "vapgen plan: no template planned");
        };
        let Ok(plan) = &k.plan else {
            return all(self, Verdict::Fail, "vapgen plan: the module failed");
        };
        let (Some(mut crd), Some(mut policy)) = (k.crd.clone(), k.policy.clone()) else {
            return all(
                self,
                Verdict::Skip,
                &format!(
                    "vapgen generates no policy: {}",
                    planner::decision_text(&plan.decision)
                ),
            );
        };
        let Some(b) = k.bindings.first() else {
            return all(self, Verdict::Fail, "vapgen plan: no constraint planned");
        };
        let Some(mut binding) = b.object.clone() else {
            return all(
                self,
                Verdict::Skip,
                &format!(
                    "vapgen generates no binding: {}",
                    planner::binding_text(&b.plan)
                ),
            );
        };
        let constraint = inputs.constraints[0].object.clone();
        strip_owners(&mut crd);
        strip_owners(&mut policy);
        strip_owners(&mut binding);
        require_label(
            &mut policy,
            "/spec/matchConstraints/objectSelector",
            RUN_LABEL,
            &self.run,
        );
        self.serial += 1;
        let test_id = format!("{}-{}", self.run, self.serial);
        if binding.pointer("/spec/matchResources").is_none() {
            binding["spec"]["matchResources"] = json!({});
        }
        require_label(
            &mut binding,
            "/spec/matchResources/objectSelector",
            TEST_LABEL,
            &test_id,
        );
        // gator counts violations whatever the enforcement action: check them as denials.
        let actions = binding.pointer("/spec/validationActions").cloned();
        if !actions
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| a.contains(&json!("Deny")))
        {
            binding["spec"]["validationActions"] = json!(["Deny"]);
        }
        let policy_name = snapshot::name_of(&policy).to_string();

        // The kind's CRD and policy, unless the previous test applied the same ones.
        if current.as_ref() != Some(&(crd.clone(), policy.clone())) {
            let mut errors = Vec::new();
            kind_scope.run(&mut errors).await;
            self.report.errors.extend(errors);
            *current = None;
            if let Err(e) = self.apply_kind(&crd, &policy, kind_scope).await {
                return all(self, Verdict::Fail, &e.to_string());
            }
            *current = Some((crd, policy));
        }

        let mut scope = Cleanup::default();
        let result = self
            .cases(
                test,
                base,
                &rows,
                &test_id,
                &run_kind,
                &constraint,
                &binding,
                &policy_name,
                &mut scope,
            )
            .await;
        if let Err(e) = result {
            let e = e.to_string();
            for &r in &rows {
                if self.report.rows[r].reason.is_empty() && self.report.rows[r].got == "-" {
                    self.set(r, Verdict::Fail, "-", e.clone());
                }
            }
        }
        let mut errors = Vec::new();
        scope.run(&mut errors).await;
        self.report.errors.extend(errors);
    }

    /// Applies the CRD, waits until it is served, then the policy.
    async fn apply_kind(
        &mut self,
        crd: &Value,
        policy: &Value,
        scope: &mut Cleanup,
    ) -> Result<(), VerifyError> {
        let crd_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &crd_resource());
        scope.push(
            crd_api.clone(),
            snapshot::name_of(crd),
            "CustomResourceDefinition",
        );
        apply(&crd_api, crd).await?;
        // A policy created before its paramKind is served can stay unconfigured for long
        // (over 20 s seen on the test API server), failing every request its bindings match.
        let name = snapshot::name_of(crd).to_string();
        let start = Instant::now();
        loop {
            let established = crd_api
                .get_opt(&name)
                .await
                .ok()
                .flatten()
                .is_some_and(|o| snapshot::is_established(&o.data));
            if established {
                break;
            }
            if start.elapsed() > self.cfg.enforce_timeout {
                return Err(VerifyError::Cluster(format!(
                    "the CRD {name} was not Established within {:?}",
                    self.cfg.enforce_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let vap_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &vap_resource());
        scope.push(
            vap_api.clone(),
            snapshot::name_of(policy),
            "ValidatingAdmissionPolicy",
        );
        apply(&vap_api, policy).await
    }

    /// The API for a case object's kind, and whether it is namespaced (cached per kind).
    async fn api_for(&mut self, obj: &mut Value) -> Result<Api<DynamicObject>, VerifyError> {
        let av = obj["apiVersion"].as_str().unwrap_or("v1").to_string();
        let kind = snapshot::kind_of(obj).to_string();
        let key = format!("{av}/{kind}");
        if !self.discovery.contains_key(&key) {
            let (group, version) = av.rsplit_once('/').unwrap_or(("", av.as_str()));
            let gvk = GroupVersionKind::gvk(group, version, &kind);
            let found: Result<(_, ApiCapabilities), _> =
                kube::discovery::pinned_kind(&self.client, &gvk).await;
            let v = match found {
                Ok((ar, caps)) => Served::Yes(ar, caps.scope == Scope::Namespaced),
                Err(e) => Served::No(format!("the API server does not serve {av} {kind}: {e}")),
            };
            self.discovery.insert(key.clone(), v);
        }
        let (ar, namespaced) = match self.discovery[&key].clone() {
            Served::Yes(ar, namespaced) => (ar, namespaced),
            Served::No(why) => return Err(VerifyError::Cluster(why)),
        };
        Ok(if namespaced {
            obj["metadata"]["namespace"] = json!(self.namespace);
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn cases(
        &mut self,
        test: &GatorTest,
        base: &Path,
        rows: &[usize],
        test_id: &str,
        kind: &str,
        constraint: &Value,
        binding: &Value,
        policy_name: &str,
        scope: &mut Cleanup,
    ) -> Result<(), VerifyError> {
        // Phase 1, no binding: baseline every object; create the objects of UPDATE cases.
        let mut prepared = Vec::new();
        for (case, &row) in test.cases.iter().zip(rows) {
            let CaseRequest {
                object: mut obj,
                mut op,
            } = match case_request(base, case) {
                Ok(CaseRequest {
                    op: CaseOp::EphemeralContainers(_),
                    ..
                }) => {
                    // Needs the scope-sync rules (Gatekeeper's webhook rules list the
                    // subresource); the default match rule has no subresources.
                    self.set(row, Verdict::Skip, "-", "ephemeral containers cannot be set on create (subresource pods/ephemeralcontainers is not matched by the generated rules)");
                    continue;
                }
                Ok(r) => r,
                Err(CaseProblem::Skip(why)) => {
                    self.set(row, Verdict::Skip, "-", why);
                    continue;
                }
                Err(CaseProblem::Fail(why)) => {
                    self.set(row, Verdict::Fail, "-", why);
                    continue;
                }
            };
            self.serial += 1;
            let name = format!(
                "{}-{}",
                obj["metadata"]["name"].as_str().unwrap_or("obj"),
                self.serial
            );
            let name: String = name.chars().take(60).collect();
            let name = name.trim_end_matches('-').to_string();
            obj["metadata"]["name"] = json!(name);
            let labels = obj["metadata"]
                .as_object_mut()
                .map(|m| m.entry("labels").or_insert_with(|| json!({})));
            if let Some(Value::Object(l)) = labels {
                l.insert(RUN_LABEL.into(), json!(self.run));
                l.insert(TEST_LABEL.into(), json!(test_id));
            }
            let api = match self.api_for(&mut obj).await {
                Ok(a) => a,
                Err(e) => {
                    self.set(row, Verdict::Skip, "-", e.to_string());
                    continue;
                }
            };
            let (violated, needle) = case.expectation();
            let staged = stage_request(&api, &obj, &mut op).await;
            match staged {
                Ok(true) => scope.push(api.clone(), &name, snapshot::kind_of(&obj).to_string()),
                Ok(false) => {}
                Err(e) => {
                    let why = if op == CaseOp::Create {
                        "rejected by the API server without any policy"
                    } else {
                        "the object of the UPDATE cannot be created"
                    };
                    self.set(
                        row,
                        Verdict::Skip,
                        "-",
                        format!("{why}: {}", kube_message(&e)),
                    );
                    continue;
                }
            }
            prepared.push(Prepared {
                row,
                violated,
                needle,
                api,
                obj,
                op,
            });
        }
        if prepared.is_empty() {
            return Ok(());
        }
        // Phase 2: the constraint (once its CRD is served), the binding, then the canary.
        let constraint_api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &ar(
                snapshot::CONSTRAINT_GROUP,
                "v1beta1",
                kind,
                &kind.to_ascii_lowercase(),
            ),
        );
        scope.push(
            constraint_api.clone(),
            snapshot::name_of(constraint),
            kind.to_string(),
        );
        let start = Instant::now();
        while let Err(e) = apply(&constraint_api, constraint).await {
            if start.elapsed() > self.cfg.enforce_timeout {
                return Err(VerifyError::Cluster(format!(
                    "the constraint kind {kind} is not served: {e}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let vapb_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &vapb_resource());
        scope.push(
            vapb_api.clone(),
            snapshot::name_of(binding),
            "ValidatingAdmissionPolicyBinding",
        );
        apply(&vapb_api, binding).await?;
        self.canary(test_id, &prepared[0], scope).await?;
        // Phase 3: denials first, then admissions.
        prepared.sort_by_key(|p| !p.violated);
        for p in &prepared {
            let (got, outcome) = if p.violated {
                expect_denied(p, policy_name, self.cfg.deny_timeout).await
            } else {
                expect_admitted(p, self.cfg.admit_timeout).await
            };
            match outcome {
                Ok(()) => self.set(p.row, Verdict::Pass, got, ""),
                Err(e) => self.set(p.row, Verdict::Fail, got, e.to_string()),
            }
        }
        Ok(())
    }

    /// Creates a canary policy and binding after the test's own, and waits until the canary
    /// request is denied: the API server has then seen the test's policy and binding.
    ///
    /// `probe` is one of the test's cases: until the API server has resolved the test policy's
    /// paramKind (a new CRD can take seconds to reach its admission plugin, 0.5-2 s measured
    /// idle and over 5 s under load), it answers "failed to configure policy" for every request
    /// that the policy and one of its bindings match, and the canary's own request is matched
    /// by no binding of the test's policy.
    async fn canary(
        &mut self,
        test_id: &str,
        probe: &Prepared,
        scope: &mut Cleanup,
    ) -> Result<(), VerifyError> {
        let name = format!("vapgen-verify-canary-{test_id}");
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
                    "objectSelector": {"matchLabels": {TEST_LABEL: test_id}},
                },
                "validations": [{"expression": format!("object.metadata.name != '{name}'"), "message": "vapgen verify canary"}],
            }
        });
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {"objectSelector": {"matchLabels": {TEST_LABEL: test_id}}}},
        });
        let vap_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &vap_resource());
        let vapb_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &vapb_resource());
        scope.push(vap_api.clone(), &name, "ValidatingAdmissionPolicy");
        apply(&vap_api, &policy).await?;
        scope.push(vapb_api.clone(), &name, "ValidatingAdmissionPolicyBinding");
        apply(&vapb_api, &binding).await?;
        let cm_api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ar("", "v1", "ConfigMap", "configmaps"),
        );
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": self.namespace, "labels": {TEST_LABEL: test_id}}});
        let start = Instant::now();
        loop {
            let canary = dry_run(&cm_api, &cm).await.map_err(|e| kube_message(&e));
            let probed = send(probe).await.map_err(|e| kube_message(&e));
            let configured = match (&canary, probed) {
                (Err(m), _) if !m.contains("vapgen verify canary") => false,
                (Ok(_), _) => false,
                (_, Err(m)) => !is_plugin_lag(&m),
                (_, Ok(_)) => true,
            };
            match canary {
                Err(_) if configured => return Ok(()),
                other => {
                    if start.elapsed() > self.cfg.enforce_timeout {
                        return Err(VerifyError::Cluster(format!(
                            "the policy was not enforced within {:?} (canary: {other:?})",
                            self.cfg.enforce_timeout
                        )));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_narrowed_not_replaced() {
        let mut b =
            json!({"spec": {"matchResources": {"objectSelector": {"matchLabels": {"a": "b"}}}}});
        require_label(
            &mut b,
            "/spec/matchResources/objectSelector",
            TEST_LABEL,
            "x",
        );
        assert_eq!(
            b["spec"]["matchResources"]["objectSelector"],
            json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": TEST_LABEL, "operator": "In", "values": ["x"]}]})
        );
        let mut p = json!({"spec": {"matchConstraints": {"resourceRules": []}}});
        require_label(
            &mut p,
            "/spec/matchConstraints/objectSelector",
            RUN_LABEL,
            "r",
        );
        assert_eq!(
            p["spec"]["matchConstraints"]["objectSelector"]["matchExpressions"][0]["values"],
            json!(["r"])
        );
    }
}
