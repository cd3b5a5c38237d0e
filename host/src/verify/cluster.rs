//! Requests to the API server: the resources `verify` writes, applying, deleting in reverse
//! order, and sending a case's request until it gets the expected kind of answer.

use std::time::{Duration, Instant};

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use super::error::{VerifyError, kube_message};
use super::{CaseOp, FIELD_MANAGER};
use crate::snapshot;

pub(super) fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}
pub(super) fn vap_resource() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
    )
}
pub(super) fn vapb_resource() -> ApiResource {
    ar(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    )
}
pub(super) fn crd_resource() -> ApiResource {
    ar(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
}
pub(super) fn ns_resource() -> ApiResource {
    ar("", "v1", "Namespace", "namespaces")
}

/// An object `verify` created, to delete at the end.
pub(super) struct Created {
    pub(super) api: Api<DynamicObject>,
    pub(super) name: String,
    pub(super) what: String,
}

/// Objects to delete, newest first.
#[derive(Default)]
pub(super) struct Cleanup {
    pub(super) stack: Vec<Created>,
}

impl Cleanup {
    pub(super) fn push(&mut self, api: Api<DynamicObject>, name: &str, what: impl Into<String>) {
        self.stack.push(Created {
            api,
            name: name.to_string(),
            what: what.into(),
        });
    }

    /// Deletes every object, newest first; what could not be deleted goes to `errors`.
    pub(super) async fn run(&mut self, errors: &mut Vec<String>) {
        while let Some(c) = self.stack.pop() {
            match c.api.delete(&c.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => errors.push(format!("cannot delete {} {}: {e}", c.what, c.name)),
            }
        }
    }
}

/// Server-side apply (`FIELD_MANAGER`, forced).
pub(super) async fn apply(api: &Api<DynamicObject>, obj: &Value) -> Result<(), VerifyError> {
    let name = snapshot::name_of(obj).to_string();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| VerifyError::api(format!("applying {} {name}", snapshot::kind_of(obj)), e))
}
/// Whether a denial is the admission plugin still catching up (not a verdict).
pub(super) fn is_plugin_lag(msg: &str) -> bool {
    msg.contains("not yet synced") || msg.contains("failed to configure")
}

/// One case object, ready to send.
pub(super) struct Prepared {
    pub(super) row: usize,
    pub(super) violated: bool,
    pub(super) needle: Option<String>,
    pub(super) api: Api<DynamicObject>,
    pub(super) obj: Value,
    /// The request; for an update, the object was created in phase 1.
    pub(super) op: CaseOp,
}
/// A dry-run create of `obj`; the error is the API server's answer (or why it has none).
pub(super) async fn dry_run(api: &Api<DynamicObject>, obj: &Value) -> Result<(), kube::Error> {
    let o: DynamicObject = serde_json::from_value(obj.clone()).map_err(kube::Error::SerdeError)?;
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&pp, &o).await.map(|_| ())
}

/// The case's request (see [`CaseOp`]), sent after [`stage_request`].
pub(super) async fn send(p: &Prepared) -> Result<(), kube::Error> {
    send_request(&p.api, &p.obj, &p.op).await
}

/// Puts a case's object in place before anything binds it: for [`CaseOp::Create`] a dry-run
/// create (an error: the API server refuses the object with no policy at all); otherwise the
/// object is created, and an update's new object gets its metadata. `Ok(true)`: an object was
/// created (delete it at the end).
pub async fn stage_request(
    api: &Api<DynamicObject>,
    obj: &Value,
    op: &mut CaseOp,
) -> Result<bool, kube::Error> {
    if *op == CaseOp::Create {
        return dry_run(api, obj).await.map(|()| false);
    }
    let o: DynamicObject = serde_json::from_value(obj.clone()).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &o).await?;
    if let CaseOp::Update(Some(new)) = op {
        new["metadata"] = obj["metadata"].clone();
    }
    Ok(true)
}

/// A case's request as a server-side dry run, after [`stage_request`]: a create of `obj`, an
/// update of the existing object `obj`, or an update of its `ephemeralcontainers`
/// subresource. The error is the API server's answer.
pub async fn send_request(
    api: &Api<DynamicObject>,
    obj: &Value,
    op: &CaseOp,
) -> Result<(), kube::Error> {
    let name = snapshot::name_of(obj).to_string();
    let pp = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    match op {
        CaseOp::Create => dry_run(api, obj).await,
        CaseOp::Update(None) => {
            let patch = json!({"metadata": {"labels": {"vapgen.dev/verify-update": "1"}}});
            api.patch(&name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        CaseOp::Update(Some(new)) => {
            let mut new = new.clone();
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            api.patch(&name, &pp, &Patch::Merge(&new)).await.map(|_| ())
        }
        CaseOp::EphemeralContainers(containers) => {
            let patch = json!({"spec": {"ephemeralContainers": containers}});
            api.patch_subresource("ephemeralcontainers", &name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_: DynamicObject| ())
        }
    }
}

/// Polls until the policy denies the request (with the expected message, if any).
pub(super) async fn expect_denied(
    p: &Prepared,
    policy: &str,
    timeout: Duration,
) -> (&'static str, Result<(), VerifyError>) {
    let wanted = format!("ValidatingAdmissionPolicy '{policy}'");
    let start = Instant::now();
    let mut last = String::new();
    let mut got = "admitted";
    while start.elapsed() < timeout {
        match send(p).await.map_err(|e| kube_message(&e)) {
            Err(m) if m.contains(&wanted) && !is_plugin_lag(&m) => {
                return match &p.needle {
                    Some(n) if !m.contains(n.as_str()) => (
                        "denied",
                        Err(VerifyError::Verdict(format!(
                            "denied, but without {n:?}: {m}"
                        ))),
                    ),
                    _ => ("denied", Ok(())),
                };
            }
            Err(m) => {
                got = "error";
                last = m;
            }
            Ok(()) => {
                got = "admitted";
                last = "admitted".into();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (
        got,
        Err(VerifyError::Verdict(format!(
            "expected a denial by {policy}; last answer: {last}"
        ))),
    )
}

/// Polls until the request is admitted (the param informer may still lag for a moment; a
/// wrong denial never goes away).
pub(super) async fn expect_admitted(
    p: &Prepared,
    timeout: Duration,
) -> (&'static str, Result<(), VerifyError>) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match send(p).await {
            Ok(()) => return ("admitted", Ok(())),
            Err(e) => last = kube_message(&e),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (
        "denied",
        Err(VerifyError::Verdict(format!(
            "expected admission; last answer: {last}"
        ))),
    )
}
