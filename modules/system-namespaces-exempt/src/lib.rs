//! # system-namespaces-exempt: an alternative vapgen decision module
//!
//! The bundled Gatekeeper-compatible logic (`vapgen-guest`), with one change: every binding
//! it generates for a constraint **without** `spec.match.namespaceSelector` gets
//!
//! ```yaml
//! matchResources:
//!   namespaceSelector:
//!     matchExpressions:
//!     - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-public, kube-node-lease]}
//! ```
//!
//! so a policy can never block the control plane's own namespaces. This answers Gatekeeper's
//! bootstrap deadlock (open-policy-agent/gatekeeper#4530): a `Deny` binding that matches
//! every namespace can reject the very pods (CNI, DNS, the API server's helpers) a cluster
//! needs before Gatekeeper itself can run, and a VAP keeps enforcing while Gatekeeper is down.
//!
//! A constraint that sets its own `namespaceSelector` keeps it unchanged: the author chose
//! the scope. Cluster-scoped objects other than Namespaces are not affected by a binding's
//! `namespaceSelector` (Kubernetes never skips them on it), and for a Namespace object the
//! selector is matched against the Namespace's own labels, so `kube-system` itself is exempt.
//!
//! ```text
//!  settings + template + constraints ──► vapgen_guest::plan_kind ──► KindPlan
//!                                                                      │ for each Bind without
//!                                                                      │ a namespaceSelector
//!                                                                      ▼
//!                                                    + NotIn [kube-system, kube-public, kube-node-lease]
//! ```
//!
//! Build, componentize and test: see `docs/authoring-modules.md`.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

use vapgen_guest::model::{BindingOutcome, Constraint, KindPlan, ModuleInfo, PlanError, Settings};

// The component's exports: the shared adapter around this crate's `plan_kind` and `describe`.
// (`vapgen-guest` is linked with `default-features = false`, so the bundled module's own
// exports are not in this binary.)
#[cfg(target_arch = "wasm32")]
vapgen_guest::export_decider!(plan: crate::plan_kind, describe: crate::describe, wit: "../../wit");

/// The name this module reports in `describe()`.
pub const MODULE_NAME: &str = "system-namespaces-exempt";

/// The namespaces no generated binding may match.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The `namespaceSelector` (JSON) given to bindings whose constraint has none.
pub fn system_namespaces_selector() -> String {
    let values: Vec<String> = SYSTEM_NAMESPACES
        .iter()
        .map(|n| vapgen_guest::json::quote(n))
        .collect();
    format!(
        r#"{{"matchExpressions":[{{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":[{}]}}]}}"#,
        values.join(",")
    )
}

/// Identity of this module.
pub fn describe() -> ModuleInfo {
    ModuleInfo {
        name: MODULE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        interface_version: vapgen_guest::INTERFACE_VERSION.to_string(),
    }
}

/// Plans one kind with the bundled logic, then exempts system namespaces from every binding
/// whose constraint has no `namespaceSelector`.
pub fn plan_kind(
    settings: &Settings,
    template_json: &str,
    constraints: &[Constraint],
) -> Result<KindPlan, PlanError> {
    let mut plan = vapgen_guest::plan_kind(settings, template_json, constraints)?;
    for b in &mut plan.bindings {
        if let BindingOutcome::Bind(spec) = &mut b.outcome
            && spec.namespace_selector.is_none()
        {
            spec.namespace_selector = Some(system_namespaces_selector());
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vapgen_guest::model::NoBindingReason;

    const TEMPLATE: &str = r#"{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate","metadata":{"name":"k8sfoo"},"spec":{"crd":{"spec":{"names":{"kind":"K8sFoo"}}},"targets":[{"target":"admission.k8s.gatekeeper.sh","code":[{"engine":"K8sNativeValidation","source":{"validations":[{"expression":"true"}]}}]}]}}"#;

    fn constraint(name: &str, ns: Option<&str>, action: Option<&str>) -> Constraint {
        Constraint {
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            enforcement_action: action.map(str::to_string),
            namespace_selector: ns.map(str::to_string),
            ..Constraint::default()
        }
    }

    fn spec(plan: &KindPlan, i: usize) -> &vapgen_guest::model::BindingSpec {
        match &plan.bindings[i].outcome {
            BindingOutcome::Bind(s) => s,
            other => panic!("expected a binding, got {other:?}"),
        }
    }

    #[test]
    fn selector_is_valid_json_naming_the_system_namespaces() {
        let v = vapgen_guest::json::parse(&system_namespaces_selector()).expect("JSON");
        let expr = &v.get("matchExpressions").unwrap().as_array().unwrap()[0];
        assert_eq!(
            expr.get("key").unwrap().as_str(),
            Some("kubernetes.io/metadata.name")
        );
        assert_eq!(expr.get("operator").unwrap().as_str(), Some("NotIn"));
        let values: Vec<&str> = expr
            .get("values")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(values, SYSTEM_NAMESPACES);
    }

    #[test]
    fn adds_the_exemption_only_where_no_selector_was_given() {
        let own = r#"{"matchLabels":{"team":"payments"}}"#;
        let cs = [
            constraint("plain", None, None),
            constraint("own-selector", Some(own), Some("dryrun")),
        ];
        let plan = plan_kind(&Settings::default(), TEMPLATE, &cs).expect("plan");
        assert_eq!(
            spec(&plan, 0).namespace_selector.as_deref(),
            Some(system_namespaces_selector().as_str())
        );
        assert_eq!(spec(&plan, 1).namespace_selector.as_deref(), Some(own));
    }

    #[test]
    fn everything_else_is_the_bundled_plan() {
        let settings = Settings {
            default_create_vap_binding_for_constraints: false,
            ..Settings::default()
        };
        let cs = [
            constraint("a", None, None),
            constraint("b", None, Some("bogus")),
        ];
        let ours = plan_kind(&settings, TEMPLATE, &cs).expect("plan");
        let bundled = vapgen_guest::plan_kind(&settings, TEMPLATE, &cs).expect("plan");
        assert_eq!(ours, bundled);
        assert_eq!(
            ours.bindings[0].outcome,
            BindingOutcome::None(NoBindingReason::NoIntent)
        );
        assert!(matches!(ours.bindings[1].outcome, BindingOutcome::Error(_)));
    }

    #[test]
    fn bad_input_is_the_bundled_error() {
        assert_eq!(
            plan_kind(&Settings::default(), "not json", &[]),
            vapgen_guest::plan_kind(&Settings::default(), "not json", &[])
        );
    }

    #[test]
    fn describes_itself() {
        let d = describe();
        assert_eq!(d.name, MODULE_NAME);
        assert_eq!(d.interface_version, vapgen_guest::INTERFACE_VERSION);
    }
}
