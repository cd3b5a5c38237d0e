//! Builds the bundled decision module from `guest/` and embeds it in the host.
//!
//! The guest is compiled for `wasm32-unknown-unknown` with the workspace's `guest` profile
//! (small, panic=abort) in a separate target directory (a nested cargo cannot share the outer
//! build's lock), then turned into a component with `wit-component`. The component has no
//! imports. Result: `$OUT_DIR/vapgen_decider.wasm`, embedded with `include_bytes!`.

use std::env;
use std::path::PathBuf;

// The same build steps serve this script, the `build_module` example and the tests that
// build other decision modules.
#[allow(dead_code)]
#[path = "examples/support/module_build.rs"]
mod module_build;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    for p in [
        "guest/src",
        "guest/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    println!("cargo:rerun-if-changed=examples/support/module_build.rs");
    println!("cargo:rerun-if-env-changed=VAPGEN_GUEST_TARGET_DIR");

    let target_dir = module_build::default_target_dir(&workspace);
    let core = module_build::build_core(&workspace, &target_dir, "vapgen-guest", "vapgen_guest")
        .unwrap_or_else(|e| panic!("building the decision module: {e}"));
    let component = module_build::componentize(&core)
        .unwrap_or_else(|e| panic!("componentizing the decision module: {e}"));
    std::fs::write(out_dir.join("vapgen_decider.wasm"), component).expect("write component");
}
