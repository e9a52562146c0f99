//! The `Backfill` custom resource: one PipelineRun per interval of a range, at most
//! `maxActiveRuns` at a time. Its controller is [`crate::backfill`].

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use streamflow_core::backfill::Reprocess;

use super::condition::Condition;
use super::parent::{ChildRunRef, RunDeletionPolicy};
use super::pipelinerun::{Phase, RunTemplate};

pub const COND_PROGRESSING: &str = "Progressing";
pub const COND_COMPLETE: &str = "Complete";
pub const COND_FAILED: &str = "Failed";
pub const COND_SUSPENDED: &str = "Suspended";

/// The most runs listed in `status.runs`: the status of a 10,000-interval backfill stays small.
pub const MAX_LISTED_RUNS: usize = 50;
/// The most intervals listed in `status.wouldRun` of a dry run.
pub const MAX_LISTED_INTERVALS: usize = 1000;

// One `printcolumn(...)` per column is kube's syntax, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "streamflow.io",
    version = "v1alpha1",
    kind = "Backfill",
    plural = "backfills",
    shortname = "bf",
    category = "streamflow",
    namespaced,
    status = "BackfillStatus",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters (it labels the Backfill's runs)"),
    printcolumn(name = "Range", type_ = "string", json_path = ".status.range"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.active"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.template) != has(self.pipelineRef)").message("set exactly one of template and pipelineRef"))]
#[x_kube(validation = Rule::new("self.to > self.from").message("to must be after from"))]
#[x_kube(validation = Rule::new("self.from == oldSelf.from && self.to == oldSelf.to && self.step == oldSelf.step").message("from, to and step cannot change: create a new Backfill for another range"))]
// The step in seconds, summed from its `<n><d|h|m|s>` parts, against the range: the bound the
// operator plans with (streamflow_core::backfill::MAX_INTERVALS), refused at `kubectl apply`
// rather than reported at the first reconcile.
#[x_kube(validation = Rule::new("(self.to - self.from).getSeconds() <= 100000 * self.step.findAll('[0-9]+[dhms]').map(p, int(p.substring(0, size(p) - 1)) * (p.endsWith('d') ? 86400 : p.endsWith('h') ? 3600 : p.endsWith('m') ? 60 : 1)).sum()").message("the range holds more than 100000 intervals of this step: use a longer step or a shorter range"))]
pub struct BackfillSpec {
    /// What each run does: a PipelineRun spec without its interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<RunTemplate>,
    /// Or: run the template of this Pipeline (read when each run is created). Runs of the
    /// Pipeline, scheduled or backfilled, are what `reprocess` compares with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<PipelineRef>,
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive); `to - from` must be a whole number of steps.
    pub to: DateTime<Utc>,
    /// Length of each interval: `1d`, `1h`, `15m`.
    #[schemars(regex(pattern = r"^([0-9]+(d|h|m|s))+$"), length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("step must be longer than 0s"))]
    pub step: String,
    /// The most runs of this Backfill running at once.
    #[serde(default = "default_max_active_runs")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_active_runs: u32,
    /// Which intervals with an earlier run of the same Pipeline to run again: `None` (only
    /// intervals never run), `Failed` (also failed ones) or `Completed` (all). An interval
    /// whose run is still active is never run twice.
    #[serde(default)]
    pub reprocess: Reprocess,
    /// Newest interval first.
    #[serde(default)]
    pub backwards: bool,
    /// Start no more runs (those running carry on); `false` again resumes.
    #[serde(default)]
    pub suspend: bool,
    /// Create nothing; `status.wouldRun` lists the intervals a real backfill would run.
    #[serde(default)]
    pub dry_run: bool,
    /// What deleting this Backfill does to its runs: `Retain` (default; they go on as runs of
    /// their own, history kept) or `Delete` (they and their Jobs are deleted).
    #[serde(default)]
    pub run_deletion_policy: RunDeletionPolicy,
    /// Succeeded runs kept (the latest to run); older ones are deleted, their intervals
    /// recorded in `status.pruned` so that they are never run again. Unset: all are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub successful_runs_history_limit: Option<u32>,
    /// Failed runs kept (the latest to run); older ones are deleted, as for succeeded ones.
    /// Unset: all are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub failed_runs_history_limit: Option<u32>,
}

fn default_max_active_runs() -> u32 {
    1
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct PipelineRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackfillStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `FROM/TO` and the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// `finished/total` intervals (succeeded, failed or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Intervals of the range.
    #[serde(default)]
    pub total: u32,
    /// Intervals still to run.
    #[serde(default)]
    pub pending: u32,
    /// Runs of this Backfill not finished yet.
    #[serde(default)]
    pub active: u32,
    #[serde(default)]
    pub succeeded: u32,
    #[serde(default)]
    pub failed: u32,
    /// Intervals not run because of an earlier run of the Pipeline (see `reprocess`).
    #[serde(default)]
    pub skipped: u32,
    /// Intervals waiting for an earlier run of the Pipeline that is still active.
    #[serde(default)]
    pub waiting: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Active runs first, then failed, then the latest succeeded; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ChildRunRef>,
    /// Dry run: the intervals that would run (`START/END`), in order; at most 1000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_run: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// When an interval last finished (succeeded, failed or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// The intervals whose runs the history limits deleted: the record that they are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PrunedIntervals>,
}

/// Intervals by their index `k` in the range (the interval `[from + k·step, from + (k+1)·step)`,
/// whatever `backwards` says), as ranges such as `0-4999,5001`: a few bytes for thousands of
/// intervals.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrunedIntervals {
    /// Their run succeeded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub succeeded: String,
    /// Their run failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failed: String,
}

impl PrunedIntervals {
    /// The outcome of each of `total` intervals, by index: `None` when not pruned. Parts that
    /// do not parse or lie outside the range are ignored (the status is the operator's own).
    pub fn outcomes(&self, total: usize) -> Vec<Option<Phase>> {
        let mut out = vec![None; total];
        for (ranges, phase) in [
            (&self.succeeded, Phase::Succeeded),
            (&self.failed, Phase::Failed),
        ] {
            for part in ranges.split(',').filter(|p| !p.is_empty()) {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    for slot in out.iter_mut().take(b.saturating_add(1)).skip(a) {
                        *slot = Some(phase);
                    }
                }
            }
        }
        out
    }

    /// The record of `outcomes`; `None` when nothing was pruned.
    pub fn of(outcomes: &[Option<Phase>]) -> Option<PrunedIntervals> {
        let ranges = |want: Phase| {
            let mut parts: Vec<String> = Vec::new();
            let mut k = 0;
            while k < outcomes.len() {
                if outcomes[k] != Some(want) {
                    k += 1;
                    continue;
                }
                let start = k;
                while k + 1 < outcomes.len() && outcomes[k + 1] == Some(want) {
                    k += 1;
                }
                parts.push(if start == k {
                    start.to_string()
                } else {
                    format!("{start}-{k}")
                });
                k += 1;
            }
            parts.join(",")
        };
        let record = PrunedIntervals {
            succeeded: ranges(Phase::Succeeded),
            failed: ranges(Phase::Failed),
        };
        (record != PrunedIntervals::default()).then_some(record)
    }
}

impl BackfillStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}
