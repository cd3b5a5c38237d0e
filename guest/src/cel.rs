//! The CEL text vapgen writes into the VAP: the internal match conditions (§4.3) and the two
//! built-in variables (§4.4).
//!
//! The match conditions follow the semantics of **Gatekeeper's own webhook matcher**, not those
//! of Gatekeeper's generated VAP (fixing [DIV] 1 and 2 of §4.3):
//!
//! * a `Namespace` object (`request.kind` group `""`, kind `Namespace`) is matched by its own
//!   `metadata.name` against `namespaces` / `excludedNamespaces`;
//! * other cluster-scoped objects (no `metadata.namespace`) pass the namespace conditions;
//! * an explicitly empty list (`kinds: []`, `namespaces: []`, `excludedNamespaces: []`) or
//!   `name: ""` means "no restriction";
//! * "some obj" means: some non-null `obj` in `[object, oldObject]` (DELETE has a null
//!   `object`, CREATE a null `oldObject`).
//!
//! Patterns are Gatekeeper wildcards, matched exactly (see [`glob`]); no regular expressions
//! are built from user text. In a VAP match condition `params` is the whole constraint object
//! (unstructured), so every level is guarded with `has()`. Match conditions cannot see
//! `variables`; values are bound to names with the one-element-list idiom
//! `[value].exists(name, …)`, which works in every CEL environment.
//!
//! Only the standard CEL library and the `strings` extension (`substring`), both part of the
//! Kubernetes CEL environment, are used. The expressions were checked with the Kubernetes
//! 1.34 VAP match-condition compiler and evaluator (see the crate's tests/README).
//!
//! The fixed expressions are assembled at compile time with `concat!` (no run-time string
//! building, nothing to allocate); only the scope-sync conditions embed run-time lists.

use crate::text::join;

/// Name of the excluded-namespaces condition.
pub const EXCLUDED_NAMESPACES: &str = "gatekeeper_internal_match_excluded_namespaces";
/// Name of the namespaces condition.
pub const NAMESPACES: &str = "gatekeeper_internal_match_namespaces";
/// Name of the name condition.
pub const NAME: &str = "gatekeeper_internal_match_name";
/// Name of the kinds condition.
pub const KINDS: &str = "gatekeeper_internal_match_kinds";
/// Name of the global (Config) excluded-namespaces condition.
pub const GLOBAL_EXCLUDED: &str = "gatekeeper_internal_match_global_excluded_namespaces";
/// Name of the global exempted-namespaces condition.
pub const GLOBAL_EXEMPTED: &str = "gatekeeper_internal_match_global_exempted_namespaces";

/// Gatekeeper's wildcard match of candidate `c` against pattern `p` (two CEL identifiers
/// bound to strings), exactly as Gatekeeper's `wildcard.Matches`:
///
/// * `*x*` → `c` contains `x` (`*` and `**` match everything);
/// * `*x` → `c` ends with `x`;
/// * `x*` → `c` starts with `x`;
/// * otherwise `c == p`.
macro_rules! glob {
    ($p:literal, $c:literal) => {
        concat!(
            "(",
            $p,
            ".startsWith(\"*\") ? ((",
            $p,
            ".endsWith(\"*\") && size(",
            $p,
            ") > 1) ? ",
            $c,
            ".contains(",
            $p,
            ".substring(1, size(",
            $p,
            ") - 1)) : ",
            $c,
            ".endsWith(",
            $p,
            ".substring(1))) : (",
            $p,
            ".endsWith(\"*\") ? ",
            $c,
            ".startsWith(",
            $p,
            ".substring(0, size(",
            $p,
            ") - 1)) : ",
            $c,
            " == ",
            $p,
            "))"
        )
    };
}

/// True when the request is about a `Namespace` object (core group).
macro_rules! is_namespace_request {
    () => {
        "request.kind.group == \"\" && request.kind.kind == \"Namespace\""
    };
}

/// The namespace that namespace patterns are compared with, for the object bound to `obj`:
/// a Namespace's own name; otherwise `metadata.namespace`; `""` when absent (cluster-scoped).
macro_rules! object_namespace {
    () => {
        concat!(
            is_namespace_request!(),
            " ? (has(obj.metadata) && has(obj.metadata.name) ? obj.metadata.name : \"\") : ",
            "(has(obj.metadata) && has(obj.metadata.namespace) ? obj.metadata.namespace : \"\")"
        )
    };
}

