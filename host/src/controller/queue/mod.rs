//! A de-duplicating work queue with per-kind serialisation.
//!
//! * A key queued twice is processed once (like client-go's workqueue).
//! * A key added while it is being processed is processed again afterwards ("dirty").
//! * A template key never runs at the same time as any key of its kind, so a template
//!   reconcile and the constraint reconciles of its kind see each other's writes in order.
//!   Constraint keys of one kind may run side by side (they touch different bindings); a
//!   waiting template key holds back new constraint keys of its kind, so it cannot starve.
//! * Delays live in the queue, as in kube-runtime's scheduler: [`Queue::add_after`] (readiness
//!   polling) and [`Queue::retry`] (per-key exponential backoff with jitter) put a key in a
//!   timer set (one entry per key, the earliest wins) that [`Queue::next`] moves into the queue
//!   when it is due — no task per delay. Time is tokio's, so paused-clock tests move it;
//!   deterministic drivers see the set ([`Queue::delayed_keys`]) and fire entries themselves.
//!   The timer set and the backoff are in `delay`, with the tests of time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

mod delay;

use delay::{Backoff, Timers};

/// What to reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A ConstraintTemplate, by name (= lower-case kind).
    Template(String),
    /// A constraint, by exact-case kind and name.
    Constraint {
        /// Exact-case kind.
        kind: String,
        /// Constraint name.
        name: String,
    },
}

impl Key {
    /// The partition: lower-case kind. Keys of one partition run one at a time.
    pub fn partition(&self) -> String {
        match self {
            Key::Template(n) => n.to_ascii_lowercase(),
            Key::Constraint { kind, .. } => kind.to_ascii_lowercase(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Template(n) => write!(f, "template/{n}"),
            Key::Constraint { kind, name } => write!(f, "{kind}/{name}"),
        }
    }
}

#[derive(Default)]
struct Inner {
    order: VecDeque<Key>,
    queued: HashSet<Key>,
    /// Keys being processed, with when they started.
    processing: HashMap<Key, Instant>,
    /// Keys due later.
    timers: Timers,
    backoff: Backoff,
    /// Partitions with a template key running (exclusive).
    exclusive: BTreeSet<String>,
    /// Partitions with constraint keys running, and how many.
    shared: BTreeMap<String, usize>,
    dirty: HashSet<Key>,
    closed: bool,
}

impl Inner {
    /// Indices (in queue order) of the keys that may start now: nothing of their kind runs
    /// exclusively; a template key also needs no constraint key of its kind running; and,
    /// with `fair`, a constraint key may not overtake a waiting template key of its kind
    /// (the workers' order, so a template cannot starve). Without `fair`, every key that
    /// mutual exclusion allows (for deterministic drivers that pick the order themselves).
    fn eligible(&self, fair: bool) -> Vec<usize> {
        self.eligible_upto(fair, usize::MAX)
    }

    /// [`Inner::eligible`], stopping after `limit` hits: the workers need only the first,
    /// and with a backlog of N keys a full scan per hand-out made a pass over them O(N²)
    /// (the largest item of a 5,000-constraint profile).
    fn eligible_upto(&self, fair: bool, limit: usize) -> Vec<usize> {
        let mut waiting_templates = BTreeSet::new();
        let mut out = Vec::new();
        for (i, k) in self.order.iter().enumerate() {
            if out.len() >= limit {
                break;
            }
            let p = k.partition();
            if self.exclusive.contains(&p) {
                continue;
            }
            match k {
                Key::Template(_) if self.shared.contains_key(&p) => {
                    waiting_templates.insert(p);
                }
                Key::Template(_) => {
                    waiting_templates.insert(p);
                    out.push(i);
                }
                Key::Constraint { .. } if fair && waiting_templates.contains(&p) => {}
                Key::Constraint { .. } => out.push(i),
            }
        }
        out
    }

    /// Marks `key` (already removed from `order`) as running.
    fn start(&mut self, key: &Key) {
        self.queued.remove(key);
        match key {
            Key::Template(_) => {
                self.exclusive.insert(key.partition());
            }
            Key::Constraint { .. } => *self.shared.entry(key.partition()).or_insert(0) += 1,
        }
        self.processing.insert(key.clone(), Instant::now());
    }

    /// Adds `key` now; returns whether the workers must be woken.
    fn push(&mut self, key: Key) -> bool {
        if self.processing.contains_key(&key) {
            self.dirty.insert(key);
            return false;
        }
        if self.queued.insert(key.clone()) {
            self.order.push_back(key);
            return true;
        }
        false
    }

