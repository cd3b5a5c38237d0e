//! Builds a decision module crate of this workspace into a component file.
//!
//! ```text
//! cargo run -p vapgen --example build_module -- \
//!     --package vapgen-module-system-namespaces-exempt --lib system_namespaces_exempt \
//!     -o target/modules/system-namespaces-exempt.wasm
//! ```
//!
//! Steps: `cargo build --lib --target wasm32-unknown-unknown --profile guest` (in
//! `target/guest-wasm`), then `wit_component::ComponentEncoder` (what `wasm-tools component new` does). Prints the
//! core and component sizes and the component's sha256.

use vapgen_module_build as module_build;

use std::path::PathBuf;
use std::process::ExitCode;

use sha2::{Digest, Sha256};

const USAGE: &str = "usage: build_module --package NAME --lib LIB_NAME -o OUT.wasm";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut package = None;
    let mut lib = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--package" | "-p" => package = Some(value()?),
            "--lib" => lib = Some(value()?),
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unexpected argument {other:?}; {USAGE}")),
        }
    }
    let (Some(package), Some(lib), Some(out)) = (package, lib, out) else {
        return Err(USAGE.into());
    };
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("host/ has no parent")?
        .to_path_buf();
    let target_dir = module_build::default_target_dir(&workspace);
    let core = module_build::build_core(&workspace, &target_dir, &package, &lib)?;
    let component = module_build::componentize(&core)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(&out, &component).map_err(|e| format!("write {}: {e}", out.display()))?;
    println!(
        "{}: core {} bytes, component {} bytes, sha256 {}",
        out.display(),
        core.len(),
        component.len(),
        hex::encode(Sha256::digest(&component))
    );
    Ok(())
}
