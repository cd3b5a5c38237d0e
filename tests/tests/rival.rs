//! Two generators never fight (issue 12 item 6), against the **real Gatekeeper** v3.23.1 with
//! its `generate` operation **on**: vapgen started in coexist mode beside it sees the Gatekeeper
//! pod in Gatekeeper's per-pod status objects (`status.operations` holds `generate`), says so
//! (the gauge `vapgen_rival_generators`, `status.vapgen` of the constraint, vapgen's entry in the
//! template's `status.byPod`, a Warning Event) and writes **no** VAP, binding or constraint CRD
//! while it runs. Gatekeeper is then restarted with `generate` off (and
//! `--default-create-vap-binding-for-constraints=false`, as `tests/tests/adopt.rs` explains):
//! its pod's status objects go with the old pod, vapgen re-plans every kind once, takes the
//! objects over and the binding exists.
//!
//! vapgen's writes are counted twice: by its own metric (`vapgen_writes_total`, target vap, vapb
//! or crd, verbs apply and delete) and in the API server's audit log (writes to the kind's VAP,
//! binding and CRD by anyone but Gatekeeper's user agent — the test itself writes none of them).
//!
//! Gatekeeper runs beside a control plane of its own ([`GatekeeperControlPlane`]). Outside CI
//! the test skips loudly when Gatekeeper is not built; under `CI=true` that is a failure.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{Value, json};
use vapgen::runtime::{Runtime, RuntimeConfig};
use vapgen_tests::coexist::{
    VAPGEN_MATCH_TEXT, audit_lines, by_pod, object_writes_since, owner_constraint, owner_template,
    writes_summary,
};
use vapgen_tests::gatekeeper::{GatekeeperControlPlane, GatekeeperOptions};

const KIND: &str = "K8sRivalOwner";
const CONSTRAINT: &str = "require-owner";
/// vapgen's Lease name: the id of its per-pod status objects.
const VAPGEN_ID: &str = "vapgen";
const GATEKEEPER_NAMESPACE: &str = "gatekeeper-system";

fn template() -> Value {
    owner_template(KIND, "rival")
}

fn constraint(ns: &str) -> Value {
    owner_constraint(KIND, CONSTRAINT, ns, &["vap.k8s.io"])
}

fn writes_since(audit_log: &Path, skip: usize) -> vapgen_tests::coexist::Writes {
    object_writes_since(audit_log, skip, |n| n.contains(&KIND.to_ascii_lowercase()))
}

fn template_pod_statuses(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "status.gatekeeper.sh",
            "v1beta1",
            "ConstraintTemplatePodStatus",
        ),
        "constrainttemplatepodstatuses",
    );
    Api::namespaced_with(client.clone(), GATEKEEPER_NAMESPACE, &ar)
}

