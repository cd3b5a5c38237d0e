//! Decision test suites (`vapgen test`): given templates, constraints and settings, expect
//! decisions, objects, fields and errors — run through a decision module.
//!
//! ```yaml
//! apiVersion: vapgen.dev/v1alpha1
//! kind: DecisionSuite
//! name: binding intent
//! settings:                      # optional, for every case
//!   defaultCreateVAPBindingForConstraints: false
//! cases:
//! - name: scoped warn on vap.k8s.io binds with Warn
//!   settings: {}                 # optional, merged over the suite's
//!   template: {...}              # or templateFile: path (relative to the suite file)
//!   constraints: [{...}]         # and/or constraintFiles: [path, ...]
//!   expect:
//!     decision: generate         # generate | skip | not-applicable | error
//!     decisionMessage: substring
//!     skipReason: opted-out      # opted-out | flag-default
//!     policy: desired            # desired | none | transform-error
//!     policyMessage: substring
//!     policyFields: {spec.failurePolicy: Fail, "spec.validations[0].expression": "..."}
//!     warnings: [substring]      # each must appear in a template warning
//!     noWarnings: true
//!     bindings:
//!       <constraint name>:
//!         outcome: bind          # bind | none | error
//!         reason: no-intent      # no-intent | template-skipped | template-not-applicable | template-error
//!         message: substring
//!         name: exact-binding-name
//!         actions: [Warn]
//!         intends: true
//!         fields: {spec.matchResources.objectSelector.matchLabels.team: payments}
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use vapgen_guest::model::{
    BindingOutcome, FailurePolicy, KindPlan, NoBindingReason, PolicyOutcome, ScopeSync, Settings,
    SkipReason, TemplateDecision,
};

use crate::manifest::{self, ManifestError};
use crate::render::{self, Owner};
use crate::runtime::Decide;
use crate::snapshot;

/// Why a suite file could not run (its cases are not run).
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The file could not be read.
    #[error("cannot read the suite file: {0}")]
    Read(#[source] std::io::Error),
    /// The file is not a suite: not YAML, or not the suite's fields.
    #[error("invalid suite: {0}")]
    Invalid(#[source] serde_yaml::Error),
    /// The file is a gator (gatekeeper-library) suite, which `vapgen verify` runs.
    #[error(
        "a gator Suite (test.gatekeeper.sh), not a decision suite: `vapgen test` runs vapgen.dev/v1alpha1 DecisionSuite files through the decision module; run gator suites against a cluster with `vapgen verify {}`",
        .0.display()
    )]
    GatorSuite(PathBuf),
    /// The file is YAML of another kind.
    #[error(
        "not a decision suite (apiVersion {api_version:?}, kind {kind:?}); expected vapgen.dev/v1alpha1 DecisionSuite"
    )]
    NotASuite {
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
    },
}

/// Why the inputs of a case could not be made (the case fails with this message).
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// `settings.defaultFailurePolicy` is neither `Fail` nor `Ignore`.
    #[error("settings.defaultFailurePolicy must be Fail or Ignore, got {0:?}")]
    FailurePolicy(String),
    /// A `templateFile` or a `constraintFiles` entry could not be read or parsed.
    #[error(transparent)]
    File(#[from] ManifestError),
    /// The `templateFile` has no ConstraintTemplate.
    #[error("{0}: no ConstraintTemplate in the file")]
    NoTemplateInFile(String),
    /// Both `template` and `templateFile` are given.
    #[error("give either template or templateFile, not both")]
    TwoTemplates,
    /// Neither `template` nor `templateFile` is given.
    #[error("the case needs a template or a templateFile")]
    NoTemplate,
}

/// A field path of `policyFields` or `fields` that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum FieldPathError {
    /// A `[` without its `]`.
    #[error("unclosed [ in field path")]
    Unclosed,
    /// Between brackets, neither a number nor a quoted key.
    #[error("bad index [{token}] in field path")]
    BadIndex {
        /// What is between the brackets.
        token: String,
        /// Why it is not an index.
        #[source]
        source: std::num::ParseIntError,
    },
    /// Nothing between two dots (or a leading dot).
    #[error("empty segment in field path")]
    EmptySegment,
}

