//! Deleting what vapgen made: a kind's bindings before its VAP, a gone template's objects,
//! a gone constraint's bindings. A refused delete stops the sequence.

use super::template::is_template_owner;
use super::*;

/// Deletes the kind's bindings and then its VAP (both only if vapgen controls them).
/// Returns how many objects it deleted.
pub(super) async fn remove_kind_objects<C: Cluster>(
    ctx: &Ctx<C>,
    template_name: &str,
    kind: &str,
) -> Result<usize, ReconcileError> {
    let kind_key = if kind.is_empty() { template_name } else { kind };
    let (mut bindings, vap) = {
        let w = ctx.world.read().expect("world lock");
        let b: Vec<Value> = w
            .bindings_of_kind(kind_key)
            .into_iter()
            .filter(|_| !ctx.config.weakened.keep_bindings)
            .filter_map(|(n, _)| w.vapbs.get(&n).cloned())
            .collect();
        let v = w
            .vaps
            .get(&format!("gatekeeper-{template_name}"))
            .filter(|v| controller_of(v).is_some_and(|c| is_template_owner(&c, template_name)))
            .cloned();
        (b, v)
    };
    if vap.is_some() && !ctx.config.weakened.keep_bindings {
        // The VAP goes, so first every binding of the kind that exists, not only those in the
        // cache: the previous leader may have created one just before a take-over, and a
        // binding must not outlive its policy.
        let listed = ctx.cluster.list(Target::Vapb).await.map_err(|e| {
            ReconcileError::api(
                format!(
                    "listing ValidatingAdmissionPolicyBindings before deleting the policy of {kind_key}"
                ),
                e,
            )
        })?;
        bindings = listed
            .into_iter()
            .filter(|b| {
                controller_of(b).is_some_and(|c| {
                    c.api_version.starts_with(snapshot::CONSTRAINT_GROUP)
                        && c.kind.eq_ignore_ascii_case(kind_key)
                })
            })
            .collect();
    }
    for b in &bindings {
        delete_or_retry(ctx, Target::Vapb, b).await?;
    }
    if let Some(v) = &vap {
        delete_or_retry(ctx, Target::Vap, v).await?;
        if ctx.config.weakened.replay_on_vap_change_only && !kind.is_empty() {
            ctx.requeue_constraints(kind);
        }
    }
    Ok(bindings.len() + usize::from(vap.is_some()))
}

pub(super) async fn delete_or_retry<C: Cluster>(
    ctx: &Ctx<C>,
    target: Target,
    live: &Value,
) -> Result<(), ReconcileError> {
    // A delete refused by the fence stops the sequence: the deletes after it (the VAP after
    // its bindings) must not happen while this one has not (found by the explorer: a lapse
    // in the middle of a kind's removal let the VAP go before one of its bindings).
    match ctx.write_delete(target, live).await {
        Ok(()) => Ok(()),
        Err(e) => Err(ReconcileError::api(
            format!("deleting {} {}", target.as_str(), snapshot::name_of(live)),
            e,
        )),
    }
}

/// The kind of template `name` when the template itself is not at hand: the record's, else
/// (e.g. a new leader that never saw the template) its CRD's exact-case kind, else the
/// template name, which is only the kind's lower-case form.
pub(super) fn known_kind<C: Cluster>(ctx: &Ctx<C>, name: &str) -> String {
    let known = match ctx.records.lock().expect("records lock").get(name) {
        Lookup::Known(r) if !r.kind.is_empty() => Some(r.kind.clone()),
        _ => None,
    };
    known
        .or_else(|| {
            let w = ctx.world.read().expect("world lock");
            w.crds.get(name).map(|c| c.kind.clone())
        })
        .unwrap_or_else(|| name.to_string())
}

pub(super) async fn template_gone<C: Cluster>(
    ctx: &Ctx<C>,
    epoch: u64,
    name: &str,
) -> Result<Action, ReconcileError> {
    let kind = known_kind(ctx, name);
    ctx.observer.gone(&StatusTarget::Template(name.into()));
    ctx.publish(
        epoch,
        name,
        DecisionRecord {
            decision: Decision::Absent,
            template_uid: None,
            template_generation: 0,
            template_json: None,
            kind: kind.clone(),
        },
    );
    ctx.readiness.lock().expect("readiness lock").remove(name);
    ctx.cluster.end_probe(&kind).await;
    if remove_kind_objects(ctx, name, &kind).await? > 0 && ctx.config.manage_crds {
        // The admission plugin learns of the deletions through its informers. Deleting the
        // CRD before it has dropped the policy makes it fail to resolve the paramKind, and a
        // `failurePolicy: Fail` policy then denies every request it matches. So the CRD
        // goes in a later pass, after CRD_GRACE.
        return Ok(Action::after(CRD_GRACE));
    }
    if ctx.config.manage_crds {
        let crd = {
            let w = ctx.world.read().expect("world lock");
            // Only a CRD that this template controls; a hand-made one is left alone.
            w.crds
                .get(name)
                .filter(|c| c.template_owner.as_deref() == Some(name))
                .map(|c| (c.uid.clone(), c.plural.clone()))
        };
        if let Some((uid, plural)) = crd {
            let crd_obj = json!({"metadata": {"name": format!("{plural}.{}", snapshot::CONSTRAINT_GROUP), "uid": uid}});
            delete_or_retry(ctx, Target::Crd, &crd_obj).await?;
        }
    }
    Ok(Action::done())
}

pub(super) async fn delete_if_ours<C: Cluster>(
    ctx: &Ctx<C>,
    live: Option<&Value>,
) -> Result<(), ReconcileError> {
    match live {
        Some(l) => delete_or_retry(ctx, Target::Vapb, l).await,
        None => Ok(()),
    }
}

/// Deletes every binding controlled by the constraint `kind/name` (it is gone).
pub(super) async fn delete_bindings_of<C: Cluster>(
    ctx: &Ctx<C>,
    kind: &str,
    name: &str,
) -> Result<(), ReconcileError> {
    let owned: Vec<Value> = {
        let w = ctx.world.read().expect("world lock");
        w.bindings_of_kind(kind)
            .into_iter()
            .filter(|(_, c)| c.name == name)
            .filter_map(|(n, _)| w.vapbs.get(&n).cloned())
            .collect()
    };
    for b in &owned {
        delete_or_retry(ctx, Target::Vapb, b).await?;
    }
    Ok(())
}
