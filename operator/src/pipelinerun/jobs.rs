//! Building the batch/v1 Job of a stage attempt, and reading Jobs (and their Pods' termination
//! messages) back into what `status` decides on. Pure functions: no API calls.

use std::collections::BTreeMap;

use sha2::Digest;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    Pod, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretEnvSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use streamflow_core::exit;

use crate::api::labels::{
    LABEL_ATTEMPT, LABEL_CONSUMER_GROUP, LABEL_MANAGED_BY, LABEL_RUN, LABEL_STAGE, MANAGER,
};
use crate::api::pipelinerun::{IntervalSpec, MAX_RUN_NAME, PipelineRun};
use crate::api::pod_template::{PodTemplate, is_reserved_annotation, is_reserved_label};
use crate::api::stage::Stage;
use crate::pipelinerun::kafka_secrets::kafka_secret_files;
use crate::pipelinerun::pod_overrides;
use crate::{Error, to_chrono};

/// How long a finished Job (and its Pod, with the logs) stays when the run does not say: a day,
/// long enough to read its logs, short enough that a Backfill of thousands of intervals does
/// not leave thousands of Jobs; the run's status keeps each attempt's result.
pub const DEFAULT_JOB_TTL_SECONDS: i32 = 86_400;
/// Where the stage writes its summary, which Kubernetes turns into the termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Where the checks ConfigMap is mounted in the validate container.
pub const CHECKS_DIR: &str = "/etc/streamflow/checks";

/// `<run>-<stage>-<attempt>`: deterministic, so creating it twice is harmless.
pub fn job_name(run: &str, stage: Stage, attempt: u32) -> String {
    format!("{run}-{stage}-{attempt}")
}

/// A run's gold location: `storage.gold` with `{start}`, `{end}` (UTC, `20261124T130000Z`)
/// and `{date}` (the start's, `2026-11-24`) replaced by its interval's. A gold partition is a
/// date, and a run replaces its dates' partitions with what its interval holds: runs of less
/// than a day (an hourly Pipeline or Backfill) need a location each, or each would replace its
/// day's partition with its own hour.
pub fn gold_location(template: &str, interval: &IntervalSpec) -> String {
    const STAMP: &str = "%Y%m%dT%H%M%SZ";
    template
        .replace("{start}", &interval.start.format(STAMP).to_string())
        .replace("{end}", &interval.end.format(STAMP).to_string())
        .replace("{date}", &interval.start.format("%Y-%m-%d").to_string())
}

/// `group` as a label value: itself when it is one, else `sha256-` and 16 hex digits of it.
pub fn consumer_group_label(group: &str) -> String {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = group.len() <= 63
        && alnum(group.chars().next())
        && alnum(group.chars().last())
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        return group.to_owned();
    }
    let digest = sha2::Sha256::digest(group.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256-{hex}")
}

/// A Job that has not finished (no `Complete`, `Failed` or their `*Target` condition yet).
pub fn is_unfinished(job: &Job) -> bool {
    !job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.status == "True"
                    && matches!(
                        c.type_.as_str(),
                        "Complete" | "Failed" | "SuccessCriteriaMet" | "FailureTarget"
                    )
            })
        })
}

/// The label selector of every Job (and Pod) of a run.
pub fn run_selector(run: &str) -> String {
    format!("{LABEL_RUN}={run}")
}