/// Settings as written in a suite (every field optional; merged over defaults).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsSpec {
    /// `--default-create-vap-for-templates`.
    #[serde(rename = "defaultCreateVAPForTemplates")]
    pub default_create_vap_for_templates: Option<bool>,
    /// `--default-create-vap-binding-for-constraints`.
    #[serde(rename = "defaultCreateVAPBindingForConstraints")]
    pub default_create_vap_binding_for_constraints: Option<bool>,
    /// `Fail` or `Ignore`.
    pub default_failure_policy: Option<String>,
    /// Scope sync inputs.
    pub scope_sync: Option<ScopeSyncSpec>,
}

/// Scope sync as written in a suite.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeSyncSpec {
    /// The webhook entry (an object).
    pub webhook: Option<Value>,
    /// Config exclusions.
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
    /// Exempt namespaces.
    #[serde(default)]
    pub exempt_namespaces: Vec<String>,
}

/// A suite file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suite {
    /// `vapgen.dev/v1alpha1`.
    pub api_version: String,
    /// `DecisionSuite`.
    pub kind: String,
    /// A name for reports.
    pub name: Option<String>,
    /// Settings for every case.
    #[serde(default)]
    pub settings: SettingsSpec,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    /// What the case checks.
    pub name: String,
    /// Settings merged over the suite's.
    #[serde(default)]
    pub settings: SettingsSpec,
    /// The template, inline.
    pub template: Option<Value>,
    /// The template, from a file (first ConstraintTemplate in it).
    pub template_file: Option<String>,
    /// Constraints, inline.
    #[serde(default)]
    pub constraints: Vec<Value>,
    /// Constraints, from files (every constraint in them).
    #[serde(default)]
    pub constraint_files: Vec<String>,
    /// What must come out.
    pub expect: Expect,
}

/// Expectations about a plan.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    /// `generate`, `skip`, `not-applicable` or `error`.
    pub decision: Option<String>,
    /// Substring of the decision's message.
    pub decision_message: Option<String>,
    /// `opted-out` or `flag-default`.
    pub skip_reason: Option<String>,
    /// `desired`, `none` or `transform-error`.
    pub policy: Option<String>,
    /// Substring of the transform error.
    pub policy_message: Option<String>,
    /// Field path → expected value in the policy object.
    #[serde(default)]
    pub policy_fields: BTreeMap<String, Value>,
    /// Substrings that must each appear in a template warning.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The template must have no warnings.
    pub no_warnings: Option<bool>,
    /// Per constraint name.
    #[serde(default)]
    pub bindings: BTreeMap<String, BindingExpect>,
}

/// Expectations about one constraint's binding.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingExpect {
    /// `bind`, `none` or `error`.
    pub outcome: Option<String>,
    /// The no-binding reason.
    pub reason: Option<String>,
    /// Substring of the error.
    pub message: Option<String>,
    /// Exact binding name.
    pub name: Option<String>,
    /// Exact validation actions.
    pub actions: Option<Vec<String>>,
    /// Whether the constraint intends a binding.
    pub intends: Option<bool>,
    /// Field path → expected value in the binding object.
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
}

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Mismatches; empty means passed.
    pub failures: Vec<String>,
}

/// The result of one suite file.
#[derive(Debug)]
pub struct SuiteResult {
    /// The file.
    pub path: PathBuf,
    /// Suite name.
    pub name: String,
    /// Cases, or why the file could not run.
    pub cases: Result<Vec<CaseResult>, SuiteError>,
}

/// The result of a `vapgen test` run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One per suite file.
    pub suites: Vec<SuiteResult>,
}

impl Outcome {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.cases().filter(|c| c.failures.is_empty()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.cases().filter(|c| !c.failures.is_empty()).count()
    }

    /// Suite files that could not run.
    pub fn errors(&self) -> usize {
        self.suites.iter().filter(|s| s.cases.is_err()).count()
    }

    fn cases(&self) -> impl Iterator<Item = &CaseResult> {
        self.suites
            .iter()
            .filter_map(|s| s.cases.as_ref().ok())
            .flatten()
    }

    /// A report; failures always, passes with `verbose`. Ends with `N passed, M failed`.
    pub fn render(&self, verbose: bool) -> String {
        let mut s = String::new();
        for suite in &self.suites {
            let _ = writeln!(s, "suite {} ({})", suite.name, suite.path.display());
            match &suite.cases {
                Err(e) => {
                    let _ = writeln!(s, "  ERROR {e}");
                }
                Ok(cases) => {
                    for c in cases {
                        if c.failures.is_empty() {
                            if verbose {
                                let _ = writeln!(s, "  ok    {}", c.name);
                            }
                        } else {
                            let _ = writeln!(s, "  FAIL  {}", c.name);
                            for f in &c.failures {
                                let _ = writeln!(s, "        {f}");
                            }
                        }
                    }
                }
            }
        }
        if self.errors() > 0 {
            let _ = writeln!(s, "{} suite file(s) could not run", self.errors());
        }
        let _ = writeln!(s, "{} passed, {} failed", self.passed(), self.failed());
        s
    }
}

