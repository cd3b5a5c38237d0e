//! Fixtures the coexist tests share (coexist.rs, adopt.rs, rival.rs): a template and
//! constraint of their own, Gatekeeper's `status.byPod`, and the writes the audit log shows.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

/// A text only vapgen's match conditions have (Gatekeeper's build regular expressions).
pub const VAPGEN_MATCH_TEXT: &str = "[object, oldObject].exists(obj, obj != null && [";

/// A K8sNativeValidation template of kind `kind` (generateVAP: true): objects must carry the
/// label `params.label`; the denial message starts with `tag`.
pub fn owner_template(kind: &str, tag: &str) -> Value {
    json!({
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.to_ascii_lowercase()},
        "spec": {
            "crd": {"spec": {"names": {"kind": kind}, "validation": {"openAPIV3Schema": {
                "type": "object", "properties": {"label": {"type": "string"}}}}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [{
                "engine": "K8sNativeValidation",
                "source": {
                    "generateVAP": true,
                    "validations": [{
                        "expression": "has(variables.anyObject.metadata.labels) && variables.params.label in variables.anyObject.metadata.labels",
                        "messageExpression": format!("\"{tag}: label \" + variables.params.label + \" is required\"")
                    }]
                }
            }]}]
        }
    })
}

/// Constraint `name` of `kind`: ConfigMaps in `ns` need an `owner` label, denied (action
/// `scoped`) at the enforcement `points` (`validation.gatekeeper.sh`, `vap.k8s.io`, …).
pub fn owner_constraint(kind: &str, name: &str, ns: &str, points: &[&str]) -> Value {
    let points: Vec<Value> = points.iter().map(|p| json!({"name": p})).collect();
    json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "enforcementAction": "scoped",
            "scopedEnforcementActions": [{"action": "deny", "enforcementPoints": points}],
            "match": {"kinds": [{"apiGroups": [""], "kinds": ["ConfigMap"]}], "namespaces": [ns]},
            "parameters": {"label": "owner"}
        }
    })
}

/// The `status.byPod` entry with `id`.
pub fn by_pod<'a>(o: &'a Value, id: &str) -> Option<&'a Value> {
    o.pointer("/status/byPod")?
        .as_array()?
        .iter()
        .find(|e| e["id"] == id)
}

/// Successful writes per (resource, name, verb, writer): writer `gatekeeper` or `other`.
pub type Writes = BTreeMap<(String, String, String, String), u32>;

/// The writes to VAPs, bindings and CRDs whose name `names` accepts, in the audit log after its
/// first `skip` lines (dry runs and subresources left out).
pub fn object_writes_since(audit_log: &Path, skip: usize, names: impl Fn(&str) -> bool) -> Writes {
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    let mut out = BTreeMap::new();
    for e in text
        .lines()
        .skip(skip)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let resource = e["objectRef"]["resource"].as_str().unwrap_or("");
        let verb = e["verb"].as_str().unwrap_or("");
        let name = e["objectRef"]["name"].as_str().unwrap_or("");
        if e["stage"] == "ResponseComplete"
            && names(name)
            && [
                "validatingadmissionpolicies",
                "validatingadmissionpolicybindings",
                "customresourcedefinitions",
            ]
            .contains(&resource)
            && e["objectRef"]["subresource"].is_null()
            && ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
            && (200..300).contains(&e["responseStatus"]["code"].as_u64().unwrap_or(0))
            && !e["requestURI"].as_str().unwrap_or("").contains("dryRun=")
        {
            let agent = e["userAgent"].as_str().unwrap_or("");
            let agent = if agent.starts_with("gatekeeper") {
                "gatekeeper"
            } else {
                "other"
            };
            *out.entry((
                resource.to_owned(),
                name.to_owned(),
                verb.to_owned(),
                agent.to_owned(),
            ))
            .or_default() += 1;
        }
    }
    out
}

/// How many lines the audit log has now (to skip them later).
pub fn audit_lines(audit_log: &Path) -> usize {
    std::fs::read_to_string(audit_log)
        .unwrap_or_default()
        .lines()
        .count()
}

/// `resource/name verb by writer: count; …`, for messages.
pub fn writes_summary(w: &Writes) -> String {
    w.iter()
        .map(|((r, n, v, a), c)| format!("{r}/{n} {v} by {a}: {c}"))
        .collect::<Vec<_>>()
        .join("; ")
}
