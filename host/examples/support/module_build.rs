//! Building a decision module from a Rust crate of this workspace: compile it for
//! `wasm32-unknown-unknown` with the `guest` profile, optionally strip an export prefix, and
//! turn the core module into a component. The same steps as `host/build.rs` for the bundled
//! module, shared by the `build_module` example and the `alt_module` integration test.
//!
//! ## Why an export prefix
//!
//! A module that reuses the bundled logic links the `vapgen-guest` rlib, and on wasm32 that
//! rlib carries the bundled module's own wit-bindgen exports
//! (`vapgen:decider/decide@0.1.0#plan-kind`, ...). A second adapter with the same symbol
//! names fails to link ("duplicate symbol"). So the alternative adapter is generated with
//! `export_prefix: "<prefix>"`; [`strip_export_prefix`] then drops the bundled adapter's
//! exports and renames the prefixed ones to the canonical names, before componentizing.
//! Both adapters also embed a `component-type:...` custom section of the same name, which the
//! linker concatenates; the rewrite splits it back into one section per adapter, and
//! wit-component merges them (they describe the same world).

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

/// Rewrites the export section of a core module: every export named `<prefix><name>` is
/// renamed to `<name>`, and an export already named `<name>` (the bundled adapter's) is
/// dropped. A `component-type` custom section holding several concatenated encodings is split
/// into one section each. Every other section is copied byte for byte. Fails when nothing carries the
/// prefix, so a forgotten `export_prefix` cannot silently ship the bundled behaviour.
pub fn strip_export_prefix(core: &[u8], prefix: &str) -> Result<Vec<u8>, String> {
    if core.len() < 8 || &core[0..4] != b"\0asm" || core[4..8] != [1, 0, 0, 0] {
        return Err("not a core WebAssembly module (version 1)".into());
    }
    let mut out = core[0..8].to_vec();
    let mut pos = 8;
    let mut renamed = 0;
    while pos < core.len() {
        let id = core[pos];
        let (size, after) = read_u32(core, pos + 1)?;
        let end = after
            .checked_add(size as usize)
            .filter(|&e| e <= core.len())
            .ok_or("a section runs past the end of the module")?;
        if id == 7 {
            let (payload, n) = rewrite_exports(&core[after..end], prefix)?;
            renamed = n;
            out.push(7);
            write_u32(&mut out, payload.len() as u32);
            out.extend_from_slice(&payload);
        } else if id == 0 {
            split_component_type(&core[pos..end], &core[after..end], &mut out)?;
        } else {
            out.extend_from_slice(&core[pos..end]);
        }
        pos = end;
    }
    if renamed == 0 {
        return Err(format!("no export carries the prefix {prefix:?}"));
    }
    Ok(out)
}

/// Copies a custom section; a `component-type*` section that holds several component
/// binaries one after another (what the linker makes of two adapters' sections of the same
/// name) becomes one section per binary.
fn split_component_type(whole: &[u8], payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let (name_len, p) = read_u32(payload, 0)?;
    let name_end = p + name_len as usize;
    let name = payload.get(p..name_end).ok_or("truncated custom section")?;
    if !name.starts_with(b"component-type") {
        out.extend_from_slice(whole);
        return Ok(());
    }
    let data = &payload[name_end..];
    let mut start = 0;
    while start < data.len() {
        // A component binary: 8-byte header, then sections up to the next header or the end.
        if data.len() < start + 8 || &data[start..start + 4] != b"\0asm" {
            return Err("a component-type section does not hold component binaries".into());
        }
        let mut q = start + 8;
        while q < data.len() && !data[q..].starts_with(b"\0asm") {
            let (size, after) = read_u32(data, q + 1)?;
            q = after + size as usize;
        }
        if q > data.len() {
            return Err("a component-type section is truncated".into());
        }
        let mut section = Vec::new();
        write_u32(&mut section, name_len);
        section.extend_from_slice(name);
        section.extend_from_slice(&data[start..q]);
        out.push(0);
        write_u32(out, section.len() as u32);
        out.extend_from_slice(&section);
        start = q;
    }
    Ok(())
}

/// One core export: name, kind byte and the index as its original LEB128 bytes.
struct Export<'a> {
    name: String,
    kind: u8,
    index: &'a [u8],
}

fn rewrite_exports(section: &[u8], prefix: &str) -> Result<(Vec<u8>, usize), String> {
    let (count, mut pos) = read_u32(section, 0)?;
    let mut exports = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, p) = read_u32(section, pos)?;
        let name_end = p + len as usize;
        let name = std::str::from_utf8(section.get(p..name_end).ok_or("truncated export")?)
            .map_err(|_| "an export name is not UTF-8")?
            .to_string();
        let kind = *section.get(name_end).ok_or("truncated export")?;
        let (_, index_end) = read_u32(section, name_end + 1)?;
        exports.push(Export {
            name,
            kind,
            index: &section[name_end + 1..index_end],
        });
        pos = index_end;
    }
    if pos != section.len() {
        return Err("trailing bytes in the export section".into());
    }
    let prefixed: Vec<String> = exports
        .iter()
        .filter_map(|e| e.name.strip_prefix(prefix).map(str::to_string))
        .collect();
    let kept: Vec<Export<'_>> = exports
        .into_iter()
        .filter(|e| !prefixed.contains(&e.name))
        .map(|mut e| {
            if let Some(stripped) = e.name.strip_prefix(prefix) {
                e.name = stripped.to_string();
            }
            e
        })
        .collect();
    let mut out = Vec::new();
    write_u32(&mut out, kept.len() as u32);
    for e in &kept {
        write_u32(&mut out, e.name.len() as u32);
        out.extend_from_slice(e.name.as_bytes());
        out.push(e.kind);
        out.extend_from_slice(e.index);
    }
    Ok((out, prefixed.len()))
}

fn read_u32(bytes: &[u8], mut pos: usize) -> Result<(u32, usize), String> {
    let mut value: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(pos).ok_or("truncated LEB128 number")?;
        pos += 1;
        value |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((value, pos));
        }
    }
    Err("LEB128 number too long".into())
}

fn write_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}
