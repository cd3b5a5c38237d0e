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
    if let Err(why) = private(path) {
        tracing::warn!(path = %path.display(), %why, "not using the precompile cache");
        return None;
    }
    // SAFETY: `Component::deserialize_file` is unsafe because a crafted artifact could make
    // wasmtime run arbitrary native code. Every file under the cache directory is written only
    // by `store` below, from `Component::serialize` of a component this engine compiled from
    // bytes whose sha256 is in the file name, and the name also carries the engine's
    // compatibility hash (wasmtime additionally checks version and settings in the header).
    // `private` has just checked that the cache directory and the file belong to this
    // process's user and that nobody else can write to either (the directory is created
    // 0700), so artifacts from anywhere else are never passed here.
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

/// Whether only this process's user can have written `path`: the file and its directory are
/// owned by the effective user, the directory has no group or other permissions, the file is
/// no symlink and has no group or other write permission. Fails closed (an error) where the
/// effective user cannot be found (no `/proc`).
fn private(path: &Path) -> std::io::Result<()> {
    use std::io::Error;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // /proc/self belongs to the process's effective user.
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| Error::other(format!("cannot tell the effective user (/proc/self: {e})")))?
        .uid();
    let dir = path.parent().ok_or_else(|| Error::other("no directory"))?;
    let checks = [
        ("directory", std::fs::metadata(dir)?, 0o077),
        ("file", std::fs::symlink_metadata(path)?, 0o022),
    ];
    for (what, m, forbidden) in checks {
        if m.file_type().is_symlink() {
            return Err(Error::other(format!("the {what} is a symlink")));
        }
        if m.uid() != me {
            let uid = m.uid();
            return Err(Error::other(format!(
                "the {what} belongs to uid {uid}, not {me}"
            )));
        }
        let mode = m.permissions().mode() & 0o7777;
        if mode & forbidden != 0 {
            return Err(Error::other(format!("the {what} has mode {mode:o}")));
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_a_private_directory_and_file_are_trusted() {
        let base = std::env::temp_dir().join(format!("vapgen-precompiled-{}", std::process::id()));
        let dir = base.join("modules");
        create_private_dir(&dir).unwrap();
        let file = dir.join("x.cwasm");
        std::fs::write(&file, b"not an artifact").unwrap();
        chmod(&file, 0o644);
        assert!(private(&file).is_ok(), "0700 directory, 0644 file");

        chmod(&file, 0o664);
        let e = private(&file).unwrap_err().to_string();
        assert!(e.contains("the file has mode 664"), "{e}");
        chmod(&file, 0o644);

        chmod(&dir, 0o755);
        let e = private(&file).unwrap_err().to_string();
        assert!(e.contains("the directory has mode 755"), "{e}");
        chmod(&dir, 0o700);

        let link = dir.join("link.cwasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = private(&link).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        // A real artifact loads, and not once others may write it (the caller compiles then).
        let engine = Engine::default();
        let component = Component::new(&engine, wat::parse_str("(component)").unwrap()).unwrap();
        let artifact = artifact_path(&engine, &dir, "abc");
        store(&component, &artifact).unwrap();
        assert!(load(&engine, &artifact).is_some(), "stored by this process");
        chmod(&artifact, 0o666);
        assert!(load(&engine, &artifact).is_none(), "writable by others");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
