//! Test support for vapgen's integration tests against a real kube-apiserver.
//!
//! The control plane (one etcd and one kube-apiserver on 127.0.0.1, built from Go modules)
//! is started outside the tests by `tests/control-plane/up`, which prints the environment
//! this crate reads:
//!
//! ```text
//! eval "$(tests/control-plane/up)"   # VAPGEN_TEST_KUBECONFIG, VAPGEN_TEST_AUDIT_LOG, VAPGEN_KUBECTL
//! cargo test -p vapgen-tests
//! tests/control-plane/down
//! ```
//!
//! There are no silent skips: a test that asks for a [`client`] without a control plane
//! panics and tells how to start one.
//!
//! # Rules for tests on a shared, bare API server
//!
//! * Every test runs in parallel with the tests of other files: use [`unique_name`] for
//!   every object and [`fresh_namespace`] for namespaced ones.
//! * Scope cluster-wide objects (a ValidatingAdmissionPolicy, a binding) to the test's own
//!   namespace, e.g. with [`namespace_selector`], so that one test's policy never denies
//!   another test's request — even if the test panics before its cleanup.
//! * Nothing is garbage-collected: delete what you create explicitly ([`delete_ignoring_missing`]).
//!   Namespaces never finish deleting, there is no `default` ServiceAccount, and Pods stay
//!   Pending; never wait for any of those.
//! * Admission policies reach the admission plugin through informers: poll with
//!   [`wait_denied`] before asserting anything is allowed ([`expect_allowed`]).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube::{Client, Config, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::ser::Serialize;

pub mod coexist;
pub mod gatekeeper;

/// Environment variable holding the path of the test control plane's admin kubeconfig.
pub const KUBECONFIG_ENV: &str = "VAPGEN_TEST_KUBECONFIG";
/// Environment variable holding the path of the API server's audit log.
pub const AUDIT_LOG_ENV: &str = "VAPGEN_TEST_AUDIT_LOG";
/// Environment variable holding the path of a kubectl matching the test API server.
pub const KUBECTL_ENV: &str = "VAPGEN_KUBECTL";

/// How long [`wait_denied`] polls before giving up.
pub const ENFORCEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Label put on every namespace made by [`fresh_namespace`].
pub const TEST_NAMESPACE_LABEL: &str = "vapgen.test/ephemeral";

// === clients ===

