//! Constraint CRDs made from templates: what standalone mode (`vapgen run --manage-crds`)
//! creates and what `vapgen plan` emits before the policies, so that every policy's
//! `paramKind` exists when the policy is applied.
//!
//! Without Gatekeeper, someone must serve each template's constraint kind. The CRD is
//! `<lower kind>.constraints.gatekeeper.sh`, made from `spec.crd` of the template:
//! cluster-scoped, versions v1beta1 (storage) and v1alpha1, the template's parameter schema
//! under `spec.parameters`, and a status subresource. With the template's UID known (a
//! template read from a cluster), the CRD is controlled by the template.

use serde_json::{Value, json};

use crate::snapshot;

/// Annotation recording the template generation a CRD was made from.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "vapgen.dev/template-generation";

/// Why a template gives no constraint CRD.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The template names no kind.
    #[error("the template has no spec.crd.spec.names.kind")]
    NoKind,
    /// The parameter schema is there but not an object.
    #[error("spec.crd.spec.validation.openAPIV3Schema must be an object")]
    SchemaNotAnObject,
}

/// The CRD for a template's kind.
pub fn constraint_crd(template: &Value, kind: &str) -> Result<Value, CrdError> {
    if kind.is_empty() {
        return Err(CrdError::NoKind);
    }
    let plural = kind.to_ascii_lowercase();
    let mut params = parameters_schema(template)?;
    if let Some(p) = params.as_mut().filter(|p| p.get("type").is_none()) {
        // The API server wants a type on every structural schema node.
        p["type"] = json!("object");
    }
    let schema = constraint_schema(params);
    let version = |name: &str, storage: bool| {
        json!({
            "name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": schema.clone()},
            "subresources": {"status": {}}
        })
    };
    let generation = template
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let uid = template
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut meta = json!({
        "name": format!("{plural}.{}", snapshot::CONSTRAINT_GROUP),
        "labels": {"gatekeeper.sh/constraint": "yes", "app.kubernetes.io/managed-by": "vapgen"},
        "annotations": {TEMPLATE_GENERATION_ANNOTATION: generation.to_string()},
    });
    if !uid.is_empty() {
        meta["ownerReferences"] = json!([{
            "apiVersion": format!("{}/v1beta1", snapshot::TEMPLATE_GROUP),
            "kind": "ConstraintTemplate",
            "name": snapshot::name_of(template),
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": meta,
        "spec": {
            "group": snapshot::CONSTRAINT_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": plural,
                "categories": ["constraint", "constraints"],
            },
            "versions": [version("v1beta1", true), version("v1alpha1", false)],
        }
    }))
}

/// The constraint's schema as Gatekeeper's constraint CRD has it (frameworks' `CreateSchema`
/// with Gatekeeper's match schema, v3.23.1; facts restated, checked against the real thing by
/// `tests/tests/fidelity.rs`): `metadata.name` at most 63 characters; `enforcementAction` a
/// string defaulting to `deny`; `scopedEnforcementActions` a list of `{action, enforcementPoints:
/// [{name}]}`; `match` with its fields typed, globs by Gatekeeper's wildcard pattern, `source`
/// an enum, selectors as label selectors. With it the API server refuses (and prunes) what
/// Gatekeeper's CRD does, so standalone mode admits the same constraints (issue #13, F2).
pub fn constraint_schema(params: Option<Value>) -> Value {
    let mut schema = json!({
        "type": "object",
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 63}}
            },
            "spec": {
                "type": "object",
                "properties": {
                    "enforcementAction": {"type": "string", "default": "deny"},
                    "scopedEnforcementActions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "action": {"type": "string"},
                                "enforcementPoints": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {"name": {"type": "string"}}
                                    }
                                }
                            }
                        }
                    },
                    "match": match_schema(),
                }
            },
            "status": {"x-kubernetes-preserve-unknown-fields": true}
        }
    });
    if let Some(params) = params {
        schema["properties"]["spec"]["properties"]["parameters"] = params;
    }
    schema
}

