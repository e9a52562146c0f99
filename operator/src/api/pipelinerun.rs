//! The `PipelineRun` custom resource (`streamflow.io/v1alpha1`): one data interval run through
//! ingest → etl → validate as Kubernetes Jobs. `crdgen` prints its CRD; `crds/pipelinerun.yaml`
//! is that output, checked by a test.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::kafka::{KafkaSpec, SecretRef};
use super::pod_template::{PodTemplate, StageOverrides, resources_schema};
use super::stage::Stage;

/// Longest run name: Job names become a label value on their Pods (63 characters at most),
/// and `-validate-20` takes 12. The CRD's rule below says the same.
pub const MAX_RUN_NAME: usize = 50;

pub const COND_RUNNING: &str = "Running";
pub const COND_SUCCEEDED: &str = "Succeeded";
pub const COND_DEADLINE_MISSED: &str = "DeadlineMissed";

/// The job image of a run that names none, unless the operator is told another
/// (`--default-image`): the `streamflow` image of this release, as the chart's appVersion tags it.
pub const DEFAULT_IMAGE: &str = concat!("streamflow:", env!("CARGO_PKG_VERSION"));

// One `printcolumn(...)` per column is kube's syntax, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "streamflow.io",
    version = "v1alpha1",
    kind = "PipelineRun",
    plural = "pipelineruns",
    shortname = "plr",
    category = "streamflow",
    namespaced,
    status = "PipelineRunStatus",
    // Job names are `<run>-<stage>-<attempt>` and become a Pod label value (63 characters):
    // checked here so `kubectl apply` says so, instead of the run failing at its first Job.
    validation = Rule::new("size(self.metadata.name) <= 50").message("metadata.name: at most 50 characters (the run's Job names, <run>-<stage>-<attempt>, must fit 63)"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Start", type_ = "string", json_path = ".spec.interval.start"),
    printcolumn(name = "End", type_ = "string", json_path = ".spec.interval.end"),
    printcolumn(name = "Stage", type_ = "string", json_path = ".status.currentStage"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(name = "Deadline", type_ = "string", json_path = ".status.deadline"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// One run is one spec: stages already run must not be mixed with edited ones (a changed
// interval, image or location half-way through). Nothing stays editable; a different run is a
// new PipelineRun.
#[x_kube(validation = Rule::new("self == oldSelf").message("spec cannot change once the PipelineRun is created: create a new PipelineRun (or delete and recreate this one) to run with another spec"))]
pub struct PipelineRunSpec {
    /// The data interval `[start, end)` this run processes.
    pub interval: IntervalSpec,
    /// Everything else: what to run and how. Flattened, so a PipelineRun's YAML is unchanged.
    #[serde(flatten)]
    pub template: RunTemplate,
}

// A PipelineRun's spec without its interval: what the Backfill and Pipeline resources stamp
// out, one PipelineRun per interval. (`//`: a doc comment would become the description of
// every spec it is flattened into.)
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunTemplate {
    /// The stages to run, in pipeline order (ingest, etl, validate).
    #[serde(default = "default_stages")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("stages: name at least one stage (ingest, etl, validate)"))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t == s))").message("stages: each stage may appear only once"))]
    // Each stage reads what the one before wrote: etl before ingest would read an old landing.
    #[x_kube(validation = Rule::new("self == ['ingest', 'etl', 'validate'].filter(s, s in self)").message("stages: list them in pipeline order (ingest, etl, validate)"))]
    #[schemars(length(max = 3))]
    pub stages: Vec<Stage>,
    pub kafka: KafkaSpec,
    pub storage: StorageSpec,
    #[serde(default)]
    pub etl: EtlSpec,
    #[serde(default)]
    pub validation: ValidationSpec,
    /// The `streamflow` job image; unset means the operator's `--default-image` (the chart
    /// sets it to the job image of its appVersion) when each Job is created. Not a schema
    /// default: that would pin every stored object to one tag across upgrades.
    // Empty is "unset" in Rust (never serialized); an explicit "" is refused by minLength.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; unset means Kubernetes' default for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never", null]))]
    pub image_pull_policy: Option<String>,
    /// CPU and memory of every stage's container (a stage's `stageOverrides.<stage>.resources`
    /// replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Where and how every stage's pod runs: labels, annotations, nodeSelector, tolerations,
    /// affinity, imagePullSecrets, priorityClassName, the size of `/tmp`.
    #[serde(default, skip_serializing_if = "PodTemplate::is_empty")]
    pub pod_template: PodTemplate,
    /// Per stage (`ingest`, `etl`, `validate`): `resources` and `podTemplate` fields that
    /// replace the run's for that stage.
    #[serde(default, skip_serializing_if = "StageOverrides::is_empty")]
    pub stage_overrides: StageOverrides,
    /// The Service Account the Jobs' pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `activeDeadlineSeconds` of each stage's Job: Kubernetes stops an attempt running longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub stage_deadline_seconds: Option<i64>,
    /// The SLA: the run should succeed within this long after the interval's end (e.g. `2h`).
    /// Missing it sets the DeadlineMissed condition; the run carries on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub run_deadline: Option<String>,
    /// What `runDeadline` counts from: `IntervalEnd` (default) or `Creation` (of this run).
    #[serde(default)]
    pub run_deadline_from: DeadlineAnchor,
    /// `ttlSecondsAfterFinished` of the Jobs; unset means a day (86400). The run's status keeps
    /// each attempt's result; a Job deleted before the operator read it counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.end > self.start").message("interval: end must be after start"))]
pub struct IntervalSpec {
    /// Inclusive start, RFC 3339 (2026-11-25T00:00:00Z).
    pub start: DateTime<Utc>,
    /// Exclusive end, RFC 3339.
    pub end: DateTime<Utc>,
}

impl IntervalSpec {
    /// `START/END` as the job image reads it: written by the same code that parses it.
    pub fn arg(&self) -> String {
        streamflow_core::Interval {
            start: self.start,
            end: self.end,
        }
        .to_string()
    }
}

fn default_stages() -> Vec<Stage> {
    Stage::ALL.to_vec()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Landing zone: `s3://bucket/prefix`, `file:///dir` or a directory.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new(LOCATION_RULE).message("storage.landing: must be s3://bucket/prefix, file:///dir or a directory (no other URL scheme)"))]
    pub landing: String,
    /// Gold tables: `s3://bucket/prefix`, `file:///dir` or a directory. `{start}`, `{end}`
    /// (`20261124T130000Z`) and `{date}` (`2026-11-24`) are replaced by the run's interval's: a
    /// run replaces the gold partitions of its dates, so runs shorter than a day each need a
    /// location of their own (`s3://gold/hourly/{start}`).
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new(LOCATION_RULE).message("storage.gold: must be s3://bucket/prefix, file:///dir or a directory (no other URL scheme)"))]
    pub gold: String,
    /// S3 endpoint (`AWS_ENDPOINT_URL`); unset means AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (`AWS_ALLOW_HTTP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// A Secret with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and optionally
    /// `AWS_SESSION_TOKEN`), given to every stage as environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// How ingest compresses the landing objects it writes; unset means the image's default
    /// (none). The ETL reads all three, whatever each object was written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_compression: Option<LandingCompression>,
}

