//! Builds the bundled decision module from `guest/` and embeds it in the host.
//!
//! The guest is compiled for `wasm32-unknown-unknown` with the workspace's `guest` profile
//! (small, panic=abort) in a separate target directory (a nested cargo cannot share the outer
//! build's lock), then turned into a component with `wit-component`. The component has no
//! imports. Result: `$OUT_DIR/vapgen_decider.wasm`, embedded with `include_bytes!`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    println!("cargo:rerun-if-env-changed=VAPGEN_GUEST_TARGET_DIR");

    let target_dir = env::var_os("VAPGEN_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_target_dir(&workspace).join("guest-wasm"));
    let core = build_guest(&workspace, &target_dir);
    let component = componentize(&core);
    std::fs::write(out_dir.join("vapgen_decider.wasm"), component).expect("write component");
}

fn default_target_dir(workspace: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

fn build_guest(workspace: &Path, target_dir: &Path) -> Vec<u8> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--package",
            "vapgen-guest",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "guest",
            "--locked",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    // The outer cargo's settings must not leak into the nested build: flags and wrappers
    // meant for the host (clippy's wrapper, coverage RUSTFLAGS, the jobserver) would break it.
    for (key, _) in env::vars_os() {
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
    let status = cmd.status().expect("run cargo for the guest");
    if !status.success() {
        panic!(
            "building the decision module failed ({status}). Is the wasm target installed? \
             Run: rustup target add wasm32-unknown-unknown"
        );
    }
    let wasm = target_dir.join("wasm32-unknown-unknown/guest/vapgen_guest.wasm");
    std::fs::read(&wasm).unwrap_or_else(|e| panic!("read {}: {e}", wasm.display()))
}

fn componentize(core: &[u8]) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .expect("the guest module carries its component type")
        .validate(true)
        .encode()
        .expect("encode the decision component")
}
