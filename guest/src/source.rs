//! The `source` object of a template's `K8sNativeValidation` code entry (§1.1): parsing,
//! shape checks and the reserved-name rules (row T3 of §2.1).
//!
//! A field of the wrong JSON type is an error here (Gatekeeper's converter fails on it too),
//! so the template decision becomes `Error`. Content that only the API server would reject
//! (no validations, an empty expression) is accepted here and reported by the transform.

use crate::json::{Value, quote};
use crate::model::FailurePolicy;
use crate::text::{fill, must_be, num};

/// Prefix of the names Gatekeeper keeps for its own variables and match conditions.
pub const RESERVED_PREFIX: &str = "gatekeeper_internal_";

/// Variable names Gatekeeper defines itself.
pub const RESERVED_VARIABLES: [&str; 2] = ["params", "anyObject"];

/// The keys of `source` that Gatekeeper reads.
const SOURCE_KEYS: [&str; 5] = [
    "validations",
    "variables",
    "matchCondition",
    "failurePolicy",
    "generateVAP",
];

/// One entry of `source.validations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// `expression` (empty when absent).
    pub expression: String,
    /// `message`, when present and non-empty.
    pub message: Option<String>,
    /// `messageExpression`, when present and non-empty.
    pub message_expression: Option<String>,
}

/// A `{name, expression}` pair: a variable or a match condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedExpression {
    /// `name` (empty when absent).
    pub name: String,
    /// `expression` (empty when absent).
    pub expression: String,
}

/// The parsed `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `validations`, in order.
    pub validations: Vec<Validation>,
    /// `variables`, in order.
    pub variables: Vec<NamedExpression>,
    /// `matchCondition` (singular key), in order.
    pub match_conditions: Vec<NamedExpression>,
    /// `failurePolicy`, when set.
    pub failure_policy: Option<FailurePolicy>,
    /// `generateVAP`, when set.
    pub generate_vap: Option<bool>,
}

/// Parses and checks `source`. Returns the error message for the template decision, or the
/// source; non-fatal findings go to `warnings`.
pub fn parse(source: Option<&Value>, warnings: &mut Vec<String>) -> Result<Source, String> {
    let Some(source @ Value::Object(members)) = source else {
        let path = "the K8sNativeValidation source";
        return Err(must_be(path, "an object", source.unwrap_or(&Value::Null)));
    };
    warn_unknown_source_keys(members, warnings);
    let validations = list(source, "validations")?
        .iter()
        .enumerate()
        .map(|(i, v)| validation(v, i, warnings))
        .collect::<Result<Vec<_>, _>>()?;
    let variables = named_list(source, "variables", warnings)?;
    check_variable_names(&variables)?;
    let match_conditions = named_list(source, "matchCondition", warnings)?;
    check_match_condition_names(&match_conditions)?;
    Ok(Source {
        validations,
        variables,
        match_conditions,
        failure_policy: failure_policy(source)?,
        generate_vap: generate_vap(source)?,
    })
}

/// A present, non-null member.
fn member<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| **v != Value::Null)
}

fn warn_unknown_source_keys(members: &[(String, Value)], warnings: &mut Vec<String>) {
    for (key, _) in members {
        if key == "matchConditions" {
            warnings.push(
                "source.matchConditions (plural) is ignored, as Gatekeeper ignores it: \
                 the key for match conditions is matchCondition (singular)"
                    .to_string(),
            );
        } else if !SOURCE_KEYS.contains(&key.as_str()) {
            warnings.push(fill(
                "source.{key} is not a known key and is ignored",
                &[("key", key)],
            ));
        }
    }
}

fn list<'a>(source: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match member(source, key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(v) => Err(must_be(&fill("source.{key}", &[("key", key)]), "a list", v)),
    }
}

/// An optional string member; `Ok(None)` when absent or null.
fn opt_string(obj: &Value, key: &str, path: &str) -> Result<Option<String>, String> {
    match member(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(must_be(
            &fill("{path}.{key}", &[("path", path), ("key", key)]),
            "a string",
            v,
        )),
    }
}

fn warn_unknown_keys(
    entry: &[(String, Value)],
    known: &[&str],
    path: &str,
    warnings: &mut Vec<String>,
) {
    for (key, _) in entry {
        if key == "reason" && path.starts_with("source.validations") {
            warnings.push(fill(
                "{path}.reason is not supported by Gatekeeper and is dropped from the VAP",
                &[("path", path)],
            ));
        } else if !known.contains(&key.as_str()) {
            warnings.push(fill(
                "{path}.{key} is not a known key and is ignored",
                &[("path", path), ("key", key)],
            ));
        }
    }
}

