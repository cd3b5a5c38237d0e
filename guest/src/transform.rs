//! The template → ValidatingAdmissionPolicy transform (§4).

use crate::cel;
use crate::json::{Value, quote};
use crate::model::Settings;
use crate::naming::{self, MAX_NAME_LEN};
use crate::scope::{self, condition};
use crate::source::{NamedExpression, Source};
use crate::text::{fill, num};

/// What the transform needs from the template.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The template's `metadata.name`.
    pub template_name: &'a str,
    /// The template's kind.
    pub kind: &'a str,
    /// The template's `metadata.uid`, when known.
    pub uid: Option<&'a str>,
    /// The parsed CEL source.
    pub source: &'a Source,
    /// `spec.targets[0].operations` as written.
    pub operations: Option<&'a Value>,
}

/// Builds the VAP as compact JSON, or the transform error. Findings go to `warnings`.
pub fn build(
    settings: &Settings,
    input: &Input<'_>,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    let name = naming::policy_name(input.template_name);
    if name.len() > MAX_NAME_LEN {
        return Err(fill(
            "the VAP name {name} is {n} characters long; the limit is {max}",
            &[
                ("name", &quote(&name)),
                ("n", &num(name.len())),
                ("max", &num(MAX_NAME_LEN)),
            ],
        ));
    }
    check_content(input.source)?;
    let scope = scope::build(settings, input.operations, warnings)?;
    let failure_policy = input
        .source
        .failure_policy
        .unwrap_or(settings.default_failure_policy);
    let spec = Value::object(vec![
        (
            "paramKind",
            Value::object(vec![
                (
                    "apiVersion",
                    Value::str("constraints.gatekeeper.sh/v1beta1"),
                ),
                ("kind", Value::str(input.kind)),
            ]),
        ),
        ("matchConstraints", scope.match_constraints),
        (
            "matchConditions",
            Value::Array(match_conditions(input.source, scope.conditions)),
        ),
        ("variables", Value::Array(variables(input.source))),
        ("validations", Value::Array(validations(input.source))),
        ("failurePolicy", Value::str(failure_policy.as_str())),
    ]);
    let vap = Value::object(vec![
        ("apiVersion", Value::str("admissionregistration.k8s.io/v1")),
        ("kind", Value::str("ValidatingAdmissionPolicy")),
        ("metadata", metadata(&name, input)),
        ("spec", spec),
    ]);
    Ok(vap.to_json())
}

/// `metadata`: the name, and a controller reference to the template when its uid is known.
fn metadata(name: &str, input: &Input<'_>) -> Value {
    let mut members = vec![("name", Value::str(name))];
    if let Some(uid) = input.uid {
        members.push((
            "ownerReferences",
            Value::Array(vec![Value::object(vec![
                ("apiVersion", Value::str("templates.gatekeeper.sh/v1beta1")),
                ("kind", Value::str("ConstraintTemplate")),
                ("name", Value::str(input.template_name)),
                ("uid", Value::str(uid)),
                ("controller", Value::Bool(true)),
                ("blockOwnerDeletion", Value::Bool(true)),
            ])]),
        ));
    }
    Value::object(members)
}

/// Content the API server would reject, reported clearly instead ([REC]).
fn check_content(source: &Source) -> Result<(), String> {
    if source.validations.is_empty() {
        return Err("the K8sNativeValidation source has no validations; a \
                    ValidatingAdmissionPolicy needs at least one"
            .to_string());
    }
    for (i, v) in source.validations.iter().enumerate() {
        if blank(&v.expression) {
            return Err(fill(
                "source.validations[{i}] has no expression",
                &[("i", &num(i))],
            ));
        }
    }
    check_named(&source.variables, "variables")?;
    check_named(&source.match_conditions, "matchCondition")
}

/// Every entry has a name and an expression, and names are unique.
fn check_named(items: &[NamedExpression], key: &str) -> Result<(), String> {
    for (i, item) in items.iter().enumerate() {
        let path = fill("source.{key}[{i}]", &[("key", key), ("i", &num(i))]);
        let vars = [("path", path.as_str()), ("name", &quote(&item.name))];
        if item.name.is_empty() {
            return Err(fill("{path} has no name", &vars));
        }
        if blank(&item.expression) {
            return Err(fill("{path} named {name} has no expression", &vars));
        }
        if items.iter().take(i).any(|o| o.name == item.name) {
            return Err(fill(
                "{path}: the name {name} is used more than once",
                &vars,
            ));
        }
    }
    Ok(())
}

/// Empty or only ASCII whitespace (cheaper in wasm than `trim`).
fn blank(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_whitespace())
}

fn named(item: &NamedExpression) -> Value {
    condition(&item.name, item.expression.clone())
}

/// §4.3: the template's own, the four internal ones, then the scope-sync ones.
fn match_conditions(source: &Source, scope_conditions: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = source.match_conditions.iter().map(named).collect();
    for (name, expression) in [
        (cel::EXCLUDED_NAMESPACES, cel::MATCH_EXCLUDED_NAMESPACES),
        (cel::NAMESPACES, cel::MATCH_NAMESPACES),
        (cel::NAME, cel::MATCH_NAME),
        (cel::KINDS, cel::MATCH_KINDS),
    ] {
        out.push(condition(name, expression.to_string()));
    }
    out.extend(scope_conditions);
    out
}

