//! Coexist mode: vapgen's generation status as Gatekeeper's **per-pod status objects**, so that
//! Gatekeeper's own status operation aggregates it into `status.byPod` of templates and
//! constraints (Gatekeeper's ConstraintTemplate CRD prunes `status.vapgen`).
//!
//! Gatekeeper's generating pod writes, in its namespace (`pkg/apis/status/v1beta1`,
//! `pkg/controller/constrainttemplate`, `pkg/controller/constraint` of v3.23.1):
//!
//! * `ConstraintTemplatePodStatus` named `DashPacker(pod, template)` (each part's `-` doubled,
//!   parts joined by `-`), labelled `internal.gatekeeper.sh/constrainttemplate-name` and
//!   `internal.gatekeeper.sh/pod`, with `status.{id, templateUID, operations,
//!   observedGeneration, errors, vapGenerationStatus{state, observedGeneration, warning}}`;
//! * `ConstraintPodStatus` named `DashPacker(pod, lower(kind), name)`, labelled also
//!   `constraint-kind` and `constraint-name`, with `status.{id, constraintUID, operations,
//!   enforced, errors, observedGeneration, enforcementPointsStatus}`.
//!
//! Gatekeeper's status controller lists them by label and copies every one whose UID matches
//! the object into `byPod`. vapgen writes the same objects under a stable id — its Lease name
//! (`vapgen`), so a new leader updates the same objects instead of adding one per replica —
//! with `operations: [generate]`. They carry no owner reference: vapgen's Pod and Lease live in
//! another namespace, and a cross-namespace owner counts as absent for the garbage collector.
//! They are labelled `app.kubernetes.io/managed-by: vapgen`.
//!
//! The reconcilers report every status they compute ([`Observer::status`]); a task of its own
//! applies the objects (server-side apply, field manager `vapgen`), skipping what it already
//! wrote. It writes only while Gatekeeper's status CRDs are served (asked at most every 30 s),
//! so without Gatekeeper nothing is written; a refusal is logged once per object and content,
//! never retried hot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::reconcile::{Observer, StatusTarget, Target};

/// The Gatekeeper operation vapgen reports as its own.
const OPERATION: &str = "generate";
/// How long the answer "are Gatekeeper's status CRDs served?" is trusted.
const RECHECK: Duration = Duration::from_secs(30);
/// Error code in `errors[]` when vapgen could not generate.
const ERROR_CODE: &str = "vap_generation_error";
/// Error code in `errors[]` while vapgen does not generate because a Gatekeeper pod does.
const PAUSED_CODE: &str = "vap_generation_paused";

/// Where the status objects go and whose they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodStatusConfig {
    /// Gatekeeper's namespace (`--gatekeeper-namespace`).
    pub namespace: String,
    /// The id in `byPod` and in the object names (vapgen's Lease name).
    pub id: String,
}

