//! Coexist mode against the **real Gatekeeper** (v3.23.1, `tests/control-plane/gatekeeper-up`):
//! Gatekeeper's own ConstraintTemplate CRD, its webhook, audit and status operations running,
//! its `generate` operation off; vapgen in-process with `--manage-crds` (README "Modes"), as
//! `vapgen run` builds its configuration.
//!
//! Gatekeeper runs beside a control plane of its own ([`GatekeeperControlPlane`]), not the one
//! the other cluster tests share, so its webhook never sees their requests. Outside CI the test
//! skips loudly when Gatekeeper is not built; under `CI=true` that is a failure.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use vapgen::runtime::{Runtime, RuntimeConfig};
use vapgen_tests::coexist::{owner_constraint, owner_template};
use vapgen_tests::gatekeeper::GatekeeperControlPlane;

const KIND: &str = "K8sCoexistOwner";
const CONSTRAINT: &str = "require-owner";
const GK_DENIAL: &str = "admission webhook \"validation.gatekeeper.sh\" denied the request";

/// A K8sNativeValidation template of our own: objects must carry the label `params.label`.
fn template() -> Value {
    owner_template(KIND, "coexist")
}

/// The constraint: ConfigMaps in `ns` need an `owner` label, denied at the enforcement
/// `points` (`validation.gatekeeper.sh`, `vap.k8s.io`, `audit.gatekeeper.sh`).
fn constraint(ns: &str, points: &[&str]) -> Value {
    owner_constraint(KIND, CONSTRAINT, ns, points)
}

