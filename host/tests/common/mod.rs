//! Helpers shared by the host's integration tests.

#![allow(dead_code)] // each test binary uses a subset

use std::path::PathBuf;

/// The WIT contract of the host, as text.
pub fn contract_wit() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit/decider.wit"))
        .expect("read wit/decider.wit")
}

/// Turns a core module written in WAT into a component of `world` from `wit`.
pub fn componentize_wat(wat: &str, wit: &str, world: &str) -> Vec<u8> {
    vapgen_module_build::componentize_wat(wat, wit, world).expect("componentize")
}

/// The fault module, shared with the cluster tests through the module-build crate.
pub use vapgen_module_build::testdata::fault_module;

/// A tiny valid template for calls that must reach plan-kind.
pub const TEMPLATE: &str = r#"{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate","metadata":{"name":"k8sfoo"},"spec":{"crd":{"spec":{"names":{"kind":"K8sFoo"}}},"targets":[{"target":"admission.k8s.gatekeeper.sh","code":[{"engine":"K8sNativeValidation","source":{"validations":[{"expression":"true"}]}}]}]}}"#;
