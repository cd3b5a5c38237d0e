//! Planning a set of objects offline: group constraints by kind, run the decision module once
//! per kind, render the objects, and summarise. Used by `vapgen plan`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use vapgen_guest::model::{
    BindingOutcome, BindingPlan, KindPlan, PolicyOutcome, Settings, TemplateDecision,
};

use crate::manifest::SourcedObject;
use crate::render::{self, Owner};
use crate::runtime::{CallError, Decide};
use crate::snapshot;

/// Objects sorted by role.
#[derive(Debug, Default)]
pub struct Inputs {
    /// ConstraintTemplates.
    pub templates: Vec<SourcedObject>,
    /// Constraints of any kind.
    pub constraints: Vec<SourcedObject>,
    /// Everything else (ignored, listed in the summary).
    pub ignored: Vec<SourcedObject>,
}

/// Sorts objects into templates, constraints and others.
pub fn classify(objects: Vec<SourcedObject>) -> Inputs {
    let mut inputs = Inputs::default();
    for o in objects {
        if snapshot::is_template(&o.object) {
            inputs.templates.push(o);
        } else if snapshot::is_constraint(&o.object) {
            inputs.constraints.push(o);
        } else {
            inputs.ignored.push(o);
        }
    }
    inputs
}

/// The result for one binding.
#[derive(Debug)]
pub struct BindingReport {
    /// Where the constraint was read from.
    pub origin: String,
    /// The module's plan.
    pub plan: BindingPlan,
    /// The rendered binding when one must exist.
    pub object: Option<Value>,
    /// A rendering problem (a module returned unusable content).
    pub problem: Option<String>,
}

/// The result for one template and its kind.
#[derive(Debug)]
pub struct KindReport {
    /// Where the template was read from.
    pub origin: String,
    /// `metadata.name` of the template.
    pub template_name: String,
    /// The module's plan, or why it could not plan.
    pub plan: Result<KindPlan, CallError>,
    /// The rendered policy when one must exist.
    pub policy: Option<Value>,
    /// A rendering problem of the policy.
    pub policy_problem: Option<String>,
    /// One per constraint of the kind.
    pub bindings: Vec<BindingReport>,
}

/// The result of planning a set of objects.
#[derive(Debug, Default)]
pub struct PlanReport {
    /// One per template.
    pub kinds: Vec<KindReport>,
    /// Constraints whose kind has no template in the input.
    pub orphans: Vec<(String, String, String)>,
    /// Objects that are neither templates nor constraints.
    pub ignored: Vec<String>,
}

/// Plans every template of `inputs` with its constraints.
pub fn plan(decider: &dyn Decide, settings: &Settings, inputs: &Inputs) -> PlanReport {
    let mut by_kind: BTreeMap<&str, Vec<&SourcedObject>> = BTreeMap::new();
    for c in &inputs.constraints {
        by_kind
            .entry(snapshot::kind_of(&c.object))
            .or_default()
            .push(c);
    }
    let mut report = PlanReport::default();
    let mut planned_kinds = std::collections::BTreeSet::new();
    for t in &inputs.templates {
        let kind = snapshot::template_kind(&t.object).unwrap_or("");
        let constraints: &[&SourcedObject] = by_kind.get(kind).map(Vec::as_slice).unwrap_or(&[]);
        if !kind.is_empty() {
            planned_kinds.insert(kind);
        }
        report
            .kinds
            .push(plan_one(decider, settings, t, constraints));
    }
    for (kind, cs) in &by_kind {
        if !planned_kinds.contains(kind) {
            for c in cs {
                report.orphans.push((
                    c.origin.clone(),
                    kind.to_string(),
                    snapshot::name_of(&c.object).to_string(),
                ));
            }
        }
    }
    report.ignored = inputs
        .ignored
        .iter()
        .map(|o| {
            format!(
                "{} ({} {})",
                o.origin,
                snapshot::kind_of(&o.object),
                snapshot::name_of(&o.object)
            )
        })
        .collect();
    report
}

fn plan_one(
    decider: &dyn Decide,
    settings: &Settings,
    template: &SourcedObject,
    constraints: &[&SourcedObject],
) -> KindReport {
    let records: Vec<_> = constraints
        .iter()
        .map(|c| snapshot::extract_constraint(&c.object))
        .collect();
    let plan = decider.plan_kind(settings, &template.object.to_string(), &records);
    let mut report = KindReport {
        origin: template.origin.clone(),
        template_name: snapshot::name_of(&template.object).to_string(),
        plan,
        policy: None,
        policy_problem: None,
        bindings: Vec::new(),
    };
    let Ok(plan) = &report.plan else {
        return report;
    };
    if let PolicyOutcome::Desired(json) = &plan.policy {
        match render::policy_object(json, &plan.policy_name) {
            Ok(v) => report.policy = Some(v),
            Err(e) => report.policy_problem = Some(e.to_string()),
        }
    }
    for (b, src) in plan.bindings.iter().zip(constraints) {
        let mut br = BindingReport {
            origin: src.origin.clone(),
            plan: b.clone(),
            object: None,
            problem: None,
        };
        if let BindingOutcome::Bind(spec) = &b.outcome {
            let uid = src
                .object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            let owner = Owner::constraint(&plan.kind, &b.constraint, uid);
            match render::binding_object(spec, Some(&owner)) {
                Ok(v) => br.object = Some(v),
                Err(e) => br.problem = Some(e.to_string()),
            }
        }
        report.bindings.push(br);
    }
    report
}