/// `GET path` on 127.0.0.1:`port` (a `vapgen run` process's `/metrics`, `/healthz`,
/// `/debug/records`): the response body, or `None` if the server does not answer within
/// a second or two. Blocking (call it from `spawn_blocking` in async code).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Installs what `vapgen run` needs on a bare API server before it starts: the
/// ConstraintTemplate CRD (`deploy/crds/constrainttemplates.yaml`) and the namespace
/// `namespace` (its Lease, canary and Events live there); waits until the CRD is served.
///
/// # Panics
///
/// If the CRD file cannot be read or an apply fails, or the CRD is not served within 30 s.
pub async fn install_template_crd(client: &Client, namespace: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/constrainttemplates.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let crd: serde_json::Value = serde_yaml::from_str(&text).expect("CRD yaml");
    let name = crd["metadata"]["name"]
        .as_str()
        .expect("CRD name")
        .to_string();
    let pp = PatchParams::apply("vapgen-tests").force();
    // A policy another test just deleted (exempt.rs' deny-all) may still be enforced by the
    // API server's policy cache for a moment: retry what it denies for a few seconds.
    let retry_from = Instant::now();
    while let Err(e) = Api::<CustomResourceDefinition>::all(client.clone())
        .patch(&name, &pp, &Patch::Apply(&crd))
        .await
    {
        let denied = matches!(&e, kube::Error::Api(s) if s.code == 422 || s.code == 403);
        if !denied || retry_from.elapsed() > Duration::from_secs(15) {
            panic!("applying the ConstraintTemplate CRD: {e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &pp, &Patch::Apply(&ns))
        .await
        .unwrap_or_else(|e| panic!("applying namespace {namespace}: {e}"));
    let start = Instant::now();
    while !client
        .list_api_group_resources("templates.gatekeeper.sh/v1")
        .await
        .is_ok_and(|l| l.resources.iter().any(|r| r.name == "constrainttemplates"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the ConstraintTemplate CRD is not served after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path of the admin kubeconfig written by `tests/control-plane/up`.
///
/// Without one ([`KUBECONFIG_ENV`] unset or empty):
/// * under `CI=true` this panics: a missing control plane is a failure of the CI setup;
/// * otherwise the whole test binary ends **successfully** after printing, on the real
///   stderr (not captured by the test harness), that its cluster tests were skipped and how
///   to run them. Every test binary of this crate is a cluster test binary, so `cargo test`
///   on a machine without a control plane passes and says what it did not run.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os(KUBECONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{KUBECONFIG_ENV} is not set but CI=true: the test control plane was not started. \
             .ci/run must run `eval \"$(tests/control-plane/up)\"` before `cargo test`."
        ),
        _ => skip_binary_without_control_plane(),
    }
}

/// Ends this test binary with success after saying, loudly, that it skipped its tests.
fn skip_binary_without_control_plane() -> ! {
    use std::io::Write as _;
    let binary = std::env::args()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let binary = binary.rsplit_once('-').map_or(binary.as_str(), |(b, _)| b);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\nSKIPPED: every test of `{binary}` (cluster tests): {KUBECONFIG_ENV} is not set, so no \
         test control plane is up. Run them with `eval \"$(tests/control-plane/up)\"` (the first \
         run builds kube-apiserver, kubectl and etcd, ~7 min), then `cargo test -p vapgen-tests`, \
         then `tests/control-plane/down`; or run `./test`, which does all of it. Under CI=true \
         this is a failure.\n"
    );
    std::process::exit(0)
}

/// The kube config (admin, `system:masters`) of the test control plane.
///
/// # Panics
///
/// See [`kubeconfig_path`]; also if the kubeconfig cannot be read.
pub async fn config() -> Config {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading {KUBECONFIG_ENV}={}: {e}", path.display()));
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading {KUBECONFIG_ENV}={}: {e}", path.display()))
}

fn client_from(config: Config) -> Client {
    Client::try_from(config).unwrap_or_else(|e| panic!("building a kube client: {e}"))
}

/// An admin client (`system:masters`) for the test control plane.
///
/// Make one per test: a client belongs to the tokio runtime it was made on.
///
/// # Panics
///
/// If the control plane environment is missing (see [`kubeconfig_path`]).
pub async fn client() -> Client {
    client_from(config().await)
}

/// A client that authenticates as admin and impersonates `user` in `groups`.
///
/// The API server authorizes every request as the impersonated identity (its RBAC grants
/// only); `system:authenticated` is *not* added implicitly, pass it if the identity should
/// get the grants every authenticated user has (e.g. discovery).
pub async fn impersonating(user: &str, groups: &[&str]) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    client_from(config)
}

/// A client that impersonates the ServiceAccount `ns/name`, with the groups a real
/// ServiceAccount token carries (`system:serviceaccounts`, `system:serviceaccounts:<ns>`,
/// `system:authenticated`). The ServiceAccount object need not exist.
pub async fn as_service_account(ns: &str, name: &str) -> Client {
    let user = format!("system:serviceaccount:{ns}:{name}");
    let ns_group = format!("system:serviceaccounts:{ns}");
    impersonating(
        &user,
        &["system:serviceaccounts", &ns_group, "system:authenticated"],
    )
    .await
}

/// The gatekeeper-library corpus and the fault module, shared with the host's tests through
/// the module-build crate (the host cannot depend on this crate: this crate depends on it).
pub use vapgen_module_build::testdata::{conformance_library, fault_module};

/// Path of a kubectl matching the test API server (`VAPGEN_KUBECTL`), if set.
pub fn kubectl() -> Option<PathBuf> {
    std::env::var_os(KUBECTL_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

// === names and namespaces ===

/// A DNS-1123 label unique across tests and test processes: `<prefix>-<suffix>`, at most
/// 63 characters. `prefix` should be lower-case alphanumerics and `-`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let suffix = format!("{:x}{n:x}{:x}", std::process::id(), nanos & 0xfffff);
    let prefix: String = prefix
        .trim_matches('-')
        .chars()
        .take(62 - suffix.len())
        .collect();
    format!("{}-{suffix}", prefix.trim_end_matches('-'))
}

/// Creates a new, uniquely named namespace and returns its name.
///
/// The namespace carries the label [`TEST_NAMESPACE_LABEL`]. Nothing waits for namespace
/// deletion (a bare API server never finishes it); leaving test namespaces behind is fine.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// A label selector matching exactly the namespace `ns` (through the immutable
/// `kubernetes.io/metadata.name` label the API server sets on every namespace).
pub fn namespace_selector(ns: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([("kubernetes.io/metadata.name".to_owned(), ns.to_owned())].into()),
        ..LabelSelector::default()
    }
}

/// Deletes `name` (background propagation) and treats "not found" as success.
///
/// # Panics
///
/// On any other error.
pub async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("deleting {} {name}: {e}", api.resource_url()),
    }
}

// === admission ===

/// The start of the message a ValidatingAdmissionPolicy denial carries:
/// `ValidatingAdmissionPolicy '<policy>' with binding '`. The full Status message reads
/// `<resource> "<name>" is forbidden: ValidatingAdmissionPolicy '<policy>' with binding
/// '<binding>' denied request: <message>`.
pub fn denial_prefix(policy: &str) -> String {
    format!("ValidatingAdmissionPolicy '{policy}' with binding '")
}

