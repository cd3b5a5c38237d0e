//! `plan_kind`: one template, all constraints of its kind → the [`KindPlan`].

use crate::binding;
use crate::json::{self, Value};
use crate::model::{
    Constraint, KindPlan, NoBindingReason, PlanError, PolicyOutcome, Settings, TemplateDecision,
};
use crate::naming;
use crate::template;
use crate::text::{fill, must_be};
use crate::transform;

/// Plans one constraint kind. Only a template that is not a JSON object at all is a
/// [`PlanError`]; every other problem is a typed outcome inside the plan.
pub fn plan_kind(
    settings: &Settings,
    template_json: &str,
    constraints: &[Constraint],
) -> Result<KindPlan, PlanError> {
    let doc = json::parse(template_json).map_err(|e| PlanError {
        message: fill(
            "the ConstraintTemplate is not valid JSON: {e}",
            &[("e", &e.describe())],
        ),
    })?;
    if !matches!(doc, Value::Object(_)) {
        return Err(PlanError {
            message: must_be("the ConstraintTemplate", "a JSON object", &doc),
        });
    }
    let mut analysis = template::analyze(settings, &doc);
    let mut warnings = std::mem::take(&mut analysis.warnings);
    let policy = policy(settings, &analysis, &mut warnings);
    let gate = binding_gate(&analysis.decision, &policy);
    let context = binding::KindContext::new(&analysis.kind, gate);
    let bindings = constraints
        .iter()
        .map(|c| binding::plan(settings, &context, c))
        .collect();
    Ok(KindPlan {
        policy_name: naming::policy_name(&analysis.name),
        template_name: analysis.name,
        kind: analysis.kind,
        decision: analysis.decision,
        policy,
        warnings,
        bindings,
    })
}

/// The VAP: desired only when the decision is Generate and the transform succeeds.
fn policy(
    settings: &Settings,
    analysis: &template::Analysis<'_>,
    warnings: &mut Vec<String>,
) -> PolicyOutcome {
    let (TemplateDecision::Generate, Some(source)) = (&analysis.decision, &analysis.source) else {
        return PolicyOutcome::None;
    };
    let input = transform::Input {
        template_name: &analysis.name,
        kind: &analysis.kind,
        uid: analysis.uid.as_deref(),
        source,
        operations: analysis.operations,
    };
    match transform::build(settings, &input, warnings) {
        Ok(vap) => PolicyOutcome::Desired(vap),
        Err(e) => PolicyOutcome::TransformError(e),
    }
}

/// Why no binding may exist for this template, or `None` when its VAP is desired.
fn binding_gate(decision: &TemplateDecision, policy: &PolicyOutcome) -> Option<NoBindingReason> {
    match (decision, policy) {
        (TemplateDecision::Generate, PolicyOutcome::Desired(_)) => None,
        (TemplateDecision::Skip(_), _) => Some(NoBindingReason::TemplateSkipped),
        (TemplateDecision::NotApplicable(_), _) => Some(NoBindingReason::TemplateNotApplicable),
        _ => Some(NoBindingReason::TemplateError),
    }
}
