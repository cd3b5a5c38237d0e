//! Leader election: only the holder of a `coordination.k8s.io/v1` Lease writes.
//!
//! kube-lease-manager keeps the lease and publishes "am I the holder" on a watch channel.
//! That flag can be stale: a process paused (SIGSTOP, a long GC-like stall, a frozen VM) past
//! its lease still believes it leads when it resumes, until the manager task runs again.
//! So before a write, [`Leader::ensure`] re-reads the Lease from the API server unless it was
//! verified less than a second ago (monotonic clock, which keeps running while paused): the
//! holder must be this replica and its renew time plus duration must lie in the future.
//!
//! Terms: every `true` the lease manager sends starts a term (it sends only changes, and the
//! channel keeps only the latest value, so `true` after `true` means a lost-and-won-back
//! lease). The leadership loop begins each term — resets the decision record, requeues
//! everything — in [`Leader::take_change`], and workers reconcile only while
//! [`Leader::may_reconcile`]: after the lease is won **and** its term has begun. Otherwise a
//! worker that takes a key the moment the lease is won would act on decisions of an earlier
//! term, which another leader may have undone since (a binding created for a VAP that no
//! longer exists).
//!
//! Lapses: the lease can expire while the lease manager still says "leader" — a renewal
//! slower than the rest of the lease on a loaded API server. The fence then finds the Lease
//! expired (or held by another replica) and refuses writes; the replica counts as **lapsed**:
//! workers stop reconciling, and once the fence finds the Lease held by this replica again
//! ([`Leader::end_lapse`], polled by housekeeping), a new term begins exactly as for a new
//! leader (records reset, everything requeued) before the first write. A lease read that
//! merely fails refuses the write (its key is retried) without ending the term.
//!
//! Time and the API are injected: the Lease is read through a [`LeaseSource`] (the API
//! server in `vapgen run`, the simulated one in the schedule explorer, which drives this very
//! type), and the verification window runs on tokio's clock, so paused-clock tests move it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a verification of the lease is trusted by default.
pub const VERIFIED_FOR: Duration = Duration::from_secs(1);

/// An error reading the Lease (the write it would have licensed is refused and retried).
pub type LeaseReadError = Box<dyn std::error::Error + Send + Sync>;

/// A read of the Lease in flight.
pub type LeaseFuture<'a> = Pin<Box<dyn Future<Output = Result<Lease, LeaseReadError>> + Send + 'a>>;

/// Where [`Leader`] reads the Lease it fences writes with.
pub trait LeaseSource: Send + Sync {
    /// The Lease as the API server has it now.
    fn read(&self) -> LeaseFuture<'_>;
}

/// The Lease `name` read through the API server.
struct ApiLease(Api<Lease>, String);

impl LeaseSource for ApiLease {
    fn read(&self) -> LeaseFuture<'_> {
        Box::pin(async move { self.0.get(&self.1).await.map_err(Into::into) })
    }
}

/// The leadership state of this replica.
pub struct Leader {
    identity: String,
    rx: Option<watch::Receiver<bool>>,
    /// A receiver of the same channel that only [`Leader::take_change`] marks as seen.
    term: Option<Mutex<watch::Receiver<bool>>>,
    lease: Option<Arc<dyn LeaseSource>>,
    /// How long a verification is trusted ([`VERIFIED_FOR`] unless set otherwise).
    verify_window: Duration,
    verified_at: Mutex<Option<Instant>>,
    /// The fence found the Lease expired or held by another replica during this term.
    lapsed: AtomicBool,
}

impl Leader {
    /// A replica that always leads (`--leader-elect=false`: a single replica).
    pub fn always(identity: &str) -> Self {
        Leader {
            identity: identity.into(),
            rx: None,
            term: None,
            lease: None,
            verify_window: VERIFIED_FOR,
            verified_at: Mutex::new(None),
            lapsed: AtomicBool::new(false),
        }
    }

    /// A replica that leads while it holds `namespace/name`.
    pub fn elected(
        identity: &str,
        rx: watch::Receiver<bool>,
        client: kube::Client,
        namespace: &str,
        name: &str,
    ) -> Self {
        let source = ApiLease(Api::namespaced(client, namespace), name.into());
        Self::with_lease(identity, rx, Arc::new(source))
    }

    /// A replica that leads while `rx` (the lease manager's "I hold it") says so, fenced by
    /// the Lease read from `source`.
    pub fn with_lease(
        identity: &str,
        rx: watch::Receiver<bool>,
        source: Arc<dyn LeaseSource>,
    ) -> Self {
        Leader {
            identity: identity.into(),
            term: Some(Mutex::new(rx.clone())),
            rx: Some(rx),
            lease: Some(source),
            verify_window: VERIFIED_FOR,
            verified_at: Mutex::new(None),
            lapsed: AtomicBool::new(false),
        }
    }

