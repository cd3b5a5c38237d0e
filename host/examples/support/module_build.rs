//! Building a decision module from a Rust crate of this workspace: compile it for
//! `wasm32-unknown-unknown` with the `guest` profile and turn the core module into a
//! component. The same steps as `host/build.rs` for the bundled
//! module, shared by the `build_module` example and the `alt_module` integration test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `package` (a workspace member with a `cdylib` target named `lib_name`) for
/// `wasm32-unknown-unknown` with the `guest` profile, in `target_dir`, and returns the core
/// module's bytes.
pub fn build_core(
    workspace: &Path,
    target_dir: &Path,
    package: &str,
    lib_name: &str,
) -> Result<Vec<u8>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--package",
            package,
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "guest",
            "--locked",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    // Settings of an outer cargo (a test run, clippy, coverage) must not leak into this build.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let leak = (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_NET_OFFLINE")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
            || k == "MAKEFLAGS"
            || k == "MFLAGS"
            || k.starts_with("__CARGO");
        if leak {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {package} for wasm32-unknown-unknown failed ({status}); is the target \
             installed? (rustup target add wasm32-unknown-unknown)"
        ));
    }
    let wasm = target_dir
        .join("wasm32-unknown-unknown/guest")
        .join(format!("{lib_name}.wasm"));
    std::fs::read(&wasm).map_err(|e| format!("read {}: {e}", wasm.display()))
}

/// The default target directory for nested module builds: `$CARGO_TARGET_DIR/guest-wasm` or
/// `<workspace>/target/guest-wasm` (the one `host/build.rs` uses; an outer cargo may hold the
/// lock of the main target directory while this runs).
pub fn default_target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("VAPGEN_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"))
                .join("guest-wasm")
        })
}

/// Turns a core module that carries wit-bindgen's component-type section into a component.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .map_err(|e| format!("not a wit-bindgen module: {e:#}"))?
        .validate(true)
        .encode()
        .map_err(|e| format!("cannot encode the component: {e:#}"))
}