/// The schema of `spec.parameters` in Gatekeeper's constraint CRD for `template` (frameworks'
/// template conversion, v3.23.1, restated): the template's `openAPIV3Schema`, with
/// `x-kubernetes-preserve-unknown-fields` added to every object (and to the items of an array
/// without them) under `legacySchema`, which defaults to true in `v1beta1` and `v1alpha1`
/// templates and to false in `v1`; without a schema, `{x-kubernetes-preserve-unknown-fields:
/// true}` under `legacySchema`, else none, so that any `spec.parameters` is an unknown field.
pub fn parameters_schema(template: &Value) -> Result<Option<Value>, CrdError> {
    let validation = template.pointer("/spec/crd/spec/validation");
    let legacy = validation
        .and_then(|v| v.get("legacySchema"))
        .and_then(Value::as_bool)
        .unwrap_or_else(|| {
            template.get("apiVersion").and_then(Value::as_str) != Some("templates.gatekeeper.sh/v1")
        });
    let schema = validation
        .and_then(|v| v.get("openAPIV3Schema"))
        .filter(|s| !s.is_null());
    match schema {
        None if legacy => Ok(Some(json!({"x-kubernetes-preserve-unknown-fields": true}))),
        None => Ok(None),
        Some(s) if !s.is_object() => Err(CrdError::SchemaNotAnObject),
        Some(s) => {
            let mut s = s.clone();
            if legacy {
                add_preserve_unknown_fields(&mut s);
            }
            Ok(Some(s))
        }
    }
}

/// frameworks' `schema.AddPreserveUnknownFields`: every object (or untyped) node keeps unknown
/// fields; an array without an item schema gets one that does.
fn add_preserve_unknown_fields(s: &mut Value) {
    let Some(m) = s.as_object_mut() else {
        return;
    };
    match m.get("type").and_then(Value::as_str).unwrap_or("") {
        "" | "object" => {
            m.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        "array" if !m.get("items").is_some_and(Value::is_object) => {
            m.insert(
                "items".into(),
                json!({"x-kubernetes-preserve-unknown-fields": true}),
            );
        }
        _ => {}
    }
    if let Some(props) = m.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(add_preserve_unknown_fields);
    }
    if let Some(items) = m.get_mut("items") {
        add_preserve_unknown_fields(items);
    }
    if let Some(extra) = m.get_mut("additionalProperties").filter(|a| a.is_object()) {
        add_preserve_unknown_fields(extra);
    }
}

/// Gatekeeper's wildcard pattern for namespaces and names: an optional `*` at either end.
pub const GLOB_PATTERN: &str = r"^\*?[-:a-z0-9]*\*?$";

