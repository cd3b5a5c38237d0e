//! The VAP's scope (§4.2 and §4.3 items 6–8): `matchConstraints`, and with scope sync the
//! global exclusion conditions and the webhook's own match conditions.

use crate::cel;
use crate::json::{self, Value, quote};
use crate::model::Settings;
use crate::text::{fill, must_be, num};

/// Operation names in their fixed output order (#4640).
const OPERATIONS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "CONNECT"];

/// The error text Gatekeeper uses when a rule and the template share no operation.
pub const NO_MATCHING_OPERATIONS: &str =
    "no matching operations between webhook and constraint template";

/// The scope of a VAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `spec.matchConstraints`.
    pub match_constraints: Value,
    /// Match conditions that follow the four internal ones, in order: global excluded,
    /// global exempted, then the webhook's own.
    pub conditions: Vec<Value>,
}

/// A set of operations, indexed like [`OPERATIONS`].
type OpSet = [bool; 4];

/// Builds the scope. `template_operations` is `spec.targets[0].operations` as written.
/// Errors are transform errors; findings such as an operations mismatch go to `warnings`.
pub fn build(
    settings: &Settings,
    template_operations: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<Scope, String> {
    let Some(sync) = &settings.scope_sync else {
        return Ok(Scope {
            match_constraints: default_match_constraints(),
            conditions: Vec::new(),
        });
    };
    let mut conditions = Vec::new();
    if let Some(patterns) = sorted_patterns(&sync.excluded_namespaces) {
        conditions.push(condition(
            cel::GLOBAL_EXCLUDED,
            cel::match_global_excluded(&patterns),
        ));
    }
    if let Some(patterns) = sorted_patterns(&sync.exempt_namespaces) {
        conditions.push(condition(
            cel::GLOBAL_EXEMPTED,
            cel::match_global_exempted(&patterns),
        ));
    }
    let Some(webhook) = &sync.webhook else {
        return Ok(Scope {
            match_constraints: default_match_constraints(),
            conditions,
        });
    };
    let webhook = json::parse(webhook).map_err(|e| {
        fill(
            "scope sync: the webhook configuration is not valid JSON: {e}",
            &[("e", &e.describe())],
        )
    })?;
    if webhook.as_object().is_none() {
        return Err(must_be(
            "scope sync: the webhook configuration",
            "an object",
            &webhook,
        ));
    }
    let match_constraints = synced_match_constraints(&webhook, template_operations, warnings)?;
    conditions.extend(webhook_conditions(&webhook)?);
    Ok(Scope {
        match_constraints,
        conditions,
    })
}

/// `{name, expression}` as a match-condition object.
#[inline(never)] // one copy in wasm, not one per call site
pub fn condition(name: &str, expression: String) -> Value {
    Value::object(vec![
        ("name", Value::str(name)),
        ("expression", Value::String(expression)),
    ])
}

/// The default scope: one rule for every resource, CREATE and UPDATE, scope `*` (#4793).
pub fn default_match_constraints() -> Value {
    let star = || Value::str_array(&["*"]);
    Value::object(vec![(
        "resourceRules",
        Value::Array(vec![Value::object(vec![
            ("apiGroups", star()),
            ("apiVersions", star()),
            ("operations", Value::str_array(&["CREATE", "UPDATE"])),
            ("resources", star()),
            ("scope", Value::str("*")),
        ])]),
    )])
}

/// Sorted (byte order), de-duplicated patterns; `None` when there are none. An insertion
/// sort: the lists are short, and it keeps `slice::sort` out of the wasm.
fn sorted_patterns(patterns: &[String]) -> Option<Vec<String>> {
    let mut v: Vec<String> = Vec::with_capacity(patterns.len());
    for p in patterns {
        if let Err(i) = v.binary_search(p) {
            v.insert(i, p.clone());
        }
    }
    (!v.is_empty()).then_some(v)
}

/// `matchConstraints` mirrored from the webhook: selectors and matchPolicy copied, one
/// resource rule per webhook rule.
fn synced_match_constraints(
    webhook: &Value,
    template_operations: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<Value, String> {
    let template_ops = template_operations
        .map(|v| op_set(v, "spec.targets[0].operations"))
        .transpose()?;
    let rules = match webhook.get("rules") {
        Some(Value::Array(rules)) if !rules.is_empty() => rules,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err("scope sync: the webhook has no rules".to_string());
        }
        Some(v) => {
            return Err(must_be("scope sync: the webhook's rules", "a list", v));
        }
    };
    let mut resource_rules = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        resource_rules.push(resource_rule(rule, i, template_ops, warnings)?);
    }
    let mut members = Vec::new();
    for key in ["namespaceSelector", "objectSelector", "matchPolicy"] {
        if let Some(v) = webhook.get(key).filter(|v| **v != Value::Null) {
            members.push((key.to_string(), v.clone()));
        }
    }
    members.push(("resourceRules".to_string(), Value::Array(resource_rules)));
    Ok(Value::Object(members))
}

