//! The `vapgen` binary as a shell user runs it (no cluster needed).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `vapgen plan … | head -1`: the reader goes away after one line of a large output. vapgen
/// stops quietly with 141 (128 + SIGPIPE, as a shell reports a tool killed by SIGPIPE); it
/// used to panic ("failed printing to stdout: Broken pipe", exit 101).
#[test]
fn plan_into_a_closed_pipe_stops_quietly() {
    // Enough constraints that the output is far larger than a pipe's buffer (64 KiB).
    let dir = std::env::temp_dir().join(format!("vapgen-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(
        examples().join("requiredlabels/template.yaml"),
        dir.join("template.yaml"),
    )
    .expect("template");
    let mut f = std::fs::File::create(dir.join("constraints.yaml")).expect("constraints");
    for i in 0..2000 {
        writeln!(
            f,
            "---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\n\
             metadata:\n  name: c{i}\nspec:\n  match:\n    kinds:\n    - apiGroups: [\"\"]\n      \
             kinds: [\"Namespace\"]\n  parameters:\n    labels: [\"owner\"]"
        )
        .expect("write");
    }
    drop(f);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vapgen"))
        .args(["plan", "-f"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vapgen plan");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    // The reader is dropped here: the rest of the output meets a closed pipe.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!first.is_empty(), "a first line was printed");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
}
