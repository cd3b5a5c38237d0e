//! The README's list of the tests that need no cluster matches the workspace: every test
//! target of every crate but `vapgen-tests` (whose test binaries need the test control plane),
//! as `cargo metadata` reports them. Fails when a test target is added, moved or removed and
//! the list is not.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The crate of the cluster tests.
const CLUSTER_CRATE: &str = "vapgen-tests";
const BEGIN: &str = "<!-- no-cluster tests: begin -->";
const END: &str = "<!-- no-cluster tests: end -->";

/// `(crate, test target)` of the lines `` * `crate`: `a`, `b` `` between the markers.
fn listed(readme: &str) -> BTreeSet<(String, String)> {
    let start = readme.find(BEGIN).expect("README has the begin marker") + BEGIN.len();
    let len = readme[start..]
        .find(END)
        .expect("README has the end marker");
    let mut out = BTreeSet::new();
    for line in readme[start..start + len].lines() {
        let Some((krate, targets)) = line
            .trim()
            .strip_prefix("* `")
            .and_then(|l| l.split_once("`:"))
        else {
            continue;
        };
        for target in targets.split('`').skip(1).step_by(2) {
            out.insert((krate.to_string(), target.to_string()));
        }
    }
    out
}

/// `(crate, test target)` of every integration test target outside the cluster crate.
fn in_workspace(root: &Path) -> BTreeSet<(String, String)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let mut set = BTreeSet::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let krate = pkg["name"].as_str().expect("package name");
        if krate == CLUSTER_CRATE {
            continue;
        }
        for t in pkg["targets"].as_array().expect("targets") {
            if t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
            {
                let name = t["name"].as_str().expect("target name");
                set.insert((krate.to_string(), name.to_string()));
            }
        }
    }
    set
}

#[test]
fn the_readme_lists_exactly_the_test_targets_that_need_no_cluster() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    let listed = listed(&readme);
    let actual = in_workspace(&root);
    assert!(
        actual.contains(&("vapgen".into(), "readme".into())),
        "cargo metadata sees this test: {actual:?}"
    );
    let missing: Vec<_> = actual.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&actual).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README.md's no-cluster list ({BEGIN}) is out of date: add {missing:?}, remove {stale:?}"
    );
}

#[test]
fn the_list_parser_reads_crates_and_targets() {
    let text = format!(
        "before\n{BEGIN}\n  * `a`: `x`, `y` (a note)\n  * `b`: `z`\nnot a line `q`\n{END}\n* `c`: `w`\n"
    );
    let got: Vec<(String, String)> = listed(&text).into_iter().collect();
    let want: Vec<(String, String)> = [("a", "x"), ("a", "y"), ("b", "z")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
}