/// One webhook rule as a VAP resource rule (apiGroups, apiVersions, resources and scope
/// copied; operations intersected with the template's when it has any).
fn resource_rule(
    rule: &Value,
    i: usize,
    template_ops: Option<OpSet>,
    warnings: &mut Vec<String>,
) -> Result<Value, String> {
    if rule.as_object().is_none() {
        let path = fill("scope sync: webhook rule {i}", &[("i", &num(i))]);
        return Err(must_be(&path, "an object", rule));
    }
    let copy = |key: &str| rule.get(key).filter(|v| **v != Value::Null).cloned();
    let operations = match template_ops {
        None => copy("operations"),
        Some(t) => Some(intersect(rule, i, t, warnings)?),
    };
    let mut members = Vec::new();
    for (key, value) in [
        ("apiGroups", copy("apiGroups")),
        ("apiVersions", copy("apiVersions")),
        ("operations", operations),
        ("resources", copy("resources")),
        ("scope", copy("scope")),
    ] {
        if let Some(v) = value {
            members.push((key.to_string(), v));
        }
    }
    Ok(Value::Object(members))
}

/// The operations of rule `i` that the template also asks for, in the fixed order.
fn intersect(
    rule: &Value,
    i: usize,
    template: OpSet,
    warnings: &mut Vec<String>,
) -> Result<Value, String> {
    let i = num(i);
    let path = fill("webhook rule {i} operations", &[("i", &i)]);
    let rule_ops = match rule.get("operations") {
        None | Some(Value::Null) => [false; 4],
        Some(v) => op_set(v, &path)?,
    };
    let both: OpSet = std::array::from_fn(|k| template[k] && rule_ops[k]);
    if both == [false; 4] {
        return Err(fill(
            "{msg}: the template asks for {t}, webhook rule {i} allows {r}",
            &[
                ("msg", NO_MATCHING_OPERATIONS),
                ("t", &op_text(template)),
                ("i", &i),
                ("r", &op_text(rule_ops)),
            ],
        ));
    }
    if both != template {
        warnings.push(fill(
            "operations mismatch between webhook and constraint template: the template asks \
             for {t}, webhook rule {i} allows {r}; the VAP uses {b}",
            &[
                ("t", &op_text(template)),
                ("i", &i),
                ("r", &op_text(rule_ops)),
                ("b", &op_text(both)),
            ],
        ));
    }
    Ok(Value::Array(
        op_names(both).into_iter().map(Value::str).collect(),
    ))
}

/// Parses a list of operations; `*` stands for all four.
fn op_set(v: &Value, path: &str) -> Result<OpSet, String> {
    let Some(items) = v.as_array() else {
        return Err(must_be(path, "a list", v));
    };
    let mut set = [false; 4];
    for item in items {
        match item.as_str() {
            Some("*") => set = [true; 4],
            Some(op) => match OPERATIONS.iter().position(|o| *o == op) {
                Some(k) => set[k] = true,
                None => {
                    return Err(fill(
                        "{path} has the unknown operation {op} (allowed: *, {all})",
                        &[
                            ("path", path),
                            ("op", &quote(op)),
                            ("all", "CREATE, UPDATE, DELETE, CONNECT"),
                        ],
                    ));
                }
            },
            None => {
                return Err(must_be(path, "a list of strings", item));
            }
        }
    }
    Ok(set)
}