fn configmap(ns: &str, name: &str, owner: bool) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: owner.then(|| [("owner".to_owned(), "me".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// Sends an AdmissionReview for a CREATE of `cm` straight to Gatekeeper's webhook (TLS checked
/// against the CA of its caBundle) and returns `(allowed, message)`. This sees Gatekeeper's
/// verdict even where a VAP denies the request before the API server calls the webhook.
fn ask_webhook(cp: &GatekeeperControlPlane, cm: &ConfigMap) -> (bool, String) {
    let url = cp
        .env("VAPGEN_GATEKEEPER_WEBHOOK_URL")
        .expect("webhook url");
    let ns = cm.metadata.namespace.clone().unwrap_or_default();
    let name = cm.metadata.name.clone().unwrap_or_default();
    let mut object = serde_json::to_value(cm).expect("configmap json");
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("ConfigMap");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "coexist", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": name, "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "coexist-test"}, "object": object
        }
    });
    let ca = cp.dir().join("gatekeeper-certs/ca.crt");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(&ca)
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(review.to_string())
        .arg(url)
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("AdmissionReview json");
    let response = &answer["response"];
    (
        response["allowed"].as_bool().expect("response.allowed"),
        response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

/// Polls dry-run creates of `cm` until Gatekeeper's webhook denies it; returns the message.
async fn wait_webhook_denied(cms: &Api<ConfigMap>, cm: &ConfigMap) -> String {
    let start = Instant::now();
    loop {
        let last = match vapgen_tests::dry_run_create(cms, cm).await {
            Err(kube::Error::Api(s)) if s.message.contains(GK_DENIAL) => return s.message,
            Ok(_) => "allowed".to_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Gatekeeper's webhook did not deny {:?} within 60 s; last outcome: {last}",
            cm.metadata.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `userAgent`s of the successful writes (create, update, patch, delete) the audit log holds
/// for `resource`, optionally of one object.
fn writers(audit_log: &Path, resource: &str, name: Option<&str>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["subresource"].is_null()
                && name.is_none_or(|n| e["objectRef"]["name"] == n)
                && ["create", "update", "patch", "delete"]
                    .contains(&e["verb"].as_str().unwrap_or(""))
                && (200..300).contains(&e["responseStatus"]["code"].as_u64().unwrap_or(0))
                && !e["requestURI"].as_str().unwrap_or("").contains("dryRun=")
        })
        .map(|e| e["userAgent"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn is_gatekeeper(user_agent: &str) -> bool {
    user_agent.starts_with("gatekeeper")
}

/// The namespace given to scope sync as exempt (Gatekeeper's `--exempt-namespace`).
const EXEMPT: &str = "coexist-exempt";

/// Step 6: scope sync follows the real Gatekeeper's objects.
/// * The VAP's `matchConstraints` is Gatekeeper's `validation.gatekeeper.sh` webhook: its
///   namespaceSelector, objectSelector and matchPolicy as they are, one resource rule per
///   webhook rule; the exempt namespace is a match condition.
/// * Gatekeeper's `Config` excluding the test namespace for the webhook process: within the
///   watch's latency the VAP gets the global-exclusion condition, and the violating ConfigMap
///   is then admitted; removing the exclusion restores the denial.
async fn scope_sync_follows_gatekeepers_objects(client: &kube::Client, ns: &str) {
    let vwc_resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
        ),
        "validatingwebhookconfigurations",
    );
    let vwc = get(
        client,
        &vwc_resource,
        "gatekeeper-validating-webhook-configuration",
    )
    .await
    .expect("Gatekeeper's ValidatingWebhookConfiguration");
    let webhook = vwc["webhooks"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == "validation.gatekeeper.sh"))
        .expect("the validation.gatekeeper.sh webhook")
        .clone();
    let vap = get(client, &vap_resource(), &policy_name(KIND))
        .await
        .expect("the VAP");
    let mc = &vap["spec"]["matchConstraints"];
    eprintln!(
        "coexist: scope sync: webhook {webhook}\ncoexist: scope sync: VAP matchConstraints {mc}"
    );
    for field in ["objectSelector", "matchPolicy"] {
        assert_eq!(
            mc[field], webhook[field],
            "matchConstraints.{field} follows the webhook"
        );
    }
    // The webhook's namespaceSelector, then vapgen's own namespace exemption.
    let mut expressions = webhook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    expressions.push(
        json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
        "values": [SYSTEM_NAMESPACE]}),
    );
    assert_eq!(
        mc["namespaceSelector"]["matchExpressions"],
        Value::Array(expressions),
        "matchConstraints.namespaceSelector is the webhook's plus vapgen's own namespace"
    );
    let rules = webhook["rules"].as_array().expect("webhook rules");
    let resource_rules = mc["resourceRules"].as_array().expect("resourceRules");
    assert_eq!(
        resource_rules.len(),
        rules.len(),
        "one resource rule per webhook rule"
    );
    for (r, w) in resource_rules.iter().zip(rules) {
        for field in ["apiGroups", "apiVersions", "resources", "operations"] {
            assert_eq!(r[field], w[field], "resource rule {field}: {r} vs {w}");
        }
    }
    let conditions = |vap: &Value| -> Vec<String> {
        vap["spec"]["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let names = conditions(&vap);
    assert!(
        names.iter().any(|n| n.contains("global_exempted")),
        "the exempt namespace is a condition: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("global_excluded")),
        "{names:?}"
    );

    // Gatekeeper's Config excludes the test namespace for its webhook.
    let config_resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("config.gatekeeper.sh", "v1alpha1", "Config"),
        "configs",
    );
    let config = |excluded: &[&str]| {
        json!({
            "apiVersion": "config.gatekeeper.sh/v1alpha1",
            "kind": "Config",
            "metadata": {"name": "config", "namespace": "gatekeeper-system"},
            "spec": {"match": [{"excludedNamespaces": excluded, "processes": ["webhook"]}]}
        })
    };
    let configs = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "gatekeeper-system",
        &config_resource,
    );
    let pp = kube::api::PatchParams::apply("coexist-test").force();
    configs
        .patch("config", &pp, &kube::api::Patch::Apply(config(&[ns])))
        .await
        .expect("apply Gatekeeper's Config");
    let changed = Instant::now();
    let vap = wait_object(
        client,
        &vap_resource(),
        &policy_name(KIND),
        "the VAP with Gatekeeper's Config exclusion",
        |v| conditions(v).iter().any(|n| n.contains("global_excluded")),
    )
    .await;
    eprintln!(
        "coexist: scope sync: the Config's exclusion reached the VAP in {:.2} s: {:?}",
        changed.elapsed().as_secs_f64(),
        conditions(&vap)
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    // The API server's admission picks up the changed policy shortly after it is stored.
    let cm = configmap(ns, "excluded-no-owner", false);
    let deadline = Instant::now() + vapgen_tests::ENFORCEMENT_TIMEOUT;
    while let Err(e) = vapgen_tests::dry_run_create(&cms, &cm).await {
        assert!(
            Instant::now() < deadline,
            "the violating ConfigMap in the namespace Gatekeeper's Config excludes was still denied: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "coexist: scope sync: the excluded namespace is admitted {:.2} s after the Config change",
        changed.elapsed().as_secs_f64()
    );

    configs
        .patch("config", &pp, &kube::api::Patch::Apply(config(&[])))
        .await
        .expect("clear Gatekeeper's Config");
    wait_object(
        client,
        &vap_resource(),
        &policy_name(KIND),
        "the VAP without the exclusion",
        |v| !conditions(v).iter().any(|n| n.contains("global_excluded")),
    )
    .await;
    vapgen_tests::wait_denied(
        &cms,
        &configmap(ns, "again-no-owner", false),
        &policy_name(KIND),
    )
    .await;
}

/// The whole coexist story on one control plane with the real Gatekeeper:
/// 1. Gatekeeper alone, `generate` off: it ingests the template but writes no constraint CRD
///    and no VAP (README "Modes": that is why coexist runs vapgen with `--manage-crds`);
/// 2. vapgen starts: it creates the constraint CRD and the VAP `gatekeeper-<template>`;
/// 3. a constraint scoped to `validation.gatekeeper.sh`: Gatekeeper's webhook denies the
///    violating ConfigMap, vapgen makes no binding (state `none`);
/// 4. the constraint rescoped to `vap.k8s.io` (and Gatekeeper's audit): vapgen makes the
///    binding, the VAP denies, and Gatekeeper's webhook itself now admits the violating object;
///    a compliant one passes; Gatekeeper's audit and vapgen's status sit side by side;
/// 5. no VAP, binding or constraint CRD was ever written by Gatekeeper (audit log);
/// 6. scope sync follows Gatekeeper's webhook configuration and Config (see
///    [`scope_sync_follows_gatekeepers_objects`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vapgen_generates_beside_the_real_gatekeeper() {
    let test_start = Instant::now();
    let Some(cp) = tokio::task::block_in_place(GatekeeperControlPlane::start) else {
        return;
    };
    let client = cp.client().await;
    let ns = vapgen_tests::fresh_namespace(&client, "coexist").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let policy = policy_name(KIND);
    let binding = binding_name(KIND, CONSTRAINT);
    let crd_name = format!("{}.constraints.gatekeeper.sh", KIND.to_ascii_lowercase());

    // --- 1. Gatekeeper alone ------------------------------------------------------------------
    let tname = KIND.to_ascii_lowercase();
    apply(&client, &template_resource(), &template()).await;
    // Gatekeeper ingests it (its status controller writes status.created) but, with generate
    // off, cannot watch the constraint kind: no CRD. Its template reconcile fails ("no matches
    // for kind") and retries with backoff until vapgen creates the CRD.
    let t = wait_object(
        &client,
        &template_resource(),
        &tname,
        "Gatekeeper's status of the template",
        |o| o.pointer("/status/created").is_some(),
    )
    .await;
    eprintln!(
        "coexist: Gatekeeper's template status before vapgen runs: {}",
        t["status"]
    );
    // A generating Gatekeeper creates the CRD at once and the VAP ≈3 s later: give it 6 s.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(6) {
        assert!(
            get(&client, &crd_resource(), &crd_name).await.is_none(),
            "Gatekeeper created the constraint CRD with generate off"
        );
        let vaps = Api::<kube::api::DynamicObject>::all_with(client.clone(), &vap_resource())
            .list(&Default::default())
            .await
            .expect("list VAPs");
        assert!(
            vaps.items.is_empty(),
            "a VAP exists with only Gatekeeper (generate off) running: {:?}",
            vaps.items
                .iter()
                .map(|v| &v.metadata.name)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // --- 2. vapgen in coexist mode --------------------------------------------------------------
    // Coexist keeps Gatekeeper's ConstraintTemplate CRD (no install_template_crd); vapgen
    // needs only its namespace (lease, canary).
    let ns_obj =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    apply(&client, &ns_resource(), &ns_obj).await;
    let wasm = Runtime::new(RuntimeConfig::default()).expect("wasm runtime");
    let decider = wasm.load_bundled().expect("bundled module");
    let vapgen_start = Instant::now();
    let controller = vapgen::controller::start(
        client.clone(),
        decider,
        coexist_config("coexist", "vapgen-tests", &[EXEMPT]),
    )
    .await
    .expect("start vapgen");
    let crd = wait_object(
        &client,
        &crd_resource(),
        &crd_name,
        "the constraint CRD",
        |_| true,
    )
    .await;
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"], "vapgen",
        "{}",
        crd["metadata"]
    );
    let vap = wait_object(&client, &vap_resource(), &policy, "the VAP", |_| true).await;
    eprintln!(
        "coexist: vapgen made the CRD and the VAP {:.1} s after it started",
        vapgen_start.elapsed().as_secs_f64()
    );
    assert_eq!(vap["spec"]["paramKind"]["kind"], KIND);
    // Gatekeeper's template reconcile has failed (and backed off exponentially) since the
    // template appeared; the CRD's events requeue it at once, but those runs come before its
    // REST mapper serves the new kind and fail too. Left alone, its next try came 41.6 s after
    // vapgen made the CRD (twice, after ~7 s without a CRD; the delay doubles per failure, up
    // to controller-runtime's 1000 s cap), and until then its webhook and audit ignore the
    // kind. Nudge it instead: once the kind is served, touch the template until Gatekeeper
    // reports it by pod.
    let nudged = Instant::now();
    let mut nudges = 0u32;
    let t = loop {
        let t = get(&client, &template_resource(), &tname)
            .await
            .expect("template");
        if t.pointer("/status/byPod/0/observedGeneration").is_some() {
            break t;
        }
        assert!(
            nudged.elapsed() < Duration::from_secs(60),
            "Gatekeeper never reported the template by pod after {nudges} nudges: {}",
            t["status"]
        );
        let served = client
            .list_api_group_resources("constraints.gatekeeper.sh/v1beta1")
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.kind == KIND));
        if served {
            nudges += 1;
            let patch =
                json!({"metadata": {"annotations": {"vapgen.test/nudge": nudges.to_string()}}});
            merge(&client, &template_resource(), &tname, &patch).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "coexist: Gatekeeper reported the template by pod {:.1} s after vapgen started \
         ({nudges} nudge(s)): {}",
        vapgen_start.elapsed().as_secs_f64(),
        t["status"]
    );

    // --- 3. enforced by Gatekeeper's webhook only -------------------------------------------------
    let c_start = Instant::now();
    apply_constraint(&client, &constraint(&ns, &["validation.gatekeeper.sh"])).await;
    let msg = wait_webhook_denied(&cms, &configmap(&ns, "bad", false)).await;
    eprintln!(
        "coexist: Gatekeeper's webhook denied {:.1} s after the constraint was created: {msg}",
        c_start.elapsed().as_secs_f64()
    );
    assert!(msg.contains("coexist: label owner is required"), "{msg}");
    let c = wait_object(
        &client,
        &constraint_resource(KIND),
        CONSTRAINT,
        "vapgen's status `none`",
        |o| state(o) == "none",
    )
    .await;
    assert!(
        get(&client, &vapb_resource(), &binding).await.is_none(),
        "a binding for a constraint scoped to validation.gatekeeper.sh only"
    );
    eprintln!("coexist: constraint status (webhook-only): {}", c["status"]);
    vapgen_tests::expect_allowed(&cms, &configmap(&ns, "good", true)).await;

    // --- 4. enforced by the VAP only ---------------------------------------------------------------
    apply_constraint(
        &client,
        &constraint(&ns, &["vap.k8s.io", "audit.gatekeeper.sh"]),
    )
    .await;
    let b = wait_object(&client, &vapb_resource(), &binding, "the binding", |_| true).await;
    assert_eq!(b["spec"]["validationActions"], json!(["Deny"]));
    let status = vapgen_tests::wait_denied(&cms, &configmap(&ns, "bad", false), &policy).await;
    assert!(
        status
            .message
            .contains(&vapgen_tests::denial_prefix(&policy))
            && status.message.contains("coexist: label owner is required"),
        "{}",
        status.message
    );
    vapgen_tests::expect_allowed(&cms, &configmap(&ns, "good", true)).await;
    // Gatekeeper's webhook no longer enforces it (the API server never calls it for the denied
    // request, since the VAP plugin runs first: ask it directly). Its constraint cache follows
    // the update through a watch: poll.
    let start = Instant::now();
    loop {
        let (allowed, m) = ask_webhook(&cp, &configmap(&ns, "bad", false));
        if allowed {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Gatekeeper's webhook still denies a constraint scoped to vap.k8s.io: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = wait_object(
        &client,
        &constraint_resource(KIND),
        CONSTRAINT,
        "vapgen's status `generated`",
        |o| state(o) == "generated",
    )
    .await;

    // --- 5. who wrote what, and whose status survived ----------------------------------------------
    // Gatekeeper's audit (every 5 s here; it audits a scoped constraint only when
    // audit.gatekeeper.sh is among its enforcement points) and status operation write the
    // constraint's status beside vapgen's: wait for an audit pass over the constraint, then
    // vapgen's part must still be there.
    let c = if c.pointer("/status/auditTimestamp").is_some() {
        c
    } else {
        wait_object(
            &client,
            &constraint_resource(KIND),
            CONSTRAINT,
            "Gatekeeper's audit status",
            |o| o.pointer("/status/auditTimestamp").is_some(),
        )
        .await
    };
    let c = get(&client, &constraint_resource(KIND), CONSTRAINT)
        .await
        .unwrap_or(c);
    eprintln!(
        "coexist: constraint status (vap-only, after audit): {}",
        c["status"]
    );
    assert_eq!(state(&c), "generated", "{}", c["status"]);
    assert!(c.pointer("/status/byPod").is_some(), "{}", c["status"]);
    let t = get(&client, &template_resource(), &tname)
        .await
        .expect("template");
    eprintln!(
        "coexist: template status (Gatekeeper's CRD): {}",
        t["status"]
    );
    if vapgen_status(&t).is_null() {
        eprintln!(
            "coexist: NOTE: status.vapgen of the template is not stored: Gatekeeper's \
             ConstraintTemplate CRD has no x-kubernetes-preserve-unknown-fields on status, so \
             the API server prunes vapgen's status there"
        );
    }

    let audit = cp.audit_log();
    // The audit log is written after each response: give the last writes a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (resource, name) in [
        ("validatingadmissionpolicies", None),
        ("validatingadmissionpolicybindings", None),
        ("customresourcedefinitions", Some(crd_name.as_str())),
    ] {
        let agents = writers(&audit, resource, name);
        eprintln!("coexist: writers of {resource} {name:?}: {agents:?}");
        assert!(
            !agents.is_empty(),
            "no writes of {resource} {name:?} in the audit log"
        );
        assert!(
            !agents.iter().any(|a| is_gatekeeper(a)),
            "Gatekeeper wrote {resource} {name:?} with generate off: {agents:?}"
        );
    }
    let template_status_writes = std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["objectRef"]["resource"] == "constrainttemplates"
                && e["objectRef"]["subresource"] == "status"
        })
        .map(|e| e["userAgent"].as_str().unwrap_or("").to_owned())
        .fold(
            std::collections::BTreeMap::<String, usize>::new(),
            |mut m, a| {
                *m.entry(a).or_default() += 1;
                m
            },
        );
    eprintln!("coexist: template status writes by user agent: {template_status_writes:?}");
    // The user-agent check above can see Gatekeeper: its status writes carry its agent.
    assert!(
        template_status_writes.keys().any(|a| is_gatekeeper(a)),
        "no template status write by Gatekeeper's user agent: {template_status_writes:?}"
    );
    // The API server reached the webhook every time (failurePolicy Ignore would hide it).
    let failed_open: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("failed-open.validating.webhook.admission.k8s.io"))
        .map(|l| l.chars().take(300).collect())
        .collect();
    assert!(
        failed_open.is_empty(),
        "requests failed open at Gatekeeper's webhook: {failed_open:#?}"
    );

    // --- 6. scope sync -------------------------------------------------------------------------
    scope_sync_follows_gatekeepers_objects(&client, &ns).await;

    controller.stop().await;
    eprintln!(
        "coexist: test body took {:.1} s (control plane {:.1} s, Gatekeeper {:.1} s)",
        test_start.elapsed().as_secs_f64(),
        cp.up_time.as_secs_f64(),
        cp.gatekeeper_time.as_secs_f64()
    );
    drop(cp);
}