/// `spec.match` of a constraint (Gatekeeper's `pkg/target` match schema, restated).
fn match_schema() -> Value {
    let strings = || json!({"type": "array", "items": {"type": "string"}});
    let globs = || json!({"type": "array", "items": {"type": "string", "pattern": GLOB_PATTERN}});
    let selector = || {
        json!({
            "type": "object",
            "x-kubernetes-map-type": "atomic",
            "properties": {
                "matchExpressions": {
                    "type": "array",
                    "x-kubernetes-list-type": "atomic",
                    "items": {
                        "type": "object",
                        "required": ["key", "operator"],
                        "properties": {
                            "key": {"type": "string"},
                            "operator": {"type": "string"},
                            "values": {
                                "type": "array",
                                "x-kubernetes-list-type": "atomic",
                                "items": {"type": "string"}
                            }
                        }
                    }
                },
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        })
    };
    json!({
        "type": "object",
        "properties": {
            "kinds": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"apiGroups": strings(), "kinds": strings()}
                }
            },
            "namespaces": globs(),
            "excludedNamespaces": globs(),
            "name": {"type": "string", "pattern": GLOB_PATTERN},
            "scope": {"type": "string"},
            "source": {"type": "string", "enum": ["All", "Generated", "Original"]},
            "labelSelector": selector(),
            "namespaceSelector": selector()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_from_template() {
        let t = json!({"metadata": {"name": "k8sfoo", "uid": "u", "generation": 3},
            "spec": {"crd": {"spec": {"names": {"kind": "K8sFoo"},
                "validation": {"openAPIV3Schema": {"properties": {"labels": {"type": "array", "items": {"type": "string"}}}}}}}}});
        let crd = constraint_crd(&t, "K8sFoo").unwrap();
        assert_eq!(crd["metadata"]["name"], "k8sfoo.constraints.gatekeeper.sh");
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(
            crd["metadata"]["annotations"][TEMPLATE_GENERATION_ANNOTATION],
            "3"
        );
        let params = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["parameters"];
        assert_eq!(params["type"], "object");
        assert_eq!(params["properties"]["labels"]["type"], "array");
        assert!(matches!(constraint_crd(&t, ""), Err(CrdError::NoKind)));
        // Gatekeeper's constraint schema (F2): name limit, action default, typed match.
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["metadata"]["properties"]["name"]["maxLength"],
            63
        );
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(spec["enforcementAction"]["default"], "deny");
        let m = &spec["match"]["properties"];
        assert_eq!(m["namespaces"]["items"]["pattern"], GLOB_PATTERN);
        assert_eq!(m["name"]["pattern"], GLOB_PATTERN);
        assert_eq!(m["kinds"]["type"], "array");
        assert_eq!(m["source"]["enum"], json!(["All", "Generated", "Original"]));
        assert!(
            spec["match"]
                .get("x-kubernetes-preserve-unknown-fields")
                .is_none()
        );
        let bad = json!({"spec": {"crd": {"spec": {"validation": {"openAPIV3Schema": []}}}}});
        assert_eq!(
            constraint_crd(&bad, "K8sFoo").unwrap_err().to_string(),
            "spec.crd.spec.validation.openAPIV3Schema must be an object"
        );
    }

    #[test]
    fn parameters_follow_gatekeepers_legacy_schema_rule() {
        let template = |version: &str, validation: Value| {
            json!({"apiVersion": format!("templates.gatekeeper.sh/{version}"),
                "spec": {"crd": {"spec": {"names": {"kind": "K"}, "validation": validation}}}})
        };
        let labels = json!({"openAPIV3Schema": {"type": "object", "properties": {
            "labels": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}}}},
            "any": {"type": "array"}}}});
        // v1: the schema as written; no schema, no parameters at all.
        assert_eq!(
            parameters_schema(&template("v1", labels.clone())).unwrap(),
            Some(labels["openAPIV3Schema"].clone())
        );
        assert_eq!(
            parameters_schema(&template("v1", Value::Null)).unwrap(),
            None
        );
        // v1beta1 (and v1alpha1): legacySchema defaults to true.
        let legacy = parameters_schema(&template("v1beta1", labels.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(legacy["x-kubernetes-preserve-unknown-fields"], true);
        let items = &legacy["properties"]["labels"]["items"];
        assert_eq!(items["x-kubernetes-preserve-unknown-fields"], true);
        assert!(
            items["properties"]["key"]
                .get("x-kubernetes-preserve-unknown-fields")
                .is_none()
        );
        assert_eq!(
            legacy["properties"]["any"]["items"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(
            parameters_schema(&template("v1alpha1", Value::Null)).unwrap(),
            Some(json!({"x-kubernetes-preserve-unknown-fields": true}))
        );
        // An explicit legacySchema wins over the version's default.
        let mut off = labels.clone();
        off["legacySchema"] = json!(false);
        assert_eq!(
            parameters_schema(&template("v1beta1", off)).unwrap(),
            Some(labels["openAPIV3Schema"].clone())
        );
        let crd = constraint_crd(&template("v1", Value::Null), "K").unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert!(spec["properties"].get("parameters").is_none());
    }
}
