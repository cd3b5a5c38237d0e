//! The controller's long-running tasks: the leadership loop (every `true` starts a term),
//! housekeeping (metrics, the end of a lapse, the resync) and the workers (the library's
//! [`super::worker::admit`], [`super::worker::reconcile_key`] and [`super::worker::finish`]
//! steps, which the schedule explorer calls too, plus metrics and logs), all supervised.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::kube::KubeCluster;
use super::leader::Leader;
use super::metrics::Metrics;
use super::queue::{Key, Queue};
use super::reconcile::Ctx;
use super::{Handles, begin_term, requeue_all, worker};

/// Spawns `fut` so that its end (a return or a panic) is recorded in `dead` and logged,
/// unless the controller is stopping (`queue` closed).
pub(crate) fn supervise(
    dead: &Arc<Mutex<Vec<String>>>,
    queue: &Queue,
    name: &str,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use futures::FutureExt;
    let (dead, name, queue) = (dead.clone(), name.to_string(), queue.clone());
    tokio::spawn(async move {
        let r = std::panic::AssertUnwindSafe(fut).catch_unwind().await;
        if queue.is_closed() {
            return;
        }
        match r {
            Ok(()) => tracing::error!(task = %name, "task ended; /healthz fails"),
            Err(_) => tracing::error!(task = %name, "task panicked; /healthz fails"),
        }
        dead.lock().expect("dead tasks").push(name);
    })
}

