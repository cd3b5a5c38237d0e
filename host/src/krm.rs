//! `vapgen krm`: [`planner`](crate::planner) as a KRM function, the protocol of kustomize's
//! exec and containerised functions (and so of Argo CD config management plugins that run
//! `kustomize build --enable-alpha-plugins --enable-exec`).
//!
//! Input on stdin: a `config.kubernetes.io/v1` `ResourceList` whose `items` hold the
//! kustomization's resources. Output on stdout: the same `ResourceList` with the generated
//! objects appended to `items` (each template's constraint CRD, then the policies, then the
//! bindings, as `vapgen plan` prints them) and every error and warning in `results`.
//!
//! The optional `functionConfig` (kind `VapgenPlan`, apiVersion `vapgen.dev/v1alpha1`)
//! takes, under `spec`, the settings of `vapgen plan` in camelCase:
//!
//! | field | default | meaning |
//! | --- | --- | --- |
//! | `crds` | `true` | emit the constraint CRDs (`--crds`) |
//! | `keepTemplates` | `true` | keep the ConstraintTemplates in `items` (drop them for a cluster without Gatekeeper's ConstraintTemplate CRD) |
//! | `defaultCreateVapForTemplates` | `true` | Gatekeeper's flag |
//! | `defaultCreateVapBindingForConstraints` | `true` | Gatekeeper's flag |
//! | `defaultK8sNativeValidationFailurePolicy` | `Fail` | Gatekeeper's flag (`Fail` or `Ignore`) |

use serde_json::{Value, json};
use vapgen_guest::model::{FailurePolicy, Settings};

use crate::manifest::{self, SourcedObject};
use crate::planner;
use crate::runtime::Decide;
use crate::snapshot;

/// The `apiVersion` of a `ResourceList`.
pub const RESOURCE_LIST_API_VERSION: &str = "config.kubernetes.io/v1";

/// Why the input is not a `ResourceList` the function can work on.
#[derive(Debug, thiserror::Error)]
pub enum KrmError {
    /// Not one YAML or JSON document.
    #[error("the input is not one YAML document: {0}")]
    NotYaml(String),
    /// Some other kind of object.
    #[error(
        "the input is {api_version:?} {kind:?}, expected {RESOURCE_LIST_API_VERSION} ResourceList"
    )]
    NotAResourceList {
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
    },
    /// A setting of `functionConfig.spec` has the wrong type or value.
    #[error("functionConfig.spec.{field}: {message}")]
    BadConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The function's result: the output `ResourceList` and its number of errors (the process
/// exits 1 when there is any, as the KRM function specification asks).
#[derive(Debug)]
pub struct KrmOutput {
    /// The output `ResourceList`.
    pub resource_list: Value,
    /// How many `results` have severity `error`.
    pub errors: usize,
}

/// Runs the function on the text of a `ResourceList`.
pub fn run(input: &str, decider: &dyn Decide) -> Result<KrmOutput, KrmError> {
    let (mut docs, errors) = manifest::parse_documents(input, "<stdin>");
    if let Some(e) = errors.first() {
        return Err(KrmError::NotYaml(e.to_string()));
    }
    // parse_documents flattens `kind: List`; a ResourceList is not one, so it comes back whole.
    let list = match docs.len() {
        1 => docs.remove(0).object,
        n => return Err(KrmError::NotYaml(format!("{n} documents"))),
    };
    let api_version = list.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = snapshot::kind_of(&list);
    if kind != "ResourceList" || api_version != RESOURCE_LIST_API_VERSION {
        return Err(KrmError::NotAResourceList {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        });
    }
    let config = Config::read(list.pointer("/functionConfig/spec"))?;
    let items: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sourced = items
        .iter()
        .enumerate()
        .map(|(i, o)| SourcedObject {
            object: o.clone(),
            origin: origin_of(o, i),
        })
        .collect();
    let report = planner::plan(decider, &config.settings, &planner::classify(sourced));

    let mut out_items: Vec<Value> = items
        .into_iter()
        .filter(|o| config.keep_templates || !snapshot::is_template(o))
        .collect();
    out_items.extend(report.objects(config.crds));
    let mut results: Vec<Value> = report
        .errors()
        .iter()
        .map(|e| result("error", &e.to_string()))
        .collect();
    let errors = results.len();
    for k in &report.kinds {
        if let Ok(plan) = &k.plan {
            for w in &plan.warnings {
                results.push(result(
                    "warning",
                    &format!("template {}: {w}", k.template_name),
                ));
            }
            for b in &k.bindings {
                for w in &b.plan.warnings {
                    results.push(result(
                        "warning",
                        &format!("constraint {}/{}: {w}", plan.kind, b.plan.constraint),
                    ));
                }
            }
        }
    }
    let mut resource_list = json!({
        "apiVersion": RESOURCE_LIST_API_VERSION,
        "kind": "ResourceList",
        "items": out_items,
    });
    if !results.is_empty() {
        resource_list["results"] = Value::Array(results);
    }
    Ok(KrmOutput {
        resource_list,
        errors,
    })
}