/// The opening of "for some non-null obj in `[object, oldObject]`, with its namespace bound
/// to `ns`, …"; the body follows, then `))`.
macro_rules! some_object_namespace_open {
    () => {
        concat!(
            "[object, oldObject].exists(obj, obj != null && [",
            object_namespace!(),
            "].exists(ns, "
        )
    };
}

/// True when `params.spec.match.<field>` is absent (at any level), or is an empty list or
/// empty string: "no restriction", as in Gatekeeper's webhook.
macro_rules! unrestricted {
    ($f:literal) => {
        concat!(
            "!has(params.spec) || !has(params.spec.match) || !has(params.spec.match.",
            $f,
            ") || ",
            "size(params.spec.match.",
            $f,
            ") == 0"
        )
    };
}

/// `gatekeeper_internal_match_excluded_namespaces`: true when `excludedNamespaces` is
/// absent or empty, or for some obj: it is cluster-scoped (not a Namespace), or its
/// namespace (a Namespace's own name) matches no pattern.
pub const MATCH_EXCLUDED_NAMESPACES: &str = concat!(
    unrestricted!("excludedNamespaces"),
    " || ",
    some_object_namespace_open!(),
    "ns == \"\" || !params.spec.match.excludedNamespaces.exists(p, ",
    glob!("p", "ns"),
    ")))"
);

/// `gatekeeper_internal_match_namespaces`: true when `namespaces` is absent or empty, or
/// for some obj: it is cluster-scoped (not a Namespace), or its namespace (a Namespace's own
/// name) matches some pattern.
pub const MATCH_NAMESPACES: &str = concat!(
    unrestricted!("namespaces"),
    " || ",
    some_object_namespace_open!(),
    "ns == \"\" || params.spec.match.namespaces.exists(p, ",
    glob!("p", "ns"),
    ")))"
);

/// `gatekeeper_internal_match_name`: true when `name` is absent or `""`, or for some obj:
/// its `generateName` is non-empty, the pattern ends with `*` and `generateName` matches
/// it; or its `metadata.name` (`""` when absent) matches the pattern.
pub const MATCH_NAME: &str = concat!(
    unrestricted!("name"),
    " || [object, oldObject].exists(obj, obj != null && [params.spec.match.name].exists(p, ",
    "(p.endsWith(\"*\") && has(obj.metadata) && has(obj.metadata.generateName) && ",
    "[obj.metadata.generateName].exists(g, g != \"\" && ",
    glob!("p", "g"),
    ")) || ",
    "[has(obj.metadata) && has(obj.metadata.name) ? obj.metadata.name : \"\"].exists(n, ",
    glob!("p", "n"),
    ")))"
);

/// `gatekeeper_internal_match_kinds`: true when `kinds` is absent or empty, or some entry
/// matches both the request's kind (its `kinds` absent, empty, containing `*` or
/// `request.kind.kind`) and group (its `apiGroups` absent, empty, containing `*` or
/// `request.kind.group`).
pub const MATCH_KINDS: &str = concat!(
    unrestricted!("kinds"),
    " || params.spec.match.kinds.exists(k, ",
    "(!has(k.kinds) || size(k.kinds) == 0 || \"*\" in k.kinds || request.kind.kind in k.kinds) && ",
    "(!has(k.apiGroups) || size(k.apiGroups) == 0 || \"*\" in k.apiGroups || request.kind.group in k.apiGroups))"
);

/// The `anyObject` variable: `oldObject` on a DELETE (where `object` is null), `object`
/// otherwise. Byte for byte Gatekeeper v3.23.1's text (`BindObjectV1Beta1` in
/// `pkg/drivers/k8scel/transform/cel_snippets.go`, `has()` guard included), so a VAP that
/// Gatekeeper generated differs from vapgen's only where vapgen chooses to differ.
pub const ANY_OBJECT: &str = "has(request.operation) && request.operation == \"DELETE\" && object == null ? oldObject : object";

