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
//!
//! ## Modules (one concept each)
//!
//! | module | concept |
//! | --- | --- |
//! | `plan` | [`plan_kind`]: glue from the template and constraints to the [`model::KindPlan`] |
//! | `template` | the template decision, rows T1–T7 (§2.1), plus the metadata rules (kind, name) |
//! | `source` | the `K8sNativeValidation` source: shapes, reserved names, warnings |
//! | `transform` | the VAP object (§4) |
//! | `cel` | the CEL text of the internal match conditions and built-in variables |
//! | `scope` | `matchConstraints` and the scope-sync conditions (§4.2, §4.3 items 6–8) |
//! | `binding` | enforcement action, intent, action mapping and the binding outcome (§3) |
//! | `naming` | object names, including the 253-character rule (§3.4) |
//! | [`json`] | a small JSON value, parser and deterministic compact serializer |
//! | `sha256`, `text` | SHA-256 for names; `format!`-free string building |
//!
//! ## Choices where Gatekeeper and the spec's recommendations differ
//!
//! * **Matching uses the webhook's semantics** (\[DIV\] 1 and 2): a `Namespace` object is
//!   matched by its own name against `namespaces`/`excludedNamespaces`; an explicitly empty
//!   list or `name: ""` means "no restriction". Patterns are matched as Gatekeeper wildcards,
//!   never as regular expressions built from user text. See the `cel` module.
//! * `validationActions` are de-duplicated and ordered Deny, Warn, Audit; Deny together with
//!   Warn is a binding error (\[REC\]).
//! * A template without validations is a transform error, not a VAP the API server rejects.
//!   A validation's `reason` is dropped with a warning; the plural `matchConditions` key and
//!   unknown source keys are warnings.
//! * A template whose decision is not Generate gives every intending constraint a quiet
//!   `None(reason)` instead of Gatekeeper's per-constraint status error (B3–B5).
//! * Selectors are copied verbatim; their shape is the host's to report (`malformed`).
//!
//! Size matters: no serde, no `format!`, no Unicode tables (kinds are ASCII), no sorting code.
//! The bundled component is 143,576 bytes (Rust 1.95, `guest` profile at `opt-level = 2`;
//! 91 KB at `"s"`, which costs 31 % more instructions at 0 constraints and 20 % more at
//! 1,000, counted by `host/benches/instructions.sh`); a test in the host
//! (`runtime::tests::the_bundled_component_stays_within_its_size_budget`) holds it to
//! [`COMPONENT_SIZE_BUDGET`]. The hand-written JSON and SHA-256 are what keep it there:
//! `serde_json` (a `Value`, parse and `to_string`) plus `sha2` cost 50.4 KB of wasm in a
//! probe cdylib with the same profile (58.4 KB against 7.9 KB without them), mostly the std
//! formatting machinery they pull in, which this crate avoids entirely.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

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

/// The size the bundled component may not exceed, in bytes (150 KiB: 7 % above today's).
pub const COMPONENT_SIZE_BUDGET: usize = 150 * 1024;

#[cfg(target_arch = "wasm32")]
mod arena;
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component;
mod export;

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
