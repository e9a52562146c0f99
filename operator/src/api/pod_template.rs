//! The pod settings of a run: where and how its stage pods run (`podTemplate`, run-wide) and what
//! one stage changes (`stageOverrides.<stage>`: its `resources` and `podTemplate`); the
//! operator merges them per stage (`pod_overrides::stage_pod`) into what one stage's Job gets.
//!
//! Only scheduling and metadata can be set (the shape of Strimzi's `template.pod` and Tekton's
//! `podTemplate`): the security settings that keep stage pods within the `restricted` Pod
//! Security Standard, the container, its command and volumes are the operator's alone. What can
//! be set is checked at admission (OpenAPI and CEL below), including that labels the operator
//! and the Job controller find their pods by are not set.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stage::Stage;

/// Label keys a pod template may not set: the operator's (`streamflow.io/…`, its
/// `app.kubernetes.io/managed-by`) and those the Job controller puts on a Job's pods
/// (`batch.kubernetes.io/…`, `job-name`, `controller-uid`), by which Jobs, Pods and runs are
/// found.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["streamflow.io/", "batch.kubernetes.io/"];
pub const RESERVED_LABELS: [&str; 3] =
    ["app.kubernetes.io/managed-by", "job-name", "controller-uid"];
/// Annotation keys a pod template may not set: the operator's, and the annotations Pod Security
/// reads to loosen a pod's AppArmor or seccomp profile.
pub const RESERVED_ANNOTATION_PREFIXES: [&str; 4] = [
    "streamflow.io/",
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
];

/// Whether a pod template may not set this label (the API server refuses it; the Job builder
/// drops it as well).
pub fn is_reserved_label(key: &str) -> bool {
    RESERVED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p)) || RESERVED_LABELS.contains(&key)
}

/// Whether a pod template may not set this annotation.
pub fn is_reserved_annotation(key: &str) -> bool {
    RESERVED_ANNOTATION_PREFIXES
        .iter()
        .any(|p| key.starts_with(p))
}

/// The CEL rule refusing reserved keys in a map: built from the same lists as
/// [`is_reserved_label`] / [`is_reserved_annotation`], so admission and builder agree.
fn reserved_keys_rule(prefixes: &[&str], exact: &[&str]) -> String {
    let mut tests: Vec<String> = prefixes
        .iter()
        .map(|p| format!("k.startsWith('{p}')"))
        .collect();
    tests.extend(exact.iter().map(|e| format!("k == '{e}'")));
    format!("self.all(k, !({}))", tests.join(" || "))
}

/// Where and how stage pods run: the run-wide `podTemplate`, or one stage's, whose fields
/// replace the run-wide ones (labels and annotations: key by key).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels and annotations of the pods (not of their Jobs).
    #[serde(default, skip_serializing_if = "PodMetadata::is_empty")]
    pub metadata: PodMetadata,
    /// The pods' `nodeSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "node_selector_schema")]
    #[x_kube(validation = Rule::new("self.all(k, !format.qualifiedName().validate(k).hasValue())").message("nodeSelector: each key must be a label key (an optional DNS subdomain prefix and '/', and a name of at most 63 alphanumerics, '-', '_' or '.')"))]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The pods' `tolerations` (`operator` `Exists` or `Equal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tolerations_schema")]
    pub tolerations: Option<Vec<Toleration>>,
    /// The pods' `affinity` (`nodeAffinity`, `podAffinity`, `podAntiAffinity`), as in a
    /// Pod's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "affinity_schema")]
    pub affinity: Option<Affinity>,
    /// Secrets holding the credentials of the registry of the job image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "image_pull_secrets_schema")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// The pods' PriorityClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub priority_class_name: Option<String>,
    /// The size limit of the pods' `/tmp` (an emptyDir: the root filesystem is read-only, and
    /// the ETL spills there); unset means no limit but the node's. A pod writing more is
    /// evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "size_schema")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("tmpDirSizeLimit: must be a Kubernetes quantity above zero, e.g. 10Gi"))]
    pub tmp_dir_size_limit: Option<Quantity>,
}

