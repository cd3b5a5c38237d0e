//! The controller's view of the cluster, fed by watches. Pure data: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::snapshot;

/// Who controls an object (its `controller: true` owner reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerRef {
    /// Owner apiVersion.
    pub api_version: String,
    /// Owner kind.
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// Owner UID.
    pub uid: String,
}

/// The controller owner reference of an object, if any.
pub fn controller_of(obj: &Value) -> Option<ControllerRef> {
    let refs = obj.pointer("/metadata/ownerReferences")?.as_array()?;
    refs.iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| ControllerRef {
            api_version: s(r, "apiVersion"),
            kind: s(r, "kind"),
            name: s(r, "name"),
            uid: s(r, "uid"),
        })
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// UID and resourceVersion of an object (for delete preconditions).
pub fn identity(obj: &Value) -> (String, String) {
    (
        obj.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        obj.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    )
}

/// A constraint CRD as far as readiness is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrdInfo {
    /// Exact-case kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// `Established` condition is true.
    pub established: bool,
    /// CRD UID.
    pub uid: String,
    /// The template generation a vapgen-managed CRD was made from (annotation).
    pub template_generation: Option<u64>,
    /// Name of the ConstraintTemplate that controls the CRD, if one does.
    pub template_owner: Option<String>,
}

/// Everything the reconcilers read.
#[derive(Debug, Default)]
pub struct World {
    /// ConstraintTemplates by name.
    pub templates: BTreeMap<String, Value>,
    /// Constraints by lower-case kind, then name.
    pub constraints: BTreeMap<String, BTreeMap<String, Value>>,
    /// ValidatingAdmissionPolicies by name.
    pub vaps: BTreeMap<String, Value>,
    /// ValidatingAdmissionPolicyBindings by name.
    pub vapbs: BTreeMap<String, Value>,
    /// Constraint CRDs by lower-case kind.
    pub crds: BTreeMap<String, CrdInfo>,
    /// Watches that completed their initial list.
    pub synced: BTreeSet<String>,
    /// Gatekeeper's objects that scope sync reads, when it is on: its
    /// ValidatingWebhookConfiguration and its `Config`, by name (at most one each: the
    /// watches select them by name). See [`World::scope_inputs`].
    pub webhook_configs: BTreeMap<String, Value>,
    /// Gatekeeper's `Config` objects (see `webhook_configs`).
    pub gatekeeper_configs: BTreeMap<String, Value>,
    /// Scope sync is on: the template reconciler also waits for the two watches above.
    pub scope_sync: bool,
    /// Gatekeeper's `ConstraintTemplatePodStatus` objects (coexist mode), by name, as
    /// [`pod_status_essence`] keeps them: who writes per-pod status and with which operations.
    /// See [`World::rival_generators`].
    pub pod_statuses: BTreeMap<String, Value>,
    /// Coexist mode: the id of vapgen's own per-pod status objects (its Lease name), whose
    /// `generate` is not a rival's; `None` while the rival watch is off (standalone mode).
    /// The template reconciler then also waits for that watch.
    pub own_generator_id: Option<String>,
}

/// The Gatekeeper operation that generates VAPs, bindings and constraint CRDs.
pub const GENERATE_OPERATION: &str = "generate";

/// What the controller keeps of a per-pod status object: its name, `status.id` and
/// `status.operations` (nothing else is read, and a cluster holds one per template and pod).
pub fn pod_status_essence(obj: &Value) -> Value {
    serde_json::json!({
        "metadata": {"name": obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)},
        "status": {
            "id": obj.pointer("/status/id").cloned().unwrap_or(Value::Null),
            "operations": obj.pointer("/status/operations").cloned().unwrap_or(Value::Null),
        },
    })
}

/// The rival generators among Gatekeeper's per-pod status objects: the ids (pod names) of
/// those whose `status.operations` hold `generate` and whose `status.id` is not `own_id`.
/// A Gatekeeper pod's operations are its flags, fixed for its life, and its status objects are
/// owned by it (they go with the pod), so one such object means a live pod that generates —
/// or one that just went and whose objects the garbage collector has not removed yet.
pub fn rival_generators<'a>(
    statuses: impl IntoIterator<Item = &'a Value>,
    own_id: &str,
) -> BTreeSet<String> {
    statuses
        .into_iter()
        .filter(|o| {
            o.pointer("/status/operations")
                .and_then(Value::as_array)
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some(GENERATE_OPERATION)))
        })
        .filter_map(|o| o.pointer("/status/id").and_then(Value::as_str))
        .filter(|id| !id.is_empty() && *id != own_id)
        .map(str::to_string)
        .collect()
}

