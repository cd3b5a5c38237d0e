//! Building a decision module from a Rust crate of this workspace: compile it for
//! `wasm32-unknown-unknown` with the `guest` profile and turn the core module into a
//! component. `host/build.rs` builds the bundled module with it; the `build_module` example
//! and the tests that build other modules use the same steps. [`testdata`]: inputs the test
//! crates share.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod testdata;

/// The target decision modules are compiled for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// A built core module, with the source files it was built from (from cargo's dep-info
/// file: what a build script must watch to rebuild it when, and only when, they change).
#[derive(Debug)]
pub struct Built {
    /// The core module's bytes.
    pub core: Vec<u8>,
    /// Every source file of the build (the crate's, its dependencies', included files).
    pub sources: Vec<PathBuf>,
}

/// Whether an outer cargo's environment variable `key` must not reach a nested build.
///
/// Removed: what configures the outer build itself — its target, profile, flags and
/// wrappers (`cargo clippy` sets `RUSTC_WORKSPACE_WRAPPER`, coverage sets `RUSTFLAGS`), the
/// variables cargo sets for build scripts and tests (`CARGO_PKG_*`, `CARGO_CFG_*`, `OUT_DIR`,
/// `TARGET`, …) and cargo's internal ones. Kept: how cargo reaches the network and registries
/// (`CARGO_HOME`, `CARGO_NET_*`, `CARGO_HTTP_*`, `CARGO_REGISTRIES_*`, `CARGO_REGISTRY_*`,
/// `CARGO_SOURCE_*`, proxies), the terminal settings, `RUSTC` and `RUSTC_WRAPPER` (the same
/// compiler, and a cache such as sccache) and everything not cargo's.
pub fn leaks_into_nested_build(key: &str) -> bool {
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_SOURCE_",
        "CARGO_TERM_",
        "CARGO_ALIAS_",
    ];
    if let Some(rest) = key.strip_prefix("CARGO") {
        if rest.is_empty() {
            // The path of the outer cargo: the nested one is run through it, harmless.
            return false;
        }
        return !KEEP.iter().any(|k| key.starts_with(k));
    }
    matches!(
        key,
        "RUSTFLAGS"
            | "RUSTDOCFLAGS"
            | "RUSTC_WORKSPACE_WRAPPER"
            | "RUSTC_BOOTSTRAP"
            | "OUT_DIR"
            | "TARGET"
            | "HOST"
            | "PROFILE"
            | "OPT_LEVEL"
            | "DEBUG"
            | "NUM_JOBS"
            | "MAKEFLAGS"
            | "MFLAGS"
    ) || key.starts_with("__CARGO")
        || key.starts_with("DEP_")
}

/// Whether the Rust target [`WASM_TARGET`] is installed for the toolchain cargo uses
/// (its standard library is present).
pub fn wasm_target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
        }
        _ => false,
    }
}

/// Builds `package` (a workspace member with a `cdylib` target named `lib_name`) for
/// [`WASM_TARGET`] with the `guest` profile, in `target_dir`.
pub fn build(
    workspace: &Path,
    target_dir: &Path,
    package: &str,
    lib_name: &str,
) -> Result<Built, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--package",
            package,
            "--lib",
            "--target",
            WASM_TARGET,
            "--profile",
            "guest",
            "--locked",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(leaks_into_nested_build) {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        let hint = if wasm_target_installed() {
            String::new()
        } else {
            format!("; the target is not installed: rustup target add {WASM_TARGET}")
        };
        return Err(format!(
            "building {package} for {WASM_TARGET} failed ({status}){hint}"
        ));
    }
    let out = target_dir.join(WASM_TARGET).join("guest");
    let wasm = out.join(format!("{lib_name}.wasm"));
    let core = std::fs::read(&wasm).map_err(|e| format!("read {}: {e}", wasm.display()))?;
    let dep_info = out.join(format!("{lib_name}.d"));
    let sources = std::fs::read_to_string(&dep_info)
        .map(|d| dep_info_sources(&d))
        .map_err(|e| format!("read {}: {e}", dep_info.display()))?;
    Ok(Built { core, sources })
}

/// Builds `package` as [`build`] does and returns only the core module's bytes.
pub fn build_core(
    workspace: &Path,
    target_dir: &Path,
    package: &str,
    lib_name: &str,
) -> Result<Vec<u8>, String> {
    build(workspace, target_dir, package, lib_name).map(|b| b.core)
}

