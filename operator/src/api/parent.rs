//! What the two kinds that stamp out PipelineRuns (Backfill, Pipeline) have in common.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pipelinerun::Phase;

/// What deleting a Backfill or Pipeline does to the runs it made.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RunDeletionPolicy {
    /// Keep them: each run is released (its owner reference to the parent removed) and goes on
    /// as a run of its own, running ones to the end; their history (which intervals are done)
    /// stays for a parent created again, e.g. by a GitOps sync: nothing is lost but the runs
    /// history limits pruned earlier.
    #[default]
    Retain,
    /// Delete them, running ones included, and with them their Jobs.
    Delete,
}

/// One run as listed in a parent's status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChildRunRef {
    pub name: String,
    /// `START/END`.
    pub interval: String,
    pub phase: Phase,
}
