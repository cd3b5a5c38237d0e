//! Test-only switches back to Gatekeeper's strategy (spec §5.7), kept out of the
//! reconcilers' own files. `vapgen run` never sets them.

use super::template::no_generate_reason;
use super::*;

/// Test-only switches that turn parts of the race fix (spec §5.7) back into Gatekeeper's
/// strategy. They exist so that `host/tests/explore.rs` can prove it detects R-a and R-b;
/// the controller never sets them (`vapgen run` has no flag for them).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Weakened {
    /// The constraint reconciler derives the decision from the cache's current copy of the
    /// template (and assumes the VAP exists) instead of reading the decision record.
    pub naive_template_reads: bool,
    /// Constraints are requeued only when a template pass creates or deletes the VAP
    /// (Gatekeeper's `triggerConstraintEvents`), not whenever the published decision changes.
    pub replay_on_vap_change_only: bool,
    /// The template reconciler leaves the kind's bindings to the constraint reconciler when
    /// the kind stops generating (Gatekeeper's template controller never deletes bindings).
    pub keep_bindings: bool,
}

impl Weakened {
    /// Gatekeeper's strategy: all three switches on.
    pub fn gatekeeper() -> Self {
        Weakened {
            naive_template_reads: true,
            replay_on_vap_change_only: true,
            keep_bindings: true,
        }
    }
}

/// Gatekeeper's strategy ([`Weakened::naive_template_reads`], test-only): the decision
/// derived from whatever copy of the template the cache holds now, with the VAP assumed to
/// exist (Gatekeeper's constraint controller does not look at it).
pub(super) fn record_from_cached_template<C: Cluster>(
    ctx: &Ctx<C>,
    kind: &str,
) -> Result<DecisionRecord, ReconcileError> {
    let template = ctx
        .world
        .read()
        .expect("world lock")
        .templates
        .get(&kind.to_ascii_lowercase())
        .cloned();
    let Some(template) = template else {
        return Ok(DecisionRecord {
            decision: Decision::Absent,
            template_uid: None,
            template_generation: 0,
            template_json: None,
            kind: kind.into(),
        });
    };
    let json = template_essence(&template).to_string();
    let plan = ctx
        .plan_kind(&ctx.current_settings(), &json, &[])
        .map_err(|e| ReconcileError::module(format!("kind {kind}"), e))?;
    let decision = match (&plan.decision, &plan.policy) {
        (TemplateDecision::Generate, PolicyOutcome::Desired(_)) => Decision::Generate {
            policy: PolicyState::Applied,
            readiness: Readiness::Ready,
        },
        _ => {
            let (reason, error) = no_generate_reason(&plan);
            Decision::NoGenerate { reason, error }
        }
    };
    Ok(DecisionRecord {
        decision,
        template_uid: Some(identity(&template).0),
        template_generation: template
            .pointer("/metadata/generation")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        template_json: Some(json),
        kind: plan.kind,
    })
}
