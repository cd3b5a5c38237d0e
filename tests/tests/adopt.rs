//! Adoption with no gap (issue 12 item 5), against the **real Gatekeeper** v3.23.1: a cluster
//! where Gatekeeper has been generating (its `generate` operation on: it made the constraint
//! CRD, the VAP and the binding, owned by its template and constraint) switches to vapgen —
//! Gatekeeper restarted without `generate`, then vapgen (coexist mode, `--manage-crds`)
//! started — and back again.
//!
//! Asserted: vapgen adopts the objects in place (same UIDs, 0 deletes), writes each at most
//! once and the binding not at all (its content is already vapgen's: the built-in variables are
//! byte-identical to Gatekeeper's), Gatekeeper writes none of them once `generate` is off, and
//! a probe that keeps sending a violating request from before the switch to after it is denied
//! by the VAP every time. Write counts come from the API server's audit log (Metadata level for
//! admissionregistration.k8s.io and for every write, `tests/control-plane/up`).
//!
//! Gatekeeper runs beside a control plane of its own ([`GatekeeperControlPlane`]). Outside CI
//! the test skips loudly when Gatekeeper is not built; under `CI=true` that is a failure.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use vapgen::controller::podstatus::dash_packer;
use vapgen::runtime::{Runtime, RuntimeConfig};
use vapgen_tests::coexist::{
    VAPGEN_MATCH_TEXT, audit_lines, by_pod, object_writes_since, owner_constraint, owner_template,
    writes_summary,
};
use vapgen_tests::gatekeeper::{GatekeeperControlPlane, GatekeeperOptions};

const KIND: &str = "K8sAdoptOwner";
const CONSTRAINT: &str = "require-owner";
/// A template vapgen reports an error for.
const BAD_KIND: &str = "K8sAdoptBad";

/// A K8sNativeValidation template: objects must carry the label `params.label`.
fn template() -> Value {
    owner_template(KIND, "adopt")
}

/// ConfigMaps in `ns` need an `owner` label; enforced by the VAP only (`vap.k8s.io`), so every
/// denial the probe sees is the VAP's, never Gatekeeper's webhook's.
fn constraint(ns: &str) -> Value {
    owner_constraint(KIND, CONSTRAINT, ns, &["vap.k8s.io"])
}

/// vapgen's and Gatekeeper's writes to the kind's objects and to vapgen's canaries.
fn writes_since(audit_log: &Path, skip: usize) -> vapgen_tests::coexist::Writes {
    object_writes_since(audit_log, skip, |n| {
        n.contains(&KIND.to_ascii_lowercase()) || n.starts_with("vapgen-canary-")
    })
}