/// Labels and annotations of the stage pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PodMetadata {
    /// Added to the operator's own labels, which cannot be set here (`streamflow.io/…`,
    /// `app.kubernetes.io/managed-by`, and the Job controller's `batch.kubernetes.io/…`,
    /// `job-name`, `controller-uid`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "labels_schema")]
    #[x_kube(validation = Rule::new("self.all(k, !format.qualifiedName().validate(k).hasValue())").message("labels: each key must be a label key (an optional DNS subdomain prefix and '/', and a name of at most 63 alphanumerics, '-', '_' or '.')"))]
    #[x_kube(validation = Rule::new(reserved_keys_rule(&RESERVED_LABEL_PREFIXES, &RESERVED_LABELS)).message("labels: streamflow.io/..., batch.kubernetes.io/..., app.kubernetes.io/managed-by, job-name and controller-uid are set by the operator and the Job controller, which find their pods by them"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pods (e.g. `sidecar.istio.io/inject: "false"`). Not `streamflow.io/…`,
    /// nor the AppArmor and seccomp annotations, which would loosen the pods' security.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "annotations_schema")]
    #[x_kube(validation = Rule::new("self.all(k, !format.qualifiedName().validate(k).hasValue())").message("annotations: each key must be a qualified name (an optional DNS subdomain prefix and '/', and a name of at most 63 alphanumerics, '-', '_' or '.')"))]
    #[x_kube(validation = Rule::new(reserved_keys_rule(&RESERVED_ANNOTATION_PREFIXES, &[])).message("annotations: streamflow.io/... and the AppArmor and seccomp annotations cannot be set: the pods keep the restricted Pod Security Standard"))]
    pub annotations: BTreeMap<String, String>,
}

impl PodTemplate {
    pub fn is_empty(&self) -> bool {
        *self == PodTemplate::default()
    }
}

impl PodMetadata {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// What one stage changes of the run-wide settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StageOverride {
    /// CPU and memory of this stage's container, instead of the run's `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Its fields replace those of the run's `podTemplate` (labels and annotations: key by
    /// key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// Per stage, what it changes of the run-wide `resources` and `podTemplate`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct StageOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<StageOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etl: Option<StageOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<StageOverride>,
}

impl StageOverrides {
    pub fn is_empty(&self) -> bool {
        self.ingest.is_none() && self.etl.is_none() && self.validate.is_none()
    }

    pub fn get(&self, stage: Stage) -> Option<&StageOverride> {
        match stage {
            Stage::Ingest => self.ingest.as_ref(),
            Stage::Etl => self.etl.as_ref(),
            Stage::Validate => self.validate.as_ref(),
        }
    }
}

/// A Kubernetes quantity (`500m`, `2Gi`, `1.5`, `1e3`), as controller-gen writes it for
/// `resource.Quantity`.
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// `resources` as Kubernetes' own schema, with each limit and request checked to be a
/// quantity: otherwise a malformed one (`2 GB`) is refused by the API server only when the
/// operator creates a Job, after the run has started. (A pattern, not CEL `isQuantity`: a CEL
/// rule over the unbounded maps of `ResourceRequirements` exceeds the API server's cost budget.)
pub fn resources_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <ResourceRequirements as JsonSchema>::json_schema(generator);
    let quantity = serde_json::json!({
        "x-kubernetes-int-or-string": true,
        // Applies to strings only: an integer is a quantity as it is.
        "pattern": QUANTITY_PATTERN,
    });
    for key in ["limits", "requests"] {
        if let Some(map) = schema
            .get_mut("properties")
            .and_then(|p| p.get_mut(key))
            .and_then(|m| m.as_object_mut())
        {
            map.insert("additionalProperties".to_owned(), quantity.clone());
        }
    }
    schema
}

// ---------------------------------------------------------------------------------------------
// Schemas: bounds keep the CEL rules within the API server's cost budget.

/// Most entries of a labels, annotations or nodeSelector map, and of a list.
const MAX_ENTRIES: u32 = 64;
/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

fn string_map(value: serde_json::Value) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_ENTRIES,
        "additionalProperties": value,
    })
}

fn labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_map(
        serde_json::json!({"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}),
    )
}

fn node_selector_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    labels_schema(g)
}

fn annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // The API server bounds all of a pod's annotations to 256 KiB together.
    string_map(serde_json::json!({"type": "string", "maxLength": 65536}))
}

fn size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "maxLength": 64})
}