/// Runs every suite file below `paths`.
pub fn run_paths(decider: &dyn Decide, paths: &[PathBuf]) -> Outcome {
    Outcome {
        suites: suite_files(paths)
            .iter()
            .map(|f| run_file(decider, f))
            .collect(),
    }
}

/// The suite files below `paths` (files as given; `*.yaml`/`*.yml` in directories,
/// recursively), sorted.
pub fn suite_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files);
    }
    files.sort();
    files
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
                if path.is_dir() || matches!(ext, "yaml" | "yml") {
                    collect(&path, out);
                }
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
}

/// Runs one suite file.
pub fn run_file(decider: &dyn Decide, path: &Path) -> SuiteResult {
    let suite = match read_suite(path) {
        Ok(s) => s,
        Err(e) => {
            return SuiteResult {
                path: path.to_path_buf(),
                name: path.display().to_string(),
                cases: Err(e),
            };
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    SuiteResult {
        path: path.to_path_buf(),
        name: suite
            .name
            .clone()
            .unwrap_or_else(|| path.display().to_string()),
        cases: Ok(suite
            .cases
            .iter()
            .map(|c| CaseResult {
                name: c.name.clone(),
                failures: run_case(decider, &suite.settings, c, base),
            })
            .collect()),
    }
}

/// Reads and parses a suite file, and checks that it is a decision suite.
pub fn read_suite(path: &Path) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(SuiteError::Read)?;
    // A gator suite has other fields: name it before the field check refuses them.
    if let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(&text)
        && v.get("kind").and_then(serde_yaml::Value::as_str) == Some("Suite")
        && v.get("apiVersion")
            .and_then(serde_yaml::Value::as_str)
            .is_some_and(|a| a.starts_with("test.gatekeeper.sh/"))
    {
        return Err(SuiteError::GatorSuite(path.to_path_buf()));
    }
    let suite = serde_yaml::from_str::<Suite>(&text).map_err(SuiteError::Invalid)?;
    if suite.kind != "DecisionSuite" || !suite.api_version.starts_with("vapgen.dev/") {
        return Err(SuiteError::NotASuite {
            api_version: suite.api_version,
            kind: suite.kind,
        });
    }
    Ok(suite)
}

/// The inputs of a case: settings merged over the suite's, the template, the constraint
/// objects (files are read relative to `base`, the suite's directory).
pub fn case_inputs(
    base_settings: &SettingsSpec,
    case: &Case,
    base: &Path,
) -> Result<(Settings, Value, Vec<Value>), CaseError> {
    Ok((
        merge_settings(base_settings, &case.settings)?,
        load_template(case, base)?,
        load_constraints(case, base)?,
    ))
}

fn run_case(
    decider: &dyn Decide,
    base_settings: &SettingsSpec,
    case: &Case,
    base: &Path,
) -> Vec<String> {
    let (settings, template, constraints) = match case_inputs(base_settings, case, base) {
        Ok(x) => x,
        Err(e) => return vec![e.to_string()],
    };
    let records: Vec<_> = constraints
        .iter()
        .map(snapshot::extract_constraint)
        .collect();
    match decider.plan_kind(&settings, &template.to_string(), &records) {
        Ok(plan) => check(&case.expect, &plan, &constraints),
        Err(e) => vec![format!("the module failed: {e}")],
    }
}

/// Merges suite and case settings over Gatekeeper's defaults.
pub fn merge_settings(a: &SettingsSpec, b: &SettingsSpec) -> Result<Settings, CaseError> {
    let d = Settings::default();
    let fp = b
        .default_failure_policy
        .as_ref()
        .or(a.default_failure_policy.as_ref());
    let default_failure_policy = match fp {
        None => d.default_failure_policy,
        Some(s) => FailurePolicy::parse(s).ok_or_else(|| CaseError::FailurePolicy(s.clone()))?,
    };
    let scope_sync = b
        .scope_sync
        .as_ref()
        .or(a.scope_sync.as_ref())
        .map(|s| ScopeSync {
            webhook: s.webhook.as_ref().map(Value::to_string),
            excluded_namespaces: s.excluded_namespaces.clone(),
            exempt_namespaces: s.exempt_namespaces.clone(),
        });
    Ok(Settings {
        default_create_vap_for_templates: b
            .default_create_vap_for_templates
            .or(a.default_create_vap_for_templates)
            .unwrap_or(d.default_create_vap_for_templates),
        default_create_vap_binding_for_constraints: b
            .default_create_vap_binding_for_constraints
            .or(a.default_create_vap_binding_for_constraints)
            .unwrap_or(d.default_create_vap_binding_for_constraints),
        default_failure_policy,
        scope_sync,
    })
}

fn read_objects(base: &Path, file: &str) -> Result<Vec<Value>, ManifestError> {
    let path = base.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(source) => return Err(ManifestError::Io { path, source }),
    };
    let (objs, errs) = manifest::parse_documents(&text, &path.display().to_string());
    if let Some(e) = errs.into_iter().next() {
        return Err(e);
    }
    Ok(objs.into_iter().map(|o| o.object).collect())
}

