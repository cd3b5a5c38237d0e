//! Hot swap in a running controller, on the real API server: a new module changes the
//! bindings with no restart; broken modules are rejected and the last known good one keeps
//! working. Prints the swap latency (file written → every binding converged).

mod common;

use vapgen_module_build as module_build;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::Digest;
use vapgen::controller::RunConfig;
use vapgen::controller::module_watch::ModuleWatch;
use vapgen::runtime::{BUNDLED_MODULE, Runtime, RuntimeConfig};

const EXEMPTION: &str = r#"{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","kube-public","kube-node-lease"]}]}"#;

fn ar(g: &str, v: &str, k: &str, p: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
}

async fn apply(client: &kube::Client, r: &ApiResource, obj: &Value) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), r);
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply("vapgen-tests").force();
    let start = Instant::now();
    loop {
        match api.patch(&name, &pp, &Patch::Apply(obj)).await {
            Ok(_) => return,
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                tracing::debug!(error = %e, "retrying apply");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("apply {name}: {e}"),
        }
    }
}

fn alt_module() -> Vec<u8> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let core = module_build::build_core(
        &ws,
        &module_build::default_target_dir(&ws),
        "vapgen-module-system-namespaces-exempt",
        "system_namespaces_exempt",
    )
    .expect("build the alternative module");
    module_build::componentize(&core).expect("componentize")
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn bindings_with_selector(
    api: &Api<DynamicObject>,
    names: &[String],
    want: Option<&Value>,
) -> usize {
    let mut n = 0;
    for name in names {
        if let Ok(Some(b)) = api.get_opt(name).await {
            let v = serde_json::to_value(b).unwrap();
            let sel = v
                .pointer("/spec/matchResources/namespaceSelector")
                .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
            if sel == want {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_changes_bindings_and_rejects_broken_modules() {
    let client = vapgen_tests::client().await;
    let crd: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/constrainttemplates.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    apply(
        &client,
        &ar(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
        &crd,
    )
    .await;
    apply(
        &client,
        &ar("", "v1", "Namespace", "namespaces"),
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vapgen-system"}}),
    )
    .await;

    let alt = alt_module();
    let dir = std::env::temp_dir().join(vapgen_tests::unique_name("hotswap"));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("decider.wasm");
    std::fs::write(&path, BUNDLED_MODULE).unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let decider = rt.load_file(&path, None).unwrap();
    let cfg = RunConfig {
        lease_name: "vapgen-hotswap".into(),
        module_watch: Some(ModuleWatch {
            path: path.clone(),
            pin: None,
            suite: None,
            interval: Duration::from_millis(200),
        }),
        ..common::test_config("hotswap")
    };
    let controller = vapgen::controller::start(client.clone(), decider, cfg)
        .await
        .unwrap();
    let h = controller.handles.clone();

    let n: usize = std::env::var("VAPGEN_SWAP_CONSTRAINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let kind = format!(
        "K8sTSwap{}",
        &sha(vapgen_tests::unique_name("k").as_bytes())[..6]
    );
    let lower = kind.to_ascii_lowercase();
    let template = json!({
        "apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate", "metadata": {"name": lower},
        "spec": {"crd": {"spec": {"names": {"kind": kind}}},
                 "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [{"engine": "K8sNativeValidation",
                   "source": {"failurePolicy": "Ignore", "validations": [{"expression": "true"}]}}]}]}
    });
    apply(
        &client,
        &ar(
            "templates.gatekeeper.sh",
            "v1",
            "ConstraintTemplate",
            "constrainttemplates",
        ),
        &template,
    )
    .await;
    let cr = ar("constraints.gatekeeper.sh", "v1beta1", &kind, &lower);
    let names: Vec<String> = (0..n).map(|i| format!("gatekeeper-{lower}-c{i}")).collect();
    for i in 0..n {
        let c = json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": kind, "metadata": {"name": format!("c{i}")},
                       "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}]}}});
        apply(&client, &cr, &c).await;
    }
    let vapbs: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
    );
    let wait = |want: Option<Value>, what: &'static str| {
        let (vapbs, names) = (vapbs.clone(), names.clone());
        async move {
            let start = Instant::now();
            while bindings_with_selector(&vapbs, &names, want.as_ref()).await < names.len() {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "timed out waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            start.elapsed()
        }
    };
    wait(None, "bindings from the bundled module").await;

    // Swap to the alternative module: every binding gains the system-namespace exemption.
    let t0 = Instant::now();
    write_atomically(&path, &alt);
    wait(
        Some(serde_json::from_str(EXEMPTION).unwrap()),
        "bindings from the new module",
    )
    .await;
    let latency = t0.elapsed();
    println!(
        "swap latency for {n} constraints: {:.2} s (file written -> every binding converged)",
        latency.as_secs_f64()
    );
    assert!(
        h.metrics.encode().contains(&sha(&alt)),
        "module_info names the new module"
    );

    // Broken modules are rejected; the new module keeps working.
    let broken: Vec<(&str, Vec<u8>)> = vec![
        ("not wasm", b"garbage".to_vec()),
        (
            "wrong interface version",
            vapgen_tests::fault_module("unreachable", "0.2.0"),
        ),
        (
            "traps on input",
            vapgen_tests::fault_module("unreachable", "0.1.0"),
        ),
        (
            "loops forever",
            vapgen_tests::fault_module("(loop $l (br $l)) (i32.const 0)", "0.1.0"),
        ),
    ];
    for (what, bytes) in &broken {
        write_atomically(&path, bytes);
        let start = Instant::now();
        let needle = format!("vapgen_module_rejected{{sha256=\"{}\"}} 1", sha(bytes));
        while !h.metrics.encode().contains(&needle) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "module that {what} was not rejected"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            h.metrics.encode().contains(&sha(&alt)),
            "{what}: the active module is still the good one"
        );
    }
    // Still working with the last known good module: a new constraint gets the exemption.
    let c = json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": kind, "metadata": {"name": "after"},
                   "spec": {"match": {"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}]}}});
    apply(&client, &cr, &c).await;
    let after = vec![format!("gatekeeper-{lower}-after")];
    let start = Instant::now();
    while bindings_with_selector(
        &vapbs,
        &after,
        Some(&serde_json::from_str(EXEMPTION).unwrap()),
    )
    .await
        < 1
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the controller stopped working after rejections"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        bindings_with_selector(
            &vapbs,
            &names,
            Some(&serde_json::from_str(EXEMPTION).unwrap())
        )
        .await,
        n,
        "no binding reverted"
    );

    let templates: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "templates.gatekeeper.sh",
            "v1",
            "ConstraintTemplate",
            "constrainttemplates",
        ),
    );
    let _ = templates.delete(&lower, &Default::default()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    controller.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
