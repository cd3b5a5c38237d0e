//! deploy/ on the real API server: every manifest (the kustomize base and overlays, the Helm
//! chart with default and custom-module values) passes a server-side dry-run apply, and the
//! RBAC it grants is exactly enough: the controller's end-to-end flow runs **as vapgen's
//! ServiceAccount** (`system:serviceaccount:vapgen-system:vapgen`, by impersonation), and the
//! same identity is refused everything else that matters.
//!
//! Tools: `VAPGEN_KUBECTL` (kubectl with kustomize) and `VAPGEN_HELM`, both exported by
//! `tests/control-plane/up`. Without helm the Helm tests fail under `CI=true` and are skipped
//! (with a message) otherwise.
//!
//! The RBAC test applies the ClusterRoles, Roles and bindings for real (idempotent server-side
//! apply) and starts two controllers one after the other in this process, each watching every
//! template of the cluster, so it is one sequential test; the other tests only render and dry-run.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vapgen::runtime::{BUNDLED_MODULE, ModuleSource, Runtime, RuntimeConfig};

/// vapgen's ServiceAccount, as deploy/ names it.
const SA_NAMESPACE: &str = "vapgen-system";
const SA_NAME: &str = "vapgen";
/// The Lease the manifests grant (`--lease-name=vapgen`, Role resourceNames).
const LEASE_NAME: &str = "vapgen";

// === tools ===

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn kubectl_bin() -> PathBuf {
    vapgen_tests::kubectl().unwrap_or_else(|| {
        panic!(
            "VAPGEN_KUBECTL is not set: start the test control plane with tests/control-plane/up \
             and source its env"
        )
    })
}

/// helm, or `None` (skip) outside CI when `VAPGEN_HELM` is unset.
fn helm_bin() -> Option<PathBuf> {
    match std::env::var_os("VAPGEN_HELM").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None if ci() => panic!(
            "VAPGEN_HELM is not set but CI=true: tests/control-plane/up builds helm and exports it"
        ),
        None => {
            eprintln!("VAPGEN_HELM is not set: skipping the Helm chart checks");
            None
        }
    }
}

/// Runs a command with `stdin`, returns (stdout, stderr); panics with both on failure.
fn run(cmd: &mut Command, stdin: &str) -> (String, String) {
    let (ok, out, err) = try_run(cmd, stdin);
    assert!(ok, "{cmd:?} failed:\n{err}\n{out}");
    (out, err)
}

fn try_run(cmd: &mut Command, stdin: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("stdin writer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl(args: &[&str]) -> Command {
    let mut c = Command::new(kubectl_bin());
    c.arg("--kubeconfig")
        .arg(vapgen_tests::kubeconfig_path())
        .args(args);
    c
}

/// `kubectl kustomize deploy/<dir>`.
fn kustomize(dir: &str) -> String {
    let mut c = Command::new(kubectl_bin());
    c.arg("kustomize").arg(repo().join("deploy").join(dir));
    run(&mut c, "").0
}

/// `helm template vapgen deploy/helm/vapgen -n vapgen-system [args]`.
fn helm_template(helm: &Path, args: &[&str]) -> Result<String, String> {
    let mut c = Command::new(helm);
    c.args(["template", "vapgen"])
        .arg(repo().join("deploy/helm/vapgen"))
        .args(["--namespace", SA_NAMESPACE])
        .args(args);
    let (ok, out, err) = try_run(&mut c, "");
    if ok { Ok(out) } else { Err(err) }
}

/// The documents of a YAML stream.
fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).expect("YAML document");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn get<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objs, kind, name).unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment
        .pointer("/spec/template/spec/containers/0/args")
        .and_then(Value::as_array)
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn as_list(objs: &[Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": objs}).to_string()
}

/// Creates the Namespace for real (a dry-run of namespaced objects needs it), then dry-runs
/// the whole stream the way deploy/README.md applies it (server-side apply); PodSecurity
/// warnings fail the check. (A client-side `kubectl apply --dry-run=server` reads, then
/// creates or patches: it races with the RBAC test that applies the ServiceAccount for real.)
fn dry_run_apply(what: &str, yaml: &str) {
    let ns = std::fs::read_to_string(repo().join("deploy/base/namespace.yaml")).expect("ns")
        + "\n---\n"
        + &gatekeeper_namespace().to_string();
    run(
        &mut kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=vapgen-deploy-tests",
            "-f",
            "-",
        ]),
        &ns,
    );
    let (out, err) = run(
        &mut kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=vapgen-deploy-tests",
            "--dry-run=server",
            "-f",
            "-",
        ]),
        yaml,
    );
    assert!(
        !err.contains("PodSecurity") && !err.contains("would violate"),
        "{what}: warnings:\n{err}"
    );
    let applied = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    let objects = serde_json::from_str::<Value>(yaml)
        .map_or(0, |v| v["items"].as_array().map_or(0, Vec::len));
    assert_eq!(
        applied, objects,
        "{what}: every object must be accepted:\n{out}\n{err}"
    );
}

