//! Types shared by the `streamflow` job image and the operator.
//!
//! The operator reads stage results from a Job's termination message and schedules data
//! intervals; the job image produces those results and works on those intervals. Both need
//! the same types, and the operator must not pull in Kafka or DataFusion to get them, so they
//! live here, in a crate with no heavy dependencies.

pub mod backfill;
pub mod exit;
pub mod interval;
pub mod summary;

pub use backfill::{PriorOutcome, Reprocess};
pub use interval::{Interval, IntervalError};
pub use summary::{
    BackfillInterval, BackfillSummary, CheckFailure, EtlReadSummary, EtlSummary, EtlTableSummary,
    IngestSummary, PartitionSummary, RunSummary, TopicSummary, ValidateSummary,
};
