//! The worked examples of §4.7 (A, B, C, D) as golden files under `tests/data/example-*`.
//! Comparison is structural (YAML and JSON parsed into values), so formatting and key order
//! of the fixtures do not matter; the CEL text does, byte for byte.

mod common;

use common::*;
use serde_json::Value;
use vapgen_guest::model::*;

fn example_a_template() -> std::path::PathBuf {
    data("example-a/template.yaml")
}

#[test]
fn example_a_vap_and_binding() {
    let plan = plan_files(
        &Settings::default(),
        &example_a_template(),
        &yaml_docs(&data("example-a/constraints.yaml")),
    );
    assert_same(
        &vap(&plan),
        &yaml(&data("example-a/expected-vap.yaml")),
        "example A VAP",
    );
    assert_same(
        &plan_json(&plan),
        &yaml(&data("example-a/expected-plan.yaml")),
        "example A plan",
    );
}

#[test]
fn example_c_scoped_actions_and_selectors() {
    let plan = plan_files(
        &Settings::default(),
        &example_a_template(),
        &yaml_docs(&data("example-c/constraints.yaml")),
    );
    assert_same(
        &vap(&plan),
        &yaml(&data("example-a/expected-vap.yaml")),
        "example C VAP",
    );
    assert_same(
        &plan_json(&plan),
        &yaml(&data("example-c/expected-plan.yaml")),
        "example C plan",
    );
}

#[test]
fn example_c_is_independent_of_the_binding_flag() {
    // Scoped constraints ignore --default-create-vap-binding-for-constraints.
    let settings = Settings {
        default_create_vap_binding_for_constraints: false,
        ..Settings::default()
    };
    let plan = plan_files(
        &settings,
        &example_a_template(),
        &yaml_docs(&data("example-c/constraints.yaml")),
    );
    assert_same(
        &plan_json(&plan),
        &yaml(&data("example-c/expected-plan.yaml")),
        "example C plan",
    );
}

#[test]
fn example_d_opted_out() {
    let plan = plan_files(
        &Settings::default(),
        &data("example-d/template.yaml"),
        &yaml_docs(&data("example-d/constraints.yaml")),
    );
    assert_same(
        &plan_json(&plan),
        &yaml(&data("example-d/expected-plan.yaml")),
        "example D plan",
    );
}

#[test]
fn example_d_rego_only() {
    let plan = plan_files(
        &Settings::default(),
        &data("example-d-rego/template.yaml"),
        &yaml_docs(&data("example-d/constraints.yaml")),
    );
    assert_same(
        &plan_json(&plan),
        &yaml(&data("example-d-rego/expected-plan.yaml")),
        "example D (Rego only) plan",
    );
}

fn example_b_settings() -> Settings {
    let scope = yaml(&data("example-b/scope.yaml"));
    let list = |key: &str| -> Vec<String> {
        scope[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    Settings {
        scope_sync: Some(ScopeSync {
            webhook: Some(scope["webhook"].to_string()),
            excluded_namespaces: list("excludedNamespaces"),
            exempt_namespaces: list("exemptNamespaces"),
        }),
        ..Settings::default()
    }
}

#[test]
fn example_b_scope_sync() {
    let plan = plan_files(
        &example_b_settings(),
        &data("example-b/template.yaml"),
        &yaml_docs(&data("example-a/constraints.yaml")),
    );
    assert_same(
        &vap(&plan),
        &yaml(&data("example-b/expected-vap.yaml")),
        "example B VAP",
    );
    assert_same(
        &plan_json(&plan),
        &yaml(&data("example-b/expected-plan.yaml")),
        "example B plan",
    );
}

#[test]
fn example_b_without_common_operations() {
    // Acceptance test 43, second half: template [DELETE] only → no VAP, a transform error,
    // and every intending binding is withheld as a template error.
    let mut template = yaml(&data("example-b/template.yaml"));
    template["spec"]["targets"][0]["operations"] = serde_json::json!(["DELETE"]);
    let constraints: Vec<Constraint> = yaml_docs(&data("example-a/constraints.yaml"))
        .iter()
        .map(constraint)
        .collect();
    let plan = vapgen_guest::plan_kind(&example_b_settings(), &template.to_string(), &constraints)
        .unwrap();
    assert_eq!(plan.decision, TemplateDecision::Generate);
    let PolicyOutcome::TransformError(e) = &plan.policy else {
        panic!("expected a transform error, got {:?}", plan.policy);
    };
    assert!(
        e.starts_with("no matching operations between webhook and constraint template"),
        "{e}"
    );
    assert_eq!(
        plan.bindings[0].outcome,
        BindingOutcome::None(NoBindingReason::TemplateError)
    );
}

#[test]
fn example_b_before_the_webhook_is_known() {
    // Sync on but no webhook config yet: the default rule, but the global conditions apply.
    let mut settings = example_b_settings();
    if let Some(s) = settings.scope_sync.as_mut() {
        s.webhook = None;
    }
    let plan = plan_files(
        &settings,
        &data("example-b/template.yaml"),
        &yaml_docs(&data("example-a/constraints.yaml")),
    );
    let vap = vap(&plan);
    let a = yaml(&data("example-a/expected-vap.yaml"));
    assert_same(
        &vap["spec"]["matchConstraints"],
        &a["spec"]["matchConstraints"],
        "default matchConstraints",
    );
    let names: Vec<&str> = vap["spec"]["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 6);
    assert_eq!(
        names[4],
        "gatekeeper_internal_match_global_excluded_namespaces"
    );
    assert_eq!(
        names[5],
        "gatekeeper_internal_match_global_exempted_namespaces"
    );
    assert!(plan.warnings.is_empty());
}

#[test]
fn golden_vaps_are_deterministic() {
    let run = || {
        plan_files(
            &example_b_settings(),
            &data("example-b/template.yaml"),
            &yaml_docs(&data("example-a/constraints.yaml")),
        )
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    let PolicyOutcome::Desired(json) = &a.policy else {
        panic!()
    };
    assert!(!json.contains('\n'), "compact JSON");
    let _: Value = serde_json::from_str(json).unwrap();
}
