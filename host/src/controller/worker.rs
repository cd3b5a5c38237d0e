//! One reconcile as a worker runs it, and what the worker does next — the library's own
//! step, which both `vapgen run`'s workers and the schedule explorer (`host/tests/sim`) call.
//!
//! * [`reconcile_key`] runs the reconciler of a key so that a **panic** becomes an outcome of
//!   that key (the worker survives and the queue's `done` always runs), and reports whether
//!   any write of the reconcile was **refused by the lease fence**: such a reconcile did not
//!   do what it decided, so its key must run again. Before this, a refused write ended the
//!   reconcile as if it had succeeded, and under a slow API server (lease renewals slower
//!   than the lease) hundreds of bindings stayed missing with an empty queue. A write that
//!   failed while the reconciler carried on (a status write) fails the reconcile the same
//!   way (found by the explorer: a 503 on a status write left the status stale for good).
//! * Every write of a reconcile is **fenced by its term** as well as by the lease: a reconcile
//!   that began before this replica started a new term (a take-over, or the end of a lapse)
//!   may not write, because it acts on decisions of the earlier term (found by the explorer:
//!   a template reconcile in flight across a lapse deleted bindings while the new term's
//!   record of the kind was still Unknown). Its write is refused like a fenced one.
//! * [`finish`] decides when a key runs again, through the queue's per-key backoff
//!   (exponential with jitter and a cap) for every failed, fenced or panicked reconcile. A reconcile that ended in an error state
//!   the API server will keep refusing (a 422) is not retried hot: its key waits for an input
//!   change or the resync ([`Action::permanent_error`]).

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use super::leader::Leader;
use super::queue::{Key, Queue};
use super::reconcile::{self, Action, Cluster, Ctx, ReconcileError};

/// The running reconcile's fence state.
struct Fence {
    /// The records' epoch (term) when the reconcile began.
    epoch: u64,
    /// A write was refused by the lease fence or the term fence.
    fenced: Cell<bool>,
    /// The first write that failed while the reconciler carried on (a status write): the
    /// reconcile did not do all it decided, so its key runs again with backoff.
    lost: std::cell::RefCell<Option<ReconcileError>>,
}

tokio::task_local! {
    static FENCE: Fence;
}

/// Records that a write of the running reconcile was refused (no-op outside
/// [`reconcile_key`]).
pub(crate) fn note_fenced() {
    let _ = FENCE.try_with(|f| f.fenced.set(true));
}

/// Records that a write of the running reconcile failed although the reconciler went on
/// (no-op outside [`reconcile_key`]); the first such error becomes the outcome.
pub(crate) fn note_lost(error: ReconcileError) {
    let _ = FENCE.try_with(|f| {
        f.lost.borrow_mut().get_or_insert(error);
    });
}

/// Whether the running reconcile began in the term whose epoch is `current` (true outside
/// [`reconcile_key`]).
pub(crate) fn in_term(current: u64) -> bool {
    FENCE.try_with(|f| f.epoch == current).unwrap_or(true)
}

/// How one reconcile ended.
#[derive(Debug)]
pub enum Outcome {
    /// It ran to the end; every write it attempted was allowed by the fence.
    Done(Action),
    /// A write was refused by the lease fence (lease lapsed, unreadable, or held by another
    /// replica): what it decided is not in the cluster, so the key must run again.
    Fenced,
    /// It failed (transient API error, conflict, module failure).
    Failed(ReconcileError),
    /// It panicked, with the panic message.
    Panicked(String),
}

impl Outcome {
    /// Metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done(a) if a.permanent_error.is_some() => "error",
            Outcome::Done(_) => "ok",
            Outcome::Fenced => "fenced",
            Outcome::Failed(_) => "error",
            Outcome::Panicked(_) => "panic",
        }
    }
}

