//! The template decision (§2.1, rows T1–T7): Gatekeeper's `ShouldGenerateVAP`, plus the
//! metadata rules that make Gatekeeper refuse a template before it gets there (test 36).

use crate::json::{Value, quote};
use crate::model::{Settings, SkipReason, TemplateDecision};
use crate::source::{self, Source};
use crate::text::{fill, must_be, num};

/// The engine name of the CEL code entry.
pub const CEL_ENGINE: &str = "K8sNativeValidation";

/// Gatekeeper's one target (its `K8sValidationTarget`).
pub const TARGET: &str = "admission.k8s.gatekeeper.sh";

/// The `NotApplicable` message (the same text Gatekeeper writes to constraint status, B3).
pub const ENGINE_MISSING: &str = "K8sNativeValidation engine is missing";

const API_VERSIONS: [&str; 3] = [
    "templates.gatekeeper.sh/v1",
    "templates.gatekeeper.sh/v1beta1",
    "templates.gatekeeper.sh/v1alpha1",
];

/// What the plan needs to know about a template.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis<'a> {
    /// `metadata.name` ("" when absent or not a string).
    pub name: String,
    /// `spec.crd.spec.names.kind` ("" when absent or not a string).
    pub kind: String,
    /// `metadata.uid`, when present and non-empty.
    pub uid: Option<String>,
    /// The decision.
    pub decision: TemplateDecision,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
    /// The parsed CEL source, when it is valid.
    pub source: Option<Source>,
    /// `spec.targets[0].operations` as written (used only by scope sync).
    pub operations: Option<&'a Value>,
}

fn str_at(doc: &Value, path: &[&str]) -> String {
    doc.pointer(path)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Reads the template's identity and decides (rows T1–T7; the first failing check wins).
pub fn analyze<'a>(settings: &Settings, doc: &'a Value) -> Analysis<'a> {
    let mut a = Analysis {
        name: str_at(doc, &["metadata", "name"]),
        kind: str_at(doc, &["spec", "crd", "spec", "names", "kind"]),
        uid: Some(str_at(doc, &["metadata", "uid"])).filter(|u| !u.is_empty()),
        decision: TemplateDecision::Generate,
        warnings: Vec::new(),
        source: None,
        operations: None,
    };
    a.decision = match decide(settings, doc, &mut a) {
        Ok(d) | Err(d) => d,
    };
    a
}

/// Runs the checks in order; `Err` carries an early (non-Generate) decision.
fn decide<'a>(
    settings: &Settings,
    doc: &'a Value,
    a: &mut Analysis<'a>,
) -> Result<TemplateDecision, TemplateDecision> {
    check_type(doc).map_err(TemplateDecision::Error)?;
    check_identity(&a.name, &a.kind).map_err(TemplateDecision::Error)?;
    let target = single_target(doc).map_err(TemplateDecision::Error)?;
    a.operations = target.get("operations").filter(|v| **v != Value::Null);
    check_operations(a.operations).map_err(TemplateDecision::Error)?;
    let entry = cel_entry(target)?;
    let src =
        source::parse(entry.get("source"), &mut a.warnings).map_err(TemplateDecision::Error)?;
    let decision = match src.generate_vap {
        Some(true) => TemplateDecision::Generate,
        Some(false) => TemplateDecision::Skip(SkipReason::OptedOut),
        None if settings.default_create_vap_for_templates => TemplateDecision::Generate,
        None => TemplateDecision::Skip(SkipReason::FlagDefault),
    };
    a.source = Some(src);
    Ok(decision)
}

/// `apiVersion` and `kind`, when present, must be those of a ConstraintTemplate.
fn check_type(doc: &Value) -> Result<(), String> {
    if let Some(v) = doc.get("apiVersion")
        && !v.as_str().is_some_and(|s| API_VERSIONS.contains(&s))
    {
        return Err(fill(
            "apiVersion must be one of {list}, got {got}",
            &[
                (
                    "list",
                    "templates.gatekeeper.sh/v1, templates.gatekeeper.sh/v1beta1, \
                     templates.gatekeeper.sh/v1alpha1",
                ),
                ("got", &v.to_json()),
            ],
        ));
    }
    if let Some(v) = doc.get("kind")
        && v.as_str() != Some("ConstraintTemplate")
    {
        return Err(fill(
            "kind must be ConstraintTemplate, got {got}",
            &[("got", &v.to_json())],
        ));
    }
    Ok(())
}

