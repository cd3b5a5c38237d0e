//! [`export_decider!`]: the wit-bindgen adapter of a decision module, as a macro, so that a
//! module reusing this crate's logic (see `modules/system-namespaces-exempt`) and the bundled
//! module share one adapter instead of two copies.

/// Exports a decision component: generates the bindings of the `vapgen:decider` world from
/// the WIT at `wit` (a path relative to the invoking crate), converts between the generated
/// types and [`crate::model`], and calls `plan` (`fn(&Settings, &str, &[Constraint]) ->
/// Result<KindPlan, PlanError>`) and `describe` (`fn() -> ModuleInfo`).
///
/// Use it once per component, on wasm32 only, in a crate that depends on `wit-bindgen`:
///
/// ```text
/// #[cfg(target_arch = "wasm32")]
/// vapgen_guest::export_decider!(plan: crate::plan_kind, describe: crate::describe, wit: "../../wit");
/// ```
///
/// A crate that links this one must depend on it with `default-features = false`, so that
/// the bundled module's own export (feature `component`) is not linked in twice.
///
/// The expansion allows `unsafe_code`: `wit_bindgen::generate!` and `export!` expand to the
/// canonical-ABI glue (raw pointers into linear memory, `#[unsafe(export_name)]`), generated
/// by wit-bindgen from the WIT; the macro itself adds no unsafe code.
#[macro_export]
macro_rules! export_decider {
    (plan: $plan:path, describe: $describe:path, wit: $wit:literal) => {
        #[allow(unsafe_code, missing_docs)]
        mod __vapgen_decider_component {
        wit_bindgen::generate!({
            world: "decider",
            path: $wit,
        });

        use $crate::model as m;
        use exports::vapgen::decider::decide as w;
        use exports::vapgen::decider::decide::Guest;

        struct Component;

        impl Guest for Component {
            fn describe() -> w::ModuleInfo {
                let i = $describe();
                w::ModuleInfo {
                    name: i.name,
                    version: i.version,
                    interface_version: i.interface_version,
                }
            }

            fn plan_kind(
                settings: w::Settings,
                template: String,
                constraints: Vec<w::Constraint>,
            ) -> Result<w::KindPlan, w::PlanError> {
                let settings = settings_in(settings);
                let constraints: Vec<m::Constraint> = constraints.into_iter().map(constraint_in).collect();
                $plan(&settings, &template, &constraints)
                    .map(plan_out)
                    .map_err(|e| w::PlanError { message: e.message })
            }
        }

        export!(Component);

        fn settings_in(s: w::Settings) -> m::Settings {
            m::Settings {
                default_create_vap_for_templates: s.default_create_vap_for_templates,
                default_create_vap_binding_for_constraints: s.default_create_vap_binding_for_constraints,
                default_failure_policy: match s.default_failure_policy {
                    w::FailurePolicy::Fail => m::FailurePolicy::Fail,
                    w::FailurePolicy::Ignore => m::FailurePolicy::Ignore,
                },
                scope_sync: s.scope_sync.map(|s| m::ScopeSync {
                    webhook: s.webhook,
                    excluded_namespaces: s.excluded_namespaces,
                    exempt_namespaces: s.exempt_namespaces,
                }),
            }
        }

        fn constraint_in(c: w::Constraint) -> m::Constraint {
            m::Constraint {
                name: c.name,
                uid: c.uid,
                generation: c.generation,
                enforcement_action: c.enforcement_action,
                scoped_enforcement_actions: c.scoped_enforcement_actions.map(|v| {
                    v.into_iter()
                        .map(|a| m::ScopedAction {
                            action: a.action,
                            enforcement_points: a.enforcement_points,
                        })
                        .collect()
                }),
                label_selector: c.label_selector,
                namespace_selector: c.namespace_selector,
                malformed: c.malformed,
            }
        }

        fn plan_out(p: m::KindPlan) -> w::KindPlan {
            w::KindPlan {
                template_name: p.template_name,
                kind: p.kind,
                decision: match p.decision {
                    m::TemplateDecision::Generate => w::TemplateDecision::Generate,
                    m::TemplateDecision::Skip(r) => w::TemplateDecision::Skip(match r {
                        m::SkipReason::OptedOut => w::SkipReason::OptedOut,
                        m::SkipReason::FlagDefault => w::SkipReason::FlagDefault,
                    }),
                    m::TemplateDecision::NotApplicable(s) => w::TemplateDecision::NotApplicable(s),
                    m::TemplateDecision::Error(s) => w::TemplateDecision::Error(s),
                },
                policy_name: p.policy_name,
                policy: match p.policy {
                    m::PolicyOutcome::None => w::PolicyOutcome::None,
                    m::PolicyOutcome::Desired(s) => w::PolicyOutcome::Desired(s),
                    m::PolicyOutcome::TransformError(s) => w::PolicyOutcome::TransformError(s),
                },
                warnings: p.warnings,
                bindings: p.bindings.into_iter().map(binding_out).collect(),
            }
        }

        fn binding_out(b: m::BindingPlan) -> w::BindingPlan {
            w::BindingPlan {
                constraint: b.constraint,
                binding_name: b.binding_name,
                legacy_binding_name: b.legacy_binding_name,
                enforcement_action: match b.enforcement_action {
                    m::EnforcementAction::Deny => w::EnforcementAction::Deny,
                    m::EnforcementAction::Dryrun => w::EnforcementAction::Dryrun,
                    m::EnforcementAction::Warn => w::EnforcementAction::Warn,
                    m::EnforcementAction::Scoped => w::EnforcementAction::Scoped,
                    m::EnforcementAction::Unrecognized => w::EnforcementAction::Unrecognized,
                },
                intends_binding: b.intends_binding,
                outcome: match b.outcome {
                    m::BindingOutcome::Bind(s) => w::BindingOutcome::Bind(w::BindingSpec {
                        name: s.name,
                        policy_name: s.policy_name,
                        param_name: s.param_name,
                        validation_actions: s
                            .validation_actions
                            .into_iter()
                            .map(|a| match a {
                                m::ValidationAction::Deny => w::ValidationAction::Deny,
                                m::ValidationAction::Warn => w::ValidationAction::Warn,
                                m::ValidationAction::Audit => w::ValidationAction::Audit,
                            })
                            .collect(),
                        object_selector: s.object_selector,
                        namespace_selector: s.namespace_selector,
                    }),
                    m::BindingOutcome::None(r) => w::BindingOutcome::None(match r {
                        m::NoBindingReason::NoIntent => w::NoBindingReason::NoIntent,
                        m::NoBindingReason::TemplateSkipped => w::NoBindingReason::TemplateSkipped,
                        m::NoBindingReason::TemplateNotApplicable => {
                            w::NoBindingReason::TemplateNotApplicable
                        }
                        m::NoBindingReason::TemplateError => w::NoBindingReason::TemplateError,
                    }),
                    m::BindingOutcome::Error(s) => w::BindingOutcome::Error(s),
                },
                warnings: b.warnings,
            }
        }
        }
    };
}
