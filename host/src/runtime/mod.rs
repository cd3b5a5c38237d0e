//! The wasm runtime: loads decision modules and runs them, sandboxed and bounded.
//!
//! ```text
//!  bytes ──sha256──► pin check ──► precompile cache ──► Component ──► checks ──► DeciderPre
//!                                  (sha256 + engine hash)               │ no imports
//!                                                                        │ decide@0.1.x export
//!  plan_kind: fresh Store ─► limiter (memory cap) ─► epoch deadline ─► instantiate ─► call
//! ```
//!
//! One [`Runtime`] per process holds the wasmtime `Engine` (pooling allocator, epoch
//! interruption with a 10 ms ticker thread) and the compile cache. A [`Decider`] is one
//! loaded module; it is cheap to clone and safe to share between threads. Every call gets a
//! fresh `Store` and instance, so no state survives from one decision to the next.

mod bindings;
mod convert;
mod precompiled;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use vapgen_guest::model::{Constraint, KindPlan, ModuleInfo, Settings};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};

/// The decision module built from `guest/` and embedded in this binary.
pub const BUNDLED_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vapgen_decider.wasm"));

/// The WIT interface the host calls, without version.
pub const INTERFACE: &str = "vapgen:decider/decide";

/// The version of the `decide` interface this host was built against.
pub const INTERFACE_VERSION: &str = vapgen_guest::INTERFACE_VERSION;

const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits and caching of a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Largest linear memory a module may grow to, in bytes.
    pub memory_limit: usize,
    /// Longest a single call may run.
    pub timeout: Duration,
    /// Where compiled modules are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may be alive at the same time (pooling allocator slots).
    pub max_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_limit: 64 << 20,
            timeout: Duration::from_millis(500),
            cache_dir: default_cache_dir(),
            max_instances: 64,
        }
    }
}

/// `$XDG_CACHE_HOME/vapgen/modules` or `~/.cache/vapgen/modules`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("vapgen").join("modules"))
}

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module file could not be read.
    #[error("cannot read decision module {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The module's digest differs from the configured pin.
    #[error(
        "decision module sha256 is {actual}, but --module-sha256 pins {expected}; refusing to load it"
    )]
    DigestMismatch {
        /// The pinned digest.
        expected: String,
        /// The module's digest.
        actual: String,
    },
    /// The pin is not a sha256 hex digest.
    #[error("--module-sha256 must be 64 hex characters, got {0:?}")]
    BadPin(String),
    /// The bytes are a core wasm module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component; turn it into one with `wasm-tools component new` (or build it with wit-bindgen for the vapgen:decider world)"
    )]
    CoreModule,
    /// The bytes are not WebAssembly.
    #[error("not a WebAssembly component (bad magic number)")]
    NotWasm,
    /// wasmtime could not compile the component.
    #[error("cannot compile decision module: {message}")]
    Compile {
        /// wasmtime's error with its causes (`{:#}`).
        message: String,
        /// wasmtime's error.
        #[source]
        source: WasmtimeError,
    },
    /// The component imports something; decision modules must be self-contained.
    #[error("decision modules must have no imports, but this one imports: {0}")]
    HasImports(String),
    /// The component does not export the decision interface at all.
    #[error("the module does not export {INTERFACE}@{INTERFACE_VERSION}; it exports: {0}")]
    MissingInterface(String),
    /// The component exports an incompatible version of the interface.
    #[error(
        "the module exports {INTERFACE}@{found}, but this host supports {INTERFACE}@{supported} (semver-compatible versions only)"
    )]
    UnsupportedInterface {
        /// The version the module exports.
        found: String,
        /// The version this host supports.
        supported: String,
    },
    /// The exported interface has the right name but the wrong types.
    #[error("the module's {INTERFACE} export does not match the contract: {message}")]
    TypeMismatch {
        /// wasmtime's error with its causes (`{:#}`).
        message: String,
        /// wasmtime's error.
        #[source]
        source: WasmtimeError,
    },
    /// `describe` failed.
    #[error("the module failed its describe() call: {0}")]
    Describe(#[source] CallError),
}

/// wasmtime's error as a [`std::error::Error`] (wasmtime's own type is not one).
pub type WasmtimeError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl LoadError {
    fn compile(e: wasmtime::Error) -> Self {
        LoadError::Compile {
            message: format!("{e:#}"),
            source: e.into_boxed_dyn_error(),
        }
    }

    fn type_mismatch(e: wasmtime::Error) -> Self {
        LoadError::TypeMismatch {
            message: format!("{e:#}"),
            source: e.into_boxed_dyn_error(),
        }
    }
}

