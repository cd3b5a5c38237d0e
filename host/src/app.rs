//! The `vapgen` command line: [`main`] parses the arguments and runs a subcommand. The
//! `vapgen` binary is this function; the cluster tests' own binary target calls it too, so
//! they run real `vapgen` processes (failover, hot swap) from another crate.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{ModuleArgs, SettingsArgs};
use crate::{manifest, planner, render, suite};
use clap::{Parser, Subcommand};

/// Race-free Gatekeeper VAP/VAPB generation with a sandboxed wasm decision module.
#[derive(Parser, Debug)]
#[command(name = "vapgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level on stderr: error, warn, info, debug, trace, or a filter such as
    /// `vapgen=debug,kube=info` (default: $RUST_LOG, else info for `run`, warn otherwise).
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render the VAPs and bindings for templates and constraints read from YAML files.
    ///
    /// Prints each template's constraint CRD, the policies and the bindings on stdout, as a
    /// YAML stream that `kubectl apply -f -` accepts (or a JSON List), and the summary and
    /// every error on stderr. Exit codes: 0 no error, 1 an input or generation error, 2 a
    /// usage error, 141 stdout closed early.
    Plan(Box<PlanArgs>),
    /// Run decision test suites through the decision module.
    Test {
        /// Suite files or directories of suites.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Print every case, not only failures.
        #[arg(short, long)]
        verbose: bool,
        #[command(flatten)]
        module: ModuleArgs,
    },
    /// Run the controller against a cluster.
    Run(Box<RunArgs>),
    /// `plan` as a KRM function: a ResourceList on stdin, the same list with the generated
    /// objects and `results` on stdout (kustomize exec/containerised functions, Argo CD
    /// plugins; see README "GitOps"). Exit 1 when any result is an error.
    Krm {
        #[command(flatten)]
        module: ModuleArgs,
    },
    /// What applying vapgen's objects would change on a cluster, as `kubectl diff` shows it:
    /// each object is dry-run applied (server-side apply, vapgen's field manager) and the
    /// result compared with the live object. Exit 0: no difference; 1: differences; 2: an
    /// error (of the inputs, or of a request).
    Diff(Box<DiffArgs>),
    /// Print a shell completion script: `source <(vapgen completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run gatekeeper-library / gator `Suite` files in VAP mode against a cluster.
    ///
    /// For each test, plans the template and constraint (as `plan`), applies the constraint
    /// CRD, the policy, the constraint and the binding to a temporary scope (a kind renamed
    /// for the run, policies narrowed to the run's labelled objects, a fresh namespace),
    /// checks every case with server-side dry-run requests, and deletes it all. Prints a
    /// table. Exit codes: 0 every case passed or was skipped, 1 a case failed, a suite could
    /// not run or no case was found, 2 a usage or connection error, 130 interrupted (after
    /// deleting what the run created).
    Verify(Box<VerifyArgs>),
    /// Print the decision module's identity, interface version and sha256.
    Describe {
        /// Also write the module's bytes to this file (e.g. to ship the bundled module).
        #[arg(long, value_name = "PATH")]
        emit: Option<PathBuf>,
        #[command(flatten)]
        module: ModuleArgs,
    },
}

