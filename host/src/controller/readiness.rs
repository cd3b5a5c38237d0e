//! Readiness of a constraint kind for its first binding.
//!
//! A binding switches a VAP on. If the API server's admission plugin has not yet learned the
//! VAP's `paramKind` (a freshly created constraint CRD; kubernetes#124237), requests matching
//! a `failurePolicy: Fail` policy are denied with "paramKind … not yet synced". Gatekeeper
//! waits a fixed 30 s. vapgen asks the API server instead:
//!
//! 1. **Discovery**: `constraints.gatekeeper.sh/v1beta1` lists the kind's plural.
//! 2. **Admission canary**: a canary policy `vapgen-canary-<kind>` with the same `paramKind`,
//!    matching only a dry-run create of the Lease `vapgen-canary-<kind>` in vapgen's own
//!    namespace, always denying, and its binding (`parameterNotFoundAction: Deny`). vapgen
//!    sends that dry-run create: while it is admitted, the plugin has not loaded the binding;
//!    while it is denied with "not yet synced" / "failed to configure", the plugin has not
//!    resolved the kind; once it is denied **by the canary's own validation** (or "no params
//!    found"), the plugin resolves the kind — exactly what a real binding needs. The canary
//!    objects are then deleted. Nothing is ever persisted by the probe request (dry run).
//!
//! `--default-wait-for-vapb-generation` bounds the wait; past it bindings are created anyway
//! (Gatekeeper's behaviour) and the template status says readiness was not proven.

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};

use super::leader::Leader;
use super::reconcile::Probe;
use super::resources::{create_or_keep, vap_resource, vapb_resource};
use super::world::CrdInfo;
use crate::snapshot;

/// Name of the canary policy, binding and probe Lease of a kind.
pub fn canary_name(kind: &str) -> String {
    format!("vapgen-canary-{}", kind.to_ascii_lowercase())
}

/// The canary policy of a kind.
pub fn canary_policy(kind: &str) -> Value {
    let name = canary_name(kind);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "vapgen", "vapgen.dev/canary": "true"}},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": format!("{}/v1beta1", snapshot::CONSTRAINT_GROUP), "kind": kind},
            // resourceNames (not a matchCondition) confines the canary to its own probe
            // request: the plugin resolves params before it evaluates matchConditions, so a
            // condition would let "no params found" deny other Lease creates.
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["leases"], "resourceNames": [name]
            }]},
            "validations": [{"expression": "false", "message": format!("vapgen canary: {kind} is resolved")}]
        }
    })
}

/// The canary binding of a kind, limited to `namespace`.
pub fn canary_binding(kind: &str, namespace: &str) -> Value {
    let name = canary_name(kind);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "vapgen", "vapgen.dev/canary": "true"}},
        "spec": {
            "policyName": name,
            "paramRef": {"selector": {}, "parameterNotFoundAction": "Deny"},
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        }
    })
}

/// Classifies the answer to the canary's dry-run request.
pub fn classify_canary(result: Result<(), (u16, String)>, kind: &str) -> Probe {
    let name = canary_name(kind);
    match result {
        Ok(()) => Probe::NotYet("the admission canary is not active yet".into()),
        Err((_, msg)) if !msg.contains(&name) => {
            Probe::NotYet(format!("canary request failed: {msg}"))
        }
        // The plugin resolved the paramKind and looked for the (deliberately absent) param
        // object: the kind is served for admission.
        Err((_, msg)) if msg.contains("no params found") => Probe::Ready,
        Err((_, msg)) if msg.contains("not yet synced") || msg.contains("failed to configure") => {
            Probe::NotYet(format!(
                "the admission plugin does not resolve {kind} yet: {msg}"
            ))
        }
        Err(_) => Probe::Ready,
    }
}

/// Probes a kind (see the module documentation).
pub async fn probe(
    client: &kube::Client,
    crd: &CrdInfo,
    canary_namespace: Option<&str>,
    leader: &Leader,
    created: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Probe {
    let gv = format!("{}/v1beta1", snapshot::CONSTRAINT_GROUP);
    match client.list_api_group_resources(&gv).await {
        Ok(list) if list.resources.iter().any(|r| r.name == crd.plural) => {}
        Ok(_) => return Probe::NotYet(format!("discovery does not list {} yet", crd.plural)),
        Err(e) => return Probe::NotYet(format!("discovery of {gv} failed: {e}")),
    }
    let Some(ns) = canary_namespace else {
        return Probe::Ready;
    };
    if !leader.ensure().await {
        return Probe::NotYet("not the leader".into());
    }
    let key = crd.kind.to_ascii_lowercase();
    if !created.lock().expect("canaries lock").contains(&key) {
        let vaps: Api<DynamicObject> = Api::all_with(client.clone(), &vap_resource());
        let vapbs: Api<DynamicObject> = Api::all_with(client.clone(), &vapb_resource());
        if let Err(e) = create_or_keep(&vaps, &canary_policy(&crd.kind)).await {
            return Probe::NotYet(format!("cannot create the canary policy: {e}"));
        }
        if let Err(e) = create_or_keep(&vapbs, &canary_binding(&crd.kind, ns)).await {
            return Probe::NotYet(format!("cannot create the canary binding: {e}"));
        }
        created.lock().expect("canaries lock").insert(key.clone());
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns);
    let lease = k8s_openapi::api::coordination::v1::Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(canary_name(&crd.kind)),
            ..Default::default()
        },
        ..Default::default()
    };
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answer = match leases.create(&pp, &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err((s.code, s.message.clone())),
        Err(e) => Err((0, e.to_string())),
    };
    let probe = classify_canary(answer, &crd.kind);
    if probe == Probe::Ready {
        remove_canary(client, &crd.kind).await;
        created.lock().expect("canaries lock").remove(&key);
    }
    probe
}

/// Deletes the canary objects of a kind (when it is ready, timed out, or gone).
pub async fn remove_canary(client: &kube::Client, kind: &str) {
    let name = canary_name(kind);
    let vaps: Api<DynamicObject> = Api::all_with(client.clone(), &vap_resource());
    let vapbs: Api<DynamicObject> = Api::all_with(client.clone(), &vapb_resource());
    let _ = vapbs.delete(&name, &DeleteParams::default()).await;
    let _ = vaps.delete(&name, &DeleteParams::default()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_answers() {
        let k = "K8sFoo";
        assert!(matches!(classify_canary(Ok(()), k), Probe::NotYet(_)));
        let synced = "leases \"vapgen-canary-k8sfoo\" is forbidden: ValidatingAdmissionPolicy 'vapgen-canary-k8sfoo' with binding 'vapgen-canary-k8sfoo' denied request: vapgen canary: K8sFoo is resolved";
        assert_eq!(classify_canary(Err((422, synced.into())), k), Probe::Ready);
        let lag = "policy 'vapgen-canary-k8sfoo' with binding 'vapgen-canary-k8sfoo' denied request: failed to configure binding: paramKind kind `constraints.gatekeeper.sh/v1beta1, Kind=K8sFoo` not yet synced to use for admission";
        assert!(matches!(
            classify_canary(Err((403, lag.into())), k),
            Probe::NotYet(_)
        ));
        let no_params = "policy 'vapgen-canary-k8sfoo' with binding 'vapgen-canary-k8sfoo' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction";
        assert_eq!(
            classify_canary(Err((403, no_params.into())), k),
            Probe::Ready
        );
        assert!(matches!(
            classify_canary(Err((500, "etcd down".into())), k),
            Probe::NotYet(_)
        ));
    }
}
