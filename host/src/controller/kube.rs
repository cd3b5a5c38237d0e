//! [`KubeCluster`], the [`Cluster`] that writes to a real API server (creates and replaces
//! checked against the watch cache, preconditioned deletes, status, Events, readiness
//! probes) — only while this replica holds the lease. The watches are in `feed`, the
//! resources in `resources` (both re-exported here).

use std::sync::{Arc, Mutex, RwLock};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};

use super::leader::Leader;
use super::reconcile::{ApiError, Cluster, Probe, StatusTarget, Target};
use super::world::{CrdInfo, World};
use crate::snapshot;

pub use super::feed::{Feed, Watches, crd_info};
pub use super::resources::*;

// === writes ===

/// Writes to the API server, gated on the lease.
pub struct KubeCluster {
    client: kube::Client,
    world: Arc<RwLock<World>>,
    leader: Arc<Leader>,
    recorder: Recorder,
    canary_namespace: Option<String>,
    /// Kinds whose canary policy and binding this replica has created (so a probe every
    /// `probe_interval` does not send the same creates again, each answered 409).
    canaries: Mutex<std::collections::HashSet<String>>,
}

impl KubeCluster {
    /// A cluster writer. `canary_namespace` enables the admission canary of the readiness
    /// probe (a dry-run Lease create in that namespace); `None` checks discovery only.
    pub fn new(
        client: kube::Client,
        world: Arc<RwLock<World>>,
        leader: Arc<Leader>,
        identity: &str,
        canary_namespace: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "vapgen".into(),
                instance: Some(identity.to_string()),
            },
        );
        KubeCluster {
            client,
            world,
            leader,
            recorder,
            canary_namespace,
            canaries: Mutex::default(),
        }
    }

    fn api(&self, target: Target) -> Api<DynamicObject> {
        let ar = match target {
            Target::Vap => vap_resource(),
            Target::Vapb => vapb_resource(),
            Target::Crd => crd_resource(),
        };
        Api::all_with(self.client.clone(), &ar)
    }

    fn status_api(&self, target: &StatusTarget) -> Result<(Api<DynamicObject>, String), ApiError> {
        match target {
            StatusTarget::Template(n) => Ok((
                Api::all_with(self.client.clone(), &template_resource()),
                n.clone(),
            )),
            StatusTarget::Constraint { kind, name } => {
                let plural = self
                    .world
                    .read()
                    .expect("world")
                    .crds
                    .get(&kind.to_ascii_lowercase())
                    .map(|c| c.plural.clone())
                    .ok_or_else(|| ApiError::Other(format!("no CRD known for kind {kind}")))?;
                Ok((
                    Api::all_with(self.client.clone(), &constraint_resource(kind, &plural)),
                    name.clone(),
                ))
            }
        }
    }
}