    /// Trusts a verification for `window` instead of [`VERIFIED_FOR`] (zero: every write
    /// reads the Lease, as the schedule explorer does, whose steps take no time).
    pub fn verify_window(mut self, window: Duration) -> Self {
        self.verify_window = window;
        self
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The lease manager's view (cheap; may be stale after a pause).
    pub fn is_leader(&self) -> bool {
        self.rx.as_ref().is_none_or(|rx| *rx.borrow())
    }

    /// A receiver of leadership changes (`None` when always leading).
    pub fn changes(&self) -> Option<watch::Receiver<bool>> {
        self.rx.clone()
    }

    /// For the leadership loop: takes in the lease manager's latest value and, if it is
    /// `true`, runs `begin_term` (synchronously, while [`Leader::may_reconcile`] waits).
    /// Returns the value.
    pub fn take_change(&self, begin_term: impl FnOnce()) -> bool {
        let Some(term) = &self.term else {
            return true;
        };
        let mut rx = term.lock().expect("leader lock");
        let now = *rx.borrow_and_update();
        if now {
            begin_term();
            self.lapsed.store(false, Ordering::SeqCst);
        }
        now
    }

    /// Whether workers may reconcile: this replica leads and the leadership loop has taken
    /// in every value the lease manager sent (so the current term has begun).
    pub fn may_reconcile(&self) -> bool {
        let Some(term) = &self.term else {
            return true;
        };
        let rx = term.lock().expect("leader lock");
        *rx.borrow() && matches!(rx.has_changed(), Ok(false)) && !self.is_lapsed()
    }

    /// Whether the lease manager sent a value the leadership loop has not taken in yet (the
    /// loop's next [`Leader::take_change`] has work to do).
    pub fn change_pending(&self) -> bool {
        self.term
            .as_ref()
            .is_some_and(|t| matches!(t.lock().expect("leader lock").has_changed(), Ok(true)))
    }

    /// Whether the fence found the lease lapsed during this term (see the module doc).
    pub fn is_lapsed(&self) -> bool {
        self.lapsed.load(Ordering::SeqCst)
    }

    /// After a lapse: if the Lease is held by this replica again, runs `begin_term` (a new
    /// term, as for a new leader) and ends the lapse. Returns whether it did.
    pub async fn end_lapse(&self, begin_term: impl FnOnce()) -> bool {
        if !self.is_lapsed() || !self.is_leader() {
            return false;
        }
        let Some(source) = &self.lease else {
            return false;
        };
        match source.read().await {
            Ok(l) if holds(&l, &self.identity) => {
                // One step, under the lock `may_reconcile` takes (as `take_change` does): a
                // worker must not see the requeued keys while the lapse still stands — it
                // would drop them as a follower does, and nothing would requeue them again
                // (found by the real-API-server test of a lapse: 13 bindings stayed missing).
                let _term = self.term.as_ref().map(|t| t.lock().expect("leader lock"));
                begin_term();
                *self.verified_at.lock().expect("leader lock") = Some(Instant::now());
                self.lapsed.store(false, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    /// Whether this replica may write now, verified against the API server (see the module doc).
    pub async fn ensure(&self) -> bool {
        if !self.is_leader() {
            return false;
        }
        let Some(source) = &self.lease else {
            return true;
        };
        if self
            .verified_at
            .lock()
            .expect("leader lock")
            .is_some_and(|t| t.elapsed() < self.verify_window)
        {
            return true;
        }
        let ok = match source.read().await {
            Ok(l) => {
                let ok = holds(&l, &self.identity);
                if !ok && !self.lapsed.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        identity = %self.identity,
                        holder = ?l.spec.as_ref().and_then(|s| s.holder_identity.clone()),
                        "the lease has lapsed (expired or held by another replica) although the lease manager still reports leadership; writes stop until this replica holds it again, then every decision is re-derived"
                    );
                }
                ok
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot verify the lease; not writing");
                false
            }
        };
        *self.verified_at.lock().expect("leader lock") = ok.then(Instant::now);
        ok
    }
}

/// Whether `lease` is held by `identity` and not expired by the local wall clock.
pub fn holds(lease: &Lease, identity: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    holds_at(lease, identity, now)
}

/// Whether `lease` is held by `identity` and not expired at `now` (seconds since the epoch).
pub fn holds_at(lease: &Lease, identity: &str, now: i64) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return false;
    }
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    let expires = renew.0.as_second() + i64::from(secs);
    now < expires
}

/// A Lease for unit tests (here and in the runner's).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A Lease held by whoever `holder` names (renewed now, 15 s), counting reads; `None`
    /// makes the read fail.
    #[derive(Default)]
    pub(crate) struct FakeLease {
        holder: Mutex<Option<String>>,
        reads: AtomicUsize,
    }