fn violating(ns: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("no-owner".into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// Gatekeeper as vapgen's coexist mode wants it: `generate` off, and
/// `--default-create-vap-binding-for-constraints=false`. Without that flag a Gatekeeper pod
/// starting without `generate` deleted the binding of a live constraint it had generated (2 runs
/// of 2): its constraint reconciler, asked about a kind it does not watch yet, takes the
/// constraint for deleted and removes the binding its controller reference names (the delete
/// path does not check `generate`; with the flag false it computes "no binding" and leaves it).
fn coexisting() -> GatekeeperOptions {
    GatekeeperOptions {
        extra_args: vec!["--default-create-vap-binding-for-constraints=false".into()],
        ..GatekeeperOptions::default()
    }
}

/// What the probe saw: denials by the VAP, and every other outcome.
#[derive(Debug, Default)]
struct Probe {
    denied: u64,
    other: Vec<String>,
}

/// Sends the violating dry-run create every 50 ms until `stop`; every answer must be the VAP's
/// denial.
fn start_probe(
    cms: Api<ConfigMap>,
    ns: String,
    policy: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Probe> {
    tokio::spawn(async move {
        let mut p = Probe::default();
        let cm = violating(&ns);
        let wanted = vapgen_tests::denial_prefix(&policy);
        while !stop.load(Ordering::Relaxed) {
            match vapgen_tests::dry_run_create(&cms, &cm).await {
                Err(kube::Error::Api(s))
                    if s.message.contains(&wanted) && s.message.contains("adopt: label owner") =>
                {
                    p.denied += 1
                }
                Ok(_) => p.other.push("allowed".into()),
                Err(e) => p.other.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    })
}

fn uid(o: &Value) -> &str {
    o.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn conditions_text(vap: &Value) -> String {
    vap["spec"]["matchConditions"].to_string()
}

/// Gatekeeper generating → vapgen (Gatekeeper's `generate` off) → Gatekeeper generating again,
/// with a violating request sent every 50 ms throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vapgen_adopts_gatekeepers_objects_without_a_gap() {
    let generating = GatekeeperOptions {
        generate: true,
        wait_for_vapb_seconds: 1,
        ..GatekeeperOptions::default()
    };
    let Some(mut cp) =
        tokio::task::block_in_place(|| GatekeeperControlPlane::start_with(&generating))
    else {
        return;
    };
    let client = cp.client().await;
    let ns = vapgen_tests::fresh_namespace(&client, "adopt").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let policy = policy_name(KIND);
    let binding = binding_name(KIND, CONSTRAINT);
    let crd_name = format!("{}.constraints.gatekeeper.sh", KIND.to_ascii_lowercase());
    let audit = cp.audit_log();

    // --- 1. Gatekeeper generates -----------------------------------------------------------------
    let (gk_vap, gk_vapb) =
        gatekeeper_generates(&client, &template(), &constraint(&ns), &policy, &binding).await;
    let gk_crd = get(&client, &crd_resource(), &crd_name)
        .await
        .expect("Gatekeeper's constraint CRD");
    vapgen_tests::wait_denied(&cms, &violating(&ns), &policy).await;
    let by_gatekeeper = writes_since(&audit, 0);
    eprintln!(
        "adopt: Gatekeeper generated: {}",
        writes_summary(&by_gatekeeper)
    );
    assert!(
        by_gatekeeper
            .keys()
            .any(|(r, n, v, a)| r == "validatingadmissionpolicies"
                && *n == policy
                && v == "create"
                && a == "gatekeeper"),
        "Gatekeeper (generate on) did not create the VAP: {}",
        writes_summary(&by_gatekeeper)
    );
    assert!(
        !conditions_text(&gk_vap).contains(VAPGEN_MATCH_TEXT),
        "the VAP has vapgen's match conditions before vapgen ran"
    );

    // --- 2. the switch: Gatekeeper's generate off, then vapgen on --------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let probe = start_probe(cms.clone(), ns.clone(), policy.clone(), stop.clone());
    let switch = Instant::now();
    tokio::task::block_in_place(|| cp.restart_gatekeeper(&coexisting()));
    eprintln!(
        "adopt: Gatekeeper restarted without generate in {:.1} s",
        switch.elapsed().as_secs_f64()
    );
    // vapgen's namespace (lease, canary); coexist keeps Gatekeeper's ConstraintTemplate CRD.
    let ns_obj =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    apply(&client, &ns_resource(), &ns_obj).await;
    let mark = audit_lines(&audit);
    let wasm = Runtime::new(RuntimeConfig::default()).expect("wasm runtime");
    let decider = wasm.load_bundled().expect("bundled module");
    let vapgen_start = Instant::now();
    let controller = vapgen::controller::start(
        client.clone(),
        decider,
        coexist_config("adopt", "vapgen", &[]),
    )
    .await
    .expect("start vapgen");
    let vap = wait_object(
        &client,
        &vap_resource(),
        &policy,
        "vapgen's VAP content",
        |o| conditions_text(o).contains(VAPGEN_MATCH_TEXT),
    )
    .await;
    wait_object(
        &client,
        &constraint_resource(KIND),
        CONSTRAINT,
        "vapgen's constraint status `generated`",
        |o| state(o) == "generated",
    )
    .await;
    eprintln!(
        "adopt: vapgen adopted the VAP {:.1} s after it started",
        vapgen_start.elapsed().as_secs_f64()
    );
    // A quiet spell: nothing more may be written (and the probe keeps running).
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = probe.await.expect("probe task");
    tokio::time::sleep(Duration::from_secs(1)).await; // the audit log trails the responses
    let adoption = writes_since(&audit, mark);
    eprintln!(
        "adopt: writes from vapgen's start on ({:.1} s): {}",
        vapgen_start.elapsed().as_secs_f64(),
        writes_summary(&adoption)
    );
    eprintln!(
        "adopt: probe during the switch: {} denied by the VAP, {} other: {:?}",
        seen.denied,
        seen.other.len(),
        seen.other
    );
    assert!(
        seen.other.is_empty(),
        "the violating request was not denied by the VAP: {:?}",
        seen.other
    );
    assert!(seen.denied > 0);
    // Adopted in place: the same objects.
    let vapb = get(&client, &vapb_resource(), &binding)
        .await
        .expect("binding");
    let crd = get(&client, &crd_resource(), &crd_name).await.expect("CRD");
    assert_eq!(uid(&vap), uid(&gk_vap), "the VAP was re-created");
    assert_eq!(uid(&vapb), uid(&gk_vapb), "the binding was re-created");
    assert_eq!(uid(&crd), uid(&gk_crd), "the constraint CRD was re-created");
    let count = |resource: &str, name: &str| -> u32 {
        adoption
            .iter()
            .filter(|((r, n, _, _), _)| r == resource && n == name)
            .map(|(_, c)| c)
            .sum()
    };
    // Canary objects (`vapgen-canary-<kind>`) are vapgen's own, made and removed while it
    // proves readiness; every other object must not be deleted.
    let deletes: Vec<_> = adoption
        .keys()
        .filter(|(_, n, v, _)| v.starts_with("delete") && !n.starts_with("vapgen-canary-"))
        .collect();
    assert!(deletes.is_empty(), "deletes during adoption: {deletes:?}");
    assert!(
        !adoption.keys().any(|(_, _, _, a)| a == "gatekeeper"),
        "Gatekeeper (generate off) wrote: {}",
        writes_summary(&adoption)
    );
    assert_eq!(
        count("validatingadmissionpolicies", &policy),
        1,
        "VAP writes: {}",
        writes_summary(&adoption)
    );
    assert_eq!(
        count("validatingadmissionpolicybindings", &binding),
        0,
        "the binding's content is already vapgen's; writes: {}",
        writes_summary(&adoption)
    );
    assert!(
        count("customresourcedefinitions", &crd_name) <= 1,
        "{}",
        writes_summary(&adoption)
    );

    // --- 2b. vapgen's state in Gatekeeper's status.byPod (issue 12 item 4) ------------------------
    // vapgen writes Gatekeeper's per-pod status objects under its Lease name; Gatekeeper's
    // status operation copies them into byPod beside its own pod's entry.
    let tname = KIND.to_ascii_lowercase();
    let t = wait_object(
        &client,
        &template_resource(),
        &tname,
        "vapgen's entry in the template's status.byPod",
        |o| by_pod(o, "vapgen").is_some_and(|e| e["vapGenerationStatus"]["state"] == "generated"),
    )
    .await;
    eprintln!("adopt: template status.byPod: {}", t["status"]["byPod"]);
    let c = wait_object(
        &client,
        &constraint_resource(KIND),
        CONSTRAINT,
        "vapgen's entry in the constraint's status.byPod",
        |o| by_pod(o, "vapgen").is_some(),
    )
    .await;
    let entry = by_pod(&c, "vapgen").expect("entry").clone();
    eprintln!("adopt: constraint status.byPod entry of vapgen: {entry}");
    assert_eq!(
        entry["enforcementPointsStatus"][0]["enforcementPoint"],
        "vap.k8s.io"
    );
    assert_eq!(entry["enforcementPointsStatus"][0]["state"], "generated");
    assert_eq!(entry["operations"], json!(["generate"]));
    // A template vapgen cannot generate (its only operation, DELETE, is outside Gatekeeper's
    // webhook rules: scope sync has no common operation) shows vapgen's error in byPod.
    let mut bad = template();
    bad["metadata"]["name"] = json!(BAD_KIND.to_ascii_lowercase());
    bad["spec"]["crd"]["spec"]["names"]["kind"] = json!(BAD_KIND);
    bad["spec"]["targets"][0]["operations"] = json!(["DELETE"]);
    apply(&client, &template_resource(), &bad).await;
    let t = wait_object(
        &client,
        &template_resource(),
        &BAD_KIND.to_ascii_lowercase(),
        "vapgen's error in the bad template's status.byPod",
        |o| by_pod(o, "vapgen").is_some_and(|e| e["vapGenerationStatus"]["state"] == "error"),
    )
    .await;
    let entry = by_pod(&t, "vapgen").expect("entry");
    eprintln!("adopt: bad template's byPod entry of vapgen: {entry}");
    assert!(
        entry["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{entry}"
    );

    // vapgen's status objects have no owner to be collected with: vapgen deletes them when
    // their template or constraint goes.
    let statuses = |kind: &str, plural: &str| {
        Api::<kube::api::DynamicObject>::namespaced_with(
            client.clone(),
            "gatekeeper-system",
            &kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk("status.gatekeeper.sh", "v1beta1", kind),
                plural,
            ),
        )
    };
    let template_statuses = statuses(
        "ConstraintTemplatePodStatus",
        "constrainttemplatepodstatuses",
    );
    let bad_status = dash_packer(&["vapgen", &BAD_KIND.to_ascii_lowercase()]).expect("name");
    assert!(
        template_statuses
            .get_opt(&bad_status)
            .await
            .expect("get")
            .is_some(),
        "vapgen's status object {bad_status} of the bad template"
    );
    delete(
        &client,
        &template_resource(),
        &BAD_KIND.to_ascii_lowercase(),
    )
    .await;
    let mut second = constraint(&ns);
    second["metadata"]["name"] = json!("second");
    apply_constraint(&client, &second).await;
    let constraint_statuses = statuses("ConstraintPodStatus", "constraintpodstatuses");
    let second_status =
        dash_packer(&["vapgen", &KIND.to_ascii_lowercase(), "second"]).expect("name");
    wait_for(
        "vapgen's status object of the second constraint",
        Duration::from_secs(30),
        || async {
            constraint_statuses
                .get_opt(&second_status)
                .await
                .ok()
                .flatten()
                .is_some()
        },
    )
    .await;
    delete(&client, &constraint_resource(KIND), "second").await;
    let gone = Instant::now();
    wait_for(
        "vapgen's status objects of the deleted template and constraint to go",
        Duration::from_secs(30),
        || async {
            template_statuses
                .get_opt(&bad_status)
                .await
                .ok()
                .flatten()
                .is_none()
                && constraint_statuses
                    .get_opt(&second_status)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
        },
    )
    .await;
    eprintln!(
        "adopt: vapgen deleted its status objects of a deleted template and constraint within {:.1} s",
        gone.elapsed().as_secs_f64()
    );

    // --- 3. the reverse switch: vapgen off, Gatekeeper's generate on -------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let probe = start_probe(cms.clone(), ns.clone(), policy.clone(), stop.clone());
    controller.stop().await;
    let mark = audit_lines(&audit);
    let back = Instant::now();
    tokio::task::block_in_place(|| cp.restart_gatekeeper(&generating));
    let vap = wait_object(
        &client,
        &vap_resource(),
        &policy,
        "Gatekeeper's VAP content again",
        |o| !conditions_text(o).contains(VAPGEN_MATCH_TEXT),
    )
    .await;
    eprintln!(
        "adopt: Gatekeeper (generate on) rewrote the VAP {:.1} s after its restart began",
        back.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = probe.await.expect("probe task");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reverse = writes_since(&audit, mark);
    eprintln!(
        "adopt: writes after the switch back to Gatekeeper: {}",
        writes_summary(&reverse)
    );
    eprintln!(
        "adopt: probe during the switch back: {} denied by the VAP, {} other: {:?}",
        seen.denied,
        seen.other.len(),
        seen.other
    );
    // Gatekeeper's own start-up is not gap-free: a generating pod, too, takes the live
    // constraint for deleted before it watches the kind, deletes the binding and creates it
    // again (then rewrote it 3-4 times) — in each of 3 runs; once the probe (every 50 ms) saw
    // 15 admitted requests in that gap. It is Gatekeeper's, so it is reported, not asserted.
    let gk_deletes = reverse
        .iter()
        .filter(|((_, _, v, a), _)| v.starts_with("delete") && a == "gatekeeper")
        .map(|(_, c)| c)
        .sum::<u32>();
    if gk_deletes > 0 || !seen.other.is_empty() {
        eprintln!(
            "adopt: NOTE: Gatekeeper (generate on) deleted {gk_deletes} object(s) at its start-up \
             and re-created them; the probe saw {} request(s) not denied",
            seen.other.len()
        );
    }
    // What the switch back must give: Gatekeeper owns and writes the same VAP again (not
    // re-created), no write by anyone else, and the VAP enforces at the end.
    assert_eq!(uid(&vap), uid(&gk_vap), "the VAP was re-created");
    assert!(
        !reverse.keys().any(|(_, _, _, a)| a != "gatekeeper"),
        "writes by someone other than Gatekeeper after vapgen stopped: {}",
        writes_summary(&reverse)
    );
    assert!(
        get(&client, &vapb_resource(), &binding).await.is_some(),
        "no binding after the switch back"
    );
    vapgen_tests::wait_denied(&cms, &violating(&ns), &policy).await;
    drop(cp);
}
