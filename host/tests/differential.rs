//! Differential test: the bundled decision logic gives identical plans natively and through
//! the compiled wasm component in wasmtime — on the gatekeeper-library corpus and on a
//! generated corpus of random (often malformed) templates and constraints.

use serde_json::{Value, json};
use vapgen::model::{Constraint, FailurePolicy, ScopeSync, ScopedAction, Settings};
use vapgen::runtime::{CallError, Decide, NativeDecider, Runtime, RuntimeConfig};
use vapgen::{manifest, snapshot};

/// A small deterministic PRNG (xorshift64*), so a failing case is reproducible by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn random_settings(r: &mut Rng) -> Settings {
    let scope_sync = r.chance(30).then(|| ScopeSync {
        webhook: r.chance(70).then(|| {
            json!({
                "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*", "pods/exec"],
                           "operations": r.pick(&[json!(["CREATE", "UPDATE"]), json!(["*"]), json!(["DELETE"])]), "scope": "*"}],
                "namespaceSelector": {"matchExpressions": [{"key": "admission.gatekeeper.sh/ignore", "operator": "DoesNotExist"}]},
                "matchPolicy": "Exact",
                "matchConditions": [{"name": "skip-leases", "expression": "request.resource.resource != 'leases'"}]
            })
            .to_string()
        }),
        excluded_namespaces: if r.chance(50) { vec!["kube-system".into(), "monitoring-*".into()] } else { vec![] },
        exempt_namespaces: if r.chance(50) { vec!["gatekeeper-system".into(), "team-*".into(), "*-x".into()] } else { vec![] },
    });
    Settings {
        default_create_vap_for_templates: r.chance(70),
        default_create_vap_binding_for_constraints: r.chance(70),
        default_failure_policy: if r.chance(50) {
            FailurePolicy::Fail
        } else {
            FailurePolicy::Ignore
        },
        scope_sync,
    }
}

fn random_template(r: &mut Rng, i: u64) -> String {
    let kind = format!("K8sGen{i}");
    let name = if r.chance(90) {
        kind.to_ascii_lowercase()
    } else {
        format!("other{i}")
    };
    let mut source = json!({
        "validations": (0..r.below(3)).map(|j| json!({"expression": format!("size(variables.params) > {j}"), "message": "m"})).collect::<Vec<_>>(),
    });
    let s = source.as_object_mut().expect("object");
    match r.below(5) {
        0 => {}
        1 => drop(s.insert("generateVAP".into(), json!(true))),
        2 => drop(s.insert("generateVAP".into(), json!(false))),
        3 => drop(s.insert("generateVAP".into(), json!("yes"))),
        _ => drop(s.insert("generateVAP".into(), Value::Null)),
    }
    if r.chance(30) {
        s.insert(
            "failurePolicy".into(),
            r.pick(&[json!("Fail"), json!("Ignore"), json!("Sometimes"), json!(3)])
                .clone(),
        );
    }
    if r.chance(40) {
        let name = r
            .pick(&["ok", "params", "anyObject", "gatekeeper_internal_x", ""])
            .to_string();
        s.insert(
            "variables".into(),
            json!([{"name": name, "expression": "1"}]),
        );
    }
    if r.chance(20) {
        s.insert(
            "matchCondition".into(),
            json!([{"name": r.pick(&["mine", "gatekeeper_internal_y"]), "expression": "true"}]),
        );
    }
    if r.chance(10) {
        s.insert(
            "matchConditions".into(),
            json!([{"name": "plural", "expression": "true"}]),
        );
    }
    if r.chance(5) {
        s.insert("unknownKey".into(), json!(1));
    }
    let code = match r.below(6) {
        0 => json!([{"engine": "Rego", "source": {"rego": "package x"}}]),
        1 => json!([{"engine": "K8sNativeValidation", "source": "not an object"}]),
        2 => {
            json!([{"engine": "Rego", "source": {}}, {"engine": "K8sNativeValidation", "source": source}])
        }
        _ => json!([{"engine": "K8sNativeValidation", "source": source}]),
    };
    let target = json!({"target": "admission.k8s.gatekeeper.sh", "code": code, "operations": r.pick(&[Value::Null, json!(["CREATE"]), json!(["*"]), json!(["DELETE", "UPDATE"])])});
    let targets = match r.below(10) {
        0 => json!([]),
        1 => json!([target.clone(), target]),
        _ => json!([target]),
    };
    let mut t = json!({
        "apiVersion": r.pick(&["templates.gatekeeper.sh/v1", "templates.gatekeeper.sh/v1beta1"]),
        "kind": "ConstraintTemplate",
        "metadata": {"name": name, "uid": format!("uid-{i}"), "generation": r.below(5) + 1},
        "spec": {"crd": {"spec": {"names": {"kind": kind}}}, "targets": targets}
    });
    if r.chance(3) {
        t["spec"]["crd"]["spec"]["names"]["kind"] = json!("");
    }
    if r.chance(2) {
        return "{\"truncated\": ".to_string() + &t.to_string()[..20];
    }
    t.to_string()
}

