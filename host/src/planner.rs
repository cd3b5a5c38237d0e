//! Planning a set of objects offline: group constraints by kind, run the decision module once
//! per kind, render the objects, and summarise. Used by `vapgen plan`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use vapgen_guest::model::{
    BindingOutcome, BindingPlan, KindPlan, PolicyOutcome, Settings, TemplateDecision,
};

use crate::crd;
use crate::manifest::SourcedObject;
use crate::render::{self, Owner};
use crate::runtime::{CallError, Decide};
use crate::{schema, snapshot};

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
    /// The kind's constraint CRD (what standalone mode creates), for a template with a kind
    /// and no error: `plan` emits it before the policy, whose `paramKind` it serves.
    pub crd: Option<Value>,
    /// Why a template with a kind has no CRD (its parameter schema is not an object).
    pub crd_problem: Option<String>,
    /// The rendered policy when one must exist.
    pub policy: Option<Value>,
    /// A rendering problem of the policy.
    pub policy_problem: Option<String>,
    /// What the offline CEL checks ([`crate::celcheck`]) found in the policy.
    pub cel: crate::celcheck::Findings,
    /// One per constraint of the kind.
    pub bindings: Vec<BindingReport>,
}

/// One error of a plan: what it is about, where that was read from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The object, e.g. `template k8srequiredlabels`, `constraint K8sRequiredLabels/owner`.
    pub subject: String,
    /// Where the object was read from (empty for the input as a whole).
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

impl PlanError {
    fn new(subject: impl Into<String>, origin: &str, message: impl Into<String>) -> Self {
        PlanError {
            subject: subject.into(),
            origin: origin.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.origin.is_empty() {
            write!(f, "{}: {}", self.subject, self.message)
        } else {
            write!(f, "{} ({}): {}", self.subject, self.origin, self.message)
        }
    }
}

/// The result of planning a set of objects.
#[derive(Debug, Default)]
pub struct PlanReport {
    /// Errors of the input as a whole: nothing to plan, duplicated or invalid names. The
    /// objects they name are not planned.
    pub problems: Vec<PlanError>,
    /// One per template.
    pub kinds: Vec<KindReport>,
    /// Constraints whose kind has no template in the input.
    pub orphans: Vec<(String, String, String)>,
    /// Objects that are neither templates nor constraints (nor scope sync's inputs).
    pub ignored: Vec<String>,
    /// What scope sync took from the inputs, when it took anything (see
    /// [`plan_with_scope_sync`]).
    pub scope_sync: Option<ScopeSyncUse>,
}

/// Scope sync as `vapgen plan` takes it (`--sync-vap-enforcement-scope`, on by default as in
/// `vapgen run`).
#[derive(Clone, Debug, Default)]
pub struct ScopeSyncOptions {
    /// The name of Gatekeeper's ValidatingWebhookConfiguration
    /// (`--validating-webhook-configuration-name`).
    pub webhook_configuration_name: String,
    /// The namespace of Gatekeeper's `Config` named `config` (`--gatekeeper-namespace`); a
    /// `Config` without a namespace is taken too.
    pub config_namespace: String,
    /// Exempt namespace patterns ([`snapshot::exempt_patterns`]).
    pub exempt_namespaces: Vec<String>,
}

/// What scope sync took from the inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSyncUse {
    /// The name of the ValidatingWebhookConfiguration looked for.
    pub webhook_configuration_name: String,
    /// Where the ValidatingWebhookConfiguration was read from; `None`: not in the input.
    pub webhook_configuration: Option<String>,
    /// Whether it has Gatekeeper's webhook ([`snapshot::GATEKEEPER_WEBHOOK`]); without it the
    /// VAPs have the default match rule, as `vapgen run` and Gatekeeper make them.
    pub webhook: bool,
    /// Where the `Config` was read from; `None`: not in the input.
    pub config: Option<String>,
    /// The namespaces the `Config` excludes for the webhook.
    pub excluded_namespaces: Vec<String>,
    /// The exempt namespace patterns.
    pub exempt_namespaces: Vec<String>,
}

