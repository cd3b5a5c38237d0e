//! Turning a plan into Kubernetes objects (JSON), ready for server-side apply or YAML output.

use serde_json::{Map, Value, json};
use vapgen_guest::model::BindingSpec;

/// API version of the generated objects.
pub const ADMISSION_V1: &str = "admissionregistration.k8s.io/v1";
/// Kind of a generated policy.
pub const VAP_KIND: &str = "ValidatingAdmissionPolicy";
/// Kind of a generated binding.
pub const VAPB_KIND: &str = "ValidatingAdmissionPolicyBinding";

/// The object that controls a generated object (its controller owner reference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// e.g. `constraints.gatekeeper.sh/v1beta1`.
    pub api_version: String,
    /// e.g. `K8sRequiredLabels`.
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// Owner UID.
    pub uid: String,
}

impl Owner {
    /// The owner of a binding: the constraint, at the version Gatekeeper uses.
    pub fn constraint(kind: &str, name: &str, uid: &str) -> Self {
        Owner {
            api_version: "constraints.gatekeeper.sh/v1beta1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// The owner reference as JSON (`controller: true`, `blockOwnerDeletion: true`).
    pub fn to_reference(&self) -> Value {
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        })
    }
}

/// Builds the binding object for a plan's [`BindingSpec`]. The owner reference is set when an
/// owner with a UID is known (offline plans have none).
pub fn binding_object(spec: &BindingSpec, owner: Option<&Owner>) -> Result<Value, RenderError> {
    let mut metadata = Map::new();
    metadata.insert("name".into(), Value::String(spec.name.clone()));
    if let Some(o) = owner.filter(|o| !o.uid.is_empty()) {
        metadata.insert(
            "ownerReferences".into(),
            Value::Array(vec![o.to_reference()]),
        );
    }
    let mut match_resources = Map::new();
    if let Some(s) = &spec.object_selector {
        match_resources.insert(
            "objectSelector".into(),
            parse_selector(s, "objectSelector")?,
        );
    }
    if let Some(s) = &spec.namespace_selector {
        match_resources.insert(
            "namespaceSelector".into(),
            parse_selector(s, "namespaceSelector")?,
        );
    }
    let actions: Vec<Value> = spec
        .validation_actions
        .iter()
        .map(|a| Value::String(a.as_str().into()))
        .collect();
    Ok(json!({
        "apiVersion": ADMISSION_V1,
        "kind": VAPB_KIND,
        "metadata": Value::Object(metadata),
        "spec": {
            "policyName": spec.policy_name,
            "paramRef": {"name": spec.param_name, "parameterNotFoundAction": "Allow"},
            "validationActions": actions,
            "matchResources": Value::Object(match_resources),
        }
    }))
}

/// What is wrong with an object a decision module returned (the module is untrusted input:
/// its text is checked before it becomes an API object).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A selector (`objectSelector`, `namespaceSelector`) or the policy is not JSON.
    #[error("the module returned a {what} that is not JSON: {source}")]
    NotJson {
        /// What it was meant to be.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A selector that is JSON but not an object.
    #[error("the module returned a {0} that is not an object")]
    NotAnObject(&'static str),
    /// The policy is not a v1 ValidatingAdmissionPolicy.
    #[error("the module returned {api_version:?}/{kind:?}, expected {ADMISSION_V1} {VAP_KIND}")]
    WrongKind {
        /// Its `apiVersion`.
        api_version: Option<String>,
        /// Its `kind`.
        kind: Option<String>,
    },
    /// The policy's name is not the one the plan gave.
    #[error("the module returned a policy named {found:?}, expected {expected:?}")]
    WrongName {
        /// Its `metadata.name`.
        found: Option<String>,
        /// The plan's policy name.
        expected: String,
    },
    /// The policy has no `spec` object.
    #[error("the module returned a policy without spec")]
    NoSpec,
    /// An object name the API server would refuse (checked by `plan`).
    #[error("{0}")]
    InvalidName(String),
}

fn parse_selector(s: &str, field: &'static str) -> Result<Value, RenderError> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(RenderError::NotAnObject(field)),
        Err(source) => Err(RenderError::NotJson {
            what: field,
            source,
        }),
    }
}

/// Parses and checks the policy JSON a module returned: it must be a v1 VAP named `name`.
pub fn policy_object(json: &str, name: &str) -> Result<Value, RenderError> {
    let v: Value = serde_json::from_str(json).map_err(|source| RenderError::NotJson {
        what: "policy",
        source,
    })?;
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let (av, kind, n) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
    if av.as_deref() != Some(ADMISSION_V1) || kind.as_deref() != Some(VAP_KIND) {
        return Err(RenderError::WrongKind {
            api_version: av,
            kind,
        });
    }
    if n.as_deref() != Some(name) {
        return Err(RenderError::WrongName {
            found: n,
            expected: name.into(),
        });
    }
    if !v.get("spec").is_some_and(Value::is_object) {
        return Err(RenderError::NoSpec);
    }
    Ok(v)
}

/// Exempts `namespaces` from a generated policy (`--exempt-namespace`): a
/// `kubernetes.io/metadata.name NotIn [...]` expression in `spec.matchConstraints`'s
/// namespaceSelector, next to whatever selector the module set. The API server checks it
/// once per policy, before any binding, so requests in those namespaces never reach a
/// binding: vapgen's own Lease renewals, canary requests and Events stay fast and can never
/// be denied by a policy vapgen generated (Gatekeeper #4530). Cluster-scoped objects are not
/// affected (a namespaceSelector does not apply to them), and a Namespace object is matched
/// by its own name.
pub fn exempt_namespaces(policy: &mut Value, namespaces: &[String]) {
    if namespaces.is_empty() {
        return;
    }
    let Some(spec) = policy.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mc = spec
        .entry("matchConstraints")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(mc) = mc.as_object_mut() else {
        return;
    };
    let sel = mc
        .entry("namespaceSelector")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(sel) = sel.as_object_mut() else {
        return;
    };
    let exprs = sel
        .entry("matchExpressions")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(a) = exprs.as_array_mut() {
        let mut values: Vec<String> = namespaces.to_vec();
        values.sort();
        values.dedup();
        a.push(serde_json::json!({
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": values,
        }));
    }
}