/// Puts the desired spec, owner references, labels and annotations onto a live object (the
/// drift repair of `apply`; the schedule-exploration simulator uses it too).
pub fn overlay(live: &mut Value, desired: &Value) {
    live["spec"] = desired["spec"].clone();
    if let Some(refs) = desired.pointer("/metadata/ownerReferences") {
        live["metadata"]["ownerReferences"] = refs.clone();
    }
    for key in ["labels", "annotations"] {
        if let Some(Value::Object(want)) = desired.pointer(&format!("/metadata/{key}")) {
            let slot = &mut live["metadata"][key];
            if !slot.is_object() {
                *slot = json!({});
            }
            if let Some(have) = slot.as_object_mut() {
                for (k, v) in want {
                    have.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Maps a kube error to the reconcilers' categories.
pub fn api_error(e: kube::Error) -> ApiError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => ApiError::NotFound,
        kube::Error::Api(s) if s.code == 409 => ApiError::Conflict(s.message.clone()),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            ApiError::Rejected(s.message.clone())
        }
        kube::Error::Api(s) => ApiError::Kube {
            message: format!("{} ({})", s.message, s.code),
            source: e,
        },
        _ => ApiError::Kube {
            message: e.to_string(),
            source: e,
        },
    }
}

impl Cluster for KubeCluster {
    async fn apply(&self, target: Target, obj: &Value) -> Result<Value, ApiError> {
        if !self.leader.ensure().await {
            return Err(ApiError::NotLeader);
        }
        let name = snapshot::name_of(obj).to_string();
        let api = self.api(target);
        // The first attempt trusts the watch cache: a create when it has no such object, a
        // replace of its copy otherwise — one request, not a read and a write (a backlog of
        // N constraints is N binding writes, not 2N requests). A conflict means the cache or
        // our read was stale (AlreadyExists, or the object changed since: the API server
        // updates CRD status, users edit): read from the API server and retry a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let known = if attempt == 1 {
                self.cached(target, &name)
            } else {
                None
            };
            match self.apply_once(&api, &name, obj, known).await {
                Err(ApiError::Conflict(_)) if attempt < 4 => continue,
                other => return other,
            }
        }
    }

    async fn get(&self, target: Target, name: &str) -> Result<Option<Value>, ApiError> {
        match self.api(target).get_opt(name).await.map_err(api_error)? {
            Some(o) => serde_json::to_value(&o).map(Some).map_err(ApiError::Json),
            None => Ok(None),
        }
    }

    async fn get_constraint(&self, kind: &str, name: &str) -> Result<Option<Value>, ApiError> {
        let plural = self
            .world
            .read()
            .expect("world")
            .crds
            .get(&kind.to_ascii_lowercase())
            .map(|c| c.plural.clone());
        // No CRD serves the kind: no constraint of it can exist.
        let Some(plural) = plural else {
            return Ok(None);
        };
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &constraint_resource(kind, &plural));
        match api.get_opt(name).await.map_err(api_error)? {
            Some(o) => serde_json::to_value(&o).map(Some).map_err(ApiError::Json),
            None => Ok(None),
        }
    }

    async fn list(&self, target: Target) -> Result<Vec<Value>, ApiError> {
        let list = self
            .api(target)
            .list(&kube::api::ListParams::default())
            .await
            .map_err(api_error)?;
        list.items
            .iter()
            .map(|o| serde_json::to_value(o).map_err(ApiError::Json))
            .collect()
    }

    async fn delete(
        &self,
        target: Target,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> Result<(), ApiError> {
        self.delete_once(target, name, uid, resource_version).await
    }

    async fn patch_status(&self, target: &StatusTarget, status: &Value) -> Result<(), ApiError> {
        self.patch_status_once(target, status).await
    }

    async fn event(
        &self,
        target: &StatusTarget,
        uid: &str,
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        self.event_once(target, uid, warning, reason, message).await
    }

    async fn end_probe(&self, kind: &str) {
        if self.canary_namespace.is_some() && self.leader.ensure().await {
            super::readiness::remove_canary(&self.client, kind).await;
        }
        self.canaries
            .lock()
            .expect("canaries lock")
            .remove(&kind.to_ascii_lowercase());
    }

    async fn probe_kind(&self, crd: &CrdInfo) -> Probe {
        super::readiness::probe(
            &self.client,
            crd,
            self.canary_namespace.as_deref(),
            &self.leader,
            &self.canaries,
        )
        .await
    }
}

impl KubeCluster {
    /// What the watch cache says of a VAP or binding: `Some(None)` absent, `Some(Some(obj))`
    /// present, `None` when the cache cannot say (CRDs are cached as [`CrdInfo`] only).
    fn cached(&self, target: Target, name: &str) -> Option<Option<Value>> {
        let w = self.world.read().expect("world");
        match target {
            Target::Vap => Some(w.vaps.get(name).cloned()),
            Target::Vapb => Some(w.vapbs.get(name).cloned()),
            Target::Crd => None,
        }
    }

