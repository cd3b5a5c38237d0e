//! `vapgen plan … | kubectl apply -f -` on the real API server (README "Safe render").
//!
//! By default `plan` emits each template's constraint CRD before its policy, so the output
//! can be applied to a cluster without Gatekeeper: unrelated requests stay admitted, and a
//! violating object is denied once its constraint is applied. With `--crds=false` the same
//! output (a `failurePolicy: Fail` policy whose `paramKind` does not exist) makes the API
//! server deny every request the *policy* matches, whatever its bindings select — what `plan`
//! warns about on stderr, and what locked clusters before the CRDs were emitted.
//!
//! Each test uses a kind of its own and binds only a fresh namespace (the second test also
//! confines its policy to it), so the tests run beside the other cluster tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta};
use vapgen_tests::{
    ENFORCEMENT_TIMEOUT, client, dry_run_create, expect_allowed, fresh_namespace, kubeconfig_path,
    kubectl, unique_name, wait_denied,
};

/// The tests of this file run one at a time: right after a policy is applied, the API
/// server may answer "failed to configure policy" for every request it matches (README
/// "Safe render"), which would deny the writes of a test running beside it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the API server answers while a new policy's paramKind is not resolved yet.
const NOT_CONFIGURED: &str = "failed to configure policy";

/// A fresh directory for the input files (under the system temp dir).
fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name("vapgen-plan-apply"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A kind of its own (`PlanApply<hex>`) and the template's name (its lowercase).
fn unique_kind() -> (String, String) {
    let suffix: String = unique_name("x")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .skip(1)
        .collect();
    let kind = format!("PlanApply{suffix}");
    let name = kind.to_ascii_lowercase();
    (kind, name)
}

/// A template that denies ConfigMaps with a `forbidden` data key, and its constraint bound
/// to namespace `ns` only.
fn write_inputs(dir: &Path, kind: &str, name: &str, ns: &str) -> (String, String) {
    let template = format!(
        r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: {name}
spec:
  crd:
    spec:
      names:
        kind: {kind}
      validation:
        openAPIV3Schema:
          type: object
          properties:
            key:
              type: string
  targets:
  - target: admission.k8s.gatekeeper.sh
    code:
    - engine: K8sNativeValidation
      source:
        validations:
        - expression: '!has(variables.anyObject.data) || !(variables.params.key in variables.anyObject.data)'
          message: 'forbidden data key'
"#
    );
    let constraint = format!(
        r#"apiVersion: constraints.gatekeeper.sh/v1beta1
kind: {kind}
metadata:
  name: no-forbidden
spec:
  match:
    kinds:
    - apiGroups: [""]
      kinds: ["ConfigMap"]
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: {ns}
  parameters:
    key: forbidden
"#
    );
    let t = dir.join("template.yaml");
    let c = dir.join("constraint.yaml");
    std::fs::write(&t, template).unwrap();
    std::fs::write(&c, &constraint).unwrap();
    (t.display().to_string(), constraint)
}

fn vapgen(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vapgen-under-test"))
        .args(args)
        .output()
        .expect("running vapgen");
    assert!(
        out.status.success(),
        "vapgen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `kubectl <args> -f -` with `input` on stdin against the test API server.
fn kubectl_stdin(args: &[&str], input: &[u8]) -> Output {
    let kubectl = kubectl().expect("VAPGEN_KUBECTL is not set (tests/control-plane/up exports it)");
    let start = Instant::now();
    loop {
        let out = kubectl_once(&kubectl, args, input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success()
            || !stderr.contains(NOT_CONFIGURED)
            || start.elapsed() > ENFORCEMENT_TIMEOUT
        {
            assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
            return out;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn kubectl_once(kubectl: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `kubectl apply -f -` of a constraint, retried while its CRD is not served yet.
fn apply_when_served(input: &str) {
    let kubectl = kubectl().expect("VAPGEN_KUBECTL is not set (tests/control-plane/up exports it)");
    let start = Instant::now();
    loop {
        let mut child = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            start.elapsed() < ENFORCEMENT_TIMEOUT,
            "applying the constraint failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Deletes the objects of a `plan` output when dropped, also when the test panics: a
/// policy left behind whose paramKind is missing would deny the other tests' writes.
///
/// Bindings and policies go first, newest first, and CRDs stay: the API server's admission
/// plugin drops a deleted policy a moment after it is deleted, and if the policy's paramKind
/// CRD were gone before that, every request the policy matches (ConfigMaps in any namespace
/// here) would be denied ("failed to configure policy") — the next test binary's writes too.
/// A CRD of a unique kind left on a throwaway control plane denies nothing.
struct Cleanup(Vec<u8>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(kubectl) = kubectl() else { return };
        let text = String::from_utf8_lossy(&self.0);
        let (docs, _) = vapgen::manifest::parse_documents(&text, "cleanup");
        let items: Vec<serde_json::Value> = docs
            .into_iter()
            .rev()
            .map(|d| d.object)
            .filter(|o| o["kind"] != "CustomResourceDefinition")
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let Ok(mut child) = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(["delete", "--ignore-not-found", "--wait=false", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
        else {
            return;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(list.to_string().as_bytes());
        }
        let _ = child.wait();
        // The plugin still holds a deleted policy for a moment; a policy whose paramKind is
        // missing (the --crds=false test) denies every cluster-scoped write meanwhile, its
        // namespaceSelector notwithstanding — in CI the next test binary's first CRD write.
        // Wait until a dry-run ClusterRole create is no longer refused that way.
        let start = Instant::now();
        while start.elapsed() < ENFORCEMENT_TIMEOUT {
            let probe = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig_path())
                .args(["create", "clusterrole", "vapgen-cleanup-probe"])
                .args(["--verb=get", "--resource=configmaps", "--dry-run=server"])
                .output();
            match probe {
                Ok(o) if !String::from_utf8_lossy(&o.stderr).contains(NOT_CONFIGURED) => break,
                Err(_) => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

fn config_map(name: &str, key: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some([(key.to_owned(), "x".to_owned())].into()),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn plan_output_applies_without_denying_unrelated_requests() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    let ns = fresh_namespace(&client, "plan-apply").await;
    let dir = scratch_dir();
    let (kind, name) = unique_kind();
    let (template, constraint) = write_inputs(&dir, &kind, &name, &ns);
    let constraint_file = dir.join("constraint.yaml").display().to_string();

    let out = vapgen(&["plan", "-f", &format!("{template},{constraint_file}")]);
    let objects = String::from_utf8(out.stdout).unwrap();
    let first_kind = objects
        .lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or("");
    assert_eq!(first_kind, "CustomResourceDefinition", "{objects}");
    let _cleanup = Cleanup(objects.clone().into_bytes());
    kubectl_stdin(&["apply"], objects.as_bytes());

    let policy = format!("gatekeeper-{name}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    // Constraint applied: the violating object is denied (so the policy is in force) ...
    apply_when_served(&constraint);
    let status = wait_denied(&cms, &config_map("bad", "forbidden"), &policy).await;
    assert!(status.message.contains("forbidden data key"), "{status:?}");
    // ... and an unrelated ConfigMap is admitted by the same policy and binding.
    expect_allowed(&cms, &config_map("good", "fine")).await;

    // The constraint deleted: its binding's paramRef finds nothing and allows.
    kubectl_stdin(&["delete", "--wait=false"], constraint.as_bytes());
    let start = Instant::now();
    while dry_run_create(&cms, &config_map("bad", "forbidden"))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < ENFORCEMENT_TIMEOUT,
            "still denied after the constraint was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect_allowed(&cms, &config_map("good", "fine")).await;
}

#[tokio::test]
async fn without_the_crds_a_fail_policy_denies_unrelated_requests() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    let ns = fresh_namespace(&client, "plan-nocrd").await;
    let dir = scratch_dir();
    let (kind, name) = unique_kind();
    let (template, _) = write_inputs(&dir, &kind, &name, &ns);
    let constraint_file = dir.join("constraint.yaml").display().to_string();

    let out = vapgen(&[
        "plan",
        "--crds=false",
        "-o",
        "json",
        "-f",
        &template,
        "-f",
        &constraint_file,
    ]);
    let mut list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let items = list["items"].as_array_mut().unwrap();
    assert!(
        items
            .iter()
            .all(|o| o["kind"] != "CustomResourceDefinition"),
        "{items:?}"
    );
    assert!(
        stderr.contains(&format!("paramKind {kind}")),
        "no warning on stderr: {stderr}"
    );
    // The API server fails every request the *policy* matches when its paramKind is missing,
    // whatever the bindings select (the error is the policy's, found before any binding is
    // matched): confine the policy to this test's namespace, or it would deny the writes of
    // every other test on this control plane.
    let policy = items
        .iter_mut()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .expect("a policy");
    policy["spec"]["matchConstraints"]["namespaceSelector"] =
        serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
    let objects = serde_json::to_string(&list).unwrap();
    let _cleanup = Cleanup(objects.clone().into_bytes());
    kubectl_stdin(&["apply"], objects.as_bytes());

    // An ordinary ConfigMap, with no constraint anywhere: denied, because the policy's
    // paramKind does not exist and its failurePolicy is Fail.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let status = wait_denied(
        &cms,
        &config_map("good", "fine"),
        &format!("gatekeeper-{name}"),
    )
    .await;
    assert!(status.message.contains("paramKind"), "{status:?}");
}

/// `plan --validate=server`: a type error that the offline checks cannot see (int + string)
/// is refused by the API server's own CEL compiler in a dry-run, and nothing is stored.
#[tokio::test]
async fn validate_server_finds_what_only_the_api_server_compiler_sees() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    let dir = scratch_dir();
    let (kind, name) = unique_kind();
    let (template, _) = write_inputs(&dir, &kind, &name, "unused");
    let kubeconfig = kubeconfig_path().display().to_string();
    let plan = |template: &str| {
        Command::new(env!("CARGO_BIN_EXE_vapgen-under-test"))
            .args([
                "plan",
                "--validate=server",
                "--kubeconfig",
                &kubeconfig,
                "-f",
                template,
            ])
            .output()
            .expect("running vapgen")
    };
    let ok = plan(&template);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(&template).unwrap().replace(
        "'!has(variables.anyObject.data) || !(variables.params.key in variables.anyObject.data)'",
        "'size(variables.anyObject.data) + \"a\" == 2'",
    );
    assert!(text.contains("+ \"a\" == 2"));
    std::fs::write(&bad, text).unwrap();
    let out = plan(&bad.display().to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ValidatingAdmissionPolicy/gatekeeper-{name}: refused by the API server"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("no matching overload"), "{stderr}");

    // Dry runs only: neither the CRD nor the policy exists.
    let vaps: Api<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy> =
        Api::all(client.clone());
    assert!(
        vaps.get_opt(&format!("gatekeeper-{name}"))
            .await
            .unwrap()
            .is_none()
    );
}

/// `vapgen diff` on the real API server: a creation before the objects exist, no difference
/// once `plan`'s output is applied, the changed line when a binding is edited by hand — from
/// files and from the cluster's own template and constraint (`--from-cluster -l`).
#[tokio::test]
async fn diff_shows_what_applying_would_change() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    let ns = fresh_namespace(&client, "plan-diff").await;
    vapgen_tests::install_template_crd(&client, &ns).await;
    let dir = scratch_dir();
    let (kind, name) = unique_kind();
    let (template, constraint) = write_inputs(&dir, &kind, &name, &ns);
    let files = format!("{template},{}", dir.join("constraint.yaml").display());
    let kubeconfig = kubeconfig_path().display().to_string();
    let diff = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vapgen-under-test"))
            .args(["diff", "--kubeconfig", &kubeconfig])
            .args(extra)
            .output()
            .expect("running vapgen diff");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let policy = format!("ValidatingAdmissionPolicy/gatekeeper-{name}");
    let binding = format!("ValidatingAdmissionPolicyBinding/gatekeeper-{name}-no-forbidden");

    let (code, out, err) = diff(&["-f", &files]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!("+ {policy}: does not exist")),
        "{out}"
    );
    assert!(
        out.contains(&format!("+ {binding}: does not exist")),
        "{out}"
    );

    let objects = vapgen(&["plan", "-f", &files]).stdout;
    let template_text = std::fs::read_to_string(&template).unwrap().replace(
        "metadata:\n  name:",
        &format!("metadata:\n  labels:\n    vapgen.test/diff: {name}\n  name:"),
    );
    let mut everything = objects.clone();
    everything.extend(format!("\n---\n{template_text}\n---\n{constraint}").into_bytes());
    let _cleanup = Cleanup(everything);
    kubectl_stdin(&["apply"], &objects);
    let (code, out, err) = diff(&["-f", &files]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 to create, 0 to change"), "{out}");

    // An edit by hand: the binding's action.
    let bindings: Api<
        k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    > = Api::all(client.clone());
    let start = Instant::now();
    while let Err(e) = bindings
        .patch(
            &format!("gatekeeper-{name}-no-forbidden"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"validationActions": ["Warn"]}})),
        )
        .await
    {
        assert!(
            e.to_string().contains(NOT_CONFIGURED) && start.elapsed() < ENFORCEMENT_TIMEOUT,
            "editing the binding: {e}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, out, err) = diff(&["-f", &files]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains(&format!("~ {binding}: would change")), "{out}");
    assert!(
        out.contains("-   - Warn") && out.contains("+   - Deny"),
        "{out}"
    );

    // The same from the cluster's own template and constraint.
    kubectl_stdin(&["apply"], template_text.as_bytes());
    apply_when_served(&constraint);
    let selector = format!("vapgen.test/diff={name}");
    let (code, out, err) = diff(&["--from-cluster", "-l", &selector]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains(&format!("~ {binding}: would change")), "{out}");
    assert!(
        out.contains("2 object(s): 1 unchanged, 0 to create, 1 to change"),
        "{out}"
    );

    // The migration report from the same objects: plan --from-cluster.
    let out = Command::new(env!("CARGO_BIN_EXE_vapgen-under-test"))
        .args([
            "plan",
            "--from-cluster",
            "-l",
            &selector,
            "--kubeconfig",
            &kubeconfig,
        ])
        .args(["--summary=json", "-o", "json"])
        .output()
        .expect("running vapgen plan --from-cluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stderr).expect("JSON summary");
    assert_eq!(summary["templates"][0]["name"], name.as_str(), "{summary}");
    assert_eq!(summary["templates"][0]["decision"], "generate", "{summary}");
    assert_eq!(
        summary["templates"][0]["constraints"][0]["binding"],
        format!("gatekeeper-{name}-no-forbidden"),
        "{summary}"
    );
}
