//! Chaos on the real API server (issue 5, item 3): several templates with many constraints,
//! random `generateVAP` flips, constraint edits, deletes and re-creates, and controller
//! restarts at random moments (in-process `vapgen::controller::start` with leader election;
//! sometimes the new replica starts before the old one stops, so the lease moves between
//! live replicas). Then quiesce and check that the live VAPs and bindings are exactly what
//! the bundled decision module makes of the final objects, and — from watches on VAPs and
//! bindings that run throughout, ordered by resourceVersion — that no binding ever existed
//! while its VAP did not.
//!
//! `VAPGEN_CHAOS_SEED` replays a run (the seed is printed); `VAPGEN_CHAOS_ROUNDS` (default 5);
//! `VAPGEN_CHAOS_WEAKEN=gatekeeper` runs the controllers with Gatekeeper's strategy (the
//! test-only `Weakened::gatekeeper()`), by hand, to see the test fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use vapgen::controller::Controller;
use vapgen::controller::compare::{vap_equal, vapb_equal};
use vapgen::controller::world::template_essence;
use vapgen::model::{BindingOutcome, PolicyOutcome, Settings, TemplateDecision};
use vapgen::render::{self, Owner};
use vapgen::runtime::{Decider, Runtime, RuntimeConfig};
use vapgen::snapshot;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const KINDS: usize = 3;
const CONSTRAINTS: usize = 5;

fn variant(v: usize, ns: &str) -> Value {
    let scoped = |point: &str| {
        json!({"enforcementAction": "scoped",
               "scopedEnforcementActions": [{"action": "deny", "enforcementPoints": [{"name": point}]}]})
    };
    match v % 6 {
        0 => json!({}),
        1 => json!({"enforcementAction": "warn"}),
        2 => json!({"enforcementAction": "dryrun"}),
        3 => scoped("vap.k8s.io"),
        4 => scoped("validation.gatekeeper.sh"),
        _ => json!({"match": {
            "kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}],
            "namespaces": [ns],
            "labelSelector": {"matchLabels": {"team": "a"}}
        }}),
    }
}

fn generate_vap(v: usize) -> Value {
    match v % 3 {
        0 => json!({"generateVAP": true}),
        1 => json!({"generateVAP": false}),
        _ => json!({}),
    }
}

/// One event of the VAP and binding watches.
#[derive(Clone, Debug)]
struct Seen {
    vap: bool,
    name: String,
    rv: u64,
    deleted: bool,
    /// `spec.policyName` of a binding.
    policy: String,
}

fn watch(
    client: &kube::Client,
    r: kube::api::ApiResource,
    vap: bool,
    prefixes: Vec<String>,
    out: Arc<Mutex<Vec<Seen>>>,
    relists: Arc<Mutex<u32>>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &r);
    tokio::spawn(async move {
        let mut s = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            let (o, deleted) = match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => (o, false),
                Ok(watcher::Event::Delete(o)) => (o, true),
                Ok(watcher::Event::Init) => {
                    *relists.lock().unwrap() += 1;
                    continue;
                }
                Ok(watcher::Event::InitDone) => continue,
                Err(e) => {
                    eprintln!("watch error: {e}");
                    continue;
                }
            };
            let v = serde_json::to_value(&o).expect("json");
            let name = snapshot::name_of(&v).to_string();
            if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                continue;
            }
            let rv = v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .expect("resourceVersion");
            let policy = v
                .pointer("/spec/policyName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            out.lock().unwrap().push(Seen {
                vap,
                name,
                rv,
                deleted,
                policy,
            });
        }
    })
}

/// Replays the watch events in resourceVersion order: a binding is created only while its
/// VAP exists, and a VAP is deleted only when no binding points at it.
fn bindings_always_had_a_policy(events: &[Seen]) -> Vec<String> {
    let mut evs = events.to_vec();
    evs.sort_by_key(|e| e.rv);
    let mut vaps: BTreeSet<String> = BTreeSet::new();
    let mut bindings: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for e in &evs {
        match (e.vap, e.deleted) {
            (true, false) => {
                vaps.insert(e.name.clone());
            }
            (true, true) => {
                vaps.remove(&e.name);
                for (b, p) in &bindings {
                    if *p == e.name {
                        problems.push(format!(
                            "rv {}: VAP {} deleted while binding {b} points at it",
                            e.rv, e.name
                        ));
                    }
                }
            }
            (false, false) => {
                if !bindings.contains_key(&e.name) && !vaps.contains(&e.policy) {
                    problems.push(format!(
                        "rv {}: binding {} created while VAP {} does not exist",
                        e.rv, e.name, e.policy
                    ));
                }
                bindings.insert(e.name.clone(), e.policy.clone());
            }
            (false, true) => {
                bindings.remove(&e.name);
            }
        }
    }
    problems
}

async fn list(client: &kube::Client, r: &kube::api::ApiResource) -> Vec<Value> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), r);
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|o| serde_json::to_value(o).expect("json"))
        .collect()
}

