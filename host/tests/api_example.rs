//! The library API as its documentation shows it: this is the text proposed for the rustdoc
//! examples on `Runtime` and `Decider::plan_kind`, kept compiling and passing here.

use vapgen::model::{
    BindingOutcome, Constraint, PolicyOutcome, Settings, TemplateDecision, ValidationAction,
};
use vapgen::{Runtime, RuntimeConfig, snapshot};

/// Proposed `# Example` of `Runtime` (the body of a doctest returning
/// `Result<(), Box<dyn std::error::Error>>`).
#[test]
fn runtime_doc_example() -> Result<(), Box<dyn std::error::Error>> {
    // One runtime per process: wasmtime engine, limits, epoch ticker, compile cache.
    let runtime = Runtime::new(RuntimeConfig::default())?;
    // The module built into vapgen; `runtime.load_file(path, Some(sha256))` loads another.
    let decider = runtime.load_bundled()?;
    assert_eq!(decider.info().interface_version, "0.1.0");

    let template = r#"{
        "apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate",
        "metadata": {"name": "k8sdisallowed"},
        "spec": {"crd": {"spec": {"names": {"kind": "K8sDisallowed"}}},
                 "targets": [{"target": "admission.k8s.gatekeeper.sh",
                              "code": [{"engine": "K8sNativeValidation",
                                        "source": {"validations": [{"expression": "false"}]}}]}]}}"#;
    let constraint = serde_json::json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sDisallowed",
        "metadata": {"name": "no-pods", "uid": "3f1c"},
        "spec": {"enforcementAction": "dryrun"}
    });
    // The host extracts what the decision reads; the module sees no other field.
    let constraints = [snapshot::extract_constraint(&constraint)];

    let plan = decider.plan_kind(&Settings::default(), template, &constraints)?;
    assert_eq!(plan.decision, TemplateDecision::Generate);
    assert!(matches!(plan.policy, PolicyOutcome::Desired(_)));
    match &plan.bindings[0].outcome {
        BindingOutcome::Bind(spec) => {
            assert_eq!(spec.name, "gatekeeper-k8sdisallowed-no-pods");
            assert_eq!(spec.validation_actions, [ValidationAction::Audit]);
        }
        other => panic!("expected a binding, got {other:?}"),
    }
    Ok(())
}

/// Proposed `# Example` of `Decider::plan_kind`.
#[test]
fn plan_kind_doc_example() -> Result<(), Box<dyn std::error::Error>> {
    let decider = Runtime::new(RuntimeConfig::default())?.load_bundled()?;
    let template = r#"{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate",
        "metadata":{"name":"k8sfoo"},
        "spec":{"crd":{"spec":{"names":{"kind":"K8sFoo"}}},
                "targets":[{"target":"admission.k8s.gatekeeper.sh",
                            "code":[{"engine":"K8sNativeValidation",
                                     "source":{"generateVAP":false,"validations":[{"expression":"true"}]}}]}]}}"#;
    let c = Constraint {
        name: "c1".into(),
        ..Constraint::default()
    };
    let plan = decider.plan_kind(&Settings::default(), template, &[c])?;
    // The template opted out: no VAP, and no binding for any constraint of its kind.
    assert!(matches!(plan.decision, TemplateDecision::Skip(_)));
    assert_eq!(plan.policy, PolicyOutcome::None);
    assert!(matches!(plan.bindings[0].outcome, BindingOutcome::None(_)));
    Ok(())
}

/// docs/embedding.md §1's snippet, line for line (host/tests/docs.rs checks that every line
/// of it is here), around the two objects it takes; returns the number of bindings.
#[rustfmt::skip]
#[allow(unused_variables)] // `spec`, as the guide shows it
fn embedding_guide_snippet(
    template_object: serde_json::Value,
    constraint_object: serde_json::Value,
) -> Result<usize, Box<dyn std::error::Error>> {
use vapgen::model::{BindingOutcome, Settings, TemplateDecision};
use vapgen::{Runtime, RuntimeConfig, snapshot};

let runtime = Runtime::new(RuntimeConfig::default())?;   // limits: memory_limit, timeout, cache_dir
let decider = runtime.load_bundled()?;                    // or runtime.load_file(path, Some(sha256))?
let constraints = [snapshot::extract_constraint(&constraint_object)];   // serde_json::Value
let plan = decider.plan_kind(&Settings::default(), &template_object.to_string(), &constraints)?;
if plan.decision == TemplateDecision::Generate { /* plan.policy holds the VAP as JSON */ }
for b in &plan.bindings {
    if let BindingOutcome::Bind(spec) = &b.outcome { /* vapgen::render::binding_object(spec, None) */ }
}
    Ok(plan.bindings.iter().filter(|b| matches!(b.outcome, BindingOutcome::Bind(_))).count())
}

#[test]
fn the_embedding_guide_snippet_runs() -> Result<(), Box<dyn std::error::Error>> {
    let template = serde_json::json!({
        "apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate",
        "metadata": {"name": "k8sdisallowed"},
        "spec": {"crd": {"spec": {"names": {"kind": "K8sDisallowed"}}},
                 "targets": [{"target": "admission.k8s.gatekeeper.sh",
                              "code": [{"engine": "K8sNativeValidation",
                                        "source": {"validations": [{"expression": "false"}]}}]}]}
    });
    let constraint = serde_json::json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sDisallowed",
        "metadata": {"name": "no-pods"}, "spec": {}
    });
    assert_eq!(embedding_guide_snippet(template, constraint)?, 1);
    Ok(())
}
