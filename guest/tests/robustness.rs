//! Property tests: random and garbled inputs never panic, the plan is deterministic, and the
//! JSON module agrees with serde_json.

mod common;

use proptest::prelude::*;
use serde_json::{Value, json};
use vapgen_guest::model::*;

/// Arbitrary JSON values, including awkward strings and numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop_oneof![
            Just("K8sNativeValidation"),
            Just("generateVAP"),
            Just("*"),
            Just("vap.k8s.io"),
            Just("deny"),
            Just(""),
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn base_template() -> Value {
    common::yaml(&common::data("example-a/template.yaml"))
}

/// Paths into the template where garbage is spliced.
const PATHS: &[&[&str]] = &[
    &["metadata"],
    &["metadata", "name"],
    &["metadata", "uid"],
    &["spec"],
    &["spec", "crd", "spec", "names", "kind"],
    &["spec", "targets"],
    &["spec", "targets", "0"],
    &["spec", "targets", "0", "operations"],
    &["spec", "targets", "0", "code"],
    &["spec", "targets", "0", "code", "0"],
    &["spec", "targets", "0", "code", "0", "engine"],
    &["spec", "targets", "0", "code", "0", "source"],
    &["spec", "targets", "0", "code", "0", "source", "validations"],
    &[
        "spec",
        "targets",
        "0",
        "code",
        "0",
        "source",
        "validations",
        "0",
    ],
    &["spec", "targets", "0", "code", "0", "source", "variables"],
    &[
        "spec",
        "targets",
        "0",
        "code",
        "0",
        "source",
        "variables",
        "0",
        "name",
    ],
    &[
        "spec",
        "targets",
        "0",
        "code",
        "0",
        "source",
        "matchCondition",
    ],
    &[
        "spec",
        "targets",
        "0",
        "code",
        "0",
        "source",
        "matchConditions",
    ],
    &[
        "spec",
        "targets",
        "0",
        "code",
        "0",
        "source",
        "failurePolicy",
    ],
    &["spec", "targets", "0", "code", "0", "source", "generateVAP"],
    &["spec", "targets", "0", "code", "0", "source", "reason"],
];

fn splice(doc: &mut Value, path: &[&str], v: Value) {
    let mut cur = doc;
    for (i, key) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        let next = match cur {
            Value::Object(m) => {
                if last {
                    m.insert(key.to_string(), v);
                    return;
                }
                m.entry(key.to_string()).or_insert(Value::Null)
            }
            Value::Array(a) => {
                let Ok(idx) = key.parse::<usize>() else {
                    return;
                };
                let Some(slot) = a.get_mut(idx) else { return };
                if last {
                    *slot = v;
                    return;
                }
                slot
            }
            _ => return,
        };
        cur = next;
    }
}

fn scoped_action() -> impl Strategy<Value = ScopedAction> {
    (
        prop_oneof![
            Just("deny".to_string()),
            Just("warn".to_string()),
            Just("dryrun".to_string()),
            any::<String>()
        ],
        prop::collection::vec(
            prop_oneof![
                Just("vap.k8s.io".to_string()),
                Just("*".to_string()),
                Just("validation.gatekeeper.sh".to_string()),
                any::<String>()
            ],
            0..3,
        ),
    )
        .prop_map(|(action, enforcement_points)| ScopedAction {
            action,
            enforcement_points,
        })
}

