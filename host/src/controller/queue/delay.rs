//! The queue's delays, as in kube-runtime's scheduler: a timer set (one entry per key, the
//! earliest wins) that [`Queue::next`](super::Queue::next) drains into the queue when entries
//! are due — no task per delay — and the per-key retry backoff. Time is tokio's, so
//! paused-clock tests move it; deterministic drivers fire entries themselves.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use super::Key;

/// Keys due later, by due time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// By due time (and a sequence number, for a stable order among equal times).
    by_due: BTreeMap<(Instant, u64), Key>,
    /// The entry of each key in `by_due`.
    due: HashMap<Key, (Instant, u64)>,
    seq: u64,
}

impl Timers {
    /// Puts `key` in the set at `at`, unless it is there already at an earlier time.
    pub(super) fn schedule(&mut self, key: Key, at: Instant) {
        if let Some(&(t, n)) = self.due.get(&key) {
            if t <= at {
                return;
            }
            self.by_due.remove(&(t, n));
        }
        self.seq += 1;
        let entry = (at, self.seq);
        self.by_due.insert(entry, key.clone());
        self.due.insert(key, entry);
    }

    /// Takes `key` out of the set; returns whether it was there.
    pub(super) fn unschedule(&mut self, key: &Key) -> bool {
        match self.due.remove(key) {
            Some(entry) => {
                self.by_due.remove(&entry);
                true
            }
            None => false,
        }
    }

    /// Takes out the earliest key due by `now`; if none is due, the next due time (`None`:
    /// the set is empty).
    pub(super) fn pop_due(&mut self, now: Instant) -> Result<Key, Option<Instant>> {
        match self.by_due.first_key_value() {
            Some((&(t, _), _)) if t <= now => {
                let (_, key) = self.by_due.pop_first().expect("a timer");
                self.due.remove(&key);
                Ok(key)
            }
            Some((&(t, _), _)) => Err(Some(t)),
            None => Err(None),
        }
    }

    /// The keys in the set, in due order.
    pub(super) fn keys(&self) -> Vec<Key> {
        self.by_due.values().cloned().collect()
    }
}

/// Per-key retry delays: `base · 2^(n-1)` for the n-th consecutive failure, capped, with
/// jitter (a uniformly drawn delay in the upper half, so keys that failed together spread out).
#[derive(Debug)]
pub(super) struct Backoff {
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
    pub(super) fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            failures: HashMap::new(),
        }
    }

    /// The delay before a key runs again after its `n`-th consecutive failure, without
    /// jitter: the upper bound of [`Backoff::fail`]'s delay.
    fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Counts one more failure of `key` and returns its retry delay.
    pub(super) fn fail(&mut self, key: &Key) -> Duration {
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
    pub(super) fn succeed(&mut self, key: &Key) {
        self.failures.remove(key);
    }

    /// Consecutive failures of `key`.
    pub(super) fn failures(&self, key: &Key) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::Queue;
    use super::super::tests::c;
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let k = c("K8sFoo", "a");
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
        let delays: BTreeSet<Duration> =
            (0..20).map(|i| b.fail(&c("K", &format!("c{i}")))).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_key_is_handed_out_when_due_and_not_before() {
        let q = Queue::default();
        let start = Instant::now();
        q.add_after(c("Foo", "a"), Duration::from_secs(5));
        assert!(q.is_empty(), "not queued yet");
        let early = tokio::time::timeout(Duration::from_millis(4_999), q.next()).await;
        assert!(early.is_err(), "handed out {early:?} before it was due");
        let k = tokio::time::timeout(Duration::from_secs(1), q.next()).await;
        assert_eq!(k.expect("due"), Some(c("Foo", "a")));
        assert_eq!(start.elapsed(), Duration::from_secs(5), "exactly when due");
        assert!(q.delayed_keys().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn one_timer_per_key_and_the_earliest_wins() {
        let q = Queue::default();
        let start = Instant::now();
        q.add_after(c("Foo", "a"), Duration::from_secs(30));
        q.add_after(c("Foo", "a"), Duration::from_secs(2));
        q.add_after(c("Foo", "a"), Duration::from_secs(10));
        q.add_after(c("Foo", "b"), Duration::from_secs(3));
        assert_eq!(q.delayed_keys(), vec![c("Foo", "a"), c("Foo", "b")]);
        assert_eq!(q.next().await, Some(c("Foo", "a")));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(q.next().await, Some(c("Foo", "b")));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(
            q.delayed_keys().is_empty(),
            "the later timers of a went with it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_worker_wakes_for_a_timer_set_after_it_began_waiting() {
        let q = Queue::default();
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        q.add_after(c("Foo", "a"), Duration::from_millis(700));
        assert_eq!(waiting.await.unwrap(), Some(c("Foo", "a")));
        assert_eq!(start.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_on_the_clock_and_success_resets_them() {
        let q = Queue::with_backoff(Duration::from_secs(1), Duration::from_secs(8));
        let k = c("Foo", "a");
        let mut waited = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let d = q.retry(&k);
            assert_eq!(q.next().await, Some(k.clone()));
            // Due exactly then, up to the timer's millisecond granularity.
            let waited_for = start.elapsed();
            assert!(waited_for >= d && waited_for <= d + Duration::from_millis(1));
            q.done(&k);
            waited.push(d);
        }
        for (n, (d, ceiling)) in waited.iter().zip([1, 2, 4, 8, 8]).enumerate() {
            let ceiling = Duration::from_secs(ceiling);
            assert!(*d <= ceiling && *d >= ceiling / 2, "retry {n}: {d:?}");
        }
        assert_eq!(q.failures(&k), 5);
        q.forget(&k);
        assert!(q.retry(&k) <= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_of_a_key_being_processed_makes_it_run_again_after_done() {
        let q = Queue::default();
        q.add(c("Foo", "a"));
        let k = q.next().await.unwrap();
        q.add_after(k.clone(), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        let again = tokio::time::timeout(Duration::from_millis(1), q.next()).await;
        assert!(
            again.is_err(),
            "still processing: dirty, not handed out twice"
        );
        q.done(&k);
        assert_eq!(q.next().await, Some(k));
    }

    #[test]
    fn deterministic_drivers_fire_timers_themselves() {
        let q = Queue::default();
        q.add_after(c("Foo", "a"), Duration::from_secs(3600));
        assert!(q.ready_keys().is_empty());
        assert!(q.fire(&c("Foo", "a")));
        assert!(!q.fire(&c("Foo", "a")), "fired once");
        assert_eq!(q.ready_keys(), vec![c("Foo", "a")]);
    }
}