/// The Job running `attempt` of `stage` of `run`.
pub fn build_job(run: &PipelineRun, stage: Stage, attempt: u32) -> Result<Job, Error> {
    let name = run.name_any();
    if name.len() > MAX_RUN_NAME {
        return Err(Error::InvalidSpec {
            field: "metadata.name",
            message: format!("{name:?} is longer than {MAX_RUN_NAME} characters"),
        });
    }
    let owner = run.controller_owner_ref(&()).ok_or(Error::MissingField {
        object: name.clone(),
        field: "metadata.uid",
    })?;
    let spec = &run.spec.template;
    let stage_pod = pod_overrides::stage_pod(spec, stage);
    let mut labels = BTreeMap::from([
        (LABEL_RUN.to_owned(), name.clone()),
        (LABEL_STAGE.to_owned(), stage.to_string()),
        (LABEL_ATTEMPT.to_owned(), attempt.to_string()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ]);
    if let (Stage::Ingest, Some(group)) = (stage, &spec.kafka.group) {
        labels.insert(LABEL_CONSUMER_GROUP.to_owned(), consumer_group_label(group));
    }
    let interval = run.spec.interval.arg();
    let mut args = vec![stage.to_string()];
    let mut push = |flag: &str, value: &str| {
        args.push(flag.to_owned());
        args.push(value.to_owned());
    };
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    match stage {
        Stage::Ingest => {
            push("--bootstrap", &spec.kafka.bootstrap);
            for topic in &spec.kafka.topics {
                push("--topic", topic);
            }
            push("--landing", &spec.storage.landing);
            if let Some(compression) = spec.storage.landing_compression {
                push("--compression", compression.arg());
            }
            match &spec.kafka.group {
                Some(group) => push("--group", group),
                None => push("--interval", &interval),
            }
        }
        Stage::Etl => {
            push("--interval", &interval);
            push("--landing", &spec.storage.landing);
            push(
                "--gold",
                &gold_location(&spec.storage.gold, &run.spec.interval),
            );
            if let Some(profile) = &spec.etl.profile {
                push("--profile", profile);
            }
            if let Some(limit) = &spec.etl.memory_limit {
                push("--memory-limit", limit);
            }
            if let Some(buckets) = spec.etl.buckets {
                push("--buckets", &buckets.to_string());
            }
        }
        Stage::Validate => {
            push("--interval", &interval);
            push(
                "--gold",
                &gold_location(&spec.storage.gold, &run.spec.interval),
            );
            push("--landing", &spec.storage.landing);
            if let Some(cm) = &spec.validation.checks_config_map {
                push("--checks", &format!("{CHECKS_DIR}/{}", cm.key));
                volumes.push(Volume {
                    name: "checks".to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: cm.name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name: "checks".to_owned(),
                    mount_path: CHECKS_DIR.to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
        }
    }
    // Which topic carries each schema: ingest checks records by it, the ETL and validate read
    // each schema's topic.
    if let Some(topic) = &spec.kafka.user_events_topic {
        push("--user-events-topic", topic);
    }
    if let Some(topic) = &spec.kafka.transaction_events_topic {
        push("--transaction-events-topic", topic);
    }
    push("--summary-file", TERMINATION_LOG);
    if stage == Stage::Ingest {
        let secured = kafka_secret_files(&spec.kafka)?;
        args.extend(secured.args);
        volumes.extend(secured.volumes);
        mounts.extend(secured.mounts);
    }
    volumes.push(tmp_volume(stage_pod.template.tmp_dir_size_limit.clone()));
    mounts.push(VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..Default::default()
    });

    let mut env = Vec::new();
    let mut var = |name: &str, value: &str| {
        env.push(EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            ..Default::default()
        })
    };
    if let Some(endpoint) = &spec.storage.endpoint {
        var("AWS_ENDPOINT_URL", endpoint);
    }
    if let Some(region) = &spec.storage.region {
        var("AWS_REGION", region);
    }
    if let Some(allow) = spec.storage.allow_http {
        var("AWS_ALLOW_HTTP", if allow { "true" } else { "false" });
    }
    let mut env_from = Vec::new();
    if let Some(secret) = &spec.storage.credentials_secret_ref {
        env_from.push(secret_env(&secret.name));
    }
    if stage == Stage::Ingest
        && let Some(secret) = &spec.kafka.secret_ref
    {
        env_from.push(secret_env(&secret.name));
    }

    let container = Container {
        name: stage.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        command: Some(vec!["streamflow".to_owned()]),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: stage_pod.resources,
        termination_message_path: Some(TERMINATION_LOG.to_owned()),
        // A stage that dies before writing its summary leaves its last log lines instead.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        security_context: Some(restricted_container_security()),
        ..Default::default()
    };
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, stage, attempt)),
            namespace: run.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // Retries are the operator's (with backoff and a status per attempt).
            backoff_limit: Some(0),
            pod_failure_policy: Some(pod_failure_policy(&stage.to_string())),
            active_deadline_seconds: spec.stage_deadline_seconds,
            ttl_seconds_after_finished: Some(
                spec.ttl_seconds_after_finished
                    .unwrap_or(DEFAULT_JOB_TTL_SECONDS),
            ),
            template: PodTemplateSpec {
                metadata: Some(pod_metadata(labels, &stage_pod.template)),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    // A stage reaches its servers by name; the variables Kubernetes would set
                    // for every Service of the namespace could only collide with its own
                    // (Strimzi's `streamflow-kafka-bootstrap` gives STREAMFLOW_KAFKA_BOOTSTRAP_*).
                    enable_service_links: Some(false),
                    service_account_name: spec.service_account_name.clone(),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    Ok(with_pod_template(job, stage_pod.template))
}

/// `/tmp`, an emptyDir: the root filesystem is read-only (restricted Pod Security) and the ETL
/// spills there. `size_limit`: the pod's `podTemplate.tmpDirSizeLimit`.
fn tmp_volume(size_limit: Option<Quantity>) -> Volume {
    Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A stage pod's labels and annotations: the pod template's, with the operator's labels on top
/// and the keys a template may not set left out (admission refuses them already).
fn pod_metadata(ours: BTreeMap<String, String>, template: &PodTemplate) -> ObjectMeta {
    let allowed = |map: &BTreeMap<String, String>, reserved: fn(&str) -> bool| {
        map.iter()
            .filter(|(k, _)| !reserved(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut labels = allowed(&template.metadata.labels, is_reserved_label);
    labels.extend(ours);
    let annotations = allowed(&template.metadata.annotations, is_reserved_annotation);
    ObjectMeta {
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..Default::default()
    }
}

/// The scheduling fields of a pod template (the metadata is [`pod_metadata`]'s, `/tmp`'s size
/// [`tmp_volume`]'s) on a stage Job's pod spec. Nothing here touches its security settings.
fn with_pod_template(mut job: Job, template: PodTemplate) -> Job {
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.node_selector = template.node_selector;
        pod.tolerations = template.tolerations;
        pod.affinity = template.affinity;
        pod.image_pull_secrets = template.image_pull_secrets;
        pod.priority_class_name = template.priority_class_name;
    }
    job
}

/// How the Job controller treats a failed Pod of a stage (rules apply in order, first match
/// wins; podFailurePolicy needs `restartPolicy: Never`, which stage Pods have):
/// - a Pod disrupted (preempted, evicted by a drain or for node pressure, its node gone: the
///   `DisruptionTarget` condition) says nothing of the stage: `Ignore` replaces it within the
///   same attempt, not counted against `backoffLimit: 0`, so no operator retry is spent on it;
/// - the job image's permanent exit codes (`streamflow_core::exit::PERMANENT`) fail the Job
///   with reason `PodFailurePolicy`, which the operator reads (as it reads the exit code) to
///   spend no retry on a failure that would happen again. (With `backoffLimit: 0` the Job would
///   fail anyway; the reason is what says why, even once the Pod is gone.)
fn pod_failure_policy(container: &str) -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".to_owned(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".to_owned(),
                    status: Some("True".to_owned()),
                }]),
                on_exit_codes: None,
            },
            PodFailurePolicyRule {
                action: "FailJob".to_owned(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(container.to_owned()),
                    operator: "In".to_owned(),
                    values: exit::PERMANENT.iter().map(|c| i32::from(*c)).collect(),
                }),
                on_pod_conditions: None,
            },
        ],
    }
}

