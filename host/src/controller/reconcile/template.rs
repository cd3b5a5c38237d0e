//! The template reconciler: the decision of a kind, its VAP, its readiness and its CRD.

use super::removal::{known_kind, remove_kind_objects, template_gone};
use super::*;

/// Reconciles one ConstraintTemplate (and so the decision of its kind and its VAP).
pub async fn reconcile_template<C: Cluster>(
    ctx: &Ctx<C>,
    name: &str,
) -> Result<Action, ReconcileError> {
    // Taken before anything is read: if this replica starts a new term as leader while this
    // reconcile runs, its decision is not published into the new term.
    let epoch = ctx.records.lock().expect("records lock").epoch();
    let (template, synced) = {
        let w = ctx.world.read().expect("world lock");
        (w.templates.get(name).cloned(), w.core_synced())
    };
    if !synced {
        return Ok(Action::after(WAIT_FOR_SYNC));
    }
    let rivals = ctx.world.read().expect("world lock").rival_generators();
    if !rivals.is_empty() {
        return yield_to_rivals(ctx, epoch, name, template.as_ref(), rivals).await;
    }
    let Some(template) = template else {
        return template_gone(ctx, epoch, name).await;
    };
    let essence = template_essence(&template);
    let json = essence.to_string();
    let plan = ctx
        .plan_kind(&ctx.current_settings(), &json, &[])
        .map_err(|e| ReconcileError::module(format!("template {name}"), e));
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            let status = template_status(&template, "error", &e.to_string(), &[], None);
            ctx.write_status(&StatusTarget::Template(name.into()), &template, status)
                .await;
            return Err(e);
        }
    };
    let uid = identity(&template).0;
    let generation = template
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut record = DecisionRecord {
        decision: Decision::Absent,
        template_uid: Some(uid),
        template_generation: generation,
        template_json: Some(json),
        kind: plan.kind.clone(),
    };
    // Only a template without errors gets a CRD (an invalid one, e.g. a name that is not
    // its kind's, would leave a CRD nothing deletes).
    if ctx.config.manage_crds
        && !plan.kind.is_empty()
        && !matches!(plan.decision, TemplateDecision::Error(_))
        && let Err(e) = ensure_crd(ctx, &template, &plan).await
    {
        let status = template_status(&template, "error", &e.to_string(), &plan.warnings, None);
        ctx.write_status(&StatusTarget::Template(name.into()), &template, status)
            .await;
        return Err(ReconcileError::Crd(e));
    }
    match (&plan.decision, &plan.policy) {
        (TemplateDecision::Generate, PolicyOutcome::Desired(vap_json)) => {
            generate(ctx, epoch, name, &template, &plan, vap_json, record).await
        }
        _ => {
            let (reason, error) = no_generate_reason(&plan);
            record.decision = Decision::NoGenerate {
                reason: reason.clone(),
                error,
            };
            // Publish first: from now on constraint reconciles delete, never create.
            ctx.publish(epoch, name, record);
            remove_kind_objects(ctx, name, &plan.kind).await?;
            let state = if error { "error" } else { "not-generated" };
            let status = template_status(&template, state, &reason, &plan.warnings, None);
            ctx.write_status(&StatusTarget::Template(name.into()), &template, status)
                .await;
            Ok(Action::done())
        }
    }
}

