//! The watches that feed the [`World`]: one per shared resource, one per Established
//! constraint kind, each supervised (one that ends or panics fails `/healthz`). A relist
//! replaces its cache and is the only news of deletions missed while the watch was down.
//! The tasks are here; what an event does to the caches — the per-resource mapping, a pure
//! step the schedule explorer runs too — is in `caches`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::task::AbortHandle;

use super::queue::{Key, Queue};
use super::world::{World, watches};

mod caches;

pub use caches::{Feed, RivalWatch, ScopeWatch, crd_info};

use super::resources::{
    constraint_resource, crd_resource, gatekeeper_config_resource, template_pod_status_resource,
    template_resource, vap_resource, vapb_resource, webhook_config_resource,
};

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
    /// Each runs supervised: one that ends or panics is named in `dead`. `scope`: scope sync's
    /// watches; `rivals`: the watch of Gatekeeper's per-pod status objects (coexist mode).
    pub fn start(
        client: kube::Client,
        world: Arc<RwLock<World>>,
        queue: Queue,
        dead: Arc<Mutex<Vec<String>>>,
        scope: Option<&ScopeWatch>,
        rivals: Option<&RivalWatch>,
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
        if let Some(r) = rivals {
            w.world.write().expect("world").own_generator_id = Some(r.own_id.clone());
            handles.push(w.spawn(
                Feed::PodStatuses,
                Api::namespaced_with(
                    w.client.clone(),
                    &r.namespace,
                    &template_pod_status_resource(),
                ),
                watcher::Config::default(),
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
                Err(e) if feed.is_gatekeeper() && !failing => {
                    // Gatekeeper's object cannot be read (its Config CRD is not installed in
                    // standalone mode, or RBAC refuses): scope sync goes on without it, as
                    // Gatekeeper's does before its caches fill, so that no template waits on
                    // it; the watch keeps retrying and a later list re-plans every kind.
                    // Likewise its per-pod status objects: none listed, no rival known.
                    failing = true;
                    if matches!(feed, Feed::PodStatuses) {
                        if not_served(&e) {
                            tracing::info!(watch = %name, "not served (Gatekeeper's status CRDs are not installed?); no Gatekeeper pod can be seen generating until they are");
                        } else {
                            tracing::warn!(watch = %name, error = %e, "cannot read Gatekeeper's per-pod status objects: a Gatekeeper pod running `generate` beside vapgen would go unnoticed; retrying with backoff. {}", watch_remedy(&feed, &e));
                        }
                    } else if not_served(&e) {
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

#[cfg(test)]
mod tests {
    use super::caches::tests::crd;
    use super::*;

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
}
