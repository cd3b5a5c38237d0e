//! Both enforcement points agree (issue #12 item 2): the gatekeeper-library suites judged by
//! the **real Gatekeeper**'s webhook and by vapgen's VAPs, case by case, on one API server.
//!
//! Gatekeeper v3.23.1 runs beside a control plane of its own ([`GatekeeperControlPlane`]:
//! webhook, audit and status operations, `generate` off) and vapgen runs in-process in
//! coexist mode (`--manage-crds`, scope sync on), as `vapgen run` would beside it. Every
//! library template is applied as it is (Gatekeeper's ConstraintTemplate CRD). Then, per
//! suite test, its constraint is applied with `enforcementAction: scoped` and one deny entry
//! whose enforcement point is switched:
//! 1. `validation.gatekeeper.sh` only: Gatekeeper's webhook enforces, vapgen makes no binding.
//!    Once Gatekeeper reports the constraint enforced (its `status.byPod`), every case is sent
//!    through the API server as a server-side dry run;
//! 2. `vap.k8s.io` only: vapgen makes the binding, Gatekeeper's webhook stops enforcing it
//!    (its `status.byPod` at the new generation), and every case is sent again.
//!
//! A verdict is "admit" or "deny", with who denied (the webhook, the VAP, or neither: another
//! refusal). The table printed lists, per case: the suite's expectation, both verdicts, and
//! same / different. A difference passes only when [`EXPLAINED`] gives its reason; so does a
//! case where both points disagree with the suite. Requests are made as
//! [`verify::case_request`] says (an `AdmissionReview` UPDATE as an update of an object created
//! first; a Pod's ephemeral containers as an update of its `pods/ephemeralcontainers`
//! subresource, which scope sync's rules match, as Gatekeeper's webhook rules do). Objects the
//! API server refuses with no constraint at all are skipped with its message.
//!
//! Outside CI the test skips loudly when Gatekeeper or the corpus is missing; under `CI=true`
//! that is a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::{Value, json};
use vapgen::runtime::{Runtime, RuntimeConfig};
use vapgen::snapshot;
use vapgen::verify::{self, CaseOp, CaseProblem, CaseRequest, GatorTest};
use vapgen_tests::coexist::by_pod;
use vapgen_tests::gatekeeper::GatekeeperControlPlane;

const WEBHOOK: &str = "validation.gatekeeper.sh";
const VAP: &str = "vap.k8s.io";
/// Gatekeeper's webhook's denials start so.
const GK_DENIAL: &str = "admission webhook \"validation.gatekeeper.sh\" denied the request";
/// vapgen's Lease name here: the id of its entries in `status.byPod`.
const VAPGEN_ID: &str = "vapgen";
/// How long a case expected to be denied is retried until the point has denied one case of
/// the test (each point's caches may lag a moment after the constraint changed).
const DENY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long once the point has denied a case of the test (its caches hold the constraint).
const DENY_TIMEOUT_SYNCED: Duration = Duration::from_secs(1);
/// How long a case expected to be admitted is retried.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the templates exempt the ephemeral-container cases below: both points admit them.
const UPDATE_EXEMPT: &str = "both admit: the template exempts UPDATE requests (`variables.isUpdate`), and ephemeral \
     containers can only be added by an UPDATE of pods/ephemeralcontainers (`kubectl debug`); gator judges the Pod \
     as a create";

/// Cases where a point differs from the other or from the suite, by `suite/test/case`, with
/// the reason printed in the table. Anything else that differs fails the test.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "allow-privilege-escalation/allow-privilege-escalation/disallowed-ephemeral",
        UPDATE_EXEMPT,
    ),
    (
        "host-filesystem/host-filesystem/disallowed-ephemeral",
        UPDATE_EXEMPT,
    ),
    (
        "privileged-containers/privileged-containers-disallowed/disallowed-ephemeral",
        UPDATE_EXEMPT,
    ),
    (
        "proc-mount/default-proc-mount-required/disallowed-ephemeral",
        UPDATE_EXEMPT,
    ),
    (
        "read-only-root-filesystem/require-read-only-root-filesystem/disallowed-ephemeral",
        UPDATE_EXEMPT,
    ),
];

