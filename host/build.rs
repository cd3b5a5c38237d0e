//! Builds the bundled decision module from `guest/` and embeds it in the host.
//!
//! The guest is compiled for `wasm32-unknown-unknown` with the workspace's `guest` profile
//! (small, panic=abort) in a separate target directory (a nested cargo cannot share the outer
//! build's lock), then turned into a component with `wit-component` (the steps live in the
//! `vapgen-module-build` crate, shared with the `build_module` example and the tests). The
//! component has no imports. Result: `$OUT_DIR/vapgen_decider.wasm`, embedded with
//! `include_bytes!`.
//!
//! * Reruns follow cargo's dep-info file of the guest build: exactly the sources it was built
//!   from (the guest's, its dependencies', the WIT files), plus the manifests.
//! * `VAPGEN_PREBUILT_MODULE=path/to/component.wasm` embeds that component instead of
//!   building one (a machine without the wasm target, a reproducible release pipeline).
//! * Without the wasm target and without a prebuilt module the build fails with what to do.

use std::env;
use std::path::{Path, PathBuf};

use vapgen_module_build as module_build;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("vapgen_decider.wasm");
    println!("cargo:rerun-if-env-changed=VAPGEN_PREBUILT_MODULE");
    println!("cargo:rerun-if-env-changed=VAPGEN_GUEST_TARGET_DIR");

    if let Some(prebuilt) = env::var_os("VAPGEN_PREBUILT_MODULE").filter(|p| !p.is_empty()) {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        let bytes = std::fs::read(&prebuilt)
            .unwrap_or_else(|e| panic!("VAPGEN_PREBUILT_MODULE={}: {e}", prebuilt.display()));
        assert!(
            module_build::is_component(&bytes),
            "VAPGEN_PREBUILT_MODULE={} is not a wasm component (build one with `cargo run -p \
             vapgen --example build_module`)",
            prebuilt.display()
        );
        std::fs::write(&out, bytes).expect("write component");
        return;
    }

    for p in ["guest/Cargo.toml", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    if !module_build::wasm_target_installed() {
        panic!(
            "the bundled decision module needs the Rust target {t}: `rustup target add {t}`, \
             or set VAPGEN_PREBUILT_MODULE to a component built elsewhere",
            t = module_build::WASM_TARGET
        );
    }
    let target_dir = module_build::default_target_dir(&workspace);
    let built = module_build::build(&workspace, &target_dir, "vapgen-guest", "vapgen_guest")
        .unwrap_or_else(|e| panic!("building the decision module: {e}"));
    watch_sources(&built.sources);
    let component = module_build::componentize(&built.core)
        .unwrap_or_else(|e| panic!("componentizing the decision module: {e}"));
    std::fs::write(&out, component).expect("write component");
}

/// Reruns this script when a source of the guest build changes (the toolchain's own
/// sources excepted: a toolchain change rebuilds everything anyway).
fn watch_sources(sources: &[PathBuf]) {
    for p in sources
        .iter()
        .map(PathBuf::as_path)
        .filter(|p| !module_build::is_toolchain_path(p))
    {
        println!("cargo:rerun-if-changed={}", Path::new(p).display());
    }
}
