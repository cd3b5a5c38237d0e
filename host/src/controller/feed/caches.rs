//! Which cache a watch feeds ([`Feed`]), and the pure steps of a watch on the caches: a
//! (re)list ([`Feed::replace`]), one event ([`Feed::apply`]) and the keys an object's change
//! affects ([`Feed::keys`]); what the controller keeps of a constraint CRD ([`crd_info`]). The
//! watch tasks (`super`) and the schedule-exploration simulator both run these steps, so the
//! simulator enqueues exactly what the real watches do.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::controller::queue::Key;
use crate::controller::world::{CrdInfo, World, controller_of, watches};
use crate::snapshot;

/// Which cache a watch feeds.
#[derive(Clone, Debug)]
pub enum Feed {
    /// ConstraintTemplates.
    Templates,
    /// ValidatingAdmissionPolicies.
    Vaps,
    /// ValidatingAdmissionPolicyBindings.
    Vapbs,
    /// Constraint CRDs.
    Crds,
    /// The constraints of one kind.
    Constraints {
        /// Exact-case kind.
        kind: String,
    },
    /// Gatekeeper's ValidatingWebhookConfiguration (scope sync).
    WebhookConfig,
    /// Gatekeeper's `Config` (scope sync).
    GatekeeperConfig,
    /// Gatekeeper's `ConstraintTemplatePodStatus` objects in its namespace (coexist mode): the
    /// Gatekeeper pods that run `generate` ([`World::rival_generators`]).
    PodStatuses,
}

/// Which of Gatekeeper's objects scope sync watches (`vapgen run --sync-vap-enforcement-scope`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeWatch {
    /// Name of Gatekeeper's ValidatingWebhookConfiguration.
    pub webhook_config: String,
    /// Namespace of Gatekeeper's `Config` (Gatekeeper's own namespace).
    pub config_namespace: String,
    /// Name of Gatekeeper's `Config`.
    pub config_name: String,
}

/// Coexist mode's watch of Gatekeeper's per-pod status objects, to find rival generators
/// ([`World::rival_generators`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RivalWatch {
    /// Gatekeeper's namespace (where its per-pod status objects are).
    pub namespace: String,
    /// The id of vapgen's own per-pod status objects (its Lease name).
    pub own_id: String,
}

impl Default for ScopeWatch {
    /// Gatekeeper's names: `gatekeeper-validating-webhook-configuration`, and `config` in
    /// `gatekeeper-system`.
    fn default() -> Self {
        ScopeWatch {
            webhook_config: "gatekeeper-validating-webhook-configuration".into(),
            config_namespace: "gatekeeper-system".into(),
            config_name: "config".into(),
        }
    }
}

impl Feed {
    /// The name under which [`World::synced`] records this feed's first list.
    pub fn sync_name(&self) -> String {
        match self {
            Feed::Templates => watches::TEMPLATES.into(),
            Feed::Vaps => watches::VAPS.into(),
            Feed::Vapbs => watches::VAPBS.into(),
            Feed::Crds => watches::CRDS.into(),
            Feed::Constraints { kind } => watches::constraints(kind),
            Feed::WebhookConfig => watches::WEBHOOK_CONFIG.into(),
            Feed::GatekeeperConfig => watches::GATEKEEPER_CONFIG.into(),
            Feed::PodStatuses => watches::POD_STATUSES.into(),
        }
    }

    /// Whether this feed holds an input of scope sync rather than objects with keys.
    pub(super) fn is_scope(&self) -> bool {
        matches!(self, Feed::WebhookConfig | Feed::GatekeeperConfig)
    }

    /// Whether this feed holds Gatekeeper's objects, read by every kind's plan rather than
    /// objects with keys: the scope inputs and the per-pod status objects. Such a watch that
    /// cannot list (Gatekeeper's CRD not installed) counts as an empty, synced list.
    pub(super) fn is_gatekeeper(&self) -> bool {
        self.is_scope() || matches!(self, Feed::PodStatuses)
    }

    /// What a Gatekeeper feed's objects mean to every plan: the scope inputs, and the rival
    /// generators.
    fn global_inputs(
        w: &World,
    ) -> (
        crate::controller::world::ScopeInputs,
        std::collections::BTreeSet<String>,
    ) {
        (w.scope_inputs(), w.rival_generators())
    }

    /// For a Gatekeeper feed: every template, if its inputs differ from `before` (a change
    /// re-plans every kind once); nothing otherwise.
    fn global_change(
        w: &World,
        before: &(
            crate::controller::world::ScopeInputs,
            std::collections::BTreeSet<String>,
        ),
    ) -> Vec<Key> {
        if Self::global_inputs(w) == *before {
            return Vec::new();
        }
        w.templates.keys().cloned().map(Key::Template).collect()
    }

    /// The object as the cache keeps it.
    fn kept(&self, obj: Value) -> Value {
        match self {
            Feed::PodStatuses => crate::controller::world::pod_status_essence(&obj),
            _ => obj,
        }
    }

