//! `vapgen plan --validate=server`: every generated object is sent to the API server as a
//! server-side dry-run apply (`dryRun=All`, nothing is stored), so that the API server's own
//! checks run on it — for a VAP, the compilation and type-check of every CEL expression,
//! which [`crate::celcheck`] cannot do offline.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

/// The field manager of the dry-run applies.
pub const FIELD_MANAGER: &str = "vapgen-plan";

/// One object the API server refused.
#[derive(Debug)]
pub struct Refusal {
    /// `Kind/name` of the object.
    pub object: String,
    /// The API server's message (or the request's error).
    pub message: String,
}

/// Dry-run applies `objects` (cluster-scoped: CRDs, VAPs, bindings) in order and returns the
/// refusals.
pub async fn server_dry_run(client: &kube::Client, objects: &[Value]) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    for o in objects {
        let kind = crate::snapshot::kind_of(o).to_string();
        let name = crate::snapshot::name_of(o).to_string();
        let api = api_for(client, o);
        let params = PatchParams::apply(FIELD_MANAGER).dry_run().force();
        if let Err(e) = api.patch(&name, &params, &Patch::Apply(o)).await {
            refusals.push(Refusal {
                object: format!("{kind}/{name}"),
                message: api_message(&e),
            });
        }
    }
    refusals
}

/// The API of a cluster-scoped object's kind (`apiVersion` and `kind` of `object`).
/// The API server's own message for a refusal (what `kubectl` prints), else kube's error.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn api_for(client: &kube::Client, object: &Value) -> Api<DynamicObject> {
    let kind = crate::snapshot::kind_of(object);
    let (group, version) = match object.get("apiVersion").and_then(Value::as_str) {
        Some(av) => av.split_once('/').unwrap_or(("", av)),
        None => ("", ""),
    };
    api(client, group, version, kind, &plural(kind))
}

/// The API of a cluster-scoped kind.
pub(crate) fn api(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// The resource name of the kinds `plan` writes.
fn plural(kind: &str) -> String {
    match kind {
        "CustomResourceDefinition" => "customresourcedefinitions".into(),
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies".into(),
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}