/// Options of `vapgen plan`.
#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// Files or directories (searched recursively for *.yaml, *.yml, *.json); `-` reads
    /// standard input. Repeatable and comma-separated, as kubectl's.
    #[arg(
        short = 'f',
        long = "filename",
        required_unless_present = "from_cluster",
        conflicts_with = "from_cluster",
        value_name = "PATH",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    paths: Vec<PathBuf>,
    /// Emit each template's constraint CRD (the one standalone mode creates) before its
    /// policy. Without it, a policy whose paramKind does not exist makes the API server fail
    /// every request the policy matches (all CREATE and UPDATE requests), which
    /// `failurePolicy: Fail` turns into denials. Set to false beside Gatekeeper, which owns
    /// the constraint CRDs.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    crds: bool,
    /// Emit the bindings (false: the CRDs and policies only, the first step of the two-step
    /// apply in README "Safe render").
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    bindings: bool,
    /// Emit the bindings only (the second step of the two-step apply).
    #[arg(long, conflicts_with = "bindings")]
    only_bindings: bool,
    /// Output format of the objects: a YAML stream, or one JSON `v1 List`.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
    output: Output,
    /// Summary on stderr: readable text, one JSON document, or none (errors are printed
    /// on stderr in every case).
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    summary: SummaryFormat,
    /// The same as --summary=none.
    #[arg(long, hide = true)]
    no_summary: bool,
    /// `server`: also send every object to the API server of `--kubeconfig` as a server-side
    /// dry-run apply (nothing is stored), so that its own checks run, the compilation of
    /// every CEL expression included; a refusal is an error.
    #[arg(long, value_enum, value_name = "MODE")]
    validate: Option<Validate>,
    /// Read the templates and constraints from the cluster of `--kubeconfig` instead of
    /// files: on a cluster where Gatekeeper generates, the migration report (which templates
    /// and constraints would generate and which not, and why; `vapgen diff --from-cluster`
    /// shows what differs from the VAPs and bindings present).
    #[arg(long)]
    from_cluster: bool,
    /// With --from-cluster: only the templates matching this label selector.
    #[arg(
        short = 'l',
        long = "selector",
        value_name = "SELECTOR",
        requires = "from_cluster"
    )]
    selector: Option<String>,
    /// Scope sync (`vapgen run`'s flag and default, Gatekeeper's): each VAP matches what
    /// Gatekeeper's webhook matches, from the ValidatingWebhookConfiguration and the Config
    /// found among the inputs (with --from-cluster: read from the cluster) and the exempt
    /// namespaces. Without those objects and flags the VAPs have the default match rule.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    sync_vap_enforcement_scope: bool,
    /// With scope sync: Gatekeeper's exempt namespace (repeatable; Gatekeeper's flag). Unlike
    /// `vapgen run`, plan adds no namespaceSelector exemption (it has no namespace of its own).
    #[arg(long = "exempt-namespace", value_name = "NAMESPACE")]
    exempt_namespace: Vec<String>,
    #[command(flatten)]
    exempt_patterns: ExemptPatternArgs,
    /// With scope sync: the name of Gatekeeper's ValidatingWebhookConfiguration among the
    /// inputs (Gatekeeper's flag); others are ignored.
    #[arg(long, default_value = "gatekeeper-validating-webhook-configuration")]
    validating_webhook_configuration_name: String,
    /// With scope sync: the namespace of Gatekeeper's `Config` named `config` (a `Config`
    /// read from a file without a namespace is taken too).
    #[arg(long, default_value = "gatekeeper-system")]
    gatekeeper_namespace: String,
    /// With --validate=server or --from-cluster: the kubeconfig (default: $KUBECONFIG,
    /// ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// With --validate=server or --from-cluster: the kubeconfig context.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(flatten)]
    module: ModuleArgs,
}

/// `vapgen plan -o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Yaml,
    Json,
}

/// `vapgen plan --validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Validate {
    /// Server-side dry-run of every object.
    Server,
}

/// `vapgen plan --summary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SummaryFormat {
    Text,
    Json,
    None,
}

/// Options of `vapgen verify`.
#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Suite files, or directories searched recursively for them.
    #[arg(required = true, value_name = "SUITE")]
    suites: Vec<PathBuf>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// How long a case that expects a denial is retried, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    deny_timeout: u64,
    /// How long a case that expects admission is retried, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    admit_timeout: u64,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(flatten)]
    module: ModuleArgs,
}

/// Options of `vapgen diff`.
#[derive(clap::Args, Debug)]
struct DiffArgs {
    /// Files or directories of templates and constraints (as `plan -f`; `-` is stdin).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        value_delimiter = ',',
        allow_hyphen_values = true,
        required_unless_present = "from_cluster",
        conflicts_with = "from_cluster"
    )]
    paths: Vec<PathBuf>,
    /// Read the templates and constraints from the cluster instead (a migration check on a
    /// cluster running Gatekeeper: what vapgen would write, and where that differs from the
    /// VAPs and bindings present).
    #[arg(long)]
    from_cluster: bool,
    /// With --from-cluster: only the templates matching this label selector (and their
    /// constraints).
    #[arg(
        short = 'l',
        long = "selector",
        value_name = "SELECTOR",
        requires = "from_cluster"
    )]
    selector: Option<String>,
    /// Also compare the constraint CRDs (what standalone mode writes; beside Gatekeeper the
    /// CRDs are Gatekeeper's).
    #[arg(long)]
    crds: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(flatten)]
    module: ModuleArgs,
}