    fn map<'a>(&self, w: &'a mut World) -> &'a mut BTreeMap<String, Value> {
        match self {
            Feed::Templates => &mut w.templates,
            Feed::Vaps => &mut w.vaps,
            Feed::Vapbs => &mut w.vapbs,
            Feed::Crds => unreachable!("CRDs are kept as CrdInfo"),
            Feed::Constraints { kind } => {
                w.constraints.entry(kind.to_ascii_lowercase()).or_default()
            }
            Feed::WebhookConfig => &mut w.webhook_configs,
            Feed::GatekeeperConfig => &mut w.gatekeeper_configs,
            Feed::PodStatuses => &mut w.pod_statuses,
        }
    }

    /// A (re)list of a feed other than CRDs, as a pure step on the caches: the cache becomes
    /// exactly `objs` and is marked synced; returns the keys to queue (those of the objects
    /// before and after, so a deletion missed while the watch was down is reconciled). The
    /// watches and the schedule-exploration simulator both run it.
    pub fn replace(&self, w: &mut World, objs: Vec<Value>) -> Vec<Key> {
        if self.is_gatekeeper() {
            let before = Self::global_inputs(w);
            let map = self.map(w);
            map.clear();
            for o in objs {
                map.insert(snapshot::name_of(&o).to_string(), self.kept(o));
            }
            w.synced.insert(self.sync_name());
            return Self::global_change(w, &before);
        }
        let mut keys = Vec::new();
        let map = self.map(w);
        for old in map.values() {
            keys.extend(self.keys(old));
        }
        map.clear();
        for o in objs {
            keys.extend(self.keys(&o));
            map.insert(snapshot::name_of(&o).to_string(), o);
        }
        w.synced.insert(self.sync_name());
        keys
    }

    /// One watch event of a feed other than CRDs, as a pure step on the caches; returns the
    /// keys to queue. The watches and the simulator both run it.
    pub fn apply(&self, w: &mut World, obj: Value, deleted: bool) -> Vec<Key> {
        let before = self.is_gatekeeper().then(|| Self::global_inputs(w));
        let keys = self.keys(&obj);
        let name = snapshot::name_of(&obj).to_string();
        let obj = self.kept(obj);
        let map = self.map(w);
        if deleted {
            map.remove(&name);
        } else {
            map.insert(name, obj);
        }
        match before {
            Some(before) => Self::global_change(w, &before),
            None => keys,
        }
    }

    /// The keys an object's change affects (also used by the schedule-exploration simulator,
    /// so that it enqueues exactly what the real watches do).
    pub fn keys(&self, obj: &Value) -> Vec<Key> {
        let name = snapshot::name_of(obj).to_string();
        match self {
            Feed::Templates => vec![Key::Template(name)],
            Feed::Constraints { kind } => vec![Key::Constraint {
                kind: kind.clone(),
                name,
            }],
            Feed::Vaps => match controller_of(obj) {
                Some(c) if c.api_version.starts_with(snapshot::TEMPLATE_GROUP) => {
                    vec![Key::Template(c.name)]
                }
                _ => name
                    .strip_prefix("gatekeeper-")
                    .map(|t| vec![Key::Template(t.to_string())])
                    .unwrap_or_default(),
            },
            Feed::Vapbs => match controller_of(obj) {
                Some(c) if c.api_version.starts_with(snapshot::CONSTRAINT_GROUP) => {
                    vec![Key::Constraint {
                        kind: c.kind,
                        name: c.name,
                    }]
                }
                _ => vec![],
            },
            Feed::Crds | Feed::WebhookConfig | Feed::GatekeeperConfig | Feed::PodStatuses => {
                vec![]
            }
        }
    }
}

