//! A vapgen controller shared by the tests of one test binary, and helpers to drive it.
//!
//! The controller runs in-process on its own thread and tokio runtime (each `#[tokio::test]`
//! has a runtime of its own that ends with the test). It is started once, in standalone mode
//! (`--manage-crds`), against the test control plane. Tests share it, so each test uses
//! kinds of its own ([`unique_kind`]) and never touches another test's objects.

#![allow(dead_code)] // each test binary uses a subset

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use serde_json::{Value, json};
use vapgen::controller::{Handles, RunConfig, reconcile::ReconcileConfig};
use vapgen::model::Settings;
use vapgen::runtime::{Runtime, RuntimeConfig};

/// Namespace of the lease and of the readiness canary.
pub const SYSTEM_NAMESPACE: &str = "vapgen-system";

/// The controller's configuration in these tests.
pub fn test_config(identity: &str) -> RunConfig {
    RunConfig {
        settings: Settings::default(),
        // `..default()` keeps fields added later (e.g. test-only switches) at their defaults.
        #[allow(clippy::needless_update)]
        reconcile: ReconcileConfig {
            manage_crds: true,
            wait_bound: Duration::from_secs(20),
            probe_interval: Duration::from_millis(300),
            ..ReconcileConfig::default()
        },
        leader_elect: false,
        lease_name: "vapgen-tests".into(),
        lease_namespace: SYSTEM_NAMESPACE.into(),
        lease_duration: 15,
        lease_grace: 5,
        identity: identity.into(),
        http_addr: None,
        canary: true,
        workers: 4,
        resync: Duration::from_secs(300),
        module_watch: None,
    }
}

/// vapgen in coexist mode (`vapgen run --manage-crds`, scope sync on with `scope_exempt` as
/// its exempt namespaces), its own namespace exempt, one replica without leader election;
/// `lease` is the id of vapgen's entries in Gatekeeper's `status.byPod` (`vapgen run`'s
/// default: `vapgen`).
pub fn coexist_config(identity: &str, lease: &str, scope_exempt: &[&str]) -> RunConfig {
    let mut cfg = test_config(identity);
    cfg.lease_name = lease.into();
    cfg.reconcile.manage_crds = true;
    cfg.reconcile.exempt_namespaces = vec![SYSTEM_NAMESPACE.to_owned()];
    cfg.reconcile.scope_sync = Some(vapgen::controller::reconcile::ScopeSyncConfig {
        exempt_namespaces: scope_exempt.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    });
    cfg
}

/// Installs the ConstraintTemplate CRD (deploy/crds) and the system namespace, idempotently.
pub async fn prepare_cluster(client: &kube::Client) {
    vapgen_tests::install_template_crd(client, SYSTEM_NAMESPACE).await;
}

struct Shared {
    handles: Handles,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The shared controller, started on first use.
pub fn controller() -> &'static Handles {
    &SHARED
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("vapgen-controller".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("controller runtime");
                    rt.block_on(async move {
                        let client = vapgen_tests::client().await;
                        prepare_cluster(&client).await;
                        let wasm = Runtime::new(RuntimeConfig::default()).expect("wasm runtime");
                        let decider = wasm.load_bundled().expect("bundled module");
                        let c = vapgen::controller::start(client, decider, test_config("tests"))
                            .await
                            .expect("start controller");
                        tx.send(c.handles.clone()).expect("hand over");
                        std::future::pending::<()>().await;
                    });
                })
                .expect("spawn controller thread");
            Shared {
                handles: rx.recv().expect("controller started"),
            }
        })
        .handles
}

// === resources ===

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// ConstraintTemplates (v1).
pub fn template_resource() -> ApiResource {
    ar(
        "templates.gatekeeper.sh",
        "v1",
        "ConstraintTemplate",
        "constrainttemplates",
    )
}
/// A constraint kind (v1beta1, plural = lower kind).
pub fn constraint_resource(kind: &str) -> ApiResource {
    ar(
        "constraints.gatekeeper.sh",
        "v1beta1",
        kind,
        &kind.to_ascii_lowercase(),
    )
}
/// VAPs.
pub fn vap_resource() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
    )
}
/// VAPBs.
pub fn vapb_resource() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    )
}
/// CRDs.
pub fn crd_resource() -> ApiResource {
    ar(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
}
/// Namespaces.
pub fn ns_resource() -> ApiResource {
    ar("", "v1", "Namespace", "namespaces")
}
/// ConfigMaps.
pub fn configmap_resource() -> ApiResource {
    ar("", "v1", "ConfigMap", "configmaps")
}

fn api(client: &kube::Client, r: &ApiResource) -> Api<DynamicObject> {
    Api::all_with(client.clone(), r)
}

/// Server-side apply as the test (field manager `vapgen-tests`).
pub async fn apply(client: &kube::Client, r: &ApiResource, obj: &Value) -> Value {
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    let pp = PatchParams::apply("vapgen-tests").force();
    let o = api(client, r)
        .patch(&name, &pp, &Patch::Apply(obj))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    serde_json::to_value(o).expect("json")
}

/// Tries to apply; returns the error text on failure.
pub async fn try_apply(
    client: &kube::Client,
    r: &ApiResource,
    obj: &Value,
) -> Result<Value, String> {
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    let pp = PatchParams::apply("vapgen-tests").force();
    api(client, r)
        .patch(&name, &pp, &Patch::Apply(obj))
        .await
        .map(|o| serde_json::to_value(o).expect("json"))
        .map_err(|e| e.to_string())
}

/// Merge-patches an object.
pub async fn merge(client: &kube::Client, r: &ApiResource, name: &str, patch: &Value) {
    api(client, r)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("patch {name}: {e}"));
}

