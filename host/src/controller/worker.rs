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
//! * [`Backoff`] decides when a key runs again: per key, exponential with jitter and a cap,
//!   for every failed, fenced or panicked reconcile. A reconcile that ended in an error state
//!   the API server will keep refusing (a 422) is not retried hot: its key waits for an input
//!   change or the resync ([`Action::permanent_error`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use super::queue::Key;
use super::reconcile::{self, Action, Cluster, Ctx, ReconcileError};

/// The running reconcile's fence state.
struct Fence {
    /// The records' epoch (term) when the reconcile began.
    epoch: u64,
    /// A write was refused by the lease fence or the term fence.
    fenced: Cell<bool>,
    /// The first write that failed while the reconciler carried on (a status write): the
    /// reconcile did not do all it decided, so its key runs again with backoff.
    lost: std::cell::RefCell<Option<String>>,
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
pub(crate) fn note_lost(error: String) {
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
        Ok(Ok(_)) if lost.is_some() => Outcome::Failed(ReconcileError(lost.unwrap_or_default())),
        Ok(Ok(action)) => Outcome::Done(action),
        Ok(Err(e)) => Outcome::Failed(e),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

/// Per-key retry delays: `base · 2^(n-1)` for the n-th consecutive failure, capped, with
/// jitter (a uniformly drawn delay in the upper half, so keys that failed together spread out).
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: HashMap<Key, u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(60))
    }
}

impl Backoff {
    /// A backoff from `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            failures: HashMap::new(),
        }
    }

    /// The delay before `key` runs again after one more failure (without jitter: the upper
    /// bound of [`Backoff::fail`]'s delay).
    fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Counts one more failure of `key` and returns its retry delay.
    pub fn fail(&mut self, key: &Key) -> Duration {
        let n = {
            let n = self.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let ceiling = self.ceiling(n);
        let half = ceiling / 2;
        let jitter = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let extra = half.as_nanos() as u64;
        half + Duration::from_nanos(if extra == 0 { 0 } else { jitter % (extra + 1) })
    }

    /// Forgets the failures of `key` (it succeeded).
    pub fn succeed(&mut self, key: &Key) {
        self.failures.remove(key);
    }

    /// Consecutive failures of `key`.
    pub fn failures(&self, key: &Key) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// What the worker does after `outcome`: the delay after which the key runs again, if
    /// it does. A success forgets the key's failures; a permanent error waits for an input
    /// change or the resync.
    pub fn after(&mut self, key: &Key, outcome: &Outcome) -> Option<Duration> {
        match outcome {
            Outcome::Done(a) => {
                self.succeed(key);
                a.requeue_after
            }
            Outcome::Fenced | Outcome::Failed(_) | Outcome::Panicked(_) => Some(self.fail(key)),
        }
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

    #[test]
    fn backoff_grows_exponentially_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let k = key();
        let mut ceilings = Vec::new();
        for n in 1..=8 {
            let d = b.fail(&k);
            let ceiling = b.ceiling(n);
            assert!(
                d <= ceiling && d >= ceiling / 2,
                "{n}: {d:?} vs {ceiling:?}"
            );
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(b.failures(&k), 8);
        b.succeed(&k);
        assert_eq!(b.failures(&k), 0);
        assert!(b.fail(&k) <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_keys_that_fail_together() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|i| {
                b.fail(&Key::Constraint {
                    kind: "K".into(),
                    name: format!("c{i}"),
                })
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn fenced_failed_and_panicked_retry_success_and_permanent_errors_do_not() {
        let mut b = Backoff::default();
        let k = key();
        assert!(b.after(&k, &Outcome::Fenced).is_some());
        assert!(b.after(&k, &Outcome::Panicked("boom".into())).is_some());
        assert!(
            b.after(&k, &Outcome::Failed(ReconcileError("x".into())))
                .is_some()
        );
        assert_eq!(b.failures(&k), 3);
        let permanent = Action {
            permanent_error: Some("rejected".into()),
            ..Action::default()
        };
        assert_eq!(b.after(&k, &Outcome::Done(permanent)), None);
        assert_eq!(b.failures(&k), 0);
        let poll = Action {
            requeue_after: Some(Duration::from_millis(500)),
            ..Action::default()
        };
        assert_eq!(
            b.after(&k, &Outcome::Done(poll)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(Outcome::Fenced.label(), "fenced");
        assert_eq!(Outcome::Panicked(String::new()).label(), "panic");
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