/// Kubernetes' own Toleration schema, with its `operator` and `effect` limited to the values
/// the API server takes, and its rules (an empty key needs `Exists`, `Exists` takes no value,
/// `tolerationSeconds` only with `NoExecute`) as CEL.
fn tolerations_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut item = <Toleration as JsonSchema>::json_schema(g);
    if let Some(props) = item.get_mut("properties").and_then(|p| p.as_object_mut()) {
        if let Some(op) = props.get_mut("operator").and_then(|o| o.as_object_mut()) {
            op.insert("enum".into(), serde_json::json!(["Exists", "Equal"]));
        }
        if let Some(effect) = props.get_mut("effect").and_then(|o| o.as_object_mut()) {
            effect.insert(
                "enum".into(),
                serde_json::json!(["NoSchedule", "PreferNoSchedule", "NoExecute", ""]),
            );
        }
        for key in ["key", "value"] {
            if let Some(s) = props.get_mut(key).and_then(|o| o.as_object_mut()) {
                s.insert("maxLength".into(), serde_json::json!(317));
            }
        }
    }
    item.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([
            {"rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
             "message": "tolerations: a toleration without a key needs operator Exists"},
            {"rule": "!(has(self.operator) && self.operator == 'Exists') || !has(self.value) || self.value == ''",
             "message": "tolerations: operator Exists takes no value"},
            {"rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "message": "tolerations: tolerationSeconds needs effect NoExecute"},
        ]),
    );
    schemars::json_schema!({"type": "array", "maxItems": MAX_ENTRIES, "items": item})
}

/// Kubernetes' Affinity schema without its descriptions (`kubectl explain pod.spec.affinity`
/// has them): in full, the four copies (the run's and each stage's) would make up most of the
/// CRD, and a client-side `kubectl apply` keeps the whole CRD in an annotation of 256 KiB.
/// The `operator` of each match expression is limited to the values the API server takes.
fn affinity_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Affinity as JsonSchema>::json_schema(g);
    strip_descriptions(schema.as_object_mut());
    let selector = ["In", "NotIn", "Exists", "DoesNotExist"];
    let node_selector = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"];
    if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for (name, sub) in props.iter_mut() {
            let operators: &[&str] = if name == "nodeAffinity" {
                &node_selector
            } else {
                &selector
            };
            limit_operators(sub, operators);
        }
    }
    schema
}

/// Gives every match expression's `operator` (an object with `key` and `operator` properties)
/// under `schema` an enum.
fn limit_operators(schema: &mut serde_json::Value, operators: &[&str]) {
    match schema {
        serde_json::Value::Object(o) => {
            if let Some(props) = o.get_mut("properties").and_then(|p| p.as_object_mut())
                && props.contains_key("key")
                && let Some(op) = props.get_mut("operator").and_then(|p| p.as_object_mut())
            {
                op.insert("enum".into(), serde_json::json!(operators));
            }
            for v in o.values_mut() {
                limit_operators(v, operators);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                limit_operators(item, operators);
            }
        }
        _ => {}
    }
}

fn strip_descriptions(schema: Option<&mut serde_json::Map<String, serde_json::Value>>) {
    let Some(schema) = schema else { return };
    // A string `description` is a schema's; a property named `description` is an object.
    if schema.get("description").is_some_and(|d| d.is_string()) {
        schema.remove("description");
    }
    for value in schema.values_mut() {
        match value {
            serde_json::Value::Object(o) => strip_descriptions(Some(o)),
            serde_json::Value::Array(items) => {
                for item in items {
                    strip_descriptions(item.as_object_mut());
                }
            }
            _ => {}
        }
    }
}

fn image_pull_secrets_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut item = <LocalObjectReference as JsonSchema>::json_schema(g);
    if let Some(name) = item
        .get_mut("properties")
        .and_then(|p| p.get_mut("name"))
        .and_then(|n| n.as_object_mut())
    {
        name.insert("minLength".into(), serde_json::json!(1));
    }
    item.insert("required".into(), serde_json::json!(["name"]));
    schemars::json_schema!({"type": "array", "maxItems": MAX_ENTRIES, "items": item})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_are_the_operators_and_the_job_controllers() {
        for key in [
            "streamflow.io/pipelinerun",
            "streamflow.io/anything",
            "batch.kubernetes.io/job-name",
            "job-name",
            "controller-uid",
            "app.kubernetes.io/managed-by",
        ] {
            assert!(is_reserved_label(key), "{key}");
        }
        for key in [
            "team",
            "app.kubernetes.io/name",
            "example.com/streamflow.io",
        ] {
            assert!(!is_reserved_label(key), "{key}");
        }
        assert!(is_reserved_annotation(
            "container.apparmor.security.beta.kubernetes.io/etl"
        ));
        assert!(!is_reserved_annotation("sidecar.istio.io/inject"));
        assert_eq!(
            reserved_keys_rule(&["a/"], &["b"]),
            "self.all(k, !(k.startsWith('a/') || k == 'b'))"
        );
    }
}
