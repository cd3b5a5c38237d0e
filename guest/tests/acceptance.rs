//! The template-decision rows (T1–T7) and the acceptance tests of §6 that need no cluster,
//! run through the public `plan_kind`, as the host calls it.

mod common;

use common::*;
use serde_json::{Value, json};
use vapgen_guest::model::*;

/// A minimal valid CEL template of kind `K8sFoo`, as JSON.
fn template() -> Value {
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1beta1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": "k8sfoo"},
        "spec": {
            "crd": {"spec": {"names": {"kind": "K8sFoo"}}},
            "targets": [{
                "target": "admission.k8s.gatekeeper.sh",
                "code": [{
                    "engine": "K8sNativeValidation",
                    "source": {"validations": [{"expression": "true", "message": "m"}]}
                }]
            }]
        }
    })
}

fn source(t: &mut Value) -> &mut Value {
    &mut t["spec"]["targets"][0]["code"][0]["source"]
}

fn constraint(name: &str, action: Option<&str>) -> Constraint {
    Constraint {
        name: name.to_string(),
        uid: format!("uid-{name}"),
        generation: 1,
        enforcement_action: action.map(str::to_string),
        ..Constraint::default()
    }
}

fn plan_with(settings: &Settings, t: &Value, cs: &[Constraint]) -> KindPlan {
    vapgen_guest::plan_kind(settings, &t.to_string(), cs).expect("plan")
}

fn plan(t: &Value) -> KindPlan {
    plan_with(&Settings::default(), t, &[constraint("c", None)])
}

fn decision_error(p: &KindPlan) -> &str {
    match &p.decision {
        TemplateDecision::Error(e) => e,
        d => panic!("expected a decision error, got {d:?}"),
    }
}

/// A decision error means: no VAP and every intending binding withheld.
fn assert_rejected(p: &KindPlan) {
    assert_eq!(p.policy, PolicyOutcome::None);
    for b in &p.bindings {
        assert_eq!(
            b.outcome,
            BindingOutcome::None(NoBindingReason::TemplateError)
        );
    }
}

fn flags(template_flag: bool, binding_flag: bool) -> Settings {
    Settings {
        default_create_vap_for_templates: template_flag,
        default_create_vap_binding_for_constraints: binding_flag,
        ..Settings::default()
    }
}

// === T rows ===

#[test]
fn t1_more_than_one_target() {
    let mut t = template();
    let target = t["spec"]["targets"][0].clone();
    t["spec"]["targets"] = json!([target.clone(), target]);
    let p = plan(&t);
    assert!(decision_error(&p).contains("exactly one target"));
    assert_rejected(&p);
}

#[test]
fn t2_rego_only_is_not_applicable() {
    let mut t = template();
    t["spec"]["targets"][0]["code"] = json!([{"engine": "Rego", "source": {"rego": "package x"}}]);
    let p = plan(&t);
    assert_eq!(
        p.decision,
        TemplateDecision::NotApplicable("K8sNativeValidation engine is missing".into())
    );
    assert_eq!(p.policy, PolicyOutcome::None);
    // Acceptance test 4: a non-scoped constraint gets no binding (template not applicable).
    assert_eq!(
        p.bindings[0].outcome,
        BindingOutcome::None(NoBindingReason::TemplateNotApplicable)
    );
}

#[test]
fn t3_bad_source() {
    let mut t = template();
    *source(&mut t) = json!("not an object");
    assert_rejected(&plan(&t));
}

