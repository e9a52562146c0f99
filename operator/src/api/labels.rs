//! The labels the operator puts on what it creates, which users select on
//! (`kubectl get jobs -l streamflow.io/pipelinerun=…`) and the controllers watch by.

/// On every object the operator creates: [`MANAGER`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The operator's name: the value of [`LABEL_MANAGED_BY`], its field manager and the
/// reporter of its Events.
pub const MANAGER: &str = "streamflow-operator";
/// On a stage's Job and Pod: the PipelineRun's name.
pub const LABEL_RUN: &str = "streamflow.io/pipelinerun";
/// On a stage's Job and Pod: the stage.
pub const LABEL_STAGE: &str = "streamflow.io/stage";
/// On a stage's Job and Pod: the attempt, from 1.
pub const LABEL_ATTEMPT: &str = "streamflow.io/attempt";
/// On ingest Jobs that drain a consumer group: its name, or a hash of a name that is no label
/// value. The operator runs one drain per group at a time.
pub const LABEL_CONSUMER_GROUP: &str = "streamflow.io/consumer-group";
/// On every PipelineRun of a Backfill: the Backfill's name.
pub const LABEL_BACKFILL: &str = "streamflow.io/backfill";
/// On every PipelineRun of a Pipeline, scheduled or backfilled: the Pipeline's name.
pub const LABEL_PIPELINE: &str = "streamflow.io/pipeline";