/// Why a call into a module failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline.
    #[error("decision module timed out after {0:?}")]
    Timeout(Duration),
    /// The module tried to grow its memory past the limit.
    #[error("decision module exceeded its memory limit of {limit} bytes (asked for {requested})")]
    MemoryLimit {
        /// The configured limit.
        limit: usize,
        /// What the module asked for.
        requested: usize,
    },
    /// The module trapped (a bug in the module; a panic in a Rust guest).
    #[error("decision module trapped: {0}")]
    Trap(String),
    /// The module returned an error for this input.
    #[error("decision module rejected the input: {0}")]
    Rejected(String),
    /// Any other runtime failure (e.g. instantiation).
    #[error("decision module failed: {0}")]
    Runtime(String),
}

/// Why a [`Runtime`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime could not create an engine, with the pooling allocator or without it.
    #[error("cannot create the wasm engine: {0}")]
    Engine(#[source] wasmtime::Error),
    /// The thread that ticks the epoch (the call deadlines) could not be started.
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
}

// === impl Runtime ===

/// One per process: the wasmtime engine, its epoch ticker and the compile cache.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Runtime {
    /// Creates the engine. Uses the pooling allocator when the system allows it and falls
    /// back to on-demand allocation otherwise (e.g. a small virtual address space).
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = match Engine::new(&engine_config(&config, true)) {
            Ok(e) => e,
            Err(pooling_err) => {
                tracing::warn!(error = %pooling_err, "pooling allocator unavailable, using on-demand allocation");
                Engine::new(&engine_config(&config, false)).map_err(RuntimeError::Engine)?
            }
        };
        let linker = Linker::new(&engine);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            // One thread ticks the epoch for every store of this engine. A 10 ms tick bounds
            // the overshoot of a deadline to one tick; a sleeping thread costs nothing.
            std::thread::Builder::new()
                .name("vapgen-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(RuntimeError::Ticker)?
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                stop,
                ticker: Some(ticker),
            }),
        })
    }

    /// The configuration this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Loads the module embedded in this binary.
    pub fn load_bundled(&self) -> Result<Decider, LoadError> {
        self.load_bytes(BUNDLED_MODULE, None, ModuleSource::Bundled)
    }

    /// Loads a module from a file, checking its sha256 against `pin` when given.
    pub fn load_file(&self, path: &Path, pin: Option<&str>) -> Result<Decider, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(&bytes, pin, ModuleSource::File(path.to_path_buf()))
    }

    /// Loads a module from bytes, checking its sha256 against `pin` when given.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        pin: Option<&str>,
        source: ModuleSource,
    ) -> Result<Decider, LoadError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(pin) = pin {
            let pin = pin.trim().to_ascii_lowercase();
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(LoadError::BadPin(pin));
            }
            if pin != sha256 {
                return Err(LoadError::DigestMismatch {
                    expected: pin,
                    actual: sha256,
                });
            }
        }
        check_magic(bytes)?;
        let engine = &self.inner.engine;
        let component = self.compile(bytes, &sha256)?;
        check_shape(engine, &component)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::DeciderPre::new)
            .map_err(LoadError::type_mismatch)?;
        let mut decider = Decider {
            runtime: self.clone(),
            pre,
            info: ModuleInfo {
                name: String::new(),
                version: String::new(),
                interface_version: String::new(),
            },
            sha256,
            size: bytes.len(),
            source,
        };
        decider.info = decider.describe().map_err(LoadError::Describe)?;
        Ok(decider)
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let engine = &self.inner.engine;
        let cached = self
            .inner
            .config
            .cache_dir
            .as_deref()
            .map(|dir| precompiled::artifact_path(engine, dir, sha256));
        if let Some(component) = cached.as_deref().and_then(|p| precompiled::load(engine, p)) {
            return Ok(component);
        }
        let component = Component::new(engine, bytes).map_err(LoadError::compile)?;
        if let Some(path) = cached
            && let Err(e) = precompiled::store(&component, &path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the precompile cache");
        }
        Ok(component)
    }
}

