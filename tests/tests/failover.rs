//! Leader failover and restart safety with real `vapgen run` processes (issue 5, items 4
//! and 5) on the test control plane (`tests/control-plane/up`; these tests read
//! `VAPGEN_TEST_KUBECONFIG` and `VAPGEN_TEST_AUDIT_LOG`, see `vapgen_tests::kubeconfig_path`
//! for what happens without them).
//!
//! * `sigkill_the_leader_in_a_burst_of_flips`: three replicas; five times, SIGKILL the leader
//!   in the middle of a burst of `generateVAP` flips and constraint edits. A replica takes
//!   over within the lease duration (plus kube-lease-manager's back-off), the state
//!   converges, and no object flaps: from the API server's audit log, each VAP and binding
//!   is written at most once per change of its inputs (plus one repair) during the failover,
//!   at most once after the inputs settle, and never once converged.
//! * `a_paused_leader_writes_nothing_when_it_resumes`: SIGSTOP the leader past its lease,
//!   let another replica take over and write, SIGCONT: the resumed replica's own writes
//!   counter (`/metrics`, `outcome="ok"`) does not move, while it does see work.
//! * `the_only_replica_paused_past_its_lease_repairs_what_it_missed`: one replica, SIGSTOP
//!   for two leases while constraints are created, SIGCONT: its lease has lapsed but nobody
//!   took it; it refuses writes until it holds the lease again, then converges.
//! * `restarting_every_replica_with_500_bindings_writes_nothing`: 500 constraints over four
//!   kinds; stop every replica and start new ones: zero deletes and zero rewrites of VAPs,
//!   bindings and statuses (audit log).
//!
//! Writes are told apart by time: every process uses the same admin certificate.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use serde_json::{Value, json};

const LEASE_DURATION: u64 = 4;

/// The tests of this file run one at a time: each starts replicas of its own, and two
/// deployments with different leases would both write (they reconcile every template).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NS: &str = "vapgen-system";

// === cluster access ===

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "{name} is not set: these tests need the real test control plane \
             (`tests/control-plane/up`, see tests/control-plane/README.md)"
        ),
    }
}

async fn client() -> kube::Client {
    let path = vapgen_tests::kubeconfig_path();
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("client")
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}
fn templates() -> ApiResource {
    ar(
        "templates.gatekeeper.sh",
        "v1",
        "ConstraintTemplate",
        "constrainttemplates",
    )
}
fn constraints(kind: &str) -> ApiResource {
    ar(
        "constraints.gatekeeper.sh",
        "v1beta1",
        kind,
        &kind.to_ascii_lowercase(),
    )
}
fn vaps() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
    )
}
fn vapbs() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    )
}

async fn apply(c: &kube::Client, r: &ApiResource, obj: &Value) -> Result<(), kube::Error> {
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    Api::<DynamicObject>::all_with(c.clone(), r)
        .patch(
            &name,
            &PatchParams::apply("vapgen-failover-test").force(),
            &Patch::Apply(obj),
        )
        .await
        .map(|_| ())
}

/// Applies, retrying while the constraint CRD is not served yet.
async fn apply_retry(c: &kube::Client, r: &ApiResource, obj: &Value) {
    let start = Instant::now();
    loop {
        match apply(c, r, obj).await {
            Ok(()) => return,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(60), "apply: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn list(c: &kube::Client, r: &ApiResource) -> Vec<Value> {
    Api::<DynamicObject>::all_with(c.clone(), r)
        .list(&Default::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .map(|o| serde_json::to_value(o).expect("json"))
                .collect()
        })
        .unwrap_or_default()
}

async fn prepare(c: &kube::Client) {
    vapgen_tests::install_template_crd(c, NS).await;
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!(
        "{prefix}{:x}",
        (n ^ u128::from(std::process::id())) & 0xff_ffff
    )
}

fn template(kind: &str, generate: Option<bool>) -> Value {
    let mut source = json!({
        // Fails open: see the comment on `template()` in tests/tests/common/mod.rs.
        "failurePolicy": "Ignore",
        "validations": [{"expression": "object.metadata.name != 'forbidden'", "message": "forbidden"}]
    });
    if let Some(g) = generate {
        source["generateVAP"] = json!(g);
    }
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.to_ascii_lowercase()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [{"engine": "K8sNativeValidation", "source": source}]}]
        }
    })
}

