//! A de-duplicating work queue with per-kind serialisation.
//!
//! * A key queued twice is processed once (like client-go's workqueue).
//! * A key added while it is being processed is processed again afterwards ("dirty").
//! * Keys of the same kind are never processed at the same time, so a template reconcile and
//!   the constraint reconciles of its kind see each other's writes in order.
//! * `add_after` requeues after a delay (backoff, readiness polling).

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

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
    processing: HashSet<Key>,
    busy_partitions: BTreeSet<String>,
    dirty: HashSet<Key>,
    closed: bool,
}

/// The queue. Cloning shares it.
#[derive(Clone, Default)]
pub struct Queue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl Queue {
    /// Adds a key now.
    pub fn add(&self, key: Key) {
        let mut q = self.inner.lock().expect("queue lock");
        if q.processing.contains(&key) {
            q.dirty.insert(key);
            return;
        }
        if q.queued.insert(key.clone()) {
            q.order.push_back(key);
            drop(q);
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }

    /// Adds a key after a delay.
    pub fn add_after(&self, key: Key, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Number of keys waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("queue lock").order.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let pos = q
            .order
            .iter()
            .position(|k| !q.busy_partitions.contains(&k.partition()))?;
        let key = q.order.remove(pos)?;
        q.queued.remove(&key);
        q.busy_partitions.insert(key.partition());
        q.processing.insert(key.clone());
        Some(Some(key))
    }

    /// Waits for the next key whose partition is free. `None` once closed.
    pub async fn next(&self) -> Option<Key> {
        loop {
            let notified = self.notify.notified();
            if let Some(k) = self.try_take() {
                return k;
            }
            notified.await;
        }
    }

    /// Marks a key processed; re-adds it if it was added meanwhile.
    pub fn done(&self, key: &Key) {
        let again = {
            let mut q = self.inner.lock().expect("queue lock");
            q.processing.remove(key);
            q.busy_partitions.remove(&key.partition());
            q.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        } else {
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(kind: &str, name: &str) -> Key {
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
    async fn one_key_per_kind_at_a_time() {
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
    async fn closed_queue_ends_workers() {
        let q = Queue::default();
        q.close();
        assert_eq!(q.next().await, None);
    }
}
