//! The alternative decision module `modules/system-namespaces-exempt`, end to end: build it
//! from source for wasm32, componentize it, load it through the public API
//! (`Runtime::load_bytes`), and run its decision suite. Also shows that it differs from the
//! bundled module exactly where it should, and nowhere else.

use vapgen_module_build as module_build;
#[path = "../examples/support/vectors.rs"]
#[allow(dead_code)]
mod vectors;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vapgen::model::{BindingOutcome, KindPlan};
use vapgen::runtime::ModuleSource;
use vapgen::{Decider, LoadError, Runtime, RuntimeConfig, suite};

const PACKAGE: &str = "vapgen-module-system-namespaces-exempt";
const LIB: &str = "system_namespaces_exempt";

/// The selector the module adds, written out independently of the module's source.
const EXEMPTION: &str = r#"{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","kube-public","kube-node-lease"]}]}"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The component, built once per test binary.
fn component() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let ws = workspace();
        let core =
            module_build::build_core(&ws, &module_build::default_target_dir(&ws), PACKAGE, LIB)
                .expect("build the module");
        module_build::componentize(&core).expect("componentize")
    })
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn alt(rt: &Runtime) -> Decider {
    rt.load_bytes(component(), None, ModuleSource::Bytes)
        .expect("load the alternative module")
}

fn suite_path() -> PathBuf {
    workspace().join("modules/system-namespaces-exempt/suite.yaml")
}

#[test]
fn loads_with_no_imports_and_describes_itself() {
    let rt = runtime();
    let d = alt(&rt);
    assert_eq!(d.info().name, "system-namespaces-exempt");
    assert_eq!(d.info().interface_version, "0.1.0");
    assert_eq!(d.size(), component().len());
    assert_ne!(d.sha256(), rt.load_bundled().expect("bundled").sha256());
}

#[test]
fn its_own_suite_passes() {
    let rt = runtime();
    let result = suite::run_file(&alt(&rt), &suite_path());
    let outcome = suite::Outcome {
        suites: vec![result],
    };
    let report = outcome.render(true);
    assert_eq!(outcome.errors(), 0, "{report}");
    assert_eq!(outcome.failed(), 0, "{report}");
    assert!(outcome.passed() >= 7, "{report}");
}

#[test]
fn the_bundled_module_fails_exactly_the_differs_cases() {
    let rt = runtime();
    let result = suite::run_file(&rt.load_bundled().expect("bundled"), &suite_path());
    let cases = result.cases.expect("the suite runs");
    let differs = cases
        .iter()
        .filter(|c| c.name.starts_with("differs:"))
        .count();
    assert!(differs >= 3);
    for c in &cases {
        let failed = !c.failures.is_empty();
        assert_eq!(
            failed,
            c.name.starts_with("differs:"),
            "case {:?}: {:?}",
            c.name,
            c.failures
        );
    }
}

/// The bundled plan with the module's documented change applied by hand.
fn exempted(mut plan: KindPlan) -> KindPlan {
    for b in &mut plan.bindings {
        if let BindingOutcome::Bind(s) = &mut b.outcome
            && s.namespace_selector.is_none()
        {
            s.namespace_selector = Some(EXEMPTION.to_string());
        }
    }
    plan
}

#[test]
fn on_every_bundled_decision_vector_it_is_the_bundled_plan_plus_the_exemption() {
    let rt = runtime();
    let (alt, bundled) = (alt(&rt), rt.load_bundled().expect("bundled"));
    let mut inputs = vectors::load_inputs(&[workspace().join("tests/decisions")]).expect("suites");
    inputs.extend(vectors::edge_inputs());
    assert!(inputs.len() > 40, "only {} inputs", inputs.len());
    let mut changed = 0;
    for i in &inputs {
        let ours = alt.plan_kind(&i.settings, &i.template, &i.constraints);
        let theirs = bundled.plan_kind(&i.settings, &i.template, &i.constraints);
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => {
                if ours != theirs {
                    changed += 1;
                }
                assert_eq!(ours, exempted(theirs), "{} / {}", i.suite, i.case);
            }
            (ours, theirs) => assert_eq!(
                ours.map_err(|e| e.to_string()),
                theirs.map_err(|e| e.to_string()),
                "{} / {}",
                i.suite,
                i.case
            ),
        }
    }
    assert!(changed > 10, "the module changed only {changed} plans");
}

#[test]
fn can_be_pinned_by_sha256() {
    let rt = runtime();
    let sha = alt(&rt).sha256().to_string();
    rt.load_bytes(component(), Some(&sha), ModuleSource::Bytes)
        .expect("the right pin loads");
    let bundled_sha = rt.load_bundled().expect("bundled").sha256().to_string();
    match rt.load_bytes(component(), Some(&bundled_sha), ModuleSource::Bytes) {
        Err(LoadError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, bundled_sha);
            assert_eq!(actual, sha);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
}
