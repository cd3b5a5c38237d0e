//! Every gatekeeper-library template in `shared/conformance` is a real input: each must give
//! Generate and a VAP whose variables and validations are the template's own, after the two
//! built-in variables, with the four internal match conditions.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use vapgen_guest::model::*;

/// The library's templates; empty (skipped, said loudly) without the corpus.
fn templates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(root) = library() else {
        return out;
    };
    for group in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let group = group.unwrap().path();
        if !group.is_dir() {
            continue;
        }
        for dir in std::fs::read_dir(&group).unwrap() {
            let t = dir.unwrap().path().join("template.yaml");
            if t.exists() {
                out.push(t);
            }
        }
    }
    out.sort();
    out
}

fn cel_source(template: &Value) -> &Value {
    template["spec"]["targets"][0]["code"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["engine"] == "K8sNativeValidation")
        .map(|c| &c["source"])
        .expect("a CEL source")
}

/// Validations as the VAP should carry them: expression, message, messageExpression.
fn expected_validations(source: &Value) -> Value {
    let list = source["validations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Value::Array(
        list.iter()
            .map(|v| {
                let mut o = serde_json::Map::new();
                for key in ["expression", "message", "messageExpression"] {
                    if let Some(s) = v[key].as_str().filter(|s| !s.is_empty()) {
                        o.insert(key.to_string(), json!(s));
                    }
                }
                Value::Object(o)
            })
            .collect(),
    )
}

#[test]
fn all_library_templates_generate() {
    let templates = templates();
    if library().is_none() {
        return;
    }
    assert_eq!(templates.len(), 16, "the conformance set has 16 templates");
    for path in &templates {
        let t = yaml(path);
        let plan = vapgen_guest::plan_kind(&Settings::default(), &t.to_string(), &[])
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let name = t["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            plan.decision,
            TemplateDecision::Generate,
            "{}",
            path.display()
        );
        assert_eq!(plan.template_name, name);
        assert_eq!(plan.policy_name, format!("gatekeeper-{name}"));
        assert!(
            plan.warnings.is_empty(),
            "{}: {:?}",
            path.display(),
            plan.warnings
        );
        let vap = vap(&plan);
        let source = cel_source(&t);
        let spec = &vap["spec"];
        assert_eq!(vap["metadata"]["name"], json!(format!("gatekeeper-{name}")));
        assert_eq!(
            spec["paramKind"]["kind"],
            t["spec"]["crd"]["spec"]["names"]["kind"],
            "{}",
            path.display()
        );
        assert_eq!(
            spec["validations"],
            expected_validations(source),
            "{}",
            path.display()
        );
        let vars = spec["variables"].as_array().unwrap();
        assert_eq!(vars[0]["name"], "anyObject");
        assert_eq!(vars[1]["name"], "params");
        let user_vars = source["variables"].as_array().cloned().unwrap_or_default();
        assert_eq!(vars[2..], user_vars[..], "{}", path.display());
        let conditions: Vec<&str> = spec["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let own = source["matchCondition"].as_array().map_or(0, Vec::len);
        assert_eq!(conditions.len(), own + 4, "{}", path.display());
        assert_eq!(spec["failurePolicy"], "Fail");
    }
}

#[test]
fn library_samples_plan_without_errors() {
    // The sample constraints next to each template (where present) get bindings.
    for path in templates() {
        let dir = path.parent().unwrap().join("samples");
        let Ok(samples) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut constraints = Vec::new();
        for s in samples {
            let c = s.unwrap().path().join("constraint.yaml");
            if c.exists() {
                constraints.extend(yaml_docs(&c));
            }
        }
        let plan = plan_files(&Settings::default(), &path, &constraints);
        for b in &plan.bindings {
            assert!(
                matches!(b.outcome, BindingOutcome::Bind(_)),
                "{}: {} → {:?}",
                path.display(),
                b.constraint,
                b.outcome
            );
        }
    }
}

#[test]
fn library_templates_follow_the_flags() {
    for path in templates() {
        let t = yaml(&path).to_string();
        let off = Settings {
            default_create_vap_for_templates: false,
            default_failure_policy: FailurePolicy::Ignore,
            ..Settings::default()
        };
        let plan = vapgen_guest::plan_kind(&off, &t, &[]).unwrap();
        assert_eq!(
            plan.decision,
            TemplateDecision::Skip(SkipReason::FlagDefault)
        );
        assert_eq!(plan.policy, PolicyOutcome::None);
    }
}