/// Serialises objects as a multi-document YAML stream that `kubectl apply -f -` accepts.
///
/// kubectl reads YAML 1.1, where a plain `yes`, `no`, `on`, `off`, `y` or `n` is a boolean:
/// such strings (Gatekeeper's label `gatekeeper.sh/constraint: "yes"`, parameters) are
/// written quoted, which a YAML 1.2 writer such as serde_yaml does not do (kubectl then
/// refused the CRD: "cannot unmarshal bool into … labels of type string").
pub fn to_yaml_stream(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        if let Err(e) = serde_saphyr::to_fmt_writer(&mut out, o) {
            out.push_str(&format!("# unprintable: {e}\n"));
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vapgen_guest::model::ValidationAction;

    /// The stream reads back as the same objects through the kubectl-like reader, and the
    /// strings YAML 1.1 would take for booleans or numbers stay strings.
    #[test]
    fn yaml_stream_round_trips_through_a_yaml_1_1_reader() {
        let objects = vec![
            json!({"metadata": {"labels": {"gatekeeper.sh/constraint": "yes", "a": "on", "b": "N",
                "c": "0777", "d": "1:20", "e": "true", "f": "~", "g": ""}},
                "spec": {"expression": "has(object.x) && object.x == \"y\" ? 'a: b' : \"#c\"",
                    "long": "x".repeat(300), "multi": "line 1\nline 2\n", "n": 3, "t": true, "z": null}}),
            json!({"kind": "List", "other": [1, "2", {"k": []}]}),
        ];
        let text = to_yaml_stream(&objects);
        let (back, errors) = crate::manifest::parse_documents(&text, "out");
        assert!(errors.is_empty(), "{errors:?}\n{text}");
        let back: Vec<Value> = back.into_iter().map(|o| o.object).collect();
        assert_eq!(back, objects, "{text}");
    }

    #[test]
    fn exempt_namespaces_are_added_next_to_the_modules_selector() {
        let mut p = serde_json::json!({"spec": {"matchConstraints": {
            "namespaceSelector": {"matchExpressions": [{"key": "admission.gatekeeper.sh/ignore", "operator": "DoesNotExist"}]},
            "resourceRules": []
        }}});
        exempt_namespaces(&mut p, &["vapgen-system".into(), "b".into(), "b".into()]);
        assert_eq!(
            p.pointer("/spec/matchConstraints/namespaceSelector/matchExpressions")
                .unwrap(),
            &serde_json::json!([
                {"key": "admission.gatekeeper.sh/ignore", "operator": "DoesNotExist"},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["b", "vapgen-system"]}
            ])
        );
        let mut bare = serde_json::json!({"spec": {}});
        exempt_namespaces(&mut bare, &["ns".into()]);
        assert_eq!(
            bare.pointer("/spec/matchConstraints/namespaceSelector/matchExpressions/0/values/0"),
            Some(&serde_json::json!("ns"))
        );
        let mut none = serde_json::json!({"spec": {}});
        exempt_namespaces(&mut none, &[]);
        assert_eq!(none, serde_json::json!({"spec": {}}));
    }

    fn spec() -> BindingSpec {
        BindingSpec {
            name: "gatekeeper-k8srequiredlabels-ns-must-have-owner".into(),
            policy_name: "gatekeeper-k8srequiredlabels".into(),
            param_name: "ns-must-have-owner".into(),
            validation_actions: vec![ValidationAction::Deny],
            object_selector: Some(r#"{"matchLabels":{"team":"payments"}}"#.into()),
            namespace_selector: None,
        }
    }

    #[test]
    fn binding_matches_example_a() {
        let owner = Owner::constraint("K8sRequiredLabels", "ns-must-have-owner", "c-uid");
        let b = binding_object(&spec(), Some(&owner)).unwrap();
        assert_eq!(
            b,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {
                    "name": "gatekeeper-k8srequiredlabels-ns-must-have-owner",
                    "ownerReferences": [{
                        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                        "kind": "K8sRequiredLabels", "name": "ns-must-have-owner", "uid": "c-uid",
                        "controller": true, "blockOwnerDeletion": true
                    }]
                },
                "spec": {
                    "policyName": "gatekeeper-k8srequiredlabels",
                    "paramRef": {"name": "ns-must-have-owner", "parameterNotFoundAction": "Allow"},
                    "validationActions": ["Deny"],
                    "matchResources": {"objectSelector": {"matchLabels": {"team": "payments"}}}
                }
            })
        );
    }

    #[test]
    fn no_owner_reference_without_uid() {
        let b = binding_object(&spec(), None).unwrap();
        assert!(b.pointer("/metadata/ownerReferences").is_none());
    }

    #[test]
    fn garbage_from_a_module_is_an_error() {
        let mut s = spec();
        s.object_selector = Some("not json".into());
        assert!(
            binding_object(&s, None)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        assert!(policy_object("{}", "x").is_err());
        assert!(
            policy_object(
                r#"{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingAdmissionPolicy","metadata":{"name":"y"},"spec":{}}"#,
                "x"
            )
            .unwrap_err()
            .to_string()
            .contains("named")
        );
    }
}