/// Gatekeeper's `validateTemplateMetadata`: a non-empty kind, and `metadata.name` equal to
/// `lower(kind)`; otherwise no CRD is created and nothing is generated.
fn check_identity(name: &str, kind: &str) -> Result<(), String> {
    if kind.is_empty() {
        return Err(
            "spec.crd.spec.names.kind is empty or missing: a ConstraintTemplate needs \
             the kind of its constraints"
                .to_string(),
        );
    }
    if !kind.is_ascii() {
        return Err(fill(
            "spec.crd.spec.names.kind {kind} must be ASCII (a CRD kind is a DNS-1035 label)",
            &[("kind", &quote(kind))],
        ));
    }
    let lower = kind.to_ascii_lowercase();
    // The constraint CRD's names (frameworks' CreateCRD): plural and singular are lower(kind),
    // listKind is kind + "List"; the API server requires each, lowercased, to be a DNS-1035
    // label, so the longest kind is 59 characters.
    let list = fill("{lower}list", &[("lower", &lower)]);
    if !dns1035_label(&lower) || !dns1035_label(&list) {
        return Err(fill(
            "spec.crd.spec.names.kind {kind} cannot name a CRD: lowercased, it and its list \
             kind {list} must be DNS-1035 labels (a letter, then letters, digits or '-', not \
             ending in '-', at most 63 characters), so a kind has at most 59",
            &[("kind", &quote(kind)), ("list", &quote(&list))],
        ));
    }
    if name != lower {
        return Err(fill(
            "metadata.name {name} must be the lowercase of spec.crd.spec.names.kind, {lower}",
            &[("name", &quote(name)), ("lower", &quote(&lower))],
        ));
    }
    Ok(())
}

/// Gatekeeper's admission webhook (`validateTemplate`) refuses `*` next to other operations.
fn check_operations(ops: Option<&Value>) -> Result<(), String> {
    if let Some(Value::Array(items)) = ops
        && items.len() > 1
        && items.iter().any(|o| o.as_str() == Some("*"))
    {
        return Err(
            "spec.targets[0].operations: \"*\" must be the only operation when present \
             (Gatekeeper's webhook refuses the template)"
                .to_string(),
        );
    }
    Ok(())
}

/// A DNS-1035 label: `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// T1: exactly one target, and it is Gatekeeper's admission target (frameworks' client knows
/// no other: CreateCRD refuses the template, so Gatekeeper never makes its CRD).
fn single_target(doc: &Value) -> Result<&Value, String> {
    let t = one_target(doc)?;
    match t.get("target").and_then(Value::as_str) {
        Some(TARGET) => Ok(t),
        _ => Err(fill(
            "spec.targets[0].target must be {want}, got {got}: Gatekeeper has no other target",
            &[
                ("want", &quote(TARGET)),
                (
                    "got",
                    &t.get("target")
                        .map_or("nothing".to_string(), Value::to_json),
                ),
            ],
        )),
    }
}

fn one_target(doc: &Value) -> Result<&Value, String> {
    let targets = match doc.pointer(&["spec", "targets"]) {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(must_be("spec.targets", "a list", v));
        }
    };
    match targets {
        [t @ Value::Object(_)] => Ok(t),
        [t] => Err(must_be("spec.targets[0]", "an object", t)),
        _ => Err(fill(
            "exactly one target is allowed in spec.targets, found {n}",
            &[("n", &num(targets.len()))],
        )),
    }
}

