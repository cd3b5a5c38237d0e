//! `vapgen diff`: what applying vapgen's objects would change on a cluster, as `kubectl diff`
//! shows it, without a hand-built pipe.
//!
//! Each desired object is written the way the controller writes it — the live object with
//! vapgen's `spec`, owner references, labels and annotations laid over it
//! ([`crate::controller::kube::overlay`]), sent as a replace — but with `dryRun=All`: the API
//! server validates it, applies defaults and returns the result without storing it. The
//! difference between that result and the live object is the drift, once the fields every
//! write changes (`resourceVersion`, `managedFields`, `generation`, …) are set aside. A
//! desired object that does not exist is a creation (and is dry-run created, so that the
//! API server's refusals show).
//!
//! The inputs are files (`-f`) or the cluster's own ConstraintTemplates and constraints
//! (`--from-cluster`, optionally narrowed by a label selector on the templates).

use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::Value;

use crate::manifest::SourcedObject;
use crate::validate::{api, api_for};

/// What applying one object would do.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the live object already is what vapgen writes.
    Unchanged,
    /// The object does not exist and would be created.
    Create,
    /// The live object would change: a line diff of its YAML (`-` live, `+` after the apply).
    Update(Vec<String>),
}

/// The outcome for one desired object.
#[derive(Debug)]
pub struct ObjectDiff {
    /// `Kind/name`.
    pub object: String,
    /// What applying it would do, or why that could not be found out.
    pub change: Result<Change, DiffError>,
}

/// Reads the cluster's ConstraintTemplates (those matching `selector`, a label selector, when
/// given) and the constraints of their kinds, as `plan` reads files.
pub async fn read_cluster_inputs(
    client: &kube::Client,
    selector: Option<&str>,
) -> Result<Vec<SourcedObject>, kube::Error> {
    let templates = api(
        client,
        "templates.gatekeeper.sh",
        "v1",
        "ConstraintTemplate",
        "constrainttemplates",
    );
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut out = Vec::new();
    for t in templates.list(&lp).await? {
        let t = clean(serde_json::to_value(&t).unwrap_or_default());
        let name = crate::snapshot::name_of(&t).to_string();
        let kind = crate::snapshot::template_kind(&t).unwrap_or("").to_string();
        out.push(SourcedObject {
            object: t,
            origin: format!("cluster: ConstraintTemplate {name}"),
        });
        if kind.is_empty() {
            continue;
        }
        let constraints = api(
            client,
            "constraints.gatekeeper.sh",
            "v1beta1",
            &kind,
            &kind.to_ascii_lowercase(),
        );
        match constraints.list(&ListParams::default()).await {
            Ok(list) => {
                for c in list {
                    let c = clean(serde_json::to_value(&c).unwrap_or_default());
                    let cname = crate::snapshot::name_of(&c).to_string();
                    out.push(SourcedObject {
                        object: c,
                        origin: format!("cluster: {kind} {cname}"),
                    });
                }
            }
            // The kind's CRD is not served (yet): no constraints to read.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `plan --from-cluster` with scope sync: Gatekeeper's ValidatingWebhookConfiguration
/// `webhook_config` and its `Config` named `config` in `config_namespace`, those that exist
/// (not found, or a Config kind not served: none, as `vapgen run` goes on without them).
pub async fn read_cluster_scope_objects(
    client: &kube::Client,
    webhook_config: &str,
    config_namespace: &str,
) -> Result<Vec<SourcedObject>, kube::Error> {
    use kube::api::{ApiResource, GroupVersionKind};
    let mut out = Vec::new();
    let vwc = api(
        client,
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    );
    if let Some(o) = vwc.get_opt(webhook_config).await? {
        out.push(SourcedObject {
            object: clean(serde_json::to_value(&o).unwrap_or_default()),
            origin: format!("cluster: ValidatingWebhookConfiguration {webhook_config}"),
        });
    }
    let gvk = GroupVersionKind::gvk("config.gatekeeper.sh", "v1alpha1", "Config");
    let configs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        config_namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "configs"),
    );
    match configs.get_opt("config").await {
        Ok(Some(o)) => out.push(SourcedObject {
            object: clean(serde_json::to_value(&o).unwrap_or_default()),
            origin: format!("cluster: Config {config_namespace}/config"),
        }),
        Ok(None) => {}
        // Gatekeeper's Config CRD is not installed.
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Compares each of `objects` (cluster-scoped, as `plan` renders them) with the cluster.
pub async fn diff(client: &kube::Client, objects: &[Value]) -> Vec<ObjectDiff> {
    let mut out = Vec::new();
    for o in objects {
        let kind = crate::snapshot::kind_of(o).to_string();
        let name = crate::snapshot::name_of(o).to_string();
        let object = format!("{kind}/{name}");
        let api = api_for(client, o);
        let change = one(&api, &name, o).await;
        out.push(ObjectDiff { object, change });
    }
    out
}

/// Why one comparison failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The API server refused the dry run or the read (its message), or it could not be sent.
    #[error("{}", crate::validate::api_message(.0))]
    Kube(#[from] kube::Error),
    /// An object could not be converted.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

async fn one(api: &Api<DynamicObject>, name: &str, desired: &Value) -> Result<Change, DiffError> {
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let Some(live) = api.get_opt(name).await? else {
        let object: DynamicObject = serde_json::from_value(desired.clone())?;
        api.create(&params, &object).await?;
        return Ok(Change::Create);
    };
    let mut write = serde_json::to_value(&live)?;
    crate::controller::kube::overlay(&mut write, desired);
    let write: DynamicObject = serde_json::from_value(write)?;
    let after = api.replace(name, &params, &write).await?;
    let live = clean(serde_json::to_value(&live)?);
    let after = clean(serde_json::to_value(&after)?);
    if after == live {
        return Ok(Change::Unchanged);
    }
    let a = crate::render::to_yaml_stream(std::slice::from_ref(&live));
    let b = crate::render::to_yaml_stream(std::slice::from_ref(&after));
    Ok(Change::Update(line_diff(&a, &b)))
}

/// The object without the fields every write changes.
fn clean(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
        ] {
            m.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

/// A line diff of `a` and `b` (longest common subsequence): changed lines prefixed with `-`
/// (only in `a`) and `+` (only in `b`), each with one line of context around it.
pub fn line_diff(a: &str, b: &str) -> Vec<String> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<bool> = ops.iter().map(|(c, _)| *c != ' ').collect();
    let near = |k: usize| {
        changed[k] || (k > 0 && changed[k - 1]) || (k + 1 < changed.len() && changed[k + 1])
    };
    ops.iter()
        .enumerate()
        .filter(|(k, _)| near(*k))
        .map(|(_, (c, l))| format!("{c} {l}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_changes_with_context() {
        let d = line_diff("a\nb\nc\nd\ne\n", "a\nb\nX\nd\ne\n");
        assert_eq!(d, ["  b", "- c", "+ X", "  d"]);
        assert!(line_diff("a\n", "a\n").is_empty());
        assert_eq!(line_diff("", "a\n"), ["+ a"]);
    }

    #[test]
    fn clean_drops_what_every_write_changes() {
        let v = serde_json::json!({"metadata": {"name": "x", "resourceVersion": "1", "managedFields": []}, "status": {}, "spec": {}});
        assert_eq!(
            clean(v),
            serde_json::json!({"metadata": {"name": "x"}, "spec": {}})
        );
    }
}
