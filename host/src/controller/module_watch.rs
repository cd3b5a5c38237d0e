//! Hot swap of the decision module in a running controller.
//!
//! The module file (a path; a mounted ConfigMap or volume appears the same way) is polled.
//! When its bytes change: check the sha256 pin (with a pin, nothing else is ever accepted) →
//! compile off the async runtime → check imports and the interface version → self-test (a
//! canonical plan must succeed; a decision suite shipped beside the module must pass) →
//! switch atomically for every reconcile → re-plan every kind. Any failure keeps the last
//! known good module running and says so: a log line, an Event, and the metrics
//! `vapgen_module_info` (active) and `vapgen_module_rejected{sha256}`. `/readyz` is not
//! affected. Every replica watches, so a failover never reverts to an older module.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use vapgen_guest::model::{Constraint, Settings};

use super::{Handles, requeue_all};
use crate::render::{self, RenderError};
use crate::runtime::{CallError, Decide, Decider, LoadError, ModuleSource, Runtime};
use crate::suite::{self, SuiteError};

/// What to watch.
#[derive(Clone, Debug)]
pub struct ModuleWatch {
    /// The module file.
    pub path: PathBuf,
    /// Accept only this sha256.
    pub pin: Option<String>,
    /// A decision suite every new module must pass (default: `<path>.suite.yaml` if present).
    pub suite: Option<PathBuf>,
    /// How often to look at the file.
    pub interval: Duration,
}

impl ModuleWatch {
    fn suite_path(&self) -> Option<PathBuf> {
        self.suite.clone().or_else(|| {
            let mut p = self.path.clone().into_os_string();
            p.push(".suite.yaml");
            let p = PathBuf::from(p);
            p.is_file().then_some(p)
        })
    }
}

const SELF_TEST_TEMPLATE: &str = r#"{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate","metadata":{"name":"k8svapgenselftest","uid":"self-test","generation":1},"spec":{"crd":{"spec":{"names":{"kind":"K8sVapgenSelfTest"}}},"targets":[{"target":"admission.k8s.gatekeeper.sh","code":[{"engine":"K8sNativeValidation","source":{"validations":[{"expression":"true","message":"self test"}]}}]}]}}"#;

