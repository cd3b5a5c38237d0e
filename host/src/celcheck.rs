//! Offline checks of a generated policy's CEL (`vapgen plan`), with the `cel` crate's parser
//! (cel-rust). The API server compiles and type-checks every expression when the policy is
//! written; these checks find, before that, the mistakes that need no type information:
//!
//! * **syntax**: every expression parses (`validations[].expression` and
//!   `messageExpression`, `matchConditions`, `variables`, `auditAnnotations[].valueExpression`);
//! * **variables**: every free identifier is one the API server declares for a VAP (`object`,
//!   `oldObject`, `request`, `params`, `namespaceObject`, `authorizer`, `variables`), a
//!   comprehension's own variable, a type name or a library namespace; every
//!   `variables.NAME` is a variable the policy declares (errors, as the API server's
//!   "undeclared reference");
//! * **known functions**: every function or method is in the Kubernetes CEL environment's
//!   libraries as of Kubernetes 1.34 (CEL's standard library, strings, lists, sets, regex,
//!   URLs, authorizer, quantity, IP/CIDR, semver, format, math, base64, optionals, two-variable
//!   comprehensions). An unknown name is a **warning**, not an error: the list is ours, and
//!   the API server is the authority.
//!
//! Types (field names, operand types, overloads) are not checked: `vapgen plan
//! --validate=server` ([`crate::validate`]) has the API server compile every expression.

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr, IdedExpr};
use serde_json::Value;

/// What the checks found in one policy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Expressions the API server would refuse, with where they are.
    pub errors: Vec<String>,
    /// Names the checker does not know.
    pub warnings: Vec<String>,
}

/// The variables the API server declares for a ValidatingAdmissionPolicy's expressions.
#[rustfmt::skip]
const ROOTS: &[&str] = &[
    "object", "oldObject", "request", "params", "namespaceObject", "authorizer", "variables",
];

/// Identifiers that are types or library namespaces rather than variables.
#[rustfmt::skip]
const NAMESPACES_AND_TYPES: &[&str] = &[
    "int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type",
    "dyn", "optional", "sets", "lists", "math", "strings", "base64", "format", "google",
];

/// Macros: their first arguments are the variables they bind.
#[rustfmt::skip]
const MACROS: &[&str] = &[
    "all", "exists", "exists_one", "existsOne", "map", "filter", "transformList",
    "transformMap", "transformMapEntry", "sortBy",
];

/// Functions and methods of the Kubernetes CEL environment (CEL standard library and the
/// extension libraries Kubernetes enables), by name.
#[rustfmt::skip]
const FUNCTIONS: &[&str] = &[
    // standard: conversions, size, time, strings
    "size", "int", "uint", "double", "string", "bytes", "bool", "type", "dyn", "duration",
    "timestamp", "matches", "startsWith", "endsWith", "contains", "getFullYear", "getMonth",
    "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes",
    "getSeconds", "getMilliseconds",
    // macros as the parser may leave them, and two-variable comprehensions
    "has", "all", "exists", "exists_one", "existsOne", "map", "filter", "transformList",
    "transformMap", "transformMapEntry",
    // strings extension
    "charAt", "indexOf", "lastIndexOf", "lowerAscii", "upperAscii", "replace", "split",
    "substring", "trim", "join", "format", "quote", "reverse",
    // lists (Kubernetes and CEL extension)
    "isSorted", "sum", "min", "max", "range", "distinct", "flatten", "slice", "sort", "sortBy",
    "first", "last",
    // sets
    "equivalent", "intersects",
    // regex
    "find", "findAll",
    // URLs
    "url", "isURL", "getScheme", "getHost", "getHostname", "getPort", "getEscapedPath",
    "getQuery",
    // authorizer
    "path", "group", "serviceAccount", "resource", "subresource", "namespace", "name", "check",
    "allowed", "reason", "errored", "error", "fieldSelector", "labelSelector",
    // quantity
    "quantity", "isQuantity", "sign", "isGreaterThan", "isLessThan", "compareTo", "add", "sub",
    "asInteger", "isInteger", "asApproximateFloat",
    // IP and CIDR
    "ip", "isIP", "isCanonical", "family", "isUnspecified", "isLoopback",
    "isLinkLocalMulticast", "isLinkLocalUnicast", "isGlobalUnicast", "cidr", "isCIDR",
    "containsIP", "containsCIDR", "masked", "prefixLength",
    // semver
    "semver", "isSemver", "major", "minor", "patch",
    // format
    "named", "validate", "dns1123Label", "dns1123Subdomain", "dns1035Label", "qualifiedName",
    "dns1123LabelPrefix", "dns1123SubdomainPrefix", "dns1035LabelPrefix", "labelValue", "uri",
    "uuid", "byte", "date", "datetime",
    // math
    "greatest", "least", "ceil", "floor", "round", "trunc", "abs", "isNaN", "isInf", "isFinite",
    "bitAnd", "bitOr", "bitXor", "bitNot", "bitShiftLeft", "bitShiftRight", "sqrt",
    // base64
    "encode", "decode",
    // optionals
    "of", "none", "ofNonZeroValue", "hasValue", "value", "orValue", "or", "optMap",
    "optFlatMap",
];

