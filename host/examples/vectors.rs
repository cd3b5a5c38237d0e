//! Writes decision vectors for other hosts: every case of the given decision suites (plus a
//! few edge cases), planned by the Rust host through wasmtime, as JSON in the WIT shape that
//! jco's JavaScript bindings use (see `support/vectors.rs` for the mapping).
//!
//! ```text
//! cargo run -p vapgen --example vectors -- [--module PATH] -o vectors.json tests/decisions ...
//! ```
//!
//! The file records the module's sha256, so a consumer can check that it runs the very same
//! component. `embed/node/run-test.sh` uses it to compare Node (jco) with the Rust host.

#[path = "support/vectors.rs"]
#[allow(dead_code)]
mod vectors;

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use vapgen::{Runtime, RuntimeConfig};

const USAGE: &str = "usage: vectors [--module PATH] -o OUT.json SUITE_PATH...";

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
    let mut module = None;
    let mut out = None;
    let mut suites = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--module" => module = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "-o" | "--output" => out = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}; {USAGE}")),
            s => suites.push(PathBuf::from(s)),
        }
    }
    let out = out.ok_or(USAGE)?;
    if suites.is_empty() {
        return Err(USAGE.into());
    }
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let decider = match &module {
        Some(p) => rt.load_file(p, None),
        None => rt.load_bundled(),
    }
    .map_err(|e| e.to_string())?;
    let mut inputs = vectors::load_inputs(&suites)?;
    inputs.extend(vectors::edge_inputs());
    let mut list = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let result = decider.plan_kind(&input.settings, &input.template, &input.constraints);
        let expected = vectors::plan_result_json(&result)
            .map_err(|e| format!("{} / {}: {e}", input.suite, input.case))?;
        list.push(vectors::vector_json(input, expected));
    }
    let doc = json!({
        "format": vectors::FORMAT,
        "module": {
            "sha256": decider.sha256(),
            "size": decider.size(),
            "source": decider.source().to_string(),
            "info": vectors::module_info_json(decider.info()),
        },
        "vectors": list,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&out, text + "\n").map_err(|e| format!("write {}: {e}", out.display()))?;
    println!(
        "{}: {} vectors from module {} ({})",
        out.display(),
        inputs.len(),
        decider.info().name,
        decider.sha256()
    );
    Ok(())
}
