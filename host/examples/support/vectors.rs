//! Decision vectors: the inputs of decision-suite cases, and plans, written as JSON in the
//! shape of the WIT contract as JavaScript bindings (jco) see it, so that another host can
//! feed the same inputs to the same component and compare its results with the Rust host's.
//!
//! Shape (`vapgen-decision-vectors/v1`), WIT → JSON:
//!
//! * records → objects with camelCase field names (`default-failure-policy` →
//!   `defaultFailurePolicy`);
//! * enums → their WIT case name as a string (`"fail"`, `"dryrun"`, `"no-intent"`);
//! * variants → `{"tag": "<case>", "val": <payload>}`, `val` absent for cases without payload;
//! * `option<T>` → the value, or `null` for none;
//! * `u64` → a decimal string (JSON numbers lose precision past 2^53; jco uses `BigInt`);
//! * `result<T, E>` → `{"tag": "ok", "val": T}` or `{"tag": "err", "val": E}`.
//!
//! Comparisons treat `null` and an absent member as equal.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use vapgen::model::{
    BindingOutcome, BindingPlan, Constraint, EnforcementAction, FailurePolicy, KindPlan,
    ModuleInfo, NoBindingReason, PolicyOutcome, Settings, SkipReason, TemplateDecision,
    ValidationAction,
};
use vapgen::runtime::CallError;
use vapgen::{snapshot, suite};

/// The format name written into vector files.
pub const FORMAT: &str = "vapgen-decision-vectors/v1";

/// The inputs of one decision-suite case.
#[derive(Clone, Debug)]
pub struct Input {
    /// The suite's name.
    pub suite: String,
    /// The case's name.
    pub case: String,
    /// Settings after merging case over suite over defaults.
    pub settings: Settings,
    /// The template as JSON text (what the host passes to `plan-kind`).
    pub template: String,
    /// The constraints as the host extracts them.
    pub constraints: Vec<Constraint>,
}

/// Reads every decision suite below `paths` (files or directories; `.yaml`/`.yml`) and
/// returns the inputs of all their cases, in file order.
pub fn load_inputs(paths: &[PathBuf]) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for f in &suite::suite_files(paths) {
        out.extend(load_suite(f)?);
    }
    Ok(out)
}

fn load_suite(path: &Path) -> Result<Vec<Input>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s: suite::Suite =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = s.name.clone().unwrap_or_else(|| path.display().to_string());
    let base = path.parent().unwrap_or(Path::new("."));
    s.cases
        .iter()
        .map(|c| {
            let (settings, template, objects) = suite::case_inputs(&s.settings, c, base)
                .map_err(|e| format!("{}: case {:?}: {e}", path.display(), c.name))?;
            Ok(Input {
                suite: name.clone(),
                case: c.name.clone(),
                settings,
                template: template.to_string(),
                constraints: objects.iter().map(snapshot::extract_constraint).collect(),
            })
        })
        .collect()
}

/// A few inputs no suite can express (a template that is not JSON, an empty object), so the
/// error paths cross the boundary too.
pub fn edge_inputs() -> Vec<Input> {
    let input = |case: &str, template: &str| Input {
        suite: "edge cases".into(),
        case: case.into(),
        settings: Settings::default(),
        template: template.into(),
        constraints: vec![Constraint {
            name: "ünïcødé-名前".into(),
            uid: "u".into(),
            generation: u64::MAX,
            ..Constraint::default()
        }],
    };
    vec![
        input("the template is not JSON", "not json"),
        input("the template is an empty object", "{}"),
        input("the template is a JSON array", "[]"),
    ]
}

// === WIT-shaped JSON ===

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn tag(t: &str) -> Value {
    json!({ "tag": t })
}

fn tagged(t: &str, val: Value) -> Value {
    json!({ "tag": t, "val": val })
}

/// `settings` as the WIT record.
pub fn settings_json(s: &Settings) -> Value {
    json!({
        "defaultCreateVapForTemplates": s.default_create_vap_for_templates,
        "defaultCreateVapBindingForConstraints": s.default_create_vap_binding_for_constraints,
        "defaultFailurePolicy": match s.default_failure_policy {
            FailurePolicy::Fail => "fail",
            FailurePolicy::Ignore => "ignore",
        },
        "scopeSync": s.scope_sync.as_ref().map(|ss| json!({
            "webhook": opt(&ss.webhook),
            "excludedNamespaces": ss.excluded_namespaces,
            "exemptNamespaces": ss.exempt_namespaces,
        })),
    })
}