/// §4.4: `anyObject`, `params`, then the user's.
fn variables(source: &Source) -> Vec<Value> {
    let mut out = vec![
        condition("anyObject", cel::ANY_OBJECT.to_string()),
        condition("params", cel::PARAMS.to_string()),
    ];
    out.extend(source.variables.iter().map(named));
    out
}

/// §4.5: a one-to-one copy of expression, message and messageExpression.
fn validations(source: &Source) -> Vec<Value> {
    source
        .validations
        .iter()
        .map(|v| {
            let mut members = vec![("expression", Value::str(&v.expression))];
            if let Some(m) = &v.message {
                members.push(("message", Value::str(m)));
            }
            if let Some(m) = &v.message_expression {
                members.push(("messageExpression", Value::str(m)));
            }
            Value::object(members)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;
    use crate::model::FailurePolicy;
    use crate::source::Validation;

    fn source() -> Source {
        Source {
            validations: vec![Validation {
                expression: "true".into(),
                message: Some("m".into()),
                message_expression: None,
            }],
            variables: vec![NamedExpression {
                name: "v".into(),
                expression: "1".into(),
            }],
            match_conditions: vec![NamedExpression {
                name: "mine".into(),
                expression: "true".into(),
            }],
            failure_policy: None,
            generate_vap: None,
        }
    }

    fn run(
        settings: &Settings,
        src: &Source,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Value, String> {
        let input = Input {
            template_name: name,
            kind: "K8sFoo",
            uid,
            source: src,
            operations: None,
        };
        let mut w = Vec::new();
        build(settings, &input, &mut w).map(|s| json::parse(&s).unwrap())
    }

    fn names(list: &Value) -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c.get("name").and_then(Value::as_str).unwrap().to_string())
            .collect()
    }

    #[test]
    fn shape_and_order() {
        let vap = run(&Settings::default(), &source(), "k8sfoo", None).unwrap();
        assert_eq!(
            vap.pointer(&["metadata"]).unwrap().to_json(),
            r#"{"name":"gatekeeper-k8sfoo"}"#,
            "no owner reference without a uid, no labels or annotations"
        );
        let spec = vap.get("spec").unwrap();
        assert_eq!(
            names(spec.get("matchConditions").unwrap()),
            [
                "mine",
                cel::EXCLUDED_NAMESPACES,
                cel::NAMESPACES,
                cel::NAME,
                cel::KINDS
            ]
        );
        assert_eq!(
            names(spec.get("variables").unwrap()),
            ["anyObject", "params", "v"]
        );
        assert_eq!(
            spec.get("validations").unwrap().to_json(),
            r#"[{"expression":"true","message":"m"}]"#
        );
        assert_eq!(
            spec.get("paramKind").unwrap().to_json(),
            r#"{"apiVersion":"constraints.gatekeeper.sh/v1beta1","kind":"K8sFoo"}"#
        );
        assert_eq!(
            spec.get("failurePolicy").and_then(Value::as_str),
            Some("Fail")
        );
    }

    #[test]
    fn owner_reference_with_uid() {
        let vap = run(&Settings::default(), &source(), "k8sfoo", Some("abc")).unwrap();
        assert_eq!(
            vap.pointer(&["metadata", "ownerReferences"])
                .unwrap()
                .to_json(),
            r#"[{"apiVersion":"templates.gatekeeper.sh/v1beta1","kind":"ConstraintTemplate","name":"k8sfoo","uid":"abc","controller":true,"blockOwnerDeletion":true}]"#
        );
    }

    #[test]
    fn failure_policy_from_source_or_flag() {
        let settings = Settings {
            default_failure_policy: FailurePolicy::Ignore,
            ..Settings::default()
        };
        let vap = run(&settings, &source(), "k8sfoo", None).unwrap();
        assert_eq!(
            vap.pointer(&["spec", "failurePolicy"])
                .and_then(Value::as_str),
            Some("Ignore")
        );
        let mut src = source();
        src.failure_policy = Some(FailurePolicy::Fail);
        let vap = run(&settings, &src, "k8sfoo", None).unwrap();
        assert_eq!(
            vap.pointer(&["spec", "failurePolicy"])
                .and_then(Value::as_str),
            Some("Fail")
        );
    }

    #[test]
    fn content_errors() {
        let s = Settings::default();
        let mut src = source();
        src.validations.clear();
        assert!(
            run(&s, &src, "k8sfoo", None)
                .unwrap_err()
                .contains("has no validations")
        );
        let mut src = source();
        src.validations[0].expression = " ".into();
        assert!(
            run(&s, &src, "k8sfoo", None)
                .unwrap_err()
                .contains("validations[0] has no expression")
        );
        let mut src = source();
        src.variables.push(src.variables[0].clone());
        assert!(
            run(&s, &src, "k8sfoo", None)
                .unwrap_err()
                .contains("used more than once")
        );
        let mut src = source();
        src.match_conditions[0].name.clear();
        assert!(
            run(&s, &src, "k8sfoo", None)
                .unwrap_err()
                .contains("matchCondition[0] has no name")
        );
        let mut src = source();
        src.variables[0].expression.clear();
        assert!(
            run(&s, &src, "k8sfoo", None)
                .unwrap_err()
                .contains("variables[0] named \"v\" has no expression")
        );
    }

    #[test]
    fn long_names_are_rejected() {
        let name = "k".repeat(242);
        assert!(
            run(&Settings::default(), &source(), &name, None).is_ok(),
            "253 exactly"
        );
        let name = "k".repeat(243);
        let e = run(&Settings::default(), &source(), &name, None).unwrap_err();
        assert!(e.contains("254 characters long"), "{e}");
    }
}