/// Runs the reconciler of `key` (see the module doc).
pub async fn reconcile_key<C: Cluster>(ctx: &Ctx<C>, key: &Key) -> Outcome {
    let run = async {
        match key {
            Key::Template(name) => reconcile::reconcile_template(ctx, name).await,
            Key::Constraint { kind, name } => {
                reconcile::reconcile_constraint(ctx, kind, name).await
            }
        }
    };
    let fence = Fence {
        epoch: ctx.records.lock().expect("records lock").epoch(),
        fenced: Cell::new(false),
        lost: std::cell::RefCell::default(),
    };
    let (result, fenced, lost) = FENCE
        .scope(fence, async {
            // The reconcilers hold no lock across an await, and a lock poisoned by a panic
            // elsewhere fails loudly on its next use: nothing half-updated is read silently.
            let r = AssertUnwindSafe(run).catch_unwind().await;
            let (fenced, lost) = FENCE.with(|f| (f.fenced.get(), f.lost.borrow_mut().take()));
            (r, fenced, lost)
        })
        .await;
    match result {
        Err(panic) => Outcome::Panicked(panic_message(panic.as_ref())),
        Ok(_) if fenced => Outcome::Fenced,
        Ok(Ok(action)) => match lost {
            Some(e) => Outcome::Failed(e),
            None => Outcome::Done(action),
        },
        Ok(Err(e)) => Outcome::Failed(e),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

/// For the worker loop, before a reconcile: whether `key`, just handed out by the queue, may
/// run. A follower (or a leader whose term has not begun, or whose lease lapsed) hands it
/// straight back: the new leader requeues everything when its term begins, and until then
/// nothing may act on the decisions of an earlier term.
pub fn admit(leader: &Leader, queue: &Queue, key: &Key) -> bool {
    if leader.may_reconcile() {
        return true;
    }
    queue.done(key);
    false
}

/// For the worker loop, after a reconcile: marks `key` done whatever the outcome (a key left
/// processing would freeze its kind), then schedules its next run in the queue: after the
/// requested delay for a success (readiness polling), with the queue's backoff for a failed,
/// fenced or panicked reconcile, never for a success or a permanent error (those wait for an
/// input change or the resync). Returns the delay scheduled, if any.
pub fn finish(queue: &Queue, key: &Key, outcome: &Outcome) -> Option<Duration> {
    queue.done(key);
    match outcome {
        Outcome::Done(a) => {
            queue.forget(key);
            let d = a.requeue_after?;
            queue.add_after(key.clone(), d);
            Some(d)
        }
        Outcome::Fenced | Outcome::Failed(_) | Outcome::Panicked(_) => Some(queue.retry(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::Constraint {
            kind: "K8sFoo".into(),
            name: "a".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fenced_failed_and_panicked_retry_success_and_permanent_errors_do_not() {
        let q = Queue::default();
        let k = key();
        let take = || {
            q.add(k.clone());
            assert!(q.take(&k));
        };
        take();
        assert!(finish(&q, &k, &Outcome::Fenced).is_some());
        assert_eq!(q.delayed_keys(), vec![k.clone()]);
        q.fire(&k);
        assert!(q.take(&k));
        assert!(finish(&q, &k, &Outcome::Panicked("boom".into())).is_some());
        q.fire(&k);
        assert!(q.take(&k));
        let failed = ReconcileError::api("x", super::super::reconcile::ApiError::NotFound);
        assert!(finish(&q, &k, &Outcome::Failed(failed)).is_some());
        assert_eq!(q.failures(&k), 3);
        q.fire(&k);
        assert!(q.take(&k));
        let permanent = Action {
            permanent_error: Some("rejected".into()),
            ..Action::default()
        };
        assert_eq!(finish(&q, &k, &Outcome::Done(permanent)), None);
        assert_eq!(q.failures(&k), 0);
        assert!(q.delayed_keys().is_empty() && q.is_empty(), "not retried");
        take();
        let poll = Action {
            requeue_after: Some(Duration::from_millis(500)),
            ..Action::default()
        };
        assert_eq!(
            finish(&q, &k, &Outcome::Done(poll)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(q.delayed_keys(), vec![k.clone()]);
        assert_eq!(Outcome::Fenced.label(), "fenced");
        assert_eq!(Outcome::Panicked(String::new()).label(), "panic");
    }

    #[test]
    fn a_follower_hands_keys_back() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let leader = Leader::with_lease("me", rx, std::sync::Arc::new(NoLease));
        let q = Queue::default();
        q.add(key());
        assert!(q.take(&key()));
        assert!(!admit(&leader, &q, &key()));
        assert!(
            q.ready_keys().is_empty() && q.longest_running().is_none(),
            "done, not requeued"
        );
        tx.send(true).unwrap();
        leader.take_change(|| {});
        q.add(key());
        assert!(q.take(&key()));
        assert!(admit(&leader, &q, &key()));
    }

    struct NoLease;
    impl super::super::leader::LeaseSource for NoLease {
        fn read(&self) -> super::super::leader::LeaseFuture<'_> {
            Box::pin(async { Err("unused".into()) })
        }
    }

    #[test]
    fn event_notes_are_cut_at_a_character_boundary() {
        // 999 ASCII bytes, then a 3-byte character across byte 1000.
        let msg = format!("{}€tail", "a".repeat(999));
        let note = super::super::kube::event_note(&msg);
        assert_eq!(note.len(), 999);
        assert!(note.chars().all(|c| c == 'a'));
        assert_eq!(super::super::kube::event_note("short ü"), "short ü");
    }
}
