//! What a drain is asked to do: its configuration, how it is bounded, and the counters a
//! caller watches.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use streamflow_core::Interval;

use super::plan::Rotation;
use crate::events::EventKind;
use crate::landing::Scope;
use crate::store::Location;

/// How a run is bounded.
#[derive(Debug, Clone)]
pub enum Bound {
    /// Drain until caught up with the high watermarks seen at start, committing the group's
    /// offsets; `max_duration` caps the run (what it drained so far is kept and committed).
    Watermark { group: String },
    /// Drain the records whose Kafka timestamps fall in the interval. Offsets are looked up by
    /// time, nothing is committed, and a rerun rewrites the same objects.
    Interval { interval: Interval, grace: Duration },
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub bootstrap: String,
    /// The topics to drain, each with the schema its records are checked against.
    pub topics: Vec<(String, EventKind)>,
    pub landing: Location,
    pub bound: Bound,
    pub max_duration: Duration,
    pub rotation: Rotation,
    pub max_record_bytes: usize,
    /// Fail when Kafka delivers nothing for this long while records are still due.
    pub stall_timeout: Duration,
    /// How long one object's upload is retried before the run fails.
    pub upload_retry_timeout: Duration,
    pub kafka_overrides: Vec<(String, String)>,
    /// Fault injection for tests: abort the process, as kill -9 would, right after this many
    /// batches were uploaded and before the last one's offsets are committed.
    pub crash_after_uploads: Option<u64>,
    /// Counters a caller may watch to draw progress (the command's progress bar).
    pub progress: Option<Arc<IngestProgress>>,
}

/// How far a drain has got, in Kafka offsets: `planned` grows as each topic's plan is made,
/// `done` as batches are written. Offsets, not records, so skipped and quarantined records
/// count too and `done` reaches `planned` at the end.
#[derive(Debug, Default)]
pub struct IngestProgress {
    pub planned: std::sync::atomic::AtomicU64,
    pub done: std::sync::atomic::AtomicU64,
}

/// Set by a stop signal: the drain ends as if its maximum duration were reached.
pub type StopFlag = Arc<AtomicBool>;

/// Which log of the landing zone a run extends.
pub fn log_scope(bound: &Bound) -> Scope {
    match bound {
        Bound::Watermark { .. } => Scope::Watermark,
        Bound::Interval { interval, .. } => Scope::Interval {
            start_ms: interval.start.timestamp_millis(),
            end_ms: interval.end.timestamp_millis(),
        },
    }
}
