//! Fault isolation: misbehaving decision modules end with typed errors, never a crash, and
//! the host keeps working with the good module afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{TEMPLATE, componentize_wat, contract_wit, fault_module};
use vapgen::model::Settings;
use vapgen::runtime::{CallError, LoadError, ModuleSource, Runtime, RuntimeConfig};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        memory_limit: 8 << 20,
        timeout: Duration::from_millis(200),
        cache_dir: None,
        max_instances: 8,
    })
    .expect("runtime")
}

fn plan(rt: &Runtime, module: &[u8]) -> Result<vapgen::model::KindPlan, CallError> {
    let d = rt
        .load_bytes(module, None, ModuleSource::Bytes)
        .expect("fault module loads");
    d.plan_kind(&Settings::default(), TEMPLATE, &[])
}

#[test]
fn infinite_loop_times_out_within_the_deadline() {
    let rt = runtime();
    let module = fault_module("(loop $l (br $l)) (i32.const 0)", "0.1.0");
    let start = Instant::now();
    let err = plan(&rt, &module).unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, CallError::Timeout(d) if d == Duration::from_millis(200)),
        "{err}"
    );
    // The deadline is 200 ms with a 10 ms epoch tick; allow generous scheduling slack.
    assert!(
        took < Duration::from_secs(2),
        "timed out only after {took:?}"
    );
    assert!(err.to_string().contains("timed out"));
}

#[test]
fn unbounded_memory_growth_hits_the_limit() {
    let rt = runtime();
    let module = fault_module(
        "(block $done (loop $l (br_if $done (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $l))) unreachable",
        "0.1.0",
    );
    let err = plan(&rt, &module).unwrap_err();
    match err {
        CallError::MemoryLimit { limit, requested } => {
            assert_eq!(limit, 8 << 20);
            assert!(requested > limit);
        }
        other => panic!("expected a memory limit error, got {other}"),
    }
}

#[test]
fn a_trap_becomes_an_error() {
    let rt = runtime();
    let module = fault_module("unreachable", "0.1.0");
    let err = plan(&rt, &module).unwrap_err();
    assert!(matches!(err, CallError::Trap(_)), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    // One line, not the wasm backtrace.
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
}

#[test]
fn an_incompatible_interface_version_is_refused_at_load() {
    let rt = runtime();
    let module = fault_module("unreachable", "0.2.0");
    let err = rt
        .load_bytes(&module, None, ModuleSource::Bytes)
        .unwrap_err();
    assert!(
        matches!(err, LoadError::UnsupportedInterface { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("@0.2.0") && msg.contains("@0.1.0"),
        "names both versions: {msg}"
    );
}

#[test]
fn a_compatible_patch_version_is_accepted() {
    let rt = runtime();
    let module = fault_module("unreachable", "0.1.9");
    let d = rt.load_bytes(&module, None, ModuleSource::Bytes).unwrap();
    assert_eq!(d.info().name, "fault");
}

#[test]
fn modules_with_imports_are_refused() {
    let wit = contract_wit().replace(
        "/// A decision module exports `decide` and imports nothing.",
        "interface host { log: func(msg: string); }\nworld with-imports { import host; export decide; }\n/// A decision module exports `decide` and imports nothing.",
    );
    let wat = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/faults/module.wat"),
    )
    .unwrap()
    .replace("{VERSION}", "0.1.0")
    .replace("{PLAN_BODY}", "unreachable")
    .replace(
        "(memory (export \"memory\") 1)",
        "(import \"vapgen:decider/host@0.1.0\" \"log\" (func (param i32 i32)))\n  (memory (export \"memory\") 1)",
    );
    let module = componentize_wat(&wat, &wit, "with-imports");
    let err = runtime()
        .load_bytes(&module, None, ModuleSource::Bytes)
        .unwrap_err();
    assert!(matches!(err, LoadError::HasImports(_)), "{err}");
    assert!(err.to_string().contains("vapgen:decider/host"), "{err}");
}

#[test]
fn core_modules_and_garbage_are_refused_with_a_hint() {
    let rt = runtime();
    let core = wat::parse_str("(module)").unwrap();
    let err = rt.load_bytes(&core, None, ModuleSource::Bytes).unwrap_err();
    assert!(matches!(err, LoadError::CoreModule));
    assert!(err.to_string().contains("component new"));
    let err = rt
        .load_bytes(b"not wasm at all", None, ModuleSource::Bytes)
        .unwrap_err();
    assert!(matches!(err, LoadError::NotWasm));
}

#[test]
fn the_digest_pin_is_enforced() {
    let rt = runtime();
    let module = fault_module("unreachable", "0.1.0");
    let err = rt
        .load_bytes(&module, Some(&"0".repeat(64)), ModuleSource::Bytes)
        .unwrap_err();
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
    let err = rt
        .load_bytes(&module, Some("abc"), ModuleSource::Bytes)
        .unwrap_err();
    assert!(matches!(err, LoadError::BadPin(_)), "{err}");
    let good = rt.load_bytes(&module, None, ModuleSource::Bytes).unwrap();
    let pinned = rt
        .load_bytes(
            &module,
            Some(&good.sha256().to_uppercase()),
            ModuleSource::Bytes,
        )
        .unwrap();
    assert_eq!(pinned.sha256(), good.sha256());
}

#[test]
fn the_host_keeps_working_after_faults() {
    let rt = runtime();
    let _ = plan(
        &rt,
        &fault_module("(loop $l (br $l)) (i32.const 0)", "0.1.0"),
    );
    let _ = plan(&rt, &fault_module("unreachable", "0.1.0"));
    let good = rt.load_bundled().expect("bundled module");
    let p = good
        .plan_kind(&Settings::default(), TEMPLATE, &[])
        .expect("the bundled module still plans");
    assert_eq!(p.template_name, "k8sfoo");
}