/// Why a candidate module was rejected (the active module stays).
#[derive(Debug, thiserror::Error)]
pub enum ModuleRejected {
    /// It could not be loaded (pin, compile, imports, interface, describe).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The self-test plan failed (timeout, memory, trap, rejected input).
    #[error("self-test: {0}")]
    SelfTestCall(#[source] CallError),
    /// The self-test plan has not one binding plan for its one constraint.
    #[error("self-test: expected 1 binding plan for 1 constraint, got {0}")]
    SelfTestBindings(usize),
    /// The self-test policy is not a proper v1 ValidatingAdmissionPolicy.
    #[error("self-test: {0}")]
    SelfTestPolicy(#[source] RenderError),
    /// The module's decision suite could not run.
    #[error("suite {}: {source}", .path.display())]
    Suite {
        /// The suite file.
        path: PathBuf,
        /// Why it could not run.
        #[source]
        source: SuiteError,
    },
    /// Cases of the module's decision suite failed.
    #[error("suite {}: {} case(s) failed: {}", .path.display(), .failed.len(), .failed.join("; "))]
    SuiteFailed {
        /// The suite file.
        path: PathBuf,
        /// The names of the failed cases.
        failed: Vec<String>,
    },
    /// The validation task panicked or was cancelled.
    #[error("validation task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Loads and checks a candidate module. Blocking (compiles): call off the async runtime.
pub fn validate(
    runtime: &Runtime,
    bytes: &[u8],
    watch: &ModuleWatch,
) -> Result<Decider, ModuleRejected> {
    let d = runtime.load_bytes(
        bytes,
        watch.pin.as_deref(),
        ModuleSource::File(watch.path.clone()),
    )?;
    // The canonical plan: one valid template, one constraint. It must plan, in time, without
    // trapping, with one binding plan, and a policy (if any) that is a proper v1 VAP.
    let constraint = Constraint {
        name: "self-test".into(),
        uid: "self-test".into(),
        generation: 1,
        ..Constraint::default()
    };
    let plan = d
        .plan_kind(&Settings::default(), SELF_TEST_TEMPLATE, &[constraint])
        .map_err(ModuleRejected::SelfTestCall)?;
    if plan.bindings.len() != 1 {
        return Err(ModuleRejected::SelfTestBindings(plan.bindings.len()));
    }
    if let vapgen_guest::model::PolicyOutcome::Desired(json) = &plan.policy {
        render::policy_object(json, &plan.policy_name).map_err(ModuleRejected::SelfTestPolicy)?;
    }
    if let Some(path) = watch.suite_path() {
        let cases = match suite::run_file(&d, &path).cases {
            Ok(cases) => cases,
            Err(source) => return Err(ModuleRejected::Suite { path, source }),
        };
        let failed: Vec<String> = cases
            .into_iter()
            .filter(|c| !c.failures.is_empty())
            .map(|c| c.name)
            .collect();
        if !failed.is_empty() {
            return Err(ModuleRejected::SuiteFailed { path, failed });
        }
    }
    Ok(d)
}

/// Polls the module file and swaps on change (see the module docs).
pub async fn run(
    h: Handles,
    runtime: Runtime,
    watch: ModuleWatch,
    active_sha256: String,
    events: ModuleEvents,
) {
    let mut active = active_sha256;
    let mut rejected: Option<String> = None;
    loop {
        tokio::time::sleep(watch.interval).await;
        let bytes = match tokio::fs::read(&watch.path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(path = %watch.path.display(), error = %e, "module file unreadable; keeping the active module");
                continue;
            }
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha == active {
            if let Some(bad) = rejected.take() {
                // The file is the active (good) module again: nothing is rejected any more.
                h.metrics.module_rejected(None);
                tracing::info!(active = %active, rejected = %bad, "module file is the active module again; rejection cleared");
            }
            continue;
        }
        if rejected.as_deref() == Some(sha.as_str()) {
            continue;
        }
        let (rt, w) = (runtime.clone(), watch.clone());
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || validate(&rt, &bytes, &w))
            .await
            .unwrap_or_else(|e| Err(ModuleRejected::Task(e)));
        match result {
            Ok(d) => {
                let info = d.info().clone();
                h.metrics
                    .module(&info.name, &info.version, &info.interface_version, &sha);
                h.metrics.module_rejected(None);
                h.metrics.module_swap(true);
                *h.decider.write().expect("decider lock") = Arc::new(d) as Arc<dyn Decide>;
                tracing::info!(from = %active, to = %sha, module = %info.name, version = %info.version, took = ?started.elapsed(), "decision module swapped; re-planning every kind");
                events
                    .publish(
                        false,
                        "DecisionModuleSwapped",
                        &format!("now using {} {} (sha256 {sha})", info.name, info.version),
                    )
                    .await;
                active = sha;
                rejected = None;
                requeue_all(&h);
            }
            Err(e) => {
                h.metrics.module_rejected(Some(&sha));
                h.metrics.module_swap(false);
                tracing::error!(active = %active, rejected = %sha, error = %e, "new decision module rejected; keeping the last known good one");
                events
                    .publish(
                        true,
                        "DecisionModuleRejected",
                        &format!("module sha256 {sha} rejected, still using {active}: {e}"),
                    )
                    .await;
                rejected = Some(sha);
            }
        }
    }
}

/// Where module swap Events go: the replica's Pod when `POD_NAME`/`POD_NAMESPACE` are set,
/// else the Lease.
pub struct ModuleEvents {
    recorder: Option<(
        kube::runtime::events::Recorder,
        k8s_openapi::api::core::v1::ObjectReference,
    )>,
}

impl ModuleEvents {
    /// Events on the given object.
    pub fn new(client: kube::Client, identity: &str, namespace: &str, lease_name: &str) -> Self {
        let (kind, api_version, name, ns) =
            match (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) {
                (Ok(p), Ok(n)) if !p.is_empty() && !n.is_empty() => ("Pod", "v1", p, n),
                _ => (
                    "Lease",
                    "coordination.k8s.io/v1",
                    lease_name.to_string(),
                    namespace.to_string(),
                ),
            };
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: Some(name),
            namespace: Some(ns),
            ..Default::default()
        };
        let recorder = kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "vapgen".into(),
                instance: Some(identity.into()),
            },
        );
        ModuleEvents {
            recorder: Some((recorder, reference)),
        }
    }

    /// No Events (tests, offline use).
    pub fn none() -> Self {
        ModuleEvents { recorder: None }
    }

    async fn publish(&self, warning: bool, reason: &str, note: &str) {
        self.publish_as("SwapModule", warning, reason, note).await;
    }

    /// An Event on vapgen's Pod (or Lease) with the given action (best effort).
    pub(crate) async fn publish_as(&self, action: &str, warning: bool, reason: &str, note: &str) {
        let Some((recorder, reference)) = &self.recorder else {
            return;
        };
        let note = super::kube::event_note(note);
        let ev = kube::runtime::events::Event {
            type_: if warning {
                kube::runtime::events::EventType::Warning
            } else {
                kube::runtime::events::EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, reference).await {
            tracing::debug!(error = %e, reason, "cannot publish event");
        }
    }
}