// === what every rendering must contain ===

/// Checks the shape every install shares: two replicas with leader election, downward-API
/// identity, probes, resources, a restrictive securityContext, a PDB and a metrics Service.
fn check_common(what: &str, objs: &[Value], dep_name: &str) {
    let d = get(objs, "Deployment", dep_name);
    assert_eq!(d["metadata"]["namespace"], SA_NAMESPACE, "{what}");
    assert_eq!(d["spec"]["replicas"], 2, "{what}");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SA_NAME, "{what}");
    let c = &pod["containers"][0];
    let args = args_of(d);
    assert_eq!(args[0], "run", "{what}");
    assert!(
        args.contains(&"--leader-elect=true".to_string()),
        "{what}: {args:?}"
    );
    assert!(
        args.contains(&format!("--lease-name={LEASE_NAME}")),
        "{what}: {args:?}"
    );
    assert!(
        args.iter()
            .any(|a| a.starts_with("--module-cache-dir=/var/cache/vapgen")),
        "{what}: the module cache must go to the writable emptyDir: {args:?}"
    );
    let env = c["env"].as_array().expect("env");
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            env.iter()
                .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == path),
            "{what}: {name} from {path}"
        );
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
    assert_eq!(c["ports"][0]["containerPort"], 8080, "{what}");
    for k in ["requests", "limits"] {
        assert!(
            c["resources"][k]["cpu"].is_string(),
            "{what}: resources.{k}.cpu"
        );
        assert!(
            c["resources"][k]["memory"].is_string(),
            "{what}: resources.{k}.memory"
        );
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert!(
        mounts.iter().any(|m| m["mountPath"] == "/var/cache/vapgen"),
        "{what}"
    );
    let pdb = objs
        .iter()
        .find(|o| o["kind"] == "PodDisruptionBudget")
        .unwrap_or_else(|| panic!("{what}: no PodDisruptionBudget"));
    assert_eq!(pdb["spec"]["minAvailable"], 1, "{what}");
    let svc = objs
        .iter()
        .find(|o| o["kind"] == "Service")
        .unwrap_or_else(|| panic!("{what}: no metrics Service"));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http", "{what}");
    // Every binding names vapgen's ServiceAccount.
    for b in objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": SA_NAME, "namespace": SA_NAMESPACE}]),
            "{what}"
        );
    }
}

