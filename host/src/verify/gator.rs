//! gator's suite format (`kind: Suite`, `apiVersion: test.gatekeeper.sh/v1alpha1`) and reading it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

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

/// The object of a file named by a suite (a template, a constraint or a case object),
/// relative to the suite's directory `base`.
pub fn read_one(base: &Path, file: &str) -> Result<SourcedObject, VerifyError> {
    first_object(&base.join(file), "no object")
}

/// What a case sends to the API server, before `verify` names, labels and places the object.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseRequest {
    /// The object of a create, or the object an update starts from.
    pub object: Value,
    /// The request.
    pub op: CaseOp,
}

/// The request of a case.
#[derive(Clone, Debug, PartialEq)]
pub enum CaseOp {
    /// A dry-run create of the object.
    Create,
    /// An UPDATE `AdmissionReview`: the object is created first, then a dry-run update to the
    /// review's object, or (`None`: the review has no `oldObject`) one label added.
    Update(Option<Value>),
    /// A Pod with `spec.ephemeralContainers`: the Pod is created without them first, then a
    /// dry-run update of its `ephemeralcontainers` subresource adds these (what `kubectl debug`
    /// sends; they cannot be set on create).
    EphemeralContainers(Value),
}

/// The container a Pod gets when an ephemeral-containers case has none (a Pod needs one):
/// unprivileged, all capabilities dropped, read-only root, RuntimeDefault seccomp, non-root.
fn stand_in_container() -> Value {
    json!({
        "name": "vapgen-stand-in",
        "image": "registry.k8s.io/pause:3.10",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// Why a case sends nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CaseProblem {
    /// A real API server cannot run the case (the reason says why).
    #[error("{0}")]
    Skip(String),
    /// The case is broken (its file cannot be read, it has no object).
    #[error("{0}")]
    Fail(String),
}

/// The request of `case` (suite directory `base`): the object of its file, or for an
/// `AdmissionReview` the create or update it stands for. Refused: `skip: true`, `inventory`
/// (a VAP cannot read other objects), and operations other than CREATE and UPDATE (the
/// generated policies match only those).
pub fn case_request(base: &Path, case: &GatorCase) -> Result<CaseRequest, CaseProblem> {
    if case.skip {
        return Err(CaseProblem::Skip("skip: true in the suite".into()));
    }
    if !case.inventory.is_empty() {
        return Err(CaseProblem::Skip(
            "inventory (referential data): a VAP cannot read other objects".into(),
        ));
    }
    let mut object = read_one(base, &case.object)
        .map_err(|e| CaseProblem::Fail(e.to_string()))?
        .object;
    let mut op = CaseOp::Create;
    if snapshot::kind_of(&object) == "AdmissionReview" {
        let field = |o: &Value, p: &str| o.pointer(p).filter(|v| !v.is_null()).cloned();
        match object
            .pointer("/request/operation")
            .and_then(Value::as_str)
            .unwrap_or("")
        {
            "UPDATE" => {
                let new = field(&object, "/request/object").unwrap_or(Value::Null);
                match field(&object, "/request/oldObject") {
                    Some(old) => {
                        op = CaseOp::Update(Some(new));
                        object = old;
                    }
                    None => {
                        op = CaseOp::Update(None);
                        object = new;
                    }
                }
            }
            "CREATE" | "" => object = field(&object, "/request/object").unwrap_or(Value::Null),
            other => {
                return Err(CaseProblem::Skip(format!(
                    "an AdmissionReview of operation {other}: generated policies match CREATE and UPDATE"
                )));
            }
        }
    }
    if !object.is_object() {
        return Err(CaseProblem::Fail("the case has no object".into()));
    }
    let ephemeral = object
        .pointer_mut("/spec")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("ephemeralContainers"));
    if let Some(containers) = ephemeral {
        if op != CaseOp::Create {
            return Err(CaseProblem::Skip(
                "an UPDATE with ephemeral containers: they can only be added, through pods/ephemeralcontainers"
                    .into(),
            ));
        }
        op = CaseOp::EphemeralContainers(containers);
        // A Pod needs a container: suites' ephemeral cases often have none. The stand-in is
        // built to pass the library's pod-security checks, so that the verdict is the
        // ephemeral containers'.
        let spec = &mut object["spec"];
        if spec["containers"].as_array().is_none_or(Vec::is_empty) {
            spec["containers"] = json!([stand_in_container()]);
        }
    }
    Ok(CaseRequest { object, op })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `case_request` of a case whose object file holds `object`.
    fn request_of(object: &Value) -> Result<CaseRequest, CaseProblem> {
        let dir = std::env::temp_dir().join(format!("vapgen-gator-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = format!(
            "case-{}.json",
            object["metadata"]["name"].as_str().unwrap_or("x")
        );
        std::fs::write(dir.join(&file), object.to_string()).unwrap();
        let case: GatorCase = serde_json::from_value(json!({"name": "c", "object": file})).unwrap();
        let r = case_request(&dir, &case);
        let _ = std::fs::remove_file(dir.join(&file));
        r
    }

    #[test]
    fn requests_are_creates_updates_or_ephemeral_container_updates() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "a", "image": "i"}]}});
        assert_eq!(request_of(&pod).unwrap().op, CaseOp::Create);

        let new = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"x": "y"}}});
        let review = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "metadata": {"name": "r"},
                            "request": {"operation": "UPDATE", "object": new, "oldObject": pod}});
        let r = request_of(&review).unwrap();
        assert_eq!((r.object, r.op), (pod.clone(), CaseOp::Update(Some(new))));

        let delete = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "metadata": {"name": "d"},
                            "request": {"operation": "DELETE", "oldObject": pod}});
        assert!(matches!(request_of(&delete), Err(CaseProblem::Skip(_))));

        // Ephemeral containers only: they go to the subresource update, and the Pod gets the
        // stand-in container it needs to exist.
        let eph = json!([{"name": "debug", "image": "busybox"}]);
        let only = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e"},
                          "spec": {"ephemeralContainers": eph}});
        let r = request_of(&only).unwrap();
        assert_eq!(r.op, CaseOp::EphemeralContainers(eph));
        assert_eq!(
            r.object["spec"],
            json!({"containers": [stand_in_container()]})
        );
    }

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