/// The operations of `set`, comma-separated (`none` when empty), for messages.
fn op_text(set: OpSet) -> String {
    let mut out = String::new();
    for name in op_names(set) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name);
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

fn op_names(set: OpSet) -> Vec<&'static str> {
    OPERATIONS
        .iter()
        .zip(set)
        .filter_map(|(name, on)| on.then_some(*name))
        .collect()
}

/// The webhook's own `matchConditions`, copied unchanged.
fn webhook_conditions(webhook: &Value) -> Result<Vec<Value>, String> {
    match webhook.get("matchConditions") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(v) => Err(must_be(
            "scope sync: the webhook's matchConditions",
            "a list",
            v,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ScopeSync;

    fn sync(webhook: Option<&str>, excluded: &[&str], exempt: &[&str]) -> Settings {
        Settings {
            scope_sync: Some(ScopeSync {
                webhook: webhook.map(str::to_string),
                excluded_namespaces: excluded.iter().map(|s| s.to_string()).collect(),
                exempt_namespaces: exempt.iter().map(|s| s.to_string()).collect(),
            }),
            ..Settings::default()
        }
    }

    fn ops(s: &str) -> Value {
        json::parse(s).unwrap()
    }

    const WEBHOOK: &str = r#"{"rules":[{"apiGroups":["*"],"apiVersions":["*"],"resources":["*","pods/exec"],"operations":["CREATE","UPDATE"],"scope":"*"}],
        "namespaceSelector":{"matchExpressions":[{"key":"admission.gatekeeper.sh/ignore","operator":"DoesNotExist"}]},
        "matchPolicy":"Exact","sideEffects":"None",
        "matchConditions":[{"name":"skip-leases","expression":"request.resource.resource != 'leases'"}]}"#;

    #[test]
    fn default_rule_without_sync() {
        let mut w = Vec::new();
        let s = build(&Settings::default(), Some(&ops(r#"["DELETE"]"#)), &mut w).unwrap();
        assert_eq!(
            s.match_constraints.to_json(),
            r#"{"resourceRules":[{"apiGroups":["*"],"apiVersions":["*"],"operations":["CREATE","UPDATE"],"resources":["*"],"scope":"*"}]}"#
        );
        assert!(s.conditions.is_empty());
        assert!(w.is_empty(), "template operations are ignored without sync");
    }

    #[test]
    fn sync_without_webhook_uses_the_default_rule_and_global_conditions() {
        let mut w = Vec::new();
        let s = build(&sync(None, &["b", "a", "b"], &[]), None, &mut w).unwrap();
        assert_eq!(s.match_constraints, default_match_constraints());
        assert_eq!(s.conditions.len(), 1);
        let expr = s.conditions[0]
            .get("expression")
            .and_then(Value::as_str)
            .unwrap();
        assert!(
            expr.contains(r#"!["a", "b"].exists(p, "#),
            "sorted and de-duplicated"
        );
        assert_eq!(
            s.conditions[0].get("name").and_then(Value::as_str),
            Some(cel::GLOBAL_EXCLUDED)
        );
    }

    #[test]
    fn webhook_is_mirrored() {
        let mut w = Vec::new();
        let s = build(&sync(Some(WEBHOOK), &[], &[]), None, &mut w).unwrap();
        assert_eq!(
            s.match_constraints.to_json(),
            r#"{"namespaceSelector":{"matchExpressions":[{"key":"admission.gatekeeper.sh/ignore","operator":"DoesNotExist"}]},"matchPolicy":"Exact","resourceRules":[{"apiGroups":["*"],"apiVersions":["*"],"operations":["CREATE","UPDATE"],"resources":["*","pods/exec"],"scope":"*"}]}"#
        );
        assert_eq!(
            s.conditions,
            vec![condition(
                "skip-leases",
                "request.resource.resource != 'leases'".into()
            )]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn operations_are_intersected_in_fixed_order() {
        let mut w = Vec::new();
        let t = ops(r#"["DELETE","CREATE"]"#);
        let s = build(&sync(Some(WEBHOOK), &[], &[]), Some(&t), &mut w).unwrap();
        let rule = &s
            .match_constraints
            .get("resourceRules")
            .unwrap()
            .as_array()
            .unwrap()[0];
        assert_eq!(rule.get("operations").unwrap().to_json(), r#"["CREATE"]"#);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("operations mismatch between webhook and constraint template"));

        // "*" on both sides, output order fixed.
        let mut w = Vec::new();
        let webhook = r#"{"rules":[{"operations":["*"]}]}"#;
        let t = ops(r#"["CONNECT","UPDATE","DELETE","CREATE"]"#);
        let s = build(&sync(Some(webhook), &[], &[]), Some(&t), &mut w).unwrap();
        let rule = &s
            .match_constraints
            .get("resourceRules")
            .unwrap()
            .as_array()
            .unwrap()[0];
        assert_eq!(
            rule.get("operations").unwrap().to_json(),
            r#"["CREATE","UPDATE","DELETE","CONNECT"]"#
        );
        assert!(w.is_empty(), "same set, no mismatch");
        let t = ops(r#"["*"]"#);
        let mut w = Vec::new();
        build(&sync(Some(webhook), &[], &[]), Some(&t), &mut w).unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn no_common_operation_is_an_error() {
        // Acceptance test 43, second half.
        let mut w = Vec::new();
        let t = ops(r#"["DELETE"]"#);
        let e = build(&sync(Some(WEBHOOK), &[], &[]), Some(&t), &mut w).unwrap_err();
        assert!(e.starts_with(NO_MATCHING_OPERATIONS), "{e}");
        // One empty rule among others fails the whole transform.
        let webhook = r#"{"rules":[{"operations":["DELETE"]},{"operations":["CREATE"]}]}"#;
        let e = build(&sync(Some(webhook), &[], &[]), Some(&t), &mut w).unwrap_err();
        assert!(e.contains("webhook rule 1"), "{e}");
    }

    #[test]
    fn template_operations_nil_copies_the_rule() {
        let mut w = Vec::new();
        let webhook = r#"{"rules":[{"operations":["*"],"resources":["pods"]}]}"#;
        let s = build(&sync(Some(webhook), &[], &[]), None, &mut w).unwrap();
        assert_eq!(
            s.match_constraints.to_json(),
            r#"{"resourceRules":[{"operations":["*"],"resources":["pods"]}]}"#
        );
    }

    #[test]
    fn malformed_webhooks_are_transform_errors() {
        let mut w = Vec::new();
        for (webhook, want) in [
            ("{", "not valid JSON"),
            ("[]", "must be an object"),
            ("{}", "no rules"),
            (r#"{"rules":[]}"#, "no rules"),
            (r#"{"rules":{}}"#, "must be a list"),
            (r#"{"rules":[1]}"#, "rule 0 must be an object"),
            (
                r#"{"rules":[{}],"matchConditions":{}}"#,
                "matchConditions must be a list",
            ),
        ] {
            let e = build(&sync(Some(webhook), &[], &[]), None, &mut w).unwrap_err();
            assert!(e.contains(want), "{webhook}: {e}");
        }
        let t = ops(r#"["CREATE"]"#);
        let e = build(
            &sync(Some(r#"{"rules":[{"operations":["FOO"]}]}"#), &[], &[]),
            Some(&t),
            &mut w,
        )
        .unwrap_err();
        assert!(e.contains("unknown operation \"FOO\""), "{e}");
        let bad_t = ops(r#""CREATE""#);
        let e = build(&sync(Some(WEBHOOK), &[], &[]), Some(&bad_t), &mut w).unwrap_err();
        assert!(
            e.contains("spec.targets[0].operations must be a list"),
            "{e}"
        );
    }

    #[test]
    fn condition_order() {
        let mut w = Vec::new();
        let s = build(&sync(Some(WEBHOOK), &["x"], &["y"]), None, &mut w).unwrap();
        let names: Vec<&str> = s
            .conditions
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect();
        assert_eq!(
            names,
            [cel::GLOBAL_EXCLUDED, cel::GLOBAL_EXEMPTED, "skip-leases"]
        );
    }
}
