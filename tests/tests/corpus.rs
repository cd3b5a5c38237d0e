//! The gatekeeper-library conformance corpus, end to end on the real API server: for each of
//! the 16 CEL templates, vapgen (the shared in-process controller) generates the VAP and the
//! bindings, and every suite case that a real API server can run must be admitted or denied
//! by the API server itself exactly as the suite says.
//!
//! Cases that cannot run are counted and reported with their reason:
//! * ephemeral-container Pods: `spec.ephemeralContainers` is forbidden on create, and the real
//!   path (the `pods/ephemeralcontainers` subresource) is not matched by the generated rules;
//! * objects the API server rejects on its own, before any policy (a baseline dry-run create
//!   with no binding fails).
//!
//! `update.yaml` AdmissionReviews are reproduced: the object is created before the constraint
//! exists, then updated (a label) once the binding enforces; all of them expect admission.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Suite {
    tests: Vec<SuiteTest>,
}

#[derive(Deserialize)]
struct SuiteTest {
    name: String,
    template: String,
    constraint: String,
    #[serde(default)]
    cases: Vec<SuiteCase>,
}

#[derive(Deserialize)]
struct SuiteCase {
    name: String,
    object: String,
    #[serde(default)]
    assertions: Vec<Assertion>,
}

#[derive(Deserialize)]
struct Assertion {
    violations: serde_yaml::Value,
    #[serde(default)]
    message: Option<String>,
}

impl SuiteCase {
    /// Whether the suite expects a violation, and the message substring if any.
    fn expectation(&self) -> (bool, Option<String>) {
        let mut violated = false;
        let mut msg = None;
        for a in &self.assertions {
            let v = match &a.violations {
                serde_yaml::Value::String(s) => s == "yes",
                serde_yaml::Value::Bool(b) => *b,
                serde_yaml::Value::Number(n) => n.as_u64().unwrap_or(0) > 0,
                _ => false,
            };
            if v {
                violated = true;
                if a.message.is_some() {
                    msg = a.message.clone();
                }
            }
        }
        (violated, msg)
    }
}

fn read_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

#[derive(Default)]
struct Tally {
    ran: usize,
    passed: usize,
    skipped: Vec<String>,
    failed: Vec<String>,
}

/// An Api for the object's kind (namespaced into `ns` when the kind is namespaced).
async fn api_for(
    client: &kube::Client,
    obj: &mut Value,
    ns: &str,
) -> Result<Api<DynamicObject>, String> {
    let av = obj["apiVersion"].as_str().unwrap_or("v1").to_string();
    let kind = obj["kind"].as_str().unwrap_or("").to_string();
    let (group, version) = av
        .rsplit_once('/')
        .map_or(("", av.as_str()), |(g, v)| (g, v));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let (ar, caps): (_, ApiCapabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("discovery of {av}/{kind}: {e}"))?;
    Ok(if caps.scope == Scope::Namespaced {
        obj["metadata"]["namespace"] = json!(ns);
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    })
}

async fn dry_run(api: &Api<DynamicObject>, obj: &Value) -> Result<(), String> {
    let o: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&pp, &o).await.map(|_| ()).map_err(|e| match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    })
}

fn is_plugin_lag(msg: &str) -> bool {
    msg.contains("not yet synced") || msg.contains("failed to configure")
}

/// Polls until the policy denies the object (with `needle` in the message, if given).
async fn expect_denied(
    api: &Api<DynamicObject>,
    obj: &Value,
    policy: &str,
    needle: Option<&str>,
) -> Result<(), String> {
    let wanted = format!("ValidatingAdmissionPolicy '{policy}'");
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        match dry_run(api, obj).await {
            Err(m) if m.contains(&wanted) && !is_plugin_lag(&m) => {
                return match needle {
                    Some(n) if !m.contains(n) => Err(format!("denied, but without {n:?}: {m}")),
                    _ => Ok(()),
                };
            }
            Err(m) => last = m,
            Ok(()) => last = "admitted".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "expected a denial by {policy}; last answer: {last}"
    ))
}