/// What the `restricted` Pod Security Standard asks of a container: stage pods run in
/// namespaces that enforce it.
fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: &str) -> EnvFromSource {
    EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: name.to_owned(),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// What a Job of a run tells the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedJob {
    pub name: String,
    pub stage: Stage,
    pub attempt: u32,
    pub state: JobState,
    pub start_time: Option<DateTime<Utc>>,
    pub finish_time: Option<DateTime<Utc>>,
    /// The termination message of its Pod's container: the stage summary, or the last log
    /// lines of a failed stage.
    pub termination_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Active,
    Succeeded,
    /// `container`: how its container ended, when that says more than the exit code (the
    /// kubelet's reason and the exit code: "OOMKilled (exit code 137, memory limit 20Mi)").
    /// `exit_code`: its container's, when a Pod of it says (the job image's codes are
    /// `streamflow_core::exit`).
    Failed {
        reason: String,
        message: String,
        container: Option<String>,
        exit_code: Option<i32>,
    },
    /// Active, but its Pod's container cannot start and will not without a change: the
    /// kubelet's waiting reason (one of [`STUCK_REASONS`]) and message.
    Stuck {
        reason: String,
        message: String,
    },
    /// Active, and its Pod has not started, for a reason that may pass (a Pod the scheduler
    /// cannot place yet, a container still being created or its image pulled): the scheduler's
    /// or kubelet's reason and message, shown in status until it starts or a start-up timeout
    /// fails the attempt. `since`: when that Pod was created (a Pod replacing a disrupted
    /// one starts late in its attempt, and has its own time to start).
    NotStarted {
        reason: String,
        message: String,
        since: Option<DateTime<Utc>>,
    },
}

/// Waiting reasons of a container that the kubelet keeps retrying while nothing can change
/// but the spec or the cluster: the image cannot be pulled (after a failed pull, the kubelet
/// backs off), may not be pulled, has an invalid name, or the container cannot be created (a
/// missing Secret or ConfigMap key). An attempt in one of these fails at once (as a Tekton
/// TaskRun does on ImagePullBackOff unless `default-imagepullbackoff-timeout` grants a wait), and
/// the retry policy decides what comes next.
pub const STUCK_REASONS: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// A Job the API server refused to create (400, 422: a bad `imagePullPolicy`, `resources`): the
/// attempt failed, with the server's message. The same spec gives the same Job, so this is
/// permanent.
pub fn refused(run: &str, stage: Stage, attempt: u32, message: String) -> ObservedJob {
    ObservedJob {
        name: job_name(run, stage, attempt),
        stage,
        attempt,
        state: JobState::Failed {
            reason: REFUSED.to_owned(),
            message,
            container: None,
            exit_code: None,
        },
        start_time: None,
        finish_time: None,
        termination_message: None,
    }
}

/// The reason of an attempt whose Job the API server refused.
pub const REFUSED: &str = "JobRefused";
/// The reason the Job controller gives a Job failed by a podFailurePolicy FailJob rule.
pub const POD_FAILURE_POLICY: &str = "PodFailurePolicy";

