//! The constraint reconciler: one constraint's binding and status, from the decision record.

use super::removal::{delete_bindings_of, delete_if_ours};
use super::strategy::record_from_cached_template;
use super::template::describe_owner;
use super::*;

/// Reconciles one constraint's binding and status.
pub async fn reconcile_constraint<C: Cluster>(
    ctx: &Ctx<C>,
    kind: &str,
    name: &str,
) -> Result<Action, ReconcileError> {
    test_hooks::maybe_panic(kind, name);
    let (obj, synced) = {
        let w = ctx.world.read().expect("world lock");
        let obj = w
            .constraints
            .get(&kind.to_ascii_lowercase())
            .and_then(|m| m.get(name))
            .cloned();
        (obj, w.core_synced() && w.kind_synced(kind))
    };
    if !synced {
        // Never act on a partial cache: an unlisted constraint is not a deleted one.
        return Ok(Action::after(WAIT_FOR_SYNC));
    }
    let Some(obj) = obj else {
        // Not in the cache: deleted, or not seen yet — its watch may lag behind the bindings'
        // (a binding the previous leader made for a constraint created just before a
        // take-over, or a constraint created between the two initial lists). Only a
        // constraint the API server does not have either loses its bindings.
        // While a rival generator runs, its bindings are its own to delete.
        let yielded = matches!(
            ctx.records.lock().expect("records lock").get(kind),
            Lookup::Known(DecisionRecord {
                decision: Decision::Yielded { .. },
                ..
            })
        );
        let owns_bindings = {
            let w = ctx.world.read().expect("world lock");
            if yielded || !w.rival_generators().is_empty() {
                return Ok(Action::done());
            }
            w.bindings_of_kind(kind).iter().any(|(_, c)| c.name == name)
        };
        if owns_bindings {
            match ctx.cluster.get_constraint(kind, name).await {
                Ok(None) => {}
                Ok(Some(_)) => return Ok(Action::after(WAIT_FOR_SYNC)),
                Err(e) => {
                    return Err(ReconcileError::api(
                        format!("reading constraint {kind}/{name}"),
                        e,
                    ));
                }
            }
        }
        delete_bindings_of(ctx, kind, name).await?;
        ctx.observer.gone(&StatusTarget::Constraint {
            kind: kind.into(),
            name: name.into(),
        });
        return Ok(Action::done());
    };
    let record = if ctx.config.weakened.naive_template_reads {
        Some(record_from_cached_template(ctx, kind)?)
    } else {
        match ctx.records.lock().expect("records lock").get(kind) {
            Lookup::Unknown => None,
            Lookup::Known(r) => Some(r.clone()),
        }
    };
    let Some(record) = record else {
        // Unknown: the template reconciler has not spoken since start-up. Wait; never delete.
        return Ok(Action::after(WAIT_FOR_SYNC));
    };
    let target = StatusTarget::Constraint {
        kind: kind.into(),
        name: name.into(),
    };
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if let Decision::Yielded { rivals } = &record.decision {
        // Another generator runs: its binding is left as it is, and the status says why.
        let status = constraint_status(PAUSED, &yield_message(rivals), generation, None);
        ctx.write_status(&target, &obj, status).await;
        return Ok(Action::done());
    }
    let Some(template_json) = &record.template_json else {
        delete_bindings_of(ctx, kind, name).await?;
        let msg =
            format!("no ConstraintTemplate defines kind {kind}; the constraint has no binding");
        let status = constraint_status("error", &msg, generation, None);
        ctx.write_status(&target, &obj, status).await;
        return Ok(Action::done());
    };
    let input = snapshot::extract_constraint(&obj);
    let plan = ctx
        .plan_kind(
            &ctx.current_settings(),
            template_json,
            std::slice::from_ref(&input),
        )
        .map_err(|e| ReconcileError::module(format!("{kind}/{name}"), e))?;
    let Some(b) = plan.bindings.first() else {
        return Err(ReconcileError::NoBindingPlan {
            kind: kind.to_string(),
            name: name.to_string(),
        });
    };
    let live = ctx
        .world
        .read()
        .expect("world lock")
        .vapbs
        .get(&b.binding_name)
        .cloned();
    let ours = |v: &Value| controller_of(v).is_some_and(|c| is_constraint_owner(&c, kind, name));
    if let Some(l) = live.as_ref().filter(|l| !ours(l)) {
        let msg = format!(
            "ValidatingAdmissionPolicyBinding {} exists and is controlled by {}; vapgen does not overwrite or delete objects it does not own",
            b.binding_name,
            describe_owner(controller_of(l).as_ref())
        );
        ctx.write_status(
            &target,
            &obj,
            constraint_status("error", &msg, generation, Some(&b.binding_name)),
        )
        .await;
        return Ok(Action::done());
    }
    let (state, message) = match (&b.outcome, &record.decision) {
        (BindingOutcome::Bind(spec), Decision::Generate { policy, readiness }) => {
            if !policy.exists() {
                delete_if_ours(ctx, live.as_ref()).await?;
                let m = match policy {
                    PolicyState::Failed(m) => m.clone(),
                    _ => "the policy does not exist".into(),
                };
                (
                    "error",
                    format!("no binding: the policy could not be created: {m}"),
                )
            } else {
                let owner = Owner::constraint(kind, name, &identity(&obj).0);
                let desired = render::binding_object(spec, Some(&owner)).map_err(|source| {
                    ReconcileError::Render {
                        subject: format!("{kind}/{name}"),
                        source,
                    }
                })?;
                if live
                    .as_ref()
                    .is_some_and(|l| compare::vapb_equal(&desired, l))
                {
                    ("generated", String::new())
                } else if live.is_none() && !readiness.allows_bindings() {
                    // The kind waits for readiness (at most the wait bound); the template's
                    // status says why. No status write per constraint meanwhile: with a
                    // backlog of N constraints that was N writes more (and more again as the
                    // probe's message changed). Readiness published requeues every
                    // constraint of the kind.
                    return Ok(Action::done());
                } else {
                    match ctx.write_apply(Target::Vapb, &desired).await {
                        Ok(_) => ("generated", String::new()),
                        Err(ApiError::NotLeader) => return Ok(Action::done()),
                        Err(e @ ApiError::Rejected(_)) => (
                            "error",
                            format!(
                                "the API server rejected ValidatingAdmissionPolicyBinding {}: {e}",
                                spec.name
                            ),
                        ),
                        Err(e) => {
                            return Err(ReconcileError::api(
                                format!("applying binding {}", spec.name),
                                e,
                            ));
                        }
                    }
                }
            }
        }
        (BindingOutcome::Bind(_), _) => {
            delete_if_ours(ctx, live.as_ref()).await?;
            (
                "not-applicable",
                "the template does not generate a policy".into(),
            )
        }
        (BindingOutcome::None(reason), _) => {
            delete_if_ours(ctx, live.as_ref()).await?;
            match reason {
                NoBindingReason::NoIntent => ("none", String::new()),
                NoBindingReason::TemplateSkipped => (
                    "not-applicable",
                    "the template does not generate a ValidatingAdmissionPolicy".into(),
                ),
                NoBindingReason::TemplateNotApplicable => (
                    "not-applicable",
                    "the template has no K8sNativeValidation code".into(),
                ),
                NoBindingReason::TemplateError => {
                    let why = match &record.decision {
                        Decision::NoGenerate { reason, .. } => reason.clone(),
                        _ => "see the template's status".into(),
                    };
                    (
                        "error",
                        format!("no binding: the template has an error: {why}"),
                    )
                }
            }
        }
        (BindingOutcome::Error(m), _) => {
            // Invalid constraints are reconciled away: no stale binding keeps enforcing.
            delete_if_ours(ctx, live.as_ref()).await?;
            ("error", m.clone())
        }
    };
    if let Some(legacy) = &b.legacy_binding_name
        && matches!(state, "generated" | "none" | "not-applicable")
    {
        let l = ctx
            .world
            .read()
            .expect("world lock")
            .vapbs
            .get(legacy)
            .cloned();
        if l.as_ref().is_some_and(ours) {
            delete_if_ours(ctx, l.as_ref()).await?;
        }
    }
    let binding = matches!(b.outcome, BindingOutcome::Bind(_)).then_some(b.binding_name.as_str());
    ctx.write_status(
        &target,
        &obj,
        constraint_status(state, &message, generation, binding),
    )
    .await;
    // Every error state here changes only with an input (the constraint, the record of its
    // kind, which requeues it, or the binding): no timed retry.
    Ok(if state == "error" {
        Action::permanent(message)
    } else {
        Action::done()
    })
}

pub(super) fn is_constraint_owner(c: &ControllerRef, kind: &str, name: &str) -> bool {
    c.api_version.starts_with(snapshot::CONSTRAINT_GROUP) && c.kind == kind && c.name == name
}

pub(super) fn constraint_status(
    state: &str,
    message: &str,
    generation: u64,
    binding: Option<&str>,
) -> Value {
    let mut ep = json!({
        "enforcementPoint": "vap.k8s.io",
        "state": state,
        "observedGeneration": generation,
    });
    if !message.is_empty() {
        ep["message"] = Value::String(message.into());
    }
    // No intent: no vap.k8s.io enforcement point at all (as Gatekeeper, test 7).
    let points = if state == "none" {
        json!([])
    } else {
        json!([ep])
    };
    json!({
        "observedGeneration": generation,
        "state": state,
        "message": (!message.is_empty()).then_some(message),
        "binding": binding,
        "enforcementPointsStatus": points,
    })
}