/// What the controller keeps of a constraint CRD (`None` for other CRDs).
pub fn crd_info(obj: &Value) -> Option<CrdInfo> {
    if obj.pointer("/spec/group").and_then(Value::as_str) != Some(snapshot::CONSTRAINT_GROUP) {
        return None;
    }
    let kind = obj
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())?
        .to_string();
    let key = kind.to_ascii_lowercase();
    Some(CrdInfo {
        plural: obj
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or(&key)
            .to_string(),
        kind,
        established: snapshot::is_established(obj),
        uid: obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        template_generation: obj
            .pointer(&format!(
                "/metadata/annotations/{}",
                crate::controller::crds::TEMPLATE_GENERATION_ANNOTATION.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok()),
        template_owner: controller_of(obj)
            .filter(|c| c.api_version.starts_with(snapshot::TEMPLATE_GROUP))
            .map(|c| c.name),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A constraint CRD of `kind`, not Established (so no constraint watch starts for it).
    pub(in crate::controller::feed) fn crd(kind: &str) -> Value {
        serde_json::json!({
            "metadata": {"name": format!("{}.{}", kind.to_ascii_lowercase(), snapshot::CONSTRAINT_GROUP), "uid": format!("uid-{kind}")},
            "spec": {"group": snapshot::CONSTRAINT_GROUP, "names": {"kind": kind, "plural": kind.to_ascii_lowercase()}},
            "status": {"conditions": [{"type": "Established", "status": "False"}]}
        })
    }

    #[test]
    fn a_change_of_the_scope_inputs_replans_every_kind_once_and_nothing_else_does() {
        let mut w = World::default();
        for t in ["k8sa", "k8sb"] {
            w.templates
                .insert(t.into(), serde_json::json!({"metadata": {"name": t}}));
        }
        let all = vec![Key::Template("k8sa".into()), Key::Template("k8sb".into())];
        let vwc = |ops: &str| {
            serde_json::json!({"metadata": {"name": "gatekeeper-validating-webhook-configuration", "resourceVersion": ops},
                "webhooks": [{"name": "validation.gatekeeper.sh", "rules": [{"operations": [ops]}]}]})
        };
        // The first list: nothing known before, a webhook now.
        assert_eq!(
            Feed::WebhookConfig.replace(&mut w, vec![vwc("CREATE")]),
            all
        );
        assert!(w.synced.contains(watches::WEBHOOK_CONFIG));
        // Same webhook, another resourceVersion (a label edit): nothing to re-plan.
        let mut same = vwc("CREATE");
        same["metadata"]["labels"] = serde_json::json!({"x": "y"});
        assert!(Feed::WebhookConfig.apply(&mut w, same, false).is_empty());
        assert_eq!(Feed::WebhookConfig.apply(&mut w, vwc("UPDATE"), false), all);
        let config = |ns: &str| {
            serde_json::json!({"metadata": {"name": "config"},
                "spec": {"match": [{"excludedNamespaces": [ns], "processes": ["webhook"]}]}})
        };
        assert_eq!(
            Feed::GatekeeperConfig.replace(&mut w, vec![config("a")]),
            all
        );
        assert!(
            Feed::GatekeeperConfig
                .replace(&mut w, vec![config("a")])
                .is_empty()
        );
        assert_eq!(Feed::GatekeeperConfig.apply(&mut w, config("a"), true), all);
        assert_eq!(w.scope_inputs().excluded_namespaces, Vec::<String>::new());
        assert_eq!(Feed::WebhookConfig.apply(&mut w, vwc("UPDATE"), true), all);
        assert_eq!(
            w.scope_inputs(),
            crate::controller::world::ScopeInputs::default()
        );
    }

    #[test]
    fn a_rival_generator_appearing_or_going_replans_every_kind_once() {
        let mut w = World {
            own_generator_id: Some("vapgen".into()),
            ..World::default()
        };
        for t in ["k8sa", "k8sb"] {
            w.templates
                .insert(t.into(), serde_json::json!({"metadata": {"name": t}}));
        }
        let all = vec![Key::Template("k8sa".into()), Key::Template("k8sb".into())];
        let st = |name: &str, id: &str, ops: &[&str], rv: &str| {
            serde_json::json!({"metadata": {"name": name, "resourceVersion": rv},
                "status": {"id": id, "operations": ops, "observedGeneration": 1}})
        };
        // vapgen's own objects and a Gatekeeper pod without generate: no rival, nothing to do.
        assert!(
            Feed::PodStatuses
                .replace(
                    &mut w,
                    vec![
                        st("vapgen-k8sa", "vapgen", &["generate"], "1"),
                        st("gk-k8sa", "gk", &["audit", "webhook"], "1"),
                    ]
                )
                .is_empty()
        );
        assert!(w.synced.contains(watches::POD_STATUSES));
        assert!(w.rival_generators().is_empty());
        // A generating pod writes its first object: every kind, once.
        let gen_a = st("gk2-k8sa", "gk2", &["generate", "webhook"], "1");
        assert_eq!(Feed::PodStatuses.apply(&mut w, gen_a, false), all);
        assert_eq!(w.rival_generators().len(), 1);
        // Its next object, and a status update of the first: the same rival, nothing.
        let gen_b = st("gk2-k8sb", "gk2", &["generate", "webhook"], "2");
        assert!(
            Feed::PodStatuses
                .apply(&mut w, gen_b.clone(), false)
                .is_empty()
        );
        let gen_a2 = st("gk2-k8sa", "gk2", &["generate", "webhook"], "3");
        assert!(
            Feed::PodStatuses
                .apply(&mut w, gen_a2.clone(), false)
                .is_empty()
        );
        // Only the essence is kept.
        assert!(
            w.pod_statuses["gk2-k8sa"]["status"]
                .get("observedGeneration")
                .is_none()
        );
        // One of its two objects goes: still a rival. The last goes: every kind again.
        assert!(Feed::PodStatuses.apply(&mut w, gen_a2, true).is_empty());
        assert_eq!(Feed::PodStatuses.apply(&mut w, gen_b, true), all);
        assert!(w.rival_generators().is_empty());
    }

    #[test]
    fn crd_info_reads_only_constraint_crds() {
        assert!(crd_info(&crd("K")).is_some_and(|i| i.kind == "K" && !i.established));
        let mut other = crd("K");
        other["spec"]["group"] = "example.com".into();
        assert!(crd_info(&other).is_none());
    }
}
