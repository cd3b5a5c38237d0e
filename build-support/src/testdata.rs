//! Inputs the workspace's test crates share (`host`'s tests and the `vapgen-tests` crate), here
//! because both depend on this crate and neither may depend on the other: the
//! gatekeeper-library corpus and the hand-written fault module. Test helpers: they panic
//! when something is broken.

use std::path::{Path, PathBuf};

/// The repository's root (this crate's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The gatekeeper-library corpus: `$VAPGEN_CONFORMANCE/gatekeeper-library`, else
/// `../shared/conformance/gatekeeper-library` beside the repository (see `tests/corpus-dir`,
/// which `./test` uses to find or fetch it). `None`, said loudly, when absent.
///
/// # Panics
///
/// When the corpus is absent under `CI=true`.
pub fn conformance_library() -> Option<PathBuf> {
    let dir = match std::env::var_os("VAPGEN_CONFORMANCE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("../shared/conformance"),
    };
    let lib = dir.join("gatekeeper-library");
    if lib.is_dir() {
        return Some(lib);
    }
    let msg = format!(
        "the gatekeeper-library corpus is not at {}: set VAPGEN_CONFORMANCE (tests/corpus-dir finds or fetches it; ./test does this)",
        lib.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (no corpus): {msg}");
    None
}

/// The test fault module (`host/tests/data/faults/module.wat`, a hand-written decision module)
/// with `plan-kind`'s body and the exported interface version replaced, as a component.
///
/// # Panics
///
/// When the WAT or the contract cannot be read, or the result is not a component.
pub fn fault_module(plan_body: &str, version: &str) -> Vec<u8> {
    let root = workspace_root();
    let wat = std::fs::read_to_string(root.join("host/tests/data/faults/module.wat"))
        .expect("read module.wat")
        .replace("{VERSION}", version)
        .replace("{PLAN_BODY}", plan_body);
    let wit = std::fs::read_to_string(root.join("wit/decider.wit"))
        .expect("read wit/decider.wit")
        .replace(
            "package vapgen:decider@0.1.0;",
            &format!("package vapgen:decider@{version};"),
        );
    crate::componentize_wat(&wat, &wit, "decider").expect("componentize")
}