    /// Moves the keys due by `now` into the queue; returns the next due time, if any.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        loop {
            match self.timers.pop_due(now) {
                Ok(key) => {
                    self.push(key);
                }
                Err(next) => return next,
            }
        }
    }
}

/// The queue. Cloning shares it.
#[derive(Clone, Default)]
pub struct Queue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl Queue {
    /// A queue whose retry delays grow from `base` to `cap` (default: 250 ms to 60 s).
    pub fn with_backoff(base: Duration, cap: Duration) -> Self {
        let q = Queue::default();
        q.inner.lock().expect("queue lock").backoff = Backoff::new(base, cap);
        q
    }

    fn wake(&self) {
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Adds a key now.
    pub fn add(&self, key: Key) {
        if self.inner.lock().expect("queue lock").push(key) {
            self.wake();
        }
    }

    /// Adds a key once `delay` has passed (one timer per key: the earliest wins).
    pub fn add_after(&self, key: Key, delay: Duration) {
        self.inner
            .lock()
            .expect("queue lock")
            .timers
            .schedule(key, Instant::now() + delay);
        // Waiting workers recompute when to wake.
        self.wake();
    }

    /// Counts one more failure of `key` and schedules its retry after the backoff delay
    /// (exponential per consecutive failure, with jitter, capped). Returns the delay.
    pub fn retry(&self, key: &Key) -> Duration {
        let d = self.inner.lock().expect("queue lock").backoff.fail(key);
        self.add_after(key.clone(), d);
        d
    }

    /// Forgets the failures of `key` (it succeeded): its next failure waits the base delay.
    pub fn forget(&self, key: &Key) {
        self.inner.lock().expect("queue lock").backoff.succeed(key);
    }

    /// Consecutive failures of `key` since it last succeeded.
    pub fn failures(&self, key: &Key) -> u32 {
        self.inner.lock().expect("queue lock").backoff.failures(key)
    }

    /// The keys in the timer set, in due order. For deterministic drivers, which decide when
    /// a timer fires ([`Queue::fire`]); wall-clock time moves only [`Queue::next`]'s timers.
    pub fn delayed_keys(&self) -> Vec<Key> {
        let q = self.inner.lock().expect("queue lock");
        q.timers.keys()
    }

    /// Fires the timer of `key` now (for deterministic drivers). Returns whether it had one.
    pub fn fire(&self, key: &Key) -> bool {
        let mut q = self.inner.lock().expect("queue lock");
        if !q.timers.unschedule(key) {
            return false;
        }
        let wake = q.push(key.clone());
        drop(q);
        if wake {
            self.wake();
        }
        true
    }

    /// The key that has been processing longest, and for how long (for `/healthz`: a key
    /// stuck in a reconcile freezes its kind).
    pub fn longest_running(&self) -> Option<(Key, Duration)> {
        let q = self.inner.lock().expect("queue lock");
        q.processing
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(k, t)| (k.clone(), t.elapsed()))
    }

