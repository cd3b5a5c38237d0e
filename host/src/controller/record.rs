//! The decision record: the template reconciler's published opinion per constraint kind.
//!
//! This is the fix for Gatekeeper's race (upstream #3287): constraint reconcilers never read
//! the template; they read the record, which the template reconciler publishes **after** it
//! created the VAP (for Generate) and **before** it deletes it (for anything else). When an
//! entry changes, or is published for the first time since start-up, every constraint of the
//! kind is requeued. A kind without an entry is `Unknown`: constraint reconcilers wait and
//! never delete on Unknown, so a restart deletes nothing.

use std::collections::BTreeMap;

use serde::Serialize;

/// The state of the kind's VAP as far as the template reconciler knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "kebab-case")]
pub enum PolicyState {
    /// The VAP exists with the desired content.
    Applied,
    /// The VAP exists but the API server rejected the new content; the old content enforces.
    Stale(String),
    /// The VAP could not be created; it does not exist.
    Failed(String),
    /// No VAP must exist.
    Absent,
}

impl PolicyState {
    /// Whether a VAP of this kind exists, so a binding may point at it.
    pub fn exists(&self) -> bool {
        matches!(self, PolicyState::Applied | PolicyState::Stale(_))
    }
}

/// Readiness of a kind for its first binding (see `readiness`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "kebab-case")]
pub enum Readiness {
    /// Not checked yet, or still waiting.
    Waiting(String),
    /// The API server serves the kind and its admission plugin resolves it.
    Ready,
    /// The wait bound passed without proof of readiness; bindings are created anyway.
    TimedOut,
}

impl Readiness {
    /// Whether bindings may be created.
    pub fn allows_bindings(&self) -> bool {
        !matches!(self, Readiness::Waiting(_))
    }
}

/// The template reconciler's decision for one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// Generate the VAP; bindings follow the constraints' intent.
    Generate {
        /// The VAP's state.
        policy: PolicyState,
        /// Readiness for the first binding.
        readiness: Readiness,
    },
    /// No VAP for this kind (opted out, flag default, no CEL engine, template or transform error).
    NoGenerate {
        /// Why, for status messages.
        reason: String,
        /// Whether the reason is an error of the template (as opposed to a choice).
        error: bool,
    },
    /// The template does not exist (deleted, or a constraint CRD without template).
    Absent,
    /// Another generator runs: Gatekeeper pods with the `generate` operation (coexist mode,
    /// [`crate::controller::world::World::rival_generators`]). vapgen leaves the kind's VAP,
    /// bindings and CRD as they are — creates, updates and deletes nothing — until they stop;
    /// then the kind is planned again.
    Yielded {
        /// The rivals' ids (Gatekeeper pod names), sorted.
        rivals: Vec<String>,
    },
}

/// One entry of the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
    /// The template the decision was made on (`None` when absent).
    pub template_uid: Option<String>,
    /// Its `metadata.generation`.
    pub template_generation: u64,
    /// The template object (JSON) the decision was made on. Constraint reconcilers plan their
    /// bindings against exactly this object, never against a cache read.
    #[serde(skip)]
    pub template_json: Option<String>,
    /// Exact-case kind (`spec.crd.spec.names.kind`).
    pub kind: String,
}

impl DecisionRecord {
    /// The short state name for metrics and the debug listing.
    pub fn state_name(&self) -> &'static str {
        match &self.decision {
            Decision::Generate { readiness, policy } => match (policy, readiness) {
                (PolicyState::Failed(_), _) => "generate-failed",
                (_, Readiness::Waiting(_)) => "generate-waiting",
                _ => "generate",
            },
            Decision::NoGenerate { error: true, .. } => "error",
            Decision::NoGenerate { error: false, .. } => "no-generate",
            Decision::Absent => "absent",
            Decision::Yielded { .. } => "yielded",
        }
    }
}

/// What a constraint reconciler sees for its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Never published since start-up: wait, never delete.
    Unknown,
    /// The published entry.
    Known(&'a DecisionRecord),
}