/// Reads a Job of this operator (by its labels) and its Pods' termination messages; `None` for
/// a Job without our labels.
pub fn observe(job: &Job, pods: &[Pod]) -> Option<ObservedJob> {
    let labels = job.metadata.labels.as_ref()?;
    let stage = match labels.get(LABEL_STAGE)?.as_str() {
        "ingest" => Stage::Ingest,
        "etl" => Stage::Etl,
        "validate" => Stage::Validate,
        _ => return None,
    };
    let attempt: u32 = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    let name = job.metadata.name.clone()?;
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let is_true = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let job_pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata.labels.as_ref().and_then(|l| {
                l.get("job-name")
                    .or_else(|| l.get("batch.kubernetes.io/job-name"))
            }) == Some(&name)
        })
        .collect();
    let statuses = || {
        job_pods
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
    };
    let termination_message = statuses()
        .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref()?.message.clone())
        .find(|m| !m.trim().is_empty());
    // The Pod the Job controller made last: after a disruption (ignored by the
    // podFailurePolicy) the Job has a replacement, and the replaced one says nothing more.
    let newest = job_pods
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let state = if is_true("Complete").is_some() || is_true("SuccessCriteriaMet").is_some() {
        JobState::Succeeded
    } else if let Some(c) = is_true("Failed") {
        JobState::Failed {
            reason: c.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
            message: c.message.clone().unwrap_or_default(),
            container: job_pods.iter().find_map(|p| container_end(p)),
            exit_code: newest.and_then(|p| exit_code(p)).or_else(|| {
                job_pods
                    .iter()
                    .filter_map(|p| exit_code(p))
                    .find(|c| *c != 0)
            }),
        }
    } else if let Some(waiting) = statuses()
        .filter_map(|cs| cs.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            w.reason
                .as_deref()
                .is_some_and(|r| STUCK_REASONS.contains(&r))
        })
    {
        JobState::Stuck {
            reason: waiting.reason.clone().unwrap_or_default(),
            message: waiting.message.clone().unwrap_or_default(),
        }
    } else if let Some(pod) = newest
        && let Some((reason, message)) = not_started(pod)
    {
        JobState::NotStarted {
            reason,
            message,
            since: pod.metadata.creation_timestamp.as_ref().and_then(to_chrono),
        }
    } else {
        JobState::Active
    };
    let finish_time = status
        .completion_time
        .as_ref()
        .and_then(to_chrono)
        .or_else(|| {
            conditions
                .iter()
                .filter(|c| c.status == "True" && (c.type_ == "Failed" || c.type_ == "Complete"))
                .find_map(|c| c.last_transition_time.as_ref().and_then(to_chrono))
        });
    Some(ObservedJob {
        name,
        stage,
        attempt,
        state,
        start_time: status.start_time.as_ref().and_then(to_chrono),
        finish_time,
        termination_message,
    })
}

/// The exit code of a Pod's terminated container.
fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|cs| Some(cs.state.as_ref()?.terminated.as_ref()?.exit_code))
}

/// Why a Pod has not started, when something says so: the scheduler cannot place it
/// (`PodScheduled` False, `Unschedulable` and which nodes lack what), or its container waits
/// (`ContainerCreating` with a volume that will not mount, `ErrImagePull`). A Pod with no
/// status yet says nothing: it was created a moment ago.
fn not_started(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some((
            c.reason.clone().unwrap_or_else(|| "Unscheduled".to_owned()),
            c.message.clone().unwrap_or_default(),
        ));
    }
    let statuses = status.container_statuses.as_ref()?;
    if statuses.is_empty() {
        return None;
    }
    let mut waiting = None;
    for cs in statuses {
        let state = cs.state.as_ref()?;
        if state.running.is_some() || state.terminated.is_some() {
            return None;
        }
        if waiting.is_none()
            && let Some(w) = &state.waiting
        {
            waiting = Some((
                w.reason.clone().unwrap_or_else(|| "Waiting".to_owned()),
                w.message.clone().unwrap_or_default(),
            ));
        }
    }
    waiting
}

