//! `vapgen krm` as a kustomize exec KRM function (README "GitOps"), run by the real
//! standalone kustomize that tests/control-plane/build builds (`VAPGEN_KUSTOMIZE`; kubectl's
//! built-in kustomize has no `--enable-exec`).
//!
//! docs/gitops (the README's example) lists the bundled example's template and constraints
//! as resources and vapgen as a transformer; `kustomize build --enable-alpha-plugins --enable-exec` must print
//! the resources and exactly the objects `vapgen plan` prints for the same files. No API
//! server is needed; outside CI the test skips loudly without `VAPGEN_KUSTOMIZE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn kustomize() -> Option<PathBuf> {
    match std::env::var_os("VAPGEN_KUSTOMIZE").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "VAPGEN_KUSTOMIZE is not set but CI=true: source the env of tests/control-plane/up"
        ),
        None => {
            eprintln!(
                "\nSKIPPED: the KRM function test: VAPGEN_KUSTOMIZE is not set (run \
                 `eval \"$(tests/control-plane/up)\"` or ./test). Under CI=true this is a failure.\n"
            );
            None
        }
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/requiredlabels")
}

/// The objects of a YAML stream, without the annotations kustomize adds.
fn objects(yaml: &str) -> Vec<Value> {
    let (objects, errors) = vapgen::manifest::parse_documents(yaml, "out");
    assert!(errors.is_empty(), "{errors:?}");
    objects
        .into_iter()
        .map(|o| {
            let mut v = o.object;
            if let Some(a) = v
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                a.retain(|k, _| {
                    !k.starts_with("config.kubernetes.io/")
                        && !k.starts_with("internal.config.kubernetes.io/")
                });
                if a.is_empty() {
                    v["metadata"].as_object_mut().unwrap().remove("annotations");
                }
            }
            v
        })
        .collect()
}

/// A fresh kustomization in `dir`: `resources`, and vapgen as an exec transformer (a
/// two-line wrapper script, as exec functions take no arguments) with `spec`.
fn kustomization(name: &str, resources: &[&str], spec: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vapgen-krm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources: [{}]\ntransformers: [vapgen.yaml]\n",
            resources.join(", ")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("vapgen.yaml"),
        format!(
            "apiVersion: vapgen.dev/v1alpha1\nkind: VapgenPlan\nmetadata:\n  name: vapgen\n  \
             annotations:\n    config.kubernetes.io/function: |\n      exec:\n        \
             path: ./vapgen-krm\nspec: {spec}\n"
        ),
    )
    .unwrap();
    let script = dir.join("vapgen-krm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' krm\n",
            env!("CARGO_BIN_EXE_vapgen-under-test")
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    dir
}

/// `kustomize build --enable-alpha-plugins --enable-exec dir`.
fn build(kustomize: &Path, dir: &Path) -> std::process::Output {
    Command::new(kustomize)
        .args(["build", "--enable-alpha-plugins", "--enable-exec"])
        .arg(dir)
        .output()
        .expect("running kustomize")
}

fn key(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or("").to_owned(),
        o.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    )
}

#[test]
fn kustomize_runs_the_docs_gitops_example() {
    let Some(kustomize) = kustomize() else { return };
    // The README's example, as it stands in docs/gitops.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/gitops");
    let out = Command::new(&kustomize)
        .args(["build", "--enable-alpha-plugins", "--enable-exec"])
        .args(["--load-restrictor", "LoadRestrictionsNone"])
        .arg(&dir)
        .env("VAPGEN", env!("CARGO_BIN_EXE_vapgen-under-test"))
        .output()
        .expect("running kustomize");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kustomize build failed: {stderr}");
    let mut built = objects(&String::from_utf8(out.stdout).unwrap());

    let plan = Command::new(env!("CARGO_BIN_EXE_vapgen-under-test"))
        .args(["plan", "--summary=none", "-f"])
        .arg(examples().join("template.yaml"))
        .arg("-f")
        .arg(examples().join("constraints.yaml"))
        .output()
        .expect("running vapgen plan");
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let mut expected = objects(&String::from_utf8(plan.stdout).unwrap());
    expected.extend(objects(
        &(std::fs::read_to_string(examples().join("template.yaml")).unwrap()
            + "\n---\n"
            + &std::fs::read_to_string(examples().join("constraints.yaml")).unwrap()),
    ));
    // kustomize orders the output its own way (by kind); compare as sets.
    built.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(
        built.iter().map(key).collect::<Vec<_>>(),
        expected.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(built, expected);
}

#[test]
fn kustomize_fails_on_an_input_error() {
    let Some(kustomize) = kustomize() else { return };
    let dir = kustomization("bad", &["template.yaml", "constraint.yaml"], "{}");
    std::fs::copy(examples().join("template.yaml"), dir.join("template.yaml")).unwrap();
    std::fs::write(
        dir.join("constraint.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata:\n  \
         name: Not-Valid\nspec:\n  parameters:\n    labels: [a]\n",
    )
    .unwrap();
    let out = build(&kustomize, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kustomize build passed an invalid constraint name"
    );
    assert!(stderr.contains("not a valid object name"), "{stderr}");
}