/// One point's answer to a case.
#[derive(Clone, Debug, PartialEq)]
enum Got {
    Admitted,
    /// Denied by Gatekeeper's webhook (its message).
    Webhook(String),
    /// Denied by a ValidatingAdmissionPolicy (its message).
    Vap(String),
    /// Refused otherwise (the API server's message).
    Other(String),
}

impl Got {
    fn from(r: Result<(), kube::Error>) -> Got {
        match r {
            Ok(()) => Got::Admitted,
            Err(kube::Error::Api(s)) if s.message.contains(GK_DENIAL) => Got::Webhook(s.message),
            Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy '") => {
                if s.message.contains("failed to configure") || s.message.contains("not yet synced")
                {
                    Got::Other(s.message)
                } else {
                    Got::Vap(s.message)
                }
            }
            Err(kube::Error::Api(s)) => Got::Other(s.message),
            Err(e) => Got::Other(e.to_string()),
        }
    }

    /// `admit`, `deny` (by the point under test), or what else happened.
    fn verdict(&self, point: &str) -> String {
        match (self, point) {
            (Got::Admitted, _) => "admit".into(),
            (Got::Webhook(_), WEBHOOK) | (Got::Vap(_), VAP) => "deny".into(),
            (Got::Webhook(_), _) => "deny by the webhook".into(),
            (Got::Vap(_), _) => "deny by a VAP".into(),
            (Got::Other(m), _) => format!("refused: {}", m.chars().take(100).collect::<String>()),
        }
    }

    fn message(&self) -> &str {
        match self {
            Got::Admitted => "",
            Got::Webhook(m) | Got::Vap(m) | Got::Other(m) => m,
        }
    }
}

/// A case ready to send.
struct Case {
    name: String,
    expect_deny: bool,
    needle: Option<String>,
    api: Api<DynamicObject>,
    obj: Value,
    op: CaseOp,
}

impl Case {
    async fn send(&self) -> Got {
        Got::from(verify::send_request(&self.api, &self.obj, &self.op).await)
    }

    /// The answer with `point` enforcing: a case the suite expects to be denied is retried
    /// until `point` denies it or `deny_timeout` passes, one expected to be admitted until
    /// admitted or [`ADMIT_TIMEOUT`] passes; the last answer counts.
    async fn judge(&self, point: &str, deny_timeout: Duration) -> Got {
        let (timeout, done): (Duration, fn(&Got, &str) -> bool) = if self.expect_deny {
            (deny_timeout, |g, p| g.verdict(p) == "deny")
        } else {
            (ADMIT_TIMEOUT, |g, _| *g == Got::Admitted)
        };
        let start = Instant::now();
        loop {
            let got = self.send().await;
            if done(&got, point) || start.elapsed() > timeout {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every case's answer with `point` enforcing, in order (denials expected first).
async fn judge_all(cases: &[Case], point: &str) -> Vec<Got> {
    let mut out = Vec::new();
    let mut synced = false;
    for c in cases {
        let got = c
            .judge(
                point,
                if synced {
                    DENY_TIMEOUT_SYNCED
                } else {
                    DENY_TIMEOUT
                },
            )
            .await;
        synced |= got.verdict(point) == "deny";
        out.push(got);
    }
    out
}

/// One row of the table.
struct Row {
    id: String,
    expected: String,
    webhook: String,
    vap: String,
    note: String,
}

fn expected_text(deny: bool, needle: &Option<String>) -> String {
    match (deny, needle) {
        (false, _) => "admit".into(),
        (true, None) => "deny".into(),
        (true, Some(n)) => format!("deny {n:?}"),
    }
}

/// The kind's API and whether it is namespaced (discovery, cached per apiVersion/kind).
async fn api_for(
    client: &kube::Client,
    cache: &mut BTreeMap<String, Option<(ApiResource, bool)>>,
    obj: &Value,
) -> Option<(ApiResource, bool)> {
    let av = obj["apiVersion"].as_str().unwrap_or("v1").to_string();
    let kind = snapshot::kind_of(obj).to_string();
    let key = format!("{av}/{kind}");
    if !cache.contains_key(&key) {
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av.as_str()));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let found: Result<(ApiResource, ApiCapabilities), _> =
            kube::discovery::pinned_kind(client, &gvk).await;
        cache.insert(
            key.clone(),
            found
                .ok()
                .map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced)),
        );
    }
    cache[&key].clone()
}