fn result(severity: &str, message: &str) -> Value {
    json!({"message": message, "severity": severity})
}

/// Where kustomize says an item came from (`config.kubernetes.io/path`, or its internal
/// spelling), else its index.
fn origin_of(o: &Value, i: usize) -> String {
    let annotations = o.pointer("/metadata/annotations");
    [
        "internal.config.kubernetes.io/path",
        "config.kubernetes.io/path",
    ]
    .iter()
    .find_map(|k| annotations.and_then(|a| a.get(*k)).and_then(Value::as_str))
    .map_or_else(|| format!("items[{i}]"), |p| format!("{p} (items[{i}])"))
}

/// The settings of `functionConfig.spec`.
struct Config {
    crds: bool,
    keep_templates: bool,
    settings: Settings,
}

impl Config {
    fn read(spec: Option<&Value>) -> Result<Self, KrmError> {
        let flag = |field: &'static str, default: bool| -> Result<bool, KrmError> {
            match spec.and_then(|s| s.get(field)) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(KrmError::BadConfig {
                    field,
                    message: format!("expected true or false, got {other}"),
                }),
            }
        };
        let mut settings = Settings {
            default_create_vap_for_templates: flag("defaultCreateVapForTemplates", true)?,
            default_create_vap_binding_for_constraints: flag(
                "defaultCreateVapBindingForConstraints",
                true,
            )?,
            ..Settings::default()
        };
        const POLICY: &str = "defaultK8sNativeValidationFailurePolicy";
        match spec.and_then(|s| s.get(POLICY)) {
            None | Some(Value::Null) => {}
            Some(Value::String(p)) if p == "Fail" => {
                settings.default_failure_policy = FailurePolicy::Fail
            }
            Some(Value::String(p)) if p == "Ignore" => {
                settings.default_failure_policy = FailurePolicy::Ignore;
            }
            Some(other) => {
                return Err(KrmError::BadConfig {
                    field: POLICY,
                    message: format!("expected Fail or Ignore, got {other}"),
                });
            }
        }
        Ok(Config {
            crds: flag("crds", true)?,
            keep_templates: flag("keepTemplates", true)?,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Decider, Runtime, RuntimeConfig};

    fn decider() -> (Runtime, Decider) {
        let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let d = rt.load_bundled().expect("bundled module");
        (rt, d)
    }

    fn input(spec: &str) -> String {
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/requiredlabels/template.yaml"
        ))
        .expect("template");
        let template: Value =
            serde_json::to_value(manifest::parse_documents(&template, "t").0.remove(0).object)
                .expect("json");
        json!({
            "apiVersion": "config.kubernetes.io/v1",
            "kind": "ResourceList",
            "items": [template, {
                "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                "kind": "K8sRequiredLabels",
                "metadata": {"name": "owner", "annotations": {"config.kubernetes.io/path": "c.yaml"}},
                "spec": {"parameters": {"labels": ["owner"]}}
            }],
            "functionConfig": {"apiVersion": "vapgen.dev/v1alpha1", "kind": "VapgenPlan",
                "metadata": {"name": "vapgen"}, "spec": serde_json::from_str::<Value>(spec).unwrap()}
        })
        .to_string()
    }

    fn kinds(list: &Value) -> Vec<&str> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(snapshot::kind_of)
            .collect()
    }

    #[test]
    fn generated_objects_follow_the_input_items() {
        let (_rt, d) = decider();
        let out = run(&input("{}"), &d).expect("run");
        assert_eq!(out.errors, 0, "{}", out.resource_list);
        assert_eq!(
            kinds(&out.resource_list),
            [
                "ConstraintTemplate",
                "K8sRequiredLabels",
                "CustomResourceDefinition",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ]
        );
    }

    #[test]
    fn function_config_drops_templates_and_crds() {
        let (_rt, d) = decider();
        let out = run(&input(r#"{"crds": false, "keepTemplates": false}"#), &d).expect("run");
        assert_eq!(
            kinds(&out.resource_list),
            [
                "K8sRequiredLabels",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ]
        );
    }

    #[test]
    fn errors_are_results_and_bad_config_is_refused() {
        let (_rt, d) = decider();
        let text = input("{}").replace("\"owner\",\"annotations\"", "\"Owner\",\"annotations\"");
        let out = run(&text, &d).expect("run");
        assert_eq!(out.errors, 1, "{}", out.resource_list);
        let message = out.resource_list["results"][0]["message"].as_str().unwrap();
        assert!(message.contains("c.yaml"), "{message}");
        assert!(message.contains("not a valid object name"), "{message}");
        assert!(matches!(
            run(&input(r#"{"crds": "no"}"#), &d),
            Err(KrmError::BadConfig { field: "crds", .. })
        ));
        assert!(matches!(
            run("apiVersion: v1\nkind: List\nitems: []\n", &d),
            Err(KrmError::NotAResourceList { .. }) | Err(KrmError::NotYaml(_))
        ));
    }
}