/// A constraint limited to ConfigMaps of a namespace that does not exist (it never matches
/// another test's requests).
fn constraint(kind: &str, name: &str, action: &str) -> Value {
    json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "enforcementAction": action,
            "match": {"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}], "namespaces": ["vapgen-failover-nowhere"]}
        }
    })
}

// === replicas ===

struct Replica {
    identity: String,
    port: u16,
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn log_dir() -> PathBuf {
    let d = std::env::temp_dir().join("vapgen-failover-logs");
    std::fs::create_dir_all(&d).expect("log dir");
    d
}

fn spawn(lease: &str, identity: &str) -> Replica {
    let port = free_port();
    let log = std::fs::File::create(log_dir().join(format!("{identity}.log"))).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_vapgen-under-test"))
        .args([
            "run",
            "--kubeconfig",
            vapgen_tests::kubeconfig_path().to_str().expect("path"),
            "--leader-elect=true",
            "--lease-name",
            lease,
            "--lease-namespace",
            NS,
            "--lease-duration-seconds",
            &LEASE_DURATION.to_string(),
            "--lease-grace-seconds",
            "1",
            "--manage-crds",
            "--readiness-canary=false",
            "--identity",
            identity,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "vapgen=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn vapgen run");
    Replica {
        identity: identity.into(),
        port,
        child,
    }
}

fn signal(r: &Replica, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &r.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {}", r.identity);
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || vapgen_tests::http_get(port, &path))
        .await
        .ok()
        .flatten()
}

/// Whether the replica says it leads (`/debug/records`).
async fn leads(r: &Replica) -> bool {
    http_get(r.port, "/debug/records")
        .await
        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        .and_then(|v| v["leader"].as_bool())
        .unwrap_or(false)
}

/// Sum of `vapgen_writes_total` with `outcome`.
async fn writes(r: &Replica, outcome: &str) -> Option<u64> {
    let text = http_get(r.port, "/metrics").await?;
    Some(
        text.lines()
            .filter(|l| {
                l.starts_with("vapgen_writes_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

async fn wait_leader(rs: &[Replica], timeout: Duration) -> Option<usize> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        for (i, r) in rs.iter().enumerate() {
            if leads(r).await {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn wait_ready(rs: &[Replica]) {
    for r in rs {
        let start = Instant::now();
        while http_get(r.port, "/readyz").await.as_deref() != Some("ready") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} never became ready (log in {})",
                r.identity,
                log_dir().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// === expected state ===

/// Differences between the live VAPs/bindings of `kinds` and the decision module's plan.
async fn differences(c: &kube::Client, kinds: &[String]) -> Vec<String> {
    use vapgen::model::{BindingOutcome, PolicyOutcome, Settings, TemplateDecision};
    use vapgen::runtime::{Decide, NativeDecider};
    let mut want_vaps = BTreeMap::new();
    let mut want_vapbs = BTreeMap::new();
    let all_templates = list(c, &templates()).await;
    for kind in kinds {
        let tname = kind.to_ascii_lowercase();
        let Some(t) = all_templates
            .iter()
            .find(|t| t["metadata"]["name"] == tname.as_str())
        else {
            continue;
        };
        let cs = list(c, &constraints(kind)).await;
        let inputs: Vec<_> = cs
            .iter()
            .map(vapgen::snapshot::extract_constraint)
            .collect();
        let plan = NativeDecider
            .plan_kind(
                &Settings::default(),
                &vapgen::controller::world::template_essence(t).to_string(),
                &inputs,
            )
            .expect("plan");
        if let (TemplateDecision::Generate, PolicyOutcome::Desired(j)) =
            (&plan.decision, &plan.policy)
        {
            let mut v = vapgen::render::policy_object(j, &plan.policy_name).expect("vap");
            // `vapgen run` exempts its own namespace (the lease's) from every policy.
            vapgen::render::exempt_namespaces(&mut v, &[NS.to_string()]);
            v["metadata"]["ownerReferences"] = json!([vapgen::render::Owner {
                api_version: "templates.gatekeeper.sh/v1beta1".into(),
                kind: "ConstraintTemplate".into(),
                name: tname.clone(),
                uid: t["metadata"]["uid"].as_str().unwrap_or("").into(),
            }
            .to_reference()]);
            want_vaps.insert(plan.policy_name.clone(), v);
            for (c, b) in cs.iter().zip(&plan.bindings) {
                if let BindingOutcome::Bind(spec) = &b.outcome {
                    let owner = vapgen::render::Owner::constraint(
                        kind,
                        c["metadata"]["name"].as_str().unwrap_or(""),
                        c["metadata"]["uid"].as_str().unwrap_or(""),
                    );
                    want_vapbs.insert(
                        b.binding_name.clone(),
                        vapgen::render::binding_object(spec, Some(&owner)).expect("binding"),
                    );
                }
            }
        }
    }
    let ours = |n: &str| {
        kinds
            .iter()
            .any(|k| n.starts_with(&format!("gatekeeper-{}", k.to_ascii_lowercase())))
    };
    let live_vaps: BTreeMap<String, Value> = list(c, &vaps())
        .await
        .into_iter()
        .map(|v| (v["metadata"]["name"].as_str().unwrap_or("").to_string(), v))
        .filter(|(n, _)| ours(n))
        .collect();
    let live_vapbs: BTreeMap<String, Value> = list(c, &vapbs())
        .await
        .into_iter()
        .map(|v| (v["metadata"]["name"].as_str().unwrap_or("").to_string(), v))
        .filter(|(n, _)| ours(n))
        .collect();
    let mut d = Vec::new();
    for (n, w) in &want_vaps {
        match live_vaps.get(n) {
            None => d.push(format!("VAP {n} missing")),
            Some(l) if !vapgen::controller::compare::vap_equal(w, l) => {
                d.push(format!("VAP {n} differs"))
            }
            _ => {}
        }
    }
    d.extend(
        live_vaps
            .keys()
            .filter(|n| !want_vaps.contains_key(*n))
            .map(|n| format!("VAP {n} should not exist")),
    );
    for (n, w) in &want_vapbs {
        match live_vapbs.get(n) {
            None => d.push(format!("binding {n} missing")),
            Some(l) if !vapgen::controller::compare::vapb_equal(w, l) => {
                d.push(format!("binding {n} differs"))
            }
            _ => {}
        }
    }
    d.extend(
        live_vapbs
            .keys()
            .filter(|n| !want_vapbs.contains_key(*n))
            .map(|n| format!("binding {n} dangles")),
    );
    d
}

async fn converge(c: &kube::Client, kinds: &[String], timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let d = differences(c, kinds).await;
        if d.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "not converged within {timeout:?}: {d:#?} (replica logs in {})",
            log_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === audit log ===

struct AuditWrite {
    at: SystemTime,
    uri: String,
    verb: String,
    resource: String,
    subresource: String,
    name: String,
}

fn audit_offset() -> u64 {
    std::fs::metadata(env_path("VAPGEN_TEST_AUDIT_LOG"))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn parse_time(s: &str) -> Option<SystemTime> {
    // RFC 3339 with microseconds, UTC: 2026-11-27T21:04:49.123456Z
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    let micros: u64 = format!("{frac:0<6}")[..6].parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(micros))
}

/// Successful, non-dry-run writes logged after byte `from`.
fn audit_writes(from: u64) -> Vec<AuditWrite> {
    let mut f = std::fs::File::open(env_path("VAPGEN_TEST_AUDIT_LOG")).expect("audit log");
    f.seek(SeekFrom::Start(from)).expect("seek");
    let mut text = String::new();
    f.read_to_string(&mut text).expect("read");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|c| (200..300).contains(&c))
        })
        .filter(|e| !e["requestURI"].as_str().unwrap_or("").contains("dryRun="))
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .filter_map(|e| {
            Some(AuditWrite {
                at: parse_time(e["stageTimestamp"].as_str()?)?,
                uri: e["requestURI"].as_str()?.to_string(),
                verb: e["verb"].as_str()?.to_string(),
                resource: e["objectRef"]["resource"].as_str()?.to_string(),
                subresource: e["objectRef"]["subresource"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                name: e["objectRef"]["name"].as_str().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Waits until the API server has logged everything up to now.
async fn settle_audit() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Deletes the templates (the replicas still running delete VAPs and bindings), waits for
/// the VAPs to go, then deletes the constraint CRDs directly (vapgen would only after a grace
/// period), so that nothing of this test is left for the next one.
async fn cleanup(c: &kube::Client, kinds: &[String]) {
    for k in kinds {
        let _ = Api::<DynamicObject>::all_with(c.clone(), &templates())
            .delete(&k.to_ascii_lowercase(), &DeleteParams::default())
            .await;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let left = list(c, &vaps()).await.iter().any(|v| {
            kinds.iter().any(|k| {
                v["metadata"]["name"] == format!("gatekeeper-{}", k.to_ascii_lowercase()).as_str()
            })
        });
        if !left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let crds = Api::<DynamicObject>::all_with(
        c.clone(),
        &ar(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    for k in kinds {
        let _ = crds
            .delete(
                &format!("{}.constraints.gatekeeper.sh", k.to_ascii_lowercase()),
                &DeleteParams::default(),
            )
            .await;
    }
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_leader_in_a_burst_of_flips() {
    let _serial = SERIAL.lock().await;
    let c = client().await;
    prepare(&c).await;
    let lease = unique("vapgen-failover-");
    let kinds: Vec<String> = (0..2)
        .map(|i| unique(&format!("K8sFailover{i}x")))
        .collect();
    let mut generation = 0;
    let mut rs: Vec<Replica> = (0..3)
        .map(|i| spawn(&lease, &format!("{lease}-r{i}-g0")))
        .collect();
    wait_ready(&rs).await;
    for k in &kinds {
        apply_retry(&c, &templates(), &template(k, Some(true))).await;
        for i in 0..3 {
            apply_retry(
                &c,
                &constraints(k),
                &constraint(k, &format!("c{i}"), "deny"),
            )
            .await;
        }
    }
    converge(&c, &kinds, Duration::from_secs(60)).await;

    let mut takeovers = Vec::new();
    let mut per_kill = Vec::new();
    let (mut max_window, mut max_settled, mut total_writes) = (0usize, 0usize, 0usize);
    for kill in 0..5 {
        let leader = wait_leader(&rs, Duration::from_secs(3 * LEASE_DURATION))
            .await
            .expect("a leader");
        let from = audit_offset();
        // The burst: template flips and constraint edits every 100 ms for 2 s, with the
        // leader killed after a random part of it.
        let kill_after = 3
            + (SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .subsec_nanos() as usize
                % 12);
        let mut changes: Vec<(SystemTime, String)> = Vec::new();
        let mut killed_at = None;
        for step in 0..20 {
            let k = &kinds[step % kinds.len()];
            if step % 2 == 0 {
                apply_retry(&c, &templates(), &template(k, Some(step % 4 == 0))).await;
                changes.push((
                    SystemTime::now(),
                    format!("gatekeeper-{}", k.to_ascii_lowercase()),
                ));
            } else {
                let action = ["deny", "warn", "dryrun"][step % 3];
                let name = format!("c{}", step % 3);
                apply_retry(&c, &constraints(k), &constraint(k, &name, action)).await;
                changes.push((
                    SystemTime::now(),
                    format!("gatekeeper-{}-{name}", k.to_ascii_lowercase()),
                ));
            }
            if step == kill_after {
                signal(&rs[leader], "-KILL");
                killed_at = Some((Instant::now(), SystemTime::now()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (killed, killed_wall) = killed_at.expect("killed");
        let burst_end = SystemTime::now();
        let others: Vec<usize> = (0..rs.len()).filter(|i| *i != leader).collect();
        let mut new_leader = None;
        while killed.elapsed() < Duration::from_secs(3 * LEASE_DURATION) {
            for &i in &others {
                if leads(&rs[i]).await {
                    new_leader = Some(i);
                }
            }
            if new_leader.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let takeover = killed.elapsed();
        assert!(
            new_leader.is_some(),
            "kill {kill}: no replica took over within {:?}",
            3 * LEASE_DURATION
        );
        takeovers.push(takeover);
        let converged = converge(&c, &kinds, Duration::from_secs(30)).await;
        let converged_wall = SystemTime::now();
        // Steady: nothing more is written once converged.
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle_audit().await;
        let ws: Vec<AuditWrite> = audit_writes(from)
            .into_iter()
            .filter(|w| {
                matches!(
                    w.resource.as_str(),
                    "validatingadmissionpolicies" | "validatingadmissionpolicybindings"
                ) && kinds.iter().any(|k| {
                    w.name
                        .starts_with(&format!("gatekeeper-{}", k.to_ascii_lowercase()))
                })
            })
            .collect();
        total_writes += ws.len();
        let mut window: BTreeMap<&str, usize> = BTreeMap::new();
        let mut settled: BTreeMap<&str, usize> = BTreeMap::new();
        for w in &ws {
            assert!(
                w.at <= converged_wall + Duration::from_millis(500),
                "kill {kill}: {} {} {} written after convergence",
                w.verb,
                w.resource,
                w.name
            );
            if w.at >= killed_wall {
                *window.entry(w.name.as_str()).or_default() += 1;
            }
            if w.at >= burst_end {
                *settled.entry(w.name.as_str()).or_default() += 1;
            }
        }
        for (name, n) in &window {
            // A VAP's inputs: its template; a binding's: its template and its constraint.
            let inputs = changes
                .iter()
                .filter(|(at, obj)| *at >= killed_wall && name.starts_with(obj.as_str()))
                .count();
            assert!(
                *n <= inputs + 1,
                "kill {kill}: {name} written {n} times after the kill for {inputs} changes of its inputs: it flaps"
            );
        }
        for (name, n) in &settled {
            assert!(
                *n <= 1,
                "kill {kill}: {name} written {n} times after the inputs settled"
            );
        }
        max_window = max_window.max(window.values().copied().max().unwrap_or(0));
        max_settled = max_settled.max(settled.values().copied().max().unwrap_or(0));
        per_kill.push(format!(
            "kill {kill}: take-over {takeover:.2?}, converged {converged:.2?} after the take-over, {} writes ({} objects) after the kill",
            window.values().sum::<usize>(),
            window.len()
        ));
        // Replace the killed replica.
        generation += 1;
        rs[leader] = spawn(&lease, &format!("{lease}-r{leader}-g{generation}"));
        wait_ready(&rs[leader..=leader]).await;
    }
    for l in &per_kill {
        println!("{l}");
    }
    let worst = *takeovers.iter().max().expect("kills");
    let med = median(&mut takeovers.clone());
    println!(
        "failover over {} kills: median {med:.2?}, worst {worst:.2?} (lease {LEASE_DURATION} s); \
         VAP/binding writes: {total_writes} in all, at most {max_window} per object after a kill, \
         at most {max_settled} per object after the inputs settled",
        takeovers.len()
    );
    // The lease expires at most LEASE_DURATION after the kill (the holder renewed it at most
    // then); kube-lease-manager then releases it and waits up to 1 s before locking it.
    assert!(
        worst < Duration::from_secs(LEASE_DURATION + 2),
        "a take-over took {worst:?}"
    );
    cleanup(&c, &kinds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_writes_nothing_when_it_resumes() {
    let _serial = SERIAL.lock().await;
    let c = client().await;
    prepare(&c).await;
    let lease = unique("vapgen-pause-");
    let kind = unique("K8sPause");
    let kinds = vec![kind.clone()];
    let rs: Vec<Replica> = (0..3)
        .map(|i| spawn(&lease, &format!("{lease}-r{i}")))
        .collect();
    wait_ready(&rs).await;
    apply_retry(&c, &templates(), &template(&kind, Some(true))).await;
    for i in 0..3 {
        apply_retry(
            &c,
            &constraints(&kind),
            &constraint(&kind, &format!("c{i}"), "deny"),
        )
        .await;
    }
    converge(&c, &kinds, Duration::from_secs(60)).await;
    let leader = wait_leader(&rs, Duration::from_secs(3 * LEASE_DURATION))
        .await
        .expect("a leader");
    let paused = &rs[leader];
    let before = writes(paused, "ok").await.expect("metrics");
    let not_leader_before = writes(paused, "not-leader").await.unwrap_or(0);

    // Pause it in the middle of work: a flip and edits it is reconciling right now.
    apply_retry(&c, &templates(), &template(&kind, Some(false))).await;
    for i in 0..3 {
        apply_retry(
            &c,
            &constraints(&kind),
            &constraint(&kind, &format!("c{i}"), "warn"),
        )
        .await;
    }
    apply_retry(&c, &templates(), &template(&kind, Some(true))).await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    signal(paused, "-STOP");
    let stopped = Instant::now();
    // Another replica takes over, and writes.
    let others: Vec<&Replica> = rs
        .iter()
        .filter(|r| r.identity != paused.identity)
        .collect();
    let mut took_over = None;
    while stopped.elapsed() < Duration::from_secs(3 * LEASE_DURATION) && took_over.is_none() {
        for r in &others {
            if leads(r).await {
                took_over = Some(stopped.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took_over = took_over.expect("a replica takes over from the paused leader");
    apply_retry(&c, &templates(), &template(&kind, Some(false))).await;
    converge(&c, &kinds, Duration::from_secs(30)).await;
    apply_retry(&c, &templates(), &template(&kind, Some(true))).await;
    converge(&c, &kinds, Duration::from_secs(30)).await;

    // Quiet now. From here on, the audit log must show exactly the writes the other replicas
    // count (`/metrics`), plus the test's own: one write by the resumed replica would be one
    // more. (All processes use the same certificate, so the log cannot tell them apart.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle_audit().await;
    let mut others_before = 0;
    for r in &others {
        others_before += writes(r, "ok").await.expect("metrics");
    }
    let from = audit_offset();
    signal(paused, "-CONT");
    // Work for everyone right away: the resumed replica's watches and queue get it too, and
    // its lease manager says it leads until it re-reads the lease.
    apply_retry(&c, &constraints(&kind), &constraint(&kind, "c0", "deny")).await;
    apply_retry(&c, &templates(), &template(&kind, Some(false))).await;
    converge(&c, &kinds, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle_audit().await;
    let after = writes(paused, "ok").await.expect("metrics after resume");
    let not_leader_after = writes(paused, "not-leader").await.unwrap_or(0);
    let mut others_after = 0;
    for r in &others {
        others_after += writes(r, "ok").await.expect("metrics");
    }
    let logged: Vec<AuditWrite> = audit_writes(from)
        .into_iter()
        .filter(|w| !matches!(w.resource.as_str(), "leases" | "events"))
        .filter(|w| !w.uri.contains("fieldManager=vapgen-failover-test"))
        .collect();
    println!(
        "paused leader: take-over {took_over:.2?} after SIGSTOP; after SIGCONT its lease check \
         refused {} writes; audit log after SIGCONT: {} controller writes, the other replicas \
         counted {} (the resumed one: none); its counter moved by {} for writes in flight at \
         the pause, which the API server logged before the take-over",
        not_leader_after - not_leader_before,
        logged.len(),
        others_after - others_before,
        after - before,
    );
    for w in &logged {
        println!("  {} {} {} {}", w.verb, w.resource, w.subresource, w.name);
    }
    assert!(
        others_after > others_before,
        "the new leader wrote nothing after the resume: the test did not exercise anything"
    );
    assert_eq!(
        logged.len() as u64,
        others_after - others_before,
        "the audit log has writes no other replica counted: the resumed one wrote (logs in {})",
        log_dir().display()
    );
    assert!(
        !leads(paused).await,
        "the resumed replica still thinks it leads"
    );
    cleanup(&c, &kinds).await;
}

/// The only replica stopped past its lease while constraints are created (what a renewal
/// slower than the lease does on a loaded API server): nobody takes the lease over, and the
/// replica's lease manager still says "leader" when it resumes. Its fence finds the lease
/// expired and refuses writes; once it holds the lease again it begins a new term and writes
/// every binding it missed. (Before, writes refused in that window were dropped as if done,
/// and bindings stayed missing with an empty queue until a restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_replica_paused_past_its_lease_repairs_what_it_missed() {
    let _serial = SERIAL.lock().await;
    let c = client().await;
    prepare(&c).await;
    let lease = unique("vapgen-lapse-");
    let kind = unique("K8sLapse");
    let kinds = vec![kind.clone()];
    let r = spawn(&lease, &format!("{lease}-only"));
    wait_ready(std::slice::from_ref(&r)).await;
    apply_retry(&c, &templates(), &template(&kind, Some(true))).await;
    for i in 0..3 {
        let name = format!("c{i}");
        apply_retry(&c, &constraints(&kind), &constraint(&kind, &name, "deny")).await;
    }
    converge(&c, &kinds, Duration::from_secs(60)).await;
    assert!(leads(&r).await, "the only replica leads");
    let refused_before = writes(&r, "not-leader").await.unwrap_or(0);

    // Work in flight, then a stop longer than two leases; more work meanwhile.
    for i in 3..23 {
        let name = format!("c{i}");
        apply_retry(&c, &constraints(&kind), &constraint(&kind, &name, "deny")).await;
    }
    signal(&r, "-STOP");
    for i in 23..33 {
        let name = format!("c{i}");
        apply_retry(&c, &constraints(&kind), &constraint(&kind, &name, "warn")).await;
    }
    tokio::time::sleep(Duration::from_secs(2 * LEASE_DURATION + 1)).await;
    signal(&r, "-CONT");
    let repaired = converge(&c, &kinds, Duration::from_secs(60)).await;
    let refused = writes(&r, "not-leader").await.unwrap_or(0) - refused_before;
    println!(
        "lapse of the only replica: 30 constraints created around a {} s stop; converged {repaired:.2?} \
         after SIGCONT; {refused} writes refused by the fence meanwhile (each retried)",
        2 * LEASE_DURATION + 1
    );
    assert!(leads(&r).await, "the replica leads again");
    cleanup(&c, &kinds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_replica_with_500_bindings_writes_nothing() {
    let _serial = SERIAL.lock().await;
    let c = client().await;
    prepare(&c).await;
    let lease = unique("vapgen-restart-");
    let kinds: Vec<String> = (0..4).map(|i| unique(&format!("K8sRestart{i}x"))).collect();
    let rs: Vec<Replica> = (0..2)
        .map(|i| spawn(&lease, &format!("{lease}-r{i}-a")))
        .collect();
    wait_ready(&rs).await;
    let start = Instant::now();
    for k in &kinds {
        apply_retry(&c, &templates(), &template(k, Some(true))).await;
    }
    // 500 constraints, 125 per kind, eight requests at a time.
    let objs: Vec<(String, Value)> = kinds
        .iter()
        .flat_map(|k| {
            (0..125).map(move |i| {
                let action = ["deny", "warn", "dryrun"][i % 3];
                (k.clone(), constraint(k, &format!("c{i:03}"), action))
            })
        })
        .collect();
    futures::stream::iter(objs)
        .for_each_concurrent(8, |(k, o)| {
            let c = c.clone();
            async move { apply_retry(&c, &constraints(&k), &o).await }
        })
        .await;
    let created = start.elapsed();
    let converged = converge(&c, &kinds, Duration::from_secs(120)).await;
    let bindings = list(&c, &vapbs())
        .await
        .iter()
        .filter(|b| {
            kinds.iter().any(|k| {
                b["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("gatekeeper-{}-", k.to_ascii_lowercase()))
            })
        })
        .count();
    assert_eq!(bindings, 500);
    println!(
        "500 constraints applied in {created:.1?}; 500 bindings after {:.1?} more",
        converged
    );
    // Let statuses settle, then restart every replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle_audit().await;
    let from = audit_offset();
    let restart = Instant::now();
    drop(rs);
    let rs: Vec<Replica> = (0..2)
        .map(|i| spawn(&lease, &format!("{lease}-r{i}-b")))
        .collect();
    wait_ready(&rs).await;
    let leader = wait_leader(&rs, Duration::from_secs(3 * LEASE_DURATION))
        .await
        .expect("a leader after the restart");
    // The new leader has re-derived every decision once every kind has a published decision
    // and it has reconciled every constraint (its reconcile counters; a replica reconciles
    // only while it leads, and the other kinds in the cluster only add to them).
    let led_at = restart.elapsed();
    let derived = Instant::now();
    let rederived = loop {
        let body = http_get(rs[leader].port, "/debug/records")
            .await
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .unwrap_or(Value::Null);
        let known = body["records"]
            .as_array()
            .map(|rs| {
                kinds
                    .iter()
                    .filter(|k| {
                        rs.iter()
                            .any(|r| r["kind"] == k.to_ascii_lowercase().as_str())
                    })
                    .count()
            })
            .unwrap_or(0);
        let metrics = http_get(rs[leader].port, "/metrics")
            .await
            .unwrap_or_default();
        let constraint_reconciles: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("vapgen_reconciles_total{") && l.contains("key=\"constraint\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if known == kinds.len() && constraint_reconciles >= 500.0 {
            break restart.elapsed();
        }
        assert!(
            derived.elapsed() < Duration::from_secs(60),
            "the new leader did not re-derive the decisions ({known} kinds known, {constraint_reconciles} constraint reconciles)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Give stragglers (status writes, retries) time to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle_audit().await;
    let ws: Vec<AuditWrite> = audit_writes(from)
        .into_iter()
        .filter(|w| {
            kinds.iter().any(|k| {
                let k = k.to_ascii_lowercase();
                w.name.starts_with(&format!("gatekeeper-{k}"))
                    || w.name == k
                    || w.name.starts_with(&format!("{k}."))
                    || w.resource == k
            })
        })
        .collect();
    let deletes = ws.iter().filter(|w| w.verb == "delete").count();
    let rewrites = ws.iter().filter(|w| w.verb != "delete").count();
    println!(
        "restart of every replica with 500 bindings: a new leader after {led_at:.1?}, every \
         decision re-derived and every constraint reconciled after {rederived:.1?}; writes to \
         the kinds' VAPs, bindings, templates, constraints and statuses: {deletes} deletes, \
         {rewrites} other writes"
    );
    for w in ws.iter().take(10) {
        println!("  {} {} {} {}", w.verb, w.resource, w.subresource, w.name);
    }
    assert_eq!(deletes, 0, "a restart deleted objects");
    assert_eq!(rewrites, 0, "a restart rewrote unchanged objects");
    cleanup(&c, &kinds).await;
}
