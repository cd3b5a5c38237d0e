//! The binding decision for one constraint: enforcement action (§1.3), intent (§3.1),
//! action mapping (§3.2, with the [REC] de-duplication and Deny+Warn check), the outcome
//! (§3.3, the rows that need no cluster) and the binding content (§3.4).
//!
//! Order of checks: constraint validity errors, then no intent, then the template gate
//! (decision not Generate, or no VAP content), then the binding.

use crate::json::quote;
use crate::model::{
    BindingOutcome, BindingPlan, BindingSpec, Constraint, EnforcementAction, NoBindingReason,
    Settings, ValidationAction,
};
use crate::naming;
use crate::text::{fill, join, num};

/// The enforcement point of the VAP.
pub const VAP_POINT: &str = "vap.k8s.io";

/// Every valid enforcement-point name.
pub const ENFORCEMENT_POINTS: [&str; 5] = [
    "validation.gatekeeper.sh",
    "audit.gatekeeper.sh",
    "gator.gatekeeper.sh",
    VAP_POINT,
    "*",
];

/// [`ENFORCEMENT_POINTS`] for messages.
const ENFORCEMENT_POINTS_TEXT: &str =
    "validation.gatekeeper.sh, audit.gatekeeper.sh, gator.gatekeeper.sh, vap.k8s.io, *";

/// The actions allowed in `scopedEnforcementActions`.
const SCOPED_ACTIONS: [&str; 3] = ["deny", "dryrun", "warn"];

/// Gatekeeper's `GetEnforcementAction`: absent or empty is `deny`; exact spelling only.
pub fn parse_action(action: Option<&str>) -> EnforcementAction {
    match action.unwrap_or_default() {
        "" | "deny" => EnforcementAction::Deny,
        "dryrun" => EnforcementAction::Dryrun,
        "warn" => EnforcementAction::Warn,
        "scoped" => EnforcementAction::Scoped,
        _ => EnforcementAction::Unrecognized,
    }
}

/// What is the same for every constraint of one kind (computed once per plan).
#[derive(Clone, Debug)]
pub struct KindContext {
    /// `lower(kind)`.
    pub lower_kind: String,
    /// `gatekeeper-<lower(kind)>`.
    pub policy_name: String,
    /// `None` when the template's VAP is desired, otherwise why no binding may exist.
    pub gate: Option<NoBindingReason>,
}

impl KindContext {
    /// The context for `kind`.
    pub fn new(kind: &str, gate: Option<NoBindingReason>) -> Self {
        KindContext {
            lower_kind: kind.to_ascii_lowercase(),
            policy_name: naming::binding_policy_name(kind),
            gate,
        }
    }
}

/// Plans one constraint.
pub fn plan(settings: &Settings, kind: &KindContext, c: &Constraint) -> BindingPlan {
    let action = parse_action(c.enforcement_action.as_deref());
    let intended = intended_actions(settings, action, c);
    let binding_name = naming::binding_name_for_lower_kind(&kind.lower_kind, &c.name);
    let outcome = outcome(kind, action, &intended, c, &binding_name);
    BindingPlan {
        constraint: c.name.clone(),
        binding_name,
        legacy_binding_name: naming::legacy_binding_name(&c.name),
        enforcement_action: action,
        intends_binding: !intended.is_empty(),
        outcome,
        warnings: warnings(action, c),
    }
}

fn outcome(
    kind: &KindContext,
    action: EnforcementAction,
    intended: &[&str],
    c: &Constraint,
    binding_name: &str,
) -> BindingOutcome {
    if let Err(e) = validate(action, c) {
        return BindingOutcome::Error(e);
    }
    if intended.is_empty() {
        return BindingOutcome::None(NoBindingReason::NoIntent);
    }
    let actions = match validation_actions(intended) {
        Ok(a) => a,
        Err(e) => return BindingOutcome::Error(e),
    };
    if let Some(reason) = kind.gate {
        return BindingOutcome::None(reason);
    }
    BindingOutcome::Bind(BindingSpec {
        name: binding_name.to_string(),
        policy_name: kind.policy_name.clone(),
        param_name: c.name.clone(),
        validation_actions: actions,
        object_selector: c.label_selector.clone(),
        namespace_selector: c.namespace_selector.clone(),
    })
}

