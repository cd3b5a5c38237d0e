//! Validation of an object against a CRD's structural schema, as Gatekeeper's webhook and the
//! API server check a constraint against its constraint CRD: the value checks of the OpenAPI
//! v3 subset a structural schema uses, then the fields the schema does not know (what pruning
//! would drop, and what Gatekeeper's `ValidateCR` refuses as `unknown fields`).
//!
//! Restated from the public behaviour of Kubernetes' apiextensions (value validation and
//! `pruning.PruneWithOptions` with the object as the resource root: `apiVersion`, `kind` and
//! `metadata` are never unknown there) and Gatekeeper's frameworks (`crds.ValidateCR`: value
//! checks first, unknown fields only when they pass). What is checked: `type` (with
//! `nullable`, `x-kubernetes-int-or-string`), `enum`, `required`, `properties`,
//! `additionalProperties`, `items`, `pattern`, `minLength`/`maxLength` (in characters),
//! `minItems`/`maxItems`, `uniqueItems`, `minProperties`/`maxProperties`, `minimum`/`maximum`
//! (with their `exclusive*` flags), `multipleOf`, `allOf`/`anyOf`/`oneOf`/`not`, and
//! `x-kubernetes-preserve-unknown-fields`. Not checked: `format` and `x-kubernetes-validations`
//! (CEL rules), which the API server checks where the CRD exists.
//!
//! A `null` object field counts as absent unless the field is `nullable`, as the API server
//! drops such nulls before it validates.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// One thing the schema refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, e.g. `spec.parameters.labels[0]`.
    pub field: String,
    /// What is wrong with it, in the API server's words where it has them.
    pub problem: String,
}