/// The template's per-pod status objects: `status.id` → `status.operations`.
async fn pod_statuses(client: &kube::Client) -> BTreeMap<String, Value> {
    let lp = ListParams::default().labels(&format!(
        "internal.gatekeeper.sh/constrainttemplate-name={}",
        KIND.to_ascii_lowercase()
    ));
    template_pod_statuses(client)
        .list(&lp)
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|o| {
                    let v = serde_json::to_value(o).ok()?;
                    Some((v["status"]["id"].as_str()?.to_owned(), v["status"].clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// vapgen's successful writes of VAPs, bindings and CRDs by its own metric.
fn vapgen_object_writes(h: &vapgen::controller::Handles) -> u64 {
    h.metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("vapgen_writes_total{")
                && l.contains("outcome=\"ok\"")
                && (l.contains("verb=\"apply\"") || l.contains("verb=\"delete\""))
                && ["vap", "vapb", "crd"]
                    .iter()
                    .any(|t| l.contains(&format!("target=\"{t}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn rival_gauge(h: &vapgen::controller::Handles) -> Option<i64> {
    h.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("vapgen_rival_generators ")?.parse().ok())
}

fn by_others(w: &BTreeMap<(String, String, String, String), u32>) -> u32 {
    w.iter()
        .filter(|((_, _, _, a), _)| a != "gatekeeper")
        .map(|(_, c)| c)
        .sum()
}

/// vapgen's Events (on its Lease: no POD_NAME here) with `reason`, by their notes.
async fn events(client: &kube::Client, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .collect()
        })
        .unwrap_or_default()
}

/// Gatekeeper generating, vapgen started beside it: vapgen detects it and writes nothing; then
/// Gatekeeper's `generate` off: vapgen resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vapgen_yields_to_a_generating_gatekeeper_and_resumes_when_it_stops() {
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
    let ns = vapgen_tests::fresh_namespace(&client, "rival").await;
    let policy = policy_name(KIND);
    let binding = binding_name(KIND, CONSTRAINT);
    let audit = cp.audit_log();
    let gatekeeper_pod = cp
        .env("VAPGEN_GATEKEEPER_POD")
        .and_then(|p| p.split('/').nth(1))
        .unwrap_or("gatekeeper-controller-manager-0")
        .to_owned();

    // --- 1. Gatekeeper generates ------------------------------------------------------------------
    let (gk_vap, gk_vapb) =
        gatekeeper_generates(&client, &template(), &constraint(&ns), &policy, &binding).await;
    wait_for(
        "Gatekeeper's per-pod status object listing generate",
        Duration::from_secs(60),
        || async {
            pod_statuses(&client)
                .await
                .get(&gatekeeper_pod)
                .is_some_and(|s| s["operations"].to_string().contains("\"generate\""))
        },
    )
    .await;
    eprintln!(
        "rival: Gatekeeper's status object: {}",
        pod_statuses(&client).await[&gatekeeper_pod]
    );

    // --- 2. vapgen starts beside it: detects it, writes nothing -----------------------------------
    let ns_obj =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    apply(&client, &ns_resource(), &ns_obj).await;
    let mark = audit_lines(&audit);
    let wasm = Runtime::new(RuntimeConfig::default()).expect("wasm runtime");
    let decider = wasm.load_bundled().expect("bundled module");
    let start = Instant::now();
    let controller = vapgen::controller::start(
        client.clone(),
        decider,
        coexist_config("rival", VAPGEN_ID, &[]),
    )
    .await
    .expect("start vapgen");
    let h = controller.handles.clone();
    wait_for(
        "vapgen_rival_generators 1",
        Duration::from_secs(30),
        || async { rival_gauge(&h) == Some(1) },
    )
    .await;
    let detected = start.elapsed();
    eprintln!(
        "rival: vapgen saw the generating Gatekeeper {:.2} s after it started",
        detected.as_secs_f64()
    );
    let c = wait_object(
        &client,
        &constraint_resource(KIND),
        CONSTRAINT,
        "constraint status.vapgen paused",
        |o| state(o) == "paused",
    )
    .await;
    let message = vapgen_status(&c)["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    eprintln!("rival: constraint status.vapgen: {}", vapgen_status(&c));
    assert!(message.contains(&gatekeeper_pod), "{message}");
    wait_for(
        "vapgen's paused entry in the template's status.byPod",
        Duration::from_secs(60),
        || async {
            get(&client, &template_resource(), &KIND.to_ascii_lowercase())
                .await
                .is_some_and(|t| {
                    by_pod(&t, VAPGEN_ID).is_some_and(|e| {
                        e["errors"][0]["code"] == "vap_generation_paused"
                            && e["vapGenerationStatus"]["state"] == "paused"
                    })
                })
        },
    )
    .await;
    let t = get(&client, &template_resource(), &KIND.to_ascii_lowercase())
        .await
        .expect("template");
    eprintln!(
        "rival: template status.byPod entry of vapgen: {}",
        by_pod(&t, VAPGEN_ID).expect("entry")
    );
    wait_for(
        "vapgen's RivalGenerator Event",
        Duration::from_secs(30),
        || async {
            events(&client, "RivalGenerator")
                .await
                .iter()
                .any(|n| n.contains(&gatekeeper_pod))
        },
    )
    .await;
    // A quiet spell beside the generating Gatekeeper: vapgen writes none of its objects.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let beside = writes_since(&audit, mark);
    let by_metric = vapgen_object_writes(&h);
    eprintln!(
        "rival: writes in the {:.1} s beside the generating Gatekeeper: vapgen's metric {by_metric}; audit log: [{}]",
        start.elapsed().as_secs_f64(),
        writes_summary(&beside)
    );
    assert_eq!(by_metric, 0, "vapgen wrote VAPs, bindings or CRDs");
    assert_eq!(
        by_others(&beside),
        0,
        "writes by vapgen in the audit log: {}",
        writes_summary(&beside)
    );
    let vap = get(&client, &vap_resource(), &policy).await.expect("VAP");
    assert!(
        !vap["spec"]["matchConditions"]
            .to_string()
            .contains(VAPGEN_MATCH_TEXT),
        "the VAP has vapgen's content while Gatekeeper generates"
    );
    assert_eq!(vap["metadata"]["uid"], gk_vap["metadata"]["uid"]);

    // --- 3. Gatekeeper's generate off: vapgen resumes ---------------------------------------------
    let mark = audit_lines(&audit);
    let writes_before = vapgen_object_writes(&h);
    let restart = Instant::now();
    tokio::task::block_in_place(|| {
        cp.restart_gatekeeper(&GatekeeperOptions {
            extra_args: vec!["--default-create-vap-binding-for-constraints=false".into()],
            ..GatekeeperOptions::default()
        })
    });
    let restarted = restart.elapsed();
    wait_for(
        "vapgen_rival_generators 0",
        Duration::from_secs(30),
        || async { rival_gauge(&h) == Some(0) },
    )
    .await;
    let gone = restart.elapsed();
    let vap = wait_object(
        &client,
        &vap_resource(),
        &policy,
        "vapgen's VAP content",
        |o| {
            o["spec"]["matchConditions"]
                .to_string()
                .contains(VAPGEN_MATCH_TEXT)
        },
    )
    .await;
    let c = wait_object(
        &client,
        &constraint_resource(KIND),
        CONSTRAINT,
        "constraint status.vapgen generated",
        |o| state(o) == "generated",
    )
    .await;
    let resumed = restart.elapsed();
    eprintln!(
        "rival: Gatekeeper restarted without generate in {:.1} s; vapgen saw no rival {:.1} s and had \
         the VAP and binding {:.1} s after the restart began; constraint status.vapgen: {}",
        restarted.as_secs_f64(),
        gone.as_secs_f64(),
        resumed.as_secs_f64(),
        vapgen_status(&c)
    );
    let vapb = get(&client, &vapb_resource(), &binding)
        .await
        .expect("the binding exists after vapgen resumed");
    assert_eq!(
        vap["metadata"]["uid"], gk_vap["metadata"]["uid"],
        "re-created"
    );
    wait_for(
        "vapgen's RivalGeneratorGone Event",
        Duration::from_secs(30),
        || async { !events(&client, "RivalGeneratorGone").await.is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = writes_since(&audit, mark);
    eprintln!(
        "rival: writes after the restart: vapgen's metric {}; audit log: [{}]; binding uid kept: {}",
        vapgen_object_writes(&h) - writes_before,
        writes_summary(&after),
        vapb["metadata"]["uid"] == gk_vapb["metadata"]["uid"]
    );
    let deletes: Vec<_> = after
        .keys()
        .filter(|(_, _, v, a)| v.starts_with("delete") && a != "gatekeeper")
        .collect();
    assert!(deletes.is_empty(), "vapgen deleted: {deletes:?}");
    // At most one write per object for the take-over, and one more for the VAP: the restart
    // deletes Gatekeeper's webhook configuration (`gatekeeper-down`, before the status objects)
    // and makes it again (`gatekeeper-up`), and scope sync follows it — the VAP is written when
    // the rival goes (no webhook configuration: the default match rule) and again when the
    // webhook configuration is back.
    for ((r, n, _, a), c) in &after {
        let most = if r == "validatingadmissionpolicies" {
            2
        } else {
            1
        };
        assert!(
            a == "gatekeeper" || *c <= most,
            "{r}/{n} written {c} times by vapgen: {}",
            writes_summary(&after)
        );
    }
    // And then nothing: no flapping once both have settled.
    let mark = audit_lines(&audit);
    let settled = vapgen_object_writes(&h);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = writes_since(&audit, mark);
    eprintln!(
        "rival: writes in 5 s after that: vapgen's metric {}; audit log: [{}]",
        vapgen_object_writes(&h) - settled,
        writes_summary(&quiet)
    );
    assert_eq!(vapgen_object_writes(&h), settled);
    assert_eq!(by_others(&quiet), 0, "{}", writes_summary(&quiet));
    controller.stop().await;
    drop(cp);
}
