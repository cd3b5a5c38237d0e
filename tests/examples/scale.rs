//! Scale benchmark on the real test API server (issue 10, item 9): N constraints over K kinds,
//! converged by a real `vapgen run` process, against a plain client loop doing the same
//! writes with the same concurrency on the same server.
//!
//! ```text
//! eval "$(tests/control-plane/up)"
//! cargo build --release -p vapgen
//! cargo run --release -p vapgen-tests --example scale -- --constraints 1000 --kinds 1 --mode backlog
//! ```
//!
//! Flags: `--constraints N` per kind (default 1000), `--kinds K` (default 1), `--mode backlog|live`
//! (default backlog), `--workers C` (vapgen's `--workers` and the raw loop's concurrency,
//! default 4), `--vapgen PATH` (default: the `vapgen` binary of this build profile, beside
//! `examples/`), `--timeout SECONDS` (default 1800).
//!
//! * **backlog**: the templates' CRDs and VAPs are made by a first vapgen process, which is
//!   then stopped; the constraints are created; a fresh vapgen process starts and the clock
//!   runs from its spawn until every constraint has its binding and a `generated` status.
//! * **live**: vapgen runs while the constraints are created; the clock runs from the first
//!   create until the last binding and status.
//! * **raw**: before vapgen's run, the same number of binding creates, each followed by the
//!   status patch of its constraint (what vapgen writes per constraint), by `--workers`
//!   concurrent tasks. The bindings name a policy that does not exist, so they enforce nothing,
//!   and are deleted before vapgen starts.
//!
//! Printed: the raw time, vapgen's time, their ratio, vapgen's writes per constraint (its own
//! `vapgen_writes_total{outcome="ok"}`), its peak RSS (`VmHWM`), and the number of constraints
//! still missing a binding or status at the end (0 when converged; non-zero after the timeout).
//! Everything the benchmark made is deleted at the end and at the start.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

const NS: &str = "vapgen-system";
const KIND_STEM: &str = "VapgenScale";
const RAW_PREFIX: &str = "vapgen-scale-raw-";
const MANAGER: &str = "vapgen-scale-bench";

struct Args {
    constraints: usize,
    kinds: usize,
    live: bool,
    workers: usize,
    vapgen: PathBuf,
    timeout: Duration,
}

fn parse_args() -> Args {
    let mut a = Args {
        constraints: 1000,
        kinds: 1,
        live: false,
        workers: 4,
        vapgen: default_vapgen(),
        timeout: Duration::from_secs(1800),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")))
        };
        match flag.as_str() {
            "--constraints" => a.constraints = number(value()),
            "--kinds" => a.kinds = number(value()),
            "--workers" => a.workers = number(value()).max(1),
            "--timeout" => a.timeout = Duration::from_secs(number(value()) as u64),
            "--vapgen" => a.vapgen = PathBuf::from(value()),
            "--mode" => match value().as_str() {
                "backlog" => a.live = false,
                "live" => a.live = true,
                other => usage(&format!("--mode: backlog or live, not {other}")),
            },
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if !a.vapgen.is_file() {
        usage(&format!(
            "no vapgen binary at {} (build it: cargo build --release -p vapgen, or pass --vapgen)",
            a.vapgen.display()
        ));
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "scale: {msg}\nusage: scale [--constraints N] [--kinds K] [--mode backlog|live] \
         [--workers C] [--vapgen PATH] [--timeout SECONDS]"
    );
    std::process::exit(2)
}

/// `target/<profile>/vapgen`: this example runs from `target/<profile>/examples/`.
fn default_vapgen() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("vapgen"))
        .unwrap_or_default()
}

// === resources ===

use vapgen::controller::resources::{
    crd_resource as crds, template_resource as templates, vap_resource as vaps,
    vapb_resource as vapbs,
};

fn constraints(kind: &str) -> ApiResource {
    vapgen::controller::resources::constraint_resource(kind, &kind.to_ascii_lowercase())
}

fn kind_name(k: usize) -> String {
    format!("{KIND_STEM}{k}")
}

fn template(kind: &str) -> Value {
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.to_ascii_lowercase()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [{
                "engine": "K8sNativeValidation",
                "source": {
                    "generateVAP": true,
                    "failurePolicy": "Ignore",
                    "validations": [{"expression": "object.metadata.name != 'forbidden'", "message": "forbidden"}]
                }
            }]}]
        }
    })
}

/// A constraint limited to ConfigMaps of a namespace that does not exist: it enforces nothing.
fn constraint(kind: &str, i: usize) -> Value {
    json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": format!("c{i}")},
        "spec": {
            "enforcementAction": "deny",
            "match": {"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}], "namespaces": ["vapgen-scale-nowhere"]}
        }
    })
}