/// Polls until the object is admitted (stale bindings of earlier constraints may still deny
/// for a moment; a wrong denial by this constraint never goes away).
async fn expect_admitted(api: &Api<DynamicObject>, obj: &Value) -> Result<(), String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(15) {
        match dry_run(api, obj).await {
            Ok(()) => return Ok(()),
            Err(m) => last = m,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("expected admission; last answer: {last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatekeeper_library_suites_pass_end_to_end() {
    let Some(library) = vapgen_tests::conformance_library() else {
        return;
    };
    controller();
    let client = vapgen_tests::client().await;
    let ns = vapgen_tests::fresh_namespace(&client, "corpus").await;
    let mut suites: Vec<PathBuf> = Vec::new();
    for group in ["general", "pod-security-policy"] {
        for e in std::fs::read_dir(library.join(group)).expect("library") {
            let p = e.unwrap().path().join("suite.yaml");
            if p.is_file() {
                suites.push(p);
            }
        }
    }
    suites.sort();
    assert_eq!(suites.len(), 16, "16 CEL templates in the corpus");
    let mut tally = Tally::default();
    let mut serial = 0usize;
    for suite_path in &suites {
        let dir = suite_path.parent().unwrap();
        let suite: Suite =
            serde_yaml::from_str(&std::fs::read_to_string(suite_path).unwrap()).unwrap();
        let template = read_yaml(&dir.join(&suite.tests[0].template)).remove(0);
        let kind = template["spec"]["crd"]["spec"]["names"]["kind"]
            .as_str()
            .unwrap()
            .to_string();
        let tname = template["metadata"]["name"].as_str().unwrap().to_string();
        apply(&client, &template_resource(), &template).await;
        for test in &suite.tests {
            let constraint = read_yaml(&dir.join(&test.constraint)).remove(0);
            let cname = constraint["metadata"]["name"].as_str().unwrap().to_string();
            // Phase 1, no binding: baseline every object; create the objects of UPDATE cases.
            let mut plain = Vec::new();
            let mut updates = Vec::new();
            for case in &test.cases {
                let id = format!("{}/{}/{}", tname, test.name, case.name);
                let mut obj = read_yaml(&dir.join(&case.object)).remove(0);
                let is_review = obj["kind"] == "AdmissionReview";
                if is_review {
                    obj = obj["request"]["object"].clone();
                }
                if obj.pointer("/spec/ephemeralContainers").is_some() {
                    tally.skipped.push(format!("{id}: ephemeral containers cannot be set on create (subresource pods/ephemeralcontainers is not matched by the generated rules)"));
                    continue;
                }
                serial += 1;
                let name = format!(
                    "{}-{serial}",
                    obj["metadata"]["name"].as_str().unwrap_or("obj")
                );
                obj["metadata"]["name"] = json!(
                    name.chars()
                        .take(60)
                        .collect::<String>()
                        .trim_end_matches('-')
                );
                let api = match api_for(&client, &mut obj, &ns).await {
                    Ok(a) => a,
                    Err(e) => {
                        tally.skipped.push(format!("{id}: {e}"));
                        continue;
                    }
                };
                if is_review {
                    let o: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
                    match api.create(&PostParams::default(), &o).await {
                        Ok(_) => updates.push((id, api, obj)),
                        Err(e) => tally.skipped.push(format!(
                            "{id}: the object of the UPDATE cannot be created: {e}"
                        )),
                    }
                    continue;
                }
                match dry_run(&api, &obj).await {
                    Ok(()) => plain.push((id, case.expectation(), api, obj)),
                    Err(m) => tally.skipped.push(format!(
                        "{id}: rejected by the API server without any policy: {m}"
                    )),
                }
            }
            // Phase 2: the constraint; vapgen makes the binding.
            apply_constraint(&client, &constraint).await;
            let bname = binding_name(&kind, &cname);
            wait_object(
                &client,
                &vapb_resource(),
                &bname,
                "the corpus binding",
                |_| true,
            )
            .await;
            // Denials first: they also prove the binding enforces before admissions are trusted.
            plain.sort_by_key(|(_, (violated, _), _, _)| !*violated);
            for (id, (violated, needle), api, obj) in &plain {
                tally.ran += 1;
                let r = if *violated {
                    expect_denied(api, obj, &policy_name(&kind), needle.as_deref()).await
                } else {
                    expect_admitted(api, obj).await
                };
                match r {
                    Ok(()) => tally.passed += 1,
                    Err(e) => tally.failed.push(format!("{id}: {e}")),
                }
            }
            for (id, api, obj) in &updates {
                tally.ran += 1;
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                let patch = json!({"metadata": {"labels": {"vapgen-corpus-update": "1"}}});
                let pp = PatchParams {
                    dry_run: true,
                    ..PatchParams::default()
                };
                match api.patch(&name, &pp, &Patch::Merge(&patch)).await {
                    Ok(_) => tally.passed += 1,
                    Err(e) => tally
                        .failed
                        .push(format!("{id}: expected the UPDATE to be admitted: {e}")),
                }
                let _ = api.delete(&name, &Default::default()).await;
            }
            delete(&client, &constraint_resource(&kind), &cname).await;
            wait_gone(&client, &vapb_resource(), &bname).await;
        }
        cleanup_template(&client, &kind).await;
        wait_gone(&client, &vap_resource(), &policy_name(&kind)).await;
    }
    println!(
        "gatekeeper-library corpus: {} cases ran, {} passed, {} failed, {} skipped",
        tally.ran,
        tally.passed,
        tally.failed.len(),
        tally.skipped.len()
    );
    for s in &tally.skipped {
        println!("  skipped {s}");
    }
    for f in &tally.failed {
        println!("  FAILED  {f}");
    }
    assert!(
        tally.failed.is_empty(),
        "{} corpus case(s) failed:\n{}",
        tally.failed.len(),
        tally.failed.join("\n")
    );
    assert!(
        tally.ran >= 100,
        "most of the 131 cases run ({} ran)",
        tally.ran
    );
}
