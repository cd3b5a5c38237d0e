//! Conversions between the generated WIT types and the domain model of `vapgen_guest`.

use super::bindings::wit as w;
use vapgen_guest::model as m;

pub(crate) fn settings(s: &m::Settings) -> w::Settings {
    w::Settings {
        default_create_vap_for_templates: s.default_create_vap_for_templates,
        default_create_vap_binding_for_constraints: s.default_create_vap_binding_for_constraints,
        default_failure_policy: match s.default_failure_policy {
            m::FailurePolicy::Fail => w::FailurePolicy::Fail,
            m::FailurePolicy::Ignore => w::FailurePolicy::Ignore,
        },
        scope_sync: s.scope_sync.as_ref().map(|s| w::ScopeSync {
            webhook: s.webhook.clone(),
            excluded_namespaces: s.excluded_namespaces.clone(),
            exempt_namespaces: s.exempt_namespaces.clone(),
        }),
    }
}

pub(crate) fn constraint(c: &m::Constraint) -> w::Constraint {
    w::Constraint {
        name: c.name.clone(),
        uid: c.uid.clone(),
        generation: c.generation,
        enforcement_action: c.enforcement_action.clone(),
        scoped_enforcement_actions: c.scoped_enforcement_actions.as_ref().map(|v| {
            v.iter()
                .map(|a| w::ScopedAction {
                    action: a.action.clone(),
                    enforcement_points: a.enforcement_points.clone(),
                })
                .collect()
        }),
        label_selector: c.label_selector.clone(),
        namespace_selector: c.namespace_selector.clone(),
        malformed: c.malformed.clone(),
    }
}

pub(crate) fn module_info(i: w::ModuleInfo) -> m::ModuleInfo {
    m::ModuleInfo {
        name: i.name,
        version: i.version,
        interface_version: i.interface_version,
    }
}

pub(crate) fn kind_plan(p: w::KindPlan) -> m::KindPlan {
    m::KindPlan {
        template_name: p.template_name,
        kind: p.kind,
        decision: match p.decision {
            w::TemplateDecision::Generate => m::TemplateDecision::Generate,
            w::TemplateDecision::Skip(r) => m::TemplateDecision::Skip(match r {
                w::SkipReason::OptedOut => m::SkipReason::OptedOut,
                w::SkipReason::FlagDefault => m::SkipReason::FlagDefault,
            }),
            w::TemplateDecision::NotApplicable(s) => m::TemplateDecision::NotApplicable(s),
            w::TemplateDecision::Error(s) => m::TemplateDecision::Error(s),
        },
        policy_name: p.policy_name,
        policy: match p.policy {
            w::PolicyOutcome::None => m::PolicyOutcome::None,
            w::PolicyOutcome::Desired(s) => m::PolicyOutcome::Desired(s),
            w::PolicyOutcome::TransformError(s) => m::PolicyOutcome::TransformError(s),
        },
        warnings: p.warnings,
        bindings: p.bindings.into_iter().map(binding_plan).collect(),
    }
}

fn binding_plan(b: w::BindingPlan) -> m::BindingPlan {
    m::BindingPlan {
        constraint: b.constraint,
        binding_name: b.binding_name,
        legacy_binding_name: b.legacy_binding_name,
        enforcement_action: match b.enforcement_action {
            w::EnforcementAction::Deny => m::EnforcementAction::Deny,
            w::EnforcementAction::Dryrun => m::EnforcementAction::Dryrun,
            w::EnforcementAction::Warn => m::EnforcementAction::Warn,
            w::EnforcementAction::Scoped => m::EnforcementAction::Scoped,
            w::EnforcementAction::Unrecognized => m::EnforcementAction::Unrecognized,
        },
        intends_binding: b.intends_binding,
        outcome: match b.outcome {
            w::BindingOutcome::Bind(s) => m::BindingOutcome::Bind(m::BindingSpec {
                name: s.name,
                policy_name: s.policy_name,
                param_name: s.param_name,
                validation_actions: s
                    .validation_actions
                    .into_iter()
                    .map(|a| match a {
                        w::ValidationAction::Deny => m::ValidationAction::Deny,
                        w::ValidationAction::Warn => m::ValidationAction::Warn,
                        w::ValidationAction::Audit => m::ValidationAction::Audit,
                    })
                    .collect(),
                object_selector: s.object_selector,
                namespace_selector: s.namespace_selector,
            }),
            w::BindingOutcome::None(r) => m::BindingOutcome::None(match r {
                w::NoBindingReason::NoIntent => m::NoBindingReason::NoIntent,
                w::NoBindingReason::TemplateSkipped => m::NoBindingReason::TemplateSkipped,
                w::NoBindingReason::TemplateNotApplicable => {
                    m::NoBindingReason::TemplateNotApplicable
                }
                w::NoBindingReason::TemplateError => m::NoBindingReason::TemplateError,
            }),
            w::BindingOutcome::Error(s) => m::BindingOutcome::Error(s),
        },
        warnings: b.warnings,
    }
}