#[test]
fn t4_to_t7_against_both_flag_values() {
    // Acceptance tests 1–3.
    for (generate_vap, flag, want) in [
        (Some(true), true, TemplateDecision::Generate),
        (Some(true), false, TemplateDecision::Generate),
        (
            Some(false),
            true,
            TemplateDecision::Skip(SkipReason::OptedOut),
        ),
        (
            Some(false),
            false,
            TemplateDecision::Skip(SkipReason::OptedOut),
        ),
        (None, true, TemplateDecision::Generate),
        (None, false, TemplateDecision::Skip(SkipReason::FlagDefault)),
    ] {
        let mut t = template();
        if let Some(g) = generate_vap {
            source(&mut t)["generateVAP"] = json!(g);
        }
        let p = plan_with(&flags(flag, true), &t, &[constraint("c", None)]);
        assert_eq!(
            p.decision, want,
            "generateVAP {generate_vap:?}, flag {flag}"
        );
        match want {
            TemplateDecision::Generate => {
                let vap = vap(&p);
                assert_eq!(vap["metadata"]["name"], "gatekeeper-k8sfoo");
                assert_eq!(
                    vap["spec"]["paramKind"],
                    json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "K8sFoo"})
                );
                assert!(matches!(p.bindings[0].outcome, BindingOutcome::Bind(_)));
            }
            _ => {
                assert_eq!(p.policy, PolicyOutcome::None);
                assert_eq!(
                    p.bindings[0].outcome,
                    BindingOutcome::None(NoBindingReason::TemplateSkipped)
                );
            }
        }
    }
}

#[test]
fn all_template_api_versions() {
    for v in ["v1", "v1beta1", "v1alpha1"] {
        let mut t = template();
        t["apiVersion"] = json!(format!("templates.gatekeeper.sh/{v}"));
        assert_eq!(plan(&t).decision, TemplateDecision::Generate, "{v}");
    }
}

// === Acceptance tests: decision and flags ===

#[test]
fn test_1_owner_reference_when_the_uid_is_known() {
    let mut t = template();
    t["metadata"]["uid"] = json!("ct-uid");
    let vap = vap(&plan(&t));
    assert_eq!(
        vap["metadata"]["ownerReferences"],
        json!([{"apiVersion": "templates.gatekeeper.sh/v1beta1", "kind": "ConstraintTemplate",
                "name": "k8sfoo", "uid": "ct-uid", "controller": true, "blockOwnerDeletion": true}])
    );
    assert!(vap["metadata"].get("labels").is_none());
    assert!(vap["metadata"].get("annotations").is_none());
}

#[test]
fn test_7_binding_flag_off() {
    let p = plan_with(
        &flags(true, false),
        &template(),
        &[constraint("c", Some("deny"))],
    );
    assert!(!p.bindings[0].intends_binding);
    assert_eq!(
        p.bindings[0].outcome,
        BindingOutcome::None(NoBindingReason::NoIntent)
    );
}

// === Binding content ===

#[test]
fn test_8_default_binding() {
    let p = plan(&template());
    let b = &p.bindings[0];
    assert_eq!(b.enforcement_action, EnforcementAction::Deny);
    assert_eq!(
        b.outcome,
        BindingOutcome::Bind(BindingSpec {
            name: "gatekeeper-k8sfoo-c".into(),
            policy_name: "gatekeeper-k8sfoo".into(),
            param_name: "c".into(),
            validation_actions: vec![ValidationAction::Deny],
            object_selector: None,
            namespace_selector: None,
        })
    );
}

