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
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("decider.wit", wit).expect("parse wit");
    let world = resolve.select_world(&[pkg], Some(world)).expect("world");
    let mut core = wat::parse_str(wat).expect("parse wat");
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed component metadata");
    wit_component::ComponentEncoder::default()
        .module(&core)
        .expect("module")
        .validate(true)
        .encode()
        .expect("encode component")
}

/// The fault module with `plan-kind`'s body and the exported interface version replaced.
pub fn fault_module(plan_body: &str, version: &str) -> Vec<u8> {
    let wat = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/faults/module.wat"),
    )
    .expect("read module.wat")
    .replace("{VERSION}", version)
    .replace("{PLAN_BODY}", plan_body);
    let wit = contract_wit().replace(
        "package vapgen:decider@0.1.0;",
        &format!("package vapgen:decider@{version};"),
    );
    componentize_wat(&wat, &wit, "decider")
}

/// A tiny valid template for calls that must reach plan-kind.
pub const TEMPLATE: &str = r#"{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate","metadata":{"name":"k8sfoo"},"spec":{"crd":{"spec":{"names":{"kind":"K8sFoo"}}},"targets":[{"target":"admission.k8s.gatekeeper.sh","code":[{"engine":"K8sNativeValidation","source":{"validations":[{"expression":"true"}]}}]}]}}"#;
