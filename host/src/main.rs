//! The `vapgen` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vapgen::cli::{ModuleArgs, SettingsArgs};
use vapgen::{manifest, planner, render, suite};

/// Race-free Gatekeeper VAP/VAPB generation with a sandboxed wasm decision module.
#[derive(Parser, Debug)]
#[command(name = "vapgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render the VAPs and bindings for templates and constraints read from YAML files.
    ///
    /// Prints the objects as a YAML stream that `kubectl apply -f -` accepts, then a summary of
    /// decisions, warnings and errors as YAML comments. Exits 1 when any input has an error.
    Plan {
        /// Files or directories (searched recursively for *.yaml, *.yml, *.json).
        #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Print only the objects, not the summary.
        #[arg(long)]
        no_summary: bool,
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(flatten)]
        module: ModuleArgs,
    },
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
    /// Print the decision module's identity, interface version and sha256.
    Describe {
        /// Also write the module's bytes to this file (e.g. to ship the bundled module).
        #[arg(long, value_name = "PATH")]
        emit: Option<PathBuf>,
        #[command(flatten)]
        module: ModuleArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Plan {
            paths,
            no_summary,
            settings,
            module,
        } => plan(&paths, no_summary, &settings, &module),
        Command::Test {
            paths,
            verbose,
            module,
        } => test(&paths, verbose, &module),
        Command::Describe { emit, module } => describe(emit.as_deref(), &module),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn plan(
    paths: &[PathBuf],
    no_summary: bool,
    settings: &SettingsArgs,
    module: &ModuleArgs,
) -> ExitCode {
    let (_rt, decider) = match module.load() {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let (objects, read_errors) = manifest::read_paths(paths);
    let inputs = planner::classify(objects);
    let report = planner::plan(&decider, &settings.settings(), &inputs);
    print!("{}", render::to_yaml_stream(&report.objects()));
    if !no_summary {
        println!("---");
        for line in report.summary().lines() {
            println!("# {line}");
        }
        for e in &read_errors {
            println!("# ERROR: {e}");
        }
    }
    for e in &read_errors {
        eprintln!("error: {e}");
    }
    if report.error_count() + read_errors.len() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn test(paths: &[PathBuf], verbose: bool, module: &ModuleArgs) -> ExitCode {
    let (_rt, decider) = match module.load() {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let outcome = suite::run_paths(&decider, paths);
    print!("{}", outcome.render(verbose));
    if outcome.failed() > 0 || outcome.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn describe(emit: Option<&std::path::Path>, module: &ModuleArgs) -> ExitCode {
    let (_rt, decider) = match module.load() {
        Ok(x) => x,
        Err(e) => return fail(e),
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
        vapgen::runtime::INTERFACE_VERSION
    );
    println!("sha256:            {}", decider.sha256());
    println!("size:              {} bytes", decider.size());
    println!("source:            {}", decider.source());
    if let Some(path) = emit {
        let bytes = match decider.source() {
            vapgen::runtime::ModuleSource::File(p) => std::fs::read(p),
            _ => Ok(vapgen::runtime::BUNDLED_MODULE.to_vec()),
        };
        if let Err(e) = bytes.and_then(|b| std::fs::write(path, b)) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        println!("written to:        {}", path.display());
    }
    ExitCode::SUCCESS
}
