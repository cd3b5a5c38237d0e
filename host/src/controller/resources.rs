//! The API resources vapgen reads and writes, and the create-unless-present helper the
//! canary uses (shared by the watches, the cluster port and the readiness probe).

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;

use crate::snapshot;

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "vapgen";

/// ConstraintTemplates (`templates.gatekeeper.sh/v1`).
pub fn template_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(snapshot::TEMPLATE_GROUP, "v1", "ConstraintTemplate"),
        "constrainttemplates",
    )
}

fn admission_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        plural,
    )
}

/// ValidatingAdmissionPolicies.
pub fn vap_resource() -> ApiResource {
    admission_resource("ValidatingAdmissionPolicy", "validatingadmissionpolicies")
}

/// ValidatingAdmissionPolicyBindings.
pub fn vapb_resource() -> ApiResource {
    admission_resource(
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    )
}

/// CustomResourceDefinitions.
pub fn crd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    )
}

/// ValidatingWebhookConfigurations (Gatekeeper's, for scope sync).
pub fn webhook_config_resource() -> ApiResource {
    admission_resource(
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    )
}

/// Gatekeeper's `Config` (`config.gatekeeper.sh/v1alpha1`, for scope sync).
pub fn gatekeeper_config_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("config.gatekeeper.sh", "v1alpha1", "Config"),
        "configs",
    )
}

/// Gatekeeper's `ConstraintTemplatePodStatus` (`status.gatekeeper.sh/v1beta1`, coexist mode).
pub fn template_pod_status_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "status.gatekeeper.sh",
            "v1beta1",
            "ConstraintTemplatePodStatus",
        ),
        "constrainttemplatepodstatuses",
    )
}

/// The v1beta1 resource of a constraint kind.
pub fn constraint_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(snapshot::CONSTRAINT_GROUP, "v1beta1", kind),
        plural,
    )
}

/// Creates an object unless it exists (used for the canary objects).
pub(crate) async fn create_or_keep(
    api: &Api<DynamicObject>,
    obj: &Value,
) -> Result<(), kube::Error> {
    let o: DynamicObject = serde_json::from_value(obj.clone()).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &o).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