/// Gatekeeper's `DashPacker`: each value's `-` doubled, values joined by `-`. `None` for an
/// empty value or one that begins or ends with `-` (Gatekeeper refuses those too).
pub fn dash_packer(vals: &[&str]) -> Option<String> {
    if vals.is_empty()
        || vals
            .iter()
            .any(|v| v.is_empty() || v.starts_with('-') || v.ends_with('-'))
    {
        return None;
    }
    Some(
        vals.iter()
            .map(|v| v.replace('-', "--"))
            .collect::<Vec<_>>()
            .join("-"),
    )
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The kind and name of the status object of `target`; `None` when the names do not pack.
pub fn object_name(cfg: &PodStatusConfig, target: &StatusTarget) -> Option<(Kind, String)> {
    let (kind, name) = match target {
        StatusTarget::Template(t) => (Kind::Template, dash_packer(&[&cfg.id, t.as_str()])?),
        StatusTarget::Constraint { kind, name } => (
            Kind::Constraint,
            dash_packer(&[&cfg.id, &kind.to_ascii_lowercase(), name.as_str()])?,
        ),
    };
    (name.len() <= 253).then_some((kind, name))
}

/// The status object for a template or constraint whose vapgen status is `status` (the value
/// of `status.vapgen`), `live` the object as cached. `None` when the names do not pack.
pub fn status_object(
    cfg: &PodStatusConfig,
    target: &StatusTarget,
    live: &Value,
    status: &Value,
) -> Option<(Kind, Value)> {
    let uid = str_at(live, "/metadata/uid");
    let generation = live
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let state = str_at(status, "/state");
    let message = str_at(status, "/message");
    let errors = match state {
        "error" => Some(json!([{"code": ERROR_CODE, "message": message}])),
        super::reconcile::PAUSED => Some(json!([{"code": PAUSED_CODE, "message": message}])),
        _ => None,
    };
    let mut labels = serde_json::Map::new();
    labels.insert("internal.gatekeeper.sh/pod".into(), json!(cfg.id));
    labels.insert("app.kubernetes.io/managed-by".into(), json!("vapgen"));
    let (_, name) = object_name(cfg, target)?;
    let (kind, body) = match target {
        StatusTarget::Template(t) => {
            labels.insert(
                "internal.gatekeeper.sh/constrainttemplate-name".into(),
                json!(t),
            );
            let warnings: Vec<&str> = status
                .get("warnings")
                .and_then(Value::as_array)
                .map(|w| w.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let vap = match state {
                "generated" => Some(json!({
                    "state": "generated",
                    "observedGeneration": generation,
                    "warning": (!warnings.is_empty()).then(|| warnings.join("; ")),
                })),
                "error" => Some(json!({
                    "state": "error",
                    "observedGeneration": generation,
                    "warning": format!("ValidatingAdmissionPolicy is not generated: {message}"),
                })),
                super::reconcile::PAUSED => Some(json!({
                    "state": super::reconcile::PAUSED,
                    "observedGeneration": generation,
                    "warning": message,
                })),
                // Not generated: Gatekeeper drops the field.
                _ => None,
            };
            let body = json!({
                "id": cfg.id,
                "templateUID": uid,
                "operations": [OPERATION],
                "observedGeneration": generation,
                "errors": errors,
                "vapGenerationStatus": vap,
            });
            (Kind::Template, body)
        }
        StatusTarget::Constraint { kind, name } => {
            let lower = kind.to_ascii_lowercase();
            labels.insert(
                "internal.gatekeeper.sh/constrainttemplate-name".into(),
                json!(lower),
            );
            labels.insert("internal.gatekeeper.sh/constraint-kind".into(), json!(kind));
            labels.insert("internal.gatekeeper.sh/constraint-name".into(), json!(name));
            let body = json!({
                "id": cfg.id,
                "constraintUID": uid,
                "operations": [OPERATION],
                "enforced": state == "generated",
                "errors": errors,
                "observedGeneration": generation,
                "enforcementPointsStatus": status.get("enforcementPointsStatus"),
            });
            (Kind::Constraint, body)
        }
    };
    let mut obj = json!({
        "apiVersion": "status.gatekeeper.sh/v1beta1",
        "kind": kind.kind(),
        "metadata": {"name": name, "namespace": cfg.namespace, "labels": labels},
        "status": body,
    });
    strip_nulls(&mut obj);
    Some((kind, obj))
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            strip_nulls(x);
        }
    } else if let Value::Array(a) = v {
        for x in a {
            strip_nulls(x);
        }
    }
}

/// Which status object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ConstraintTemplatePodStatus`.
    Template,
    /// `ConstraintPodStatus`.
    Constraint,
}

impl Kind {
    fn kind(self) -> &'static str {
        match self {
            Kind::Template => "ConstraintTemplatePodStatus",
            Kind::Constraint => "ConstraintPodStatus",
        }
    }

    fn resource(self) -> ApiResource {
        let (kind, plural) = match self {
            Kind::Template => (
                "ConstraintTemplatePodStatus",
                "constrainttemplatepodstatuses",
            ),
            Kind::Constraint => ("ConstraintPodStatus", "constraintpodstatuses"),
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("status.gatekeeper.sh", "v1beta1", kind),
            plural,
        )
    }
}

