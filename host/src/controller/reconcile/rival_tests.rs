//! The reconcilers beside a rival generator, without a cluster: a [`Cluster`] that records
//! every write, a [`World`] as the watches would fill it.

use std::collections::BTreeMap;

use super::*;
use crate::controller::world::watches;
use crate::runtime::NativeDecider;

/// Records writes; serves reads from what it holds.
#[derive(Default)]
struct Recording {
    writes: Mutex<Vec<String>>,
    objects: Mutex<BTreeMap<String, Value>>,
}

impl Recording {
    fn object_writes(&self) -> Vec<String> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|w| !w.starts_with("status") && !w.starts_with("event"))
            .cloned()
            .collect()
    }
}

impl Cluster for Recording {
    async fn apply(&self, target: Target, obj: &Value) -> Result<Value, ApiError> {
        let name = snapshot::name_of(obj).to_string();
        self.writes
            .lock()
            .unwrap()
            .push(format!("apply {} {name}", target.as_str()));
        let mut stored = obj.clone();
        stored["metadata"]["uid"] = json!(format!("uid-{name}"));
        stored["metadata"]["resourceVersion"] = json!("1");
        self.objects
            .lock()
            .unwrap()
            .insert(format!("{}/{name}", target.as_str()), stored.clone());
        Ok(stored)
    }
    async fn get(&self, target: Target, name: &str) -> Result<Option<Value>, ApiError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(&format!("{}/{name}", target.as_str()))
            .cloned())
    }
    async fn get_constraint(&self, _: &str, _: &str) -> Result<Option<Value>, ApiError> {
        Ok(None)
    }
    async fn list(&self, target: Target) -> Result<Vec<Value>, ApiError> {
        let prefix = format!("{}/", target.as_str());
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }
    async fn delete(&self, target: Target, name: &str, _: &str, _: &str) -> Result<(), ApiError> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("delete {} {name}", target.as_str()));
        self.objects
            .lock()
            .unwrap()
            .remove(&format!("{}/{name}", target.as_str()));
        Ok(())
    }
    async fn patch_status(&self, target: &StatusTarget, status: &Value) -> Result<(), ApiError> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("status {target:?} {}", status["state"]));
        Ok(())
    }
    async fn event(&self, _: &StatusTarget, _: &str, _: bool, reason: &str, _: &str) {
        self.writes.lock().unwrap().push(format!("event {reason}"));
    }
    async fn probe_kind(&self, _: &CrdInfo) -> Probe {
        Probe::Ready
    }
    async fn end_probe(&self, _: &str) {}
}

use crate::controller::world::CrdInfo;

const KIND: &str = "K8sRival";

fn world() -> World {
    let t = "k8srival";
    let template = json!({
        "apiVersion": "templates.gatekeeper.sh/v1", "kind": "ConstraintTemplate",
        "metadata": {"name": t, "uid": "tu", "generation": 1},
        "spec": {"crd": {"spec": {"names": {"kind": KIND}}},
            "targets": [{"target": "admission.k8s.gatekeeper.sh", "code": [{
                "engine": "K8sNativeValidation",
                "source": {"generateVAP": true, "validations": [{"expression": "true"}]}}]}]}
    });
    let constraint = json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": KIND,
        "metadata": {"name": "c", "uid": "cu", "generation": 1},
        "spec": {"enforcementAction": "deny"}
    });
    // Gatekeeper's own VAP and binding, owned by the template and the constraint.
    let owner = |api: &str, kind: &str, name: &str, uid: &str| json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let vap = json!({"metadata": {"name": "gatekeeper-k8srival", "uid": "vu", "resourceVersion": "5",
        "ownerReferences": owner("templates.gatekeeper.sh/v1beta1", "ConstraintTemplate", t, "tu")},
        "spec": {"by": "gatekeeper"}});
    let vapb = json!({"metadata": {"name": "gatekeeper-k8srival-c", "uid": "bu", "resourceVersion": "6",
        "ownerReferences": owner("constraints.gatekeeper.sh/v1beta1", KIND, "c", "cu")},
        "spec": {"by": "gatekeeper"}});
    let mut w = World {
        own_generator_id: Some("vapgen".into()),
        ..World::default()
    };
    w.templates.insert(t.into(), template);
    w.constraints
        .entry(t.into())
        .or_default()
        .insert("c".into(), constraint);
    w.vaps.insert("gatekeeper-k8srival".into(), vap);
    w.vapbs.insert("gatekeeper-k8srival-c".into(), vapb);
    w.crds.insert(
        t.into(),
        CrdInfo {
            kind: KIND.into(),
            plural: t.into(),
            established: true,
            uid: "crdu".into(),
            ..CrdInfo::default()
        },
    );
    w.pod_statuses.insert(
        "gk-0-k8srival".into(),
        json!({"metadata": {"name": "gk-0-k8srival"},
            "status": {"id": "gk-0", "operations": ["audit", "generate", "webhook"]}}),
    );
    for s in [
        watches::TEMPLATES,
        watches::VAPS,
        watches::VAPBS,
        watches::CRDS,
        watches::POD_STATUSES,
    ] {
        w.synced.insert(s.into());
    }
    w.synced.insert(watches::constraints(KIND));
    w
}