/// T2: the one code entry whose engine is `K8sNativeValidation`.
fn cel_entry(target: &Value) -> Result<&Value, TemplateDecision> {
    let code = match target.get("code") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(TemplateDecision::Error(must_be(
                "spec.targets[0].code",
                "a list",
                v,
            )));
        }
    };
    let mut found = None;
    for (i, entry) in code.iter().enumerate() {
        if !matches!(entry, Value::Object(_)) {
            let path = fill("spec.targets[0].code[{i}]", &[("i", &num(i))]);
            return Err(TemplateDecision::Error(must_be(&path, "an object", entry)));
        }
        if entry.get("engine").and_then(Value::as_str) == Some(CEL_ENGINE) {
            if found.is_some() {
                return Err(TemplateDecision::Error(
                    "spec.targets[0].code has more than one K8sNativeValidation entry".to_string(),
                ));
            }
            found = Some(entry);
        }
    }
    found.ok_or_else(|| TemplateDecision::NotApplicable(ENGINE_MISSING.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    const CEL: &str =
        r#"{"engine":"K8sNativeValidation","source":{"validations":[{"expression":"true"}]}}"#;
    const REGO: &str = r#"{"engine":"Rego","source":{"rego":"package x"}}"#;

    fn template(code: &str) -> String {
        format!(
            r#"{{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate",
                "metadata":{{"name":"k8sfoo"}},
                "spec":{{"crd":{{"spec":{{"names":{{"kind":"K8sFoo"}}}}}},
                         "targets":[{{"target":"admission.k8s.gatekeeper.sh","code":[{code}]}}]}}}}"#
        )
    }

    fn with_generate(value: &str) -> String {
        template(&format!(
            r#"{{"engine":"K8sNativeValidation","source":{{"generateVAP":{value},"validations":[{{"expression":"true"}}]}}}}"#
        ))
    }

    fn decide_with(flag: bool, doc: &str) -> TemplateDecision {
        let settings = Settings {
            default_create_vap_for_templates: flag,
            ..Settings::default()
        };
        let v = json::parse(doc).unwrap();
        analyze(&settings, &v).decision
    }

    fn error_of(doc: &str) -> String {
        match decide_with(true, doc) {
            TemplateDecision::Error(e) => e,
            d => panic!("expected an error, got {d:?}"),
        }
    }

    #[test]
    fn t1_targets_must_be_exactly_one() {
        let two = template(CEL).replace(
            r#"[{"target""#,
            r#"[{"target":"other","code":[]},{"target""#,
        );
        assert!(error_of(&two).contains("exactly one target"), "{two}");
        let none = template(CEL).replace(r#""targets":["#, r#""targets":[],"x":["#);
        assert!(error_of(&none).contains("found 0"));
        let no_key =
            r#"{"metadata":{"name":"k8sfoo"},"spec":{"crd":{"spec":{"names":{"kind":"K8sFoo"}}}}}"#;
        assert!(error_of(no_key).contains("found 0"));
    }

    #[test]
    fn t2_without_cel_engine_is_not_applicable() {
        for code in [REGO, ""] {
            assert_eq!(
                decide_with(true, &template(code)),
                TemplateDecision::NotApplicable(ENGINE_MISSING.into())
            );
        }
        // Legacy `rego:` field on the target, no code.
        let legacy = r#"{"metadata":{"name":"k8sfoo"},"spec":{"crd":{"spec":{"names":{"kind":"K8sFoo"}}},
            "targets":[{"target":"admission.k8s.gatekeeper.sh","rego":"package foo"}]}}"#;
        assert_eq!(
            decide_with(true, legacy),
            TemplateDecision::NotApplicable(ENGINE_MISSING.into())
        );
    }

    #[test]
    fn t3_bad_sources_are_errors() {
        let not_object = template(r#"{"engine":"K8sNativeValidation","source":"x"}"#);
        assert!(error_of(&not_object).contains("must be an object"));
        let missing = template(r#"{"engine":"K8sNativeValidation"}"#);
        assert!(error_of(&missing).contains("must be an object"));
        let reserved = template(
            r#"{"engine":"K8sNativeValidation","source":{"variables":[{"name":"params","expression":"1"}]}}"#,
        );
        assert!(error_of(&reserved).contains("reserved name"));
        let bad_fp =
            template(r#"{"engine":"K8sNativeValidation","source":{"failurePolicy":"Sometimes"}}"#);
        assert!(error_of(&bad_fp).contains("failurePolicy"));
        assert!(error_of(&with_generate(r#""yes""#)).contains("generateVAP"));
        // The CEL entry is found even after a Rego entry, and its errors count.
        let both = template(&format!(
            r#"{REGO},{{"engine":"K8sNativeValidation","source":[]}}"#
        ));
        assert!(error_of(&both).contains("got a list"));
    }

    #[test]
    fn t4_to_t7() {
        use TemplateDecision::*;
        for flag in [true, false] {
            assert_eq!(decide_with(flag, &with_generate("true")), Generate, "T4");
            assert_eq!(
                decide_with(flag, &with_generate("false")),
                Skip(SkipReason::OptedOut),
                "T5"
            );
        }
        assert_eq!(decide_with(true, &template(CEL)), Generate, "T6");
        assert_eq!(
            decide_with(false, &template(CEL)),
            Skip(SkipReason::FlagDefault),
            "T7"
        );
        assert_eq!(decide_with(true, &with_generate("null")), Generate);
    }

    #[test]
    fn rows_are_evaluated_top_to_bottom() {
        // T1 wins over T2/T3: two targets, none with CEL.
        let doc = template(REGO).replace(r#"[{"target""#, r#"[{"target":"x"},{"target""#);
        assert!(error_of(&doc).contains("exactly one target"));
        // T2 wins over T3: the Rego entry's odd source is not looked at.
        let doc = template(r#"{"engine":"Rego","source":"not an object"}"#);
        assert!(matches!(
            decide_with(true, &doc),
            TemplateDecision::NotApplicable(_)
        ));
    }

    #[test]
    fn identity_rules() {
        // Acceptance test 36.
        let empty_kind = template(CEL).replace(r#""kind":"K8sFoo""#, r#""kind":"""#);
        assert!(error_of(&empty_kind).contains("kind is empty"));
        let no_kind = template(CEL).replace(r#""names":{"kind":"K8sFoo"}"#, r#""names":{}"#);
        assert!(error_of(&no_kind).contains("kind is empty"));
        let wrong_name = template(CEL).replace(r#""name":"k8sfoo""#, r#""name":"k8sbar""#);
        let e = error_of(&wrong_name);
        assert!(e.contains("\"k8sbar\"") && e.contains("\"k8sfoo\""), "{e}");
        let exact_case = template(CEL).replace(r#""name":"k8sfoo""#, r#""name":"K8sFoo""#);
        assert!(error_of(&exact_case).contains("lowercase"));
        // Identity errors win even over "not applicable".
        let rego = template(REGO).replace(r#""name":"k8sfoo""#, r#""name":"x""#);
        assert!(error_of(&rego).contains("lowercase"));
    }

    #[test]
    fn f1_templates_gatekeeper_cannot_make_a_crd_for_are_errors() {
        // A target other than Gatekeeper's: frameworks' CreateCRD has no handler for it.
        let other = template(CEL).replace(TARGET, "admission.k8s.example.com");
        let e = error_of(&other);
        assert!(
            e.contains("spec.targets[0].target") && e.contains("example.com"),
            "{e}"
        );
        let none = template(CEL).replace(r#""target":"admission.k8s.gatekeeper.sh","#, "");
        assert!(error_of(&none).contains("got nothing"));
        // The longest kind whose list kind is still a DNS-1035 label: 59 characters.
        let with_kind = |k: &str| {
            template(CEL)
                .replace("K8sFoo", k)
                .replace("k8sfoo", &k.to_ascii_lowercase())
        };
        let k59 = format!("K{}", "a".repeat(58));
        assert_eq!(
            decide_with(true, &with_kind(&k59)),
            TemplateDecision::Generate
        );
        let k60 = format!("K{}", "a".repeat(59));
        let e = error_of(&with_kind(&k60));
        assert!(e.contains("at most 59") && e.contains("list"), "{e}");
        for bad in ["9Lives", "K8s_Foo", "K8sFoo-"] {
            assert!(error_of(&with_kind(bad)).contains("DNS-1035"), "{bad}");
        }
        // `*` next to another operation: Gatekeeper's webhook refuses the template.
        let ops = |list: &str| {
            template(CEL).replace(r#""code":"#, &format!(r#""operations":{list},"code":"#))
        };
        assert!(error_of(&ops(r#"["*","CREATE"]"#)).contains("only operation"));
        for fine in [r#"["*"]"#, r#"["CREATE","DELETE"]"#] {
            assert_eq!(
                decide_with(true, &ops(fine)),
                TemplateDecision::Generate,
                "{fine}"
            );
        }
    }

    #[test]
    fn type_and_version() {
        for v in ["v1", "v1beta1", "v1alpha1"] {
            let doc = template(CEL).replace(
                "templates.gatekeeper.sh/v1\"",
                &format!("templates.gatekeeper.sh/{v}\""),
            );
            assert_eq!(decide_with(true, &doc), TemplateDecision::Generate, "{v}");
        }
        let doc = template(CEL).replace("templates.gatekeeper.sh/v1\"", "apps/v1\"");
        assert!(error_of(&doc).contains("apiVersion"));
        let doc = template(CEL).replace("\"ConstraintTemplate\"", "\"Pod\"");
        assert!(error_of(&doc).contains("kind must be ConstraintTemplate"));
    }

    #[test]
    fn duplicate_cel_entries_are_an_error() {
        let doc = template(&format!("{CEL},{CEL}"));
        assert!(error_of(&doc).contains("more than one"));
    }

    #[test]
    fn identity_fields_are_read() {
        let doc = template(CEL).replace(r#""name":"k8sfoo""#, r#""name":"k8sfoo","uid":"u-1""#);
        let v = json::parse(&doc).unwrap();
        let a = analyze(&Settings::default(), &v);
        assert_eq!(a.name, "k8sfoo");
        assert_eq!(a.kind, "K8sFoo");
        assert_eq!(a.uid.as_deref(), Some("u-1"));
        assert!(a.source.is_some());
        assert_eq!(a.operations, None);
    }
}