/// §3.1: the Gatekeeper actions that apply to the VAP. Scoped: the actions of the entries
/// naming `vap.k8s.io` or `*` (the binding flag is ignored). Otherwise: the constraint's
/// action when the binding flag is on, nothing when it is off.
fn intended_actions<'a>(
    settings: &Settings,
    action: EnforcementAction,
    c: &'a Constraint,
) -> Vec<&'a str> {
    match action {
        EnforcementAction::Scoped => c
            .scoped_enforcement_actions
            .iter()
            .flatten()
            .filter(|e| {
                e.enforcement_points
                    .iter()
                    .any(|p| p == VAP_POINT || p == "*")
            })
            .map(|e| e.action.as_str())
            .collect(),
        _ if !settings.default_create_vap_binding_for_constraints => Vec::new(),
        EnforcementAction::Deny => vec!["deny"],
        EnforcementAction::Dryrun => vec!["dryrun"],
        EnforcementAction::Warn => vec!["warn"],
        EnforcementAction::Unrecognized => vec![c.enforcement_action.as_deref().unwrap_or("")],
    }
}

/// §3.2 with [REC]: deny→Deny, warn→Warn, dryrun→Audit, de-duplicated, in the order Deny,
/// Warn, Audit; Deny together with Warn is an error (the API server forbids it).
fn validation_actions(intended: &[&str]) -> Result<Vec<ValidationAction>, String> {
    // A set indexed like ORDER: no sort, no dedup (both cost wasm size).
    const ORDER: [ValidationAction; 3] = [
        ValidationAction::Deny,
        ValidationAction::Warn,
        ValidationAction::Audit,
    ];
    let mut set = [false; 3];
    for a in intended {
        let k = match *a {
            "deny" => 0,
            "warn" => 1,
            "dryrun" => 2,
            other => {
                return Err(fill(
                    "invalid enforcement action {a} for vap.k8s.io",
                    &[("a", &quote(other))],
                ));
            }
        };
        set[k] = true;
    }
    if set[0] && set[1] {
        return Err(
            "spec.scopedEnforcementActions asks for both deny and warn on vap.k8s.io; \
                    a ValidatingAdmissionPolicyBinding cannot have both Deny and Warn \
                    (kubernetes/kubernetes#115973): keep only one of them for vap.k8s.io and \"*\""
                .to_string(),
        );
    }
    Ok(ORDER
        .into_iter()
        .zip(set)
        .filter_map(|(a, on)| on.then_some(a))
        .collect())
}

/// The constraint checks Gatekeeper's admission webhook makes, plus the host's findings.
fn validate(action: EnforcementAction, c: &Constraint) -> Result<(), String> {
    if !c.malformed.is_empty() {
        return Err(fill(
            "malformed constraint: {m}",
            &[("m", &join(&c.malformed, "; "))],
        ));
    }
    if c.name.is_empty() {
        return Err("the constraint has no metadata.name".to_string());
    }
    if !constraint_name_ok(&c.name) {
        return Err(fill(
            "metadata.name {n} is not a valid constraint name: Gatekeeper's constraint CRD \
             allows at most 63 characters, and a name is a DNS-1123 subdomain (lowercase \
             letters, digits, '-' and '.', starting and ending with a letter or digit)",
            &[("n", &quote(&c.name))],
        ));
    }
    if action == EnforcementAction::Unrecognized {
        return Err(fill(
            "unrecognized spec.enforcementAction {a}; allowed values: deny, dryrun, warn, \
             scoped (empty or absent means deny)",
            &[("a", &quote(c.enforcement_action.as_deref().unwrap_or("")))],
        ));
    }
    if action == EnforcementAction::Scoped {
        validate_scoped(c)?;
    }
    // Selectors are copied verbatim; the host reports their shape problems in `malformed`.
    Ok(())
}