fn load_template(case: &Case, base: &Path) -> Result<Value, CaseError> {
    match (&case.template, &case.template_file) {
        (Some(t), None) => Ok(t.clone()),
        (None, Some(f)) => read_objects(base, f)?
            .into_iter()
            .find(snapshot::is_template)
            .ok_or_else(|| CaseError::NoTemplateInFile(f.clone())),
        (Some(_), Some(_)) => Err(CaseError::TwoTemplates),
        (None, None) => Err(CaseError::NoTemplate),
    }
}

fn load_constraints(case: &Case, base: &Path) -> Result<Vec<Value>, CaseError> {
    let mut out = case.constraints.clone();
    for f in &case.constraint_files {
        out.extend(
            read_objects(base, f)?
                .into_iter()
                .filter(snapshot::is_constraint),
        );
    }
    Ok(out)
}

fn check(expect: &Expect, plan: &KindPlan, constraints: &[Value]) -> Vec<String> {
    let mut f = Vec::new();
    let (decision, dmsg) = match &plan.decision {
        TemplateDecision::Generate => ("generate", ""),
        TemplateDecision::Skip(_) => ("skip", ""),
        TemplateDecision::NotApplicable(m) => ("not-applicable", m.as_str()),
        TemplateDecision::Error(m) => ("error", m.as_str()),
    };
    expect_eq(&mut f, "decision", expect.decision.as_deref(), decision);
    expect_contains(
        &mut f,
        "decisionMessage",
        expect.decision_message.as_deref(),
        dmsg,
    );
    if let Some(want) = &expect.skip_reason {
        let got = match &plan.decision {
            TemplateDecision::Skip(SkipReason::OptedOut) => "opted-out",
            TemplateDecision::Skip(SkipReason::FlagDefault) => "flag-default",
            _ => "<not skipped>",
        };
        expect_eq(&mut f, "skipReason", Some(want), got);
    }
    let (policy, pmsg) = match &plan.policy {
        PolicyOutcome::None => ("none", ""),
        PolicyOutcome::Desired(_) => ("desired", ""),
        PolicyOutcome::TransformError(m) => ("transform-error", m.as_str()),
    };
    expect_eq(&mut f, "policy", expect.policy.as_deref(), policy);
    expect_contains(
        &mut f,
        "policyMessage",
        expect.policy_message.as_deref(),
        pmsg,
    );
    if !expect.policy_fields.is_empty() {
        match &plan.policy {
            PolicyOutcome::Desired(json) => match serde_json::from_str::<Value>(json) {
                Ok(obj) => check_fields(&mut f, "policy", &obj, &expect.policy_fields),
                Err(e) => f.push(format!("policy: not JSON: {e}")),
            },
            _ => f.push(format!(
                "policyFields: no policy to check (policy is {policy})"
            )),
        }
    }
    for w in &expect.warnings {
        if !plan.warnings.iter().any(|x| x.contains(w.as_str())) {
            f.push(format!(
                "warnings: expected one containing {w:?}, got {:?}",
                plan.warnings
            ));
        }
    }
    if expect.no_warnings == Some(true) && !plan.warnings.is_empty() {
        f.push(format!("warnings: expected none, got {:?}", plan.warnings));
    }
    for (name, be) in &expect.bindings {
        let Some(idx) = plan.bindings.iter().position(|b| &b.constraint == name) else {
            f.push(format!("bindings.{name}: no plan for this constraint"));
            continue;
        };
        check_binding(&mut f, name, be, plan, idx, constraints.get(idx));
    }
    f
}