/// The source files a cargo dep-info file (`<artifact>.d`, Makefile syntax:
/// `target: dep dep …`, spaces in paths escaped as `\ `) lists for its artifact.
pub fn dep_info_sources(dep_info: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in dep_info.lines() {
        // The first rule names the artifact; cargo writes one rule, then empty rules for
        // each dependency (`path:`), which add nothing.
        let Some((_, deps)) = split_rule(line) else {
            continue;
        };
        let mut cur = String::new();
        let mut chars = deps.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    cur.push(' ');
                    chars.next();
                }
                ' ' | '\t' => {
                    if !cur.is_empty() {
                        out.push(PathBuf::from(std::mem::take(&mut cur)));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(PathBuf::from(cur));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Splits `target: deps` at the first `:` followed by a space or the end of the line (a
/// Windows drive letter's colon is followed by a path separator).
fn split_rule(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    (0..b.len())
        .find(|&i| b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' '))
        .map(|i| (&line[..i], &line[i + 1..]))
}

/// The default target directory for nested module builds: `$VAPGEN_GUEST_TARGET_DIR`, else
/// `$CARGO_TARGET_DIR/guest-wasm` or `<workspace>/target/guest-wasm` (not the main target
/// directory: an outer cargo holds its lock while a build script runs).
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

/// Turns a core module written in WAT into a component of `world` from the WIT text `wit`
/// (the hand-written fault modules of the tests).
pub fn componentize_wat(wat: &str, wit: &str, world: &str) -> Result<Vec<u8>, String> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve
        .push_str("decider.wit", wit)
        .map_err(|e| format!("parse wit: {e:#}"))?;
    let world = resolve
        .select_world(&[pkg], Some(world))
        .map_err(|e| format!("world: {e:#}"))?;
    let mut core = wat::parse_str(wat).map_err(|e| format!("parse wat: {e}"))?;
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(|e| format!("embed component metadata: {e:#}"))?;
    componentize(&core)
}

/// Whether `bytes` start as a wasm component does (magic, then the component layer), as
/// opposed to a core module or something else.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// Whether a path of a dep-info file belongs to the Rust toolchain (its standard library
/// sources), which a build script need not watch.
pub fn is_toolchain_path(p: &Path) -> bool {
    p.components()
        .any(|c| c.as_os_str() == OsStr::new(".rustup") || c.as_os_str() == OsStr::new("rustlib"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrub_removes_the_outer_builds_settings_and_keeps_the_network_ones() {
        for k in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_PROFILE_RELEASE_LTO",
            "CARGO_PKG_NAME",
            "CARGO_CFG_TARGET_OS",
            "CARGO_MAKEFLAGS",
            "CARGO_PRIMARY_PACKAGE",
            "RUSTFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "OUT_DIR",
            "TARGET",
            "__CARGO_FIX_PLZ",
            "DEP_Z_INCLUDE",
        ] {
            assert!(leaks_into_nested_build(k), "{k} must be removed");
        }
        for k in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_HTTP_PROXY",
            "CARGO_REGISTRIES_CRATES_IO_PROTOCOL",
            "CARGO_REGISTRY_TOKEN",
            "CARGO_SOURCE_CRATES_IO_REPLACE_WITH",
            "CARGO_TERM_COLOR",
            "HTTPS_PROXY",
            "https_proxy",
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTUP_TOOLCHAIN",
            "PATH",
            "HOME",
        ] {
            assert!(!leaks_into_nested_build(k), "{k} must be kept");
        }
    }

    #[test]
    fn dep_info_lists_each_source_once_with_escaped_spaces() {
        let d = "/t/wasm32-unknown-unknown/guest/vapgen_guest.wasm: /w/guest/src/lib.rs /w/guest/src/a\\ b.rs /w/wit/decider.wit\n\n/w/guest/src/lib.rs:\n/w/guest/src/a\\ b.rs:\n/w/wit/decider.wit:\n";
        assert_eq!(
            dep_info_sources(d),
            [
                "/w/guest/src/a b.rs",
                "/w/guest/src/lib.rs",
                "/w/wit/decider.wit"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn components_are_told_from_core_modules() {
        assert!(is_component(b"\0asm\x0d\x00\x01\x00rest"));
        assert!(!is_component(b"\0asm\x01\x00\x00\x00rest"), "a core module");
        assert!(!is_component(b"not wasm"));
        assert!(!is_component(b""));
    }
}