    /// One write of `obj`: from `known` (the cache's word) on a first attempt, else after a
    /// read from the API server. Absent: a create (409 AlreadyExists if the cache or the read
    /// was stale; the caller reads again). Present: the repair below.
    async fn apply_once(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        obj: &Value,
        known: Option<Option<Value>>,
    ) -> Result<Value, ApiError> {
        let live = match known {
            Some(cached) => cached,
            None => match api.get_opt(name).await.map_err(api_error)? {
                Some(o) => Some(serde_json::to_value(&o).map_err(ApiError::Json)?),
                None => None,
            },
        };
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let stored = match live {
            None => {
                let o: DynamicObject =
                    serde_json::from_value(obj.clone()).map_err(ApiError::Json)?;
                api.create(&pp, &o).await
            }
            // Repair: the whole spec is vapgen's, whoever edited it since. Replacing it on a
            // copy of the live object (optimistic concurrency through its resourceVersion)
            // also removes list entries another field manager added, which an apply would
            // merge (e.g. a `Warn` added next to our `Deny`). Others' labels stay.
            Some(mut v) => {
                overlay(&mut v, obj);
                let o: DynamicObject = serde_json::from_value(v).map_err(ApiError::Json)?;
                api.replace(name, &pp, &o).await
            }
        }
        .map_err(api_error)?;
        serde_json::to_value(&stored).map_err(ApiError::Json)
    }

    async fn delete_once(
        &self,
        target: Target,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> Result<(), ApiError> {
        if !self.leader.ensure().await {
            return Err(ApiError::NotLeader);
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: (!uid.is_empty()).then(|| uid.to_string()),
                resource_version: (!resource_version.is_empty())
                    .then(|| resource_version.to_string()),
            }),
            ..DeleteParams::default()
        };
        self.api(target)
            .delete(name, &dp)
            .await
            .map(|_| ())
            .map_err(api_error)
    }

    async fn patch_status_once(
        &self,
        target: &StatusTarget,
        status: &Value,
    ) -> Result<(), ApiError> {
        if !self.leader.ensure().await {
            return Err(ApiError::NotLeader);
        }
        let (api, name) = self.status_api(target)?;
        let patch = json!({"status": {"vapgen": status}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(api_error)
    }

    async fn event_once(
        &self,
        target: &StatusTarget,
        uid: &str,
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        if !self.leader.is_leader() {
            return;
        }
        let (api_version, kind, name) = match target {
            StatusTarget::Template(n) => (
                format!("{}/v1", snapshot::TEMPLATE_GROUP),
                "ConstraintTemplate".to_string(),
                n.clone(),
            ),
            StatusTarget::Constraint { kind, name } => (
                format!("{}/v1beta1", snapshot::CONSTRAINT_GROUP),
                kind.clone(),
                name.clone(),
            ),
        };
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(api_version),
            kind: Some(kind),
            name: Some(name),
            uid: (!uid.is_empty()).then(|| uid.to_string()),
            ..Default::default()
        };
        let note = event_note(message);
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::debug!(error = %e, "cannot publish event");
        }
    }
}

/// The longest Event note the API server accepts is 1 kB; notes carry user text (template
/// and constraint messages), so they are cut at a character boundary at or below it.
pub(crate) const EVENT_NOTE_MAX: usize = 1000;

/// `message` cut to at most [`EVENT_NOTE_MAX`] bytes without splitting a character.
pub(crate) fn event_note(message: &str) -> String {
    let mut end = message.len().min(EVENT_NOTE_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_errors_the_reconcilers_do_not_classify_keep_their_source() {
        let kube_error =
            || kube::Error::SerdeError(serde_json::from_str::<Value>("{").expect_err("not JSON"));
        let e = api_error(kube_error());
        assert!(matches!(&e, ApiError::Kube { .. }), "{e:?}");
        assert_eq!(e.to_string(), kube_error().to_string());
        let source = std::error::Error::source(&e).expect("kube's error underneath");
        assert!(source.is::<kube::Error>());
        let json = ApiError::Json(serde_json::from_str::<Value>("{").expect_err("not JSON"));
        assert!(std::error::Error::source(&json).is_some_and(|s| s.is::<serde_json::Error>()));
    }
}