fn check_binding(
    f: &mut Vec<String>,
    name: &str,
    be: &BindingExpect,
    plan: &KindPlan,
    idx: usize,
    source: Option<&Value>,
) {
    let b = &plan.bindings[idx];
    let p = format!("bindings.{name}");
    let (outcome, reason, msg) = match &b.outcome {
        BindingOutcome::Bind(_) => ("bind", "", ""),
        BindingOutcome::None(r) => (
            "none",
            match r {
                NoBindingReason::NoIntent => "no-intent",
                NoBindingReason::TemplateSkipped => "template-skipped",
                NoBindingReason::TemplateNotApplicable => "template-not-applicable",
                NoBindingReason::TemplateError => "template-error",
            },
            "",
        ),
        BindingOutcome::Error(m) => ("error", "", m.as_str()),
    };
    expect_eq(f, &format!("{p}.outcome"), be.outcome.as_deref(), outcome);
    expect_eq(f, &format!("{p}.reason"), be.reason.as_deref(), reason);
    expect_contains(f, &format!("{p}.message"), be.message.as_deref(), msg);
    expect_eq(f, &format!("{p}.name"), be.name.as_deref(), &b.binding_name);
    if let Some(want) = be.intends
        && want != b.intends_binding
    {
        f.push(format!(
            "{p}.intends: expected {want}, got {}",
            b.intends_binding
        ));
    }
    let spec = match &b.outcome {
        BindingOutcome::Bind(s) => Some(s),
        _ => None,
    };
    if let Some(want) = &be.actions {
        let got: Vec<String> = spec
            .map(|s| {
                s.validation_actions
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if &got != want {
            f.push(format!("{p}.actions: expected {want:?}, got {got:?}"));
        }
    }
    if !be.fields.is_empty() {
        let Some(spec) = spec else {
            f.push(format!(
                "{p}.fields: no binding to check (outcome is {outcome})"
            ));
            return;
        };
        let uid = source
            .and_then(|s| s.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let owner = Owner::constraint(&plan.kind, name, uid);
        match render::binding_object(spec, Some(&owner)) {
            Ok(obj) => check_fields(f, &p, &obj, &be.fields),
            Err(e) => f.push(format!("{p}: {e}")),
        }
    }
}

fn expect_eq(f: &mut Vec<String>, what: &str, want: Option<&str>, got: &str) {
    if let Some(want) = want
        && want != got
    {
        f.push(format!("{what}: expected {want:?}, got {got:?}"));
    }
}

fn expect_contains(f: &mut Vec<String>, what: &str, want: Option<&str>, got: &str) {
    if let Some(want) = want
        && !got.contains(want)
    {
        f.push(format!("{what}: expected to contain {want:?}, got {got:?}"));
    }
}

fn check_fields(f: &mut Vec<String>, what: &str, obj: &Value, fields: &BTreeMap<String, Value>) {
    for (path, want) in fields {
        match field(obj, path) {
            Ok(Some(got)) if got == want => {}
            Ok(Some(got)) => f.push(format!(
                "{what}.{path}: expected {}, got {}",
                compact(want),
                compact(got)
            )),
            Ok(None) if want.is_null() => {}
            Ok(None) => f.push(format!(
                "{what}.{path}: expected {}, got nothing",
                compact(want)
            )),
            Err(e) => f.push(format!("{what}.{path}: {e}")),
        }
    }
}

fn compact(v: &Value) -> String {
    v.to_string()
}

/// Looks up a path like `spec.validations[0].expression` or `metadata.labels["a.b/c"]`.
pub fn field<'a>(obj: &'a Value, path: &str) -> Result<Option<&'a Value>, FieldPathError> {
    let mut cur = obj;
    let mut rest = path;
    while !rest.is_empty() {
        let (seg, tail) = next_segment(rest)?;
        rest = tail;
        let next = match seg {
            Segment::Key(k) => cur.get(k.as_str()),
            Segment::Index(i) => cur.get(i),
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

enum Segment {
    Key(String),
    Index(usize),
}

fn next_segment(s: &str) -> Result<(Segment, &str), FieldPathError> {
    let s = s.strip_prefix('.').unwrap_or(s);
    if let Some(inner) = s.strip_prefix('[') {
        let end = inner.find(']').ok_or(FieldPathError::Unclosed)?;
        let tok = &inner[..end];
        let tail = &inner[end + 1..];
        if let Some(q) = tok.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            return Ok((Segment::Key(q.to_string()), tail));
        }
        let i = tok.parse().map_err(|source| FieldPathError::BadIndex {
            token: tok.to_string(),
            source,
        })?;
        return Ok((Segment::Index(i), tail));
    }
    let end = s.find(['.', '[']).unwrap_or(s.len());
    if end == 0 {
        return Err(FieldPathError::EmptySegment);
    }
    Ok((Segment::Key(s[..end].to_string()), &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths() {
        let v = json!({"a": {"b.c": [1, {"d": "x"}]}});
        assert_eq!(field(&v, "a[\"b.c\"][1].d").unwrap(), Some(&json!("x")));
        assert_eq!(field(&v, "a.missing").unwrap(), None);
        let e = field(&v, "a[zz]").unwrap_err();
        assert_eq!(e.to_string(), "bad index [zz] in field path");
        assert!(std::error::Error::source(&e).is_some());
        let e = field(&v, "a[0").unwrap_err();
        assert_eq!(e.to_string(), "unclosed [ in field path");
        let e = field(&v, "a..b").unwrap_err();
        assert_eq!(e.to_string(), "empty segment in field path");
    }

    #[test]
    fn suite_file_errors() {
        let dir = std::env::temp_dir().join(format!("vapgen-suite-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = read_suite(&dir.join("missing.yaml")).unwrap_err();
        assert!(matches!(e, SuiteError::Read(_)), "{e:?}");
        assert!(
            e.to_string().starts_with("cannot read the suite file: "),
            "{e}"
        );
        let other = dir.join("other.yaml");
        std::fs::write(&other, "apiVersion: v1\nkind: ConfigMap\ncases: []\n").unwrap();
        assert_eq!(
            read_suite(&other).unwrap_err().to_string(),
            r#"not a decision suite (apiVersion "v1", kind "ConfigMap"); expected vapgen.dev/v1alpha1 DecisionSuite"#
        );
        let gator = dir.join("gator.yaml");
        std::fs::write(
            &gator,
            "kind: Suite\napiVersion: test.gatekeeper.sh/v1alpha1\ntests: []\n",
        )
        .unwrap();
        let e = read_suite(&gator).unwrap_err();
        assert!(matches!(e, SuiteError::GatorSuite(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains(&format!("`vapgen verify {}`", gator.display())),
            "{e}"
        );
        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            "apiVersion: vapgen.dev/v1alpha1\nkind: DecisionSuite\nnope: 1\n",
        )
        .unwrap();
        let e = read_suite(&bad).unwrap_err();
        assert!(matches!(e, SuiteError::Invalid(_)), "{e:?}");
        assert!(e.to_string().starts_with("invalid suite: "), "{e}");
        let case: Case =
            serde_yaml::from_str("name: c\ntemplateFile: none.yaml\ntemplate: {}\nexpect: {}\n")
                .unwrap();
        assert_eq!(
            case_inputs(&SettingsSpec::default(), &case, &dir)
                .unwrap_err()
                .to_string(),
            "give either template or templateFile, not both"
        );
        let case: Case =
            serde_yaml::from_str("name: c\ntemplateFile: none.yaml\nexpect: {}\n").unwrap();
        let e = case_inputs(&SettingsSpec::default(), &case, &dir).unwrap_err();
        assert!(
            matches!(e, CaseError::File(ManifestError::Io { .. })),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", dir.join("none.yaml").display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_merge_case_over_suite_over_defaults() {
        let suite = SettingsSpec {
            default_create_vap_for_templates: Some(false),
            default_failure_policy: Some("Ignore".into()),
            ..Default::default()
        };
        let case = SettingsSpec {
            default_create_vap_for_templates: Some(true),
            ..Default::default()
        };
        let s = merge_settings(&suite, &case).unwrap();
        assert!(s.default_create_vap_for_templates);
        assert!(s.default_create_vap_binding_for_constraints);
        assert_eq!(s.default_failure_policy, FailurePolicy::Ignore);
        let bad = SettingsSpec {
            default_failure_policy: Some("Sometimes".into()),
            ..Default::default()
        };
        assert_eq!(
            merge_settings(&bad, &SettingsSpec::default())
                .unwrap_err()
                .to_string(),
            r#"settings.defaultFailurePolicy must be Fail or Ignore, got "Sometimes""#
        );
    }
}