/// What the job image's locations accept (`Location::parse`): an `s3://` URL with a bucket, a
/// `file://` URL, or a path (anything without `://`).
const LOCATION_RULE: &str = "self.startsWith('s3://') ? self.matches('^s3://[^/]+') : (self.startsWith('file://') || !self.contains('://'))";

/// `streamflow ingest --compression`: zstd (level 1) stores about a sixth of the bytes, and its
/// drains to S3 took about a quarter of the plain drains' time in the benchmarks
/// (docs/benchmarks.md).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LandingCompression {
    None,
    Gzip,
    Zstd,
}

impl LandingCompression {
    /// The value `streamflow ingest --compression` takes.
    pub fn arg(self) -> &'static str {
        match self {
            LandingCompression::None => "none",
            LandingCompression::Gzip => "gzip",
            LandingCompression::Zstd => "zstd",
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EtlSpec {
    /// Session profile: development or production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(development|production)$"))]
    pub profile: Option<String>,
    /// Memory the ETL may use, e.g. `2GiB` (units B, K/KB/KiB, M/MB/MiB, G/GB/GiB, all
    /// powers of 1024; not Kubernetes' `2Gi`); its query engine spills beyond 60 % of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+ ?(B|K|KB|KiB|M|MB|MiB|G|GB|GiB)?$"))]
    pub memory_limit: Option<String>,
    /// Files per date partition of the bucketed tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub buckets: Option<u32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSpec {
    /// A ConfigMap holding the checks YAML; unset means the image's default checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_config_map: Option<ConfigMapKeyRef>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ConfigMapKeyRef {
    pub name: String,
    /// The key holding the YAML (default `checks.yaml`).
    #[serde(default = "default_checks_key")]
    pub key: String,
}

fn default_checks_key() -> String {
    "checks.yaml".to_owned()
}

/// Failed attempts are retried after `initialBackoff × factor^(attempt-1)`, capped at
/// `maxBackoff`, until `maxAttempts` attempts have failed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.maxBackoff) >= duration(self.initialBackoff)").message("retry: maxBackoff must not be shorter than initialBackoff"))]
pub struct RetryPolicy {
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub initial_backoff: String,
    #[serde(default = "default_factor")]
    #[schemars(range(min = 1, max = 10))]
    pub factor: u32,
    #[serde(default = "default_max_backoff")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub max_backoff: String,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            factor: default_factor(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}
fn default_initial_backoff() -> String {
    "10s".to_owned()
}
fn default_factor() -> u32 {
    2
}
fn default_max_backoff() -> String {
    "5m".to_owned()
}

/// Parses a duration as written in the spec (`10s`, `1h30m`).
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, crate::Error> {
    humantime::parse_duration(s).map_err(|e| crate::Error::InvalidSpec {
        field,
        message: format!("{s:?} is not a duration like 10s or 1h30m: {e}"),
    })
}

impl RetryPolicy {
    /// The wait before attempt `failed + 1`, after `failed` failed attempts.
    pub fn backoff(&self, failed: u32) -> Result<Duration, crate::Error> {
        let initial = parse_duration("retry.initialBackoff", &self.initial_backoff)?;
        let max = parse_duration("retry.maxBackoff", &self.max_backoff)?;
        let exp = failed.saturating_sub(1).min(32);
        let mult = u64::from(self.factor.max(1)).saturating_pow(exp);
        let ms = (initial.as_millis() as u64).saturating_mul(mult);
        Ok(Duration::from_millis(ms).min(max))
    }
}

// ---------------------------------------------------------------------------------------------
// Status

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What `runDeadline` counts from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeadlineAnchor {
    #[default]
    IntervalEnd,
    Creation,
}

/// Whether the run met its `runDeadline`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadlineState {
    /// No deadline set.
    None,
    /// Not reached yet, run not finished.
    Pending,
    Met,
    Missed,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunStatus {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The stage running or waiting to be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_stage: Option<Stage>,
    /// Attempts of the current (or last) stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DeadlineState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_time: Option<DateTime<Utc>>,
    /// When the next attempt of the current stage is due (after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
}

impl PipelineRunStatus {
    pub fn stage(&self, stage: Stage) -> Option<&StageStatus> {
        self.stages.iter().find(|s| s.stage == stage)
    }
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StagePhase {
    #[default]
    Pending,
    Running,
    /// The last attempt failed; another is due at `nextAttemptTime`.
    BackingOff,
    Succeeded,
    Failed,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    pub stage: Stage,
    pub phase: StagePhase,
    /// The Job of the latest attempt.
    pub job_name: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<DateTime<Utc>>,
    /// Why the latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<StageSummary>,
}

/// The figures of a stage's JSON summary (its termination message) that the status keeps.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StageSummary {
    /// ingest: records landed / quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<u64>,
    /// ingest: false when the drain was cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// ingest with a consumer group: per topic, the records past what was landed when the
    /// drain ended (the high watermarks then minus the landed offsets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lag: BTreeMap<String, u64>,
    /// etl: rows written, in total and per gold table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, u64>,
    /// validate: checks run, and failed by severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_failed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl StageSummary {
    /// Reads a stage's termination message; `None` when it is not a summary of that stage
    /// (an error message, say).
    pub fn parse(stage: Stage, message: &str) -> Option<StageSummary> {
        use streamflow_core::summary::{EtlSummary, IngestSummary, ValidateSummary};
        let line = message
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))?;
        match stage {
            Stage::Ingest => {
                let s: IngestSummary = serde_json::from_str(line).ok()?;
                Some(StageSummary {
                    records: Some(s.records),
                    quarantined: Some(s.quarantined),
                    complete: Some(s.complete),
                    lag: s
                        .topics
                        .iter()
                        .filter_map(|(topic, t)| Some((topic.clone(), t.lag?)))
                        .collect(),
                    duration_ms: Some(s.duration_ms),
                    ..Default::default()
                })
            }
            Stage::Etl => {
                let s: EtlSummary = serde_json::from_str(line).ok()?;
                Some(StageSummary {
                    rows: Some(s.rows),
                    tables: s.tables.iter().map(|(k, v)| (k.clone(), v.rows)).collect(),
                    duration_ms: Some(s.duration_ms),
                    ..Default::default()
                })
            }
            Stage::Validate => {
                let s: ValidateSummary = serde_json::from_str(line).ok()?;
                Some(StageSummary {
                    checks: Some(s.checks),
                    checks_failed: Some(s.failed_errors),
                    warnings: Some(s.failed_warnings),
                    ok: Some(s.ok),
                    duration_ms: Some(s.duration_ms),
                    ..Default::default()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: PipelineRunSpec = serde_json::from_value(serde_json::json!({
            "interval": {"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z"},
            "kafka": {"bootstrap": "k:9092"},
            "storage": {"landing": "s3://l/raw", "gold": "s3://g/t"},
        }))
        .unwrap();
        assert_eq!(spec.template.stages, Stage::ALL.to_vec());
        assert_eq!(spec.template.retry, RetryPolicy::default());
        assert_eq!(
            spec.interval.arg(),
            "2026-11-24T00:00:00Z/2026-11-25T00:00:00Z"
        );
    }

    #[test]
    fn backoff_grows_by_factor_up_to_the_cap() {
        let r = RetryPolicy {
            max_attempts: 10,
            initial_backoff: "10s".into(),
            factor: 3,
            max_backoff: "1m".into(),
        };
        let secs: Vec<u64> = (1..=4).map(|n| r.backoff(n).unwrap().as_secs()).collect();
        assert_eq!(secs, [10, 30, 60, 60]);
        let bad = RetryPolicy {
            initial_backoff: "soon".into(),
            ..r
        };
        assert!(
            bad.backoff(1)
                .unwrap_err()
                .to_string()
                .contains("retry.initialBackoff")
        );
    }

    #[test]
    fn summaries_are_read_from_termination_messages() {
        use streamflow_core::summary::{EtlSummary, EtlTableSummary, ValidateSummary};
        let mut etl = EtlSummary {
            stage: "etl".into(),
            rows: 12,
            ..Default::default()
        };
        etl.tables.insert(
            "transactions".into(),
            EtlTableSummary {
                rows: 7,
                files: 1,
                bytes: 100,
            },
        );
        let s = StageSummary::parse(Stage::Etl, &serde_json::to_string(&etl).unwrap()).unwrap();
        assert_eq!((s.rows, s.tables["transactions"]), (Some(12), 7));
        let v = ValidateSummary {
            stage: "validate".into(),
            ok: false,
            checks: 5,
            failed_errors: 2,
            ..Default::default()
        };
        let s = StageSummary::parse(Stage::Validate, &serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(
            (s.ok, s.checks, s.checks_failed),
            (Some(false), Some(5), Some(2))
        );
        assert_eq!(
            StageSummary::parse(Stage::Ingest, "error: Kafka is down"),
            None
        );
        // Ingest: the totals, and each topic's lag when the drain had a consumer group.
        use streamflow_core::summary::{IngestSummary, TopicSummary};
        let mut ingest = IngestSummary {
            stage: "ingest".into(),
            records: 40,
            complete: true,
            partitions_omitted: true,
            ..Default::default()
        };
        for (topic, lag) in [("user_events", Some(7)), ("transaction_events", None)] {
            ingest.topics.insert(
                topic.into(),
                TopicSummary {
                    records: 20,
                    lag,
                    ..Default::default()
                },
            );
        }
        let s =
            StageSummary::parse(Stage::Ingest, &serde_json::to_string(&ingest).unwrap()).unwrap();
        assert_eq!((s.records, s.complete), (Some(40), Some(true)));
        assert_eq!(s.lag, BTreeMap::from([("user_events".to_owned(), 7)]));
    }
}