impl ScopeSyncUse {
    /// One line for the summary.
    pub fn text(&self) -> String {
        let options_name = &self.webhook_configuration_name;
        let webhook = match (&self.webhook_configuration, self.webhook) {
            (Some(o), true) => format!(
                "webhook {} of ValidatingWebhookConfiguration {options_name} ({o})",
                snapshot::GATEKEEPER_WEBHOOK
            ),
            (Some(o), false) => format!(
                "ValidatingWebhookConfiguration {options_name} ({o}) has no webhook {}: the default match rule",
                snapshot::GATEKEEPER_WEBHOOK
            ),
            (None, _) => format!(
                "no ValidatingWebhookConfiguration {options_name} in the input: the default match rule"
            ),
        };
        let config = match &self.config {
            Some(o) => format!(
                "Config ({o}): {} excluded namespace(s) for the webhook",
                self.excluded_namespaces.len()
            ),
            None => "no Config in the input".to_string(),
        };
        format!(
            "scope sync: {webhook}; {config}; {} exempt namespace pattern(s)",
            self.exempt_namespaces.len()
        )
    }
}

/// [`plan`] with scope sync: with `scope` given, the ValidatingWebhookConfiguration named
/// `scope.webhook_configuration_name` and the `Config` named `config` (in
/// `scope.config_namespace` or without a namespace) are taken from `inputs`' other objects
/// and, with the exempt namespaces, turned into the module's scope-sync settings the way
/// `vapgen run` turns the watched objects into them ([`snapshot::ScopeInputs`]). Without
/// such objects the VAPs have the default match rule (as `vapgen run` and Gatekeeper make
/// them while the webhook configuration is absent). `scope: None` is [`plan`] with
/// `settings` as given.
pub fn plan_with_scope_sync(
    decider: &dyn Decide,
    settings: &Settings,
    inputs: &Inputs,
    scope: Option<&ScopeSyncOptions>,
) -> PlanReport {
    let Some(opts) = scope else {
        return plan(decider, settings, inputs);
    };
    let is_vwc = |o: &Value| {
        snapshot::is_webhook_configuration(o)
            && snapshot::name_of(o) == opts.webhook_configuration_name
    };
    let is_config = |o: &Value| {
        let ns = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        snapshot::is_gatekeeper_config(o)
            && snapshot::name_of(o) == "config"
            && (ns.is_empty() || ns == opts.config_namespace)
    };
    let vwc_at = inputs.ignored.iter().position(|o| is_vwc(&o.object));
    let config_at = inputs.ignored.iter().position(|o| is_config(&o.object));
    let vwc = vwc_at.map(|i| &inputs.ignored[i]);
    let config = config_at.map(|i| &inputs.ignored[i]);
    let scope_inputs =
        snapshot::ScopeInputs::from_objects(vwc.map(|o| &o.object), config.map(|o| &o.object));
    let used = ScopeSyncUse {
        webhook_configuration_name: opts.webhook_configuration_name.clone(),
        webhook_configuration: vwc.map(|o| o.origin.clone()),
        webhook: scope_inputs.webhook.is_some(),
        config: config.map(|o| o.origin.clone()),
        excluded_namespaces: scope_inputs.excluded_namespaces.clone(),
        exempt_namespaces: opts.exempt_namespaces.clone(),
    };
    let mut settings = settings.clone();
    settings.scope_sync = Some(scope_inputs.into_scope_sync(opts.exempt_namespaces.clone()));
    let mut report = plan(decider, &settings, inputs);
    // The two objects taken are inputs, not ignored ones: `plan` lists `inputs.ignored` in
    // order, one line each, so drop their lines rather than copy every input without them.
    let mut at = 0;
    report.ignored.retain(|_| {
        let taken = Some(at) == vwc_at || Some(at) == config_at;
        at += 1;
        !taken
    });
    if vwc.is_some() || config.is_some() || !opts.exempt_namespaces.is_empty() {
        report.scope_sync = Some(used);
    }
    report
}