/// How a Pod's container ended, when the kubelet gave a reason other than a plain non-zero
/// exit ("Error"): "OOMKilled (exit code 137, memory limit 20Mi)".
fn container_end(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?;
    status.iter().find_map(|cs| {
        let t = cs.state.as_ref()?.terminated.as_ref()?;
        let reason = t
            .reason
            .as_deref()
            .filter(|r| *r != "Error" && *r != "Completed")?;
        let limit = pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == cs.name)
            .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
            .map(|q| format!(", memory limit {}", q.0));
        Some(format!(
            "{reason} (exit code {}{})",
            t.exit_code,
            if reason == "OOMKilled" {
                limit.unwrap_or_default()
            } else {
                String::new()
            }
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_consumer_group_is_its_own_label_value_or_a_hash() {
        assert_eq!(
            consumer_group_label("streamflow-daily.v2"),
            "streamflow-daily.v2"
        );
        let odd = consumer_group_label("team/orders:prod");
        assert!(odd.starts_with("sha256-") && odd.len() == 23, "{odd}");
        assert_eq!(odd, consumer_group_label("team/orders:prod"), "stable");
        assert_ne!(odd, consumer_group_label("team/orders:test"));
        assert!(consumer_group_label(&"g".repeat(64)).starts_with("sha256-"));
        assert!(consumer_group_label("-lead").starts_with("sha256-"));
    }
    use crate::api::pipelinerun::PipelineRunSpec;

    pub(crate) fn run(spec: serde_json::Value) -> PipelineRun {
        let mut base = serde_json::json!({
            "interval": {"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z"},
            "kafka": {"bootstrap": "kafka:9092", "topics": ["user_events"]},
            "storage": {"landing": "s3://landing/raw", "gold": "s3://gold/tables",
                "endpoint": "http://s3:9000", "allowHttp": true,
                "credentialsSecretRef": {"name": "s3"}},
        });
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            for (k, v) in s {
                b.insert(k.clone(), v.clone());
            }
        }
        let spec: PipelineRunSpec = serde_json::from_value(base).unwrap();
        let mut run = PipelineRun::new("daily", spec);
        run.metadata.namespace = Some("data".into());
        run.metadata.uid = Some("uid-1".into());
        run.metadata.generation = Some(1);
        run
    }

    fn container(job: &Job) -> Container {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .clone()
    }

    #[test]
    fn every_stage_is_told_which_topic_carries_each_schema() {
        let renamed = run(serde_json::json!({"kafka": {"bootstrap": "kafka:9092",
            "userEventsTopic": "clicks", "transactionEventsTopic": "payments"}}));
        for stage in Stage::ALL {
            let args = container(&build_job(&renamed, stage, 1).unwrap())
                .args
                .unwrap();
            let value = |flag: &str| {
                let at = args.iter().position(|a| a == flag);
                at.map(|i| args[i + 1].as_str())
            };
            assert_eq!(value("--user-events-topic"), Some("clicks"), "{stage}");
            assert_eq!(
                value("--transaction-events-topic"),
                Some("payments"),
                "{stage}"
            );
        }
        // Unset: the image's defaults, today's names.
        let args = container(&build_job(&run(serde_json::json!({})), Stage::Etl, 1).unwrap())
            .args
            .unwrap();
        assert!(
            !args.iter().any(|a| a.ends_with("-events-topic")),
            "{args:?}"
        );
    }

    #[test]
    fn ingest_job_is_named_owned_and_runs_the_stage() {
        let job = build_job(
            &run(serde_json::json!({"stageDeadlineSeconds": 600})),
            Stage::Ingest,
            2,
        )
        .unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("daily-ingest-2"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("data"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("PipelineRun", "uid-1", Some(true))
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_ATTEMPT], "2");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(600))
        );
        assert_eq!(
            spec.ttl_seconds_after_finished,
            Some(DEFAULT_JOB_TTL_SECONDS),
            "finished Jobs go by default"
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(
            pod.enable_service_links,
            Some(false),
            "no STREAMFLOW_KAFKA_BOOTSTRAP_* from a Service beside the run"
        );
        let c = container(&job);
        assert_eq!(c.command, Some(vec!["streamflow".to_owned()]));
        assert_eq!(
            c.args.unwrap(),
            [
                "ingest",
                "--bootstrap",
                "kafka:9092",
                "--topic",
                "user_events",
                "--landing",
                "s3://landing/raw",
                "--interval",
                "2026-11-24T00:00:00Z/2026-11-25T00:00:00Z",
                "--summary-file",
                "/dev/termination-log"
            ]
        );
        assert_eq!(c.termination_message_path.as_deref(), Some(TERMINATION_LOG));
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let env: Vec<(String, String)> = c
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert!(env.contains(&("AWS_ENDPOINT_URL".into(), "http://s3:9000".into())));
        assert!(env.contains(&("AWS_ALLOW_HTTP".into(), "true".into())));
        assert_eq!(
            c.env_from.unwrap()[0].secret_ref.as_ref().unwrap().name,
            "s3"
        );
    }

    #[test]
    fn ingest_with_a_group_drains_to_the_watermarks() {
        let job = build_job(
            &run(serde_json::json!({"kafka": {"bootstrap": "k:1", "group": "g"}})),
            Stage::Ingest,
            1,
        )
        .unwrap();
        let args = container(&job).args.unwrap();
        assert!(args.windows(2).any(|w| w == ["--group", "g"]));
        assert!(!args.contains(&"--interval".to_owned()));
    }

    #[test]
    fn ingest_compresses_landing_objects_as_the_spec_says() {
        let with = |compression: &str| {
            run(
                serde_json::json!({"storage": {"landing": "s3://l/raw", "gold": "s3://g/t",
                "landingCompression": compression}}),
            )
        };
        for value in ["none", "gzip", "zstd"] {
            let args = container(&build_job(&with(value), Stage::Ingest, 1).unwrap())
                .args
                .unwrap();
            assert!(
                args.windows(2).any(|w| w == ["--compression", value]),
                "{args:?}"
            );
        }
        // Unset: the image's default, so no flag.
        let args = container(&build_job(&run(serde_json::json!({})), Stage::Ingest, 1).unwrap())
            .args
            .unwrap();
        assert!(!args.contains(&"--compression".to_owned()), "{args:?}");
        // The ETL reads whatever each object was written with: no flag there.
        let etl = container(&build_job(&with("zstd"), Stage::Etl, 1).unwrap())
            .args
            .unwrap();
        assert!(!etl.contains(&"--compression".to_owned()), "{etl:?}");
    }

    #[test]
    fn etl_and_validate_get_their_parameters() {
        let r = run(serde_json::json!({
            "etl": {"profile": "production", "memoryLimit": "2GiB", "buckets": 4},
            "validation": {"checksConfigMap": {"name": "checks"}},
        }));
        let etl = container(&build_job(&r, Stage::Etl, 1).unwrap())
            .args
            .unwrap();
        for pair in [
            ["--profile", "production"],
            ["--memory-limit", "2GiB"],
            ["--buckets", "4"],
            ["--gold", "s3://gold/tables"],
        ] {
            assert!(etl.windows(2).any(|w| w == pair), "{pair:?} not in {etl:?}");
        }
        let job = build_job(&r, Stage::Validate, 1).unwrap();
        let c = container(&job);
        assert!(
            c.args
                .unwrap()
                .windows(2)
                .any(|w| w == ["--checks", "/etc/streamflow/checks/checks.yaml"])
        );
        assert_eq!(c.volume_mounts.unwrap()[0].mount_path, CHECKS_DIR);
        let vols = job.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        assert_eq!(vols[0].config_map.as_ref().unwrap().name, "checks");
    }

    #[test]
    fn the_gold_location_can_name_the_interval() {
        let r = run(serde_json::json!({
            "interval": {"start": "2026-11-24T13:00:00Z", "end": "2026-11-24T14:00:00Z"},
            "storage": {"landing": "s3://l/raw", "gold": "s3://g/hourly/{date}/{start}-{end}"},
        }));
        for stage in [Stage::Etl, Stage::Validate] {
            let args = container(&build_job(&r, stage, 1).unwrap()).args.unwrap();
            assert!(
                args.windows(2).any(|w| w
                    == [
                        "--gold",
                        "s3://g/hourly/2026-11-24/20261124T130000Z-20261124T140000Z"
                    ]),
                "{stage}: {args:?}"
            );
        }
        let plain = run(serde_json::json!({}));
        assert_eq!(
            gold_location(&plain.spec.template.storage.gold, &plain.spec.interval),
            "s3://gold/tables"
        );
    }

    /// Every pod override, run-wide and for the ETL.
    fn overridden() -> PipelineRun {
        run(serde_json::json!({
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
            "podTemplate": {
                "metadata": {"labels": {"team": "data"},
                    "annotations": {"sidecar.istio.io/inject": "false"}},
                "nodeSelector": {"pool": "batch"},
                "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone",
                        "operator": "In", "values": ["a"]}]}]}}},
                "imagePullSecrets": [{"name": "registry"}],
                "priorityClassName": "batch-low",
                "tmpDirSizeLimit": "1Gi",
            },
            "stageOverrides": {"etl": {
                "resources": {"limits": {"memory": "4Gi"}},
                "podTemplate": {"metadata": {"labels": {"team": "etl"}},
                    "priorityClassName": "batch-high", "tmpDirSizeLimit": "20Gi"},
            }},
        }))
    }

    fn pod_of(job: &Job) -> (ObjectMeta, PodSpec) {
        let template = job.spec.clone().unwrap().template;
        (template.metadata.unwrap(), template.spec.unwrap())
    }

    fn tmp_size(pod: &PodSpec) -> Option<String> {
        let tmp = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "tmp")
            .unwrap();
        Some(tmp.empty_dir.clone()?.size_limit?.0)
    }

    #[test]
    fn pod_overrides_reach_each_stages_pod_and_a_stages_own_win() {
        let r = overridden();
        let ingest = build_job(&r, Stage::Ingest, 1).unwrap();
        let (meta, pod) = pod_of(&ingest);
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "data");
        assert_eq!(labels[LABEL_STAGE], "ingest", "the operator's labels stay");
        assert!(
            !ingest
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("team"),
            "pod labels, not the Job's"
        );
        assert_eq!(
            meta.annotations.unwrap()["sidecar.istio.io/inject"],
            "false"
        );
        assert_eq!(tmp_size(&pod).as_deref(), Some("1Gi"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "batch");
        let toleration = &pod.tolerations.unwrap()[0];
        assert_eq!(
            (toleration.key.as_deref(), toleration.operator.as_deref()),
            (Some("batch"), Some("Exists"))
        );
        let terms = pod
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms[0].match_expressions.as_ref().unwrap()[0].key, "zone");
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(pod.priority_class_name.as_deref(), Some("batch-low"));
        let requests = container(&ingest).resources.unwrap().requests.unwrap();
        assert_eq!(requests["cpu"].0, "250m");

        // The ETL's own settings beat the run's; what it does not set is the run's.
        let etl = build_job(&r, Stage::Etl, 1).unwrap();
        let (meta, pod) = pod_of(&etl);
        assert_eq!(meta.labels.unwrap()["team"], "etl");
        assert_eq!(pod.priority_class_name.as_deref(), Some("batch-high"));
        assert_eq!(tmp_size(&pod).as_deref(), Some("20Gi"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "batch");
        let resources = container(&etl).resources.unwrap();
        assert_eq!(resources.limits.unwrap()["memory"].0, "4Gi");
        assert_eq!(
            resources.requests, None,
            "the stage's resources replace the run's"
        );

        // None set: none of it, and /tmp has no limit.
        let (meta, pod) = pod_of(&build_job(&run(serde_json::json!({})), Stage::Etl, 1).unwrap());
        assert_eq!(meta.annotations, None);
        assert_eq!(tmp_size(&pod), None);
        assert_eq!(
            (pod.node_selector, pod.tolerations, pod.affinity),
            (None, None, None)
        );
        assert_eq!(
            (pod.image_pull_secrets, pod.priority_class_name),
            (None, None)
        );
    }

    #[test]
    fn a_pod_template_cannot_take_the_labels_the_operator_finds_pods_by() {
        // Admission refuses these; a run stored without that check still gets the operator's.
        let mut r = run(serde_json::json!({}));
        r.spec.template.pod_template.metadata.labels = BTreeMap::from([
            (LABEL_STAGE.to_owned(), "etl".to_owned()),
            (LABEL_RUN.to_owned(), "other".to_owned()),
            ("job-name".to_owned(), "other-ingest-1".to_owned()),
            ("team".to_owned(), "data".to_owned()),
        ]);
        r.spec.template.pod_template.metadata.annotations = BTreeMap::from([(
            "container.apparmor.security.beta.kubernetes.io/ingest".to_owned(),
            "unconfined".to_owned(),
        )]);
        let (meta, _) = pod_of(&build_job(&r, Stage::Ingest, 1).unwrap());
        let labels = meta.labels.unwrap();
        assert_eq!(
            (labels[LABEL_STAGE].as_str(), labels[LABEL_RUN].as_str()),
            ("ingest", "daily")
        );
        assert!(!labels.contains_key("job-name"), "{labels:?}");
        assert_eq!(labels["team"], "data");
        assert_eq!(meta.annotations, None);
    }

    #[test]
    fn overrides_leave_the_restricted_security_settings_as_they_are() {
        for stage in Stage::ALL {
            let (_, plain) = pod_of(&build_job(&run(serde_json::json!({})), stage, 1).unwrap());
            let (_, pod) = pod_of(&build_job(&overridden(), stage, 1).unwrap());
            assert_eq!(pod.security_context, plain.security_context);
            assert_eq!(
                pod.security_context.as_ref().unwrap().run_as_non_root,
                Some(true)
            );
            assert_eq!(
                pod.containers[0].security_context,
                plain.containers[0].security_context
            );
            assert_eq!(
                pod.containers[0].security_context,
                Some(restricted_container_security())
            );
            // Nothing else of the pod that Pod Security judges changes.
            let judged = |p: &PodSpec| {
                (
                    p.host_network,
                    p.host_pid,
                    p.host_ipc,
                    p.service_account_name.clone(),
                    p.containers.len(),
                    p.volumes
                        .iter()
                        .flatten()
                        .map(|v| (v.name.clone(), v.host_path.is_some()))
                        .collect::<Vec<_>>(),
                )
            };
            assert_eq!(judged(&pod), judged(&plain), "{stage}");
        }
    }

    #[test]
    fn too_long_names_are_refused() {
        let mut r = run(serde_json::json!({}));
        r.metadata.name = Some("x".repeat(MAX_RUN_NAME + 1));
        assert!(
            build_job(&r, Stage::Etl, 1)
                .unwrap_err()
                .to_string()
                .contains("metadata.name")
        );
    }

    #[test]
    fn observe_reads_state_and_termination_message() {
        let job = build_job(&run(serde_json::json!({})), Stage::Validate, 3).unwrap();
        let mut failed = job.clone();
        failed.status = serde_json::from_value(serde_json::json!({
            "startTime": "2026-11-25T10:00:00Z",
            "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                "message": "too slow", "lastTransitionTime": "2026-11-25T10:05:00Z"}]
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"job-name": "daily-validate-3"}},
            "status": {"containerStatuses": [{"name": "validate", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "message": "error: boom"}}}]}
        }))
        .unwrap();
        let o = observe(&failed, &[pod]).unwrap();
        assert_eq!((o.stage, o.attempt), (Stage::Validate, 3));
        assert_eq!(
            o.state,
            JobState::Failed {
                reason: "DeadlineExceeded".into(),
                message: "too slow".into(),
                container: None,
                exit_code: Some(1),
            }
        );
        assert_eq!(o.termination_message.as_deref(), Some("error: boom"));
        assert_eq!(
            o.finish_time.unwrap().to_rfc3339(),
            "2026-11-25T10:05:00+00:00"
        );
        assert_eq!(observe(&job, &[]).unwrap().state, JobState::Active);
    }
}

