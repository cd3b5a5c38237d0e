//! gator's suite format (`kind: Suite`, `apiVersion: test.gatekeeper.sh/v1alpha1`) and reading it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::manifest::{self, SourcedObject};
use crate::snapshot;

use super::VerifyError;

/// A gator suite file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatorSuite {
    /// `test.gatekeeper.sh/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `Suite`.
    #[serde(default)]
    pub kind: String,
    /// `metadata.name`.
    #[serde(default)]
    pub metadata: Value,
    /// The tests.
    #[serde(default)]
    pub tests: Vec<GatorTest>,
}

/// A test: one template, one constraint, cases.
#[derive(Debug, Deserialize)]
pub struct GatorTest {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// The template file, relative to the suite.
    #[serde(default)]
    pub template: String,
    /// The constraint file, relative to the suite.
    #[serde(default)]
    pub constraint: String,
    /// The cases.
    #[serde(default)]
    pub cases: Vec<GatorCase>,
    /// `skip: true`.
    #[serde(default)]
    pub skip: bool,
}

/// A case: an object and what gator should find.
#[derive(Debug, Deserialize)]
pub struct GatorCase {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// The object file (an object or an `AdmissionReview`), relative to the suite.
    #[serde(default)]
    pub object: String,
    /// Referential data files (not supported: VAPs have no inventory).
    #[serde(default)]
    pub inventory: Vec<String>,
    /// The assertions.
    #[serde(default)]
    pub assertions: Vec<GatorAssertion>,
    /// `skip: true`.
    #[serde(default)]
    pub skip: bool,
}

/// `violations: yes|no|N`, optional `message`.
#[derive(Debug, Deserialize)]
pub struct GatorAssertion {
    /// `yes`, `no` or a count.
    #[serde(default)]
    pub violations: Value,
    /// A substring of the violation's message.
    #[serde(default)]
    pub message: Option<String>,
}

impl GatorCase {
    /// Whether the suite expects a violation, and the message it must contain, if any.
    pub fn expectation(&self) -> (bool, Option<String>) {
        let mut violated = false;
        let mut msg = None;
        for a in &self.assertions {
            let v = match &a.violations {
                Value::String(s) => s == "yes",
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_u64().unwrap_or(0) > 0,
                _ => false,
            };
            if v {
                violated = true;
                if a.message.is_some() {
                    msg = a.message.clone();
                }
            }
        }
        (violated, msg)
    }
}

/// Whether `obj` (a parsed YAML document) is a gator suite.
pub fn is_gator_suite(obj: &Value) -> bool {
    snapshot::kind_of(obj) == "Suite" && snapshot::group_of(obj) == "test.gatekeeper.sh"
}

/// Reads a gator suite file.
pub fn read_suite(path: &Path) -> Result<GatorSuite, VerifyError> {
    let doc = first_object(path, "empty file")?;
    if !is_gator_suite(&doc.object) {
        return Err(VerifyError::Input(format!(
            "{}: not a gator suite (apiVersion {:?}, kind {:?}); expected test.gatekeeper.sh/v1alpha1 Suite",
            path.display(),
            doc.object["apiVersion"].as_str().unwrap_or(""),
            snapshot::kind_of(&doc.object)
        )));
    }
    serde_json::from_value(doc.object)
        .map_err(|e| VerifyError::Input(format!("{}: invalid suite: {e}", path.display())))
}

/// The first object of the YAML file at `path` (`none`: the error's words when it has none).
fn first_object(path: &Path, none: &str) -> Result<SourcedObject, VerifyError> {
    let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (docs, errors) = manifest::parse_documents(&text, &path.display().to_string());
    if let Some(e) = errors.first() {
        return Err(VerifyError::Input(e.to_string()));
    }
    docs.into_iter()
        .next()
        .ok_or_else(|| VerifyError::Input(format!("{}: {none}", path.display())))
}

/// The suite files below `paths`: files as given; in directories, recursively, the
/// `*.yaml`/`*.yml` files whose document is a gator `Suite`. Sorted.
pub fn suite_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            for f in crate::suite::suite_files(std::slice::from_ref(p)) {
                let is_suite = std::fs::read_to_string(&f).is_ok_and(|t| {
                    manifest::parse_documents(&t, "")
                        .0
                        .first()
                        .is_some_and(|d| is_gator_suite(&d.object))
                });
                if is_suite {
                    out.push(f);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The object of a case's file, relative to its suite's directory.
pub(super) fn read_one(base: &Path, file: &str) -> Result<SourcedObject, VerifyError> {
    first_object(&base.join(file), "no object")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expectations_read_yes_no_and_counts() {
        let case = |a: Value| -> GatorCase {
            serde_json::from_value(json!({"name": "c", "object": "o.yaml", "assertions": a}))
                .unwrap()
        };
        assert_eq!(
            case(json!([{"violations": false}])).expectation(),
            (false, None)
        );
        assert_eq!(
            case(json!([{"violations": "no"}])).expectation(),
            (false, None)
        );
        assert_eq!(
            case(json!([{"violations": true}])).expectation(),
            (true, None)
        );
        assert_eq!(
            case(json!([{"violations": 2, "message": "m"}])).expectation(),
            (true, Some("m".into()))
        );
        assert_eq!(
            case(json!([{"violations": 0}])).expectation(),
            (false, None)
        );
    }
}
