//! The kube-rs side: watches that feed the [`World`], and [`KubeCluster`], the [`Cluster`]
//! that writes to a real API server (server-side apply, preconditioned deletes, status,
//! Events, readiness probes) — only while this replica holds the lease.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use super::leader::Leader;
use super::queue::{Key, Queue};
use super::reconcile::{ApiError, Cluster, Probe, StatusTarget, Target};
use super::world::{CrdInfo, World, controller_of, watches};
use crate::snapshot;

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "vapgen";

/// ConstraintTemplates (`templates.gatekeeper.sh/v1`).
pub fn template_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(snapshot::TEMPLATE_GROUP, "v1", "ConstraintTemplate"),
        "constrainttemplates",
    )
}

fn admission_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        plural,
    )
}

/// ValidatingAdmissionPolicies.
pub fn vap_resource() -> ApiResource {
    admission_resource("ValidatingAdmissionPolicy", "validatingadmissionpolicies")
}

/// ValidatingAdmissionPolicyBindings.
pub fn vapb_resource() -> ApiResource {
    admission_resource(
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    )
}

/// CustomResourceDefinitions.
pub fn crd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    )
}

/// The v1beta1 resource of a constraint kind.
pub fn constraint_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(snapshot::CONSTRAINT_GROUP, "v1beta1", kind),
        plural,
    )
}

// === watches ===

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
}

impl Feed {
    fn sync_name(&self) -> String {
        match self {
            Feed::Templates => watches::TEMPLATES.into(),
            Feed::Vaps => watches::VAPS.into(),
            Feed::Vapbs => watches::VAPBS.into(),
            Feed::Crds => watches::CRDS.into(),
            Feed::Constraints { kind } => watches::constraints(kind),
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
            Feed::Crds => vec![],
        }
    }
}

/// Shared state of the watch tasks.
#[derive(Clone)]
pub struct Watches {
    client: kube::Client,
    world: Arc<RwLock<World>>,
    queue: Queue,
    kinds: Arc<Mutex<HashMap<String, AbortHandle>>>,
    shared: Arc<Mutex<Vec<AbortHandle>>>,
    /// Where a watch that ends or panics is recorded (`/healthz` fails).
    dead: Arc<Mutex<Vec<String>>>,
}

impl Watches {
    /// Starts the shared watches; constraint watches start as their CRDs become Established.
    /// Each runs supervised: one that ends or panics is named in `dead`.
    pub fn start(
        client: kube::Client,
        world: Arc<RwLock<World>>,
        queue: Queue,
        dead: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        let w = Watches {
            client,
            world,
            queue,
            kinds: Arc::default(),
            shared: Arc::default(),
            dead,
        };
        let handles = vec![
            w.spawn(Feed::Templates, template_resource()),
            w.spawn(Feed::Vaps, vap_resource()),
            w.spawn(Feed::Vapbs, vapb_resource()),
            w.spawn(Feed::Crds, crd_resource()),
        ];
        *w.shared.lock().expect("watches") = handles;
        w
    }

    /// Stops every watch.
    pub fn stop(&self) {
        for h in self.shared.lock().expect("watches").drain(..) {
            h.abort();
        }
        for (_, h) in self.kinds.lock().expect("kinds").drain() {
            h.abort();
        }
    }

    fn spawn(&self, feed: Feed, ar: ApiResource) -> AbortHandle {
        let this = self.clone();
        let name = format!("watch {}", feed.sync_name());
        super::supervise(&self.dead, &self.queue, &name, async move {
            this.run(feed, ar).await
        })
        .abort_handle()
    }

