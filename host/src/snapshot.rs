//! Turning Kubernetes objects into the decision module's inputs.
//!
//! The host extracts the few constraint fields a decision reads into typed records (cheap to
//! pass into wasm); anything of the wrong shape is recorded in `malformed` so the module can
//! report it on the constraint instead of the host guessing.

use serde_json::Value;
use vapgen_guest::model::{Constraint, ScopeSync, ScopedAction};

/// API group of ConstraintTemplates.
pub const TEMPLATE_GROUP: &str = "templates.gatekeeper.sh";
/// API group of constraints.
pub const CONSTRAINT_GROUP: &str = "constraints.gatekeeper.sh";

/// The group of an object's `apiVersion` (empty for the core group).
pub fn group_of(obj: &Value) -> &str {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    av.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Whether a CRD's `Established` condition is `True` (its resource is served).
pub fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Established")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// The object's `kind`.
pub fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The object's `metadata.name`.
pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether the object is a ConstraintTemplate.
pub fn is_template(obj: &Value) -> bool {
    group_of(obj) == TEMPLATE_GROUP && kind_of(obj) == "ConstraintTemplate"
}

/// Whether the object is a constraint (any kind in `constraints.gatekeeper.sh`).
pub fn is_constraint(obj: &Value) -> bool {
    group_of(obj) == CONSTRAINT_GROUP
}

/// The constraint kind a template defines (`spec.crd.spec.names.kind`).
pub fn template_kind(template: &Value) -> Option<&str> {
    template
        .pointer("/spec/crd/spec/names/kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
}

/// The name of Gatekeeper's validating webhook inside its ValidatingWebhookConfiguration.
pub const GATEKEEPER_WEBHOOK: &str = "validation.gatekeeper.sh";

/// Whether the object is a ValidatingWebhookConfiguration (an input of scope sync).
pub fn is_webhook_configuration(obj: &Value) -> bool {
    group_of(obj) == "admissionregistration.k8s.io"
        && kind_of(obj) == "ValidatingWebhookConfiguration"
}

/// Whether the object is a Gatekeeper `Config` (`config.gatekeeper.sh`, an input of scope sync).
pub fn is_gatekeeper_config(obj: &Value) -> bool {
    group_of(obj) == "config.gatekeeper.sh" && kind_of(obj) == "Config"
}

/// What scope sync takes from Gatekeeper's objects (Gatekeeper's
/// `--sync-vap-enforcement-scope`): `vapgen run` from its watches, `vapgen plan` from its
/// inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeInputs {
    /// The [`GATEKEEPER_WEBHOOK`] entry of the webhook configuration, as JSON; `None` while
    /// there is none (the VAP then has the default match rule, as Gatekeeper's does).
    pub webhook: Option<String>,
    /// The namespaces the `Config` excludes for the `webhook` process (entries of
    /// `spec.match` whose `processes` hold `webhook` or `*`), in order, without repeats.
    pub excluded_namespaces: Vec<String>,
}

impl ScopeInputs {
    /// Scope inputs from Gatekeeper's objects: the webhook configurations and `Config`s
    /// given (in practice at most one of each).
    pub fn from_objects<'a>(
        webhook_configs: impl IntoIterator<Item = &'a Value>,
        configs: impl IntoIterator<Item = &'a Value>,
    ) -> Self {
        let webhook = webhook_configs
            .into_iter()
            .filter_map(|c| c.get("webhooks")?.as_array())
            .flatten()
            .find(|w| w.get("name").and_then(Value::as_str) == Some(GATEKEEPER_WEBHOOK))
            .map(|w| w.to_string());
        let mut excluded_namespaces: Vec<String> = Vec::new();
        for entry in configs
            .into_iter()
            .filter_map(|c| c.pointer("/spec/match")?.as_array())
            .flatten()
        {
            let for_webhook = entry
                .get("processes")
                .and_then(Value::as_array)
                .is_some_and(|p| {
                    p.iter()
                        .any(|p| matches!(p.as_str(), Some("webhook") | Some("*")))
                });
            if !for_webhook {
                continue;
            }
            for ns in entry
                .get("excludedNamespaces")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !excluded_namespaces.iter().any(|e| e == ns) {
                    excluded_namespaces.push(ns.to_string());
                }
            }
        }
        ScopeInputs {
            webhook,
            excluded_namespaces,
        }
    }

    /// The module's scope-sync settings: these inputs and the exempt namespace patterns
    /// (see [`exempt_patterns`]).
    pub fn into_scope_sync(self, exempt_namespaces: Vec<String>) -> ScopeSync {
        ScopeSync {
            webhook: self.webhook,
            excluded_namespaces: self.excluded_namespaces,
            exempt_namespaces,
        }
    }
}

