//! Command-line options shared by the subcommands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use vapgen_guest::model::{FailurePolicy, Settings};

use crate::runtime::{Decider, LoadError, Runtime, RuntimeConfig, RuntimeError};

/// Why [`ModuleArgs::load`] could not give a runtime and a module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The runtime could not be created.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The module could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Which decision module to use and how to sandbox it.
#[derive(Args, Clone, Debug)]
pub struct ModuleArgs {
    /// Decision module (a wasm component) to load instead of the bundled one.
    #[arg(long, value_name = "PATH", env = "VAPGEN_MODULE")]
    pub module: Option<PathBuf>,
    /// Refuse any module whose sha256 differs from this (hex).
    #[arg(long, value_name = "SHA256", env = "VAPGEN_MODULE_SHA256")]
    pub module_sha256: Option<String>,
    /// Deadline of one module call, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub module_timeout_ms: u64,
    /// Memory limit of one module instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub module_memory_mib: usize,
    /// Directory of the precompiled-module cache (default: ~/.cache/vapgen/modules).
    #[arg(long, value_name = "DIR", env = "VAPGEN_MODULE_CACHE")]
    pub module_cache_dir: Option<PathBuf>,
    /// Compile the module on every start instead of using the cache.
    #[arg(long)]
    pub no_module_cache: bool,
}

impl ModuleArgs {
    /// The runtime configuration these options describe.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let mut rc = RuntimeConfig {
            memory_limit: self.module_memory_mib.max(1) << 20,
            timeout: Duration::from_millis(self.module_timeout_ms.max(1)),
            ..RuntimeConfig::default()
        };
        if self.no_module_cache {
            rc.cache_dir = None;
        } else if let Some(d) = &self.module_cache_dir {
            rc.cache_dir = Some(d.clone());
        }
        rc
    }

    /// Creates the runtime and loads the module.
    pub fn load(&self) -> Result<(Runtime, Decider), ModuleError> {
        let rt = Runtime::new(self.runtime_config())?;
        let d = self.load_with(&rt)?;
        Ok((rt, d))
    }

    /// Loads the module into an existing runtime.
    pub fn load_with(&self, rt: &Runtime) -> Result<Decider, LoadError> {
        match &self.module {
            Some(p) => rt.load_file(p, self.module_sha256.as_deref()),
            None => {
                let d = rt.load_bundled()?;
                if let Some(pin) = &self.module_sha256 {
                    let pin = pin.trim().to_ascii_lowercase();
                    if pin != d.sha256() {
                        return Err(LoadError::DigestMismatch {
                            expected: pin,
                            actual: d.sha256().to_string(),
                        });
                    }
                }
                Ok(d)
            }
        }
    }
}

/// `Fail` or `Ignore`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FailurePolicyArg {
    /// Deny requests the policy cannot evaluate.
    #[value(name = "Fail")]
    Fail,
    /// Admit requests the policy cannot evaluate.
    #[value(name = "Ignore")]
    Ignore,
}

/// Gatekeeper's flags that shape decisions (same names and defaults as Gatekeeper).
#[derive(Args, Clone, Debug)]
pub struct SettingsArgs {
    /// Generate a VAP for templates whose source has no `generateVAP`.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub default_create_vap_for_templates: bool,
    /// Generate a binding for constraints that are not `scoped`.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub default_create_vap_binding_for_constraints: bool,
    /// Failure policy of generated VAPs whose template sets none.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "Fail")]
    pub default_k8s_native_validation_failure_policy: FailurePolicyArg,
}

impl SettingsArgs {
    /// The module settings these flags describe.
    pub fn settings(&self) -> Settings {
        Settings {
            default_create_vap_for_templates: self.default_create_vap_for_templates,
            default_create_vap_binding_for_constraints: self
                .default_create_vap_binding_for_constraints,
            default_failure_policy: match self.default_k8s_native_validation_failure_policy {
                FailurePolicyArg::Fail => FailurePolicy::Fail,
                FailurePolicyArg::Ignore => FailurePolicy::Ignore,
            },
            scope_sync: None,
        }
    }
}