/// The `params` variable: the constraint's `spec.parameters`, or null when `spec` or
/// `spec.parameters` is absent. Byte for byte Gatekeeper v3.23.1's text (`BindParamsV1Beta1`,
/// including its `? null:` without a space).
pub const PARAMS: &str =
    "!has(params.spec) ? null : !has(params.spec.parameters) ? null: params.spec.parameters";

/// A CEL double-quoted string literal for `s`. JSON's escaping is valid CEL: `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\b`, `\f` and `\u00XX` for other control characters; everything else
/// verbatim (CEL source is UTF-8).
pub fn string_literal(s: &str) -> String {
    crate::json::quote(s)
}

/// A CEL list literal of string literals, e.g. `["a", "b"]`.
pub fn string_list_literal<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| string_literal(s.as_ref())).collect();
    ["[", &join(&items, ", "), "]"].concat()
}

/// `gatekeeper_internal_match_global_excluded_namespaces` over the Config resource's
/// patterns for the `webhook` process (sorted, de-duplicated, embedded as literals): true
/// when, for some obj, it is cluster-scoped (not a Namespace) or its namespace (a Namespace's
/// own name) matches no pattern.
pub fn match_global_excluded(patterns: &[String]) -> String {
    [
        concat!(some_object_namespace_open!(), "ns == \"\" || !"),
        &string_list_literal(patterns),
        concat!(".exists(p, ", glob!("p", "ns"), ")))"),
    ]
    .concat()
}

