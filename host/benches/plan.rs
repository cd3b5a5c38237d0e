//! `cargo bench -p vapgen --bench plan`: the per-kind plan through the wasm module against
//! the same Rust code called natively (the baseline), side by side, with the ratio.
//!
//! Each wasm call is what the controller pays: a fresh Store and instance from the shared
//! `InstancePre`, the epoch deadline armed, the inputs copied in and the plan copied out.
//!
//! `VAPGEN_BENCH_ONE=SIDE:N[:CALLS]` (SIDE `native` or `wasm`) is the instruction-count mode of
//! `host/benches/instructions.sh`: the same setup (inputs built, for `wasm` the runtime created
//! and the module loaded), then exactly CALLS calls (default 1) of that one case, nothing else.
//! Two runs under callgrind with different CALLS differ by exactly the calls: the script
//! divides the difference by the difference of CALLS. `VAPGEN_BENCH_CACHE` is the precompile
//! cache directory of the `wasm` side (default: none, the module is compiled in every run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use vapgen::model::{Constraint, Settings};
use vapgen::runtime::{
    BUNDLED_MODULE, Decide, ModuleSource, NativeDecider, Runtime, RuntimeConfig,
};

const TEMPLATE: &str = r#"{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate","metadata":{"name":"k8srequiredlabels","uid":"u-1","generation":1},"spec":{"crd":{"spec":{"names":{"kind":"K8sRequiredLabels"}}},"targets":[{"target":"admission.k8s.gatekeeper.sh","code":[{"engine":"K8sNativeValidation","source":{"variables":[{"name":"missing","expression":"variables.params.labels.filter(k, !has(variables.anyObject.metadata.labels) || !(k in variables.anyObject.metadata.labels))"}],"validations":[{"expression":"size(variables.missing) == 0","messageExpression":"\"missing required labels: \" + variables.missing.join(\", \")"}]}}]}]}}"#;

fn constraints(n: usize) -> Vec<Constraint> {
    (0..n)
        .map(|i| Constraint {
            name: format!("must-have-owner-{i}"),
            uid: format!("0b0e5c1a-0000-4000-8000-{i:012}"),
            generation: 1,
            enforcement_action: Some(["deny", "warn", "dryrun"][i % 3].into()),
            scoped_enforcement_actions: None,
            label_selector: (i % 2 == 0).then(|| r#"{"matchLabels":{"team":"payments"}}"#.into()),
            namespace_selector: None,
            malformed: vec![],
        })
        .collect()
}

struct Stats {
    mean: Duration,
    p99: Duration,
}

fn measure(iters: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..(iters / 10).max(5) {
        f();
    }
    let mut samples: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let total: Duration = samples.iter().sum();
    Stats {
        mean: total / iters as u32,
        p99: samples[(iters * 99 / 100).min(iters - 1)],
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The instruction-count mode: see the module doc.
fn one(spec: &str) {
    let usage = "VAPGEN_BENCH_ONE must be SIDE:N[:CALLS], SIDE native or wasm";
    let mut parts = spec.split(':');
    let side = parts.next().unwrap_or_default();
    let n: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{usage}, got {spec:?}"));
    let calls: usize = match parts.next() {
        None => 1,
        Some(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{usage}, got {spec:?}")),
    };
    assert!(parts.next().is_none(), "{usage}, got {spec:?}");
    let settings = Settings::default();
    let cs = constraints(n);
    match side {
        "native" => repeat(&NativeDecider, calls, &settings, &cs),
        "wasm" => {
            let rt = Runtime::new(RuntimeConfig {
                cache_dir: std::env::var_os("VAPGEN_BENCH_CACHE").map(Into::into),
                // Under callgrind a call runs ~50x slower than natively: no deadline.
                timeout: Duration::from_secs(3600),
                // One pooling slot: valgrind refuses the address space that the default 64
                // slots reserve (GiBs each), and the runtime would fall back to on-demand
                // allocation, which production does not use. Calls made one after another
                // reuse one slot either way.
                max_instances: 1,
                ..RuntimeConfig::default()
            })
            .expect("runtime");
            let decider = rt
                .load_bytes(BUNDLED_MODULE, None, ModuleSource::Bundled)
                .expect("load");
            repeat(&decider, calls, &settings, &cs);
        }
        _ => panic!("{usage}, got {spec:?}"),
    }
    eprintln!("bench one: {side} N={n}: {calls} calls");
}

/// Exactly `calls` measured calls, as the wall-clock loop makes them.
#[inline(never)]
fn repeat(decider: &impl Decide, calls: usize, settings: &Settings, cs: &[Constraint]) {
    for _ in 0..calls {
        let p = black_box(decider)
            .plan_kind(settings, black_box(TEMPLATE), black_box(cs))
            .expect("plan");
        assert_eq!(p.bindings.len(), cs.len());
        drop(black_box(p));
    }
}

fn main() {
    if let Ok(spec) = std::env::var("VAPGEN_BENCH_ONE") {
        return one(&spec);
    }
    let settings = Settings::default();
    let cache = std::env::temp_dir().join(format!("vapgen-bench-cache-{}", std::process::id()));
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");

    println!("module: bundled, {} bytes", BUNDLED_MODULE.len());
    let t = Instant::now();
    let decider = rt
        .load_bytes(BUNDLED_MODULE, None, ModuleSource::Bundled)
        .expect("load");
    let cold = t.elapsed();
    let t = Instant::now();
    let _again = rt
        .load_bytes(BUNDLED_MODULE, None, ModuleSource::Bundled)
        .expect("load from cache");
    let warm = t.elapsed();
    println!(
        "load: cold (compile + checks + describe) {:.1} ms, warm (precompile cache) {:.2} ms, ratio {:.0}x",
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&cache);

    println!();
    println!(
        "{:>12} {:>8} | {:>12} {:>12} | {:>12} {:>12} | {:>6}",
        "constraints", "iters", "native mean", "native p99", "wasm mean", "wasm p99", "ratio"
    );
    for (n, iters) in [
        (0usize, 5_000usize),
        (1, 5_000),
        (10, 5_000),
        (100, 1_000),
        (1_000, 300),
    ] {
        let cs = constraints(n);
        let native = measure(iters, || {
            let p = NativeDecider
                .plan_kind(&settings, TEMPLATE, &cs)
                .expect("plan");
            assert_eq!(p.bindings.len(), n);
        });
        let wasm = measure(iters, || {
            let p = decider.plan_kind(&settings, TEMPLATE, &cs).expect("plan");
            assert_eq!(p.bindings.len(), n);
        });
        println!(
            "{:>12} {:>8} | {:>10.1}µs {:>10.1}µs | {:>10.1}µs {:>10.1}µs | {:>5.2}x",
            n,
            iters,
            us(native.mean),
            us(native.p99),
            us(wasm.mean),
            us(wasm.p99),
            wasm.mean.as_secs_f64() / native.mean.as_secs_f64()
        );
    }
    println!();
    println!(
        "goals: 10 constraints <= 30 µs mean; 1,000 constraints <= 500 µs; wasm/native <= 2 at 1,000"
    );
}
