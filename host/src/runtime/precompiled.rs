//! The precompile cache: compiled components keyed by the module's sha256 and the engine's
//! compatibility hash, so a restart deserialises (≈0.3 ms) instead of compiling (≈50-100 ms).
//!
//! This is the only module of the crate that uses `unsafe`.

#![allow(unsafe_code)]

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The file a compiled artifact for `sha256` lives in, below `dir`.
pub(crate) fn artifact_path(engine: &Engine, dir: &Path, sha256: &str) -> PathBuf {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
}

/// Loads a compiled artifact that this host wrote earlier, if there is one.
///
/// Returns `None` when the file is absent or unusable (then the caller compiles again).
pub(crate) fn load(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: `Component::deserialize_file` is unsafe because a crafted artifact could make
    // wasmtime run arbitrary native code. Every file under the cache directory is written only
    // by `store` below, from `Component::serialize` of a component this engine compiled from
    // bytes whose sha256 is in the file name, and the name also carries the engine's
    // compatibility hash (wasmtime additionally checks version and settings in the header).
    // The cache directory belongs to the vapgen process (created 0700); artifacts from
    // anywhere else are never passed here.
    unsafe { Component::deserialize_file(engine, path) }.ok()
}

/// Writes a compiled artifact atomically (temp file + rename). Errors are not fatal: the
/// cache is an optimisation.
pub(crate) fn store(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
