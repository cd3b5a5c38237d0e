//! vapgen as a library, outside the controller: load a decision module, plan the
//! ConstraintTemplates and Constraints of some YAML files, and print the decisions.
//!
//! ```text
//! cargo run -p vapgen --example embed -- examples/requiredlabels
//! cargo run -p vapgen --example embed -- --module my-module.wasm --sha256 <hex> template.yaml constraints.yaml
//! cargo run -p vapgen --example embed -- --objects examples/scoped-warn    # also print the objects
//! ```
//!
//! Only the crate's public API is used: [`Runtime`] (one per process: engine, limits, epoch
//! ticker, compile cache) loads a [`Decider`] (one checked module; cheap to clone, safe to
//! share), whose `plan_kind` runs one kind in a fresh sandboxed instance and returns a
//! [`KindPlan`]. `snapshot` turns objects into the module's inputs; `render` turns a plan into
//! Kubernetes objects.

use std::path::PathBuf;
use std::process::ExitCode;

use vapgen::model::{BindingOutcome, KindPlan, PolicyOutcome, Settings};
use vapgen::{Decider, Runtime, RuntimeConfig, manifest, planner, render, snapshot};

const USAGE: &str = "usage: embed [--module PATH [--sha256 HEX]] [--objects] FILE_OR_DIR...";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut module: Option<PathBuf> = None;
    let mut pin: Option<String> = None;
    let mut objects = false;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--module" => module = Some(args.next().ok_or(USAGE)?.into()),
            "--sha256" => pin = Some(args.next().ok_or(USAGE)?),
            "--objects" => objects = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}; {USAGE}").into()),
            s => paths.push(PathBuf::from(s)),
        }
    }
    if paths.is_empty() {
        return Err(USAGE.into());
    }

    // 1. One runtime per process; then load and check a module (no imports, a compatible
    //    `vapgen:decider/decide@0.1.x` export, the sha256 pin when one is given).
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let decider: Decider = match &module {
        Some(path) => runtime.load_file(path, pin.as_deref())?,
        None => runtime.load_bundled()?,
    };
    let info = decider.info();
    println!(
        "module {} {} (interface {}), sha256 {}, {} bytes, from {}",
        info.name,
        info.version,
        info.interface_version,
        decider.sha256(),
        decider.size(),
        decider.source()
    );

    // 2. Read the objects: templates and constraints, from files or directories.
    let (objs, errors) = manifest::read_paths(&paths);
    if let Some(e) = errors.first() {
        return Err(e.to_string().into());
    }
    let templates: Vec<_> = objs
        .iter()
        .filter(|o| snapshot::is_template(&o.object))
        .collect();
    if templates.is_empty() {
        return Err("no ConstraintTemplate in the input".into());
    }

    // 3. Plan each kind: the template as JSON and all constraints of its kind.
    let settings = Settings::default(); // Gatekeeper's default flags
    for t in templates {
        let kind = snapshot::template_kind(&t.object).unwrap_or_default();
        let constraints: Vec<_> = objs
            .iter()
            .filter(|o| snapshot::is_constraint(&o.object) && snapshot::kind_of(&o.object) == kind)
            .map(|o| snapshot::extract_constraint(&o.object))
            .collect();
        let plan = decider.plan_kind(&settings, &t.object.to_string(), &constraints)?;
        print_plan(&plan);
        if objects {
            print_objects(&plan)?;
        }
    }
    Ok(())
}

fn print_plan(plan: &KindPlan) {
    println!(
        "\ntemplate {} (kind {}): {}",
        plan.template_name,
        plan.kind,
        planner::decision_text(&plan.decision)
    );
    match &plan.policy {
        PolicyOutcome::Desired(_) => println!("  policy {}: desired", plan.policy_name),
        PolicyOutcome::None => println!("  policy {}: must not exist", plan.policy_name),
        PolicyOutcome::TransformError(e) => println!("  policy {}: ERROR {e}", plan.policy_name),
    }
    for w in &plan.warnings {
        println!("  warning: {w}");
    }
    for b in &plan.bindings {
        println!(
            "  constraint {}: {}",
            b.constraint,
            planner::binding_text(b)
        );
        for w in &b.warnings {
            println!("    warning: {w}");
        }
    }
}

fn print_objects(plan: &KindPlan) -> Result<(), String> {
    let mut out = Vec::new();
    if let PolicyOutcome::Desired(json) = &plan.policy {
        out.push(render::policy_object(json, &plan.policy_name).map_err(|e| e.to_string())?);
    }
    for b in &plan.bindings {
        if let BindingOutcome::Bind(spec) = &b.outcome {
            out.push(render::binding_object(spec, None).map_err(|e| e.to_string())?);
        }
    }
    print!("{}", render::to_yaml_stream(&out));
    Ok(())
}