fn validation(v: &Value, i: usize, warnings: &mut Vec<String>) -> Result<Validation, String> {
    let path = fill("source.validations[{i}]", &[("i", &num(i))]);
    let Value::Object(members) = v else {
        return Err(must_be(&path, "an object", v));
    };
    warn_unknown_keys(
        members,
        &["expression", "message", "messageExpression"],
        &path,
        warnings,
    );
    Ok(Validation {
        expression: opt_string(v, "expression", &path)?.unwrap_or_default(),
        message: opt_string(v, "message", &path)?.filter(|s| !s.is_empty()),
        message_expression: opt_string(v, "messageExpression", &path)?.filter(|s| !s.is_empty()),
    })
}

fn named_list(
    source: &Value,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<NamedExpression>, String> {
    let mut out = Vec::new();
    for (i, v) in list(source, key)?.iter().enumerate() {
        let path = fill("source.{key}[{i}]", &[("key", key), ("i", &num(i))]);
        let Value::Object(members) = v else {
            return Err(must_be(&path, "an object", v));
        };
        warn_unknown_keys(members, &["name", "expression"], &path, warnings);
        out.push(NamedExpression {
            name: opt_string(v, "name", &path)?.unwrap_or_default(),
            expression: opt_string(v, "expression", &path)?.unwrap_or_default(),
        });
    }
    Ok(out)
}

fn check_variable_names(variables: &[NamedExpression]) -> Result<(), String> {
    for (i, v) in variables.iter().enumerate() {
        if RESERVED_VARIABLES.contains(&v.name.as_str()) || v.name.starts_with(RESERVED_PREFIX) {
            return Err(fill(
                "source.variables[{i}] has the reserved name {name}: variable names must not \
                 be params or anyObject nor start with {prefix}",
                &[
                    ("i", &num(i)),
                    ("name", &quote(&v.name)),
                    ("prefix", RESERVED_PREFIX),
                ],
            ));
        }
    }
    Ok(())
}

fn check_match_condition_names(conditions: &[NamedExpression]) -> Result<(), String> {
    for (i, c) in conditions.iter().enumerate() {
        if c.name.starts_with(RESERVED_PREFIX) {
            return Err(fill(
                "source.matchCondition[{i}] has the reserved name {name}: match condition \
                 names must not start with {prefix}",
                &[
                    ("i", &num(i)),
                    ("name", &quote(&c.name)),
                    ("prefix", RESERVED_PREFIX),
                ],
            ));
        }
    }
    Ok(())
}

fn failure_policy(source: &Value) -> Result<Option<FailurePolicy>, String> {
    match member(source, "failurePolicy") {
        None => Ok(None),
        Some(Value::String(s)) => FailurePolicy::parse(s).map(Some).ok_or_else(|| {
            fill(
                "source.failurePolicy must be Fail or Ignore (exact case), got {s}",
                &[("s", &quote(s))],
            )
        }),
        Some(v) => Err(must_be(
            "source.failurePolicy",
            "the string Fail or Ignore",
            v,
        )),
    }
}

fn generate_vap(source: &Value) -> Result<Option<bool>, String> {
    match member(source, "generateVAP") {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(must_be(
            "source.generateVAP",
            "a boolean (true or false)",
            v,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    fn parse_str(s: &str) -> (Result<Source, String>, Vec<String>) {
        let v = json::parse(s).unwrap();
        let mut w = Vec::new();
        (parse(Some(&v), &mut w), w)
    }

    fn err(s: &str) -> String {
        parse_str(s).0.unwrap_err()
    }

    #[test]
    fn full_source() {
        let (src, w) = parse_str(
            r#"{"validations":[{"expression":"true","message":"m","messageExpression":"'x'"},{"expression":"false","message":""}],
                "variables":[{"name":"v","expression":"1"}],
                "matchCondition":[{"name":"c","expression":"true"}],
                "failurePolicy":"Ignore","generateVAP":false}"#,
        );
        assert!(w.is_empty());
        let src = src.unwrap();
        assert_eq!(src.validations.len(), 2);
        assert_eq!(src.validations[0].message.as_deref(), Some("m"));
        assert_eq!(src.validations[1].message, None);
        assert_eq!(src.variables[0].name, "v");
        assert_eq!(src.match_conditions[0].expression, "true");
        assert_eq!(src.failure_policy, Some(FailurePolicy::Ignore));
        assert_eq!(src.generate_vap, Some(false));
    }

    #[test]
    fn empty_source_is_valid() {
        let src = parse_str("{}").0.unwrap();
        assert!(src.validations.is_empty());
        assert_eq!(src.generate_vap, None);
        assert_eq!(src.failure_policy, None);
        // null counts as absent
        let src = parse_str(r#"{"generateVAP":null,"failurePolicy":null}"#)
            .0
            .unwrap();
        assert_eq!(src.generate_vap, None);
    }

    #[test]
    fn source_must_be_an_object() {
        let mut w = Vec::new();
        assert!(
            parse(None, &mut w)
                .unwrap_err()
                .contains("must be an object")
        );
        let v = json::parse(r#""rego""#).unwrap();
        assert!(
            parse(Some(&v), &mut w)
                .unwrap_err()
                .contains("got a string")
        );
    }

    #[test]
    fn reserved_variable_names() {
        // Acceptance test 35.
        for name in ["params", "anyObject", "gatekeeper_internal_x"] {
            let e = err(&format!(
                r#"{{"variables":[{{"name":"ok","expression":"1"}},{{"name":"{name}","expression":"1"}}]}}"#
            ));
            assert!(e.contains("source.variables[1]"), "{e}");
            assert!(e.contains(name), "{e}");
        }
        // Not reserved: similar names.
        assert!(parse_str(r#"{"variables":[{"name":"paramsX","expression":"1"},{"name":"gatekeeper_x","expression":"1"}]}"#).0.is_ok());
    }

    #[test]
    fn reserved_match_condition_names() {
        let e = err(
            r#"{"matchCondition":[{"name":"gatekeeper_internal_match_kinds","expression":"true"}]}"#,
        );
        assert!(e.contains("source.matchCondition[0]"), "{e}");
        // params/anyObject are fine as match-condition names.
        assert!(
            parse_str(r#"{"matchCondition":[{"name":"params","expression":"true"}]}"#)
                .0
                .is_ok()
        );
    }

    #[test]
    fn failure_policy_values() {
        // Acceptance test 37.
        for bad in [r#""Sometimes""#, r#""fail""#, r#""""#] {
            let e = err(&format!(r#"{{"failurePolicy":{bad}}}"#));
            assert!(e.contains("source.failurePolicy"), "{e}");
        }
        assert!(err(r#"{"failurePolicy":1}"#).contains("got a number"));
        let src = parse_str(r#"{"failurePolicy":"Fail"}"#).0.unwrap();
        assert_eq!(src.failure_policy, Some(FailurePolicy::Fail));
    }

    #[test]
    fn generate_vap_must_be_a_bool() {
        for bad in [r#""true""#, "1", "[]", "{}"] {
            let e = err(&format!(r#"{{"generateVAP":{bad}}}"#));
            assert!(e.contains("source.generateVAP must be a boolean"), "{e}");
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(err(r#"{"validations":{}}"#).contains("source.validations must be a list"));
        assert!(
            err(r#"{"validations":["x"]}"#).contains("source.validations[0] must be an object")
        );
        assert!(
            err(r#"{"validations":[{"expression":1}]}"#)
                .contains("source.validations[0].expression must be a string")
        );
        assert!(
            err(r#"{"validations":[{"expression":"x","message":[]}]}"#)
                .contains(".message must be a string")
        );
        assert!(err(r#"{"variables":"x"}"#).contains("source.variables must be a list"));
        assert!(
            err(r#"{"variables":[{"name":true}]}"#)
                .contains("source.variables[0].name must be a string")
        );
        assert!(
            err(r#"{"matchCondition":[1]}"#).contains("source.matchCondition[0] must be an object")
        );
    }

    #[test]
    fn plural_match_conditions_and_unknown_keys_warn() {
        // Acceptance test 42.
        let (src, w) = parse_str(
            r#"{"matchConditions":[{"name":"a","expression":"true"}],"extra":1,"validations":[{"expression":"true","reason":"Forbidden","foo":1}]}"#,
        );
        let src = src.unwrap();
        assert!(src.match_conditions.is_empty(), "the plural key is ignored");
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("matchConditions (plural) is ignored"));
        assert!(w[1].contains("source.extra"));
        assert!(w[2].contains("source.validations[0].reason is not supported"));
        assert!(w[3].contains("source.validations[0].foo"));
    }
}