/// The RBAC rules of a rendering, keyed by kind/namespace/name (labels and comments aside).
fn rbac_rules(objs: &[Value]) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .map(|o| {
            (
                format!(
                    "{}/{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                ),
                o["rules"].clone(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

// === 1. kustomize ===

#[test]
fn kustomize_base_and_overlays_pass_a_server_side_dry_run() {
    let base = docs(&kustomize("base"));
    let coexist = docs(&kustomize("overlays/coexist"));
    let standalone = docs(&kustomize("overlays/standalone"));
    let expected_base: BTreeSet<String> = [
        "Namespace/vapgen-system",
        "ServiceAccount/vapgen",
        "ClusterRole/vapgen",
        "ClusterRoleBinding/vapgen",
        "Role/vapgen",
        "RoleBinding/vapgen",
        "Role/vapgen-events",
        "RoleBinding/vapgen-events",
        "Deployment/vapgen",
        "PodDisruptionBudget/vapgen",
        "Service/vapgen-metrics",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let manage: BTreeSet<String> = [
        "ClusterRole/vapgen-manage-crds",
        "ClusterRoleBinding/vapgen-manage-crds",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let ct_crd = "CustomResourceDefinition/constrainttemplates.templates.gatekeeper.sh".to_string();
    assert_eq!(kinds(&base), expected_base);
    // Coexist: also the Role (and binding) for Gatekeeper's per-pod status objects in
    // gatekeeper-system.
    let gk_status: BTreeSet<String> = [
        "Role/vapgen-gatekeeper-status",
        "RoleBinding/vapgen-gatekeeper-status",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds(&coexist), &(&expected_base | &manage) | &gk_status);
    assert_eq!(
        get(&coexist, "Role", "vapgen-gatekeeper-status")["metadata"]["namespace"],
        GATEKEEPER_NAMESPACE
    );
    let mut want = &expected_base | &manage;
    want.insert(ct_crd);
    assert_eq!(kinds(&standalone), want);

    for (what, objs) in [
        ("base", &base),
        ("coexist", &coexist),
        ("standalone", &standalone),
    ] {
        check_common(what, objs, "vapgen");
        let args = args_of(get(objs, "Deployment", "vapgen"));
        assert_eq!(
            args.contains(&"--manage-crds".to_string()),
            what != "base",
            "{what}: --manage-crds goes with the CRD-writing RBAC: {args:?}"
        );
        // Events of templates and constraints in `default` (where kube-rs records Events of
        // cluster-scoped objects); Leases and the replica's own Events in vapgen's namespace.
        assert_eq!(
            get(objs, "Role", "vapgen-events")["metadata"]["namespace"],
            "default"
        );
        assert_eq!(
            get(objs, "Role", "vapgen")["metadata"]["namespace"],
            SA_NAMESPACE
        );
    }
    // The base ClusterRole cannot write CRDs; only the manage-crds component can.
    let base_role = get(&base, "ClusterRole", "vapgen");
    for rule in base_role["rules"].as_array().expect("rules") {
        if rule["apiGroups"] == json!(["apiextensions.k8s.io"]) {
            assert_eq!(rule["verbs"], json!(["get", "list", "watch"]));
        }
    }
    // The CRD the standalone overlay installs is deploy/crds/constrainttemplates.yaml.
    let file: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/crds/constrainttemplates.yaml")).expect("crd"),
    )
    .expect("crd yaml");
    assert_eq!(
        get(
            &standalone,
            "CustomResourceDefinition",
            "constrainttemplates.templates.gatekeeper.sh"
        )["spec"],
        file["spec"]
    );

    for (what, objs) in [
        ("base", &base),
        ("coexist", &coexist),
        ("standalone", &standalone),
    ] {
        dry_run_apply(what, &as_list(objs));
    }
}

// === 2. Helm ===

/// The bundled module as ConfigMap binaryData (base64, through k8s-openapi's ByteString).
fn module_base64(bytes: &[u8]) -> String {
    serde_json::to_value(ByteString(bytes.to_vec()))
        .expect("base64")
        .as_str()
        .expect("string")
        .to_string()
}

fn bundled_sha256() -> String {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    rt.load_bytes(BUNDLED_MODULE, None, ModuleSource::Bundled)
        .expect("bundled module")
        .sha256()
        .to_string()
}

#[test]
fn helm_chart_renders_and_passes_a_server_side_dry_run() {
    let Some(helm) = helm_bin() else { return };
    let coexist_k = docs(&kustomize("overlays/coexist"));
    let standalone_k = docs(&kustomize("overlays/standalone"));

    // Default values: coexist mode, bundled module; the same RBAC as the coexist overlay.
    let default = docs(&helm_template(&helm, &[]).expect("helm template (defaults)"));
    check_common("helm defaults", &default, "vapgen");
    let d = get(&default, "Deployment", "vapgen");
    let args = args_of(d);
    assert!(args.contains(&"--manage-crds".to_string()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--module=")), "{args:?}");
    assert!(
        find(
            &default,
            "CustomResourceDefinition",
            "constrainttemplates.templates.gatekeeper.sh"
        )
        .is_none()
    );
    assert_eq!(
        rbac_rules(&default),
        rbac_rules(&coexist_k),
        "chart and kustomize RBAC differ"
    );
    dry_run_apply("helm defaults", &as_list(&default));

    // Standalone: also the ConstraintTemplate CRD, kept on uninstall.
    let standalone =
        docs(&helm_template(&helm, &["--set", "mode=standalone"]).expect("standalone"));
    let crd = get(
        &standalone,
        "CustomResourceDefinition",
        "constrainttemplates.templates.gatekeeper.sh",
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert_eq!(
        crd["spec"],
        get(
            &standalone_k,
            "CustomResourceDefinition",
            "constrainttemplates.templates.gatekeeper.sh"
        )["spec"]
    );
    assert_eq!(rbac_rules(&standalone), rbac_rules(&standalone_k));
    dry_run_apply("helm standalone", &as_list(&standalone));

    // A custom module from a ConfigMap the chart creates, pinned by sha256 (a values file).
    let sha = bundled_sha256();
    let dir = std::env::temp_dir().join(vapgen_tests::unique_name("vapgen-helm"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let values = dir.join("custom-module.yaml");
    std::fs::write(
        &values,
        format!(
            "module:\n  source: configMap\n  sha256: {sha}\n  configMap:\n    create: true\n    binaryData: {}\n",
            module_base64(BUNDLED_MODULE)
        ),
    )
    .expect("values file");
    let custom = docs(
        &helm_template(&helm, &["-f", values.to_str().expect("utf-8 path")])
            .expect("custom module"),
    );
    check_common("helm custom module", &custom, "vapgen");
    let d = get(&custom, "Deployment", "vapgen");
    let args = args_of(d);
    assert!(
        args.contains(&"--module=/etc/vapgen/module/decider.wasm".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&format!("--module-sha256={sha}")), "{args:?}");
    let pod = &d["spec"]["template"]["spec"];
    let vol = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "module")
        .expect("module volume");
    assert_eq!(vol["configMap"]["name"], "vapgen-decision-module");
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["name"] == "module"
                && m["mountPath"] == "/etc/vapgen/module"
                && m["readOnly"] == true)
    );
    // What the pod would read is the module, and the pin in the args accepts it (and only it).
    let cm: ConfigMap =
        serde_json::from_value(get(&custom, "ConfigMap", "vapgen-decision-module").clone())
            .expect("ConfigMap");
    let bytes = &cm.binary_data.expect("binaryData")["decider.wasm"].0;
    let path = dir.join("decider.wasm");
    std::fs::write(&path, bytes).expect("module file");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let pin = args
        .iter()
        .find_map(|a| a.strip_prefix("--module-sha256="))
        .expect("pin");
    let loaded = rt
        .load_file(&path, Some(pin))
        .expect("the pinned module loads");
    assert_eq!(loaded.sha256(), sha);
    assert!(
        rt.load_file(&path, Some(&"0".repeat(64))).is_err(),
        "a wrong pin must refuse it"
    );
    dry_run_apply("helm custom module (ConfigMap)", &as_list(&custom));

    // An existing ConfigMap, and a volume.
    let existing = docs(
        &helm_template(
            &helm,
            &[
                "--set",
                "module.source=configMap",
                "--set",
                &format!("module.sha256={sha}"),
                "--set",
                "module.configMap.name=my-module",
            ],
        )
        .expect("existing ConfigMap"),
    );
    assert!(existing.iter().all(|o| o["kind"] != "ConfigMap"));
    let d = get(&existing, "Deployment", "vapgen");
    assert!(
        d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["configMap"]["name"] == "my-module")
    );
    let volume = docs(
        &helm_template(
            &helm,
            &[
                "--set",
                "module.source=volume",
                "--set",
                &format!("module.sha256={sha}"),
                "--set",
                "module.volume.persistentVolumeClaim.claimName=modules",
            ],
        )
        .expect("volume"),
    );
    dry_run_apply("helm custom module (volume)", &as_list(&volume));

    // Values that cannot work are refused at render time.
    let err = helm_template(&helm, &["--set", "module.source=configMap"]).expect_err("no pin");
    assert!(err.contains("module.sha256 is required"), "{err}");
    let err = helm_template(&helm, &["--set", "mode=gatekeeper"]).expect_err("bad mode");
    assert!(err.contains("mode must be coexist or standalone"), "{err}");
    let err =
        helm_template(&helm, &["--set", "leaderElection.enabled=false"]).expect_err("two writers");
    assert!(err.contains("replicaCount=1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// === 3. RBAC: the controller as vapgen's ServiceAccount ===

/// Gatekeeper's namespace, where coexist mode's status Role lives (Gatekeeper creates it; the
/// tests create it before applying that Role).
const GATEKEEPER_NAMESPACE: &str = "gatekeeper-system";

fn gatekeeper_namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEKEEPER_NAMESPACE}})
}

/// Applies objects for real (server-side apply, idempotent), Gatekeeper's namespace first.
fn apply_for_real(objs: &[Value]) {
    let objs: Vec<Value> = std::iter::once(gatekeeper_namespace())
        .chain(objs.iter().cloned())
        .collect();
    let objs = &objs[..];
    run(
        &mut kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=vapgen-deploy-tests",
            "-f",
            "-",
        ]),
        &as_list(objs),
    );
}

fn rbac_objects(objs: &[Value]) -> Vec<Value> {
    objs.iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                        | "ServiceAccount"
                        | "Namespace"
                )
            )
        })
        .cloned()
        .collect()
}