/// frameworks' `ValidateCR` (a DNS-1123 subdomain) and its constraint CRD schema
/// (`metadata.name` MaxLength 63).
fn constraint_name_ok(name: &str) -> bool {
    // Byte loops only: `str::contains` would pull the substring searcher into the wasm.
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || b.len() > 63 || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut prev = b[0];
    for &c in b {
        // Each dot-separated label starts and ends with a letter or digit.
        let ok = alnum(c) || (c == b'-' && prev != b'.') || (c == b'.' && alnum(prev));
        if !ok {
            return false;
        }
        prev = c;
    }
    true
}

/// Gatekeeper's `ValidateScopedEnforcementAction`.
fn validate_scoped(c: &Constraint) -> Result<(), String> {
    let entries = match &c.scoped_enforcement_actions {
        None => {
            return Err(
                "spec.enforcementAction is scoped but spec.scopedEnforcementActions is \
                        missing; add at least one {action, enforcementPoints} entry"
                    .to_string(),
            );
        }
        // As Gatekeeper (issue #13, F4): an empty list is valid and names no enforcement
        // point, so no binding and no error (a warning says so).
        Some(e) if e.is_empty() => return Ok(()),
        Some(e) => e,
    };
    for (i, e) in entries.iter().enumerate() {
        let path = fill("spec.scopedEnforcementActions[{i}]", &[("i", &num(i))]);
        if !SCOPED_ACTIONS.contains(&e.action.as_str()) {
            return Err(fill(
                "{path}.action {a} is not valid; allowed values: {all}",
                &[
                    ("path", &path),
                    ("a", &quote(&e.action)),
                    ("all", "deny, dryrun, warn"),
                ],
            ));
        }
        if e.enforcement_points.is_empty() {
            return Err(fill("{path} has no enforcementPoints", &[("path", &path)]));
        }
        if let Some(p) = e
            .enforcement_points
            .iter()
            .find(|p| !ENFORCEMENT_POINTS.contains(&p.as_str()))
        {
            return Err(fill(
                "{path}.enforcementPoints names the unknown enforcement point {p}; valid \
                 names: {all}",
                &[
                    ("path", &path),
                    ("p", &quote(p)),
                    ("all", ENFORCEMENT_POINTS_TEXT),
                ],
            ));
        }
    }
    Ok(())
}

