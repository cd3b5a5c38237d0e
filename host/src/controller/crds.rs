//! Standalone mode: constraint CRDs made from templates (`--manage-crds`).
//!
//! Without Gatekeeper, someone must serve each template's constraint kind. vapgen creates the
//! CRD that [`crate::crd::constraint_crd`] makes from the template (the same one `vapgen plan`
//! emits). The CRD is controlled by the template and deleted by vapgen when the template goes
//! (no garbage collector is assumed).

use serde_json::Value;

use super::world::CrdInfo;

pub use crate::crd::{CrdError, TEMPLATE_GENERATION_ANNOTATION, constraint_crd};

/// Whether a CRD was made from this generation of the template.
pub fn matches_generation(template: &Value, crd: &CrdInfo) -> bool {
    let generation = template
        .pointer("/metadata/generation")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    crd.template_generation == Some(generation)
}