fn constraint() -> impl Strategy<Value = Constraint> {
    (
        prop_oneof![Just("c".to_string()), any::<String>(), "[a-z]{250,300}"],
        prop::option::of(prop_oneof![
            Just("deny".to_string()),
            Just("warn".to_string()),
            Just("dryrun".to_string()),
            Just("scoped".to_string()),
            any::<String>()
        ]),
        prop::option::of(prop::collection::vec(scoped_action(), 0..4)),
        prop::option::of(prop_oneof![Just("{}".to_string()), any::<String>()]),
        prop::option::of(json_value().prop_map(|v| v.to_string())),
        prop::collection::vec(any::<String>(), 0..2),
    )
        .prop_map(|(name, action, scoped, ls, ns, malformed)| Constraint {
            name,
            uid: "u".into(),
            generation: 1,
            enforcement_action: action,
            scoped_enforcement_actions: scoped,
            label_selector: ls,
            namespace_selector: ns,
            malformed,
        })
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of((
            prop::option::of(prop_oneof![
                json_value().prop_map(|v| v.to_string()),
                any::<String>(),
                Just(r#"{"rules":[{"operations":["*"]}],"matchConditions":[{"name":"x","expression":"true"}]}"#.to_string()),
            ]),
            prop::collection::vec(any::<String>(), 0..3),
            prop::collection::vec(any::<String>(), 0..3),
        )),
    )
        .prop_map(|(t, b, ignore, sync)| Settings {
            default_create_vap_for_templates: t,
            default_create_vap_binding_for_constraints: b,
            default_failure_policy: if ignore { FailurePolicy::Ignore } else { FailurePolicy::Fail },
            scope_sync: sync.map(|(webhook, excluded_namespaces, exempt_namespaces)| ScopeSync {
                webhook,
                excluded_namespaces,
                exempt_namespaces,
            }),
        })
}

/// The plan's invariants that hold for every input.
fn check_plan(settings: &Settings, template: &str, constraints: &[Constraint]) {
    let first = vapgen_guest::plan_kind(settings, template, constraints);
    let second = vapgen_guest::plan_kind(settings, template, constraints);
    assert_eq!(first, second, "deterministic");
    let Ok(plan) = first else { return };
    assert_eq!(plan.bindings.len(), constraints.len());
    if let PolicyOutcome::Desired(j) = &plan.policy {
        assert_eq!(plan.decision, TemplateDecision::Generate);
        let v: Value = serde_json::from_str(j).expect("the VAP is valid JSON");
        assert_eq!(v["kind"], "ValidatingAdmissionPolicy");
    }
    for (b, c) in plan.bindings.iter().zip(constraints) {
        assert_eq!(b.constraint, c.name);
        assert!(b.binding_name.len() <= 253);
        if let BindingOutcome::Bind(s) = &b.outcome {
            assert!(matches!(plan.policy, PolicyOutcome::Desired(_)));
            assert!(b.intends_binding);
            assert!(!s.validation_actions.is_empty());
            let has = |a| s.validation_actions.contains(&a);
            assert!(!(has(ValidationAction::Deny) && has(ValidationAction::Warn)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn garbled_templates_never_panic(
        settings in settings(),
        path in 0..PATHS.len(),
        garbage in json_value(),
        constraints in prop::collection::vec(constraint(), 0..4),
    ) {
        let mut t = base_template();
        splice(&mut t, PATHS[path], garbage);
        check_plan(&settings, &t.to_string(), &constraints);
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), settings in settings()) {
        check_plan(&settings, &text, &[]);
    }

    #[test]
    fn truncated_templates_never_panic(cut in 0usize..2000) {
        let t = base_template().to_string();
        let end = (0..=cut.min(t.len())).rev().find(|&i| t.is_char_boundary(i)).unwrap_or(0);
        check_plan(&Settings::default(), &t[..end], &[]);
    }

    #[test]
    fn random_constraints_on_a_valid_template(
        settings in settings(),
        constraints in prop::collection::vec(constraint(), 0..6),
    ) {
        check_plan(&settings, &base_template().to_string(), &constraints);
    }

    #[test]
    fn json_round_trips_like_serde_json(v in json_value()) {
        let text = serde_json::to_string(&v).unwrap();
        let ours = vapgen_guest::json::parse(&text).expect("serde_json output parses");
        prop_assert_eq!(ours.to_json(), text);
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let ours = vapgen_guest::json::parse(&pretty).expect("pretty output parses");
        prop_assert_eq!(ours.to_json(), serde_json::to_string(&v).unwrap());
    }
}
