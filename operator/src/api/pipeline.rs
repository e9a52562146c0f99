//! The `Pipeline` custom resource: a cron schedule in a time zone that starts one PipelineRun
//! per tick, covering the data interval from the previous tick to this one. Its controller is
//! [`crate::pipeline`].

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::parent::RunDeletionPolicy;
use super::pipelinerun::{IntervalSpec, RunTemplate};

pub const COND_READY: &str = "Ready";

// One `printcolumn(...)` per column is kube's syntax, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "streamflow.io",
    version = "v1alpha1",
    kind = "Pipeline",
    plural = "pipelines",
    shortname = "pl",
    category = "streamflow",
    namespaced,
    status = "PipelineStatus",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters (it labels the Pipeline's runs)"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "string", json_path = ".status.lastScheduledInterval.end"),
    printcolumn(name = "Fresh", type_ = "string", json_path = ".status.lastSucceededInterval.end"),
    printcolumn(name = "Failed", type_ = "string", json_path = ".status.lastFailedInterval.end"),
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextRunTime"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.activeCount"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Cron schedule: `minute hour day-of-month month day-of-week`, or six fields with seconds
    /// first; `@hourly`, `@daily` and the like also work.
    #[schemars(regex(pattern = r"^(@[a-z]+|\S+(\s+\S+){4,5})$"))]
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// What each run does: a PipelineRun spec without its interval.
    pub template: RunTemplate,
    /// Ticks missed while the operator was down (or the Pipeline suspended) are all run, up
    /// to this many (the latest); older ones are skipped and reported in an Event.
    #[serde(default = "default_max_catch_up")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_catch_up: u32,
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Succeeded runs kept; older ones are deleted.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 1000))]
    pub successful_runs_history_limit: u32,
    /// Failed runs kept; older ones are deleted.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 1000))]
    pub failed_runs_history_limit: u32,
    /// Start no runs; on resume, missed ticks are caught up (up to `maxCatchUp`).
    #[serde(default)]
    pub suspend: bool,
    /// What deleting this Pipeline does to its runs: `Retain` (default; they go on as runs of
    /// their own, history kept) or `Delete` (they and their Jobs are deleted).
    #[serde(default)]
    pub run_deletion_policy: RunDeletionPolicy,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}
fn default_max_catch_up() -> u32 {
    10
}
fn default_successful_history() -> u32 {
    3
}
fn default_failed_history() -> u32 {
    1
}

/// What a due tick does while runs of the Pipeline are active.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConcurrencyPolicy {
    // Start it: runs of several ticks may overlap.
    #[default]
    Allow,
    // Wait: the tick's run starts when no run is active; due ticks run one at a time, oldest
    // first, none is skipped (up to maxCatchUp).
    Forbid,
    // Delete the active runs and run the latest due tick; older due ticks are skipped.
    Replace,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The interval of the latest tick a run was created for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_interval: Option<IntervalSpec>,
    /// The latest interval one of its runs succeeded for: how fresh its gold tables are
    /// (kept here, so pruned runs and restarts do not lose it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_succeeded_interval: Option<IntervalSpec>,
    /// The latest interval one of its runs failed for (kept as `lastSucceededInterval` is):
    /// when it ends after `lastSucceededInterval`, the newest interval that finished failed.
    /// A Backfill of it runs it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_interval: Option<IntervalSpec>,
    /// When the operator created the run of `lastScheduledInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// The next tick (unset while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<DateTime<Utc>>,
    /// Runs not finished yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    #[serde(default)]
    pub active_count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl PipelineStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