/// Whether the client's identity may do `verb` (a SelfSubjectAccessReview).
async fn can(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: ns.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    api.create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// Waits until RBAC (served from informers) reflects a change.
async fn wait_can(client: &kube::Client, verb: &str, group: &str, resource: &str, want: bool) {
    let what = format!("the ServiceAccount's `{verb} {resource}` to become {want}");
    wait_for(&what, Duration::from_secs(30), || async {
        can(client, verb, group, resource, None).await == want
    })
    .await;
}

/// Asserts the result is an HTTP 403 from the API server.
fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn dyn_api(client: &kube::Client, r: &kube::api::ApiResource) -> Api<DynamicObject> {
    Api::all_with(client.clone(), r)
}

fn dry() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("object")
}

/// Everything vapgen's identity must not do (with the base RBAC: no CRD writes).
async fn negative_checks(sa: &kube::Client, crd_writes: bool) {
    // Secrets: neither cluster-wide nor in its own namespace.
    forbidden(
        "list secrets",
        Api::<Secret>::all(sa.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "get a secret in vapgen-system",
        Api::<Secret>::namespaced(sa.clone(), SA_NAMESPACE)
            .get("anything")
            .await,
    );
    // ConfigMaps and Pods: nothing.
    forbidden(
        "list configmaps",
        Api::<ConfigMap>::all(sa.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "create a configmap",
        Api::<ConfigMap>::namespaced(sa.clone(), SA_NAMESPACE)
            .create(
                &dry(),
                &serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm"),
            )
            .await,
    );
    // Templates and constraints: read and status only — no create, no spec change, no delete.
    let kind = unique_kind("Deny");
    let t = template(&kind, json!({}));
    forbidden(
        "create a ConstraintTemplate",
        dyn_api(sa, &template_resource())
            .create(&dry(), &obj(t))
            .await,
    );
    forbidden(
        "patch a ConstraintTemplate's spec",
        dyn_api(sa, &template_resource())
            .patch(
                "anything",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {}})),
            )
            .await,
    );
    forbidden(
        "delete a ConstraintTemplate",
        dyn_api(sa, &template_resource())
            .delete("anything", &DeleteParams::default())
            .await,
    );
    forbidden(
        "create a constraint",
        dyn_api(sa, &constraint_resource(&kind))
            .create(&dry(), &obj(constraint(&kind, "c", "default", json!({}))))
            .await,
    );
    // Policies: its verbs, but never deletecollection.
    forbidden(
        "deletecollection validatingadmissionpolicies",
        dyn_api(sa, &vap_resource())
            .delete_collection(
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
                &ListParams::default(),
            )
            .await,
    );
    // CRDs: read-only unless --manage-crds is granted.
    let crd =
        vapgen::controller::crds::constraint_crd(&template(&kind, json!({})), &kind).expect("crd");
    let r = dyn_api(sa, &crd_resource()).create(&dry(), &obj(crd)).await;
    if crd_writes {
        assert!(
            r.is_ok(),
            "with manage-crds the ServiceAccount creates CRDs: {r:?}"
        );
    } else {
        forbidden("create a CRD without manage-crds", r);
        forbidden(
            "delete a CRD without manage-crds",
            dyn_api(sa, &crd_resource())
                .delete(
                    "constrainttemplates.templates.gatekeeper.sh",
                    &DeleteParams {
                        dry_run: true,
                        ..Default::default()
                    },
                )
                .await,
        );
    }
    // Leases: only its own, only in its namespace; it cannot delete even its own.
    let leases = Api::<Lease>::namespaced(sa.clone(), SA_NAMESPACE);
    forbidden("get another Lease", leases.get("someone-else").await);
    forbidden(
        "patch another Lease",
        leases
            .patch(
                "someone-else",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {}})),
            )
            .await,
    );
    forbidden(
        "delete its Lease",
        leases.delete(LEASE_NAME, &DeleteParams::default()).await,
    );
    forbidden(
        "create a Lease in kube-system",
        Api::<Lease>::namespaced(sa.clone(), "kube-system")
            .create(
                &dry(),
                &serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("lease"),
            )
            .await,
    );
    // Events: only in `default` (templates, constraints) and its own namespace (its Pod).
    assert!(!can(sa, "create", "events.k8s.io", "events", Some("kube-system")).await);
    assert!(!can(sa, "create", "", "events", Some("default")).await);
    assert!(can(sa, "create", "events.k8s.io", "events", Some("default")).await);
    assert!(can(sa, "create", "events.k8s.io", "events", Some(SA_NAMESPACE)).await);
    // No RBAC writes (no escalation path).
    assert!(
        !can(
            sa,
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None
        )
        .await
    );
    assert!(
        !can(
            sa,
            "bind",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None
        )
        .await
    );
    assert!(!can(sa, "impersonate", "", "users", None).await);
}