/// `gatekeeper_internal_match_global_exempted_namespaces` over the exempt-namespace flags
/// (sorted, de-duplicated, embedded as literals), as Gatekeeper writes it: true when, for
/// some obj, it is cluster-scoped (not a Namespace); or its namespace matches no pattern; or
/// it is a Namespace (matched by its own name) without the `admission.gatekeeper.sh/ignore`
/// label. The label is not checked for namespaced objects.
pub fn match_global_exempted(patterns: &[String]) -> String {
    [
        concat!(some_object_namespace_open!(), "ns == \"\" || !"),
        &string_list_literal(patterns),
        concat!(
            ".exists(p, ",
            glob!("p", "ns"),
            ") || (",
            is_namespace_request!(),
            " && !(has(obj.metadata.labels) && \"admission.gatekeeper.sh/ignore\" in obj.metadata.labels))))"
        ),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_escape() {
        assert_eq!(string_literal("kube-system"), r#""kube-system""#);
        assert_eq!(string_literal(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(string_literal("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(string_literal("\u{1}\u{8}"), r#""\u0001\b""#);
        assert_eq!(string_literal("é"), "\"é\"");
        assert_eq!(string_literal("' ${x}"), r#""' ${x}""#);
        assert_eq!(string_list_literal(&["a", "b*"]), r#"["a", "b*"]"#);
        assert_eq!(string_list_literal::<&str>(&[]), "[]");
    }

    #[test]
    fn glob_is_exact_not_regex() {
        let g = glob!("p", "ns");
        assert_eq!(
            g,
            r#"(p.startsWith("*") ? ((p.endsWith("*") && size(p) > 1) ? ns.contains(p.substring(1, size(p) - 1)) : ns.endsWith(p.substring(1))) : (p.endsWith("*") ? ns.startsWith(p.substring(0, size(p) - 1)) : ns == p))"#
        );
        assert!(!g.contains("matches("), "no regular expressions");
    }

    /// A tiny model of the glob expression, evaluated the way CEL would, to check its
    /// semantics against Gatekeeper's wildcard rules on sample patterns.
    fn glob_model(p: &str, c: &str) -> bool {
        let chars: Vec<char> = p.chars().collect();
        let sub = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
        if p.starts_with('*') {
            if p.ends_with('*') && chars.len() > 1 {
                c.contains(&sub(1, chars.len() - 1))
            } else {
                c.ends_with(&sub(1, chars.len()))
            }
        } else if p.ends_with('*') {
            c.starts_with(&sub(0, chars.len() - 1))
        } else {
            c == p
        }
    }

    #[test]
    fn glob_semantics() {
        let cases = [
            ("kube-*", "kube-system", true),
            ("kube-*", "kube-", true),
            ("kube-*", "mykube-system", false),
            ("*-system", "kube-system", true),
            ("*-system", "kube-systems", false),
            ("*mid*", "a-mid-b", true),
            ("*mid*", "mid", true),
            ("*mid*", "mi-d", false),
            ("*", "", true),
            ("*", "anything", true),
            ("**", "anything", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
            ("a.b", "axb", false), // a dot is not a regex wildcard
            ("kube.*", "kubeXsystem", false),
        ];
        for (p, c, want) in cases {
            assert_eq!(glob_model(p, c), want, "glob({p:?}, {c:?})");
        }
    }

    #[test]
    fn namespace_conditions_use_the_namespace_name_for_namespace_objects() {
        for expr in [MATCH_NAMESPACES, MATCH_EXCLUDED_NAMESPACES] {
            assert!(expr.contains(
                r#"request.kind.group == "" && request.kind.kind == "Namespace" ? (has(obj.metadata) && has(obj.metadata.name) ? obj.metadata.name : "")"#
            ));
            assert!(
                expr.contains("ns == \"\" || "),
                "cluster-scoped objects pass"
            );
            assert!(expr.starts_with("!has(params.spec) || !has(params.spec.match) || "));
            assert!(expr.contains("[object, oldObject].exists(obj, obj != null && "));
        }
    }

    #[test]
    fn empty_lists_mean_no_restriction() {
        assert!(MATCH_NAMESPACES.contains("size(params.spec.match.namespaces) == 0 || "));
        assert!(
            MATCH_EXCLUDED_NAMESPACES
                .contains("size(params.spec.match.excludedNamespaces) == 0 || ")
        );
        assert!(MATCH_KINDS.contains("size(params.spec.match.kinds) == 0 || "));
        assert!(MATCH_NAME.contains("size(params.spec.match.name) == 0 || "));
        assert!(MATCH_KINDS.contains("!has(k.kinds) || size(k.kinds) == 0 || "));
        assert!(MATCH_KINDS.contains("!has(k.apiGroups) || size(k.apiGroups) == 0 || "));
    }

    #[test]
    fn excluded_negates_and_namespaces_does_not() {
        assert!(
            MATCH_EXCLUDED_NAMESPACES.contains("!params.spec.match.excludedNamespaces.exists(p, ")
        );
        assert!(MATCH_NAMESPACES.contains(" || params.spec.match.namespaces.exists(p, "));
    }

    #[test]
    fn name_condition_handles_generate_name() {
        let e = MATCH_NAME;
        assert!(
            e.contains(r#"p.endsWith("*") && has(obj.metadata) && has(obj.metadata.generateName)"#)
        );
        assert!(e.contains(r#"g != "" && "#));
        assert!(e.contains(glob!("p", "n")));
    }

    #[test]
    fn global_conditions_embed_literals() {
        let pats = vec!["kube-system".to_string(), "monitoring-*".to_string()];
        let e = match_global_excluded(&pats);
        assert!(e.contains(r#"!["kube-system", "monitoring-*"].exists(p, "#));
        let e = match_global_exempted(&["a\"b".to_string()]);
        assert!(e.contains(r#"!["a\"b"].exists(p, "#));
        assert!(e.contains(r#""admission.gatekeeper.sh/ignore" in obj.metadata.labels"#));
    }

    #[test]
    fn balanced_parentheses_and_brackets() {
        let pats = vec!["x".to_string()];
        for e in [
            MATCH_EXCLUDED_NAMESPACES.to_string(),
            MATCH_NAMESPACES.to_string(),
            MATCH_NAME.to_string(),
            MATCH_KINDS.to_string(),
            match_global_excluded(&pats),
            match_global_exempted(&pats),
            ANY_OBJECT.to_string(),
            PARAMS.to_string(),
        ] {
            let mut depth = 0i32;
            let mut in_str = false;
            let mut esc = false;
            for c in e.chars() {
                if in_str {
                    match (esc, c) {
                        (true, _) => esc = false,
                        (false, '\\') => esc = true,
                        (false, '"') => in_str = false,
                        _ => {}
                    }
                    continue;
                }
                match c {
                    '"' => in_str = true,
                    '(' | '[' => depth += 1,
                    ')' | ']' => depth -= 1,
                    _ => {}
                }
                assert!(depth >= 0, "{e}");
            }
            assert_eq!(depth, 0, "{e}");
            assert!(!in_str, "{e}");
        }
    }
}
