//! The watches that feed the [`World`]: one per shared resource, one per Established
//! constraint kind, each supervised (one that ends or panics fails `/healthz`). A relist
//! replaces its cache and is the only news of deletions missed while the watch was down.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::task::AbortHandle;

use super::queue::{Key, Queue};
use super::world::{CrdInfo, World, controller_of, watches};
use crate::snapshot;

use super::resources::{
    constraint_resource, crd_resource, gatekeeper_config_resource, template_resource, vap_resource,
    vapb_resource, webhook_config_resource,
};

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
        }
    }

    /// Whether this feed holds an input of scope sync rather than objects with keys.
    fn is_scope(&self) -> bool {
        matches!(self, Feed::WebhookConfig | Feed::GatekeeperConfig)
    }

    /// For a scope feed: every template, if the scope inputs differ from `before` (a change
    /// re-plans every kind once); nothing otherwise.
    fn scope_change(w: &World, before: &super::world::ScopeInputs) -> Vec<Key> {
        if w.scope_inputs() == *before {
            return Vec::new();
        }
        w.templates.keys().cloned().map(Key::Template).collect()
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
        }
    }

    /// A (re)list of a feed other than CRDs, as a pure step on the caches: the cache becomes
    /// exactly `objs` and is marked synced; returns the keys to queue (those of the objects
    /// before and after, so a deletion missed while the watch was down is reconciled). The
    /// watches and the schedule-exploration simulator both run it.
    pub fn replace(&self, w: &mut World, objs: Vec<Value>) -> Vec<Key> {
        if self.is_scope() {
            let before = w.scope_inputs();
            let map = self.map(w);
            map.clear();
            for o in objs {
                map.insert(snapshot::name_of(&o).to_string(), o);
            }
            w.synced.insert(self.sync_name());
            return Self::scope_change(w, &before);
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
        let before = self.is_scope().then(|| w.scope_inputs());
        let keys = self.keys(&obj);
        let map = self.map(w);
        let name = snapshot::name_of(&obj).to_string();
        if deleted {
            map.remove(&name);
        } else {
            map.insert(name, obj);
        }
        match before {
            Some(before) => Self::scope_change(w, &before),
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
            Feed::Crds | Feed::WebhookConfig | Feed::GatekeeperConfig => vec![],
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
        scope: Option<&ScopeWatch>,
    ) -> Self {
        let w = Watches {
            client,
            world,
            queue,
            kinds: Arc::default(),
            shared: Arc::default(),
            dead,
        };
        let all = |ar: &ApiResource| Api::all_with(w.client.clone(), ar);
        let mut handles = vec![
            w.spawn(
                Feed::Templates,
                all(&template_resource()),
                watcher::Config::default(),
            ),
            w.spawn(Feed::Vaps, all(&vap_resource()), watcher::Config::default()),
            w.spawn(
                Feed::Vapbs,
                all(&vapb_resource()),
                watcher::Config::default(),
            ),
            w.spawn(Feed::Crds, all(&crd_resource()), watcher::Config::default()),
        ];
        if let Some(scope) = scope {
            w.world.write().expect("world").scope_sync = true;
            let by_name =
                |n: &str| watcher::Config::default().fields(&format!("metadata.name={n}"));
            handles.push(w.spawn(
                Feed::WebhookConfig,
                all(&webhook_config_resource()),
                by_name(&scope.webhook_config),
            ));
            handles.push(w.spawn(
                Feed::GatekeeperConfig,
                Api::namespaced_with(
                    w.client.clone(),
                    &scope.config_namespace,
                    &gatekeeper_config_resource(),
                ),
                by_name(&scope.config_name),
            ));
        }
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

    fn spawn(&self, feed: Feed, api: Api<DynamicObject>, cfg: watcher::Config) -> AbortHandle {
        let this = self.clone();
        let name = format!("watch {}", feed.sync_name());
        super::runner::supervise(&self.dead, &self.queue, &name, async move {
            this.run(feed, api, cfg).await
        })
        .abort_handle()
    }

    async fn run(&self, feed: Feed, api: Api<DynamicObject>, cfg: watcher::Config) {
        use kube::runtime::WatchStreamExt;
        // kube-runtime's default backoff (exponential with jitter, reset on success) instead
        // of a fixed retry: a missing CRD or an unreachable server is not hammered.
        let mut stream = watcher(api, cfg).default_backoff().boxed();
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
                Err(e) if feed.is_scope() && !failing => {
                    // Gatekeeper's object cannot be read (its Config CRD is not installed in
                    // standalone mode, or RBAC refuses): scope sync goes on without it, as
                    // Gatekeeper's does before its caches fill, so that no template waits on
                    // it; the watch keeps retrying and a later list re-plans every kind.
                    failing = true;
                    if not_served(&e) {
                        tracing::info!(watch = %name, "not served (Gatekeeper's Config CRD is not installed?); scope sync goes on without it and picks it up once it is");
                    } else {
                        tracing::warn!(watch = %name, error = %e, "cannot read Gatekeeper's object; scope sync goes on without it, retrying with backoff. {}", watch_remedy(&feed, &e));
                    }
                    if !self.world.read().expect("world").synced.contains(&name) {
                        self.replace(&feed, Vec::new());
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
        let keys = feed.replace(&mut self.world.write().expect("world"), objs);
        for k in keys {
            self.queue.add(k);
        }
    }

    fn upsert(&self, feed: &Feed, obj: Value, deleted: bool) {
        if let Feed::Crds = feed {
            self.crd_event(obj, deleted);
            return;
        }
        let keys = feed.apply(&mut self.world.write().expect("world"), obj, deleted);
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
        // Only a change of what the controller keeps (Established, UID, plural, the template
        // generation and owner) concerns the template: the API server's other status updates
        // of a new CRD (NamesAccepted, …) would re-run its reconcile — and re-send a VAP the
        // API server keeps rejecting — for nothing.
        let changed = self
            .world
            .write()
            .expect("world")
            .crds
            .insert(key.clone(), info.clone())
            .is_none_or(|old| old != info);
        if start {
            let api = Api::all_with(self.client.clone(), &ar);
            let h = self.spawn(Feed::Constraints { kind }, api, watcher::Config::default());
            self.kinds.lock().expect("kinds").insert(key.clone(), h);
        }
        if changed {
            self.queue.add(Key::Template(key));
        }
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

/// What to do about a failing watch, for the log line.
/// Whether a watch failed because its resource is not served (404: no such CRD).
fn not_served(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) | watcher::Error::WatchFailed(kube::Error::Api(s)) if s.code == 404)
}

fn watch_remedy(feed: &Feed, e: &watcher::Error) -> &'static str {
    let missing = not_served(e);
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
    fn crd_info_reads_only_constraint_crds() {
        assert!(crd_info(&crd("K")).is_some_and(|i| i.kind == "K" && !i.established));
        let mut other = crd("K");
        other["spec"]["group"] = "example.com".into();
        assert!(crd_info(&other).is_none());
    }
}