/// An [`Observer`] that passes writes on and mirrors statuses into Gatekeeper's status
/// objects.
pub struct PodStatusObserver {
    inner: Arc<dyn Observer>,
    cfg: PodStatusConfig,
    tx: mpsc::UnboundedSender<Message>,
}

/// What the writing task does.
enum Message {
    /// Apply the object (unless it is what was last applied).
    Apply(Kind, Value),
    /// Delete the object of this name.
    Delete(Kind, String),
}

impl PodStatusObserver {
    /// The observer and the task that writes (abort it to stop).
    pub fn start(
        client: kube::Client,
        cfg: PodStatusConfig,
        inner: Arc<dyn Observer>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, cfg.namespace.clone(), rx));
        (PodStatusObserver { inner, cfg, tx }, task)
    }
}

impl Observer for PodStatusObserver {
    fn write(&self, target: Target, verb: &str, outcome: &str) {
        self.inner.write(target, verb, outcome);
    }

    fn status(&self, target: &StatusTarget, live: &Value, status: &Value) {
        if let Some((kind, o)) = status_object(&self.cfg, target, live, status) {
            let _ = self.tx.send(Message::Apply(kind, o));
        }
    }

    fn gone(&self, target: &StatusTarget) {
        self.inner.gone(target);
        if let Some((kind, name)) = object_name(&self.cfg, target) {
            let _ = self.tx.send(Message::Delete(kind, name));
        }
    }
}