    async fn run(&self, feed: Feed, ar: ApiResource) {
        use kube::runtime::WatchStreamExt;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        // kube-runtime's default backoff (exponential with jitter, reset on success) instead
        // of a fixed retry: a missing CRD or an unreachable server is not hammered.
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut buffer: Option<Vec<Value>> = None;
        // The first error of a run of failures is a warning (with what to do); repeats are
        // debug until the watch works again.
        let mut failing = false;
        let name = feed.sync_name();
        let to_value = |o: &DynamicObject| match serde_json::to_value(o) {
            Ok(v) => Some(super::world::without_managed_fields(v)),
            Err(e) => {
                tracing::warn!(watch = %name, object = ?o.metadata.name, error = %e, "cannot read a watched object; skipped");
                None
            }
        };
        while let Some(ev) = stream.next().await {
            if ev.is_ok() && failing {
                failing = false;
                tracing::info!(watch = %name, "watch works again");
            }
            match ev {
                Ok(watcher::Event::Init) => buffer = Some(Vec::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    if let (Some(b), Some(v)) = (buffer.as_mut(), to_value(&o)) {
                        b.push(v);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let objs = buffer.take().unwrap_or_default();
                    self.replace(&feed, objs);
                }
                Ok(watcher::Event::Apply(o)) => {
                    if let Some(v) = to_value(&o) {
                        self.upsert(&feed, v, false);
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    if let Some(v) = to_value(&o) {
                        self.upsert(&feed, v, true);
                    }
                }
                Err(e) if failing => {
                    tracing::debug!(watch = %name, error = %e, "watch still failing; retrying with backoff");
                }
                Err(e) => {
                    failing = true;
                    tracing::warn!(watch = %name, error = %e, "watch failed; retrying with backoff. {}", watch_remedy(&feed, &e));
                }
            }
        }
    }

    /// A (re)list completed: the cache becomes exactly the listed objects.
    fn replace(&self, feed: &Feed, objs: Vec<Value>) {
        if let Feed::Crds = feed {
            // A relist (after a 410 Gone or a broken watch) is the only news of CRDs
            // deleted while the watch was down: every known kind not in the list is gone.
            let listed: std::collections::HashSet<String> = objs
                .iter()
                .filter_map(crd_info)
                .map(|i| i.kind.to_ascii_lowercase())
                .collect();
            let known: Vec<String> = {
                let w = self.world.read().expect("world");
                w.crds.values().map(|c| c.kind.clone()).collect()
            };
            for kind in known {
                if !listed.contains(&kind.to_ascii_lowercase()) {
                    self.crd_gone(&kind);
                }
            }
            for o in objs {
                self.crd_event(o, false);
            }
            self.world
                .write()
                .expect("world")
                .synced
                .insert(feed.sync_name());
            return;
        }
        let mut keys = Vec::new();
        {
            let mut w = self.world.write().expect("world");
            let map = feed.map(&mut w);
            for old in map.values() {
                keys.extend(feed.keys(old));
            }
            map.clear();
            for o in objs {
                keys.extend(feed.keys(&o));
                map.insert(snapshot::name_of(&o).to_string(), o);
            }
            w.synced.insert(feed.sync_name());
        }
        for k in keys {
            self.queue.add(k);
        }
    }

    fn upsert(&self, feed: &Feed, obj: Value, deleted: bool) {
        if let Feed::Crds = feed {
            self.crd_event(obj, deleted);
            return;
        }
        let keys = feed.keys(&obj);
        {
            let mut w = self.world.write().expect("world");
            let map = feed.map(&mut w);
            let name = snapshot::name_of(&obj).to_string();
            if deleted {
                map.remove(&name);
            } else {
                map.insert(name, obj);
            }
        }
        for k in keys {
            self.queue.add(k);
        }
    }

    fn crd_event(&self, obj: Value, deleted: bool) {
        let Some(info) = crd_info(&obj) else {
            return;
        };
        if deleted {
            self.crd_gone(&info.kind);
            return;
        }
        let key = info.kind.to_ascii_lowercase();
        let start = info.established && !self.kinds.lock().expect("kinds").contains_key(&key);
        let ar = constraint_resource(&info.kind, &info.plural);
        let kind = info.kind.clone();
        self.world
            .write()
            .expect("world")
            .crds
            .insert(key.clone(), info);
        if start {
            let h = self.spawn(Feed::Constraints { kind }, ar);
            self.kinds.lock().expect("kinds").insert(key.clone(), h);
        }
        self.queue.add(Key::Template(key));
    }

    /// The constraint CRD of `kind` is gone: its watch stops and its constraints leave the
    /// cache (an empty, synced cache), and the template and every constraint are requeued.
    fn crd_gone(&self, kind: &str) {
        let key = kind.to_ascii_lowercase();
        if let Some(h) = self.kinds.lock().expect("kinds").remove(&key) {
            h.abort();
        }
        let mut requeue = vec![Key::Template(key.clone())];
        {
            let mut w = self.world.write().expect("world");
            w.crds.remove(&key);
            if let Some(m) = w.constraints.insert(key.clone(), BTreeMap::new()) {
                requeue.extend(m.into_keys().map(|name| Key::Constraint {
                    kind: kind.to_string(),
                    name,
                }));
            }
            w.synced.insert(watches::constraints(kind));
        }
        for k in requeue {
            self.queue.add(k);
        }
    }
}

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

/// What to do about a failing watch, for the log line.
fn watch_remedy(feed: &Feed, e: &watcher::Error) -> &'static str {
    let missing = matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) | watcher::Error::WatchFailed(kube::Error::Api(s)) if s.code == 404);
    match feed {
        Feed::Templates if missing => {
            "The ConstraintTemplate CRD (templates.gatekeeper.sh) is not installed: install Gatekeeper, or apply deploy/crds/constrainttemplates.yaml for standalone mode"
        }
        _ if missing => "The resource is not served (yet): its CRD is missing or not Established",
        _ => {
            "Check that the API server is reachable (its URL is in the start-up log line) and that vapgen's RBAC allows list and watch"
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
        established: obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Established")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            }),
        uid: obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        template_generation: obj
            .pointer(&format!(
                "/metadata/annotations/{}",
                super::crds::TEMPLATE_GENERATION_ANNOTATION.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok()),
        template_owner: controller_of(obj)
            .filter(|c| c.api_version.starts_with(snapshot::TEMPLATE_GROUP))
            .map(|c| c.name),
    })
}

