//! The domain model of a decision: plain Rust mirrors of the WIT types in
//! `wit/decider.wit`, free of any binding generator, so the logic can be tested natively and
//! hosts can compare native and wasm results with `==`.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// What the API server does when the policy cannot be evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum FailurePolicy {
    /// `Fail`: deny the request.
    Fail,
    /// `Ignore`: admit the request.
    Ignore,
}

impl FailurePolicy {
    /// The spelling used by the Kubernetes API.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }

    /// Parses the Kubernetes spelling (`Fail` or `Ignore`, exact case).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Fail" => Some(FailurePolicy::Fail),
            "Ignore" => Some(FailurePolicy::Ignore),
            _ => None,
        }
    }
}

/// An entry of a binding's `spec.validationActions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum ValidationAction {
    /// `Deny`.
    Deny,
    /// `Warn`.
    Warn,
    /// `Audit`.
    Audit,
}

impl ValidationAction {
    /// The spelling used by the Kubernetes API.
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationAction::Deny => "Deny",
            ValidationAction::Warn => "Warn",
            ValidationAction::Audit => "Audit",
        }
    }
}

/// Gatekeeper's enforcement action of a constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum EnforcementAction {
    /// `deny` (also an empty or absent action).
    Deny,
    /// `dryrun`.
    Dryrun,
    /// `warn`.
    Warn,
    /// `scoped`: the actions come from `scopedEnforcementActions`.
    Scoped,
    /// Any other string.
    Unrecognized,
}

/// Scope sync inputs (Gatekeeper's `--sync-vap-enforcement-scope`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ScopeSync {
    /// The `validation.gatekeeper.sh` webhook entry as JSON; `None` when not known yet.
    pub webhook: Option<String>,
    /// Namespace patterns excluded for the `webhook` process by the Config resource.
    pub excluded_namespaces: Vec<String>,
    /// Exempt namespaces from the `--exempt-namespace*` flags.
    pub exempt_namespaces: Vec<String>,
}

/// Gatekeeper's flags that shape the decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Settings {
    /// `--default-create-vap-for-templates`.
    pub default_create_vap_for_templates: bool,
    /// `--default-create-vap-binding-for-constraints`.
    pub default_create_vap_binding_for_constraints: bool,
    /// `--default-k8s-native-validation-failure-policy`.
    pub default_failure_policy: FailurePolicy,
    /// Scope sync, when on.
    pub scope_sync: Option<ScopeSync>,
}

impl Default for Settings {
    /// Gatekeeper's defaults since v3.20: both flags `true`, failure policy `Fail`, no scope sync.
    fn default() -> Self {
        Settings {
            default_create_vap_for_templates: true,
            default_create_vap_binding_for_constraints: true,
            default_failure_policy: FailurePolicy::Fail,
            scope_sync: None,
        }
    }
}

/// One entry of `spec.scopedEnforcementActions`, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ScopedAction {
    /// `action`.
    pub action: String,
    /// The `name`s of `enforcementPoints`.
    pub enforcement_points: Vec<String>,
}

/// The fields of a constraint that the decision reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Constraint {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: u64,
    /// `spec.enforcementAction` as written.
    pub enforcement_action: Option<String>,
    /// `spec.scopedEnforcementActions`.
    pub scoped_enforcement_actions: Option<Vec<ScopedAction>>,
    /// `spec.match.labelSelector` as JSON.
    pub label_selector: Option<String>,
    /// `spec.match.namespaceSelector` as JSON.
    pub namespace_selector: Option<String>,
    /// Shape problems found while extracting the fields.
    pub malformed: Vec<String>,
}

/// Why a template with a valid CEL source does not generate a VAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum SkipReason {
    /// `source.generateVAP: false`.
    OptedOut,
    /// `generateVAP` absent and the template flag is `false`.
    FlagDefault,
}

/// The template decision (rows T1-T7 of the spec).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum TemplateDecision {
    /// Generate the VAP.
    Generate,
    /// Do not generate.
    Skip(SkipReason),
    /// No `K8sNativeValidation` engine.
    NotApplicable(String),
    /// A real error.
    Error(String),
}

/// The desired VAP, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum PolicyOutcome {
    /// No VAP must exist.
    None,
    /// The full VAP object as JSON.
    Desired(String),
    /// The decision is generate but the content cannot be produced.
    TransformError(String),
}

/// Why a constraint gets no binding, when that is not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum NoBindingReason {
    /// The constraint does not intend a binding.
    NoIntent,
    /// The template decided not to generate a VAP.
    TemplateSkipped,
    /// The template has no CEL engine.
    TemplateNotApplicable,
    /// The template decision is an error, or its VAP cannot be produced.
    TemplateError,
}

/// The desired binding content.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct BindingSpec {
    /// `metadata.name`.
    pub name: String,
    /// `spec.policyName`.
    pub policy_name: String,
    /// `spec.paramRef.name`.
    pub param_name: String,
    /// `spec.validationActions`.
    pub validation_actions: Vec<ValidationAction>,
    /// `spec.matchResources.objectSelector` as JSON.
    pub object_selector: Option<String>,
    /// `spec.matchResources.namespaceSelector` as JSON.
    pub namespace_selector: Option<String>,
}

/// What must exist for one constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum BindingOutcome {
    /// This binding must exist.
    Bind(BindingSpec),
    /// No binding must exist, for a reason that is not an error.
    None(NoBindingReason),
    /// The constraint is invalid for VAP generation.
    Error(String),
}

/// The plan for one constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct BindingPlan {
    /// The constraint's name.
    pub constraint: String,
    /// The binding name this constraint owns.
    pub binding_name: String,
    /// The pre-v3.23 name, when at most 253 characters.
    pub legacy_binding_name: Option<String>,
    /// The parsed enforcement action.
    pub enforcement_action: EnforcementAction,
    /// Whether the constraint intends a binding.
    pub intends_binding: bool,
    /// What must exist.
    pub outcome: BindingOutcome,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
}

/// The plan for one constraint kind.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct KindPlan {
    /// The template's `metadata.name`.
    pub template_name: String,
    /// `spec.crd.spec.names.kind`; empty when absent.
    pub kind: String,
    /// The template decision.
    pub decision: TemplateDecision,
    /// `gatekeeper-<template name>`.
    pub policy_name: String,
    /// The desired VAP.
    pub policy: PolicyOutcome,
    /// Non-fatal findings about the template.
    pub warnings: Vec<String>,
    /// One plan per input constraint, in input order.
    pub bindings: Vec<BindingPlan>,
}

/// Identity of a decision module.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// Version of the WIT package it was built against.
    pub interface_version: String,
}

/// An input the module cannot work with at all.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct PlanError {
    /// What is wrong, for the user.
    pub message: String,
}