#[test]
fn test_9_warn_and_dryrun() {
    let p = plan_with(
        &Settings::default(),
        &template(),
        &[
            constraint("w", Some("warn")),
            constraint("d", Some("dryrun")),
        ],
    );
    let actions: Vec<_> = p
        .bindings
        .iter()
        .map(|b| match &b.outcome {
            BindingOutcome::Bind(s) => s.validation_actions.clone(),
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(
        actions,
        [vec![ValidationAction::Warn], vec![ValidationAction::Audit]]
    );
}

fn scoped(name: &str, entries: &[(&str, &[&str])]) -> Constraint {
    Constraint {
        scoped_enforcement_actions: Some(
            entries
                .iter()
                .map(|(a, ps)| ScopedAction {
                    action: a.to_string(),
                    enforcement_points: ps.iter().map(|p| p.to_string()).collect(),
                })
                .collect(),
        ),
        ..constraint(name, Some("scoped"))
    }
}

fn outcome_of(settings: &Settings, c: Constraint) -> BindingOutcome {
    plan_with(settings, &template(), &[c])
        .bindings
        .remove(0)
        .outcome
}

fn actions_of(settings: &Settings, c: Constraint) -> Vec<ValidationAction> {
    match outcome_of(settings, c) {
        BindingOutcome::Bind(s) => s.validation_actions,
        o => panic!("{o:?}"),
    }
}

#[test]
fn tests_10_to_12_scoped() {
    let off = flags(true, false);
    let c = scoped(
        "s",
        &[
            ("warn", &["vap.k8s.io"]),
            ("deny", &["validation.gatekeeper.sh"]),
        ],
    );
    assert_eq!(actions_of(&off, c), [ValidationAction::Warn], "test 10");
    let c = scoped("s", &[("deny", &["*"]), ("warn", &["audit.gatekeeper.sh"])]);
    assert_eq!(
        actions_of(&Settings::default(), c),
        [ValidationAction::Deny],
        "test 11"
    );
    let c = scoped("s", &[("deny", &["validation.gatekeeper.sh"])]);
    assert_eq!(
        outcome_of(&Settings::default(), c),
        BindingOutcome::None(NoBindingReason::NoIntent),
        "test 12"
    );
}

#[test]
fn test_13_selectors_copied_unchanged() {
    let mut c = constraint("c", None);
    c.label_selector = Some(r#"{"matchLabels":{"a":"b"}}"#.into());
    c.namespace_selector =
        Some(r#"{"matchExpressions":[{"key":"env","operator":"NotIn","values":["dev"]}]}"#.into());
    let BindingOutcome::Bind(s) = outcome_of(&Settings::default(), c.clone()) else {
        panic!()
    };
    assert_eq!(s.object_selector, c.label_selector);
    assert_eq!(s.namespace_selector, c.namespace_selector);
}

#[test]
fn test_14_long_names() {
    let name = "x".repeat(250);
    let p1 = plan_with(
        &Settings::default(),
        &template(),
        &[constraint(&name, None)],
    );
    let p2 = plan_with(
        &Settings::default(),
        &template(),
        &[constraint(&name, None)],
    );
    let b = &p1.bindings[0];
    assert!(b.binding_name.len() <= 253);
    let (_, hash) = b.binding_name.rsplit_once('-').unwrap();
    assert!(hash.len() == 8 && hash.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(b.binding_name, p2.bindings[0].binding_name, "stable");
    assert_eq!(b.legacy_binding_name, None);
    // Gatekeeper's constraint CRD refuses a name over 63 characters (issue #13, F2): the
    // names are still planned, but the constraint gets an error, not a binding.
    let BindingOutcome::Error(e) = &b.outcome else {
        panic!("{:?}", b.outcome)
    };
    assert!(e.contains("at most 63"), "{e}");
}

#[test]
fn test_15_same_name_two_kinds() {
    let mut a = template();
    a["metadata"]["name"] = json!("a");
    a["spec"]["crd"]["spec"]["names"]["kind"] = json!("A");
    let mut b = a.clone();
    b["metadata"]["name"] = json!("b");
    b["spec"]["crd"]["spec"]["names"]["kind"] = json!("B");
    let pa = plan_with(&Settings::default(), &a, &[constraint("foo", None)]);
    let pb = plan_with(&Settings::default(), &b, &[constraint("foo", None)]);
    assert_eq!(pa.bindings[0].binding_name, "gatekeeper-a-foo");
    assert_eq!(pb.bindings[0].binding_name, "gatekeeper-b-foo");
    // The legacy name is the same for both: the host deletes it only if owned.
    assert_eq!(
        pa.bindings[0].legacy_binding_name,
        pb.bindings[0].legacy_binding_name
    );
}

// === Bad input ===

#[test]
fn test_35_reserved_names() {
    for var in ["params", "anyObject", "gatekeeper_internal_x"] {
        let mut t = template();
        source(&mut t)["variables"] = json!([{"name": var, "expression": "1"}]);
        let p = plan(&t);
        assert!(decision_error(&p).contains(var), "{var}");
        assert_rejected(&p);
    }
    let mut t = template();
    source(&mut t)["matchCondition"] =
        json!([{"name": "gatekeeper_internal_mine", "expression": "true"}]);
    let p = plan(&t);
    assert!(decision_error(&p).contains("source.matchCondition[0]"));
    assert_rejected(&p);
}

#[test]
fn test_36_kind_and_name() {
    let mut t = template();
    t["spec"]["crd"]["spec"]["names"]["kind"] = json!("");
    let p = plan(&t);
    assert!(decision_error(&p).contains("kind is empty"));
    assert_eq!(p.kind, "");
    assert_rejected(&p);
    let mut t = template();
    t["metadata"]["name"] = json!("other");
    let p = plan(&t);
    assert!(decision_error(&p).contains("lowercase"));
    assert_eq!(p.template_name, "other");
    assert_eq!(p.policy_name, "gatekeeper-other");
    assert_rejected(&p);
}

#[test]
fn test_37_failure_policy() {
    let mut t = template();
    source(&mut t)["failurePolicy"] = json!("Sometimes");
    let p = plan(&t);
    assert!(decision_error(&p).contains("failurePolicy"));
    assert_rejected(&p);
    let mut t = template();
    source(&mut t)["failurePolicy"] = json!("Ignore");
    assert_eq!(vap(&plan(&t))["spec"]["failurePolicy"], "Ignore");
    let ignore = Settings {
        default_failure_policy: FailurePolicy::Ignore,
        ..Settings::default()
    };
    let p = plan_with(&ignore, &template(), &[]);
    assert_eq!(
        vap(&p)["spec"]["failurePolicy"],
        "Ignore",
        "the flag applies when absent"
    );
}

#[test]
fn test_38_no_validations() {
    let mut t = template();
    source(&mut t)["validations"] = json!([]);
    let p = plan(&t);
    assert_eq!(
        p.decision,
        TemplateDecision::Generate,
        "Gatekeeper's decision is unchanged"
    );
    let PolicyOutcome::TransformError(e) = &p.policy else {
        panic!("{:?}", p.policy)
    };
    assert!(e.contains("has no validations"), "{e}");
    assert_eq!(
        p.bindings[0].outcome,
        BindingOutcome::None(NoBindingReason::TemplateError)
    );
}

#[test]
fn test_39_deny_and_warn() {
    let c = scoped("s", &[("deny", &["vap.k8s.io"]), ("warn", &["vap.k8s.io"])]);
    let BindingOutcome::Error(e) = outcome_of(&Settings::default(), c) else {
        panic!()
    };
    assert!(e.contains("both Deny and Warn"));
    // Duplicates collapse.
    let c = scoped("s", &[("deny", &["vap.k8s.io"]), ("deny", &["*"])]);
    assert_eq!(
        actions_of(&Settings::default(), c),
        [ValidationAction::Deny]
    );
}

#[test]
fn test_40_scoped_errors() {
    let BindingOutcome::Error(e) =
        outcome_of(&Settings::default(), constraint("s", Some("scoped")))
    else {
        panic!()
    };
    assert!(e.contains("scopedEnforcementActions is missing"));
    let c = scoped("s", &[("deny", &["vap.k8s.io", "nope.example.com"])]);
    let BindingOutcome::Error(e) = outcome_of(&Settings::default(), c) else {
        panic!()
    };
    assert!(e.contains("\"nope.example.com\""));
    // Errors win over the template gate: the constraint itself is invalid.
    let mut t = template();
    source(&mut t)["generateVAP"] = json!(false);
    let p = plan_with(&Settings::default(), &t, &[constraint("s", Some("scoped"))]);
    assert!(matches!(p.bindings[0].outcome, BindingOutcome::Error(_)));
}

#[test]
fn test_42_plural_match_conditions_warns() {
    let mut t = template();
    source(&mut t)["matchConditions"] = json!([{"name": "x", "expression": "true"}]);
    let p = plan(&t);
    assert_eq!(p.decision, TemplateDecision::Generate);
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("matchConditions (plural) is ignored"));
    let names: Vec<_> = vap(&p)["spec"]["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !names.contains(&"x".to_string()),
        "the plural key is ignored, as in Gatekeeper"
    );
}

#[test]
fn reason_is_dropped_with_a_warning() {
    let mut t = template();
    source(&mut t)["validations"] = json!([{"expression": "true", "reason": "Forbidden"}]);
    let p = plan(&t);
    assert_eq!(
        vap(&p)["spec"]["validations"],
        json!([{"expression": "true"}])
    );
    assert!(p.warnings[0].contains("reason is not supported"));
}

#[test]
fn template_match_conditions_come_first() {
    let mut t = template();
    source(&mut t)["matchCondition"] = json!([{"name": "mine", "expression": "true"}]);
    let names: Vec<String> = vap(&plan(&t))["spec"]["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "mine",
            "gatekeeper_internal_match_excluded_namespaces",
            "gatekeeper_internal_match_namespaces",
            "gatekeeper_internal_match_name",
            "gatekeeper_internal_match_kinds"
        ]
    );
}

#[test]
fn bindings_keep_input_order_and_are_all_filled() {
    let cs = [
        constraint("z", None),
        constraint("a", Some("bogus")),
        constraint("m", Some("warn")),
    ];
    let p = plan_with(&flags(false, true), &template(), &cs);
    let names: Vec<_> = p.bindings.iter().map(|b| b.constraint.as_str()).collect();
    assert_eq!(names, ["z", "a", "m"]);
    assert_eq!(
        p.bindings[1].enforcement_action,
        EnforcementAction::Unrecognized
    );
    assert!(matches!(p.bindings[1].outcome, BindingOutcome::Error(_)));
    assert_eq!(
        p.bindings[2].outcome,
        BindingOutcome::None(NoBindingReason::TemplateSkipped)
    );
    assert!(
        p.bindings
            .iter()
            .all(|b| b.binding_name.starts_with("gatekeeper-k8sfoo-"))
    );
}

#[test]
fn malformed_constraints_from_the_host() {
    let mut c = constraint("c", None);
    c.malformed = vec!["spec.scopedEnforcementActions is not a list".into()];
    let BindingOutcome::Error(e) = outcome_of(&Settings::default(), c) else {
        panic!()
    };
    assert_eq!(
        e,
        "malformed constraint: spec.scopedEnforcementActions is not a list"
    );
}

#[test]
fn plan_errors_only_for_non_objects() {
    for bad in ["", "not json", "[]", "\"x\"", "null", "1", "{\"a\":"] {
        let e = vapgen_guest::plan_kind(&Settings::default(), bad, &[]).unwrap_err();
        assert!(
            e.message.contains("ConstraintTemplate"),
            "{bad}: {}",
            e.message
        );
    }
    // An empty object is a plan with a decision error, not a PlanError.
    let p = vapgen_guest::plan_kind(&Settings::default(), "{}", &[constraint("c", None)]).unwrap();
    assert!(matches!(p.decision, TemplateDecision::Error(_)));
    assert_eq!(p.bindings.len(), 1);
}

#[test]
fn scope_sync_with_webhook() {
    // Acceptance test 43, first half, through plan_kind.
    let mut t = template();
    t["spec"]["targets"][0]["operations"] = json!(["CREATE", "DELETE"]);
    let settings = Settings {
        scope_sync: Some(ScopeSync {
            webhook: Some(
                r#"{"rules":[{"apiGroups":["*"],"apiVersions":["*"],"resources":["*"],"operations":["CREATE","UPDATE"]}]}"#
                    .into(),
            ),
            ..ScopeSync::default()
        }),
        ..Settings::default()
    };
    let p = plan_with(&settings, &t, &[]);
    assert_eq!(
        vap(&p)["spec"]["matchConstraints"]["resourceRules"][0]["operations"],
        json!(["CREATE"])
    );
    assert!(p.warnings[0].starts_with("operations mismatch"));
    // A webhook that is not JSON is a transform error, not a crash.
    let broken = Settings {
        scope_sync: Some(ScopeSync {
            webhook: Some("{".into()),
            ..ScopeSync::default()
        }),
        ..Settings::default()
    };
    assert!(matches!(
        plan_with(&broken, &t, &[]).policy,
        PolicyOutcome::TransformError(_)
    ));
}

#[test]
fn long_kind_is_a_template_error() {
    // Gatekeeper cannot make the constraint CRD of a kind over 59 characters (its list kind
    // is no DNS-1035 label; issue #13, F1), so neither the CRD nor the VAP exists.
    let kind = format!("K{}", "x".repeat(243));
    let mut t = template();
    t["metadata"]["name"] = json!(kind.to_ascii_lowercase());
    t["spec"]["crd"]["spec"]["names"]["kind"] = json!(kind);
    let p = plan(&t);
    assert!(matches!(p.decision, TemplateDecision::Error(ref e) if e.contains("at most 59")));
    assert_eq!(p.policy, PolicyOutcome::None);
}