/// Gets an object, `None` when absent.
pub async fn get(client: &kube::Client, r: &ApiResource, name: &str) -> Option<Value> {
    api(client, r)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
        .map(|o| serde_json::to_value(o).expect("json"))
}

/// Deletes an object; absent is fine.
pub async fn delete(client: &kube::Client, r: &ApiResource, name: &str) {
    match api(client, r).delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("delete {name}: {e}"),
    }
}

/// Polls `cond` every 100 ms until it holds, or panics naming `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `get` returns an object satisfying `pred`, and returns it.
pub async fn wait_object(
    client: &kube::Client,
    r: &ApiResource,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        if let Some(o) = get(client, r, name).await
            && pred(&o)
        {
            return o;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what} ({name}); last: {:?}",
            get(client, r, name).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the object is absent.
pub async fn wait_gone(client: &kube::Client, r: &ApiResource, name: &str) {
    let what = format!("{name} to be gone");
    wait_for(&what, Duration::from_secs(60), || async {
        get(client, r, name).await.is_none()
    })
    .await;
}

/// Asserts the object stays absent for `d`.
pub async fn stays_absent(client: &kube::Client, r: &ApiResource, name: &str, d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        assert!(
            get(client, r, name).await.is_none(),
            "{name} must not exist"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// === builders ===

/// A unique, valid kind for one test, e.g. `K8sTReqlabelsAb12cd`.
pub fn unique_kind(stem: &str) -> String {
    let suffix: String = vapgen_tests::unique_name("k")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .rev()
        .take(6)
        .collect();
    format!("K8sT{stem}{suffix}")
}

/// A required-labels template of `kind` with the given extra `source` fields.
///
/// The policy fails open (`failurePolicy: Ignore`): tests share one API server whose other
/// tests create and delete CRDs all the time, and while the admission plugin re-resolves a
/// paramKind, a `Fail` policy with a binding denies every request it matches — other tests'
/// namespace creates included (Gatekeeper #4530). Denials by the validation itself are not
/// affected by the failure policy.
pub fn template(kind: &str, extra_source: Value) -> Value {
    let mut source = json!({
        "failurePolicy": "Ignore",
        "variables": [{"name": "missing", "expression": "variables.params.labels.filter(k, !has(variables.anyObject.metadata.labels) || !(k in variables.anyObject.metadata.labels))"}],
        "validations": [{"expression": "size(variables.missing) == 0", "messageExpression": "\"missing required labels: \" + variables.missing.join(\", \")"}]
    });
    if let (Some(s), Some(e)) = (source.as_object_mut(), extra_source.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.to_ascii_lowercase()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}, "validation": {"openAPIV3Schema": {"type": "object", "properties": {"labels": {"type": "array", "items": {"type": "string"}}}}}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [{"engine": "K8sNativeValidation", "source": source}]}]
        }
    })
}

/// A constraint of `kind` limited to ConfigMaps in `namespace`, requiring `labels`.
pub fn constraint(kind: &str, name: &str, namespace: &str, spec_extra: Value) -> Value {
    let mut spec = json!({
        "match": {
            "kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}],
            "namespaces": [namespace]
        },
        "parameters": {"labels": ["owner"]}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec
    })
}

/// Applies a constraint once its CRD is served (the controller creates it in standalone mode).
pub async fn apply_constraint(client: &kube::Client, obj: &Value) -> Value {
    let kind = obj["kind"].as_str().expect("kind").to_string();
    let start = Instant::now();
    loop {
        match try_apply(client, &constraint_resource(&kind), obj).await {
            Ok(v) => return v,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "constraint kind {kind} never became available: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `status.vapgen` of an object.
pub fn vapgen_status(o: &Value) -> &Value {
    o.pointer("/status/vapgen").unwrap_or(&Value::Null)
}

/// The `state` of `status.vapgen`.
pub fn state(o: &Value) -> &str {
    vapgen_status(o)
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Binding name of a constraint.
pub fn binding_name(kind: &str, name: &str) -> String {
    format!("gatekeeper-{}-{name}", kind.to_ascii_lowercase())
}

/// Policy name of a kind.
pub fn policy_name(kind: &str) -> String {
    format!("gatekeeper-{}", kind.to_ascii_lowercase())
}

/// Deletes a test's template (the controller removes VAP, bindings and CRD).
pub async fn cleanup_template(client: &kube::Client, kind: &str) {
    delete(client, &template_resource(), &kind.to_ascii_lowercase()).await;
}

/// Applies `template` and `constraint` where Gatekeeper generates, and waits for its VAP
/// `policy` and binding `binding`; returns both (coexist tests that start from Gatekeeper's
/// objects).
pub async fn gatekeeper_generates(
    client: &kube::Client,
    template: &Value,
    constraint: &Value,
    policy: &str,
    binding: &str,
) -> (Value, Value) {
    apply(client, &template_resource(), template).await;
    apply_constraint(client, constraint).await;
    let vap = wait_object(client, &vap_resource(), policy, "Gatekeeper's VAP", |_| {
        true
    })
    .await;
    let vapb = wait_object(
        client,
        &vapb_resource(),
        binding,
        "Gatekeeper's binding",
        |_| true,
    )
    .await;
    (vap, vapb)
}
