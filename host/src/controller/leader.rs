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

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;

/// How long a verification of the lease is trusted.
const VERIFIED_FOR: Duration = Duration::from_secs(1);

/// The leadership state of this replica.
pub struct Leader {
    identity: String,
    rx: Option<watch::Receiver<bool>>,
    /// A receiver of the same channel that only [`Leader::take_change`] marks as seen.
    term: Option<Mutex<watch::Receiver<bool>>>,
    lease: Option<(Api<Lease>, String)>,
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
        Leader {
            identity: identity.into(),
            term: Some(Mutex::new(rx.clone())),
            rx: Some(rx),
            lease: Some((Api::namespaced(client, namespace), name.into())),
            verified_at: Mutex::new(None),
            lapsed: AtomicBool::new(false),
        }
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
        let Some((api, name)) = &self.lease else {
            return false;
        };
        match api.get(name).await {
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
        let Some((api, name)) = &self.lease else {
            return true;
        };
        if self
            .verified_at
            .lock()
            .expect("leader lock")
            .is_some_and(|t| t.elapsed() < VERIFIED_FOR)
        {
            return true;
        }
        let ok = match api.get(name).await {
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

/// Whether `lease` is held by `identity` and not expired by the local clock.
pub fn holds(lease: &Lease, identity: &str) -> bool {
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now < expires
}