/// Differences between the live VAPs and bindings of `kinds` and what the decision module
/// makes of the live templates and constraints.
async fn differences(client: &kube::Client, decider: &Decider, kinds: &[String]) -> Vec<String> {
    let mut want_vaps = BTreeMap::new();
    let mut want_vapbs = BTreeMap::new();
    for kind in kinds {
        let tname = kind.to_ascii_lowercase();
        let Some(t) = get(client, &template_resource(), &tname).await else {
            continue;
        };
        let constraints = list(client, &constraint_resource(kind)).await;
        let inputs: Vec<_> = constraints
            .iter()
            .map(snapshot::extract_constraint)
            .collect();
        let plan = decider
            .plan_kind(
                &Settings::default(),
                &template_essence(&t).to_string(),
                &inputs,
            )
            .expect("plan");
        let generate = matches!(plan.decision, TemplateDecision::Generate)
            && matches!(plan.policy, PolicyOutcome::Desired(_));
        if let PolicyOutcome::Desired(vap_json) = &plan.policy
            && generate
        {
            let mut v = render::policy_object(vap_json, &plan.policy_name).expect("vap");
            v["metadata"]["ownerReferences"] = json!([Owner {
                api_version: "templates.gatekeeper.sh/v1beta1".into(),
                kind: "ConstraintTemplate".into(),
                name: tname.clone(),
                uid: t["metadata"]["uid"].as_str().unwrap_or("").into(),
            }
            .to_reference()]);
            want_vaps.insert(plan.policy_name.clone(), v);
            for (c, b) in constraints.iter().zip(&plan.bindings) {
                if let BindingOutcome::Bind(spec) = &b.outcome {
                    let owner = Owner::constraint(
                        kind,
                        snapshot::name_of(c),
                        c["metadata"]["uid"].as_str().unwrap_or(""),
                    );
                    want_vapbs.insert(
                        b.binding_name.clone(),
                        render::binding_object(spec, Some(&owner)).expect("binding"),
                    );
                }
            }
        }
    }
    let mine = |name: &str, sep: &str| {
        kinds.iter().any(|k| {
            name == format!("gatekeeper-{}", k.to_ascii_lowercase()) && sep.is_empty()
                || name.starts_with(&format!("gatekeeper-{}{sep}", k.to_ascii_lowercase()))
                    && !sep.is_empty()
        })
    };
    let live_vaps: BTreeMap<String, Value> = list(client, &vap_resource())
        .await
        .into_iter()
        .map(|v| (snapshot::name_of(&v).to_string(), v))
        .filter(|(n, _)| mine(n, ""))
        .collect();
    let live_vapbs: BTreeMap<String, Value> = list(client, &vapb_resource())
        .await
        .into_iter()
        .map(|v| (snapshot::name_of(&v).to_string(), v))
        .filter(|(n, _)| mine(n, "-"))
        .collect();
    let mut d = Vec::new();
    for (n, w) in &want_vaps {
        match live_vaps.get(n) {
            None => d.push(format!("VAP {n} missing")),
            Some(l) if !vap_equal(w, l) => d.push(format!("VAP {n} differs")),
            _ => {}
        }
    }
    for n in live_vaps.keys().filter(|n| !want_vaps.contains_key(*n)) {
        d.push(format!("VAP {n} should not exist"));
    }
    for (n, w) in &want_vapbs {
        match live_vapbs.get(n) {
            None => d.push(format!("binding {n} missing")),
            Some(l) if !vapb_equal(w, l) => d.push(format!("binding {n} differs")),
            _ => {}
        }
    }
    for n in live_vapbs.keys().filter(|n| !want_vapbs.contains_key(*n)) {
        d.push(format!("binding {n} dangles"));
    }
    d
}