    /// Number of keys waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("queue lock").order.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().expect("queue lock").closed
    }

    /// Stops handing out keys; `next` returns `None` from now on.
    pub fn close(&self) {
        self.inner.lock().expect("queue lock").closed = true;
        self.notify.notify_waiters();
    }

    fn try_take(&self) -> Option<Option<Key>> {
        let mut q = self.inner.lock().expect("queue lock");
        if q.closed {
            return Some(None);
        }
        let pos = q.eligible_upto(true, 1).first().copied();
        let key = q.order.remove(pos?)?;
        q.start(&key);
        Some(Some(key))
    }

    /// The next key whose partition is free, without waiting (`None` if there is none, or
    /// once closed). For deterministic drivers such as the schedule-exploration tests; the
    /// controller's workers use [`Queue::next`].
    pub fn try_next(&self) -> Option<Key> {
        self.try_take().flatten()
    }

    /// The keys [`Queue::next`] could hand out now (their partition is free), in queue order.
    /// For deterministic drivers that choose which ready key runs next.
    pub fn ready_keys(&self) -> Vec<Key> {
        let q = self.inner.lock().expect("queue lock");
        if q.closed {
            return Vec::new();
        }
        q.eligible(false)
            .into_iter()
            .map(|i| q.order[i].clone())
            .collect()
    }

    /// Hands out `key` as [`Queue::next`] would, if it is queued and its partition is free.
    /// Returns whether it did. For deterministic drivers (see [`Queue::ready_keys`]).
    pub fn take(&self, key: &Key) -> bool {
        let mut q = self.inner.lock().expect("queue lock");
        if q.closed {
            return false;
        }
        let Some(pos) = q.eligible(false).into_iter().find(|&i| &q.order[i] == key) else {
            return false;
        };
        q.order.remove(pos);
        q.start(key);
        true
    }

    /// Waits for the next key whose partition is free, moving due timers into the queue.
    /// `None` once closed.
    pub async fn next(&self) -> Option<Key> {
        loop {
            let notified = self.notify.notified();
            let next_due = self
                .inner
                .lock()
                .expect("queue lock")
                .promote(Instant::now());
            if let Some(k) = self.try_take() {
                return k;
            }
            match next_due {
                Some(t) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(t) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a key processed; re-adds it if it was added meanwhile.
    pub fn done(&self, key: &Key) {
        let again = {
            let mut q = self.inner.lock().expect("queue lock");
            q.processing.remove(key);
            let p = key.partition();
            match key {
                Key::Template(_) => {
                    q.exclusive.remove(&p);
                }
                Key::Constraint { .. } => {
                    if let Some(n) = q.shared.get_mut(&p) {
                        *n -= 1;
                        if *n == 0 {
                            q.shared.remove(&p);
                        }
                    }
                }
            }
            q.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        } else {
            self.wake();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The constraint key `kind/name`.
    pub(super) fn c(kind: &str, name: &str) -> Key {
        Key::Constraint {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn deduplicates_and_requeues_dirty_keys() {
        let q = Queue::default();
        q.add(Key::Template("foo".into()));
        q.add(Key::Template("foo".into()));
        assert_eq!(q.len(), 1);
        let k = q.next().await.unwrap();
        q.add(k.clone()); // added while processing
        assert_eq!(q.len(), 0);
        q.done(&k);
        assert_eq!(q.len(), 1, "processed again after done");
    }

    #[tokio::test]
    async fn a_template_key_excludes_its_kind() {
        let q = Queue::default();
        q.add(Key::Template("foo".into()));
        q.add(c("Foo", "a"));
        q.add(c("Bar", "b"));
        let first = q.next().await.unwrap();
        assert_eq!(first, Key::Template("foo".into()));
        let second = q.next().await.unwrap();
        assert_eq!(second, c("Bar", "b"), "Foo/a waits for template/foo");
        q.done(&first);
        assert_eq!(q.next().await.unwrap(), c("Foo", "a"));
    }

    #[tokio::test]
    async fn constraints_of_a_kind_run_together_but_not_with_its_template() {
        let q = Queue::default();
        q.add(c("Foo", "a"));
        q.add(c("Foo", "b"));
        q.add(Key::Template("foo".into()));
        q.add(c("Foo", "d"));
        let a = q.next().await.unwrap();
        let b = q.next().await.unwrap();
        assert_eq!((a.clone(), b.clone()), (c("Foo", "a"), c("Foo", "b")));
        // The template waits for a and b; d waits behind the template (no starvation).
        assert_eq!(q.try_take(), None);
        q.done(&a);
        assert_eq!(q.try_take(), None);
        q.done(&b);
        let t = q.next().await.unwrap();
        assert_eq!(t, Key::Template("foo".into()));
        assert_eq!(q.try_take(), None, "d waits for the template");
        q.done(&t);
        assert_eq!(q.next().await.unwrap(), c("Foo", "d"));
    }

    #[test]
    fn deterministic_drivers_pick_ready_keys() {
        let q = Queue::default();
        q.add(Key::Template("foo".into()));
        q.add(c("Foo", "a"));
        q.add(c("Bar", "b"));
        assert_eq!(q.ready_keys().len(), 3);
        assert!(q.take(&c("Foo", "a")));
        assert!(
            !q.take(&Key::Template("foo".into())),
            "partition foo is busy"
        );
        assert_eq!(q.ready_keys(), vec![c("Bar", "b")]);
        assert_eq!(q.try_next(), Some(c("Bar", "b")));
        assert_eq!(q.try_next(), None);
        q.done(&c("Foo", "a"));
        assert_eq!(q.try_next(), Some(Key::Template("foo".into())));
    }

    #[tokio::test]
    async fn the_longest_running_key_is_reported_until_done() {
        let q = Queue::default();
        assert_eq!(q.longest_running(), None);
        q.add(c("Foo", "a"));
        let k = q.next().await.unwrap();
        assert_eq!(q.longest_running().map(|(k, _)| k), Some(k.clone()));
        q.done(&k);
        assert_eq!(q.longest_running(), None);
    }

    #[tokio::test]
    async fn closed_queue_ends_workers() {
        let q = Queue::default();
        q.close();
        assert_eq!(q.next().await, None);
    }
}