/// The raw loop's binding: the shape of a generated one, for a policy that does not exist.
fn raw_binding(i: usize) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": format!("{RAW_PREFIX}{i}")},
        "spec": {
            "policyName": "vapgen-scale-raw-no-such-policy",
            "paramRef": {"name": format!("c{i}"), "parameterNotFoundAction": "Allow"},
            "validationActions": ["Deny"],
            "matchResources": {}
        }
    })
}

// === cluster helpers ===

async fn apply(c: &kube::Client, r: &ApiResource, obj: &Value) -> Result<(), kube::Error> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Api::<DynamicObject>::all_with(c.clone(), r)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map(|_| ())
}

/// Retries `f` on failures for up to a minute (a CRD not served yet, a 429, a timeout).
async fn retry<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(()) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(e) if start.elapsed() > Duration::from_secs(60) => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn names(c: &kube::Client, r: &ApiResource) -> Vec<Value> {
    let api = Api::<DynamicObject>::all_with(c.clone(), r);
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let Ok(page) = api.list(&lp).await else {
            return out;
        };
        out.extend(
            page.items
                .into_iter()
                .map(|o| serde_json::to_value(o).unwrap_or_default()),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return out,
        }
    }
}

async fn delete_where(c: &kube::Client, r: &ApiResource, keep: impl Fn(&str) -> bool) {
    let api = Api::<DynamicObject>::all_with(c.clone(), r);
    let doomed: Vec<String> = names(c, r)
        .await
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
        .filter(|n| keep(n))
        .collect();
    stream::iter(doomed)
        .for_each_concurrent(16, |n| {
            let api = api.clone();
            async move {
                let _ = api.delete(&n, &DeleteParams::default()).await;
            }
        })
        .await;
}

/// Removes everything the benchmark makes (also what an interrupted run left behind).
async fn cleanup(c: &kube::Client) {
    let ours = |n: &str| n.starts_with(&format!("gatekeeper-{}", KIND_STEM.to_ascii_lowercase()));
    for t in names(c, &templates()).await {
        let Some(kind) = t["spec"]["crd"]["spec"]["names"]["kind"].as_str() else {
            continue;
        };
        if kind.starts_with(KIND_STEM) {
            let api = Api::<DynamicObject>::all_with(c.clone(), &constraints(kind));
            let _ = api
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
        }
    }
    delete_where(c, &vapbs(), |n| ours(n) || n.starts_with(RAW_PREFIX)).await;
    delete_where(c, &vaps(), ours).await;
    let stem = KIND_STEM.to_ascii_lowercase();
    delete_where(c, &templates(), |n| n.starts_with(&stem)).await;
    delete_where(c, &crds(), |n| n.starts_with(&stem)).await;
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), NS);
    for name in ["vapgen-scale-setup", "vapgen-scale"] {
        let _ = leases.delete(name, &DeleteParams::default()).await;
    }
}

async fn prepare(c: &kube::Client) {
    vapgen_tests::install_template_crd(c, NS).await;
}

// === the vapgen process ===

struct Vapgen {
    child: Child,
    port: u16,
}