/// Requeues everything whenever this replica becomes leader.
pub(super) async fn leadership(h: Handles) {
    let Some(mut rx) = h.leader.changes() else {
        h.metrics.leader(true);
        // Always leading: nothing to follow (and a supervised task must not end).
        return std::future::pending().await;
    };
    let mut was = false;
    loop {
        rx.borrow_and_update();
        // kube-lease-manager sends only changes, and a watch channel keeps only the latest
        // value: `true` after `true` means a `false` in between went unseen (the lease was
        // lost and won back), so every `true` starts a term (see `leader`).
        let now = h
            .leader
            .take_change(|| begin_term(&h.records, &h.world, &h.queue));
        h.metrics.leader(now);
        if now {
            tracing::info!(
                identity = h.leader.identity(),
                "became leader; re-deriving every decision"
            );
        } else if was {
            tracing::warn!(
                identity = h.leader.identity(),
                "lost leadership; writes stop"
            );
        }
        was = now;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub(super) async fn housekeeping(h: Handles, resync: Duration) {
    let mut last_resync = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts = h.records.lock().expect("records").counts();
        h.metrics.decisions(&counts);
        h.metrics.queue_depth(h.queue.len());
        if h.leader.is_lapsed()
            && h.leader
                .end_lapse(|| begin_term(&h.records, &h.world, &h.queue))
                .await
        {
            tracing::info!(
                identity = h.leader.identity(),
                "holding the lease again after a lapse; new term, re-deriving every decision"
            );
        }
        if last_resync.elapsed() >= resync {
            last_resync = tokio::time::Instant::now();
            if h.leader.is_leader() {
                requeue_all(&h);
            }
        }
    }
}

/// Coexist mode: says loudly when a Gatekeeper pod runs `generate` beside vapgen, and when
/// none does any more (the reconcilers themselves stop and resume writing, on the watch's
/// news): the gauge `vapgen_rival_generators`, a warning in the log and a Warning Event on
/// vapgen's Pod (or Lease), once per change of the set of rivals.
pub(super) async fn rivals(h: Handles, events: super::module_watch::ModuleEvents) {
    // What the log and the gauge last said (every replica), and what the Events last said
    // (the leader only: each replica would repeat them).
    let mut last = std::collections::BTreeSet::new();
    let mut announced: Option<std::collections::BTreeSet<String>> = None;
    loop {
        let now = h.world.read().expect("world").rival_generators();
        let ids: Vec<String> = now.iter().cloned().collect();
        if now != last {
            h.metrics.rival_generators(now.len());
            if now.is_empty() {
                tracing::info!(
                    was = ?last,
                    "no Gatekeeper pod runs the generate operation any more; vapgen re-plans every kind and writes again"
                );
            } else {
                let message = super::reconcile::yield_message(&ids);
                tracing::warn!(rivals = ?ids, "{message}");
            }
            last = now.clone();
        }
        // A replica that becomes leader while a rival runs says so once.
        if h.leader.is_leader() && announced.as_ref() != Some(&now) {
            if !now.is_empty() {
                let message = super::reconcile::yield_message(&ids);
                events
                    .publish_as("DetectRivalGenerator", true, "RivalGenerator", &message)
                    .await;
            } else if announced.is_some() {
                events
                    .publish_as(
                        "DetectRivalGenerator",
                        false,
                        "RivalGeneratorGone",
                        "no Gatekeeper pod runs the generate operation any more; vapgen writes its ValidatingAdmissionPolicies and bindings again",
                    )
                    .await;
            }
            announced = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn worker(
    ctx: Arc<Ctx<KubeCluster>>,
    leader: Arc<Leader>,
    metrics: Arc<Metrics>,
    panicked: Arc<Mutex<BTreeMap<String, String>>>,
) {
    while let Some(key) = ctx.queue.next().await {
        if !worker::admit(&leader, &ctx.queue, &key) {
            continue;
        }
        let span = tracing::info_span!("reconcile", %key);
        let outcome =
            tracing::Instrument::instrument(worker::reconcile_key(&ctx, &key), span).await;
        let retry = worker::finish(&ctx.queue, &key, &outcome);
        let key_type = match &key {
            Key::Template(_) => "template",
            Key::Constraint { .. } => "constraint",
        };
        metrics.reconcile(key_type, outcome.label());
        if let worker::Outcome::Panicked(m) = &outcome {
            panicked
                .lock()
                .expect("panicked keys")
                .insert(key.to_string(), m.clone());
        } else if matches!(outcome, worker::Outcome::Done(_)) {
            panicked
                .lock()
                .expect("panicked keys")
                .remove(&key.to_string());
        }
        match &outcome {
            worker::Outcome::Done(_) => {}
            worker::Outcome::Fenced => {
                tracing::info!(%key, retry_in = ?retry, "a write was refused by the lease fence; retrying")
            }
            worker::Outcome::Failed(e) => {
                tracing::warn!(%key, error = %e, retry_in = ?retry, "reconcile failed")
            }
            worker::Outcome::Panicked(m) => {
                metrics.panic();
                tracing::error!(%key, panic = %m, retry_in = ?retry, "reconcile panicked; retrying with backoff")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::leader::fake::FakeLease;
    use crate::controller::record::Records;
    use crate::controller::world::World;
    use crate::runtime::{Decide, NativeDecider};
    use std::sync::RwLock;

    fn handles(leader: Leader) -> Handles {
        let mut world = World::default();
        world.templates.insert(
            "k8sfoo".into(),
            serde_json::json!({"metadata": {"name": "k8sfoo"}}),
        );
        let decider: Arc<dyn Decide> = Arc::new(NativeDecider);
        Handles {
            world: Arc::new(RwLock::new(world)),
            records: Arc::new(Mutex::new(Records::default())),
            metrics: Arc::new(Metrics::default()),
            leader: Arc::new(leader),
            queue: Queue::default(),
            decider: Arc::new(RwLock::new(decider)),
            dead_tasks: Arc::default(),
            panicked: Arc::default(),
        }
    }

    /// Lets housekeeping run its ticks up to `t` of the paused clock.
    async fn run_for(t: Duration) {
        tokio::time::sleep(t).await;
    }

    #[tokio::test(start_paused = true)]
    async fn housekeeping_resyncs_every_period_and_not_before() {
        let h = handles(Leader::always("me"));
        let task = tokio::spawn(housekeeping(h.clone(), Duration::from_secs(300)));
        let template = Key::Template("k8sfoo".into());
        run_for(Duration::from_millis(299_500)).await;
        assert!(h.queue.is_empty(), "no resync before its period");
        run_for(Duration::from_secs(1)).await;
        assert!(h.queue.take(&template), "requeued by the resync at 300 s");
        h.queue.done(&template);
        run_for(Duration::from_secs(299)).await;
        assert!(h.queue.is_empty());
        run_for(Duration::from_secs(2)).await;
        assert!(h.queue.take(&template), "and again 300 s later");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn housekeeping_ends_a_lapse_within_a_tick_of_the_lease_being_held_again() {
        let lease = FakeLease::held_by("other");
        let (tx, rx) = tokio::sync::watch::channel(true);
        let h = handles(Leader::with_lease("me", rx, lease.clone()));
        h.leader.take_change(|| {});
        assert!(
            !h.leader.ensure().await,
            "held elsewhere: the fence lapses the term"
        );
        assert!(h.leader.is_lapsed());
        let task = tokio::spawn(housekeeping(h.clone(), Duration::from_secs(300)));
        run_for(Duration::from_secs(5)).await;
        assert!(h.leader.is_lapsed() && h.queue.is_empty(), "still lapsed");
        lease.set(Some("me"));
        run_for(Duration::from_millis(1_100)).await;
        assert!(!h.leader.is_lapsed(), "ended at the next tick");
        assert!(h.leader.may_reconcile());
        assert!(
            h.queue.take(&Key::Template("k8sfoo".into())),
            "the new term requeued everything"
        );
        drop(tx);
        task.abort();
    }
}
