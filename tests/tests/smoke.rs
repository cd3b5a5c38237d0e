//! Smoke tests of the test control plane itself: the server version, ValidatingAdmissionPolicy
//! enforcement (Deny and Warn), and RBAC by impersonation. None of them involves vapgen; they
//! prove the harness that vapgen's own integration tests stand on.
//!
//! Each test uses its own namespace and uniquely named, namespace-scoped policies, so the
//! tests run in parallel with each other and with other test files.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use vapgen_tests::{
    ENFORCEMENT_TIMEOUT, as_service_account, client, create_raw, delete_ignoring_missing,
    denial_prefix, expect_allowed, fresh_namespace, impersonating, namespace_selector, unique_name,
    wait_denied,
};

const MESSAGE: &str = "configmaps must carry an owner label";

/// A policy requiring an `owner` label on ConfigMaps created or updated in namespace `ns`.
fn owner_label_policy(name: &str, ns: &str) -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                namespace_selector: Some(namespace_selector(ns)),
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".to_owned()]),
                    operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                    resources: Some(vec!["configmaps".to_owned()]),
                    ..NamedRuleWithOperations::default()
                }]),
                ..MatchResources::default()
            }),
            validations: Some(vec![Validation {
                expression: "has(object.metadata.labels) && 'owner' in object.metadata.labels"
                    .to_owned(),
                message: Some(MESSAGE.to_owned()),
                ..Validation::default()
            }]),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    }
}

/// A binding of `policy` with the given validation action, also scoped to namespace `ns`.
fn binding(name: &str, policy: &str, ns: &str, action: &str) -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(policy.to_owned()),
            validation_actions: Some(vec![action.to_owned()]),
            match_resources: Some(MatchResources {
                namespace_selector: Some(namespace_selector(ns)),
                ..MatchResources::default()
            }),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        }),
    }
}

fn config_map(name: &str, owner: Option<&str>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: owner.map(|o| [("owner".to_owned(), o.to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_owned(), "v".to_owned())].into()),
        ..ConfigMap::default()
    }
}

/// Creates a policy and a binding of it (with `action`) for namespace `ns`.
async fn install_policy(client: &Client, ns: &str, action: &str) -> (String, String) {
    let policy = unique_name("smoke-owner");
    let binding_name = unique_name("smoke-owner-binding");
    let pp = PostParams::default();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&pp, &owner_label_policy(&policy, ns))
        .await
        .expect("creating the ValidatingAdmissionPolicy");
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&pp, &binding(&binding_name, &policy, ns, action))
        .await
        .expect("creating the ValidatingAdmissionPolicyBinding");
    (policy, binding_name)
}

async fn remove_policy(client: &Client, policy: &str, binding: &str) {
    delete_ignoring_missing(
        &Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()),
        binding,
    )
    .await;
    delete_ignoring_missing(
        &Api::<ValidatingAdmissionPolicy>::all(client.clone()),
        policy,
    )
    .await;
}

#[tokio::test]
async fn server_is_1_34_and_serves_validating_admission_policy_v1() {
    let client = client().await;
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34"),
        "{version:?}"
    );
    assert!(
        version.git_version.starts_with("v1.34."),
        "gitVersion {:?} is not v1.34.x (is the binary version-stamped?)",
        version.git_version
    );

    let resources = client
        .list_api_group_resources("admissionregistration.k8s.io/v1")
        .await
        .expect("GET /apis/admissionregistration.k8s.io/v1");
    let names: Vec<&str> = resources
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    for wanted in [
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ] {
        assert!(
            names.contains(&wanted),
            "{wanted} not served; served: {names:?}"
        );
    }
}

#[tokio::test]
async fn deny_binding_rejects_a_non_compliant_dry_run_create_and_admits_a_compliant_one() {
    let client = client().await;
    let ns = fresh_namespace(&client, "smoke-deny").await;
    let (policy, binding) = install_policy(&client, &ns, "Deny").await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);

    let bad = config_map("no-owner", None);
    let status = wait_denied(&config_maps, &bad, &policy).await;
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    let expected = format!(
        "configmaps \"no-owner\" is forbidden: {}{binding}' denied request: {MESSAGE}",
        denial_prefix(&policy)
    );
    assert_eq!(status.message, expected);

    let good = config_map("with-owner", Some("smoke"));
    let admitted = expect_allowed(&config_maps, &good).await;
    assert_eq!(admitted.metadata.name.as_deref(), Some("with-owner"));
    // Dry runs store nothing.
    let stored = config_maps
        .list(&ListParams::default())
        .await
        .expect("listing configmaps");
    assert!(
        stored
            .items
            .iter()
            .all(|cm| cm.metadata.name.as_deref() != Some("with-owner")),
        "a dry-run create stored an object"
    );

    remove_policy(&client, &policy, &binding).await;
}

