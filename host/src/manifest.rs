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
    /// A YAML document did not parse.
    #[error("{origin}: not valid YAML: {message}")]
    Yaml {
        /// `path:document`.
        origin: String,
        /// The parser's message.
        message: String,
    },
}

/// Reads every `*.yaml`/`*.yml`/`*.json` below each path (files are read whatever their
/// extension). Empty documents are skipped; `kind: List` objects are flattened.
/// Errors in one file do not stop the others: they are returned next to the objects.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<SourcedObject>, Vec<ManifestError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        collect_files(p, true, &mut files, &mut errors);
    }
    files.sort();
    files.dedup();
    let mut objects = Vec::new();
    for f in files {
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

/// Parses a multi-document YAML (or JSON) text.
pub fn parse_documents(text: &str, origin: &str) -> (Vec<SourcedObject>, Vec<ManifestError>) {
    use serde::Deserialize;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = format!("{origin}#{}", i + 1);
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => flatten(v, &origin, &mut objects),
            Err(e) => {
                errors.push(ManifestError::Yaml {
                    origin,
                    message: e.to_string(),
                });
                // serde_yaml cannot resume after a syntax error inside a stream.
                break;
            }
        }
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
        assert_eq!(objs[1].origin, "x.yaml#3[0]");
    }

    #[test]
    fn bad_yaml_is_reported_with_its_origin() {
        let (_, errs) = parse_documents("a: [1,\n", "bad.yaml");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("bad.yaml#1: not valid YAML")
        );
    }
}
