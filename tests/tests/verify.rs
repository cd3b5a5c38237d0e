//! `vapgen verify`, the real binary, against the test API server: one gatekeeper-library
//! suite passes (exit 0, a table row per case), a suite with a deliberately wrong expectation
//! fails (exit 1, the failing case named), and neither leaves a policy, binding, CRD or
//! constraint of its run in the cluster.

use std::path::Path;
use std::process::Command;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn vapgen_verify(args: &[&str]) -> Run {
    let kubeconfig = vapgen_tests::kubeconfig_path();
    let out = Command::new(env!("CARGO_BIN_EXE_vapgen-under-test"))
        .arg("verify")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .output()
        .expect("run vapgen verify");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The run id from the summary line `run <id>: ...`.
fn run_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split_once(':').map(|(id, _)| id))
        .unwrap_or_else(|| panic!("no `run <id>:` summary line in:\n{stdout}"))
        .to_string()
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Names of the VAPs, bindings and CRDs that mention the run id (none may be left).
async fn leftovers(id: &str) -> Vec<String> {
    let client = vapgen_tests::client().await;
    let mut left = Vec::new();
    for r in [
        ar(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
        ),
        ar(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
        ar(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &r);
        for o in api.list(&ListParams::default()).await.expect("list").items {
            let name = o.metadata.name.unwrap_or_default();
            // A CRD being deleted (its finalizer) still counts: it must at least be going.
            if name.contains(id) && o.metadata.deletion_timestamp.is_none() {
                left.push(format!("{} {name}", r.kind));
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_library_suite_and_cleans_up() {
    let Some(library) = vapgen_tests::conformance_library() else {
        return;
    };
    let suite = library.join("general/requiredlabels/suite.yaml");
    let run = vapgen_verify(&[suite.to_str().unwrap()]);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let header = run.stdout.lines().next().unwrap_or("");
    for column in [
        "SUITE", "TEST", "CASE", "EXPECTED", "GOT", "RESULT", "REASON",
    ] {
        assert!(header.contains(column), "header {header:?} lacks {column}");
    }
    // The suite's 5 cases, each a row that passed with the API server's own answer.
    for (test, case, got) in [
        ("must-have-owner", "example-allowed", "admitted"),
        ("must-have-owner", "example-disallowed", "denied"),
        (
            "must-have-owner",
            "example-disallowed-label-value",
            "denied",
        ),
        ("must-have-key", "label-present", "admitted"),
        ("must-have-key", "label-missing", "denied"),
    ] {
        let row = run
            .stdout
            .lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1) == Some(&test) && cols.get(2) == Some(&case)
            })
            .unwrap_or_else(|| panic!("no row for {test}/{case}:\n{}", run.stdout));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert!(
            cols.contains(&got) && cols.contains(&"pass"),
            "{test}/{case}: {row}"
        );
    }
    assert!(
        run.stdout
            .contains(": 1 suite(s): 5 passed, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    let id = run_id(&run.stdout);
    assert_eq!(leftovers(&id).await, Vec::<String>::new(), "objects left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_and_names_a_wrong_expectation() {
    let Some(library) = vapgen_tests::conformance_library() else {
        return;
    };
    let dir = std::env::temp_dir().join(vapgen_tests::unique_name("vapgen-verify-wrong"));
    std::fs::create_dir_all(&dir).unwrap();
    let lib = library.join("general/requiredlabels");
    let p = |f: &str| lib.join(f).display().to_string();
    // The allowed namespace expected to violate: the API server admits it, so the case fails.
    let suite = format!(
        r#"kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
metadata:
  name: wrong-on-purpose
tests:
- name: must-have-owner
  template: {template}
  constraint: {constraint}
  cases:
  - name: deliberately-wrong
    object: {allowed}
    assertions:
    - violations: yes
  - name: right
    object: {disallowed}
    assertions:
    - violations: yes
"#,
        template = p("template.yaml"),
        constraint = p("samples/all-must-have-owner/constraint.yaml"),
        allowed = p("samples/all-must-have-owner/example_allowed.yaml"),
        disallowed = p("samples/all-must-have-owner/example_disallowed.yaml"),
    );
    let path = dir.join("suite.yaml");
    std::fs::write(&path, suite).unwrap();
    // 20 s: right after the policy is created the API server may answer "failed to configure
    // policy" for seconds (README "Safe render"); the wrong case waits the whole timeout.
    let run = vapgen_verify(&["--deny-timeout", "20", path.to_str().unwrap()]);
    assert_eq!(
        run.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let row = |case: &str| {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(case))
            .unwrap_or_else(|| panic!("no row for {case}:\n{}", run.stdout))
            .to_string()
    };
    let wrong = row("deliberately-wrong");
    assert!(
        wrong.contains("FAIL") && wrong.contains("admitted") && wrong.contains("expected a denial"),
        "{wrong}"
    );
    assert!(row("right").contains("pass"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(": 1 suite(s): 1 passed, 1 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    let id = run_id(&run.stdout);
    assert_eq!(leftovers(&id).await, Vec::<String>::new(), "objects left");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!Path::new(&dir).exists());
}