async fn start(client: &kube::Client, decider: &Decider, lease: &str, n: usize) -> Controller {
    let mut cfg = test_config(&format!("chaos-{n}"));
    cfg.leader_elect = true;
    cfg.lease_name = lease.into();
    cfg.lease_duration = 4;
    cfg.lease_grace = 1;
    // Readiness by discovery only: the admission canary takes seconds per kind and replica
    // (controller.rs covers it), and with a restart every round it would keep most
    // bindings waiting instead of racing.
    cfg.canary = false;
    if std::env::var("VAPGEN_CHAOS_WEAKEN").is_ok_and(|v| v == "gatekeeper") {
        // By hand only: Gatekeeper's strategy, to see that this test notices.
        cfg.reconcile.weakened = vapgen::controller::reconcile::Weakened::gatekeeper();
    }
    vapgen::controller::start(client.clone(), decider.clone(), cfg)
        .await
        .expect("start a controller")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_converges_and_never_binds_without_a_policy() {
    let started = Instant::now();
    let seed = std::env::var("VAPGEN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let rounds: usize = std::env::var("VAPGEN_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("chaos seed {seed} (replay with VAPGEN_CHAOS_SEED={seed}), {rounds} rounds");
    let mut rng = Rng(seed);

    let client = vapgen_tests::client().await;
    prepare_cluster(&client).await;
    let ns = vapgen_tests::fresh_namespace(&client, "chaos").await;
    let decider = Runtime::new(RuntimeConfig::default())
        .expect("wasm runtime")
        .load_bundled()
        .expect("bundled module");
    let kinds: Vec<String> = (0..KINDS)
        .map(|i| unique_kind(&format!("Chaos{i}")))
        .collect();
    let lease = vapgen_tests::unique_name("vapgen-chaos");

    let events = Arc::new(Mutex::new(Vec::new()));
    let relists = Arc::new(Mutex::new(0u32));
    let prefixes: Vec<String> = kinds
        .iter()
        .map(|k| format!("gatekeeper-{}", k.to_ascii_lowercase()))
        .collect();
    let watches = [
        watch(
            &client,
            vap_resource(),
            true,
            prefixes.clone(),
            events.clone(),
            relists.clone(),
        ),
        watch(
            &client,
            vapb_resource(),
            false,
            prefixes,
            events.clone(),
            relists.clone(),
        ),
    ];

    let mut n = 0;
    let mut ctl = Some(start(&client, &decider, &lease, n).await);
    for k in &kinds {
        apply(
            &client,
            &template_resource(),
            &template(k, generate_vap(rng.below(3))),
        )
        .await;
    }
    for k in &kinds {
        for i in 0..CONSTRAINTS {
            let c = constraint(k, &format!("c{i}"), &ns, variant(rng.below(6), &ns));
            apply_constraint(&client, &c).await;
        }
    }
    println!("set-up done after {:.1?}", started.elapsed());

    let (mut flips, mut edits, mut deletes, mut restarts, mut overlapping) = (0, 0, 0, 0, 0);
    for round in 0..rounds {
        let restart_at = rng.below(20);
        for step in 0..20 {
            let k = &kinds[rng.below(KINDS)];
            let name = format!("c{}", rng.below(CONSTRAINTS));
            match rng.below(10) {
                0..=3 => {
                    flips += 1;
                    apply(
                        &client,
                        &template_resource(),
                        &template(k, generate_vap(rng.below(3))),
                    )
                    .await;
                }
                4..=7 => {
                    edits += 1;
                    let c = constraint(k, &name, &ns, variant(rng.below(6), &ns));
                    apply_constraint(&client, &c).await;
                }
                _ => {
                    deletes += 1;
                    delete(&client, &constraint_resource(k), &name).await;
                }
            }
            if step == restart_at {
                restarts += 1;
                n += 1;
                let old = ctl.take().expect("a controller runs");
                if rng.below(2) == 0 {
                    // The new replica starts first and takes the lease over when the old one
                    // stops (releasing it) mid-flight.
                    overlapping += 1;
                    let new = start(&client, &decider, &lease, n).await;
                    tokio::time::sleep(Duration::from_millis(rng.below(500) as u64)).await;
                    old.stop().await;
                    ctl = Some(new);
                } else {
                    old.stop().await;
                    ctl = Some(start(&client, &decider, &lease, n).await);
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.below(200) as u64)).await;
        }
        println!("round {round} done after {:.1?}", started.elapsed());
    }

    // Quiesce: the live state must reach what the module makes of the final objects, and stay.
    let quiesce = Instant::now();
    let mut last = Vec::new();
    while quiesce.elapsed() < Duration::from_secs(60) {
        last = differences(&client, &decider, &kinds).await;
        if last.is_empty() {
            break;
        }
        if std::env::var("VAPGEN_CHAOS_DEBUG").is_ok() {
            let h = &ctl.as_ref().expect("controller").handles;
            println!(
                "{:.1?}: leader={} may={} queue={} records={:?} diff={last:?}",
                quiesce.elapsed(),
                h.leader.is_leader(),
                h.leader.may_reconcile(),
                h.queue.len(),
                h.records.lock().unwrap().counts()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        last.is_empty(),
        "seed {seed}: not converged 60 s after the last change: {last:#?}"
    );
    let converged = quiesce.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = differences(&client, &decider, &kinds).await;
    assert!(
        again.is_empty(),
        "seed {seed}: converged, then drifted: {again:#?}"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    for w in &watches {
        w.abort();
    }
    let evs = events.lock().unwrap().clone();
    assert_eq!(
        *relists.lock().unwrap(),
        2,
        "a watch re-listed mid-test; its history has gaps"
    );
    let problems = bindings_always_had_a_policy(&evs);
    assert!(
        problems.is_empty(),
        "seed {seed}: a binding existed without its policy: {problems:#?}"
    );
    let created = evs.iter().filter(|e| !e.vap && !e.deleted).count();
    println!(
        "chaos: {rounds} rounds, {flips} template flips, {edits} constraint edits, {deletes} deletes, \
         {restarts} restarts ({overlapping} with the lease moving between live replicas); \
         converged {converged:.1?} after the last change; {} VAP/binding events checked \
         ({created} binding writes); {:.1?} in all",
        evs.len(),
        started.elapsed()
    );

    for k in &kinds {
        cleanup_template(&client, k).await;
    }
    for k in &kinds {
        let name = policy_name(k);
        let gone = Instant::now();
        while get(&client, &vap_resource(), &name).await.is_some()
            && gone.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let Some(c) = ctl {
        c.stop().await;
    }
}
