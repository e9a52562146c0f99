//! What the Backfill and Pipeline controllers share as parents of PipelineRuns: the runs'
//! names and objects ([`children`], pure) and the API calls on them ([`runs`]).
//!
//! Deleting a parent deletes its runs through a finalizer (the API server this is tested
//! against has no garbage collector, and a finalizer works the same with one), unless the
//! deletion asked to orphan them (`propagationPolicy: Orphan`) or the parent's
//! `runDeletionPolicy` is `Retain`.

pub mod children;
pub mod runs;

use std::time::Duration;

/// Removed once the parent's runs are deleted.
pub const FINALIZER: &str = "streamflow.io/runs";
/// How often a parent blocked by what it does not watch (a run name held by another owner, a
/// missing Pipeline) looks again.
pub const RECHECK: Duration = Duration::from_secs(10);