/// Runs one controller as the ServiceAccount through the end-to-end flow: a template and a
/// constraint become a VAP and a binding with statuses; a broken constraint gets an error
/// status and an Event; deleting the template removes what vapgen made.
async fn flow_as_service_account(admin: &kube::Client, manage_crds: bool) {
    let sa = vapgen_tests::as_service_account(SA_NAMESPACE, SA_NAME).await;
    let identity = vapgen_tests::unique_name("deploy-test");
    let mut cfg = test_config(&identity);
    cfg.reconcile.manage_crds = manage_crds;
    cfg.leader_elect = true;
    cfg.lease_name = LEASE_NAME.into();
    cfg.lease_namespace = SA_NAMESPACE.into();
    // Scope sync on, as `vapgen run` defaults: its watches of Gatekeeper's objects must be
    // allowed by the RBAC too (step 4 of the test finds no refusal in the audit log).
    cfg.reconcile.scope_sync = Some(Default::default());
    let wasm = Runtime::new(RuntimeConfig::default()).expect("wasm runtime");
    let decider = wasm.load_bundled().expect("bundled module");
    let c = vapgen::controller::start(sa.clone(), decider, cfg)
        .await
        .expect("the controller starts as the ServiceAccount");
    let handles = c.handles.clone();
    wait_for("leadership", Duration::from_secs(40), || async {
        handles.leader.is_leader()
    })
    .await;

    let kind = unique_kind(if manage_crds { "Managed" } else { "Given" });
    let ns = vapgen_tests::fresh_namespace(admin, "deploy").await;
    let t = template(&kind, json!({}));
    if !manage_crds {
        // Someone else provides the constraint CRD (as Gatekeeper would).
        let crd = vapgen::controller::crds::constraint_crd(&t, &kind).expect("crd");
        apply(admin, &crd_resource(), &crd).await;
    }
    apply(admin, &template_resource(), &t).await;
    apply_constraint(admin, &constraint(&kind, "must-have-owner", &ns, json!({}))).await;
    // A constraint vapgen cannot bind: an error status and a Warning Event.
    apply_constraint(
        admin,
        &constraint(&kind, "broken", &ns, json!({"enforcementAction": "scoped"})),
    )
    .await;

    wait_object(
        admin,
        &vap_resource(),
        &policy_name(&kind),
        "the VAP",
        |_| true,
    )
    .await;
    let bname = binding_name(&kind, "must-have-owner");
    wait_object(admin, &vapb_resource(), &bname, "the binding", |_| true).await;
    wait_object(
        admin,
        &template_resource(),
        &kind.to_ascii_lowercase(),
        "template status",
        |o| state(o) == "generated",
    )
    .await;
    wait_object(
        admin,
        &constraint_resource(&kind),
        "must-have-owner",
        "constraint status",
        |o| state(o) == "generated",
    )
    .await;
    wait_object(
        admin,
        &constraint_resource(&kind),
        "broken",
        "error status",
        |o| state(o) == "error",
    )
    .await;
    // The binding is enforced.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let bad: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "bad", "namespace": ns}})).expect("cm");
    vapgen_tests::wait_denied(&cms, &bad, &policy_name(&kind)).await;
    // The Event about the broken constraint, written by the ServiceAccount in `default`.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(admin.clone(), "default");
    wait_for("the Warning Event", Duration::from_secs(30), || async {
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some(kind.as_str())
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;

    // Delete: vapgen removes the VAP and bindings (and, managing CRDs, the CRD).
    delete(admin, &constraint_resource(&kind), "must-have-owner").await;
    wait_gone(admin, &vapb_resource(), &bname).await;
    cleanup_template(admin, &kind).await;
    wait_gone(admin, &vap_resource(), &policy_name(&kind)).await;
    let crd_name = format!("{}.constraints.gatekeeper.sh", kind.to_ascii_lowercase());
    if manage_crds {
        wait_gone(admin, &crd_resource(), &crd_name).await;
    } else {
        crd_stays(admin, &crd_name).await;
        delete(admin, &crd_resource(), &crd_name).await;
    }
    c.stop().await;
}

/// Without --manage-crds the CRD someone else made stays.
async fn crd_stays(admin: &kube::Client, crd_name: &str) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        common::get(admin, &crd_resource(), crd_name)
            .await
            .is_some(),
        "vapgen must not delete a CRD it does not manage"
    );
}