    impl FakeLease {
        pub(crate) fn held_by(who: &str) -> Arc<Self> {
            let l = FakeLease::default();
            *l.holder.lock().unwrap() = Some(who.into());
            Arc::new(l)
        }
        pub(crate) fn set(&self, who: Option<&str>) {
            *self.holder.lock().unwrap() = who.map(Into::into);
        }
        pub(crate) fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    impl LeaseSource for FakeLease {
        fn read(&self) -> LeaseFuture<'_> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let holder = self.holder.lock().unwrap().clone();
            Box::pin(async move {
                let holder = holder.ok_or("the API server is unavailable")?;
                let lease = serde_json::json!({
                    "metadata": {"name": "vapgen"},
                    "spec": {
                        "holderIdentity": holder,
                        "leaseDurationSeconds": 15,
                        "renewTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                    }
                });
                Ok(serde_json::from_value(lease)?)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeLease;
    use super::*;

    fn elected(source: &Arc<FakeLease>) -> (watch::Sender<bool>, Leader) {
        let (tx, rx) = watch::channel(false);
        let leader = Leader::with_lease("me", rx, source.clone());
        (tx, leader)
    }

    #[tokio::test(start_paused = true)]
    async fn a_verification_is_trusted_for_one_second_of_the_clock() {
        let lease = FakeLease::held_by("me");
        let (tx, leader) = elected(&lease);
        tx.send(true).unwrap();
        assert!(leader.take_change(|| {}));
        assert!(leader.ensure().await);
        assert_eq!(lease.reads(), 1);
        tokio::time::advance(VERIFIED_FOR - Duration::from_millis(1)).await;
        assert!(leader.ensure().await);
        assert_eq!(lease.reads(), 1, "still inside the window: no read");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(leader.ensure().await);
        assert_eq!(lease.reads(), 2, "past the window: read again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_held_elsewhere_lapses_the_term_until_it_is_held_again() {
        let lease = FakeLease::held_by("me");
        let (tx, leader) = elected(&lease);
        tx.send(true).unwrap();
        let mut terms = 0;
        leader.take_change(|| terms += 1);
        assert!(leader.may_reconcile());

        // The manager still says "leader", the Lease says otherwise.
        lease.set(Some("other"));
        tokio::time::advance(VERIFIED_FOR).await;
        assert!(!leader.ensure().await);
        assert!(leader.is_lapsed() && leader.is_leader());
        assert!(!leader.may_reconcile(), "no reconciles during a lapse");
        assert!(
            !leader.end_lapse(|| terms += 1).await,
            "still held elsewhere"
        );

        lease.set(Some("me"));
        assert!(leader.end_lapse(|| terms += 1).await);
        assert_eq!(terms, 2, "the end of the lapse begins a new term");
        assert!(leader.may_reconcile());
        assert!(
            leader.ensure().await,
            "verified by end_lapse, no read needed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_refuses_the_write_without_lapsing() {
        let lease = FakeLease::held_by("me");
        let (tx, leader) = elected(&lease);
        tx.send(true).unwrap();
        leader.take_change(|| {});
        lease.set(None);
        assert!(!leader.ensure().await);
        assert!(!leader.is_lapsed());
        assert!(leader.may_reconcile());
        lease.set(Some("me"));
        assert!(
            leader.ensure().await,
            "a failed read is not trusted: read again"
        );
        assert_eq!(lease.reads(), 2);
    }

    #[test]
    fn a_lost_and_won_back_lease_is_a_new_term() {
        let lease = FakeLease::held_by("me");
        let (tx, leader) = elected(&lease);
        tx.send(true).unwrap();
        assert!(leader.change_pending());
        assert!(!leader.may_reconcile(), "the term has not begun yet");
        let mut terms = 0;
        leader.take_change(|| terms += 1);
        assert!(!leader.change_pending() && leader.may_reconcile());
        // false then true, coalesced by the channel: the loop sees only `true`.
        tx.send(false).unwrap();
        tx.send(true).unwrap();
        assert!(!leader.may_reconcile(), "a new term is pending");
        assert!(leader.take_change(|| terms += 1));
        assert_eq!(terms, 2);
        assert!(leader.may_reconcile());
    }

    #[test]
    fn expiry_is_judged_by_renew_time_plus_duration() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vapgen"},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                     "renewTime": "2026-01-01T00:00:00.000000Z"}
        }))
        .unwrap();
        let renew = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert!(holds_at(&lease, "me", renew + 14));
        assert!(!holds_at(&lease, "me", renew + 15));
        assert!(!holds_at(&lease, "other", renew));
    }
}