impl PlanReport {
    /// Every object to write: policies first, then bindings.
    pub fn objects(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self.kinds.iter().filter_map(|k| k.policy.clone()).collect();
        for k in &self.kinds {
            out.extend(k.bindings.iter().filter_map(|b| b.object.clone()));
        }
        out
    }

    /// Number of errors (template, policy, binding, module and rendering errors, orphans).
    pub fn error_count(&self) -> usize {
        let mut n = self.orphans.len();
        for k in &self.kinds {
            match &k.plan {
                Err(_) => n += 1,
                Ok(p) => {
                    n += usize::from(matches!(p.decision, TemplateDecision::Error(_)));
                    n += usize::from(matches!(p.policy, PolicyOutcome::TransformError(_)));
                    n += k
                        .bindings
                        .iter()
                        .filter(|b| matches!(b.plan.outcome, BindingOutcome::Error(_)))
                        .count();
                }
            }
            n += usize::from(k.policy_problem.is_some());
            n += k.bindings.iter().filter(|b| b.problem.is_some()).count();
        }
        n
    }

    /// A readable summary, one line per template and constraint.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for k in &self.kinds {
            let _ = writeln!(s, "template {} ({})", k.template_name, k.origin);
            let plan = match &k.plan {
                Ok(p) => p,
                Err(e) => {
                    let _ = writeln!(s, "  ERROR: {e}");
                    continue;
                }
            };
            let _ = writeln!(
                s,
                "  kind {}: {}",
                if plan.kind.is_empty() {
                    "<none>"
                } else {
                    &plan.kind
                },
                decision_text(&plan.decision)
            );
            match &plan.policy {
                PolicyOutcome::Desired(_) => {
                    let _ = writeln!(s, "  policy {}: generated", plan.policy_name);
                }
                PolicyOutcome::None => {
                    let _ = writeln!(s, "  policy {}: none", plan.policy_name);
                }
                PolicyOutcome::TransformError(e) => {
                    let _ = writeln!(s, "  policy {}: ERROR: {e}", plan.policy_name);
                }
            }
            if let Some(p) = &k.policy_problem {
                let _ = writeln!(s, "  policy {}: ERROR: {p}", plan.policy_name);
            }
            for w in &plan.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
            for b in &k.bindings {
                let _ = writeln!(
                    s,
                    "  constraint {}: {}",
                    b.plan.constraint,
                    binding_text(&b.plan)
                );
                if let Some(p) = &b.problem {
                    let _ = writeln!(s, "    ERROR: {p}");
                }
                for w in &b.plan.warnings {
                    let _ = writeln!(s, "    warning: {w}");
                }
            }
        }
        for (origin, kind, name) in &self.orphans {
            let _ = writeln!(
                s,
                "constraint {name} ({origin}): ERROR: no ConstraintTemplate defines kind {kind:?} in the input"
            );
        }
        for i in &self.ignored {
            let _ = writeln!(s, "ignored {i}: not a ConstraintTemplate or constraint");
        }
        let policies = self.kinds.iter().filter(|k| k.policy.is_some()).count();
        let bindings: usize = self
            .kinds
            .iter()
            .map(|k| k.bindings.iter().filter(|b| b.object.is_some()).count())
            .sum();
        let _ = writeln!(
            s,
            "{} template(s): {policies} policy(ies), {bindings} binding(s), {} error(s)",
            self.kinds.len(),
            self.error_count()
        );
        s
    }
}

/// A short text for a template decision.
pub fn decision_text(d: &TemplateDecision) -> String {
    use vapgen_guest::model::SkipReason;
    match d {
        TemplateDecision::Generate => "generate".into(),
        TemplateDecision::Skip(SkipReason::OptedOut) => "skip (source.generateVAP: false)".into(),
        TemplateDecision::Skip(SkipReason::FlagDefault) => {
            "skip (generateVAP absent and --default-create-vap-for-templates=false)".into()
        }
        TemplateDecision::NotApplicable(m) => format!("not applicable ({m})"),
        TemplateDecision::Error(m) => format!("ERROR: {m}"),
    }
}

/// A short text for a binding plan.
pub fn binding_text(b: &BindingPlan) -> String {
    use vapgen_guest::model::NoBindingReason as R;
    match &b.outcome {
        BindingOutcome::Bind(spec) => {
            let actions: Vec<&str> = spec.validation_actions.iter().map(|a| a.as_str()).collect();
            format!("binding {} [{}]", spec.name, actions.join(", "))
        }
        BindingOutcome::None(r) => format!(
            "no binding ({})",
            match r {
                R::NoIntent => "the constraint does not ask for one",
                R::TemplateSkipped => "the template does not generate a VAP",
                R::TemplateNotApplicable => "the template has no K8sNativeValidation code",
                R::TemplateError => "the template has an error",
            }
        ),
        BindingOutcome::Error(e) => format!("ERROR: {e}"),
    }
}
