//! Reading Kubernetes objects from YAML (multi-document files, directories recursively).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// An object read from a file, with where it came from.
#[derive(Clone, Debug)]
pub struct SourcedObject {
    /// The object as JSON.
    pub object: Value,
    /// `path:document-index` for messages.
    pub origin: String,
}

/// A file or document that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A path that holds no object.
    #[error(
        "{path}: no object found (an empty file or document, or no *.yaml, *.yml or *.json file)"
    )]
    Empty {
        /// The path as given.
        path: PathBuf,
    },
    /// A YAML document did not parse.
    #[error("{origin}: not valid YAML: {message}")]
    Yaml {
        /// `path:document`.
        origin: String,
        /// The parser's message.
        message: String,
    },
}

/// The path that means standard input (`-f -`, as kubectl).
pub const STDIN: &str = "-";

/// Reads every `*.yaml`/`*.yml`/`*.json` below each path (files are read whatever their
/// extension); [`STDIN`] reads standard input (once, whatever how often it is given), with
/// origin `<stdin>`. Empty documents are skipped; `kind: List` objects are flattened.
/// Errors in one file do not stop the others: they are returned next to the objects.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<SourcedObject>, Vec<ManifestError>) {
    read_paths_with(paths, &mut std::io::stdin().lock())
}

/// [`read_paths`] with `stdin` as standard input.
///
/// A path that yields no object at all (an empty directory, a 0-byte file, a directory of
/// other files) is an error: a typo or a wrong directory must not look like a clean run.
pub fn read_paths_with(
    paths: &[PathBuf],
    stdin: &mut dyn std::io::Read,
) -> (Vec<SourcedObject>, Vec<ManifestError>) {
    let mut errors = Vec::new();
    let mut objects = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stdin_read = false;
    for p in paths {
        let before = objects.len();
        let errors_before = errors.len();
        if p.as_os_str() == STDIN {
            if std::mem::replace(&mut stdin_read, true) {
                continue;
            }
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => {
                    let (mut o, mut e) = parse_documents(&text, "<stdin>");
                    objects.append(&mut o);
                    errors.append(&mut e);
                }
                Err(source) => errors.push(ManifestError::Io {
                    path: PathBuf::from(STDIN),
                    source,
                }),
            }
        } else {
            let mut files = Vec::new();
            collect_files(p, true, &mut files, &mut errors);
            files.sort();
            for f in files {
                if !seen.insert(f.clone()) {
                    continue;
                }
                match std::fs::read_to_string(&f) {
                    Ok(text) => {
                        let origin = f.display().to_string();
                        let (mut o, mut e) = parse_documents(&text, &origin);
                        objects.append(&mut o);
                        errors.append(&mut e);
                    }
                    Err(source) => errors.push(ManifestError::Io { path: f, source }),
                }
            }
        }
        if objects.len() == before && errors.len() == errors_before {
            errors.push(ManifestError::Empty { path: p.clone() });
        }
    }
    (objects, errors)
}

fn collect_files(
    p: &Path,
    explicit: bool,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<ManifestError>,
) {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
            Ok(rd) => {
                for entry in rd.flatten() {
                    collect_files(&entry.path(), false, files, errors);
                }
            }
            Err(source) => errors.push(ManifestError::Io {
                path: p.to_path_buf(),
                source,
            }),
        },
        Ok(_) => {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if explicit || matches!(ext, "yaml" | "yml" | "json") {
                files.push(p.to_path_buf());
            }
        }
        Err(source) => errors.push(ManifestError::Io {
            path: p.to_path_buf(),
            source,
        }),
    }
}

/// Parses a multi-document YAML (or JSON) text the way kubectl reads it: YAML 1.1 scalars
/// (plain `yes`/`no`/`on`/`off`/`y`/`n` are booleans, `0777` is octal; quoted they stay
/// strings), merge keys, duplicate keys refused. Empty documents are skipped; origins number
/// the other documents from 1.
///
/// The parser's budget (against alias bombs) scales with the input, so a file of 10,000
/// constraints is read whole.
pub fn parse_documents(text: &str, origin: &str) -> (Vec<SourcedObject>, Vec<ManifestError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let scaled = text.len().max(1 << 20);
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        budget: serde_saphyr::budget! {
            max_documents: scaled / 4,
            max_nodes: scaled,
            max_events: scaled * 2,
        },
    };
    match serde_saphyr::from_multiple_with_options::<Value>(text, options) {
        Ok(docs) => {
            for (i, v) in docs.into_iter().enumerate() {
                if !v.is_null() {
                    flatten(v, &format!("{origin}#{}", i + 1), &mut objects);
                }
            }
        }
        Err(e) => errors.push(ManifestError::Yaml {
            origin: origin.to_string(),
            message: e.to_string(),
        }),
    }
    (objects, errors)
}

fn flatten(v: Value, origin: &str, out: &mut Vec<SourcedObject>) {
    let is_list = v.get("kind").and_then(Value::as_str) == Some("List")
        && v.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = v.get("items") {
            for (j, item) in items.iter().enumerate() {
                flatten(item.clone(), &format!("{origin}[{j}]"), out);
            }
        }
    } else {
        out.push(SourcedObject {
            object: v,
            origin: origin.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_empty_docs_and_lists() {
        let text = "---\na: 1\n---\n---\nkind: List\nitems:\n- {b: 2}\n- {c: 3}\n";
        let (objs, errs) = parse_documents(text, "x.yaml");
        assert!(errs.is_empty());
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[1].origin, "x.yaml#2[0]");
    }

    #[test]
    fn yaml_1_1_scalars_as_kubectl_reads_them() {
        let text = "a: yes\nb: \"yes\"\nc: off\nd: Y\ne: 0777\nf: true\n";
        let (objs, errs) = parse_documents(text, "x.yaml");
        assert!(errs.is_empty(), "{errs:?}");
        let o = &objs[0].object;
        assert_eq!(o["a"], Value::Bool(true));
        assert_eq!(o["b"], Value::String("yes".into()));
        assert_eq!(o["c"], Value::Bool(false));
        assert_eq!(o["d"], Value::Bool(true));
        assert_eq!(o["e"], Value::from(511));
        assert_eq!(o["f"], Value::Bool(true));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let (_, errs) = parse_documents("a: 1\na: 2\n", "dup.yaml");
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn ten_thousand_documents_fit_the_budget() {
        let text: String = (0..10_000)
            .map(|i| format!("---\nkind: K\nmetadata: {{name: c{i}}}\nspec: {{a: [1, 2]}}\n"))
            .collect();
        let (objs, errs) = parse_documents(&text, "big.yaml");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(objs.len(), 10_000);
    }

    #[test]
    fn bad_yaml_is_reported_with_its_origin() {
        let (_, errs) = parse_documents("a: [1,\n", "bad.yaml");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with("bad.yaml: not valid YAML"));
    }
}