#[cfg(test)]
mod pod_tests {
    use super::tests::run;
    use super::*;

    fn pod(job: &str, spec: serde_json::Value, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": job}},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn an_oom_killed_container_is_named_with_its_memory_limit() {
        let mut job = build_job(&run(serde_json::json!({})), Stage::Etl, 1).unwrap();
        job.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit"}]
        }))
        .unwrap();
        let killed = pod(
            "daily-etl-1",
            serde_json::json!({"containers": [{"name": "etl",
                "resources": {"limits": {"memory": "20Mi"}}}]}),
            serde_json::json!({"containerStatuses": [{"name": "etl", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137,
                "reason": "OOMKilled", "message": "WARN harmless line"}}}]}),
        );
        let JobState::Failed { container, .. } = observe(&job, &[killed]).unwrap().state else {
            panic!("not failed");
        };
        assert_eq!(
            container.as_deref(),
            Some("OOMKilled (exit code 137, memory limit 20Mi)")
        );

        let plain = pod(
            "daily-etl-1",
            serde_json::json!({"containers": [{"name": "etl"}]}),
            serde_json::json!({"containerStatuses": [{"name": "etl", "image": "i", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 1,
                "reason": "Error"}}}]}),
        );
        let JobState::Failed { container, .. } = observe(&job, &[plain]).unwrap().state else {
            panic!("not failed");
        };
        assert_eq!(container, None, "a plain non-zero exit says nothing more");
    }

    #[test]
    fn permanent_exit_codes_fail_the_job_and_disruptions_are_not_failures() {
        let job = build_job(&run(serde_json::json!({})), Stage::Validate, 1).unwrap();
        let spec = job.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.restart_policy.as_deref(),
            Some("Never"),
            "podFailurePolicy requires it"
        );
        let rules = spec.pod_failure_policy.unwrap().rules;
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].action, "Ignore");
        let on = rules[0].on_pod_conditions.clone().unwrap();
        assert_eq!(
            (on[0].type_.as_str(), on[0].status.as_deref()),
            ("DisruptionTarget", Some("True"))
        );
        assert_eq!(rules[1].action, "FailJob");
        let codes = rules[1].on_exit_codes.clone().unwrap();
        assert_eq!(
            (
                codes.container_name.as_deref(),
                codes.operator.as_str(),
                codes.values
            ),
            (Some("validate"), "In", vec![2, 3, 4])
        );
    }

    #[test]
    fn a_failed_jobs_exit_code_is_read_from_its_newest_pod() {
        let mut job = build_job(&run(serde_json::json!({})), Stage::Validate, 1).unwrap();
        job.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                "message": "Container validate for pod data/daily-validate-1-b failed with exit code 3 matching FailJob rule at index 1"}]
        }))
        .unwrap();
        let ended = |name: &str, created: &str, code: i32| {
            let mut p = pod(
                "daily-validate-1",
                serde_json::json!({"containers": [{"name": "validate"}]}),
                serde_json::json!({"containerStatuses": [{"name": "validate", "image": "i",
                    "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code, "reason": "Error"}}}]}),
            );
            p.metadata.name = Some(name.into());
            p.metadata.creation_timestamp =
                serde_json::from_value(serde_json::json!(created)).unwrap();
            p
        };
        // The first Pod was disrupted (exit 143 on SIGTERM) and replaced; the second failed.
        let pods = [
            ended("daily-validate-1-b", "2026-11-25T10:01:00Z", 3),
            ended("daily-validate-1-a", "2026-11-25T10:00:00Z", 143),
        ];
        let JobState::Failed {
            reason, exit_code, ..
        } = observe(&job, &pods).unwrap().state
        else {
            panic!("not failed");
        };
        assert_eq!((reason.as_str(), exit_code), (POD_FAILURE_POLICY, Some(3)));
    }

    #[test]
    fn a_pod_that_has_not_started_says_why() {
        let job = build_job(&run(serde_json::json!({})), Stage::Ingest, 1).unwrap();
        let unschedulable = pod(
            "daily-ingest-1",
            serde_json::json!({"containers": [{"name": "ingest"}]}),
            serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory."}]}),
        );
        assert_eq!(
            observe(&job, &[unschedulable]).unwrap().state,
            JobState::NotStarted {
                reason: "Unschedulable".into(),
                message: "0/1 nodes are available: 1 Insufficient memory.".into(),
                since: None,
            }
        );
        let creating = pod(
            "daily-ingest-1",
            serde_json::json!({"containers": [{"name": "ingest"}]}),
            serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "True"}], "containerStatuses": [{"name": "ingest", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(
            observe(&job, &[creating]).unwrap().state,
            JobState::NotStarted {
                reason: "ContainerCreating".into(),
                message: String::new(),
                since: None,
            }
        );
        // Running, or just created with no status yet: nothing to say.
        let running = pod(
            "daily-ingest-1",
            serde_json::json!({"containers": [{"name": "ingest"}]}),
            serde_json::json!({"phase": "Running", "containerStatuses": [{"name": "ingest",
                "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {}}}]}),
        );
        assert_eq!(observe(&job, &[running]).unwrap().state, JobState::Active);
        let fresh = pod(
            "daily-ingest-1",
            serde_json::json!({"containers": [{"name": "ingest"}]}),
            serde_json::json!({}),
        );
        assert_eq!(observe(&job, &[fresh]).unwrap().state, JobState::Active);
    }

    #[test]
    fn a_pod_that_cannot_pull_its_image_makes_the_job_stuck() {
        let job = build_job(&run(serde_json::json!({})), Stage::Ingest, 2).unwrap();
        let waiting = |reason: &str| {
            pod(
                "daily-ingest-2",
                serde_json::json!({"containers": [{"name": "ingest"}]}),
                serde_json::json!({"containerStatuses": [{"name": "ingest", "image": "i",
                    "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {
                    "reason": reason, "message": "Back-off pulling image \"x:1\""}}}]}),
            )
        };
        assert_eq!(
            observe(&job, &[waiting("ImagePullBackOff")]).unwrap().state,
            JobState::Stuck {
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image \"x:1\"".into()
            }
        );
        // The first failed pull may be a registry's hiccup: the kubelet retries it, so the
        // attempt has not started yet (shown, and bounded by the start-up timeout), not stuck.
        for reason in ["ErrImagePull", "ContainerCreating"] {
            assert_eq!(
                observe(&job, &[waiting(reason)]).unwrap().state,
                JobState::NotStarted {
                    reason: reason.into(),
                    message: "Back-off pulling image \"x:1\"".into(),
                    since: None,
                }
            );
        }
        // Another Job's Pod says nothing about this one.
        let mut other = waiting("ImagePullBackOff");
        other.metadata.labels = Some(BTreeMap::from([(
            "batch.kubernetes.io/job-name".to_owned(),
            "daily-ingest-1".to_owned(),
        )]));
        assert_eq!(observe(&job, &[other]).unwrap().state, JobState::Active);
    }
}
