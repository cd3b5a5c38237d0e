//! vapgen's own requests do not depend on the policies it generates (`--exempt-namespace`,
//! `vapgen::render::exempt_namespaces`), on the real API server.
//!
//! A policy shaped like a generated one (`*/*/*` CREATE/UPDATE, `failurePolicy: Fail`) that
//! denies everything, bound to two fresh namespaces: "own" (standing for vapgen's namespace)
//! and "other". Without the exemption a Lease write in "own" is denied — the bootstrap
//! deadlock of Gatekeeper #4530: such a policy would stop vapgen's Lease renewals and so
//! every repair. With it, Lease writes in "own" are admitted and "other" stays denied.
//!
//! Only the two fresh namespaces are bound, so the test runs beside the other tests.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams};
use serde_json::json;
use vapgen_tests::{
    ENFORCEMENT_TIMEOUT, client, expect_allowed, fresh_namespace, unique_name, wait_denied,
};

fn lease(name: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    }
}

#[tokio::test]
async fn a_fail_policy_denying_everything_does_not_reach_the_exempt_namespace() {
    let client = client().await;
    let own = fresh_namespace(&client, "own").await;
    let other = fresh_namespace(&client, "other").await;
    let name = unique_name("deny-all");
    let mut policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["*"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["*"],
                // Only namespaced objects: a namespaceSelector does not narrow cluster-scoped
                // ones, and the next test binary on this control plane writes ClusterRoles.
                "scope": "Namespaced"
            }]},
            "validations": [{"expression": "false", "message": "denied by the test"}]
        }
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In", "values": [own, other]
            }]}}
        }
    });
    let gvk = |kind: &str| {
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let vaps: Api<DynamicObject> = Api::all_with(client.clone(), &gvk("ValidatingAdmissionPolicy"));
    let vapbs: Api<DynamicObject> =
        Api::all_with(client.clone(), &gvk("ValidatingAdmissionPolicyBinding"));
    let pp = PatchParams::apply("vapgen-tests").force();
    vaps.patch(&name, &pp, &Patch::Apply(&policy))
        .await
        .expect("policy");
    vapbs
        .patch(&name, &pp, &Patch::Apply(&binding))
        .await
        .expect("binding");

    let own_leases: Api<Lease> = Api::namespaced(client.clone(), &own);
    let other_leases: Api<Lease> = Api::namespaced(client.clone(), &other);
    // The hazard: without the exemption the policy denies vapgen's own Lease writes.
    wait_denied(&own_leases, &lease("vapgen"), &name).await;

    vapgen::render::exempt_namespaces(&mut policy, std::slice::from_ref(&own));
    vaps.patch(&name, &pp, &Patch::Apply(&policy))
        .await
        .expect("exempted policy");
    wait_admitted(
        &own_leases,
        "Lease writes in the exempt namespace are still denied",
    )
    .await;
    expect_allowed(&own_leases, &lease("vapgen")).await;
    wait_denied(&other_leases, &lease("vapgen"), &name).await;

    let _ = vapbs.delete(&name, &Default::default()).await;
    let _ = vaps.delete(&name, &Default::default()).await;
    // The API server drops a deleted policy a moment later; the next test binary on this
    // control plane must not meet it.
    wait_admitted(&other_leases, "the deleted deny-all policy still denies").await;
}

/// Waits until a dry-run create of a Lease is admitted in `leases`' namespace.
async fn wait_admitted(leases: &Api<Lease>, still_denied: &str) {
    let start = std::time::Instant::now();
    loop {
        let admitted = leases
            .create(
                &kube::api::PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &lease("vapgen"),
            )
            .await
            .is_ok();
        if admitted {
            return;
        }
        assert!(start.elapsed() < ENFORCEMENT_TIMEOUT, "{still_denied}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
