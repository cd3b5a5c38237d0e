//! Semantic equality of desired and live objects, after API defaulting.
//!
//! The API server fills defaults (`matchPolicy: Equivalent`, empty selectors, rule
//! `scope: "*"`, `failurePolicy: Fail`) and adds metadata. Comparing raw objects would make
//! every reconcile write (Gatekeeper's churn, #4793). Here both sides are normalised — known
//! defaults filled, empty values dropped — and only the spec fields vapgen manages, plus its
//! controller owner reference, are compared. Labels and annotations that users add are ignored.

use serde_json::{Map, Value};

use super::world::controller_of;

/// Top-level spec fields vapgen writes on a VAP.
const VAP_FIELDS: &[&str] = &[
    "paramKind",
    "matchConstraints",
    "matchConditions",
    "variables",
    "validations",
    "failurePolicy",
    "auditAnnotations",
];

/// Top-level spec fields vapgen writes on a binding.
const VAPB_FIELDS: &[&str] = &[
    "policyName",
    "paramRef",
    "validationActions",
    "matchResources",
];

/// Whether the live VAP already has the desired content.
pub fn vap_equal(desired: &Value, live: &Value) -> bool {
    owner_equal(desired, live)
        && project(desired, VAP_FIELDS, normalize_vap) == project(live, VAP_FIELDS, normalize_vap)
}

/// Whether the live binding already has the desired content.
pub fn vapb_equal(desired: &Value, live: &Value) -> bool {
    owner_equal(desired, live)
        && project(desired, VAPB_FIELDS, normalize_vapb)
            == project(live, VAPB_FIELDS, normalize_vapb)
}

fn owner_equal(desired: &Value, live: &Value) -> bool {
    match controller_of(desired) {
        None => true,
        Some(d) => controller_of(live).is_some_and(|l| l == d),
    }
}

fn project(obj: &Value, fields: &[&str], normalize: fn(&mut Value)) -> Value {
    let mut spec = Map::new();
    for f in fields {
        if let Some(v) = obj.pointer(&format!("/spec/{f}")) {
            spec.insert((*f).to_string(), v.clone());
        }
    }
    let mut v = Value::Object(spec);
    normalize(&mut v);
    drop_empty(&mut v);
    v
}

fn set_default(obj: &mut Value, key: &str, default: Value) {
    if let Value::Object(m) = obj {
        m.entry(key).or_insert(default);
    }
}

fn normalize_vap(spec: &mut Value) {
    set_default(spec, "failurePolicy", Value::String("Fail".into()));
    if let Some(mc) = spec.get_mut("matchConstraints") {
        set_default(mc, "matchPolicy", Value::String("Equivalent".into()));
        if let Some(Value::Array(rules)) = mc.get_mut("resourceRules") {
            for r in rules {
                set_default(r, "scope", Value::String("*".into()));
            }
        }
    }
}

fn normalize_vapb(spec: &mut Value) {
    if let Some(mr) = spec.get_mut("matchResources") {
        set_default(mr, "matchPolicy", Value::String("Equivalent".into()));
    } else if let Value::Object(m) = spec {
        // The API server defaults an absent matchResources' matchPolicy too.
        let mut mr = Map::new();
        mr.insert("matchPolicy".into(), Value::String("Equivalent".into()));
        m.insert("matchResources".into(), Value::Object(mr));
    }
}

/// Removes nulls, empty objects and empty arrays, recursively.
fn drop_empty(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for x in m.values_mut() {
                drop_empty(x);
            }
            m.retain(|_, x| !is_empty(x));
        }
        Value::Array(a) => a.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired_vap() -> Value {
        json!({"metadata": {"name": "gatekeeper-x", "ownerReferences": [{"apiVersion": "templates.gatekeeper.sh/v1beta1", "kind": "ConstraintTemplate", "name": "x", "uid": "u", "controller": true, "blockOwnerDeletion": true}]},
               "spec": {"paramKind": {"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "X"},
                        "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"]}]},
                        "validations": [{"expression": "true"}]}})
    }

    #[test]
    fn api_defaults_and_user_labels_do_not_count_as_drift() {
        let mut live = desired_vap();
        live["metadata"]["labels"] = json!({"team": "a"});
        live["metadata"]["resourceVersion"] = json!("7");
        live["spec"]["failurePolicy"] = json!("Fail");
        live["spec"]["matchConstraints"]["matchPolicy"] = json!("Equivalent");
        live["spec"]["matchConstraints"]["namespaceSelector"] = json!({});
        live["spec"]["matchConstraints"]["objectSelector"] = json!({});
        live["spec"]["matchConstraints"]["resourceRules"][0]["scope"] = json!("*");
        live["status"] = json!({"observedGeneration": 1});
        assert!(vap_equal(&desired_vap(), &live));
    }

    #[test]
    fn real_drift_is_detected() {
        let mut live = desired_vap();
        live["spec"]["failurePolicy"] = json!("Ignore");
        assert!(!vap_equal(&desired_vap(), &live));
        let mut live = desired_vap();
        live["spec"]["validations"][0]["messageExpression"] = json!("'x'");
        assert!(
            !vap_equal(&desired_vap(), &live),
            "a field we no longer set is drift"
        );
        let mut live = desired_vap();
        live["metadata"]["ownerReferences"][0]["uid"] = json!("other");
        assert!(
            !vap_equal(&desired_vap(), &live),
            "another owner is not ours"
        );
    }

    #[test]
    fn binding_defaults() {
        let d = json!({"spec": {"policyName": "p", "paramRef": {"name": "n", "parameterNotFoundAction": "Allow"}, "validationActions": ["Deny"], "matchResources": {}}});
        let mut live = d.clone();
        live["spec"]["matchResources"] =
            json!({"matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {}});
        assert!(vapb_equal(&d, &live));
        live["spec"]["matchResources"]["objectSelector"] = json!({"matchLabels": {"a": "b"}});
        assert!(!vapb_equal(&d, &live), "a stale selector is drift");
    }
}