/// A server-side dry-run create (`?dryRun=All`): runs validation and admission, stores nothing.
pub async fn dry_run_create<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&pp, obj).await
}

/// Polls dry-run creates of `obj` until the API server denies it because of the
/// ValidatingAdmissionPolicy `policy`, and returns that denial's Status.
///
/// Policies and bindings reach the admission plugin through informers, so a fresh policy is
/// enforced only after a short lag: call this before asserting that anything is *allowed*.
/// Works with typed resources and with `Api<DynamicObject>` alike.
///
/// # Panics
///
/// If no such denial is seen within [`ENFORCEMENT_TIMEOUT`]; the message shows the last
/// outcome.
pub async fn wait_denied<K>(api: &Api<K>, obj: &K, policy: &str) -> Status
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let wanted = format!("ValidatingAdmissionPolicy '{policy}'");
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match dry_run_create(api, obj).await {
            Err(kube::Error::Api(status)) if status.message.contains(&wanted) => return *status,
            Ok(_) => "allowed".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        if start.elapsed() > ENFORCEMENT_TIMEOUT {
            panic!(
                "{} {:?} was not denied by {wanted} within {ENFORCEMENT_TIMEOUT:?} \
                 ({attempts} dry-run creates); last outcome: {last}",
                api.resource_url(),
                obj.meta().name,
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Asserts that a dry-run create of `obj` is admitted, and returns the object as the server
/// would have stored it. Call [`wait_denied`] first when a freshly created policy must be
/// in force: before that, "allowed" proves nothing.
///
/// # Panics
///
/// If the request fails, with the server's Status.
pub async fn expect_allowed<K>(api: &Api<K>, obj: &K) -> K
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    dry_run_create(api, obj).await.unwrap_or_else(|e| {
        panic!(
            "{} {:?} was expected to be admitted, got: {e}",
            api.resource_url(),
            obj.meta().name
        )
    })
}

// === raw requests (Warning headers) ===

/// A response read in full by [`send_raw`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// The texts of all `Warning` headers (RFC 9111 `299 - "text"`), unquoted, in order.
    pub warnings: Vec<String>,
    /// The body, parsed as JSON (`Value::Null` if it is not JSON).
    pub body: serde_json::Value,
}

/// Sends `request` with [`Client::send`] and returns status, `Warning` headers and body.
///
/// kube-client's typed calls drop the `Warning` headers the API server adds (e.g. for a
/// ValidatingAdmissionPolicy binding with `validationActions: [Warn]`); this keeps them.
/// Build the request with [`kube::core::Request`], e.g.
/// `Request::new(Api::<ConfigMap>::namespaced(c, ns).resource_url()).create(&pp, body)`,
/// or see [`create_raw`].
///
/// # Panics
///
/// If the request cannot be sent or its body cannot be read.
pub async fn send_raw(client: &Client, request: http::Request<Vec<u8>>) -> RawResponse {
    let uri = request.uri().clone();
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .unwrap_or_else(|e| panic!("sending {uri}: {e}"));
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .map(|v| parse_warning(&String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_else(|e| panic!("reading the response of {uri}: {e}"));
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    RawResponse {
        status,
        warnings,
        body,
    }
}

/// POSTs `obj` to `api`'s collection through [`send_raw`] (server-side dry-run if
/// `dry_run`), so the `Warning` headers of the response are visible.
pub async fn create_raw<K>(client: &Client, api: &Api<K>, obj: &K, dry_run: bool) -> RawResponse
where
    K: Resource + Serialize,
{
    let pp = PostParams {
        dry_run,
        ..PostParams::default()
    };
    let body = serde_json::to_vec(obj).expect("serializing the object");
    let request = kube::core::Request::new(api.resource_url())
        .create(&pp, body)
        .expect("building the create request");
    send_raw(client, request).await
}

/// Extracts the text of one `Warning` header value: `299 - "text"` → `text`.
/// Values that are not in that form are returned unchanged.
pub fn parse_warning(value: &str) -> String {
    let mut parts = value.splitn(3, ' ');
    let (Some(code), Some(_agent), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return value.to_owned();
    };
    let quoted = rest.split(" \"").next().unwrap_or(rest); // drop an optional warn-date
    if code.len() != 3 || !quoted.starts_with('"') || !quoted.ends_with('"') || quoted.len() < 2 {
        return value.to_owned();
    }
    let inner = &quoted[1..quoted.len() - 1];
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                text.push(escaped);
            }
        } else {
            text.push(c);
        }
    }
    text
}

// === audit log ===