fn engine_config(rc: &RuntimeConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    // The decision function is synchronous; component-model async support only adds per-call cost.
    c.concurrency_support(false);
    if pooling {
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(rc.max_instances)
            .total_core_instances(rc.max_instances * 2)
            .total_memories(rc.max_instances)
            .total_tables(rc.max_instances * 2)
            .max_memory_size(rc.memory_limit)
            // Reset a slot's first pages with memset instead of giving them back to the
            // kernel: a fresh instance per call would otherwise page-fault on every page it
            // touches (measured: page faults and TLB flushes were the largest host-side cost).
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(1 << 20)
            // And reset only the pages the call dirtied (Linux >= 6.7, PAGEMAP_SCAN), not all
            // of the 2 MiB kept resident; elsewhere wasmtime memsets them all.
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

fn check_magic(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version (u16) and layer (u16); layer 0 is a core module, 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Checks imports and the exported interface version before type-checking, so the errors
/// name what is wrong instead of a generic type mismatch.
fn check_shape(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    if !imports.is_empty() {
        return Err(LoadError::HasImports(imports.join(", ")));
    }
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let prefix = format!("{INTERFACE}@");
    let Some(found) = exports.iter().find_map(|e| e.strip_prefix(&prefix)) else {
        let list = if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.join(", ")
        };
        return Err(LoadError::MissingInterface(list));
    };
    if !semver_compatible(found, INTERFACE_VERSION) {
        return Err(LoadError::UnsupportedInterface {
            found: found.to_string(),
            supported: INTERFACE_VERSION.to_string(),
        });
    }
    Ok(())
}

/// Cargo-style compatibility: same major, and for 0.x the same minor.
pub fn semver_compatible(found: &str, supported: &str) -> bool {
    fn parts(v: &str) -> Option<(u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        it.next()?.parse::<u64>().ok()?;
        Some((major, minor))
    }
    match (parts(found), parts(supported)) {
        (Some((fa, fi)), Some((sa, si))) => fa == sa && (fa > 0 || fi == si),
        _ => false,
    }
}

// === impl Decider ===

/// Where a module came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSource {
    /// Embedded in the binary.
    Bundled,
    /// Read from a file.
    File(PathBuf),
    /// Given as bytes by an embedding program.
    Bytes,
}

impl std::fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleSource::Bundled => f.write_str("bundled"),
            ModuleSource::File(p) => write!(f, "{}", p.display()),
            ModuleSource::Bytes => f.write_str("bytes"),
        }
    }
}

/// A loaded, checked decision module. Clone it freely; each call runs in a fresh instance.
#[derive(Clone)]
pub struct Decider {
    runtime: Runtime,
    pre: bindings::DeciderPre<HostState>,
    info: ModuleInfo,
    sha256: String,
    size: usize,
    source: ModuleSource,
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("info", &self.info)
            .field("sha256", &self.sha256)
            .field("source", &self.source)
            .finish()
    }
}

impl Decider {
    /// The module's own description (name, version, interface version).
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// sha256 of the component bytes, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The runtime this module was loaded into (to load its successor the same way).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Where the module came from.
    pub fn source(&self) -> &ModuleSource {
        &self.source
    }

    /// Plans one kind (see `vapgen_guest::plan_kind`) inside the sandbox.
    pub fn plan_kind(
        &self,
        settings: &Settings,
        template_json: &str,
        constraints: &[Constraint],
    ) -> Result<KindPlan, CallError> {
        let ws = convert::settings(settings);
        let wc: Vec<_> = constraints.iter().map(convert::constraint).collect();
        let plan = self.call(|inst, store| {
            inst.vapgen_decider_decide()
                .call_plan_kind(store, &ws, template_json, &wc)
        })?;
        plan.map(convert::kind_plan)
            .map_err(|e| CallError::Rejected(e.message))
    }

    fn describe(&self) -> Result<ModuleInfo, CallError> {
        self.call(|inst, store| inst.vapgen_decider_decide().call_describe(store))
            .map(convert::module_info)
    }

    fn call<R>(
        &self,
        f: impl FnOnce(&bindings::Decider, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let rt = &self.runtime.inner;
        let mut store = Store::new(
            &rt.engine,
            HostState {
                limiter: Limiter {
                    memory_limit: rt.config.memory_limit,
                    exceeded: None,
                },
            },
        );
        store.limiter(|s| &mut s.limiter);
        // Deadlines count ticks from now; one extra tick absorbs the partial current tick.
        let ticks = rt
            .config
            .timeout
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis()) as u64
            + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|inst| f(&inst, &mut store));
        result.map_err(|e| classify(e, &store, rt.config.timeout))
    }
}

