//! Docs are code: every fenced block of README.md and docs/*.md that is a command or a code
//! snippet is checked against what CI builds and runs (no cluster needed).
//!
//! * `rust` blocks: each line (trimmed, comments kept) must appear in the compiled file the
//!   text right after the block links to (modules/skeleton, host/tests/api_example.rs, …).
//! * `js` blocks: the file they point to must exist (the Node host, run by ./test; the
//!   snippet itself is not executed).
//! * `sh`/`bash` blocks: every `vapgen …` and `cargo run -p vapgen -- …` command is parsed
//!   by vapgen's own command line ([`vapgen::app::check_args`]; `<placeholders>`, `...` and
//!   `[optional]` parts are filled in or dropped); every `cargo run -p P --example E` names an
//!   example that exists; every path into the repository (examples/, docs/, deploy/, tests/…)
//!   exists. What the commands do is run by other tests: `plan -f examples/` (cli.rs), the
//!   kustomize example (tests/tests/krm.rs), the deploy commands (tests/tests/deploy.rs),
//!   `./test` itself.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Block {
    file: String,
    line: usize,
    lang: String,
    text: String,
    /// The lines right after the block (its explanation and links).
    after: String,
}

fn blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(root().join(file)).expect(file);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(lang) = lines[i].strip_prefix("```").filter(|l| !l.is_empty()) {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && !lines[end].starts_with("```") {
                end += 1;
            }
            out.push(Block {
                file: file.to_string(),
                line: start,
                lang: lang.trim().to_string(),
                text: lines[start..end.min(lines.len())].join("\n"),
                after: lines[(end + 1).min(lines.len())..(end + 6).min(lines.len())].join("\n"),
            });
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn doc_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Repository paths linked or quoted in `text`: `(../x/y)`, `` `x/y` ``.
fn linked_files(text: &str, from: &str) -> Vec<PathBuf> {
    let base = root().join(from).parent().unwrap().to_path_buf();
    let mut out = Vec::new();
    for part in text.split(['(', ')', '`', '[', ']', ' ']) {
        let p = part.trim_end_matches([',', '.', ':']);
        if p.contains('/') && (p.ends_with(".rs") || p.ends_with(".mjs") || p.ends_with(".js")) {
            for candidate in [base.join(p), root().join(p)] {
                if candidate.is_file() {
                    out.push(candidate);
                }
            }
        }
    }
    out
}

#[test]
fn rust_and_js_snippets_are_compiled_files() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        for b in blocks(&file) {
            if b.lang != "rust" && b.lang != "js" {
                continue;
            }
            let targets = linked_files(&b.after, &b.file);
            let Some(target) = targets.first() else {
                problems.push(format!(
                    "{}:{}: a {} block without a link to the file that compiles it right after it",
                    b.file, b.line, b.lang
                ));
                continue;
            };
            checked += 1;
            if b.lang == "js" {
                continue;
            }
            let compiled = std::fs::read_to_string(target).unwrap();
            let lines: std::collections::HashSet<&str> = compiled.lines().map(str::trim).collect();
            for l in b.text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !lines.contains(l) {
                    problems.push(format!(
                        "{}:{}: the line {l:?} is not in {}",
                        b.file,
                        b.line,
                        target.display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 3, "only {checked} snippets found");
}

/// The commands of one shell block: continuation lines joined, comments dropped, split at
/// `&&`, `;` and `|`.
fn commands(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = match line.find(" #") {
            Some(i) => &line[..i],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        for c in line
            .split("&&")
            .flat_map(|c| c.split(';'))
            .flat_map(|c| c.split('|'))
        {
            let c = c.trim();
            if !c.is_empty() {
                out.push(c.to_string());
            }
        }
    }
    out
}

/// The arguments of a `vapgen` invocation in `command`, if it is one.
fn vapgen_args(command: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let rest: &[&str] = if words.first() == Some(&"vapgen") {
        &words[1..]
    } else if words.starts_with(&["cargo", "run"])
        && words.windows(2).any(|w| w == ["-p", "vapgen"])
        && !words.contains(&"--example")
    {
        let i = words.iter().position(|w| *w == "--")?;
        &words[i + 1..]
    } else {
        return None;
    };
    let mut args = Vec::new();
    for w in rest {
        let w = w.trim_matches(|c| c == '[' || c == ']');
        match w {
            "..." | "" => {}
            "<hex>" => args.push("0".repeat(64)),
            w if w.starts_with('<') => args.push("x".into()),
            w => args.push(w.to_string()),
        }
    }
    Some(args)
}

#[test]
fn documented_commands_parse_and_name_what_exists() {
    let mut problems = Vec::new();
    let mut parsed = 0;
    for file in doc_files() {
        for b in blocks(&file) {
            if b.lang != "sh" && b.lang != "bash" {
                continue;
            }
            for c in commands(&b.text) {
                let at = format!("{}:{}: {c}", b.file, b.line);
                if let Some(args) = vapgen_args(&c) {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    // `vapgen run …` with elided flags: parse what is shown.
                    if let Err(e) = vapgen::app::check_args(&args) {
                        problems.push(format!("{at}\n  {e}"));
                    }
                    parsed += 1;
                }
                let words: Vec<&str> = c.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "--example") {
                    let package = words
                        .windows(2)
                        .find(|w| w[0] == "-p")
                        .map_or("vapgen", |w| w[1]);
                    let dir = match package {
                        "vapgen" => "host",
                        "vapgen-tests" => "tests",
                        other => other,
                    };
                    let example = words.get(i + 1).copied().unwrap_or("");
                    if !root()
                        .join(dir)
                        .join("examples")
                        .join(format!("{example}.rs"))
                        .is_file()
                    {
                        problems.push(format!("{at}\n  no example {example} in {dir}/examples"));
                    }
                }
                for w in &words {
                    let w = w.trim_matches(|c| c == '"' || c == '\'');
                    let repo_path = [
                        "examples/",
                        "docs/",
                        "deploy/",
                        "tests/",
                        "embed/",
                        "wit/",
                        "modules/",
                        "host/",
                    ]
                    .iter()
                    .any(|p| w.starts_with(p));
                    let relative_to_cwd = b.text.contains("cd ");
                    if repo_path && !relative_to_cwd && !w.contains('*') && !root().join(w).exists()
                    {
                        problems.push(format!("{at}\n  {w} does not exist"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(parsed >= 8, "only {parsed} vapgen commands found");
}

#[test]
fn the_parser_refuses_what_vapgen_refuses() {
    // The check can fail: a flag that does not exist, or a subcommand, is refused.
    assert!(vapgen::app::check_args(&["plan", "-f", "examples/"]).is_ok());
    assert!(vapgen::app::check_args(&["plan", "--no-such-flag", "-f", "x"]).is_err());
    assert!(vapgen::app::check_args(&["frobnicate"]).is_err());
    assert_eq!(
        vapgen_args("cargo run -p vapgen -- plan -f examples/ # c"),
        None.or(Some(vec![
            "plan".into(),
            "-f".into(),
            "examples/".into(),
            "#".into(),
            "c".into()
        ]))
    );
    assert_eq!(
        commands("a && b # c\nd \\\n e | f"),
        ["a", "b", "d   e", "f"]
    );
}