/// Checks every expression of a rendered policy (`spec` of a ValidatingAdmissionPolicy).
pub fn check_policy(policy: &Value) -> Findings {
    let mut f = Findings::default();
    let spec = policy.get("spec").unwrap_or(&Value::Null);
    let list = |key: &str| {
        spec.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let declared: BTreeSet<String> = list("variables")
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut each = |section: &str, items: Vec<Value>, fields: &[&str]| {
        for (i, item) in items.iter().enumerate() {
            for field in fields {
                if let Some(text) = item.get(*field).and_then(Value::as_str) {
                    let label = match item.get("name").and_then(Value::as_str) {
                        Some(n) => format!("{section}[{i}] ({n}).{field}"),
                        None => format!("{section}[{i}].{field}"),
                    };
                    check_expression(&label, text, &declared, &mut f);
                }
            }
        }
    };
    each("variables", list("variables"), &["expression"]);
    each(
        "validations",
        list("validations"),
        &["expression", "messageExpression"],
    );
    each("matchConditions", list("matchConditions"), &["expression"]);
    each(
        "auditAnnotations",
        list("auditAnnotations"),
        &["valueExpression"],
    );
    f
}

/// Checks one expression; `label` says where it is.
pub fn check_expression(label: &str, text: &str, declared: &BTreeSet<String>, f: &mut Findings) {
    let expr = match cel::parser::Parser::new().parse(text) {
        Ok(e) => e,
        Err(e) => {
            f.errors.push(format!("{label}: CEL syntax error: {e}"));
            return;
        }
    };
    let mut w = Walker {
        label,
        declared,
        bound: Vec::new(),
        findings: f,
    };
    w.walk(&expr);
}

struct Walker<'a> {
    label: &'a str,
    declared: &'a BTreeSet<String>,
    bound: Vec<String>,
    findings: &'a mut Findings,
}