fn random_constraint(r: &mut Rng, i: u64) -> Constraint {
    let points = |r: &mut Rng| -> Vec<String> {
        (0..r.below(3))
            .map(|_| {
                r.pick(&[
                    "vap.k8s.io",
                    "*",
                    "validation.gatekeeper.sh",
                    "audit.gatekeeper.sh",
                    "bogus",
                ])
                .to_string()
            })
            .collect()
    };
    let scoped = r.chance(40).then(|| {
        (0..r.below(4))
            .map(|_| ScopedAction {
                action: r.pick(&["deny", "warn", "dryrun", "nope", ""]).to_string(),
                enforcement_points: points(r),
            })
            .collect()
    });
    let name_len = if r.chance(5) {
        260
    } else {
        1 + r.below(20) as usize
    };
    Constraint {
        name: format!("c{i}-{}", "n".repeat(name_len)),
        uid: format!("cuid-{i}"),
        generation: r.below(10),
        enforcement_action: r.chance(70).then(|| {
            r.pick(&["deny", "warn", "dryrun", "scoped", "", "Deny", "bogus"])
                .to_string()
        }),
        scoped_enforcement_actions: scoped,
        label_selector: r
            .chance(30)
            .then(|| r#"{"matchLabels":{"team":"a"}}"#.to_string()),
        namespace_selector: r.chance(30).then(|| {
            r#"{"matchExpressions":[{"key":"env","operator":"In","values":["prod"]}]}"#.to_string()
        }),
        malformed: if r.chance(5) {
            vec!["spec.match must be an object".into()]
        } else {
            vec![]
        },
    }
}

fn wasm() -> vapgen::Decider {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
    .load_bundled()
    .expect("bundled module")
}

fn same(
    a: &Result<vapgen::model::KindPlan, CallError>,
    b: &Result<vapgen::model::KindPlan, CallError>,
) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(CallError::Rejected(x)), Err(CallError::Rejected(y))) => x == y,
        _ => false,
    }
}

#[test]
fn random_corpus_is_identical_natively_and_in_wasm() {
    let wasm = wasm();
    let seed: u64 = std::env::var("VAPGEN_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut r = Rng(seed);
    let cases = 1_200;
    let mut constraints_seen = 0;
    for i in 0..cases {
        let settings = random_settings(&mut r);
        let template = random_template(&mut r, i);
        let n = r.below(6);
        let constraints: Vec<Constraint> = (0..n)
            .map(|j| random_constraint(&mut r, i * 10 + j))
            .collect();
        constraints_seen += constraints.len();
        let native = NativeDecider.plan_kind(&settings, &template, &constraints);
        let sandboxed = wasm.plan_kind(&settings, &template, &constraints);
        assert!(
            same(&native, &sandboxed),
            "case {i} (seed {seed:#x}) differs:\nnative: {native:?}\nwasm:   {sandboxed:?}\ntemplate: {template}"
        );
    }
    assert!(
        constraints_seen > 2_000,
        "the corpus exercises bindings ({constraints_seen})"
    );
}

#[test]
fn gatekeeper_library_is_identical_natively_and_in_wasm() {
    let Some(root) = vapgen_module_build::testdata::conformance_library() else {
        return;
    };
    let (objects, errors) = manifest::read_paths(std::slice::from_ref(&root));
    assert!(errors.is_empty(), "{errors:?}");
    let templates: Vec<&Value> = objects
        .iter()
        .map(|o| &o.object)
        .filter(|o| snapshot::is_template(o))
        .collect();
    assert_eq!(
        templates.len(),
        16,
        "the library has 16 CEL templates under {}",
        root.display()
    );
    let wasm = wasm();
    for t in templates {
        let kind = snapshot::template_kind(t).expect("kind");
        let constraints: Vec<Constraint> = objects
            .iter()
            .map(|o| &o.object)
            .filter(|o| snapshot::is_constraint(o) && snapshot::kind_of(o) == kind)
            .map(snapshot::extract_constraint)
            .collect();
        assert!(!constraints.is_empty(), "{kind} has sample constraints");
        let settings = Settings::default();
        let json = t.to_string();
        let native = NativeDecider.plan_kind(&settings, &json, &constraints);
        let sandboxed = wasm.plan_kind(&settings, &json, &constraints);
        assert!(same(&native, &sandboxed), "{kind}: native and wasm differ");
        let plan = native.expect("plans");
        assert_eq!(
            plan.decision,
            vapgen::model::TemplateDecision::Generate,
            "{kind}"
        );
    }
}