/// Maps a kube error to the reconcilers' categories.
pub fn api_error(e: kube::Error) -> ApiError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => ApiError::NotFound,
        kube::Error::Api(s) if s.code == 409 => ApiError::Conflict(s.message.clone()),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            ApiError::Rejected(s.message.clone())
        }
        kube::Error::Api(s) => ApiError::Other(format!("{} ({})", s.message, s.code)),
        _ => ApiError::Other(e.to_string()),
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
            Some(o) => serde_json::to_value(&o)
                .map(Some)
                .map_err(|e| ApiError::Other(e.to_string())),
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
            Some(o) => serde_json::to_value(&o)
                .map(Some)
                .map_err(|e| ApiError::Other(e.to_string())),
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
            .map(|o| serde_json::to_value(o).map_err(|e| ApiError::Other(e.to_string())))
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
    /// read from the API server.
    async fn apply_once(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        obj: &Value,
        known: Option<Option<Value>>,
    ) -> Result<Value, ApiError> {
        let name = name.to_string();
        let live = match known {
            Some(Some(cached)) => Some(
                serde_json::from_value::<DynamicObject>(cached)
                    .map_err(|e| ApiError::Other(e.to_string()))?,
            ),
            Some(None) => {
                // Absent by the cache: a plain create (409 AlreadyExists if it is stale).
                let o: DynamicObject = serde_json::from_value(obj.clone())
                    .map_err(|e| ApiError::Other(e.to_string()))?;
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                let stored = api.create(&pp, &o).await.map_err(api_error)?;
                return serde_json::to_value(&stored).map_err(|e| ApiError::Other(e.to_string()));
            }
            None => api.get_opt(&name).await.map_err(api_error)?,
        };
        let stored = match live {
            // Create with server-side apply.
            None => {
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                api.patch(&name, &pp, &Patch::Apply(obj))
                    .await
                    .map_err(api_error)?
            }
            // Repair: the whole spec is vapgen's, whoever edited it since. Replacing it on a
            // copy of the live object (optimistic concurrency through its resourceVersion)
            // also removes list entries another field manager added, which an apply would
            // merge (e.g. a `Warn` added next to our `Deny`). Others' labels stay.
            Some(live) => {
                let mut v =
                    serde_json::to_value(&live).map_err(|e| ApiError::Other(e.to_string()))?;
                overlay(&mut v, obj);
                let o: DynamicObject =
                    serde_json::from_value(v).map_err(|e| ApiError::Other(e.to_string()))?;
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                api.replace(&name, &pp, &o).await.map_err(api_error)?
            }
        };
        serde_json::to_value(&stored).map_err(|e| ApiError::Other(e.to_string()))
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

/// Creates an object unless it exists (used for the canary objects).
pub(crate) async fn create_or_keep(
    api: &Api<DynamicObject>,
    obj: &Value,
) -> Result<(), kube::Error> {
    let o: DynamicObject = serde_json::from_value(obj.clone()).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &o).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(kind: &str) -> Value {
        serde_json::json!({
            "metadata": {"name": format!("{}.{}", kind.to_ascii_lowercase(), snapshot::CONSTRAINT_GROUP), "uid": format!("uid-{kind}")},
            "spec": {"group": snapshot::CONSTRAINT_GROUP, "names": {"kind": kind, "plural": kind.to_ascii_lowercase()}},
            // Not Established: no constraint watch is started (nothing to connect to here).
            "status": {"conditions": [{"type": "Established", "status": "False"}]}
        })
    }

    /// A relist of CRDs (after a 410 Gone) drops the kinds that are no longer listed: the
    /// deletion event was lost with the watch, and the list is the only news of it.
    #[tokio::test]
    async fn a_crd_relist_forgets_kinds_deleted_while_the_watch_was_down() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("url"),
        ))
        .expect("client");
        let world: Arc<RwLock<World>> = Arc::default();
        let queue = Queue::default();
        let w = Watches {
            client,
            world: world.clone(),
            queue: queue.clone(),
            kinds: Arc::default(),
            shared: Arc::default(),
            dead: Arc::default(),
        };
        w.replace(&Feed::Crds, vec![crd("Kept"), crd("Gone")]);
        world
            .write()
            .expect("world")
            .constraints
            .entry("gone".into())
            .or_default()
            .insert("c1".into(), serde_json::json!({"metadata": {"name": "c1"}}));
        while let Some(k) = queue.try_next() {
            queue.done(&k);
        }

        w.replace(&Feed::Crds, vec![crd("Kept")]);
        let wr = world.read().expect("world");
        assert!(wr.crds.contains_key("kept"));
        assert!(!wr.crds.contains_key("gone"), "{:?}", wr.crds.keys());
        assert!(wr.constraints["gone"].is_empty());
        drop(wr);
        let mut keys = Vec::new();
        while let Some(k) = queue.try_next() {
            keys.push(k.to_string());
            queue.done(&k);
        }
        assert!(keys.contains(&"template/gone".to_string()), "{keys:?}");
        assert!(keys.contains(&"Gone/c1".to_string()), "{keys:?}");
    }

    #[test]
    fn crd_info_reads_only_constraint_crds() {
        assert!(crd_info(&crd("K")).is_some_and(|i| i.kind == "K" && !i.established));
        let mut other = crd("K");
        other["spec"]["group"] = "example.com".into();
        assert!(crd_info(&other).is_none());
    }
}