/// The API server's audit log (`VAPGEN_TEST_AUDIT_LOG`), if the environment names one.
///
/// The audit policy of `tests/control-plane/up` records, at `Metadata` level, every request
/// to `admissionregistration.k8s.io` and every write (create, update, patch, delete,
/// deletecollection) to other groups, except the API server's own.
pub fn audit_log() -> Option<PathBuf> {
    std::env::var_os(AUDIT_LOG_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// One audit event (the fields tests need; see `audit.k8s.io/v1` `Event`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Unique id of the request; each request logs up to one event per stage.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// `ResponseStarted`, `ResponseComplete` or `Panic` (`RequestReceived` is omitted).
    pub stage: String,
    /// `create`, `update`, `patch`, `delete`, `deletecollection`, `get`, `list`, `watch`.
    pub verb: String,
    /// The request URI, including the query (`dryRun=All` for dry-run requests).
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Who made the request.
    pub user: AuditUser,
    /// The impersonated identity, if any.
    #[serde(default)]
    pub impersonated_user: Option<AuditUser>,
    /// The object the request was about.
    #[serde(default)]
    pub object_ref: Option<AuditObjectRef>,
    /// The response's status, when known.
    #[serde(default)]
    pub response_status: Option<AuditStatus>,
    /// Audit annotations, e.g. `validation.policy.admission.k8s.io/validation_failure` from
    /// a binding with `validationActions: [Audit]`.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The user of an [`AuditEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditUser {
    /// User name, e.g. `admin` or `system:serviceaccount:ns:name`.
    #[serde(default)]
    pub username: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The object reference of an [`AuditEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditObjectRef {
    /// Plural resource, e.g. `validatingadmissionpolicies`.
    #[serde(default)]
    pub resource: String,
    /// Subresource, e.g. `status`.
    #[serde(default)]
    pub subresource: Option<String>,
    /// Namespace, for namespaced resources.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Object name (absent for collection requests and for creates with `generateName`).
    #[serde(default)]
    pub name: Option<String>,
    /// API group (empty for the core group).
    #[serde(default)]
    pub api_group: String,
}

/// The response status of an [`AuditEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditStatus {
    /// HTTP status code.
    #[serde(default)]
    pub code: u16,
}

impl AuditEvent {
    /// The requested resource (`""` if none).
    pub fn resource(&self) -> &str {
        self.object_ref.as_ref().map_or("", |o| o.resource.as_str())
    }

    /// The object name (`""` if none).
    pub fn name(&self) -> &str {
        self.object_ref
            .as_ref()
            .and_then(|o| o.name.as_deref())
            .unwrap_or("")
    }

    /// Whether the request was a server-side dry run.
    pub fn is_dry_run(&self) -> bool {
        self.request_uri.contains("dryRun=")
    }

    /// Whether this is the final event of a request that succeeded (2xx).
    pub fn is_successful_completion(&self) -> bool {
        self.stage == "ResponseComplete"
            && self
                .response_status
                .as_ref()
                .is_some_and(|s| (200..300).contains(&s.code))
    }
}

/// Parses an audit log (JSON lines). Lines that are not audit events — including a last
/// line the API server is still writing — are skipped.
pub fn parse_audit_log(text: &str) -> Vec<AuditEvent> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Reads and parses the audit log at `path` (see [`audit_log`]).
///
/// The API server writes an event after it has answered, so poll for the events you
/// expect rather than reading once right after a request.
pub fn read_audit_events(path: &Path) -> std::io::Result<Vec<AuditEvent>> {
    Ok(parse_audit_log(&std::fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels_and_distinct() {
        let a = unique_name("smoke-test");
        let b = unique_name("smoke-test");
        assert_ne!(a, b);
        assert!(a.starts_with("smoke-test-"));
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn parses_warning_headers() {
        assert_eq!(
            parse_warning(
                r#"299 - "Validation failed for ValidatingAdmissionPolicy 'p': say \"no\"""#
            ),
            r#"Validation failed for ValidatingAdmissionPolicy 'p': say "no""#
        );
        assert_eq!(parse_warning("not a warning"), "not a warning");
    }

    #[test]
    fn parses_audit_lines_and_skips_partial_ones() {
        let log = concat!(
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies?dryRun=All","verb":"create","user":{"username":"admin","groups":["system:masters","system:authenticated"]},"objectRef":{"resource":"validatingadmissionpolicies","name":"p1","apiGroup":"admissionregistration.k8s.io","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201}}"#,
            "\n",
            r#"{"kind":"Event","auditID":"a2","stage":"Resp"#,
        );
        let events = parse_audit_log(log);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.verb.as_str(), e.resource(), e.name()),
            ("create", "validatingadmissionpolicies", "p1")
        );
        assert!(e.is_dry_run());
        assert!(e.is_successful_completion());
    }
}
