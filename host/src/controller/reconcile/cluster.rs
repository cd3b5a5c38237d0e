//! The port of the reconcilers: what they write through and what can go wrong. Implemented
//! over kube-rs for real clusters (`controller::kube`) and in memory by the schedule explorer.

use std::future::Future;

use serde_json::Value;

use crate::controller::world::CrdInfo;

/// What a write touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A ValidatingAdmissionPolicy.
    Vap,
    /// A ValidatingAdmissionPolicyBinding.
    Vapb,
    /// A constraint CustomResourceDefinition (standalone mode).
    Crd,
}

impl Target {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Vap => "vap",
            Target::Vapb => "vapb",
            Target::Crd => "crd",
        }
    }
}

/// Whose status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusTarget {
    /// A ConstraintTemplate by name.
    Template(String),
    /// A constraint by exact-case kind and name.
    Constraint {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// This replica does not hold the lease: nothing was written.
    #[error("not the leader; write dropped")]
    NotLeader,
    /// The object does not exist (deletes treat this as success).
    #[error("not found")]
    NotFound,
    /// A precondition (UID / resourceVersion) or conflict failed: the cache was stale.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The API server rejected the object (validation), with its message.
    #[error("{0}")]
    Rejected(String),
    /// The API server or the connection failed otherwise (5xx, 429, RBAC, network,
    /// timeouts), with kube's error underneath.
    #[error("{message}")]
    Kube {
        /// What the logs and statuses say (for an API status: its message and code).
        message: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// An object from the API server that does not convert to JSON.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// Anything else, with its message (the simulated API server's faults, for one).
    #[error("{0}")]
    Other(String),
}

/// The result of a readiness probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Ready for bindings.
    Ready,
    /// Not yet, with why.
    NotYet(String),
}

/// The writes and probes the reconcilers need. Implemented over kube-rs for real clusters
/// and in memory for schedule exploration.
pub trait Cluster: Send + Sync + 'static {
    /// Server-side apply of a whole object; returns the object as stored.
    fn apply(
        &self,
        target: Target,
        obj: &Value,
    ) -> impl Future<Output = Result<Value, ApiError>> + Send;
    /// Reads an object from the API server, not from the cache (`None`: it does not exist).
    fn get(
        &self,
        target: Target,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, ApiError>> + Send;
    /// Reads a constraint from the API server, not from the cache (`None`: it does not exist).
    fn get_constraint(
        &self,
        kind: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, ApiError>> + Send;
    /// Lists every object of a kind from the API server, not from the cache.
    fn list(&self, target: Target) -> impl Future<Output = Result<Vec<Value>, ApiError>> + Send;
    /// Deletes with UID and resourceVersion preconditions.
    fn delete(
        &self,
        target: Target,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Merge-patches `status.vapgen` of a template or constraint.
    fn patch_status(
        &self,
        target: &StatusTarget,
        status: &Value,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Records a Kubernetes Event on a template or constraint (best effort).
    fn event(
        &self,
        target: &StatusTarget,
        uid: &str,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
    /// Checks whether a kind is ready for its first binding.
    fn probe_kind(&self, crd: &CrdInfo) -> impl Future<Output = Probe> + Send;
    /// Removes whatever `probe_kind` left behind for `kind` (best effort).
    fn end_probe(&self, kind: &str) -> impl Future<Output = ()> + Send;
}