/// Another generator runs (Gatekeeper pods with `generate`): the kind's record says so, which
/// stops its constraint reconcilers too, and the template's status says why. Nothing is
/// written to the VAP, the bindings or the CRD — they are the rival's now; when the last rival
/// goes, the watch re-plans every kind.
async fn yield_to_rivals<C: Cluster>(
    ctx: &Ctx<C>,
    epoch: u64,
    name: &str,
    template: Option<&Value>,
    rivals: std::collections::BTreeSet<String>,
) -> Result<Action, ReconcileError> {
    let rivals: Vec<String> = rivals.into_iter().collect();
    let kind = template
        .and_then(snapshot::template_kind)
        .map_or_else(|| known_kind(ctx, name), str::to_string);
    let record = DecisionRecord {
        decision: Decision::Yielded {
            rivals: rivals.clone(),
        },
        template_uid: template.map(|t| identity(t).0),
        template_generation: template
            .and_then(|t| t.pointer("/metadata/generation"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        template_json: None,
        kind,
    };
    ctx.publish(epoch, name, record);
    if let Some(t) = template {
        let status = template_status(t, PAUSED, &yield_message(&rivals), &[], None);
        ctx.write_status(&StatusTarget::Template(name.into()), t, status)
            .await;
    }
    Ok(Action::done())
}

pub(super) async fn generate<C: Cluster>(
    ctx: &Ctx<C>,
    epoch: u64,
    name: &str,
    template: &Value,
    plan: &KindPlan,
    vap_json: &str,
    mut record: DecisionRecord,
) -> Result<Action, ReconcileError> {
    let desired = match render::policy_object(vap_json, &plan.policy_name) {
        Ok(mut v) => {
            ensure_owner(&mut v, template_owner(template));
            render::exempt_namespaces(&mut v, &ctx.config.exempt_namespaces);
            v
        }
        Err(e) => {
            record.decision = Decision::NoGenerate {
                reason: e.to_string(),
                error: true,
            };
            ctx.publish(epoch, name, record);
            remove_kind_objects(ctx, name, &plan.kind).await?;
            let status = template_status(template, "error", &e.to_string(), &plan.warnings, None);
            ctx.write_status(&StatusTarget::Template(name.into()), template, status)
                .await;
            return Ok(Action::done());
        }
    };
    let mut live = ctx
        .world
        .read()
        .expect("world lock")
        .vaps
        .get(&plan.policy_name)
        .cloned();
    // The cache may lag behind the API server (the last deletes of the previous leader, or a
    // user's). Before a Generate that licenses bindings is published on the cache's word
    // alone (the VAP is there, nothing to write), read the VAP from the API server — once
    // per term: a Generate published in this term was verified or written already.
    let licensed = match ctx.records.lock().expect("records lock").get(name) {
        Lookup::Known(r) => {
            matches!(&r.decision, Decision::Generate { policy, .. } if policy.exists())
        }
        Lookup::Unknown => false,
    };
    if !licensed
        && live
            .as_ref()
            .is_some_and(|l| compare::vap_equal(&desired, l))
    {
        live = ctx
            .cluster
            .get(Target::Vap, &plan.policy_name)
            .await
            .map_err(|e| {
                ReconcileError::api(
                    format!("reading ValidatingAdmissionPolicy {}", plan.policy_name),
                    e,
                )
            })?;
    }
    let foreign = live.as_ref().and_then(|l| {
        let c = controller_of(l);
        match &c {
            Some(c) if is_template_owner(c, name) => None,
            _ => Some(c),
        }
    });
    let mut retry = None;
    let mut created = false;
    let policy = if let Some(owner) = foreign {
        PolicyState::Failed(format!(
            "ValidatingAdmissionPolicy {} exists and is controlled by {}; vapgen does not overwrite objects it does not own",
            plan.policy_name,
            describe_owner(owner.as_ref())
        ))
    } else if live
        .as_ref()
        .is_some_and(|l| compare::vap_equal(&desired, l))
    {
        PolicyState::Applied
    } else {
        match ctx.write_apply(Target::Vap, &desired).await {
            Ok(_) => {
                created = live.is_none();
                PolicyState::Applied
            }
            Err(ApiError::NotLeader) => return Ok(Action::done()),
            Err(e @ ApiError::Rejected(_)) => {
                let msg = format!(
                    "the API server rejected ValidatingAdmissionPolicy {}: {e}",
                    plan.policy_name
                );
                if live.is_some() {
                    PolicyState::Stale(msg)
                } else {
                    PolicyState::Failed(msg)
                }
            }
            Err(e) => {
                // Transient: keep the previous record, retry with backoff.
                let failed = PolicyState::Failed(e.to_string());
                retry = Some(ReconcileError::api(
                    format!("applying ValidatingAdmissionPolicy {}", plan.policy_name),
                    e,
                ));
                failed
            }
        }
    };
    if let Some(e) = retry {
        return Err(e);
    }
    let readiness = readiness(ctx, &plan.kind, policy.exists()).await;
    // Poll readiness only for a policy that exists: one that failed waits for a change.
    let waiting = policy.exists() && matches!(readiness, Readiness::Waiting(_));
    let permanent = match &policy {
        PolicyState::Failed(m) | PolicyState::Stale(m) => Some(m.clone()),
        PolicyState::Applied | PolicyState::Absent => None,
    };
    let (state, message) = match &policy {
        PolicyState::Applied => ("generated", String::new()),
        PolicyState::Stale(m) => (
            "error",
            format!("{m} (the previous content stays in force)"),
        ),
        PolicyState::Failed(m) => ("error", m.clone()),
        PolicyState::Absent => ("not-generated", String::new()),
    };
    let readiness_note = match &readiness {
        Readiness::Waiting(m) => Some(m.clone()),
        Readiness::TimedOut => {
            Some("readiness not proven within the wait bound; bindings created anyway".into())
        }
        Readiness::Ready => None,
    };
    record.decision = Decision::Generate { policy, readiness };
    // The VAP exists (or failed for good) before the record says Generate.
    ctx.publish(epoch, name, record);
    if created && ctx.config.weakened.replay_on_vap_change_only {
        ctx.requeue_constraints(&plan.kind);
    }
    let status = template_status(template, state, &message, &plan.warnings, readiness_note);
    ctx.write_status(&StatusTarget::Template(name.into()), template, status)
        .await;
    Ok(if let Some(m) = permanent {
        Action::permanent(m)
    } else if waiting {
        Action::after(ctx.config.probe_interval)
    } else {
        Action::done()
    })
}

pub(super) async fn readiness<C: Cluster>(
    ctx: &Ctx<C>,
    kind: &str,
    policy_exists: bool,
) -> Readiness {
    if !policy_exists {
        return Readiness::Waiting("the policy does not exist".into());
    }
    let key = kind.to_ascii_lowercase();
    let first_seen = {
        let mut m = ctx.readiness.lock().expect("readiness lock");
        let e = m.entry(key.clone()).or_insert((Instant::now(), false));
        if e.1 {
            return Readiness::Ready;
        }
        e.0
    };
    let (crd, enforcing) = {
        let w = ctx.world.read().expect("world lock");
        (
            w.crds.get(&key).cloned(),
            !w.bindings_of_kind(kind).is_empty(),
        )
    };
    // Bindings of the kind exist already (a restart, a new leader): the plugin serves the
    // kind, so there is nothing to prove and no canary to send.
    let probe = match crd {
        _ if enforcing => Probe::Ready,
        None => Probe::NotYet(format!(
            "no CustomResourceDefinition serves kind {kind} yet"
        )),
        Some(c) if !c.established => {
            Probe::NotYet(format!("the CRD of {kind} is not Established yet"))
        }
        Some(c) => ctx.cluster.probe_kind(&c).await,
    };
    match probe {
        Probe::Ready => {
            ctx.readiness
                .lock()
                .expect("readiness lock")
                .insert(key, (first_seen, true));
            Readiness::Ready
        }
        Probe::NotYet(m) if first_seen.elapsed() >= ctx.config.wait_bound => {
            tracing::warn!(kind, reason = %m, "readiness not proven within the wait bound; creating bindings anyway");
            ctx.readiness
                .lock()
                .expect("readiness lock")
                .insert(key, (first_seen, true));
            ctx.cluster.end_probe(kind).await;
            Readiness::TimedOut
        }
        Probe::NotYet(m) => Readiness::Waiting(m),
    }
}

pub(super) fn no_generate_reason(plan: &KindPlan) -> (String, bool) {
    match (&plan.decision, &plan.policy) {
        (TemplateDecision::Skip(SkipReason::OptedOut), _) => {
            ("the template sets generateVAP: false".into(), false)
        }
        (TemplateDecision::Skip(SkipReason::FlagDefault), _) => (
            "generateVAP is not set and --default-create-vap-for-templates is false".into(),
            false,
        ),
        (TemplateDecision::NotApplicable(m), _) => (m.clone(), false),
        (TemplateDecision::Error(m), _) => (m.clone(), true),
        (_, PolicyOutcome::TransformError(m)) => (m.clone(), true),
        _ => ("the module returned no policy".into(), true),
    }
}

pub(super) fn template_owner(template: &Value) -> Owner {
    Owner {
        api_version: format!("{}/v1beta1", snapshot::TEMPLATE_GROUP),
        kind: "ConstraintTemplate".into(),
        name: snapshot::name_of(template).into(),
        uid: identity(template).0,
    }
}

pub(super) fn ensure_owner(obj: &mut Value, owner: Owner) {
    if owner.uid.is_empty() {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "ownerReferences".into(),
            Value::Array(vec![owner.to_reference()]),
        );
    }
}

pub(super) fn is_template_owner(c: &ControllerRef, template_name: &str) -> bool {
    c.api_version.starts_with(snapshot::TEMPLATE_GROUP)
        && c.kind == "ConstraintTemplate"
        && c.name == template_name
}

pub(super) fn describe_owner(c: Option<&ControllerRef>) -> String {
    match c {
        Some(c) => format!("{} {} ({})", c.kind, c.name, c.api_version),
        None => "no controller (created by hand?)".into(),
    }
}

pub(super) fn template_status(
    template: &Value,
    state: &str,
    message: &str,
    warnings: &[String],
    readiness: Option<String>,
) -> Value {
    let generation = template
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // Absent keys are explicit nulls so the merge patch removes what an earlier status had.
    json!({
        "observedGeneration": generation,
        "state": state,
        "policy": format!("gatekeeper-{}", snapshot::name_of(template)),
        "message": (!message.is_empty()).then_some(message),
        "warnings": (!warnings.is_empty()).then_some(warnings),
        "readiness": readiness,
    })
}

pub(super) async fn ensure_crd<C: Cluster>(
    ctx: &Ctx<C>,
    template: &Value,
    plan: &KindPlan,
) -> Result<(), EnsureCrdError> {
    let desired = crate::controller::crds::constraint_crd(template, &plan.kind)?;
    let name = snapshot::name_of(&desired).to_string();
    let up_to_date = {
        let w = ctx.world.read().expect("world lock");
        w.crds
            .get(&plan.kind.to_ascii_lowercase())
            .is_some_and(|c| crate::controller::crds::matches_generation(template, c))
    };
    if up_to_date {
        return Ok(());
    }
    match ctx.write_apply(Target::Crd, &desired).await {
        Ok(_) => Ok(()),
        Err(source) => Err(EnsureCrdError::Write { name, source }),
    }
}
