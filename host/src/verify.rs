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
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::{ApiCapabilities, Scope};
use serde::Deserialize;
use serde_json::{Value, json};
use vapgen_guest::model::Settings;

use crate::manifest::{self, SourcedObject};
use crate::planner::{self, Inputs};
use crate::runtime::Decide;
use crate::snapshot;

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

/// The result of one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The API server answered as the suite expects.
    Pass,
    /// It did not (or the case could not be checked because of an error).
    Fail,
    /// The case cannot run on a real API server (see the reason).
    Skip,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One row of the report: a case.
#[derive(Clone, Debug)]
pub struct CaseRow {
    /// The suite's `metadata.name` (else its file).
    pub suite: String,
    /// The test's name.
    pub test: String,
    /// The case's name.
    pub case: String,
    /// `deny`, `deny "<message>"` or `admit`.
    pub expected: String,
    /// `denied`, `admitted`, or `-` when the case did not get an answer.
    pub got: String,
    /// Pass, fail or skip.
    pub verdict: Verdict,
    /// Why it failed or was skipped (empty for a pass).
    pub reason: String,
}

/// The result of a `verify` run.
#[derive(Debug, Default)]
pub struct Report {
    /// The run's id: in the renamed kinds, the labels and the namespace `vapgen-verify-<run>`.
    pub run: String,
    /// Suite files read.
    pub suites: usize,
    /// One per case.
    pub rows: Vec<CaseRow>,
    /// Suite files that could not run, and objects that could not be deleted.
    pub errors: Vec<String>,
}

impl Report {
    fn count(&self, v: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == v).count()
    }
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(Verdict::Pass)
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(Verdict::Fail)
    }
    /// Cases skipped.
    pub fn skipped(&self) -> usize {
        self.count(Verdict::Skip)
    }
    /// At least one case, no failure and no error.
    pub fn success(&self) -> bool {
        self.failed() == 0 && self.errors.is_empty() && !self.rows.is_empty()
    }

    /// The table (`SUITE TEST CASE EXPECTED GOT RESULT REASON`), the errors and a summary
    /// line `N passed, M failed, K skipped`.
    pub fn table(&self) -> String {
        let header = ["SUITE", "TEST", "CASE", "EXPECTED", "GOT", "RESULT"];
        let cells: Vec<[&str; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.suite.as_str(),
                    r.test.as_str(),
                    r.case.as_str(),
                    r.expected.as_str(),
                    r.got.as_str(),
                    r.verdict.as_str(),
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let mut s = String::new();
        let line = |s: &mut String, c: &[&str; 6], reason: &str| {
            for (w, cell) in width.iter().zip(c) {
                let _ = write!(s, "{cell:<w$}  ");
            }
            let _ = write!(s, "{reason}");
            let end = s.trim_end().len();
            s.truncate(end);
            s.push('\n');
        };
        line(&mut s, &header, "REASON");
        for (c, r) in cells.iter().zip(&self.rows) {
            line(&mut s, c, &r.reason);
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {e}");
        }
        let _ = writeln!(
            s,
            "run {}: {} suite(s): {} passed, {} failed, {} skipped",
            self.run,
            self.suites,
            self.passed(),
            self.failed(),
            self.skipped()
        );
        s
    }
}

// === the suite format (gator's) ===

/// A gator suite file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatorSuite {
    /// `test.gatekeeper.sh/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `Suite`.
    #[serde(default)]
    pub kind: String,
    /// `metadata.name`.
    #[serde(default)]
    pub metadata: Value,
    /// The tests.
    #[serde(default)]
    pub tests: Vec<GatorTest>,
}

/// A test: one template, one constraint, cases.
#[derive(Debug, Deserialize)]
pub struct GatorTest {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// The template file, relative to the suite.
    #[serde(default)]
    pub template: String,
    /// The constraint file, relative to the suite.
    #[serde(default)]
    pub constraint: String,
    /// The cases.
    #[serde(default)]
    pub cases: Vec<GatorCase>,
    /// `skip: true`.
    #[serde(default)]
    pub skip: bool,
}

/// A case: an object and what gator should find.
#[derive(Debug, Deserialize)]
pub struct GatorCase {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// The object file (an object or an `AdmissionReview`), relative to the suite.
    #[serde(default)]
    pub object: String,
    /// Referential data files (not supported: VAPs have no inventory).
    #[serde(default)]
    pub inventory: Vec<String>,
    /// The assertions.
    #[serde(default)]
    pub assertions: Vec<GatorAssertion>,
    /// `skip: true`.
    #[serde(default)]
    pub skip: bool,
}

/// `violations: yes|no|N`, optional `message`.
#[derive(Debug, Deserialize)]
pub struct GatorAssertion {
    /// `yes`, `no` or a count.
    #[serde(default)]
    pub violations: Value,
    /// A substring of the violation's message.
    #[serde(default)]
    pub message: Option<String>,
}

