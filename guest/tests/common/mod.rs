//! Shared helpers for the guest's integration tests: read YAML fixtures, extract constraints
//! the way the host does, and render a plan as JSON for structural comparison.

#![allow(dead_code)] // Each test binary uses a different subset of the helpers.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use vapgen_guest::model::*;

/// `guest/tests/data/<rel>`.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// The gatekeeper-library corpus: `$VAPGEN_CONFORMANCE/gatekeeper-library`, else
/// `../shared/conformance` beside the repository (see `tests/corpus-dir`, which `./test`
/// uses to find or fetch it). `None`, said loudly, when absent; a panic under `CI=true`.
/// (The same rule as `vapgen_tests::conformance_library`, which the guest cannot depend on.)
pub fn library() -> Option<PathBuf> {
    let dir = match std::env::var_os("VAPGEN_CONFORMANCE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    };
    let lib = dir.join("gatekeeper-library");
    if lib.is_dir() {
        return Some(lib);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "no gatekeeper-library corpus at {} under CI=true; set VAPGEN_CONFORMANCE",
        lib.display()
    );
    eprintln!(
        "SKIPPED (no corpus): no gatekeeper-library at {}; set VAPGEN_CONFORMANCE (tests/corpus-dir)",
        lib.display()
    );
    None
}

/// Reads a one-document YAML file as JSON.
pub fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a multi-document YAML file.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .map(|d| {
            serde_yaml::from_str::<Value>(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Extracts the fields the decision reads, as the host does.
pub fn constraint(c: &Value) -> Constraint {
    let s = |p: &str| c.pointer(p).and_then(Value::as_str).map(str::to_string);
    let j = |p: &str| c.pointer(p).filter(|v| !v.is_null()).map(Value::to_string);
    Constraint {
        name: s("/metadata/name").unwrap_or_default(),
        uid: s("/metadata/uid").unwrap_or_default(),
        generation: c
            .pointer("/metadata/generation")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        enforcement_action: s("/spec/enforcementAction"),
        scoped_enforcement_actions: c
            .pointer("/spec/scopedEnforcementActions")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| ScopedAction {
                        action: e["action"].as_str().unwrap_or_default().to_string(),
                        enforcement_points: e["enforcementPoints"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p["name"].as_str().map(str::to_string))
                            .collect(),
                    })
                    .collect()
            }),
        label_selector: j("/spec/match/labelSelector"),
        namespace_selector: j("/spec/match/namespaceSelector"),
        malformed: Vec::new(),
    }
}

/// A JSON string from the plan, parsed (or null).
fn parsed(s: &Option<String>) -> Value {
    s.as_deref()
        .map(|s| serde_json::from_str(s).expect("selector JSON"))
        .unwrap_or(Value::Null)
}

/// The plan as JSON, in the shape of the `expected-plan.yaml` fixtures. The VAP is summarised
/// as `Desired` (its content is compared separately).
pub fn plan_json(p: &KindPlan) -> Value {
    json!({
        "template_name": p.template_name,
        "kind": p.kind,
        "decision": match &p.decision {
            TemplateDecision::Generate => json!("Generate"),
            TemplateDecision::Skip(r) => json!({"Skip": format!("{r:?}")}),
            TemplateDecision::NotApplicable(m) => json!({"NotApplicable": m}),
            TemplateDecision::Error(m) => json!({"Error": m}),
        },
        "policy_name": p.policy_name,
        "policy": match &p.policy {
            PolicyOutcome::None => json!("None"),
            PolicyOutcome::Desired(_) => json!("Desired"),
            PolicyOutcome::TransformError(m) => json!({"TransformError": m}),
        },
        "warnings": p.warnings,
        "bindings": p.bindings.iter().map(binding_json).collect::<Vec<_>>(),
    })
}

fn binding_json(b: &BindingPlan) -> Value {
    json!({
        "constraint": b.constraint,
        "binding_name": b.binding_name,
        "legacy_binding_name": b.legacy_binding_name,
        "enforcement_action": format!("{:?}", b.enforcement_action),
        "intends_binding": b.intends_binding,
        "outcome": match &b.outcome {
            BindingOutcome::Bind(s) => json!({"Bind": {
                "name": s.name,
                "policy_name": s.policy_name,
                "param_name": s.param_name,
                "validation_actions": s.validation_actions.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                "object_selector": parsed(&s.object_selector),
                "namespace_selector": parsed(&s.namespace_selector),
            }}),
            BindingOutcome::None(r) => json!({"None": format!("{r:?}")}),
            BindingOutcome::Error(m) => json!({"Error": m}),
        },
        "warnings": b.warnings,
    })
}

/// The desired VAP, parsed.
pub fn vap(p: &KindPlan) -> Value {
    match &p.policy {
        PolicyOutcome::Desired(j) => serde_json::from_str(j).expect("the VAP is valid JSON"),
        other => panic!(
            "expected a desired VAP, got {other:?} (decision {:?})",
            p.decision
        ),
    }
}

/// Plans a template file with constraint files, with the given settings.
pub fn plan_files(settings: &Settings, template: &Path, constraints: &[Value]) -> KindPlan {
    let t = yaml(template);
    let cs: Vec<Constraint> = constraints.iter().map(constraint).collect();
    vapgen_guest::plan_kind(settings, &t.to_string(), &cs).expect("plan")
}

/// Asserts structural equality with a readable diff of both sides.
pub fn assert_same(actual: &Value, expected: &Value, what: &str) {
    if actual != expected {
        panic!(
            "{what} differs.\n--- actual ---\n{}\n--- expected ---\n{}",
            serde_yaml::to_string(actual).unwrap(),
            serde_yaml::to_string(expected).unwrap()
        );
    }
}
