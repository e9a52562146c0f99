//! Pod overrides of a run: where and how its stage pods run (`podTemplate`, run-wide) and what
//! one stage changes (`stageOverrides.<stage>`: its `resources` and `podTemplate`), merged by
//! [`stage_pod`] into what one stage's Job gets.
//! The fields and their admission rules are [`crate::api::pod_template`]'s.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::api::pipelinerun::RunTemplate;
use crate::api::pod_template::{PodMetadata, PodTemplate};
use crate::api::stage::Stage;

/// What one stage's pod gets: its container's resources and its pod template.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StagePod {
    pub resources: Option<ResourceRequirements>,
    pub template: PodTemplate,
}

/// The resources and pod template of `stage`: the stage's override of each field where it sets
/// one, else the run's. Labels and annotations are merged key by key (the stage's value wins);
/// every other field is replaced whole (a stage's `tolerations: []` clears the run's).
pub fn stage_pod(run: &RunTemplate, stage: Stage) -> StagePod {
    let over = run.stage_overrides.get(stage);
    let resources = over
        .and_then(|o| o.resources.clone())
        .or_else(|| run.resources.clone());
    let template = match over.and_then(|o| o.pod_template.as_ref()) {
        Some(stage_template) => merge(&run.pod_template, stage_template),
        None => run.pod_template.clone(),
    };
    StagePod {
        resources,
        template,
    }
}

/// `over` on top of `base`.
fn merge(base: &PodTemplate, over: &PodTemplate) -> PodTemplate {
    let keyed = |b: &BTreeMap<String, String>, o: &BTreeMap<String, String>| {
        let mut m = b.clone();
        m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    };
    PodTemplate {
        metadata: PodMetadata {
            labels: keyed(&base.metadata.labels, &over.metadata.labels),
            annotations: keyed(&base.metadata.annotations, &over.metadata.annotations),
        },
        node_selector: over
            .node_selector
            .clone()
            .or_else(|| base.node_selector.clone()),
        tolerations: over
            .tolerations
            .clone()
            .or_else(|| base.tolerations.clone()),
        affinity: over.affinity.clone().or_else(|| base.affinity.clone()),
        image_pull_secrets: over
            .image_pull_secrets
            .clone()
            .or_else(|| base.image_pull_secrets.clone()),
        priority_class_name: over
            .priority_class_name
            .clone()
            .or_else(|| base.priority_class_name.clone()),
        tmp_dir_size_limit: over
            .tmp_dir_size_limit
            .clone()
            .or_else(|| base.tmp_dir_size_limit.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipelinerun::PipelineRunSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn template(extra: serde_json::Value) -> RunTemplate {
        let mut spec = json!({
            "interval": {"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z"},
            "kafka": {"bootstrap": "k:9092"},
            "storage": {"landing": "s3://l/raw", "gold": "s3://g/t"},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value::<PipelineRunSpec>(spec)
            .unwrap()
            .template
    }

    #[test]
    fn nothing_set_gives_nothing() {
        for stage in Stage::ALL {
            assert_eq!(stage_pod(&template(json!({})), stage), StagePod::default());
        }
    }

    #[test]
    fn a_stage_beats_the_run_field_by_field_and_merges_metadata_by_key() {
        let t = template(json!({
            "resources": {"requests": {"cpu": "250m"}},
            "podTemplate": {
                "metadata": {"labels": {"team": "data", "tier": "batch"},
                    "annotations": {"sidecar.istio.io/inject": "false"}},
                "nodeSelector": {"pool": "batch"},
                "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
                "imagePullSecrets": [{"name": "registry"}],
                "priorityClassName": "batch-low",
                "tmpDirSizeLimit": "1Gi",
            },
            "stageOverrides": {"etl": {
                "resources": {"limits": {"memory": "4Gi"}},
                "podTemplate": {
                    "metadata": {"labels": {"tier": "heavy"}},
                    "nodeSelector": {"pool": "highmem"},
                    "tolerations": [],
                    "tmpDirSizeLimit": "20Gi",
                },
            }},
        }));
        let etl = stage_pod(&t, Stage::Etl);
        let q = |s: &str| Quantity(s.to_owned());
        assert_eq!(
            etl.resources.unwrap().limits.unwrap()["memory"],
            q("4Gi"),
            "the stage's resources replace the run's"
        );
        let e = etl.template;
        assert_eq!(
            e.metadata.labels,
            BTreeMap::from([
                ("team".into(), "data".into()),
                ("tier".into(), "heavy".into())
            ])
        );
        assert_eq!(e.metadata.annotations["sidecar.istio.io/inject"], "false");
        assert_eq!(
            e.node_selector.unwrap(),
            BTreeMap::from([("pool".into(), "highmem".into())]),
            "replaced whole, not merged"
        );
        assert_eq!(
            e.tolerations,
            Some(vec![]),
            "an empty list clears the run's"
        );
        assert_eq!(e.tmp_dir_size_limit, Some(q("20Gi")));
        // Not set by the stage: the run's.
        assert_eq!(e.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(e.priority_class_name.as_deref(), Some("batch-low"));

        // A stage without overrides has the run's settings as they are.
        let ingest = stage_pod(&t, Stage::Ingest);
        assert_eq!(ingest.resources, t.resources);
        assert_eq!(ingest.template, t.pod_template);
    }
}