/// A `constraint` as the WIT record.
pub fn constraint_json(c: &Constraint) -> Value {
    json!({
        "name": c.name,
        "uid": c.uid,
        "generation": c.generation.to_string(),
        "enforcementAction": opt(&c.enforcement_action),
        "scopedEnforcementActions": c.scoped_enforcement_actions.as_ref().map(|v| {
            v.iter()
                .map(|a| json!({"action": a.action, "enforcementPoints": a.enforcement_points}))
                .collect::<Vec<_>>()
        }),
        "labelSelector": opt(&c.label_selector),
        "namespaceSelector": opt(&c.namespace_selector),
        "malformed": c.malformed,
    })
}

/// `module-info` as the WIT record.
pub fn module_info_json(i: &ModuleInfo) -> Value {
    json!({"name": i.name, "version": i.version, "interfaceVersion": i.interface_version})
}

/// The result of `plan-kind` as WIT `result<kind-plan, plan-error>`. Failures of the call
/// itself (trap, timeout) are not results of the function and come back as `Err`.
pub fn plan_result_json(r: &Result<KindPlan, CallError>) -> Result<Value, String> {
    match r {
        Ok(p) => Ok(tagged("ok", kind_plan_json(p))),
        Err(CallError::Rejected(m)) => Ok(tagged("err", json!({ "message": m }))),
        Err(e) => Err(e.to_string()),
    }
}

/// A `kind-plan` as the WIT record.
pub fn kind_plan_json(p: &KindPlan) -> Value {
    json!({
        "templateName": p.template_name,
        "kind": p.kind,
        "decision": match &p.decision {
            TemplateDecision::Generate => tag("generate"),
            TemplateDecision::Skip(r) => tagged("skip", json!(match r {
                SkipReason::OptedOut => "opted-out",
                SkipReason::FlagDefault => "flag-default",
            })),
            TemplateDecision::NotApplicable(m) => tagged("not-applicable", json!(m)),
            TemplateDecision::Error(m) => tagged("error", json!(m)),
        },
        "policyName": p.policy_name,
        "policy": match &p.policy {
            PolicyOutcome::None => tag("none"),
            PolicyOutcome::Desired(j) => tagged("desired", json!(j)),
            PolicyOutcome::TransformError(m) => tagged("transform-error", json!(m)),
        },
        "warnings": p.warnings,
        "bindings": p.bindings.iter().map(binding_plan_json).collect::<Vec<_>>(),
    })
}

fn binding_plan_json(b: &BindingPlan) -> Value {
    let outcome = match &b.outcome {
        BindingOutcome::Bind(s) => tagged(
            "bind",
            json!({
                "name": s.name,
                "policyName": s.policy_name,
                "paramName": s.param_name,
                "validationActions": s.validation_actions.iter().map(|a| match a {
                    ValidationAction::Deny => "deny",
                    ValidationAction::Warn => "warn",
                    ValidationAction::Audit => "audit",
                }).collect::<Vec<_>>(),
                "objectSelector": opt(&s.object_selector),
                "namespaceSelector": opt(&s.namespace_selector),
            }),
        ),
        BindingOutcome::None(r) => tagged(
            "none",
            json!(match r {
                NoBindingReason::NoIntent => "no-intent",
                NoBindingReason::TemplateSkipped => "template-skipped",
                NoBindingReason::TemplateNotApplicable => "template-not-applicable",
                NoBindingReason::TemplateError => "template-error",
            }),
        ),
        BindingOutcome::Error(m) => tagged("error", json!(m)),
    };
    json!({
        "constraint": b.constraint,
        "bindingName": b.binding_name,
        "legacyBindingName": opt(&b.legacy_binding_name),
        "enforcementAction": match b.enforcement_action {
            EnforcementAction::Deny => "deny",
            EnforcementAction::Dryrun => "dryrun",
            EnforcementAction::Warn => "warn",
            EnforcementAction::Scoped => "scoped",
            EnforcementAction::Unrecognized => "unrecognized",
        },
        "intendsBinding": b.intends_binding,
        "outcome": outcome,
        "warnings": b.warnings,
    })
}

/// One vector: the inputs in WIT shape and the expected result.
pub fn vector_json(input: &Input, expected: Value) -> Value {
    let mut m = Map::new();
    m.insert("suite".into(), json!(input.suite));
    m.insert("case".into(), json!(input.case));
    m.insert("settings".into(), settings_json(&input.settings));
    m.insert("template".into(), json!(input.template));
    m.insert(
        "constraints".into(),
        Value::Array(input.constraints.iter().map(constraint_json).collect()),
    );
    m.insert("expected".into(), expected);
    Value::Object(m)
}