/// Gatekeeper's exempt namespaces as the module's scope sync takes them (Gatekeeper's
/// `--exempt-namespace`, `--exempt-namespace-prefix`, `--exempt-namespace-suffix`): names as
/// given, `prefix*` and `*suffix`.
pub fn exempt_patterns(names: &[String], prefixes: &[String], suffixes: &[String]) -> Vec<String> {
    names
        .iter()
        .cloned()
        .chain(prefixes.iter().map(|p| format!("{p}*")))
        .chain(suffixes.iter().map(|s| format!("*{s}")))
        .collect()
}

/// Extracts the decision inputs from a constraint object.
pub fn extract_constraint(obj: &Value) -> Constraint {
    let mut malformed = Vec::new();
    let name = match obj.pointer("/metadata/name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            malformed.push("metadata.name is missing".to_string());
            String::new()
        }
    };
    let uid = str_at(obj, "/metadata/uid").unwrap_or_default();
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let spec = obj.get("spec");
    if spec.is_some_and(|s| !s.is_object() && !s.is_null()) {
        malformed.push("spec must be an object".to_string());
    }
    let enforcement_action = match obj.pointer("/spec/enforcementAction") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            malformed.push(format!(
                "spec.enforcementAction must be a string, got {}",
                type_name(other)
            ));
            None
        }
    };
    let scoped_enforcement_actions = match obj.pointer("/spec/scopedEnforcementActions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| scoped_action(i, item, &mut malformed))
                .collect(),
        ),
        Some(other) => {
            malformed.push(format!(
                "spec.scopedEnforcementActions must be a list, got {}",
                type_name(other)
            ));
            None
        }
    };
    let m = obj.pointer("/spec/match");
    if m.is_some_and(|m| !m.is_object() && !m.is_null()) {
        malformed.push("spec.match must be an object".to_string());
    }
    let label_selector = selector(obj, "labelSelector", &mut malformed);
    let namespace_selector = selector(obj, "namespaceSelector", &mut malformed);
    Constraint {
        name,
        uid,
        generation,
        enforcement_action,
        scoped_enforcement_actions,
        label_selector,
        namespace_selector,
        malformed,
    }
}

fn scoped_action(i: usize, item: &Value, malformed: &mut Vec<String>) -> Option<ScopedAction> {
    let Some(obj) = item.as_object() else {
        malformed.push(format!(
            "spec.scopedEnforcementActions[{i}] must be an object"
        ));
        return None;
    };
    let action = match obj.get("action") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => {
            malformed.push(format!(
                "spec.scopedEnforcementActions[{i}].action must be a string, got {}",
                type_name(other)
            ));
            return None;
        }
    };
    let mut enforcement_points = Vec::new();
    match obj.get("enforcementPoints") {
        None | Some(Value::Null) => {}
        Some(Value::Array(points)) => {
            for (j, p) in points.iter().enumerate() {
                match p.get("name").and_then(Value::as_str) {
                    Some(n) => enforcement_points.push(n.to_string()),
                    None => malformed.push(format!(
                        "spec.scopedEnforcementActions[{i}].enforcementPoints[{j}] needs a string name"
                    )),
                }
            }
        }
        Some(other) => {
            malformed.push(format!(
                "spec.scopedEnforcementActions[{i}].enforcementPoints must be a list, got {}",
                type_name(other)
            ));
            return None;
        }
    }
    Some(ScopedAction {
        action,
        enforcement_points,
    })
}

