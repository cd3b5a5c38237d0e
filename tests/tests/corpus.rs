//! The gatekeeper-library conformance corpus, end to end on the real API server, through
//! `vapgen verify`'s library ([`vapgen::verify`]): for each of the 16 CEL templates' suites,
//! vapgen plans the VAP and the bindings, applies them to a temporary scope, and every case
//! that a real API server can run must be admitted or denied by the API server itself exactly
//! as the suite says.
//!
//! Cases that cannot run are skipped with their reason (see [`vapgen::verify`]): ephemeral
//! containers (`spec.ephemeralContainers` is forbidden on create, and the real path, the
//! `pods/ephemeralcontainers` subresource, is not matched by the generated rules), and
//! objects the API server rejects on its own, before any policy (a baseline dry-run create
//! with no binding fails). `update.yaml` AdmissionReviews are reproduced as updates of an
//! object created before the binding exists.
//!
//! The counts are pinned (the corpus is pinned): 109 cases pass, 22 are skipped, none fails.

use vapgen::runtime::{Runtime, RuntimeConfig};
use vapgen::verify::{self, Verdict, VerifyConfig};

/// Cases of the pinned corpus that must pass.
const PASSED: usize = 109;
/// Cases that a real API server cannot run (each with its reason in the table).
const SKIPPED: usize = 22;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatekeeper_library_suites_pass_end_to_end() {
    let Some(library) = vapgen_tests::conformance_library() else {
        return;
    };
    let client = vapgen_tests::client().await;
    let wasm = Runtime::new(RuntimeConfig::default()).expect("wasm runtime");
    let decider = wasm.load_bundled().expect("bundled module");
    let paths = [library.join("general"), library.join("pod-security-policy")];
    let report = verify::verify(&client, &decider, &paths, &VerifyConfig::default()).await;
    println!("gatekeeper-library corpus:\n{}", report.table());
    assert_eq!(report.suites, 16, "16 CEL templates' suites in the corpus");
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    let failed: Vec<String> = report
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .map(|r| format!("{}/{}/{}: {}", r.suite, r.test, r.case, r.reason))
        .collect();
    assert!(
        failed.is_empty(),
        "{} corpus case(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert_eq!(report.passed(), PASSED, "cases that pass");
    assert_eq!(report.skipped(), SKIPPED, "cases skipped");
    assert!(
        report
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Skip)
            .all(|r| !r.reason.is_empty()),
        "every skip has a reason"
    );
}
