//! # vapgen's decision logic
//!
//! Gatekeeper-compatible decisions for turning a ConstraintTemplate and its Constraints into a
//! ValidatingAdmissionPolicy (VAP) and ValidatingAdmissionPolicyBindings (VAPB), as pure Rust.
//!
//! ```text
//!  settings + template JSON + constraints ──► plan_kind ──► KindPlan
//!                                               │            ├─ decision (T1-T7)
//!                                               │            ├─ desired VAP (JSON) / none / error
//!                                               │            └─ per constraint: binding / none / error
//!                                               └─ no I/O, no clock: same input, same plan
//! ```
//!
//! The same crate is compiled natively (tests, the host's native baseline) and to a wasm
//! component with no imports (`component` module, wasm32 only) that the vapgen host loads.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![warn(missing_docs)]

pub mod model;

mod binding;
mod cel;
pub mod json;
mod naming;
mod plan;
mod scope;
mod sha256;
mod source;
mod template;
mod text;
mod transform;

#[cfg(target_arch = "wasm32")]
mod component;

pub use naming::{binding_name, legacy_binding_name, policy_name};
pub use plan::plan_kind;

use model::ModuleInfo;

/// Version of the WIT package this module implements.
pub const INTERFACE_VERSION: &str = "0.1.0";

/// Identity of this module.
pub fn describe() -> ModuleInfo {
    ModuleInfo {
        name: "vapgen-gatekeeper".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        interface_version: INTERFACE_VERSION.to_string(),
    }
}