/// Options of `vapgen run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Standalone mode: create and update each template's constraint CRD (no Gatekeeper).
    #[arg(long)]
    manage_crds: bool,
    /// Elect a leader through a Lease (turn off only when running a single replica).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "vapgen")]
    lease_name: String,
    /// Namespace of the Lease and of the readiness canary request.
    #[arg(long, env = "POD_NAMESPACE", default_value = "vapgen-system")]
    lease_namespace: String,
    /// Namespace that no generated policy applies to (repeatable; Gatekeeper's flag name).
    /// vapgen's own namespace (--lease-namespace) is always exempt, so that its Lease
    /// renewals, canary requests and Events never depend on the policies it generates.
    #[arg(long = "exempt-namespace", value_name = "NAMESPACE")]
    exempt_namespace: Vec<String>,
    #[command(flatten)]
    exempt_patterns: ExemptPatternArgs,
    /// Scope sync (Gatekeeper's flag and default): each VAP matches what Gatekeeper's
    /// webhook matches — its ValidatingWebhookConfiguration's rules, selectors and match
    /// conditions, the namespaces its Config excludes for the webhook, and the exempt
    /// namespaces — watched, so that a change re-plans every kind once.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    sync_vap_enforcement_scope: bool,
    /// With scope sync: Gatekeeper's ValidatingWebhookConfiguration (Gatekeeper's flag).
    #[arg(long, default_value = "gatekeeper-validating-webhook-configuration")]
    validating_webhook_configuration_name: String,
    /// With scope sync: the namespace of Gatekeeper's `Config` named `config`.
    #[arg(long, default_value = "gatekeeper-system")]
    gatekeeper_namespace: String,
    /// Lease duration in seconds: how long a dead leader blocks a take-over.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Renew the lease this many seconds before it expires: the time a renewal may take on a
    /// loaded API server (the default renews 5 s into a 15 s lease and so survives renewals
    /// of up to 10 s, as client-go's 10 s renew deadline).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    lease_grace_seconds: u64,
    /// Identity of this replica in the Lease (default: $POD_NAME, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of /metrics, /healthz, /readyz and /debug/records ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: String,
    /// Upper bound, in seconds, of the wait for a new kind's readiness before its first binding.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    default_wait_for_vapb_generation: u64,
    /// Prove readiness with an admission canary (a dry-run Lease create in --lease-namespace);
    /// false: discovery only.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    readiness_canary: bool,
    /// Reconciles of different kinds that may run at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Re-check everything this often, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// With --module: poll the module file this often (seconds) and hot-swap a new, valid
    /// module without a restart; 0 disables.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    module_watch_interval: f64,
    /// A decision suite every hot-swapped module must pass (default: <module>.suite.yaml if present).
    #[arg(long, value_name = "PATH")]
    module_suite: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(flatten)]
    module: ModuleArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Gatekeeper's exempt namespace patterns, for scope sync (`run` and `plan`).
#[derive(clap::Args, Debug, Clone, Default)]
struct ExemptPatternArgs {
    /// With scope sync: namespaces starting with this prefix are exempt (repeatable;
    /// Gatekeeper's flag).
    #[arg(long = "exempt-namespace-prefix", value_name = "PREFIX")]
    prefix: Vec<String>,
    /// With scope sync: namespaces ending with this suffix are exempt (repeatable;
    /// Gatekeeper's flag).
    #[arg(long = "exempt-namespace-suffix", value_name = "SUFFIX")]
    suffix: Vec<String>,
}

/// Parses `args` (without the program name) as the `vapgen` command line does, and runs
/// nothing: `host/tests/docs.rs` checks every command the docs show with it.
pub fn check_args(args: &[&str]) -> Result<(), clap::Error> {
    let argv = std::iter::once("vapgen").chain(args.iter().copied());
    Cli::try_parse_from(argv).map(|_| ())
}

