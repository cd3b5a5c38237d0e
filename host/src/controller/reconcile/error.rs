//! Why a reconcile failed and must be retried with backoff, with the error underneath as its
//! [`source`](std::error::Error::source). The messages are what the status, the Event and the
//! worker's log line say.

use super::cluster::ApiError;
use crate::render::RenderError;
use crate::runtime::CallError;

/// A reconcile that must be retried with backoff (the worker's [`Outcome::Failed`]).
///
/// [`Outcome::Failed`]: crate::controller::worker::Outcome::Failed
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The decision module failed (a trap, its deadline, its memory limit, a rejected input).
    #[error("decision module failed for {subject}: {source}")]
    Module {
        /// What was planned: `template NAME`, `kind KIND` or `KIND/NAME`.
        subject: String,
        /// The module's failure.
        #[source]
        source: CallError,
    },
    /// The module planned a constraint but returned no binding plan for it.
    #[error("decision module returned no binding plan for {kind}/{name}")]
    NoBindingPlan {
        /// Exact-case kind.
        kind: String,
        /// Constraint name.
        name: String,
    },
    /// What the module returned does not make an object.
    #[error("{subject}: {source}")]
    Render {
        /// The object it was meant to be (`KIND/NAME` for a binding).
        subject: String,
        /// Why it is not one.
        #[source]
        source: RenderError,
    },
    /// A read or write of the API server failed (transient, a conflict, or refused).
    #[error("{action}: {source}")]
    Api {
        /// What was being done, e.g. `applying binding NAME`.
        action: String,
        /// The failed call.
        #[source]
        source: ApiError,
    },
    /// A template's constraint CRD is not in place (standalone mode).
    #[error("{0}")]
    Crd(#[source] EnsureCrdError),
}

impl ReconcileError {
    /// A failed API call while doing `action`.
    pub(crate) fn api(action: impl Into<String>, source: ApiError) -> Self {
        ReconcileError::Api {
            action: action.into(),
            source,
        }
    }

    /// A failed module call while planning `subject`.
    pub(crate) fn module(subject: impl Into<String>, source: CallError) -> Self {
        ReconcileError::Module {
            subject: subject.into(),
            source,
        }
    }
}

/// Why a template's constraint CRD is not in place (the template's status says so).
#[derive(Debug, thiserror::Error)]
pub enum EnsureCrdError {
    /// The template gives no CRD.
    #[error(transparent)]
    Invalid(#[from] crate::controller::crds::CrdError),
    /// The API server did not take it.
    #[error("cannot create or update CustomResourceDefinition {name}: {source}")]
    Write {
        /// The CRD's name.
        name: String,
        /// The failed apply.
        #[source]
        source: ApiError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_what_failed_and_keep_the_error_underneath() {
        let e = ReconcileError::api(
            "applying binding b",
            ApiError::Conflict("the object has been modified".into()),
        );
        assert_eq!(
            e.to_string(),
            "applying binding b: conflict: the object has been modified"
        );
        let source = e.source().expect("a source");
        assert!(matches!(
            source.downcast_ref::<ApiError>(),
            Some(ApiError::Conflict(_))
        ));
        let e = ReconcileError::module("template k8sfoo", CallError::Trap("unreachable".into()));
        assert_eq!(
            e.to_string(),
            "decision module failed for template k8sfoo: decision module trapped: unreachable"
        );
        assert!(e.source().is_some_and(|s| s.is::<CallError>()));
        let e = ReconcileError::Crd(EnsureCrdError::Write {
            name: "k8sfoo.constraints.gatekeeper.sh".into(),
            source: ApiError::Rejected("invalid".into()),
        });
        assert_eq!(
            e.to_string(),
            "cannot create or update CustomResourceDefinition k8sfoo.constraints.gatekeeper.sh: invalid"
        );
        assert!(e.source().is_some_and(|s| s.is::<EnsureCrdError>()));
    }
}