/// Plans every template of `inputs` with its constraints.
///
/// Input errors are reported in [`PlanReport::problems`] and the objects they name are left
/// out: no templates or constraints at all, a second template of the same name or kind, a
/// second constraint of the same kind and name, a template or constraint whose name is not a
/// valid object name (a lowercase RFC 1123 subdomain, which the API server requires).
pub fn plan(decider: &dyn Decide, settings: &Settings, inputs: &Inputs) -> PlanReport {
    let mut report = PlanReport::default();
    if inputs.templates.is_empty() && inputs.constraints.is_empty() {
        report.problems.push(PlanError::new(
            "input",
            "",
            format!(
                "no ConstraintTemplate or constraint found ({} other object(s))",
                inputs.ignored.len()
            ),
        ));
    }
    let mut templates: Vec<&SourcedObject> = Vec::new();
    let mut template_names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut template_kinds: BTreeMap<&str, &str> = BTreeMap::new();
    for t in &inputs.templates {
        let name = snapshot::name_of(&t.object);
        let subject = format!("template {name}");
        if let Some(first) = template_names.get(name) {
            report.problems.push(PlanError::new(
                subject,
                &t.origin,
                format!(
                    "duplicate ConstraintTemplate name (first in {first}); this one is not planned"
                ),
            ));
            continue;
        }
        if let Some(kind) = snapshot::template_kind(&t.object).filter(|k| !k.is_empty()) {
            if let Some(first) = template_kinds.get(kind) {
                report.problems.push(PlanError::new(
                    subject,
                    &t.origin,
                    format!("a second template of kind {kind} (first in {first}); this one is not planned"),
                ));
                continue;
            }
            template_kinds.insert(kind, &t.origin);
        }
        if let Err(why) = check_name(name) {
            report
                .problems
                .push(PlanError::new(subject, &t.origin, why.to_string()));
            continue;
        }
        template_names.insert(name, &t.origin);
        templates.push(t);
    }
    let mut by_kind: BTreeMap<&str, Vec<&SourcedObject>> = BTreeMap::new();
    let mut constraint_names: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for c in &inputs.constraints {
        let kind = snapshot::kind_of(&c.object);
        let name = snapshot::name_of(&c.object);
        let subject = format!("constraint {kind}/{name}");
        if let Some(first) = constraint_names.get(&(kind, name)) {
            report.problems.push(PlanError::new(
                subject,
                &c.origin,
                format!("duplicate constraint (first in {first}); this one is not planned"),
            ));
            continue;
        }
        if let Err(why) = check_name(name) {
            report
                .problems
                .push(PlanError::new(subject, &c.origin, why.to_string()));
            continue;
        }
        if let Err(why) = check_selectors(&c.object) {
            report
                .problems
                .push(PlanError::new(subject, &c.origin, why.to_string()));
            continue;
        }
        constraint_names.insert((kind, name), &c.origin);
        by_kind.entry(kind).or_default().push(c);
    }
    let mut planned_kinds = std::collections::BTreeSet::new();
    for t in templates {
        let kind = snapshot::template_kind(&t.object).unwrap_or("");
        let constraints: &[&SourcedObject] = by_kind.get(kind).map(Vec::as_slice).unwrap_or(&[]);
        if !kind.is_empty() {
            planned_kinds.insert(kind);
        }
        let constraints = fitting_constraints(t, constraints, &mut report.problems);
        report
            .kinds
            .push(plan_one(decider, settings, t, &constraints));
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

/// Why a constraint's `spec.match` is refused where Gatekeeper runs: a selector that is no
/// label selector (its webhook; what its constraint CRD's schema refuses is
/// [`fitting_constraints`]'s). Such a constraint never exists there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct MatchError {
    /// The field, e.g. `spec.match.labelSelector.matchExpressions[0].values`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Checks `spec.match.labelSelector` and `spec.match.namespaceSelector` of a constraint as the
/// API server checks a label selector's expressions: `In`/`NotIn` need values,
/// `Exists`/`DoesNotExist` take none, no other operator, a key is given. (Keys and values are
/// not checked for the label syntax.)
pub fn check_selectors(constraint: &Value) -> Result<(), MatchError> {
    for sel in ["labelSelector", "namespaceSelector"] {
        let Some(exprs) = constraint
            .pointer(&format!("/spec/match/{sel}/matchExpressions"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for (i, e) in exprs.iter().enumerate() {
            let at = format!("spec.match.{sel}.matchExpressions[{i}]");
            let values = e
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let fail = |field: &str, problem: &str| MatchError {
                field: format!("{at}{field}"),
                problem: problem.to_string(),
            };
            if e.get("key")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(fail(".key", "Required value"));
            }
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" | "NotIn" if values == 0 => {
                    return Err(fail(
                        ".values",
                        "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
                "Exists" | "DoesNotExist" if values > 0 => {
                    return Err(fail(
                        ".values",
                        "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(fail(
                        ".operator",
                        &format!("Invalid value: {other:?}: not a valid selector operator"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The constraints of `template`'s kind that its constraint CRD's schema admits (Gatekeeper's
/// schema: [`crd::constraint_schema`] with [`crd::parameters_schema`]); each refused one is a
/// problem, as Gatekeeper's webhook and the API server refuse it and it never exists. A
/// template whose parameter schema is no object has no CRD, so nothing is checked here.
fn fitting_constraints<'a>(
    template: &SourcedObject,
    constraints: &[&'a SourcedObject],
    problems: &mut Vec<PlanError>,
) -> Vec<&'a SourcedObject> {
    let Ok(params) = crd::parameters_schema(&template.object) else {
        return constraints.to_vec();
    };
    let schema = crd::constraint_schema(params);
    let validator = schema::Validator::new(&schema);
    let mut fit = Vec::with_capacity(constraints.len());
    for c in constraints {
        match validator.validate(&c.object) {
            Ok(()) => fit.push(*c),
            Err(why) => problems.push(PlanError::new(
                format!(
                    "constraint {}/{}",
                    snapshot::kind_of(&c.object),
                    snapshot::name_of(&c.object)
                ),
                &c.origin,
                format!("its constraint CRD refuses it: {why}"),
            )),
        }
    }
    fit
}

/// Why a name is no valid object name (see [`check_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("metadata.name is missing")]
    Missing,
    /// The name is longer than 253 characters (its length).
    #[error("metadata.name is {0} characters long; an object name has at most 253")]
    TooLong(usize),
    /// The name has other characters, or a label starts or ends with '-' or '.'.
    #[error(
        "metadata.name {0:?} is not a valid object name (a lowercase RFC 1123 subdomain: a-z, 0-9, '-' and '.', starting and ending with a letter or digit)"
    )]
    Invalid(String),
}

/// Whether `name` is a valid object name: a lowercase RFC 1123 subdomain of at most 253
/// characters (`[a-z0-9]([-a-z0-9]*[a-z0-9])?` labels joined by `.`), as the API server
/// checks `metadata.name` of CRDs, custom resources, VAPs and bindings.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Missing);
    }
    if name.len() > 253 {
        return Err(NameError::TooLong(name.len()));
    }
    let ok = name.split('.').all(|label| {
        let b = label.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid(name.to_string()))
    }
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
        crd: None,
        crd_problem: None,
        policy: None,
        policy_problem: None,
        cel: crate::celcheck::Findings::default(),
        bindings: Vec::new(),
    };
    let Ok(plan) = &report.plan else {
        return report;
    };
    // The same rule as standalone mode: only a template without errors gets a CRD.
    if !plan.kind.is_empty() && !matches!(plan.decision, TemplateDecision::Error(_)) {
        match crd::constraint_crd(&template.object, &plan.kind) {
            Ok(v) => report.crd = Some(v),
            Err(e) => report.crd_problem = Some(e.to_string()),
        }
    }
    if let PolicyOutcome::Desired(json) = &plan.policy {
        match render::policy_object(json, &plan.policy_name).and_then(checked) {
            Ok(v) => {
                report.cel = crate::celcheck::check_policy(&v);
                report.policy = Some(v);
            }
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
            match render::binding_object(spec, Some(&owner)).and_then(checked) {
                Ok(v) => br.object = Some(v),
                Err(e) => br.problem = Some(e.to_string()),
            }
        }
        report.bindings.push(br);
    }
    report
}

/// `object` when its name is a valid object name (a module may return any name).
fn checked(object: Value) -> Result<Value, render::RenderError> {
    let name = snapshot::name_of(&object);
    match check_name(name) {
        Ok(()) => Ok(object),
        Err(why) => Err(render::RenderError::InvalidName(why.to_string())),
    }
}

impl PlanReport {
    /// Every object to write: the constraint CRDs first (with `crds`), then the policies,
    /// then the bindings. Without its CRD a policy's `paramKind` does not exist, and the API
    /// server then fails every request the policy's bindings match: with `failurePolicy:
    /// Fail`, it denies them.
    pub fn objects(&self, crds: bool) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        if crds {
            out.extend(self.kinds.iter().filter_map(|k| k.crd.clone()));
        }
        out.extend(self.kinds.iter().filter_map(|k| k.policy.clone()));
        for k in &self.kinds {
            out.extend(k.bindings.iter().filter_map(|b| b.object.clone()));
        }
        out
    }

    /// Every error: input problems, module and template errors, transform errors, binding
    /// errors, rendering problems and constraints without a template, in input order.
    pub fn errors(&self) -> Vec<PlanError> {
        let mut out = self.problems.clone();
        for k in &self.kinds {
            let subject = format!("template {}", k.template_name);
            let plan = match &k.plan {
                Err(e) => {
                    out.push(PlanError::new(subject, &k.origin, e.to_string()));
                    continue;
                }
                Ok(p) => p,
            };
            if let TemplateDecision::Error(m) = &plan.decision {
                out.push(PlanError::new(subject.clone(), &k.origin, m.clone()));
            }
            if let PolicyOutcome::TransformError(m) = &plan.policy {
                out.push(PlanError::new(
                    format!("policy {}", plan.policy_name),
                    &k.origin,
                    m.clone(),
                ));
            }
            if let Some(p) = &k.policy_problem {
                out.push(PlanError::new(
                    format!("policy {}", plan.policy_name),
                    &k.origin,
                    p.clone(),
                ));
            }
            for e in &k.cel.errors {
                out.push(PlanError::new(
                    format!("policy {}", plan.policy_name),
                    &k.origin,
                    e.clone(),
                ));
            }
            if let Some(p) = &k.crd_problem {
                out.push(PlanError::new(
                    format!("constraint CRD of {subject}"),
                    &k.origin,
                    p.clone(),
                ));
            }
            for b in &k.bindings {
                let subject = format!("constraint {}/{}", plan.kind, b.plan.constraint);
                if let BindingOutcome::Error(e) = &b.plan.outcome {
                    out.push(PlanError::new(subject.clone(), &b.origin, e.clone()));
                }
                if let Some(p) = &b.problem {
                    out.push(PlanError::new(subject, &b.origin, p.clone()));
                }
            }
        }
        for (origin, kind, name) in &self.orphans {
            out.push(PlanError::new(
                format!("constraint {kind}/{name}"),
                origin,
                format!("no ConstraintTemplate defines kind {kind:?} in the input"),
            ));
        }
        out
    }

    /// Number of [`errors`](Self::errors).
    pub fn error_count(&self) -> usize {
        self.errors().len()
    }

    /// The summary as one JSON document (`vapgen plan --summary=json`): per template its
    /// kind, decision, policy, CRD and constraints; every error; and the counts.
    pub fn summary_json(&self) -> Value {
        use serde_json::json;
        let templates: Vec<Value> = self
            .kinds
            .iter()
            .map(|k| match &k.plan {
                Err(e) => {
                    json!({"name": k.template_name, "origin": k.origin, "error": e.to_string()})
                }
                Ok(p) => json!({
                    "name": k.template_name,
                    "origin": k.origin,
                    "kind": p.kind,
                    "decision": decision_text(&p.decision),
                    "policy": {
                        "name": p.policy_name,
                        "generated": k.policy.is_some(),
                    },
                    "crd": k.crd.as_ref().map(|c| snapshot::name_of(c).to_string()),
                    "warnings": p.warnings.iter().chain(&k.cel.warnings).collect::<Vec<_>>(),
                    "constraints": k.bindings.iter().map(|b| json!({
                        "name": b.plan.constraint,
                        "origin": b.origin,
                        "outcome": binding_text(&b.plan),
                        "binding": b.object.as_ref().map(|o| snapshot::name_of(o).to_string()),
                        "warnings": b.plan.warnings,
                    })).collect::<Vec<_>>(),
                }),
            })
            .collect();
        let errors: Vec<Value> = self
            .errors()
            .iter()
            .map(|e| json!({"subject": e.subject, "origin": e.origin, "message": e.message}))
            .collect();
        let mut doc = json!({
            "templates": templates,
            "ignored": self.ignored,
            "counts": {
                "templates": self.kinds.len(),
                "crds": self.kinds.iter().filter(|k| k.crd.is_some()).count(),
                "policies": self.kinds.iter().filter(|k| k.policy.is_some()).count(),
                "bindings": self.kinds.iter().map(|k| k.bindings.iter().filter(|b| b.object.is_some()).count()).sum::<usize>(),
                "errors": errors.len(),
            },
            "errors": errors,
        });
        if let Some(u) = &self.scope_sync {
            doc["scopeSync"] = json!({
                "webhookConfiguration": u.webhook_configuration,
                "webhook": u.webhook,
                "config": u.config,
                "excludedNamespaces": u.excluded_namespaces,
                "exemptNamespaces": u.exempt_namespaces,
            });
        }
        doc
    }

    /// A readable summary, one line per template and constraint.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for p in &self.problems {
            let _ = writeln!(s, "ERROR: {p}");
        }
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
            if let Some(p) = &k.crd_problem {
                let _ = writeln!(s, "  constraint CRD: ERROR: {p}");
            }
            for e in &k.cel.errors {
                let _ = writeln!(s, "  policy {}: ERROR: {e}", plan.policy_name);
            }
            for w in plan.warnings.iter().chain(&k.cel.warnings) {
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
        if let Some(u) = &self.scope_sync {
            let _ = writeln!(s, "{}", u.text());
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
