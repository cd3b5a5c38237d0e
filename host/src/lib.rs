//! # vapgen
//!
//! Race-free generation of ValidatingAdmissionPolicies (VAP) and their bindings (VAPB) from
//! Gatekeeper ConstraintTemplates and Constraints, with the decision logic in a sandboxed
//! WebAssembly component.
//!
//! ```text
//!  YAML / cluster ──► snapshot (per kind) ──► Decider (wasm) ──► KindPlan ──► objects
//!   templates          template JSON +         plan_kind          decision     VAP JSON
//!   constraints        Constraint records                         bindings     VAPB JSON
//! ```
//!
//! * [`runtime`] loads and runs decision modules (limits, precompile cache, digest pin).
//! * [`manifest`] reads Kubernetes objects from YAML files.
//! * [`snapshot`] turns objects into the module's inputs.
//! * [`render`] turns a plan into Kubernetes objects; [`crd`] makes constraint CRDs.
//! * [`schema`] checks an object against a CRD's structural schema (constraints in `plan`).
//! * [`celcheck`] checks a policy's CEL offline (syntax, variables, known functions).
//! * [`planner`] ties them together for a set of objects (used by `vapgen plan`).
//! * [`suite`] runs decision test suites (`vapgen test`).
//! * `verify` runs gator `Suite` files against a cluster (`vapgen verify`, feature `controller`).
//! * [`krm`] is `plan` as a KRM function (`vapgen krm`, for kustomize and Argo CD).

#[cfg(feature = "controller")]
pub mod app;
pub mod celcheck;
pub mod cli;
#[cfg(feature = "controller")]
pub mod controller;
pub mod crd;
#[cfg(feature = "controller")]
pub mod diff;
pub mod krm;
pub mod manifest;
pub mod planner;
pub mod render;
pub mod runtime;
pub mod schema;
pub mod snapshot;
pub mod suite;
#[cfg(feature = "controller")]
pub mod validate;
#[cfg(feature = "controller")]
pub mod verify;

pub use runtime::{CallError, Decider, LoadError, Runtime, RuntimeConfig};
pub use vapgen_guest::model;
