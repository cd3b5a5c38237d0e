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