async fn run(client: kube::Client, namespace: String, mut rx: mpsc::UnboundedReceiver<Message>) {
    // What was last applied (or last failed) per object name: nothing is written twice, and
    // a failure is logged once until the content changes.
    let mut last: HashMap<String, Value> = HashMap::new();
    let pp = PatchParams::apply("vapgen").force();
    // Whether Gatekeeper's status CRDs are served, and when that was last asked: without
    // Gatekeeper (standalone mode, scope sync on by default) nothing is written or refused.
    let mut served: Option<(bool, Instant)> = None;
    while let Some(msg) = rx.recv().await {
        let (kind, name, obj) = match msg {
            Message::Apply(kind, obj) => {
                (kind, str_at(&obj, "/metadata/name").to_owned(), Some(obj))
            }
            Message::Delete(kind, name) => (kind, name, None),
        };
        if obj.is_some() && last.get(&name) == obj.as_ref() {
            continue;
        }
        let fresh = served.is_some_and(|(_, at)| at.elapsed() < RECHECK);
        if !fresh {
            let ok = client
                .list_api_group_resources("status.gatekeeper.sh/v1beta1")
                .await
                .is_ok_and(|l| {
                    l.resources
                        .iter()
                        .any(|r| r.name == "constrainttemplatepodstatuses")
                });
            if served.is_none_or(|(was, _)| was != ok) {
                tracing::info!(
                    served = ok,
                    "Gatekeeper's per-pod status objects (status.gatekeeper.sh/v1beta1) {}",
                    if ok {
                        "are served: vapgen's status goes to status.byPod"
                    } else {
                        "are not served: vapgen writes none"
                    }
                );
            }
            served = Some((ok, Instant::now()));
        }
        if !served.is_some_and(|(ok, _)| ok) {
            // Not remembered: the next reconcile of the object (at the latest the resync)
            // tries again.
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &kind.resource());
        let Some(obj) = obj else {
            last.remove(&name);
            match api.delete(&name, &Default::default()).await {
                Ok(_) => tracing::debug!(%name, kind = kind.kind(), "pod status deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::warn!(
                    %name,
                    kind = kind.kind(),
                    error = %e,
                    "cannot delete the per-pod status of a deleted template or constraint; it stays until deleted by hand"
                ),
            }
            continue;
        };
        match api.patch(&name, &pp, &Patch::Apply(&obj)).await {
            Ok(_) => tracing::debug!(%name, kind = kind.kind(), "pod status written"),
            Err(e) => tracing::warn!(
                %name,
                kind = kind.kind(),
                error = %e,
                "cannot write Gatekeeper's per-pod status (Gatekeeper's status CRDs missing, or RBAC); \
                 template and constraint status.byPod will not show vapgen"
            ),
        }
        last.insert(name, obj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PodStatusConfig {
        PodStatusConfig {
            namespace: "gatekeeper-system".into(),
            id: "vapgen".into(),
        }
    }

    #[test]
    fn names_are_gatekeepers() {
        // The names Gatekeeper v3.23.1 gave its own objects in the adoption test.
        assert_eq!(
            dash_packer(&["gatekeeper-controller-manager-0", "k8sadoptowner"]).as_deref(),
            Some("gatekeeper--controller--manager--0-k8sadoptowner")
        );
        assert_eq!(
            dash_packer(&[
                "gatekeeper-controller-manager-0",
                "k8sadoptowner",
                "require-owner"
            ])
            .as_deref(),
            Some("gatekeeper--controller--manager--0-k8sadoptowner-require--owner")
        );
        assert_eq!(dash_packer(&["-x", "y"]), None);
        assert_eq!(dash_packer(&["x", ""]), None);
    }

    #[test]
    fn a_template_error_is_an_error_and_a_vap_generation_error() {
        let live = json!({"metadata": {"name": "t", "uid": "u1", "generation": 3}});
        let status = json!({"state": "error", "message": "no validations"});
        let (kind, o) = status_object(&cfg(), &StatusTarget::Template("t".into()), &live, &status)
            .expect("object");
        assert_eq!(kind, Kind::Template);
        assert_eq!(o["metadata"]["name"], "vapgen-t");
        assert_eq!(o["metadata"]["namespace"], "gatekeeper-system");
        assert_eq!(
            o["metadata"]["labels"]["internal.gatekeeper.sh/constrainttemplate-name"],
            "t"
        );
        assert_eq!(o["status"]["templateUID"], "u1");
        assert_eq!(o["status"]["vapGenerationStatus"]["state"], "error");
        assert_eq!(o["status"]["vapGenerationStatus"]["observedGeneration"], 3);
        assert_eq!(o["status"]["errors"][0]["message"], "no validations");
        assert_eq!(o["status"]["operations"], json!(["generate"]));
    }

    #[test]
    fn a_pause_for_a_rival_generator_is_an_error_in_by_pod() {
        let live = json!({"metadata": {"name": "t", "uid": "u1", "generation": 2}});
        let msg = crate::controller::reconcile::yield_message(&["gk-0".into()]);
        let status = json!({"state": "paused", "message": msg});
        let (_, o) = status_object(&cfg(), &StatusTarget::Template("t".into()), &live, &status)
            .expect("object");
        assert_eq!(o["status"]["vapGenerationStatus"]["state"], "paused");
        assert_eq!(o["status"]["errors"][0]["code"], "vap_generation_paused");
        assert!(
            o["status"]["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("gk-0") && m.contains("generate")),
            "{o}"
        );
        let target = StatusTarget::Constraint {
            kind: "K8sX".into(),
            name: "c".into(),
        };
        let (_, o) = status_object(&cfg(), &target, &live, &status).expect("object");
        assert_eq!(o["status"]["enforced"], false);
        assert_eq!(o["status"]["errors"][0]["code"], "vap_generation_paused");
    }

    #[test]
    fn a_generated_constraint_carries_its_enforcement_points() {
        let live = json!({"metadata": {"name": "c", "uid": "u2", "generation": 1}});
        let eps = json!([{"enforcementPoint": "vap.k8s.io", "state": "generated", "observedGeneration": 1}]);
        let status = json!({"state": "generated", "enforcementPointsStatus": eps});
        let target = StatusTarget::Constraint {
            kind: "K8sX".into(),
            name: "my-c".into(),
        };
        let (kind, o) = status_object(&cfg(), &target, &live, &status).expect("object");
        assert_eq!(kind, Kind::Constraint);
        assert_eq!(o["metadata"]["name"], "vapgen-k8sx-my--c");
        assert_eq!(
            o["metadata"]["labels"]["internal.gatekeeper.sh/constraint-kind"],
            "K8sX"
        );
        assert_eq!(o["status"]["enforcementPointsStatus"], eps);
        assert_eq!(o["status"]["enforced"], true);
        assert!(o["status"].get("errors").is_none());
    }
}