fn selector(obj: &Value, field: &str, malformed: &mut Vec<String>) -> Option<String> {
    match obj.pointer(&format!("/spec/match/{field}")) {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.to_string()),
        Some(other) => {
            malformed.push(format!(
                "spec.match.{field} must be an object, got {}",
                type_name(other)
            ));
            None
        }
    }
}

fn str_at(obj: &Value, pointer: &str) -> Option<String> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_every_field() {
        let c = extract_constraint(&json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "K8sRequiredLabels",
            "metadata": {"name": "a", "uid": "u1", "generation": 3},
            "spec": {
                "enforcementAction": "scoped",
                "scopedEnforcementActions": [
                    {"action": "warn", "enforcementPoints": [{"name": "vap.k8s.io"}]}
                ],
                "match": {"labelSelector": {"matchLabels": {"a": "b"}}}
            }
        }));
        assert_eq!(c.name, "a");
        assert_eq!(c.uid, "u1");
        assert_eq!(c.generation, 3);
        assert_eq!(c.enforcement_action.as_deref(), Some("scoped"));
        let s = c.scoped_enforcement_actions.unwrap();
        assert_eq!(s[0].action, "warn");
        assert_eq!(s[0].enforcement_points, vec!["vap.k8s.io"]);
        assert_eq!(
            c.label_selector.as_deref(),
            Some(r#"{"matchLabels":{"a":"b"}}"#)
        );
        assert!(c.namespace_selector.is_none());
        assert!(c.malformed.is_empty());
    }

    #[test]
    fn wrong_shapes_are_recorded_not_guessed() {
        let c = extract_constraint(&json!({
            "metadata": {"name": "a"},
            "spec": {
                "enforcementAction": 7,
                "scopedEnforcementActions": "vap.k8s.io",
                "match": {"labelSelector": "team=a"}
            }
        }));
        assert_eq!(c.malformed.len(), 3, "{:?}", c.malformed);
        assert!(c.malformed[0].contains("enforcementAction must be a string"));
        assert!(c.malformed[1].contains("must be a list"));
        assert!(c.malformed[2].contains("labelSelector must be an object"));
    }

    #[test]
    fn scope_inputs_take_gatekeepers_webhook_and_the_webhook_processes_exclusions() {
        let vwc = json!({"webhooks": [
            {"name": "check-ignore-label.gatekeeper.sh", "rules": []},
            {"name": "validation.gatekeeper.sh", "rules": [{"operations": ["CREATE"]}],
             "matchPolicy": "Exact"}
        ]});
        let config = json!({"spec": {"match": [
            {"excludedNamespaces": ["kube-*", "a"], "processes": ["*"]},
            {"excludedNamespaces": ["audit-only"], "processes": ["audit"]},
            {"excludedNamespaces": ["a", "b"], "processes": ["webhook", "sync"]},
            {"excludedNamespaces": ["no-processes"]}
        ]}});
        let s = ScopeInputs::from_objects([&vwc], [&config]);
        assert_eq!(
            s.webhook.as_deref(),
            Some(
                r#"{"name":"validation.gatekeeper.sh","rules":[{"operations":["CREATE"]}],"matchPolicy":"Exact"}"#
            )
        );
        assert_eq!(s.excluded_namespaces, ["kube-*", "a", "b"]);
        assert_eq!(ScopeInputs::from_objects([], []), ScopeInputs::default());
        let other = json!({"webhooks": [{"name": "other"}]});
        assert_eq!(ScopeInputs::from_objects([&other], []).webhook, None);
    }

    #[test]
    fn exempt_patterns_are_names_prefixes_and_suffixes() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            exempt_patterns(&v(&["a"]), &v(&["kube-"]), &v(&["-system"])),
            ["a", "kube-*", "*-system"]
        );
    }

    #[test]
    fn classifies_objects() {
        let t = json!({"apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate",
                       "spec": {"crd": {"spec": {"names": {"kind": "Foo"}}}}});
        assert!(is_template(&t));
        assert_eq!(template_kind(&t), Some("Foo"));
        assert!(is_constraint(
            &json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "Foo"})
        ));
        assert_eq!(group_of(&json!({"apiVersion": "v1"})), "");
    }
}