impl Walker<'_> {
    fn walk(&mut self, e: &IdedExpr) {
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                if let Expr::Ident(root) = &s.operand.expr
                    && root == "variables"
                    && !self.is_bound("variables")
                {
                    if !self.declared.contains(&s.field) {
                        self.findings.errors.push(format!(
                            "{}: undeclared reference to variables.{} (the policy declares {})",
                            self.label,
                            s.field,
                            if self.declared.is_empty() {
                                "no variables".to_owned()
                            } else {
                                self.declared.iter().cloned().collect::<Vec<_>>().join(", ")
                            }
                        ));
                    }
                    return;
                }
                self.walk(&s.operand);
            }
            Expr::Call(c) => {
                let operator = c.func_name.starts_with('_')
                    || c.func_name.starts_with('@')
                    || c.func_name.starts_with('!')
                    || c.func_name.starts_with('-');
                let name = c.func_name.rsplit('.').next().unwrap_or(&c.func_name);
                if !operator && !FUNCTIONS.contains(&name) {
                    let w = format!(
                        "{}: unknown function {} (not in vapgen's list of the Kubernetes CEL libraries; the API server decides)",
                        self.label, c.func_name
                    );
                    if !self.findings.warnings.contains(&w) {
                        self.findings.warnings.push(w);
                    }
                }
                if let Some(t) = &c.target {
                    self.walk(t);
                }
                // A macro the parser did not expand (two-variable comprehensions such as
                // `m.exists(k, v, …)`, `transformList(i, v, …)`): its leading identifiers
                // are the variables it binds.
                let n = self.bound.len();
                let mut args = c.args.as_slice();
                if c.target.is_some() && MACROS.contains(&name) {
                    while let [
                        IdedExpr {
                            expr: Expr::Ident(v),
                            ..
                        },
                        rest @ ..,
                    ] = args
                        && !rest.is_empty()
                    {
                        self.bound.push(v.clone());
                        args = rest;
                    }
                }
                for a in args {
                    self.walk(a);
                }
                self.bound.truncate(n);
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range);
                self.walk(&c.accu_init);
                let n = self.bound.len();
                self.bound.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    self.bound.push(v2.clone());
                }
                self.bound.push(c.accu_var.clone());
                self.walk(&c.loop_cond);
                self.walk(&c.loop_step);
                self.walk(&c.result);
                self.bound.truncate(n);
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.walk(x)),
            Expr::Map(m) => self.entries(&m.entries),
            Expr::Struct(st) => self.entries(&st.entries),
        }
    }

    fn entries(&mut self, entries: &[IdedEntryExpr]) {
        for entry in entries {
            match &entry.expr {
                EntryExpr::StructField(field) => self.walk(&field.value),
                EntryExpr::MapEntry(me) => {
                    self.walk(&me.key);
                    self.walk(&me.value);
                }
            }
        }
    }

    fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|b| b == name)
    }

    fn ident(&mut self, name: &str) {
        if name.starts_with('@')
            || self.is_bound(name)
            || ROOTS.contains(&name)
            || NAMESPACES_AND_TYPES.contains(&name)
        {
            return;
        }
        let e = format!(
            "{}: undeclared reference to {name:?} (a VAP expression has object, oldObject, request, params, namespaceObject, authorizer and variables)",
            self.label
        );
        if !self.findings.errors.contains(&e) {
            self.findings.errors.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(validation: &str) -> Findings {
        check_policy(&json!({"spec": {
            "variables": [{"name": "params", "expression": "params.spec"}, {"name": "missing", "expression": "[1].filter(k, k > 0)"}],
            "validations": [{"expression": validation}],
        }}))
    }

    #[test]
    fn valid_expressions_pass() {
        for ok in [
            "size(variables.missing) == 0",
            "object.metadata.labels.all(k, k.startsWith('a')) && has(object.spec)",
            "variables.params.labels.filter(k, !(k in object.metadata.labels)).size() < 2",
            "[1, 2].exists(x, x == 1) ? 'a'.lowerAscii() : string(1)",
            "type(object) == map && optional.of(1).hasValue()",
            "{'a': 1}.exists(k, v, v > 0) || quantity('1Gi').isGreaterThan(quantity('1Mi'))",
        ] {
            let f = findings(ok);
            assert_eq!(f, Findings::default(), "{ok}");
        }
    }

    #[test]
    fn syntax_errors_are_errors() {
        let f = findings("object.metadata.name ==");
        assert_eq!(f.errors.len(), 1, "{f:?}");
        assert!(
            f.errors[0].contains("validations[0].expression: CEL syntax error"),
            "{f:?}"
        );
    }

    #[test]
    fn undeclared_variables_are_errors() {
        let f = findings("size(variables.nope) == 0 && obj.x == 1");
        assert_eq!(f.errors.len(), 2, "{f:?}");
        assert!(f.errors[0].contains("variables.nope"), "{f:?}");
        assert!(f.errors[1].contains("\"obj\""), "{f:?}");
        // a comprehension's variable is not free outside it
        let f = findings("[1].all(x, x > 0) && x == 1");
        assert_eq!(f.errors.len(), 1, "{f:?}");
    }

    #[test]
    fn unknown_functions_are_warnings() {
        let f = findings("object.metadata.name.frobnicate()");
        assert!(f.errors.is_empty(), "{f:?}");
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        assert!(f.warnings[0].contains("frobnicate"), "{f:?}");
    }
}