// Shared with `vapgen plan`, which reads the same objects from its inputs.
pub use crate::snapshot::{GATEKEEPER_WEBHOOK, ScopeInputs};

/// Names of the watches in [`World::synced`].
pub mod watches {
    /// ConstraintTemplates.
    pub const TEMPLATES: &str = "templates";
    /// VAPs.
    pub const VAPS: &str = "vaps";
    /// VAPBs.
    pub const VAPBS: &str = "vapbs";
    /// Constraint CRDs.
    pub const CRDS: &str = "crds";
    /// Gatekeeper's ValidatingWebhookConfiguration (scope sync).
    pub const WEBHOOK_CONFIG: &str = "webhook-config";
    /// Gatekeeper's `Config` (scope sync).
    pub const GATEKEEPER_CONFIG: &str = "gatekeeper-config";
    /// Gatekeeper's `ConstraintTemplatePodStatus` objects (coexist mode: rival generators).
    pub const POD_STATUSES: &str = "gatekeeper-pod-statuses";
    /// The constraint watch of a kind: `constraints/<lower kind>`.
    pub fn constraints(kind: &str) -> String {
        format!("constraints/{}", kind.to_ascii_lowercase())
    }
}

impl World {
    /// Whether the shared watches have listed everything once.
    pub fn core_synced(&self) -> bool {
        [
            watches::TEMPLATES,
            watches::VAPS,
            watches::VAPBS,
            watches::CRDS,
        ]
        .iter()
        .all(|w| self.synced.contains(*w))
            && (!self.scope_sync
                || [watches::WEBHOOK_CONFIG, watches::GATEKEEPER_CONFIG]
                    .iter()
                    .all(|w| self.synced.contains(*w)))
            && (self.own_generator_id.is_none() || self.synced.contains(watches::POD_STATUSES))
    }

    /// The Gatekeeper pods that run `generate` beside vapgen now (coexist mode; always empty
    /// in standalone mode). While there is one, vapgen writes no VAP, binding or CRD.
    pub fn rival_generators(&self) -> BTreeSet<String> {
        match &self.own_generator_id {
            Some(own) => rival_generators(self.pod_statuses.values(), own),
            None => BTreeSet::new(),
        }
    }

    /// What scope sync takes from the cluster now.
    pub fn scope_inputs(&self) -> ScopeInputs {
        ScopeInputs::from_objects(
            self.webhook_configs.values(),
            self.gatekeeper_configs.values(),
        )
    }

    /// Whether the constraints of a kind have been listed once.
    pub fn kind_synced(&self, kind: &str) -> bool {
        self.synced.contains(&watches::constraints(kind))
    }

    /// The constraints of a kind, in name order.
    pub fn constraints_of(&self, kind: &str) -> Vec<&Value> {
        self.constraints
            .get(&kind.to_ascii_lowercase())
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// Names of the bindings whose controller is a constraint of `kind` (any name).
    pub fn bindings_of_kind(&self, kind: &str) -> Vec<(String, ControllerRef)> {
        self.vapbs
            .iter()
            .filter_map(|(n, b)| {
                let c = controller_of(b)?;
                (c.api_version.starts_with(snapshot::CONSTRAINT_GROUP)
                    && c.kind.eq_ignore_ascii_case(kind))
                .then(|| (n.clone(), c))
            })
            .collect()
    }
}

/// Strips what changes without changing the template's meaning (status, resourceVersion,
/// managedFields, annotations), so a status write does not look like a new template.
pub fn template_essence(t: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["apiVersion", "kind", "spec"] {
        if let Some(v) = t.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let mut meta = serde_json::Map::new();
    for k in ["name", "uid", "generation"] {
        if let Some(v) = t.pointer(&format!("/metadata/{k}")) {
            meta.insert(k.into(), v.clone());
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    Value::Object(out)
}

/// Drops `metadata.managedFields` from a cached object: nothing reads it, and it is most of a
/// small object's size (a cache of 10,000 constraints and 10,000 bindings held it twice).
pub fn without_managed_fields(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_controller_reference() {
        let o = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "X", "name": "n", "uid": "1"},
            {"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "Foo", "name": "a", "uid": "2", "controller": true}
        ]}});
        let c = controller_of(&o).unwrap();
        assert_eq!(
            (c.kind.as_str(), c.name.as_str(), c.uid.as_str()),
            ("Foo", "a", "2")
        );
        assert!(controller_of(&json!({"metadata": {}})).is_none());
    }

