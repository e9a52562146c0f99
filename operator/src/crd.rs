//! The `PipelineRun` custom resource (`streamflow.io/v1alpha1`): one data interval run through
//! ingest → etl → validate as Kubernetes Jobs. `crdgen` prints its CRD; `crds/pipelinerun.yaml`
//! is that output, checked by a test.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use crate::pod_overrides::{PodTemplate, StageOverrides};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CRD's API group.
pub const GROUP: &str = "streamflow.io";

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

/// A Kubernetes quantity (`500m`, `2Gi`, `1.5`, `1e3`), as controller-gen writes it for
/// `resource.Quantity`.
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// `resources` as Kubernetes' own schema, with each limit and request checked to be a
/// quantity: otherwise a malformed one (`2 GB`) is refused by the API server only when the
/// operator creates a Job, after the run has started. (A pattern, not CEL `isQuantity`: a CEL
/// rule over the unbounded maps of `ResourceRequirements` exceeds the API server's cost budget.)
pub(crate) fn resources_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
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

#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Ingest,
    Etl,
    Validate,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Ingest, Stage::Etl, Stage::Validate];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Etl => "etl",
            Stage::Validate => "validate",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_stages() -> Vec<Stage> {
    Stage::ALL.to_vec()
}

/// A Secret in the run's namespace, by name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SecretRef {
    pub name: String,
}

/// CEL: the topic of each schema, as the job image defaults them (docs/events.md).
const USER_TOPIC: &str = "(has(self.userEventsTopic) ? self.userEventsTopic : 'user_events')";
const TRANSACTION_TOPIC: &str =
    "(has(self.transactionEventsTopic) ? self.transactionEventsTopic : 'transaction_events')";

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.authentication) || self.authentication.type != 'tls' || has(self.tls)").message("kafka.authentication: type tls (client certificates) needs kafka.tls"))]
#[x_kube(validation = Rule::new(format!("!has(self.topics) || self.topics.all(t, t == {USER_TOPIC} || t == {TRANSACTION_TOPIC})")).message("kafka.topics: each topic must be the user events or the transaction events topic (kafka.userEventsTopic, kafka.transactionEventsTopic; user_events and transaction_events when unset): the job image refuses a topic without a schema"))]
#[x_kube(validation = Rule::new(format!("{USER_TOPIC} != {TRANSACTION_TOPIC}")).message("kafka.userEventsTopic and kafka.transactionEventsTopic name the same topic: each schema needs a topic of its own"))]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port]`.
    #[schemars(length(min = 1))]
    pub bootstrap: String,
    /// Topics to drain, of the two below; unset means both. An empty list is refused: leave
    /// the field out for both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 2), inner(length(min = 1, max = 249)))]
    pub topics: Vec<String>,
    /// The topic of user events (docs/events.md); unset means `user_events`. Every stage
    /// reads it by that schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub user_events_topic: Option<String>,
    /// The topic of transaction events (docs/events.md); unset means `transaction_events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub transaction_events_topic: Option<String>,
    /// Consumer group: when set, ingest drains up to the high watermarks and commits
    /// (watermark mode); when unset, it lands exactly the records of the interval (interval mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A Secret whose keys become the ingest container's environment (SASL/TLS settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Connect over TLS, as Strimzi's clients' (`KafkaConnect`) `tls`; without
    /// `trustedCertificates`, the image's system CAs are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// How ingest authenticates, as Strimzi's clients' `authentication`: `scram-sha-512` (a
    /// KafkaUser's password) or `tls` (its client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<KafkaAuthentication>,
}

/// A Secret's key or a file name pattern: what Kubernetes allows as a Secret's key.
const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// A Secret's name (a DNS subdomain).
const SECRET_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// Certificates to trust (a Strimzi cluster's `<cluster>-cluster-ca-cert`, key `ca.crt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub trusted_certificates: Vec<CertSecretSource>,
}

/// Certificates in a Secret: one key (`certificate`), or every key matching a glob `pattern`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.certificate) != has(self.pattern)").message("kafka.tls.trustedCertificates: give either certificate (a key) or pattern (a glob of keys), not both"))]
pub struct CertSecretSource {
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub secret_name: String,
    /// The key holding the certificate (PEM), e.g. `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub certificate: Option<String>,
    /// A glob of keys (`*.crt`): every matching key's certificate is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[-._a-zA-Z0-9*?\[\]]+$")
    )]
    pub pattern: Option<String>,
}