impl GatorCase {
    /// Whether the suite expects a violation, and the message it must contain, if any.
    pub fn expectation(&self) -> (bool, Option<String>) {
        let mut violated = false;
        let mut msg = None;
        for a in &self.assertions {
            let v = match &a.violations {
                Value::String(s) => s == "yes",
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_u64().unwrap_or(0) > 0,
                _ => false,
            };
            if v {
                violated = true;
                if a.message.is_some() {
                    msg = a.message.clone();
                }
            }
        }
        (violated, msg)
    }
}

/// Whether `obj` (a parsed YAML document) is a gator suite.
pub fn is_gator_suite(obj: &Value) -> bool {
    snapshot::kind_of(obj) == "Suite" && snapshot::group_of(obj) == "test.gatekeeper.sh"
}

/// Reads a gator suite file.
pub fn read_suite(path: &Path) -> Result<GatorSuite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (docs, errors) = manifest::parse_documents(&text, &path.display().to_string());
    if let Some(e) = errors.first() {
        return Err(e.to_string());
    }
    let doc = docs
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: empty file", path.display()))?;
    if !is_gator_suite(&doc.object) {
        return Err(format!(
            "{}: not a gator suite (apiVersion {:?}, kind {:?}); expected test.gatekeeper.sh/v1alpha1 Suite",
            path.display(),
            doc.object["apiVersion"].as_str().unwrap_or(""),
            snapshot::kind_of(&doc.object)
        ));
    }
    serde_json::from_value(doc.object)
        .map_err(|e| format!("{}: invalid suite: {e}", path.display()))
}

/// The suite files below `paths`: files as given; in directories, recursively, the
/// `*.yaml`/`*.yml` files whose document is a gator `Suite`. Sorted.
pub fn suite_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            for f in crate::suite::suite_files(std::slice::from_ref(p)) {
                let is_suite = std::fs::read_to_string(&f).is_ok_and(|t| {
                    manifest::parse_documents(&t, "")
                        .0
                        .first()
                        .is_some_and(|d| is_gator_suite(&d.object))
                });
                if is_suite {
                    out.push(f);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

fn read_one(base: &Path, file: &str) -> Result<SourcedObject, String> {
    let path = base.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (docs, errors) = manifest::parse_documents(&text, &path.display().to_string());
    if let Some(e) = errors.first() {
        return Err(e.to_string());
    }
    docs.into_iter()
        .next()
        .ok_or_else(|| format!("{}: no object", path.display()))
}

// === the run ===

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}
fn vap_resource() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
    )
}
fn vapb_resource() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    )
}
fn crd_resource() -> ApiResource {
    ar(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
}
fn ns_resource() -> ApiResource {
    ar("", "v1", "Namespace", "namespaces")
}

fn kube_message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// An object `verify` created, to delete at the end.
struct Created {
    api: Api<DynamicObject>,
    name: String,
    what: String,
}

/// Objects to delete, newest first.
#[derive(Default)]
struct Cleanup {
    stack: Vec<Created>,
}

impl Cleanup {
    fn push(&mut self, api: Api<DynamicObject>, name: &str, what: impl Into<String>) {
        self.stack.push(Created {
            api,
            name: name.to_string(),
            what: what.into(),
        });
    }

    /// Deletes every object, newest first; what could not be deleted goes to `errors`.
    async fn run(&mut self, errors: &mut Vec<String>) {
        while let Some(c) = self.stack.pop() {
            match c.api.delete(&c.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => errors.push(format!("cannot delete {} {}: {e}", c.what, c.name)),
            }
        }
    }
}

/// Server-side apply (`FIELD_MANAGER`, forced).
async fn apply(api: &Api<DynamicObject>, obj: &Value) -> Result<(), String> {
    let name = snapshot::name_of(obj).to_string();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        format!(
            "applying {} {name}: {}",
            snapshot::kind_of(obj),
            kube_message(e)
        )
    })
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

/// Whether a denial is the admission plugin still catching up (not a verdict).
fn is_plugin_lag(msg: &str) -> bool {
    msg.contains("not yet synced") || msg.contains("failed to configure")
}

/// One case object, ready to send.
struct Prepared {
    row: usize,
    violated: bool,
    needle: Option<String>,
    api: Api<DynamicObject>,
    obj: Value,
    /// For an `AdmissionReview`: the object was created, the case is an update.
    update: Option<Option<Value>>,
}