    #[test]
    fn with_scope_sync_the_template_reconciler_waits_for_its_watches() {
        let mut w = World::default();
        for n in [
            watches::TEMPLATES,
            watches::VAPS,
            watches::VAPBS,
            watches::CRDS,
        ] {
            w.synced.insert(n.into());
        }
        assert!(w.core_synced());
        w.scope_sync = true;
        assert!(!w.core_synced());
        w.synced.insert(watches::WEBHOOK_CONFIG.into());
        w.synced.insert(watches::GATEKEEPER_CONFIG.into());
        assert!(w.core_synced());
    }

    #[test]
    fn a_rival_is_another_pod_whose_status_objects_say_generate() {
        let st = |name: &str, id: &str, ops: &[&str]| {
            pod_status_essence(&json!({
                "metadata": {"name": name, "labels": {"x": "y"}, "resourceVersion": "3"},
                "status": {"id": id, "operations": ops, "templateUID": "u", "errors": []}
            }))
        };
        let objs = [
            st(
                "gk-0-a",
                "gk-0",
                &["audit", "generate", "status", "webhook"],
            ),
            st(
                "gk-0-b",
                "gk-0",
                &["audit", "generate", "status", "webhook"],
            ),
            st("gk-1-a", "gk-1", &["audit", "status", "webhook"]),
            st("vapgen-a", "vapgen", &["generate"]),
        ];
        assert_eq!(objs[0]["status"]["id"], "gk-0");
        assert!(objs[0]["metadata"].get("labels").is_none(), "{}", objs[0]);
        let rivals = rival_generators(&objs, "vapgen");
        assert_eq!(rivals.into_iter().collect::<Vec<_>>(), ["gk-0"]);
        assert!(rival_generators(&objs[2..], "vapgen").is_empty());
        assert!(rival_generators([&json!({"metadata": {"name": "x"}})], "vapgen").is_empty());

        let mut w = World::default();
        for o in objs {
            w.pod_statuses
                .insert(o["metadata"]["name"].as_str().unwrap().into(), o);
        }
        assert!(
            w.rival_generators().is_empty(),
            "standalone: no rival watch"
        );
        w.own_generator_id = Some("vapgen".into());
        assert_eq!(w.rival_generators().len(), 1);
        // vapgen under another Lease name sees its own objects of the old name as a rival's:
        // only `generate` of another id counts, whatever wrote it.
        w.own_generator_id = Some("vapgen-2".into());
        assert_eq!(w.rival_generators().len(), 2);
    }

    #[test]
    fn with_the_rival_watch_the_template_reconciler_waits_for_it() {
        let mut w = World::default();
        for n in [
            watches::TEMPLATES,
            watches::VAPS,
            watches::VAPBS,
            watches::CRDS,
        ] {
            w.synced.insert(n.into());
        }
        w.own_generator_id = Some("vapgen".into());
        assert!(!w.core_synced());
        w.synced.insert(watches::POD_STATUSES.into());
        assert!(w.core_synced());
    }

    #[test]
    fn template_essence_ignores_status_and_versions() {
        let a = json!({"apiVersion": "v", "kind": "k", "metadata": {"name": "n", "uid": "u", "generation": 2, "resourceVersion": "5"}, "spec": {"x": 1}, "status": {"a": 1}});
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("9");
        b["status"] = json!({"b": 2});
        assert_eq!(template_essence(&a), template_essence(&b));
        b["spec"]["x"] = json!(2);
        assert_ne!(template_essence(&a), template_essence(&b));
    }
}