fn classify(e: wasmtime::Error, store: &Store<HostState>, timeout: Duration) -> CallError {
    let limiter = &store.data().limiter;
    if let Some(requested) = limiter.exceeded {
        return CallError::MemoryLimit {
            limit: limiter.memory_limit,
            requested,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout(timeout),
        Some(trap) => {
            // One line for people (the innermost wasm function, if the module has names);
            // the full wasm backtrace, 7+ lines of frames, at debug level. A Rust guest's
            // panic message never leaves the sandbox (no imports, panic = abort).
            let frame = e.downcast_ref::<wasmtime::WasmBacktrace>().and_then(|bt| {
                bt.frames()
                    .first()
                    .and_then(|f| f.func_name().map(str::to_owned))
            });
            tracing::debug!(backtrace = %format!("{e:#}"), "decision module trap");
            CallError::Trap(match frame {
                Some(f) => format!("{trap} (in {f}; a panic in a Rust guest ends here)"),
                None => format!("{trap} (a panic in a Rust guest ends here)"),
            })
        }
        None => CallError::Runtime(format!("{e:#}")),
    }
}

// === host state ===

struct HostState {
    limiter: Limiter,
}

struct Limiter {
    memory_limit: usize,
    /// Set to the requested size when a module asked for more than the limit.
    exceeded: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.exceeded = Some(desired);
            // Trap instead of returning -1 from memory.grow: a Rust guest would abort on OOM
            // anyway, and a trap with a recorded cause gives a precise error.
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_component_stays_within_its_size_budget() {
        let (size, budget) = (BUNDLED_MODULE.len(), vapgen_guest::COMPONENT_SIZE_BUDGET);
        assert!(
            size <= budget,
            "the bundled component is {size} bytes, over its budget of {budget}: find what grew \
             (twiggy, or `cargo bloat` on a native build), or raise the budget in guest/src/lib.rs \
             with the reason"
        );
    }

    #[test]
    fn semver_rules() {
        assert!(semver_compatible("0.1.0", "0.1.0"));
        assert!(semver_compatible("0.1.7", "0.1.0"));
        assert!(!semver_compatible("0.2.0", "0.1.0"));
        assert!(semver_compatible("1.4.0", "1.0.0"));
        assert!(!semver_compatible("2.0.0", "1.0.0"));
        assert!(!semver_compatible("banana", "0.1.0"));
    }

    #[test]
    fn magic_checks() {
        assert!(matches!(
            check_magic(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_magic(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_magic(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn a_component_that_does_not_compile_keeps_wasmtimes_error_as_its_source() {
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: None,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let bytes = b"\0asm\x0d\0\x01\0\xff\xff\xff";
        let Err(e) = rt.load_bytes(bytes, None, ModuleSource::Bundled) else {
            panic!("garbage after a component header compiled");
        };
        assert!(matches!(e, LoadError::Compile { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("cannot compile decision module: "),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("wasmtime's error underneath");
        assert!(!source.to_string().is_empty());
    }
}

// === the Decide trait ===

/// Anything that can plan a kind: a wasm [`Decider`], or [`NativeDecider`] (the bundled logic
/// compiled natively, the baseline of benchmarks and differential tests).
pub trait Decide: Send + Sync {
    /// Plans one kind.
    fn plan_kind(
        &self,
        settings: &Settings,
        template_json: &str,
        constraints: &[Constraint],
    ) -> Result<KindPlan, CallError>;
}

impl Decide for Decider {
    fn plan_kind(
        &self,
        settings: &Settings,
        template_json: &str,
        constraints: &[Constraint],
    ) -> Result<KindPlan, CallError> {
        Decider::plan_kind(self, settings, template_json, constraints)
    }
}

/// The bundled decision logic called natively, without the sandbox.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeDecider;

impl Decide for NativeDecider {
    fn plan_kind(
        &self,
        settings: &Settings,
        template_json: &str,
        constraints: &[Constraint],
    ) -> Result<KindPlan, CallError> {
        vapgen_guest::plan_kind(settings, template_json, constraints)
            .map_err(|e| CallError::Rejected(e.message))
    }
}