fn warnings(action: EnforcementAction, c: &Constraint) -> Vec<String> {
    if action == EnforcementAction::Scoped
        && c.scoped_enforcement_actions
            .as_ref()
            .is_some_and(|e| e.is_empty())
    {
        return vec![
            "spec.scopedEnforcementActions is empty: the constraint is enforced at no \
             enforcement point (Gatekeeper accepts it too)"
                .to_string(),
        ];
    }
    if action != EnforcementAction::Scoped && c.scoped_enforcement_actions.is_some() {
        return vec![
            "spec.scopedEnforcementActions is ignored because spec.enforcementAction is not \
             scoped"
                .to_string(),
        ];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ScopedAction;
    use BindingOutcome as O;
    use EnforcementAction as E;
    use ValidationAction::*;

    fn constraint(action: Option<&str>) -> Constraint {
        Constraint {
            name: "c1".into(),
            uid: "u1".into(),
            generation: 1,
            enforcement_action: action.map(str::to_string),
            ..Constraint::default()
        }
    }

    fn scoped(entries: &[(&str, &[&str])]) -> Constraint {
        Constraint {
            scoped_enforcement_actions: Some(
                entries
                    .iter()
                    .map(|(a, points)| ScopedAction {
                        action: a.to_string(),
                        enforcement_points: points.iter().map(|p| p.to_string()).collect(),
                    })
                    .collect(),
            ),
            ..constraint(Some("scoped"))
        }
    }

    fn settings(binding_flag: bool) -> Settings {
        Settings {
            default_create_vap_binding_for_constraints: binding_flag,
            ..Settings::default()
        }
    }

    fn run(flag: bool, c: &Constraint) -> BindingPlan {
        plan(&settings(flag), &KindContext::new("K8sFoo", None), c)
    }

    fn actions(p: &BindingPlan) -> Vec<ValidationAction> {
        match &p.outcome {
            O::Bind(s) => s.validation_actions.clone(),
            o => panic!("expected a binding, got {o:?}"),
        }
    }

    fn error(p: &BindingPlan) -> &str {
        match &p.outcome {
            O::Error(e) => e,
            o => panic!("expected an error, got {o:?}"),
        }
    }

    #[test]
    fn enforcement_action_parsing() {
        assert_eq!(parse_action(None), E::Deny);
        assert_eq!(parse_action(Some("")), E::Deny);
        assert_eq!(parse_action(Some("deny")), E::Deny);
        assert_eq!(parse_action(Some("dryrun")), E::Dryrun);
        assert_eq!(parse_action(Some("warn")), E::Warn);
        assert_eq!(parse_action(Some("scoped")), E::Scoped);
        for odd in ["Deny", "DENY", "audit", " deny", "x"] {
            assert_eq!(parse_action(Some(odd)), E::Unrecognized, "{odd}");
        }
    }

    #[test]
    fn default_binding_content() {
        // Acceptance test 8.
        let p = run(true, &constraint(None));
        assert_eq!(p.constraint, "c1");
        assert_eq!(p.binding_name, "gatekeeper-k8sfoo-c1");
        assert_eq!(p.legacy_binding_name.as_deref(), Some("gatekeeper-c1"));
        assert_eq!(p.enforcement_action, E::Deny);
        assert!(p.intends_binding);
        assert_eq!(
            p.outcome,
            O::Bind(BindingSpec {
                name: "gatekeeper-k8sfoo-c1".into(),
                policy_name: "gatekeeper-k8sfoo".into(),
                param_name: "c1".into(),
                validation_actions: vec![Deny],
                object_selector: None,
                namespace_selector: None,
            })
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn action_mapping() {
        // Acceptance test 9.
        assert_eq!(actions(&run(true, &constraint(Some("deny")))), [Deny]);
        assert_eq!(actions(&run(true, &constraint(Some("warn")))), [Warn]);
        assert_eq!(actions(&run(true, &constraint(Some("dryrun")))), [Audit]);
        assert_eq!(actions(&run(true, &constraint(Some("")))), [Deny]);
    }

    #[test]
    fn binding_flag_off_means_no_intent() {
        // Acceptance test 7.
        for a in [None, Some("deny"), Some("warn"), Some("dryrun")] {
            let p = run(false, &constraint(a));
            assert!(!p.intends_binding);
            assert_eq!(p.outcome, O::None(NoBindingReason::NoIntent));
        }
    }

    #[test]
    fn scoped_ignores_the_flag() {
        // Acceptance test 10.
        let c = scoped(&[
            ("warn", &["vap.k8s.io"]),
            ("deny", &["validation.gatekeeper.sh"]),
        ]);
        for flag in [false, true] {
            let p = run(flag, &c);
            assert_eq!(p.enforcement_action, E::Scoped);
            assert!(p.intends_binding);
            assert_eq!(actions(&p), [Warn]);
        }
    }

    #[test]
    fn scoped_star_point() {
        // Acceptance test 11.
        let c = scoped(&[("deny", &["*"]), ("warn", &["audit.gatekeeper.sh"])]);
        assert_eq!(actions(&run(true, &c)), [Deny]);
        // Example C variant: dryrun on "*".
        assert_eq!(actions(&run(true, &scoped(&[("dryrun", &["*"])]))), [Audit]);
    }

    #[test]
    fn scoped_without_vap_point_has_no_intent() {
        // Acceptance test 12.
        let c = scoped(&[("deny", &["validation.gatekeeper.sh", "audit.gatekeeper.sh"])]);
        let p = run(true, &c);
        assert!(!p.intends_binding);
        assert_eq!(p.outcome, O::None(NoBindingReason::NoIntent));
    }

    #[test]
    fn duplicates_are_removed_and_order_is_fixed() {
        let c = scoped(&[
            ("dryrun", &["vap.k8s.io"]),
            ("deny", &["*"]),
            ("deny", &["vap.k8s.io"]),
            ("dryrun", &["*"]),
        ]);
        assert_eq!(actions(&run(true, &c)), [Deny, Audit]);
        let c = scoped(&[("dryrun", &["vap.k8s.io"]), ("warn", &["vap.k8s.io", "*"])]);
        assert_eq!(actions(&run(true, &c)), [Warn, Audit]);
    }

    #[test]
    fn deny_with_warn_is_an_error() {
        // Acceptance test 39.
        let c = scoped(&[("deny", &["vap.k8s.io"]), ("warn", &["vap.k8s.io"])]);
        let p = run(true, &c);
        assert!(p.intends_binding);
        assert!(error(&p).contains("both Deny and Warn"));
        // Example C variant: deny on "*" plus warn on vap.k8s.io.
        let c = scoped(&[("deny", &["*"]), ("warn", &["vap.k8s.io"])]);
        assert!(error(&run(true, &c)).contains("both Deny and Warn"));
        // Even when the template would give no binding: the constraint is invalid.
        let gate = Some(NoBindingReason::TemplateSkipped);
        let p = plan(&settings(true), &KindContext::new("K", gate), &c);
        assert!(matches!(p.outcome, O::Error(_)));
    }

    #[test]
    fn scoped_errors() {
        // Acceptance test 40.
        let mut c = constraint(Some("scoped"));
        let p = run(true, &c);
        assert!(!p.intends_binding);
        assert!(error(&p).contains("scopedEnforcementActions is missing"));
        // F4: an empty list is no error (as Gatekeeper), and no binding.
        c.scoped_enforcement_actions = Some(Vec::new());
        let p = run(true, &c);
        assert_eq!(p.outcome, O::None(NoBindingReason::NoIntent));
        assert!(!p.intends_binding);
        assert!(p.warnings[0].contains("scopedEnforcementActions is empty"));
        let p = run(true, &scoped(&[("deny", &[])]));
        assert!(error(&p).contains("[0] has no enforcementPoints"));
        let p = run(
            true,
            &scoped(&[
                ("deny", &["vap.k8s.io"]),
                ("deny", &["vap.k8s.io", "webhook"]),
            ]),
        );
        let e = error(&p);
        assert!(
            e.contains("[1].enforcementPoints") && e.contains("\"webhook\""),
            "{e}"
        );
        assert!(e.contains(
            "validation.gatekeeper.sh, audit.gatekeeper.sh, gator.gatekeeper.sh, vap.k8s.io, *"
        ));
        let p = run(true, &scoped(&[("audit", &["vap.k8s.io"])]));
        let e = error(&p);
        assert!(
            e.contains("[0].action \"audit\"") && e.contains("deny, dryrun, warn"),
            "{e}"
        );
        // An invalid entry that does not even name vap.k8s.io still makes the constraint invalid.
        let p = run(
            true,
            &scoped(&[
                ("deny", &["vap.k8s.io"]),
                ("scoped", &["audit.gatekeeper.sh"]),
            ]),
        );
        assert!(error(&p).contains("[1].action"));
    }

    #[test]
    fn unrecognized_action_is_an_error() {
        let p = run(true, &constraint(Some("Deny")));
        assert_eq!(p.enforcement_action, E::Unrecognized);
        assert!(p.intends_binding, "non-scoped intent follows the flag");
        let e = error(&p);
        assert!(
            e.contains("\"Deny\"") && e.contains("deny, dryrun, warn, scoped"),
            "{e}"
        );
        // Validity first, even without intent.
        let p = run(false, &constraint(Some("bogus")));
        assert!(!p.intends_binding);
        assert!(error(&p).contains("bogus"));
    }

    #[test]
    fn malformed_constraints_are_errors() {
        let mut c = constraint(None);
        c.malformed = vec!["a is not a list".into(), "b".into()];
        assert_eq!(
            error(&run(true, &c)),
            "malformed constraint: a is not a list; b"
        );
        let mut c = constraint(None);
        c.name.clear();
        assert!(error(&run(true, &c)).contains("no metadata.name"));
    }

    #[test]
    fn selectors_are_copied_verbatim() {
        // Acceptance test 13.
        let mut c = constraint(None);
        c.label_selector = Some(r#"{"matchLabels": {"team":"payments"}}"#.into());
        c.namespace_selector = Some(
            r#"{"matchExpressions":[{"key":"env","operator":"In","values":["prod"]}]}"#.into(),
        );
        let p = run(true, &c);
        let O::Bind(spec) = p.outcome else { panic!() };
        assert_eq!(spec.object_selector, c.label_selector);
        assert_eq!(spec.namespace_selector, c.namespace_selector);
    }

    #[test]
    fn template_gate() {
        // Rows B3–B5 as a pure function: intent holds, the template gives no VAP.
        for reason in [
            NoBindingReason::TemplateSkipped,
            NoBindingReason::TemplateNotApplicable,
            NoBindingReason::TemplateError,
        ] {
            let kind = KindContext::new("K8sFoo", Some(reason));
            let p = plan(&settings(true), &kind, &constraint(None));
            assert!(p.intends_binding);
            assert_eq!(p.outcome, O::None(reason));
            assert_eq!(
                p.binding_name, "gatekeeper-k8sfoo-c1",
                "the name is always filled"
            );
        }
        // Row B2: no intent wins over the template gate.
        let kind = KindContext::new("K8sFoo", Some(NoBindingReason::TemplateSkipped));
        let p = plan(&settings(false), &kind, &constraint(None));
        assert_eq!(p.outcome, O::None(NoBindingReason::NoIntent));
    }

    #[test]
    fn scoped_list_ignored_when_not_scoped() {
        let mut c = scoped(&[("warn", &["vap.k8s.io"])]);
        c.enforcement_action = Some("dryrun".into());
        let p = run(true, &c);
        assert_eq!(actions(&p), [Audit]);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("ignored"));
    }

    #[test]
    fn long_constraint_names() {
        // Gatekeeper's constraint CRD refuses names over 63 characters (F2); the names the
        // plan reports stay within 253 all the same.
        let mut c = constraint(None);
        c.name = "n".repeat(63);
        let O::Bind(spec) = run(true, &c).outcome else {
            panic!("63 characters bind")
        };
        assert_eq!(spec.param_name, c.name);
        c.name = "n".repeat(260);
        let p = run(true, &c);
        assert!(p.binding_name.len() <= 253);
        assert_eq!(p.legacy_binding_name, None);
        let O::Error(e) = p.outcome else { panic!() };
        assert!(e.contains("at most 63"), "{e}");
    }

    #[test]
    fn f2_names_gatekeeper_refuses_are_errors() {
        for bad in ["Upper", "-a", "a-", "a..b", "a.-b", "a_b", &"n".repeat(64)] {
            let mut c = constraint(None);
            c.name = bad.to_string();
            assert!(
                matches!(run(true, &c).outcome, O::Error(e) if e.contains("not a valid constraint name")),
                "{bad}"
            );
        }
        for fine in ["a", "a.b", "a-b-0", "0a"] {
            let mut c = constraint(None);
            c.name = fine.to_string();
            assert!(matches!(run(true, &c).outcome, O::Bind(_)), "{fine}");
        }
    }
}