fn ctx(world: World) -> Ctx<Recording> {
    let decider: Arc<dyn Decide> = Arc::new(NativeDecider);
    Ctx {
        cluster: Recording::default(),
        world: Arc::new(RwLock::new(world)),
        records: Arc::default(),
        decider: Arc::new(RwLock::new(decider)),
        settings: Settings::default(),
        queue: Queue::default(),
        config: ReconcileConfig {
            manage_crds: true,
            ..ReconcileConfig::default()
        },
        readiness: Mutex::default(),
        observer: Arc::new(NoObserver),
    }
}

#[tokio::test]
async fn beside_a_rival_generator_nothing_is_written_and_then_the_kind_is_planned_again() {
    let ctx = ctx(world());
    reconcile_template(&ctx, "k8srival")
        .await
        .expect("template");
    match ctx.records.lock().unwrap().get(KIND) {
        Lookup::Known(r) => assert_eq!(
            r.decision,
            Decision::Yielded {
                rivals: vec!["gk-0".into()]
            }
        ),
        Lookup::Unknown => panic!("nothing published"),
    }
    // The published record requeued the constraint.
    assert!(ctx.queue.take(&Key::Constraint {
        kind: KIND.into(),
        name: "c".into()
    }));
    reconcile_constraint(&ctx, KIND, "c")
        .await
        .expect("constraint");
    // A deleted constraint's binding is left to the rival, too.
    ctx.world
        .write()
        .unwrap()
        .constraints
        .get_mut("k8srival")
        .unwrap()
        .remove("c");
    reconcile_constraint(&ctx, KIND, "c").await.expect("gone");
    ctx.world
        .write()
        .unwrap()
        .constraints
        .get_mut("k8srival")
        .unwrap()
        .insert("c".into(), world().constraints["k8srival"]["c"].clone());
    // And a deleted template's VAP.
    let t = ctx.world.write().unwrap().templates.remove("k8srival");
    reconcile_template(&ctx, "k8srival").await.expect("gone");
    ctx.world
        .write()
        .unwrap()
        .templates
        .insert("k8srival".into(), t.unwrap());
    assert_eq!(ctx.cluster.object_writes(), Vec::<String>::new());
    let writes = ctx.cluster.writes.lock().unwrap().clone();
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("status Template") && w.ends_with("\"paused\"")),
        "{writes:?}"
    );
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("status Constraint") && w.ends_with("\"paused\"")),
        "{writes:?}"
    );
    assert!(!writes.iter().any(|w| w.starts_with("event")), "{writes:?}");

    // The rival goes: the kind is planned again and vapgen takes its objects over.
    ctx.world.write().unwrap().pod_statuses.clear();
    reconcile_template(&ctx, "k8srival")
        .await
        .expect("template");
    assert!(matches!(
        ctx.records.lock().unwrap().get(KIND),
        Lookup::Known(DecisionRecord {
            decision: Decision::Generate { .. },
            ..
        })
    ));
    reconcile_constraint(&ctx, KIND, "c")
        .await
        .expect("constraint");
    let writes = ctx.cluster.object_writes();
    assert!(
        writes.contains(&"apply vap gatekeeper-k8srival".to_string()),
        "{writes:?}"
    );
    assert!(
        writes.contains(&"apply vapb gatekeeper-k8srival-c".to_string()),
        "{writes:?}"
    );
    assert!(
        !writes.iter().any(|w| w.starts_with("delete")),
        "{writes:?}"
    );
}