/// Requests made as the ServiceAccount that the audit log recorded after `from` (bytes).
fn sa_audit_events(from: u64) -> Vec<vapgen_tests::AuditEvent> {
    let Some(path) = vapgen_tests::audit_log() else {
        return Vec::new();
    };
    let text = std::fs::read(&path).expect("audit log");
    let user = format!("system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}");
    vapgen_tests::parse_audit_log(&String::from_utf8_lossy(&text[from as usize..]))
        .into_iter()
        .filter(|e| e.stage == "ResponseComplete")
        .filter(|e| {
            e.impersonated_user
                .as_ref()
                .is_some_and(|u| u.username == user)
        })
        .collect()
}

fn audit_len() -> u64 {
    vapgen_tests::audit_log()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_runs_as_its_service_account_with_no_more_rights() {
    let admin = vapgen_tests::client().await;
    prepare_cluster(&admin).await;
    let base = docs(&kustomize("base"));
    let coexist = docs(&kustomize("overlays/coexist"));
    let sa = vapgen_tests::as_service_account(SA_NAMESPACE, SA_NAME).await;

    // 1. The base RBAC only (no CRD writes): a leftover manage-crds binding of an earlier run goes.
    let _ = try_run(
        &mut kubectl(&[
            "delete",
            "clusterrolebinding",
            "vapgen-manage-crds",
            "--ignore-not-found",
        ]),
        "",
    );
    apply_for_real(&rbac_objects(&base));
    wait_can(
        &sa,
        "watch",
        "templates.gatekeeper.sh",
        "constrainttemplates",
        true,
    )
    .await;
    wait_can(
        &sa,
        "create",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        false,
    )
    .await;
    negative_checks(&sa, false).await;

    // 2. Constraint CRDs made by someone else, vapgen without --manage-crds.
    let from = audit_len();
    flow_as_service_account(&admin, false).await;

    // 3. The overlays' RBAC (base + manage-crds), vapgen with --manage-crds.
    apply_for_real(&rbac_objects(&coexist));
    wait_can(
        &sa,
        "create",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        true,
    )
    .await;
    flow_as_service_account(&admin, true).await;

    // 4. Nothing the flows did was refused, and the Lease verbs used are the granted ones.
    let events = sa_audit_events(from);
    if vapgen_tests::audit_log().is_some() {
        let refused: Vec<String> = events
            .iter()
            .filter(|e| e.response_status.as_ref().is_some_and(|s| s.code == 403))
            .map(|e| format!("{} {}", e.verb, e.request_uri))
            .collect();
        assert!(
            refused.is_empty(),
            "requests refused during the flows: {refused:#?}"
        );
        let lease_verbs: BTreeSet<&str> = events
            .iter()
            .filter(|e| e.resource() == "leases")
            .map(|e| e.verb.as_str())
            .collect();
        eprintln!("Lease verbs used by the ServiceAccount: {lease_verbs:?}");
        assert!(
            lease_verbs.contains("create"),
            "the readiness canary's dry-run create"
        );
        assert!(lease_verbs.is_subset(&["create", "patch"].into_iter().collect()));
        assert!(
            events.iter().any(|e| e.resource() == "events"
                && e.verb == "create"
                && e.is_successful_completion()),
            "the ServiceAccount wrote its Event"
        );
    }

    // 5. The same refusals hold with the overlays' RBAC (except CRD writes, now granted).
    negative_checks(&sa, true).await;
}