#[tokio::test]
async fn warn_binding_admits_the_request_and_returns_a_warning_header() {
    let client = client().await;
    let ns = fresh_namespace(&client, "smoke-warn").await;
    let (policy, binding) = install_policy(&client, &ns, "Warn").await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let expected = format!(
        "Validation failed for ValidatingAdmissionPolicy '{policy}' with binding '{binding}': {MESSAGE}"
    );

    // Warn never denies, so poll until the warning shows up (informer lag).
    let bad = config_map("no-owner", None);
    let start = Instant::now();
    let response = loop {
        let response = create_raw(&client, &config_maps, &bad, true).await;
        assert_eq!(
            response.status, 201,
            "a Warn binding must admit: {:?}",
            response.body
        );
        if !response.warnings.is_empty() {
            break response;
        }
        assert!(
            start.elapsed() < ENFORCEMENT_TIMEOUT,
            "no Warning header within {ENFORCEMENT_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response.warnings, vec![expected]);
    assert_eq!(response.body["metadata"]["name"], "no-owner");

    let good = create_raw(
        &client,
        &config_maps,
        &config_map("with-owner", Some("smoke")),
        true,
    )
    .await;
    assert_eq!(good.status, 201, "{:?}", good.body);
    assert!(
        good.warnings.is_empty(),
        "unexpected warnings: {:?}",
        good.warnings
    );

    remove_policy(&client, &policy, &binding).await;
}

#[tokio::test]
async fn identities_without_rbac_grants_are_forbidden() {
    let admin = client().await;
    let ns = fresh_namespace(&admin, "smoke-rbac").await;

    // A user with no grants (beyond what every authenticated user gets).
    let user = unique_name("nobody");
    let nobody = impersonating(&user, &["system:authenticated"]).await;
    match Api::<ConfigMap>::namespaced(nobody, &ns)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
            assert!(
                s.message.contains(&format!(
                    "User \"{user}\" cannot list resource \"configmaps\""
                )),
                "not refused as the impersonated user: {}",
                s.message
            );
        }
        other => panic!("expected 403 for an identity without grants, got {other:?}"),
    }

    // A ServiceAccount: refused, then allowed once a Role grants it (proves the
    // impersonated identity is what RBAC evaluates, not the admin behind it).
    let sa = unique_name("smoke-sa");
    let as_sa = Api::<ConfigMap>::namespaced(as_service_account(&ns, &sa).await, &ns);
    let create = |name: &str| config_map(name, Some("smoke"));
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match as_sa.create(&pp, &create("by-sa")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message
                    .contains(&format!("system:serviceaccount:{ns}:{sa}")),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403 for a ServiceAccount without grants, got {other:?}"),
    }

    let role_name = unique_name("smoke-cm-writer");
    grant_configmap_create(&admin, &ns, &role_name, &sa).await;
    let start = Instant::now();
    loop {
        match as_sa.create(&pp, &create("by-sa")).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 403 && start.elapsed() < ENFORCEMENT_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the granted ServiceAccount is still refused: {e}"),
        }
    }
    delete_ignoring_missing(
        &Api::<RoleBinding>::namespaced(admin.clone(), &ns),
        &role_name,
    )
    .await;
    delete_ignoring_missing(&Api::<Role>::namespaced(admin, &ns), &role_name).await;
}

async fn grant_configmap_create(admin: &Client, ns: &str, name: &str, sa: &str) {
    let pp = PostParams::default();
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: vec!["create".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&pp, &role)
        .await
        .expect("creating the Role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: sa.to_owned(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&pp, &binding)
        .await
        .expect("creating the RoleBinding");
}

#[tokio::test]
async fn audit_log_records_policy_writes() {
    let path = vapgen_tests::audit_log().unwrap_or_else(|| {
        panic!(
            "VAPGEN_TEST_AUDIT_LOG is not set; start the control plane with tests/control-plane/up"
        )
    });
    let client = client().await;
    let ns = fresh_namespace(&client, "smoke-audit").await;
    let policy = unique_name("smoke-audited");
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    policies
        .create(&PostParams::default(), &owner_label_policy(&policy, &ns))
        .await
        .expect("creating the ValidatingAdmissionPolicy");
    delete_ignoring_missing(&policies, &policy).await;

    // The API server writes the event after answering: poll.
    let start = Instant::now();
    loop {
        let events = vapgen_tests::read_audit_events(&path).expect("reading the audit log");
        let verbs: Vec<&str> = events
            .iter()
            .filter(|e| {
                e.resource() == "validatingadmissionpolicies"
                    && e.name() == policy
                    && e.is_successful_completion()
                    && !e.is_dry_run()
            })
            .map(|e| e.verb.as_str())
            .collect();
        if verbs == ["create", "delete"] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "audit events for {policy}: {verbs:?}, expected [create, delete]"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