struct Runner<'a> {
    client: kube::Client,
    decider: &'a dyn Decide,
    cfg: &'a VerifyConfig,
    run: String,
    namespace: String,
    serial: usize,
    discovery: BTreeMap<String, Result<(ApiResource, bool), String>>,
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
        r.report.errors.push(e);
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
                self.report.errors.push(e);
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
            (Err(e), _) | (_, Err(e)) => return all(self, Verdict::Fail, &e),
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
                return all(self, Verdict::Fail, &e);
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
    ) -> Result<(), String> {
        let crd_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &crd_resource());
        scope.push(
            crd_api.clone(),
            snapshot::name_of(crd),
            "CustomResourceDefinition",
        );
        apply(&crd_api, crd).await?;
        let vap_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &vap_resource());
        scope.push(
            vap_api.clone(),
            snapshot::name_of(policy),
            "ValidatingAdmissionPolicy",
        );
        apply(&vap_api, policy).await
    }

    /// The API for a case object's kind, and whether it is namespaced (cached per kind).
    async fn api_for(&mut self, obj: &mut Value) -> Result<Api<DynamicObject>, String> {
        let av = obj["apiVersion"].as_str().unwrap_or("v1").to_string();
        let kind = snapshot::kind_of(obj).to_string();
        let key = format!("{av}/{kind}");
        if !self.discovery.contains_key(&key) {
            let (group, version) = av.rsplit_once('/').unwrap_or(("", av.as_str()));
            let gvk = GroupVersionKind::gvk(group, version, &kind);
            let found: Result<(_, ApiCapabilities), _> =
                kube::discovery::pinned_kind(&self.client, &gvk).await;
            let v = found
                .map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced))
                .map_err(|e| format!("the API server does not serve {av} {kind}: {e}"));
            self.discovery.insert(key.clone(), v);
        }
        let (ar, namespaced) = self.discovery[&key].clone()?;
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
    ) -> Result<(), String> {
        // Phase 1, no binding: baseline every object; create the objects of UPDATE cases.
        let mut prepared = Vec::new();
        for (case, &row) in test.cases.iter().zip(rows) {
            if case.skip {
                self.set(row, Verdict::Skip, "-", "skip: true in the suite");
                continue;
            }
            if !case.inventory.is_empty() {
                self.set(
                    row,
                    Verdict::Skip,
                    "-",
                    "inventory (referential data): a VAP cannot read other objects",
                );
                continue;
            }
            let mut obj = match read_one(base, &case.object) {
                Ok(o) => o.object,
                Err(e) => {
                    self.set(row, Verdict::Fail, "-", e);
                    continue;
                }
            };
            let mut update = None;
            if snapshot::kind_of(&obj) == "AdmissionReview" {
                let op = obj
                    .pointer("/request/operation")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match op {
                    "UPDATE" => {
                        let old = obj
                            .pointer("/request/oldObject")
                            .filter(|o| !o.is_null())
                            .cloned();
                        let new = obj
                            .pointer("/request/object")
                            .cloned()
                            .unwrap_or(Value::Null);
                        match old {
                            Some(old) => {
                                update = Some(Some(new));
                                obj = old;
                            }
                            None => {
                                update = Some(None);
                                obj = new;
                            }
                        }
                    }
                    "CREATE" | "" => {
                        obj = obj
                            .pointer("/request/object")
                            .cloned()
                            .unwrap_or(Value::Null);
                    }
                    other => {
                        self.set(row, Verdict::Skip, "-", format!("an AdmissionReview of operation {other}: generated policies match CREATE and UPDATE"));
                        continue;
                    }
                }
            }
            if !obj.is_object() {
                self.set(row, Verdict::Fail, "-", "the case has no object");
                continue;
            }
            if obj.pointer("/spec/ephemeralContainers").is_some() {
                self.set(row, Verdict::Skip, "-", "ephemeral containers cannot be set on create (subresource pods/ephemeralcontainers is not matched by the generated rules)");
                continue;
            }
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
                    self.set(row, Verdict::Skip, "-", e);
                    continue;
                }
            };
            let (violated, needle) = case.expectation();
            if let Some(new) = &mut update {
                let o: DynamicObject =
                    serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
                match api.create(&PostParams::default(), &o).await {
                    Ok(_) => scope.push(api.clone(), &name, snapshot::kind_of(&obj).to_string()),
                    Err(e) => {
                        self.set(
                            row,
                            Verdict::Skip,
                            "-",
                            format!(
                                "the object of the UPDATE cannot be created: {}",
                                kube_message(e)
                            ),
                        );
                        continue;
                    }
                }
                if let Some(n) = new {
                    n["metadata"] = obj["metadata"].clone();
                }
            } else if let Err(m) = dry_run(&api, &obj).await {
                self.set(
                    row,
                    Verdict::Skip,
                    "-",
                    format!("rejected by the API server without any policy: {m}"),
                );
                continue;
            }
            prepared.push(Prepared {
                row,
                violated,
                needle,
                api,
                obj,
                update,
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
                return Err(format!("the constraint kind {kind} is not served: {e}"));
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
        self.canary(test_id, scope).await?;
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
                Err(e) => self.set(p.row, Verdict::Fail, got, e),
            }
        }
        Ok(())
    }

    /// Creates a canary policy and binding after the test's own, and waits until the canary
    /// request is denied: the API server has then seen the test's policy and binding.
    async fn canary(&mut self, test_id: &str, scope: &mut Cleanup) -> Result<(), String> {
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
            match dry_run(&cm_api, &cm).await {
                Err(m) if m.contains("vapgen verify canary") => return Ok(()),
                other => {
                    if start.elapsed() > self.cfg.enforce_timeout {
                        return Err(format!(
                            "the policy was not enforced within {:?} (canary: {other:?})",
                            self.cfg.enforce_timeout
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn dry_run(api: &Api<DynamicObject>, obj: &Value) -> Result<(), String> {
    let o: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&pp, &o).await.map(|_| ()).map_err(kube_message)
}

/// The case's request: a dry-run create, or for an UPDATE a dry-run update of the object
/// created in phase 1 (to the review's object, else with one label added).
async fn send(p: &Prepared) -> Result<(), String> {
    let name = snapshot::name_of(&p.obj).to_string();
    let pp = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    match &p.update {
        None => dry_run(&p.api, &p.obj).await,
        Some(None) => {
            let patch = json!({"metadata": {"labels": {"vapgen.dev/verify-update": "1"}}});
            p.api
                .patch(&name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(kube_message)
        }
        Some(Some(new)) => {
            let mut new = new.clone();
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            p.api
                .patch(&name, &pp, &Patch::Merge(&new))
                .await
                .map(|_| ())
                .map_err(kube_message)
        }
    }
}

/// Polls until the policy denies the request (with the expected message, if any).
async fn expect_denied(
    p: &Prepared,
    policy: &str,
    timeout: Duration,
) -> (&'static str, Result<(), String>) {
    let wanted = format!("ValidatingAdmissionPolicy '{policy}'");
    let start = Instant::now();
    let mut last = String::new();
    let mut got = "admitted";
    while start.elapsed() < timeout {
        match send(p).await {
            Err(m) if m.contains(&wanted) && !is_plugin_lag(&m) => {
                return match &p.needle {
                    Some(n) if !m.contains(n.as_str()) => {
                        ("denied", Err(format!("denied, but without {n:?}: {m}")))
                    }
                    _ => ("denied", Ok(())),
                };
            }
            Err(m) => {
                got = "error";
                last = m;
            }
            Ok(()) => {
                got = "admitted";
                last = "admitted".into();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (
        got,
        Err(format!(
            "expected a denial by {policy}; last answer: {last}"
        )),
    )
}

/// Polls until the request is admitted (the param informer may still lag for a moment; a
/// wrong denial never goes away).
async fn expect_admitted(p: &Prepared, timeout: Duration) -> (&'static str, Result<(), String>) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match send(p).await {
            Ok(()) => return ("admitted", Ok(())),
            Err(m) => last = m,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (
        "denied",
        Err(format!("expected admission; last answer: {last}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_read_yes_no_and_counts() {
        let case = |a: Value| -> GatorCase {
            serde_json::from_value(json!({"name": "c", "object": "o.yaml", "assertions": a}))
                .unwrap()
        };
        assert_eq!(
            case(json!([{"violations": false}])).expectation(),
            (false, None)
        );
        assert_eq!(
            case(json!([{"violations": "no"}])).expectation(),
            (false, None)
        );
        assert_eq!(
            case(json!([{"violations": true}])).expectation(),
            (true, None)
        );
        assert_eq!(
            case(json!([{"violations": 2, "message": "m"}])).expectation(),
            (true, Some("m".into()))
        );
        assert_eq!(
            case(json!([{"violations": 0}])).expectation(),
            (false, None)
        );
    }

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

    #[test]
    fn table_has_a_row_per_case_and_counts() {
        let row = |case: &str, verdict| CaseRow {
            suite: "s".into(),
            test: "t".into(),
            case: case.into(),
            expected: "deny".into(),
            got: "denied".into(),
            verdict,
            reason: if verdict == Verdict::Fail {
                "why".into()
            } else {
                String::new()
            },
        };
        let r = Report {
            run: "r1".into(),
            suites: 1,
            rows: vec![
                row("a", Verdict::Pass),
                row("b", Verdict::Fail),
                row("c", Verdict::Skip),
            ],
            errors: Vec::new(),
        };
        let t = r.table();
        assert!(t.starts_with("SUITE"), "{t}");
        assert!(
            t.contains("b  ") && t.contains("FAIL") && t.contains("why"),
            "{t}"
        );
        assert!(
            t.ends_with("run r1: 1 suite(s): 1 passed, 1 failed, 1 skipped\n"),
            "{t}"
        );
        assert!(!r.success());
    }
}