impl Violation {
    /// A violation of the field at `path` (`<root>` for the object itself).
    fn at(path: &str, problem: impl Into<String>) -> Self {
        Violation {
            field: if path.is_empty() {
                "<root>".to_string()
            } else {
                path.to_string()
            },
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Why an object does not fit a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Value checks failed (the first ones, in field order).
    #[error("schema validation failed: {}", join(.0))]
    Invalid(Vec<Violation>),
    /// Fields the schema does not declare (sorted paths).
    #[error("unknown fields: {}", .0.join(", "))]
    UnknownFields(Vec<String>),
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// At most this many violations are reported for one object.
const MAX_VIOLATIONS: usize = 10;

/// A schema ready for validating many objects (patterns compiled once).
pub struct Validator<'s> {
    schema: &'s Value,
    patterns: HashMap<&'s str, Option<regex::Regex>>,
}

impl<'s> Validator<'s> {
    /// A validator of `schema` (an `openAPIV3Schema`).
    pub fn new(schema: &'s Value) -> Self {
        let mut patterns = HashMap::new();
        collect_patterns(schema, &mut patterns);
        Validator { schema, patterns }
    }

    /// Checks `object` (a whole resource) against the schema: value checks, then unknown
    /// fields.
    pub fn validate(&self, object: &Value) -> Result<(), SchemaError> {
        let mut out = Vec::new();
        self.check(object, self.schema, &mut String::new(), &mut out);
        if !out.is_empty() {
            out.truncate(MAX_VIOLATIONS);
            out.sort_by(|a, b| a.field.cmp(&b.field));
            return Err(SchemaError::Invalid(out));
        }
        let mut unknown = Vec::new();
        unknown_fields(
            object,
            Some(self.schema),
            false,
            true,
            &mut String::new(),
            &mut unknown,
        );
        if !unknown.is_empty() {
            unknown.sort();
            return Err(SchemaError::UnknownFields(unknown));
        }
        Ok(())
    }

    fn check(&self, v: &Value, s: &Value, path: &mut String, out: &mut Vec<Violation>) {
        if out.len() >= MAX_VIOLATIONS || !s.is_object() {
            return;
        }
        let mut fail = |problem: String| out.push(Violation::at(path, problem));
        let flag = |k: &str| s.get(k).and_then(Value::as_bool).unwrap_or(false);
        let int_or_string = flag("x-kubernetes-int-or-string");
        let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
        if v.is_null() {
            if !ty.is_empty() && !flag("nullable") {
                fail(format!("Invalid value: \"null\": must be of type {ty}"));
            }
            return;
        }
        if int_or_string {
            if !(v.is_string() || is_integer(v)) {
                fail(format!(
                    "Invalid value: \"{}\": must be of type integer or string",
                    type_name(v)
                ));
                return;
            }
        } else if !ty.is_empty() && !has_type(v, ty) {
            fail(format!(
                "Invalid value: \"{}\": must be of type {ty}",
                type_name(v)
            ));
            return;
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array)
            && !allowed.iter().any(|a| json_eq(a, v))
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            fail(format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ));
        }
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        let count = |k: &str| s.get(k).and_then(Value::as_u64);
        let counted = match v {
            Value::Array(a) => Some((a.len(), "maxItems", "minItems", "items")),
            Value::Object(o) => Some((o.len(), "maxProperties", "minProperties", "properties")),
            _ => None,
        };
        if let Some((n, max_key, min_key, noun)) = counted {
            let n = n as u64;
            if let Some(max) = count(max_key).filter(|m| n > *m) {
                fail(format!("Too many: {n}: must have at most {max} {noun}"));
            }
            if let Some(min) = count(min_key).filter(|m| n < *m) {
                fail(format!(
                    "Invalid value: {n}: should have at least {min} {noun}"
                ));
            }
        }
        match v {
            Value::String(text) => {
                let chars = text.chars().count() as u64;
                if let Some(max) = count("maxLength").filter(|m| chars > *m) {
                    fail(format!("Too long: may not be more than {max} characters"));
                }
                if let Some(min) = count("minLength").filter(|m| chars < *m) {
                    fail(format!(
                        "Invalid value: {v}: should be at least {min} chars long"
                    ));
                }
                if let Some(p) = s.get("pattern").and_then(Value::as_str)
                    && let Some(Some(re)) = self.patterns.get(p)
                    && !re.is_match(text)
                {
                    fail(format!("Invalid value: {v}: should match '{p}'"));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                if let Some(min) = num("minimum") {
                    let excl = flag("exclusiveMinimum");
                    if x < min || (excl && x == min) {
                        let rel = if excl {
                            "greater than"
                        } else {
                            "greater than or equal to"
                        };
                        fail(format!("Invalid value: {v}: should be {rel} {min}"));
                    }
                }
                if let Some(max) = num("maximum") {
                    let excl = flag("exclusiveMaximum");
                    if x > max || (excl && x == max) {
                        let rel = if excl {
                            "less than"
                        } else {
                            "less than or equal to"
                        };
                        fail(format!("Invalid value: {v}: should be {rel} {max}"));
                    }
                }
                if let Some(m) = num("multipleOf").filter(|m| *m > 0.0)
                    && (x / m).fract() != 0.0
                {
                    fail(format!("Invalid value: {v}: should be a multiple of {m}"));
                }
            }
            Value::Array(items) => {
                if flag("uniqueItems")
                    && let Some(d) =
                        (1..items.len()).find(|&i| items[..i].iter().any(|x| json_eq(x, &items[i])))
                {
                    fail(format!("Duplicate value: {}", items[d]));
                }
            }
            Value::Bool(_) | Value::Null | Value::Object(_) => {}
        }
        self.check_combinators(v, s, path, out);
        let len = path.len();
        match v {
            Value::Object(fields) => {
                let props = s.get("properties").and_then(Value::as_object);
                if let Some(required) = s.get("required").and_then(Value::as_array) {
                    for key in required.iter().filter_map(Value::as_str) {
                        let present = fields.get(key).is_some_and(|x| {
                            !x.is_null() || prop(props, key).is_some_and(is_nullable)
                        });
                        if !present {
                            out.push(Violation::at(&child(path, key), "Required value"));
                        }
                    }
                }
                let extra = s.get("additionalProperties");
                for (key, x) in fields {
                    let sub = match prop(props, key) {
                        Some(p) => Some(p),
                        None => extra.filter(|e| e.is_object()),
                    };
                    let Some(sub) = sub else {
                        if extra == Some(&Value::Bool(false)) {
                            out.push(Violation::at(
                                &child(path, key),
                                "Forbidden: additional properties are not allowed",
                            ));
                        }
                        continue;
                    };
                    if x.is_null() && !is_nullable(sub) {
                        continue;
                    }
                    push_key(path, key);
                    self.check(x, sub, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                if let Some(sub) = s.get("items").filter(|i| i.is_object()) {
                    for (i, x) in items.iter().enumerate() {
                        path.push_str(&format!("[{i}]"));
                        self.check(x, sub, path, out);
                        path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }

    /// `allOf`, `anyOf`, `oneOf` and `not`: value checks only (structural schemas keep types
    /// and properties out of them).
    fn check_combinators(&self, v: &Value, s: &Value, path: &mut String, out: &mut Vec<Violation>) {
        let passes = |sub: &Value, path: &mut String| {
            let mut scratch = Vec::new();
            self.check(v, sub, path, &mut scratch);
            scratch.is_empty()
        };
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(v, sub, path, out);
            }
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array)
            && !any.is_empty()
            && !any.iter().any(|sub| passes(sub, path))
        {
            out.push(Violation::at(
                path,
                "Invalid value: must validate at least one schema (anyOf)",
            ));
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array)
            && !one.is_empty()
            && one.iter().filter(|sub| passes(sub, path)).count() != 1
        {
            out.push(Violation::at(
                path,
                "Invalid value: must validate one and only one schema (oneOf)",
            ));
        }
        if let Some(not) = s.get("not").filter(|n| n.is_object())
            && passes(not, path)
        {
            out.push(Violation::at(
                path,
                "Invalid value: must not validate the schema (not)",
            ));
        }
    }
}

/// Validates `object` against `schema` once (see [`Validator`] for many objects).
pub fn validate(object: &Value, schema: &Value) -> Result<(), SchemaError> {
    Validator::new(schema).validate(object)
}

fn collect_patterns<'s>(s: &'s Value, out: &mut HashMap<&'s str, Option<regex::Regex>>) {
    match s {
        Value::Object(m) => {
            if let Some(p) = m.get("pattern").and_then(Value::as_str) {
                // A pattern the regex engine cannot compile checks nothing here; the API server
                // refuses such a CRD itself.
                out.entry(p).or_insert_with(|| regex::Regex::new(p).ok());
            }
            for (k, v) in m {
                if !matches!(k.as_str(), "enum" | "default" | "example") {
                    collect_patterns(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

/// Records the paths of the fields of `v` that pruning by `s` would drop. `skip`: under
/// `x-kubernetes-preserve-unknown-fields` (apiextensions' `skipPrune`), which carries through
/// arrays down to the next object, whose declared fields are pruned as usual.
fn unknown_fields(
    v: &Value,
    s: Option<&Value>,
    skip: bool,
    root: bool,
    path: &mut String,
    out: &mut Vec<String>,
) {
    let flag = |k: &str| {
        s.and_then(|s| s.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let skip = skip || flag("x-kubernetes-preserve-unknown-fields");
    if skip && s.is_none() {
        return;
    }
    let embedded = root || flag("x-kubernetes-embedded-resource");
    let len = path.len();
    match v {
        Value::Object(fields) => {
            let props = s
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object);
            let extra = s
                .and_then(|s| s.get("additionalProperties"))
                .filter(|e| e.is_object());
            for (key, x) in fields {
                if embedded && is_meta_field(key) {
                    continue;
                }
                push_key(path, key);
                match prop(props, key).or(extra) {
                    Some(sub) => unknown_fields(x, Some(sub), false, false, path, out),
                    None if !skip => out.push(path.clone()),
                    None => {}
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let sub = s.and_then(|s| s.get("items")).filter(|i| i.is_object());
            for (i, x) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                unknown_fields(x, sub, skip, false, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn is_meta_field(key: &str) -> bool {
    matches!(key, "apiVersion" | "kind" | "metadata")
}

fn prop<'a>(props: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    props.and_then(|p| p.get(key)).filter(|p| p.is_object())
}

fn is_nullable(s: &Value) -> bool {
    s.get("nullable").and_then(Value::as_bool).unwrap_or(false)
}

/// `path.key`.
fn child(path: &str, key: &str) -> String {
    let mut p = path.to_string();
    push_key(&mut p, key);
    p
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => is_integer(v),
        _ => true,
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}}},
                "spec": {
                    "type": "object",
                    "required": ["mode"],
                    "properties": {
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "count": {"type": "integer", "minimum": 1, "maximum": 3},
                        "names": {"type": "array", "maxItems": 2, "items": {"type": "string", "pattern": "^[a-z]+$"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                 "properties": {"typed": {"type": "object", "properties": {"x": {"type": "string"}}}}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "maybe": {"type": "string", "nullable": true}
                    }
                },
                "status": {"x-kubernetes-preserve-unknown-fields": true}
            }
        })
    }

    fn check(object: Value) -> Result<(), SchemaError> {
        validate(&object, &schema())
    }

    fn violations(object: Value) -> Vec<String> {
        match check(object) {
            Err(SchemaError::Invalid(v)) => v.iter().map(Violation::to_string).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn an_object_that_fits_passes() {
        let ok = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "ab", "uid": "u", "labels": {"a": "b"}},
            "spec": {"mode": "a", "count": 2, "names": ["x"], "labels": {"k": "v"},
                     "free": {"anything": [1, {"deep": true}]}, "port": 8080, "maybe": null},
            "status": {"whatever": 1}});
        assert_eq!(check(ok), Ok(()));
        assert_eq!(
            check(json!({"spec": {"mode": "b", "port": "http", "count": 3.0}})),
            Ok(())
        );
    }

    #[test]
    fn value_checks_name_the_field_and_the_rule() {
        assert_eq!(
            violations(
                json!({"metadata": {"name": "toolong"}, "spec": {"mode": "c", "count": 0,
                "names": ["ok", "Bad", "x"], "labels": {"k": 1}, "port": true}})
            ),
            vec![
                "metadata.name: Too long: may not be more than 5 characters",
                "spec.count: Invalid value: 0: should be greater than or equal to 1",
                "spec.labels.k: Invalid value: \"number\": must be of type string",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.names: Too many: 3: must have at most 2 items",
                "spec.names[1]: Invalid value: \"Bad\": should match '^[a-z]+$'",
                "spec.port: Invalid value: \"boolean\": must be of type integer or string",
            ]
        );
        assert_eq!(
            violations(json!({"spec": {"names": "x"}})),
            vec![
                "spec.mode: Required value",
                "spec.names: Invalid value: \"string\": must be of type array",
            ]
        );
        assert_eq!(
            violations(json!({"spec": {"mode": "a", "count": 1.5}})),
            vec!["spec.count: Invalid value: \"number\": must be of type integer"]
        );
    }

    #[test]
    fn a_null_field_is_absent_unless_nullable() {
        assert_eq!(check(json!({"spec": {"mode": "a", "count": null}})), Ok(()));
        assert_eq!(
            violations(json!({"spec": {"mode": null}})),
            vec!["spec.mode: Required value"]
        );
        assert_eq!(
            violations(json!({"spec": {"mode": "a", "names": [null]}})),
            vec!["spec.names[0]: Invalid value: \"null\": must be of type string"]
        );
    }

    #[test]
    fn fields_the_schema_does_not_know_are_reported_after_the_value_checks() {
        assert_eq!(
            check(json!({"kind": "K", "metadata": {"anything": 1}, "extra": 1,
                "spec": {"mode": "a", "bogus": {"x": 1}, "free": {"typed": {"x": "y", "z": 1}, "other": 2}}})),
            Err(SchemaError::UnknownFields(vec![
                "extra".into(),
                "spec.bogus".into(),
                "spec.free.typed.z".into(),
            ]))
        );
        // A value problem wins: unknown fields are looked for only in an object that passes.
        assert!(matches!(
            check(json!({"extra": 1, "spec": {}})),
            Err(SchemaError::Invalid(_))
        ));
    }

    #[test]
    fn combinators_and_additional_properties_false() {
        let s = json!({"type": "object", "additionalProperties": false,
            "properties": {"v": {"type": "string", "anyOf": [{"enum": ["a"]}, {"pattern": "^b"}],
                                 "not": {"enum": ["bad"]}}}});
        assert_eq!(validate(&json!({"v": "a"}), &s), Ok(()));
        assert_eq!(validate(&json!({"v": "bx"}), &s), Ok(()));
        let err = validate(&json!({"v": "c", "w": 1}), &s)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("v: Invalid value: must validate at least one schema (anyOf)"),
            "{err}"
        );
        assert!(
            err.contains("w: Forbidden: additional properties are not allowed"),
            "{err}"
        );
        // "bad" matches `^b` (anyOf holds) and the `not` schema.
        let err = validate(&json!({"v": "bad"}), &s).unwrap_err().to_string();
        assert!(!err.contains("anyOf"), "{err}");
        assert!(
            err.contains("v: Invalid value: must not validate the schema (not)"),
            "{err}"
        );
    }
}