/// Runs the `vapgen` command with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level.as_deref();
    if let Command::Run(args) = cli.command {
        init_logging_with(args.log_format, level, "info");
        return run(*args);
    }
    init_logging_with(LogFormat::Text, level, "warn");
    match cli.command {
        Command::Run(_) => unreachable!("handled above"),
        Command::Krm { module } => krm(&module),
        Command::Diff(args) => diff(&args),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "vapgen", &mut out);
            match emit(&String::from_utf8_lossy(&out)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
        Command::Plan(args) => plan(&args),
        Command::Test {
            paths,
            verbose,
            module,
        } => test(&paths, verbose, &module),
        Command::Describe { emit, module } => describe(emit.as_deref(), &module),
        Command::Verify(args) => verify(&args),
    }
}

/// Logs to stderr: `--log-level` when given, else `$RUST_LOG`, else `default`.
fn init_logging_with(format: LogFormat, level: Option<&str>, default: &str) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
    };
    // Colours only for a person at a terminal, never in files or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let (_rt, decider) = match args.module.load() {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let http_addr = if args.http_addr == "off" {
        None
    } else {
        match args.http_addr.parse() {
            Ok(a) => Some(a),
            Err(e) => return fail(format!("--http-addr {:?}: {e}", args.http_addr)),
        }
    };
    if args.lease_grace_seconds >= args.lease_duration_seconds {
        return fail("--lease-grace-seconds must be smaller than --lease-duration-seconds");
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "vapgen".into());
        format!("{host}-{}", std::process::id())
    });
    let cfg = crate::controller::RunConfig {
        settings: args.settings.settings(),
        // `..default()` keeps fields without a flag (e.g. test-only switches) at their defaults.
        #[allow(clippy::needless_update)]
        reconcile: crate::controller::reconcile::ReconcileConfig {
            manage_crds: args.manage_crds,
            wait_bound: std::time::Duration::from_secs(args.default_wait_for_vapb_generation),
            probe_interval: std::time::Duration::from_millis(500),
            exempt_namespaces: std::iter::once(args.lease_namespace.clone())
                .chain(args.exempt_namespace.iter().cloned())
                .collect(),
            scope_sync: args.sync_vap_enforcement_scope.then(|| {
                crate::controller::reconcile::ScopeSyncConfig {
                    exempt_namespaces: crate::snapshot::exempt_patterns(
                        &args.exempt_namespace,
                        &args.exempt_patterns.prefix,
                        &args.exempt_patterns.suffix,
                    ),
                    watch: crate::controller::feed::ScopeWatch {
                        webhook_config: args.validating_webhook_configuration_name.clone(),
                        config_namespace: args.gatekeeper_namespace.clone(),
                        config_name: "config".into(),
                    },
                }
            }),
            ..Default::default()
        },
        leader_elect: args.leader_elect,
        lease_name: args.lease_name.clone(),
        lease_namespace: args.lease_namespace.clone(),
        lease_duration: args.lease_duration_seconds,
        lease_grace: args.lease_grace_seconds,
        identity,
        http_addr,
        canary: args.readiness_canary,
        workers: args.workers,
        resync: std::time::Duration::from_secs(args.resync_seconds.max(10)),
        module_watch: match &args.module.module {
            Some(path) if args.module_watch_interval > 0.0 => {
                Some(crate::controller::module_watch::ModuleWatch {
                    path: path.clone(),
                    pin: args.module.module_sha256.clone(),
                    suite: args.module_suite.clone(),
                    interval: std::time::Duration::from_secs_f64(args.module_watch_interval),
                })
            }
            _ => None,
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result: Result<(), RunError> = rt.block_on(async move {
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        crate::controller::run(client, decider, cfg, shutdown_signal()).await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(chain(&e)),
    }
}

/// Why `vapgen run` could not connect or start.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// `--kubeconfig` could not be read.
    #[error("cannot read kubeconfig {}: {source}", .path.display())]
    ReadKubeconfig {
        /// `--kubeconfig`.
        path: PathBuf,
        /// What kube said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// `--kubeconfig` was read but gives no usable configuration.
    #[error("invalid kubeconfig {}: {source}", .path.display())]
    InvalidKubeconfig {
        /// `--kubeconfig`.
        path: PathBuf,
        /// What kube said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// `--context` could not be loaded from the default kubeconfig.
    #[error("cannot load the kubeconfig context: {0}")]
    Context(#[source] kube::config::KubeconfigError),
    /// Neither a kubeconfig nor an in-cluster configuration was found.
    #[error(
        "no cluster configuration found (give --kubeconfig, set KUBECONFIG, or run in a cluster): {0}"
    )]
    NoConfig(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client for {url}: {source}")]
    Client {
        /// The API server.
        url: String,
        /// What kube said.
        #[source]
        source: kube::Error,
    },
    /// The controller could not start.
    #[error(transparent)]
    Start(#[from] crate::controller::StartError),
    /// `--from-cluster` could not list the templates or constraints.
    #[error("cannot read the cluster's templates and constraints: {source}")]
    ReadCluster {
        /// What kube said.
        #[source]
        source: kube::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

async fn client(
    path: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<kube::Client, RunError> {
    let opts = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|source| {
                RunError::ReadKubeconfig {
                    path: p.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|source| RunError::InvalidKubeconfig {
                    path: p.to_path_buf(),
                    source,
                })?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(RunError::Context)?,
        None => kube::Config::infer().await.map_err(RunError::NoConfig)?,
    };
    let url = config.cluster_url.to_string();
    tracing::info!(server = %url, "using the Kubernetes API server");
    kube::Client::try_from(config).map_err(|source| RunError::Client { url, source })
}

/// An error and its sources, as `error: source: source of the source`. A source whose text
/// is already in the message is not repeated (most errors here put their source in their
/// message, as `vapgen`'s own do).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        next = source.source();
    }
    s
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Exit status of a process whose reader went away (128 + SIGPIPE, as a shell reports a tool
/// killed by SIGPIPE).
const BROKEN_PIPE_EXIT: u8 = 141;

/// Writes `text` to stdout. A reader that went away (`vapgen plan | head -1`) is not an
/// error worth a message: the process stops quietly with [`BROKEN_PIPE_EXIT`] (Rust ignores
/// SIGPIPE, and `print!` would panic instead). Other write errors are reported.
fn emit(text: &str) -> Result<(), ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(ExitCode::from(BROKEN_PIPE_EXIT))
        }
        Err(e) => Err(fail(format!("cannot write to stdout: {e}"))),
    }
}

fn plan(args: &PlanArgs) -> ExitCode {
    let (_rt, decider) = match args.module.load() {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let (objects, read_errors) = if args.from_cluster {
        match from_cluster(args) {
            Ok(objects) => (objects, Vec::new()),
            Err(e) => return fail(chain(&e)),
        }
    } else {
        let (objects, errors) = manifest::read_paths(&args.paths);
        (objects, errors.iter().map(ToString::to_string).collect())
    };
    let inputs = planner::classify(objects);
    let scope_sync = args
        .sync_vap_enforcement_scope
        .then(|| planner::ScopeSyncOptions {
            webhook_configuration_name: args.validating_webhook_configuration_name.clone(),
            config_namespace: args.gatekeeper_namespace.clone(),
            exempt_namespaces: crate::snapshot::exempt_patterns(
                &args.exempt_namespace,
                &args.exempt_patterns.prefix,
                &args.exempt_patterns.suffix,
            ),
        });
    let report = planner::plan_with_scope_sync(
        &decider,
        &args.settings.settings(),
        &inputs,
        scope_sync.as_ref(),
    );
    let is_binding =
        |o: &serde_json::Value| crate::snapshot::kind_of(o) == crate::render::VAPB_KIND;
    let objects: Vec<serde_json::Value> = report
        .objects(args.crds && !args.only_bindings)
        .into_iter()
        .filter(|o| {
            if args.only_bindings {
                is_binding(o)
            } else {
                args.bindings || !is_binding(o)
            }
        })
        .collect();
    let out = match args.output {
        Output::Yaml => render::to_yaml_stream(&objects),
        Output::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            format!("{list:#}\n")
        }
    };
    if let Err(code) = emit(&out) {
        return code;
    }
    let errors = report.errors();
    let summary = if args.no_summary {
        SummaryFormat::None
    } else {
        args.summary
    };
    match summary {
        SummaryFormat::Text => eprint!("{}", report.summary()),
        SummaryFormat::Json => {
            let mut doc = report.summary_json();
            doc["readErrors"] = serde_json::json!(read_errors);
            eprintln!("{doc:#}");
        }
        SummaryFormat::None => {}
    }
    if !args.crds {
        for k in &report.kinds {
            if let Some(p) = &k.policy {
                let fail = p.pointer("/spec/failurePolicy").and_then(|v| v.as_str());
                let param = p.pointer("/spec/paramKind/kind").and_then(|v| v.as_str());
                if let (Some("Fail") | None, Some(param)) = (fail, param) {
                    eprintln!(
                        "warning: policy {} has failurePolicy Fail and paramKind {param}: until that CRD exists, the API server denies every request the policy matches, in every namespace (Gatekeeper creates it; without Gatekeeper drop --crds=false)",
                        crate::snapshot::name_of(p)
                    );
                }
            }
        }
    }
    let mut refused = 0;
    if args.validate == Some(Validate::Server) {
        match validate_on_server(args, &objects) {
            Ok(refusals) => {
                for r in &refusals {
                    eprintln!(
                        "error: {}: refused by the API server (server-side dry-run): {}",
                        r.object, r.message
                    );
                }
                refused = refusals.len();
            }
            Err(e) => return fail(chain(&e)),
        }
    }
    for e in &read_errors {
        eprintln!("error: {e}");
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if errors.len() + read_errors.len() + refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `plan --from-cluster`: the cluster's templates (matching `--selector`) and constraints,
/// and with scope sync Gatekeeper's webhook configuration and `Config`.
fn from_cluster(args: &PlanArgs) -> Result<Vec<manifest::SourcedObject>, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(async {
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let mut objects = crate::diff::read_cluster_inputs(&client, args.selector.as_deref())
            .await
            .map_err(|source| RunError::ReadCluster { source })?;
        if args.sync_vap_enforcement_scope {
            objects.extend(
                crate::diff::read_cluster_scope_objects(
                    &client,
                    &args.validating_webhook_configuration_name,
                    &args.gatekeeper_namespace,
                )
                .await
                .map_err(|source| RunError::ReadCluster { source })?,
            );
        }
        Ok(objects)
    })
}

/// `plan --validate=server`: the objects, dry-run applied on the cluster of `--kubeconfig`.
fn validate_on_server(
    args: &PlanArgs,
    objects: &[serde_json::Value],
) -> Result<Vec<crate::validate::Refusal>, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(async {
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        Ok(crate::validate::server_dry_run(&client, objects).await)
    })
}

fn diff(args: &DiffArgs) -> ExitCode {
    use crate::diff::Change;
    let (_rt, decider) = match args.module.load() {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result: Result<_, RunError> = rt.block_on(async {
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let (inputs, read_errors) = if args.from_cluster {
            match crate::diff::read_cluster_inputs(&client, args.selector.as_deref()).await {
                Ok(objects) => (objects, Vec::new()),
                Err(e) => (
                    Vec::new(),
                    vec![format!(
                        "cannot read the cluster's templates and constraints: {e}"
                    )],
                ),
            }
        } else {
            let (objects, errors) = manifest::read_paths(&args.paths);
            (objects, errors.iter().map(ToString::to_string).collect())
        };
        let report = planner::plan(
            &decider,
            &args.settings.settings(),
            &planner::classify(inputs),
        );
        let diffs = crate::diff::diff(&client, &report.objects(args.crds)).await;
        Ok((report, read_errors, diffs))
    });
    let (report, read_errors, diffs) = match result {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let mut out = String::new();
    let (mut same, mut create, mut update, mut failed) = (0, 0, 0, 0);
    for d in &diffs {
        match &d.change {
            Ok(Change::Unchanged) => same += 1,
            Ok(Change::Create) => {
                create += 1;
                out.push_str(&format!(
                    "+ {}: does not exist, would be created\n",
                    d.object
                ));
            }
            Ok(Change::Update(lines)) => {
                update += 1;
                out.push_str(&format!("~ {}: would change\n", d.object));
                for l in lines {
                    out.push_str(&format!("    {l}\n"));
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", d.object);
            }
        }
    }
    out.push_str(&format!(
        "{} object(s): {same} unchanged, {create} to create, {update} to change\n",
        diffs.len()
    ));
    if let Err(code) = emit(&out) {
        return code;
    }
    let errors = report.errors();
    for e in &read_errors {
        eprintln!("error: {e}");
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if failed + errors.len() + read_errors.len() > 0 {
        ExitCode::from(2)
    } else if create + update > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn krm(module: &ModuleArgs) -> ExitCode {
    let (_rt, decider) = match module.load() {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut input) {
        return fail(format!("cannot read the ResourceList from stdin: {e}"));
    }
    let out = match crate::krm::run(&input, &decider) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(results) = out.resource_list["results"].as_array() {
        for r in results {
            let severity = r["severity"].as_str().unwrap_or("info");
            eprintln!("{severity}: {}", r["message"].as_str().unwrap_or(""));
        }
    }
    if let Err(code) = emit(&render::to_yaml_stream(std::slice::from_ref(
        &out.resource_list,
    ))) {
        return code;
    }
    if out.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn test(paths: &[PathBuf], verbose: bool, module: &ModuleArgs) -> ExitCode {
    let (_rt, decider) = match module.load() {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let outcome = suite::run_paths(&decider, paths);
    if let Err(code) = emit(&outcome.render(verbose)) {
        return code;
    }
    let cases = outcome.passed() + outcome.failed();
    if cases == 0 && outcome.errors() == 0 {
        eprintln!(
            "error: no test case found in the given paths (a suite file has kind DecisionSuite)"
        );
        return ExitCode::from(1);
    }
    if outcome.failed() > 0 || outcome.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    let (_rt, decider) = match args.module.load() {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let cfg = crate::verify::VerifyConfig {
        settings: args.settings.settings(),
        deny_timeout: std::time::Duration::from_secs(args.deny_timeout),
        admit_timeout: std::time::Duration::from_secs(args.admit_timeout),
        ..Default::default()
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let run = crate::verify::run_id();
    let report = rt.block_on(async {
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let verify = crate::verify::verify_run(&client, &decider, &args.suites, &cfg, &run);
        tokio::select! {
            r = verify => Ok::<_, RunError>(Some(r)),
            () = shutdown_signal() => {
                // Interrupted: delete what the run created (every name holds the run id).
                eprintln!("interrupted: deleting the objects of run {run}");
                for e in crate::verify::sweep(&client, &run).await {
                    eprintln!("error: {e}");
                }
                Ok(None)
            }
        }
    });
    let report = match report {
        Ok(Some(r)) => r,
        Ok(None) => return ExitCode::from(130),
        Err(e) => return fail(chain(&e)),
    };
    if let Err(code) = emit(&report.table()) {
        return code;
    }
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn describe(emit: Option<&std::path::Path>, module: &ModuleArgs) -> ExitCode {
    let (_rt, decider) = match module.load() {
        Ok(x) => x,
        Err(e) => return fail(chain(&e)),
    };
    let info = decider.info();
    println!("name:              {}", info.name);
    println!("version:           {}", info.version);
    println!(
        "interface:         vapgen:decider/decide@{}",
        info.interface_version
    );
    println!(
        "host supports:     vapgen:decider/decide@{} (semver-compatible)",
        crate::runtime::INTERFACE_VERSION
    );
    println!("sha256:            {}", decider.sha256());
    println!("size:              {} bytes", decider.size());
    println!("source:            {}", decider.source());
    if let Some(path) = emit {
        let bytes = match decider.source() {
            crate::runtime::ModuleSource::File(p) => std::fs::read(p),
            _ => Ok(crate::runtime::BUNDLED_MODULE.to_vec()),
        };
        if let Err(e) = bytes.and_then(|b| std::fs::write(path, b)) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        println!("written to:        {}", path.display());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn chain_shows_each_source_once() {
        let e = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(chain(&e), "outer: middle: disk on fire");
    }
}