/// The library's tests, with the directory their files are relative to.
fn library_tests(library: &Path) -> Vec<(String, PathBuf, GatorTest)> {
    let files =
        verify::suite_files(&[library.join("general"), library.join("pod-security-policy")]);
    let mut out = Vec::new();
    for f in files {
        let suite = verify::read_suite(&f).expect("suite");
        let name = suite.metadata["name"].as_str().unwrap_or("?").to_string();
        let base = f.parent().expect("suite dir").to_path_buf();
        for t in suite.tests {
            out.push((name.clone(), base.clone(), t));
        }
    }
    out
}

/// `constraint` with one deny entry scoped to `point`.
fn scoped_to(constraint: &Value, point: &str) -> Value {
    let mut c = constraint.clone();
    c["spec"]["enforcementAction"] = json!("scoped");
    c["spec"]["scopedEnforcementActions"] =
        json!([{"action": "deny", "enforcementPoints": [{"name": point}]}]);
    if let Some(m) = c["metadata"].as_object_mut() {
        m.retain(|k, _| k == "name" || k == "labels" || k == "annotations");
    }
    c
}

/// Waits until Gatekeeper's entry in the constraint's `status.byPod` is at the constraint's
/// generation and `enforced` (its webhook's cache then holds this version).
async fn gatekeeper_has(client: &kube::Client, kind: &str, name: &str, gk_pod: &str) -> Value {
    wait_object(
        client,
        &constraint_resource(kind),
        name,
        "Gatekeeper's status of the constraint at its generation",
        |o| {
            by_pod(o, gk_pod).is_some_and(|e| {
                e["enforced"] == true && e["observedGeneration"] == o["metadata"]["generation"]
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_verdicts_of_gatekeepers_webhook_and_vapgens_vaps_agree() {
    let test_start = Instant::now();
    let Some(library) = vapgen_tests::conformance_library() else {
        return;
    };
    let Some(cp) = tokio::task::block_in_place(GatekeeperControlPlane::start) else {
        return;
    };
    let gk_pod = cp
        .env("VAPGEN_GATEKEEPER_POD")
        .and_then(|p| p.rsplit_once('/'))
        .map(|(_, n)| n.to_owned())
        .expect("VAPGEN_GATEKEEPER_POD");
    let client = cp.client().await;
    let ns = vapgen_tests::fresh_namespace(&client, "verdicts").await;
    let ns_obj =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    apply(&client, &ns_resource(), &ns_obj).await;
    let wasm = Runtime::new(RuntimeConfig::default()).expect("wasm runtime");
    let decider = wasm.load_bundled().expect("bundled module");
    let controller = vapgen::controller::start(
        client.clone(),
        decider,
        coexist_config("verdicts", VAPGEN_ID, &[]),
    )
    .await
    .expect("start vapgen");

    // --- every template, once; Gatekeeper and vapgen take them in parallel --------------------
    let tests = library_tests(&library);
    let mut kinds = BTreeMap::new();
    for (_, base, t) in &tests {
        let tpl = verify::read_one(base, &t.template)
            .expect("template")
            .object;
        let kind = snapshot::template_kind(&tpl).expect("kind").to_string();
        if kinds
            .insert(kind, snapshot::name_of(&tpl).to_string())
            .is_none()
        {
            apply(&client, &template_resource(), &tpl).await;
        }
    }
    // Gatekeeper's template reconcile fails until vapgen's constraint CRD is served, and backs
    // off (41.6 s seen): once a kind is served, touch its template until Gatekeeper reports it
    // by pod (see coexist.rs).
    let start = Instant::now();
    let mut pending: BTreeSet<&String> = kinds.keys().collect();
    let mut nudges = 0u32;
    while !pending.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "Gatekeeper never reported these templates by pod: {pending:?}"
        );
        let served: BTreeSet<String> = client
            .list_api_group_resources("constraints.gatekeeper.sh/v1beta1")
            .await
            .map(|l| l.resources.into_iter().map(|r| r.kind).collect())
            .unwrap_or_default();
        let mut done = Vec::new();
        for kind in &pending {
            let name = &kinds[*kind];
            let t = get(&client, &template_resource(), name)
                .await
                .expect("template");
            if by_pod(&t, &gk_pod).is_some_and(|e| e["observedGeneration"].is_number()) {
                done.push(*kind);
            } else if served.contains(*kind) {
                nudges += 1;
                let patch =
                    json!({"metadata": {"annotations": {"vapgen.test/nudge": nudges.to_string()}}});
                merge(&client, &template_resource(), name, &patch).await;
            }
        }
        for k in done {
            pending.remove(k);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "verdicts: {} templates served and reported by Gatekeeper {:.1} s after vapgen started ({nudges} nudges)",
        kinds.len(),
        start.elapsed().as_secs_f64()
    );

    // --- each test: webhook only, then the VAP only ------------------------------------------
    let mut rows = Vec::new();
    let mut discovery = BTreeMap::new();
    let mut serial = 0usize;
    let mut created: Vec<(Api<DynamicObject>, String)> = Vec::new();
    for (suite, base, test) in &tests {
        let id = |case: &str| format!("{suite}/{}/{case}", test.name);
        let constraint = verify::read_one(base, &test.constraint)
            .expect("constraint")
            .object;
        let kind = snapshot::kind_of(&constraint).to_string();
        let cname = snapshot::name_of(&constraint).to_string();
        let mut cases = Vec::new();
        for case in &test.cases {
            let (deny, needle) = case.expectation();
            let skip = |why: String| Row {
                id: id(&case.name),
                expected: expected_text(deny, &needle),
                webhook: "-".into(),
                vap: "-".into(),
                note: format!("skipped: {why}"),
            };
            let CaseRequest { mut object, mut op } = match verify::case_request(base, case) {
                Ok(r) => r,
                Err(CaseProblem::Skip(why)) => {
                    rows.push(skip(why));
                    continue;
                }
                Err(CaseProblem::Fail(why)) => panic!("{}: {why}", id(&case.name)),
            };
            let Some((ar, namespaced)) = api_for(&client, &mut discovery, &object).await else {
                rows.push(skip("kind not served".into()));
                continue;
            };
            serial += 1;
            let name: String = format!(
                "{}-{serial}",
                object["metadata"]["name"].as_str().unwrap_or("obj")
            )
            .chars()
            .take(60)
            .collect();
            object["metadata"]["name"] = json!(name.trim_end_matches('-'));
            let api = if namespaced {
                object["metadata"]["namespace"] = json!(ns);
                Api::namespaced_with(client.clone(), &ns, &ar)
            } else {
                Api::all_with(client.clone(), &ar)
            };
            // No constraint binds yet: what the API server refuses now is no verdict.
            match verify::stage_request(&api, &object, &mut op).await {
                Ok(true) => created.push((api.clone(), snapshot::name_of(&object).to_string())),
                Ok(false) => {}
                Err(e) => {
                    rows.push(skip(format!(
                        "refused with no constraint: {}",
                        Got::from(Err(e)).message()
                    )));
                    continue;
                }
            }
            if op != CaseOp::Create {
                // The staged object is no request yet: check the request itself too.
                let baseline = Got::from(verify::send_request(&api, &object, &op).await);
                if baseline != Got::Admitted {
                    rows.push(skip(format!(
                        "refused with no constraint: {}",
                        baseline.message()
                    )));
                    continue;
                }
            }
            cases.push(Case {
                name: case.name.clone(),
                expect_deny: deny,
                needle,
                api,
                obj: object,
                op,
            });
        }
        if cases.is_empty() {
            continue;
        }
        // Denials first: once one is seen, the point's caches hold the constraint.
        cases.sort_by_key(|c| !c.expect_deny);

        // 1. Gatekeeper's webhook only.
        apply_constraint(&client, &scoped_to(&constraint, WEBHOOK)).await;
        gatekeeper_has(&client, &kind, &cname, &gk_pod).await;
        let by_webhook = judge_all(&cases, WEBHOOK).await;
        assert!(
            get(&client, &vapb_resource(), &binding_name(&kind, &cname))
                .await
                .is_none(),
            "{suite}/{}: a binding for a constraint scoped to {WEBHOOK} only",
            test.name
        );

        // 2. vapgen's VAP only.
        apply_constraint(&client, &scoped_to(&constraint, VAP)).await;
        gatekeeper_has(&client, &kind, &cname, &gk_pod).await;
        wait_object(
            &client,
            &vapb_resource(),
            &binding_name(&kind, &cname),
            "vapgen's binding",
            |_| true,
        )
        .await;
        if !cases.iter().any(|c| c.expect_deny) {
            // Nothing to wait for a denial on: give the admission plugin time to load the binding.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let by_vap = judge_all(&cases, VAP).await;
        delete(&client, &constraint_resource(&kind), &cname).await;
        wait_gone(&client, &vapb_resource(), &binding_name(&kind, &cname)).await;

        for ((c, w), v) in cases.iter().zip(by_webhook).zip(by_vap) {
            let (wv, vv) = (w.verdict(WEBHOOK), v.verdict(VAP));
            let expected = if c.expect_deny { "deny" } else { "admit" };
            let mut notes = Vec::new();
            if wv != vv {
                notes.push("DIFFERENT".to_string());
            } else {
                notes.push("same".to_string());
            }
            if let Some(n) = &c.needle {
                for (who, g) in [("webhook", &w), ("VAP", &v)] {
                    if !g.message().contains(n.as_str())
                        && g.verdict(if who == "VAP" { VAP } else { WEBHOOK }) == "deny"
                    {
                        notes.push(format!("{who} message lacks {n:?}"));
                    }
                }
            }
            if wv != expected || vv != expected {
                notes.push("not as the suite".into());
            }
            rows.push(Row {
                id: format!("{suite}/{}/{}", test.name, c.name),
                expected: expected_text(c.expect_deny, &c.needle),
                webhook: wv,
                vap: vv,
                note: notes.join("; "),
            });
        }
    }
    for (api, name) in created {
        let _ = api.delete(&name, &Default::default()).await;
    }

    // --- the table ---------------------------------------------------------------------------
    let explained: BTreeMap<&str, &str> = EXPLAINED.iter().copied().collect();
    let mut table =
        String::from("| case | suite expects | webhook | VAP | result |\n|---|---|---|---|---|\n");
    let mut unexplained = Vec::new();
    let (mut same, mut different, mut skipped) = (0, 0, 0);
    for r in &rows {
        let mut note = r.note.clone();
        if note.starts_with("skipped") {
            skipped += 1;
        } else {
            if note.starts_with("DIFFERENT") {
                different += 1;
            } else {
                same += 1;
            }
            match explained.get(r.id.as_str()) {
                Some(why) => note = format!("{note}: {why}"),
                None if note != "same" => unexplained.push(format!("{}: {note}", r.id)),
                None => {}
            }
        }
        table += &format!(
            "| {} | {} | {} | {} | {note} |\n",
            r.id, r.expected, r.webhook, r.vap
        );
    }
    let stale: Vec<&str> = EXPLAINED
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !rows.iter().any(|r| r.id == *id && r.note != "same"))
        .collect();
    println!("{table}");
    println!(
        "verdicts: {} cases: {same} same, {different} different, {skipped} skipped, in {:.0} s",
        rows.len(),
        test_start.elapsed().as_secs_f64()
    );
    controller.stop().await;
    assert!(
        unexplained.is_empty(),
        "{} case(s) with an unexplained difference (add the reason to EXPLAINED only once understood):\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    assert!(
        stale.is_empty(),
        "EXPLAINED lists cases that no longer differ (remove them): {stale:?}"
    );
    assert!(same > 0, "no case was judged");
}