impl Vapgen {
    /// Starts `vapgen run` with its own Lease `lease` (a fresh one: no wait for a dead holder).
    fn spawn(args: &Args, lease: &str) -> Vapgen {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let log_path = std::env::temp_dir().join(format!("{lease}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        eprintln!("scale: vapgen log in {}", log_path.display());
        let child = Command::new(&args.vapgen)
            .args([
                "run",
                "--kubeconfig",
                vapgen_tests::kubeconfig_path()
                    .to_str()
                    .expect("utf-8 path"),
                "--manage-crds",
                "--lease-name",
                lease,
                "--lease-namespace",
                NS,
                "--workers",
                &args.workers.to_string(),
                "--http-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "vapgen=info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vapgen run");
        Vapgen { child, port }
    }

    /// Sum of `vapgen_writes_total{outcome="ok"}` whose labels contain `filter`.
    fn writes_where(&self, filter: &str) -> u64 {
        vapgen_tests::http_get(self.port, "/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("vapgen_writes_total{") && l.contains("outcome=\"ok\""))
            .filter(|l| l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Sum of `vapgen_writes_total{outcome="ok"}`.
    fn writes(&self) -> u64 {
        self.writes_where("")
    }

    /// CPU time (user + system) used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Peak resident set size (`VmHWM`) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Vapgen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === measurements ===

/// Constraints of `kinds` that lack a binding or a `generated` status, and how many there are.
async fn missing(c: &kube::Client, kinds: &[String]) -> (usize, usize) {
    let bindings: std::collections::HashSet<String> = names(c, &vapbs())
        .await
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
        .collect();
    let (mut missing, mut present) = (0, 0);
    for kind in kinds {
        for o in names(c, &constraints(kind)).await {
            present += 1;
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let binding = format!("gatekeeper-{}-{name}", kind.to_ascii_lowercase());
            let generated =
                o.pointer("/status/vapgen/state").and_then(Value::as_str) == Some("generated");
            if !generated || !bindings.contains(&binding) {
                missing += 1;
            }
        }
    }
    (missing, present)
}

/// Waits until nothing is missing (or the timeout); returns the missing count at the end.
/// Waits until nothing is missing (or the timeout). Returns when vapgen had written what
/// converged (its write counters reached `expect` bindings and statuses: cheap to poll, so
/// the polling does not load the API server it measures), verified by a full list, and the
/// missing count at the end.
async fn converge(
    c: &kube::Client,
    v: &Vapgen,
    start: Instant,
    kinds: &[String],
    expect: usize,
    timeout: Duration,
) -> (Duration, usize) {
    let mut last_print = Instant::now();
    let mut last_full = None::<Instant>;
    loop {
        let written = v.writes_where("target=\"vapb\",verb=\"apply\"") as usize;
        let statuses = v.writes_where("target=\"vapb\",verb=\"status\"") as usize;
        let at = start.elapsed();
        let due = last_full.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(10));
        if (written >= expect && statuses >= expect) || due || start.elapsed() > timeout {
            last_full = Some(Instant::now());
            let (m, present) = missing(c, kinds).await;
            if m == 0 && present == expect {
                return (at, 0);
            }
            if start.elapsed() > timeout {
                return (at, m + expect.saturating_sub(present));
            }
        }
        if last_print.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "scale: {:>6.0} s: {written} bindings and {statuses} statuses written",
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_constraints(c: &kube::Client, kinds: &[String], n: usize, workers: usize) {
    let items: Vec<(String, usize)> = (0..n)
        .flat_map(|i| kinds.iter().map(move |k| (k.clone(), i)))
        .collect();
    stream::iter(items)
        .for_each_concurrent(workers, |(kind, i)| async move {
            let obj = constraint(&kind, i);
            let api = Api::<DynamicObject>::all_with(c.clone(), &constraints(&kind));
            let o: DynamicObject = serde_json::from_value(obj).expect("constraint");
            retry(&format!("create {kind}/c{i}"), || async {
                api.create(&PostParams::default(), &o).await.map(|_| ())
            })
            .await;
        })
        .await;
}

/// The raw loop: per constraint, a binding create and a status patch, `workers` at a time.
async fn raw(c: &kube::Client, kinds: &[String], n: usize, workers: usize) -> Duration {
    let items: Vec<(String, usize)> = (0..n)
        .flat_map(|i| kinds.iter().map(move |k| (k.clone(), i)))
        .collect();
    let total = items.len();
    let start = Instant::now();
    stream::iter(items.into_iter().enumerate())
        .map(Ok::<_, kube::Error>)
        .try_for_each_concurrent(workers, |(j, (kind, i))| async move {
            let b: DynamicObject = serde_json::from_value(raw_binding(j)).expect("binding");
            let bindings = Api::<DynamicObject>::all_with(c.clone(), &vapbs());
            retry("raw binding create", || async {
                bindings.create(&PostParams::default(), &b).await.map(|_| ())
            })
            .await;
            let cs = Api::<DynamicObject>::all_with(c.clone(), &constraints(&kind));
            let status = json!({"status": {"raw": {"state": "generated", "binding": format!("{RAW_PREFIX}{j}")}}});
            retry("raw status patch", || async {
                cs.patch_status(&format!("c{i}"), &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .map(|_| ())
            })
            .await;
            Ok(())
        })
        .await
        .expect("raw loop");
    let took = start.elapsed();
    assert_eq!(total, n * kinds.len());
    took
}

/// Watches the Lease of vapgen's run: the largest gap between two successive `renewTime`s
/// (renewals every lease − grace = 5 s by default; a gap past the 15 s lease is a lapse).
fn lease_gaps(
    c: &kube::Client,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
) {
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), NS);
    let gaps: std::sync::Arc<std::sync::Mutex<Vec<f64>>> = Default::default();
    let out = gaps.clone();
    let task = tokio::spawn(async move {
        let mut last: Option<i64> = None;
        loop {
            if let Ok(Some(l)) = leases.get_opt("vapgen-scale").await {
                let renew = l
                    .spec
                    .and_then(|s| s.renew_time)
                    .map(|t| t.0.as_millisecond());
                if let (Some(prev), Some(now)) = (last, renew)
                    && now != prev
                {
                    let gap = (now - prev) as f64 / 1000.0;
                    gaps.lock().expect("gaps").push(gap);
                }
                if renew.is_some() {
                    last = renew;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (task, out)
}

async fn wait_policies(c: &kube::Client, kinds: &[String], timeout: Duration) {
    let start = Instant::now();
    loop {
        let have: std::collections::HashSet<String> = names(c, &vaps())
            .await
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
            .collect();
        let served = futures::future::join_all(kinds.iter().map(|k| {
            let api = Api::<DynamicObject>::all_with(c.clone(), &constraints(k));
            async move { api.list(&ListParams::default().limit(1)).await.is_ok() }
        }))
        .await;
        if served.iter().all(|s| *s)
            && kinds
                .iter()
                .all(|k| have.contains(&format!("gatekeeper-{}", k.to_ascii_lowercase())))
        {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "the templates' CRDs and VAPs did not appear"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let c = vapgen_tests::client().await;
    let kinds: Vec<String> = (0..args.kinds).map(kind_name).collect();
    let total = args.constraints * args.kinds;
    eprintln!(
        "scale: {} kind(s) x {} constraints = {total}, mode {}, workers {}, vapgen {}",
        args.kinds,
        args.constraints,
        if args.live { "live" } else { "backlog" },
        args.workers,
        args.vapgen.display()
    );
    cleanup(&c).await;
    prepare(&c).await;

    // The templates' CRDs and VAPs, made by a first vapgen process.
    let first = Vapgen::spawn(&args, "vapgen-scale-setup");
    for k in &kinds {
        let (r, t) = (templates(), template(k));
        retry("template", || apply(&c, &r, &t)).await;
    }
    wait_policies(&c, &kinds, Duration::from_secs(120)).await;
    drop(first);

    // Raw baseline. It needs the constraints for the status patches: create them now and,
    // in live mode, delete them again before vapgen's run.
    let t = Instant::now();
    create_constraints(&c, &kinds, args.constraints, args.workers).await;
    let created = t.elapsed();
    let raw_took = raw(&c, &kinds, args.constraints, args.workers).await;
    delete_where(&c, &vapbs(), |n| n.starts_with(RAW_PREFIX)).await;
    eprintln!(
        "scale: raw loop: {total} binding creates + {total} status patches in {:.1} s \
         ({:.0}/s); constraint creates without bindings: {:.1} s",
        raw_took.as_secs_f64(),
        total as f64 / raw_took.as_secs_f64(),
        created.as_secs_f64()
    );

    let (lease_task, gaps) = lease_gaps(&c);
    let (vapgen, took, create_took) = if args.live {
        for k in &kinds {
            let api = Api::<DynamicObject>::all_with(c.clone(), &constraints(k));
            let _ = api
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
        }
        let v = Vapgen::spawn(&args, "vapgen-scale");
        wait_policies(&c, &kinds, Duration::from_secs(120)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = Instant::now();
        create_constraints(&c, &kinds, args.constraints, args.workers).await;
        let create_took = start.elapsed();
        let r = converge(&c, &v, start, &kinds, total, args.timeout).await;
        (v, r, Some(create_took))
    } else {
        let start = Instant::now();
        let v = Vapgen::spawn(&args, "vapgen-scale");
        let r = converge(&c, &v, start, &kinds, total, args.timeout).await;
        (v, r, None)
    };
    let (took, missing) = took;
    let writes = vapgen.writes();
    let rss = vapgen.peak_rss_kib();
    let cpu = vapgen.cpu_seconds();
    drop(vapgen);
    lease_task.abort();
    let gaps = gaps.lock().expect("gaps").clone();
    let max_gap = gaps.iter().copied().fold(0.0_f64, f64::max);

    println!(
        "| mode | kinds × constraints | raw loop | vapgen | ratio | writes/constraint | peak RSS | vapgen CPU | lease renewals: max gap | missing |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} × {} | {:.1} s | {:.1} s{} | {:.2}× | {:.2} | {:.1} MiB | {cpu:.1} s | {max_gap:.1} s ({} renewals) | {missing} |",
        if args.live { "live" } else { "backlog" },
        args.kinds,
        args.constraints,
        raw_took.as_secs_f64(),
        took.as_secs_f64(),
        create_took
            .map(|t| format!(
                " (creates {:.1} s, then {:.1} s)",
                t.as_secs_f64(),
                took.saturating_sub(t).as_secs_f64()
            ))
            .unwrap_or_default(),
        took.as_secs_f64() / raw_took.as_secs_f64(),
        writes as f64 / total as f64,
        rss as f64 / 1024.0,
        gaps.len(),
    );
    cleanup(&c).await;
    if missing > 0 {
        std::process::exit(1);
    }
}