/// All entries, keyed by lower-case kind (= the template name).
#[derive(Clone, Debug, Default)]
pub struct Records {
    entries: BTreeMap<String, DecisionRecord>,
    epoch: u64,
}

impl Records {
    /// The entry for a kind.
    pub fn get(&self, kind: &str) -> Lookup<'_> {
        match self.entries.get(&kind.to_ascii_lowercase()) {
            Some(r) => Lookup::Known(r),
            None => Lookup::Unknown,
        }
    }

    /// Forgets every entry (every kind is Unknown again) and starts a new epoch, in which
    /// the publications of reconciles that began earlier are ignored ([`Records::publish_in`]).
    /// A replica does this when it starts a term as leader: what it published in an earlier
    /// term may have been undone by another leader since.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.epoch += 1;
    }

    /// The current epoch (see [`Records::reset`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// [`Records::publish`] for a reconcile that began in `epoch`; ignored (false) if the
    /// records were reset since.
    pub fn publish_in(&mut self, epoch: u64, kind: &str, record: DecisionRecord) -> bool {
        epoch == self.epoch && self.publish(kind, record)
    }

    /// Publishes an entry. Returns true when the constraints of the kind must be requeued:
    /// the first publication, or a change of anything a binding decision depends on.
    pub fn publish(&mut self, kind: &str, record: DecisionRecord) -> bool {
        let key = kind.to_ascii_lowercase();
        match self.entries.get(&key) {
            Some(old) if *old == record => false,
            _ => {
                self.entries.insert(key, record);
                true
            }
        }
    }

    /// Every entry, for the debug listing and metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &DecisionRecord)> {
        self.entries.iter()
    }

    /// Number of entries per state name.
    pub fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut m = BTreeMap::new();
        for r in self.entries.values() {
            *m.entry(r.state_name()).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(decision: Decision) -> DecisionRecord {
        DecisionRecord {
            decision,
            template_uid: Some("u".into()),
            template_generation: 1,
            template_json: Some("{}".into()),
            kind: "Foo".into(),
        }
    }

    #[test]
    fn unknown_until_published_then_requeue_only_on_change() {
        let mut r = Records::default();
        assert_eq!(r.get("foo"), Lookup::Unknown);
        let g = rec(Decision::Generate {
            policy: PolicyState::Applied,
            readiness: Readiness::Ready,
        });
        assert!(r.publish("Foo", g.clone()), "first publication requeues");
        assert!(!r.publish("foo", g.clone()), "same entry does not");
        assert!(matches!(r.get("FOO"), Lookup::Known(_)));
        let n = rec(Decision::NoGenerate {
            reason: "opted out".into(),
            error: false,
        });
        assert!(r.publish("foo", n), "a changed decision requeues");
        assert!(r.publish("foo", g), "and so does the flip back");
    }

    #[test]
    fn a_reset_forgets_everything_and_ignores_older_reconciles() {
        let mut r = Records::default();
        let g = rec(Decision::Generate {
            policy: PolicyState::Applied,
            readiness: Readiness::Ready,
        });
        let old = r.epoch();
        assert!(r.publish_in(old, "foo", g.clone()));
        r.reset();
        assert_eq!(r.get("foo"), Lookup::Unknown);
        assert!(
            !r.publish_in(old, "foo", g.clone()),
            "a reconcile of the old term"
        );
        assert_eq!(r.get("foo"), Lookup::Unknown);
        assert!(r.publish_in(r.epoch(), "foo", g));
    }

    #[test]
    fn a_new_template_generation_with_the_same_decision_requeues() {
        let mut r = Records::default();
        let mut g = rec(Decision::Generate {
            policy: PolicyState::Applied,
            readiness: Readiness::Ready,
        });
        r.publish("foo", g.clone());
        g.template_generation = 2;
        g.template_json = Some("{\"v\":2}".into());
        assert!(r.publish("foo", g));
    }
}