/// Strimzi's client authentication, with the fields of the two types it supports here.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'scram-sha-512' || (has(self.username) && has(self.passwordSecret) && !has(self.certificateAndKey))").message("kafka.authentication: type scram-sha-512 takes username and passwordSecret (and no certificateAndKey)"))]
#[x_kube(validation = Rule::new("self.type != 'tls' || (has(self.certificateAndKey) && !has(self.username) && !has(self.passwordSecret))").message("kafka.authentication: type tls takes certificateAndKey (and no username or passwordSecret)"))]
pub struct KafkaAuthentication {
    #[serde(rename = "type")]
    pub type_: AuthenticationType,
    /// The SCRAM user (a KafkaUser's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub username: Option<String>,
    /// The Secret and key holding the SCRAM user's password (a KafkaUser's Secret, `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<PasswordSecretSource>,
    /// The Secret and keys of the client certificate and its key (a KafkaUser's Secret,
    /// `user.crt` and `user.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_and_key: Option<CertAndKeySecretSource>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthenticationType {
    /// SASL SCRAM-SHA-512 with a user name and password.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// Mutual TLS with a client certificate.
    #[serde(rename = "tls")]
    Tls,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecretSource {
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub secret_name: String,
    /// The key holding the password.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub password: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertAndKeySecretSource {
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub secret_name: String,
    /// The key holding the client certificate (PEM).
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub certificate: String,
    /// The key holding the certificate's private key (PEM).
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
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

/// Shaped like `metav1.Condition`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
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

/// The PipelineRun CRD as YAML, as committed in `crds/pipelinerun.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    crd_yaml_of::<PipelineRun>("")
}

/// The CRD of `K` as YAML, as committed in `crds/`; `arg` is crdgen's argument that prints it.
pub fn crd_yaml_of<K: kube::CustomResourceExt>(arg: &str) -> Result<String, serde_yaml_ng::Error> {
    let yaml = serde_yaml_ng::to_string(&K::crd())?;
    let arg = if arg.is_empty() {
        String::new()
    } else {
        format!(" {arg}")
    };
    Ok(format!(
        "# Generated by `cargo run -p streamflow-operator --bin crdgen{arg}`; do not edit.\n{yaml}"
    ))
}

/// Every CRD of the operator: (crdgen argument, file in `crds/`, YAML).
pub fn all_crds() -> Result<Vec<(&'static str, &'static str, String)>, serde_yaml_ng::Error> {
    use crate::backfill::Backfill;
    use crate::pipeline::Pipeline;
    Ok(vec![
        ("pipelinerun", "pipelinerun.yaml", crd_yaml()?),
        (
            "backfill",
            "backfill.yaml",
            crd_yaml_of::<Backfill>("backfill")?,
        ),
        (
            "pipeline",
            "pipeline.yaml",
            crd_yaml_of::<Pipeline>("pipeline")?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_matches_the_code() {
        let committed = include_str!("../../crds/pipelinerun.yaml");
        let generated = crd_yaml().unwrap();
        assert!(
            committed == generated,
            "crds/pipelinerun.yaml is stale: run `cargo run -p streamflow-operator --bin crdgen > crds/pipelinerun.yaml`"
        );
    }

    #[test]
    fn committed_backfill_and_pipeline_crds_match_the_code() {
        let committed = [
            include_str!("../../crds/backfill.yaml"),
            include_str!("../../crds/pipeline.yaml"),
        ];
        for ((arg, file, generated), committed) in all_crds().unwrap()[1..].iter().zip(committed) {
            assert!(
                committed == generated,
                "crds/{file} is stale: run `cargo run -p streamflow-operator --bin crdgen {arg} > crds/{file}`"
            );
        }
    }

    #[test]
    fn crd_has_cel_rules_and_printer_columns() {
        let yaml = crd_yaml().unwrap();
        for needle in [
            "self.end > self.start",
            "duration(self.maxBackoff) >= duration(self.initialBackoff)",
            "jsonPath: .status.phase",
            "jsonPath: .status.deadline",
            "subresources",
            "rule: self == oldSelf",
        ] {
            assert!(yaml.contains(needle), "no {needle:?} in the CRD");
        }
        // The admission rule and the operator's own check agree on the longest run name.
        let max = format!("size(self.metadata.name) <= {}", crate::jobs::MAX_RUN_NAME);
        assert!(yaml.contains(&max), "no {max:?} in the CRD");
        // The image is the operator's default (--default-image), not the schema's: a schema
        // default is stored in every object and pins it across upgrades.
        assert!(!yaml.contains("default: streamflow:"), "{yaml}");
    }

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
