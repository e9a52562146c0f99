//! Stage summaries: what a stage did, as JSON on stdout, in a file, and in a Job's
//! termination message (which Kubernetes caps at 4096 bytes, so these stay compact).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The result of one `streamflow ingest` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestSummary {
    pub stage: String,
    /// `watermark` (drain until caught up) or `interval` (records timestamped in the interval).
    pub mode: String,
    /// The interval drained, in interval mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// True when every partition reached the end of its plan; false when the run was cut short
    /// by its maximum duration or a stop signal (what it drained is committed all the same).
    pub complete: bool,
    pub records: u64,
    pub quarantined: u64,
    /// Records Kafka's retention deleted before a drain read them (never landed).
    #[serde(default)]
    pub expired: u64,
    /// Records read but outside the interval (interval mode only).
    pub skipped: u64,
    pub bytes: u64,
    pub files: u64,
    pub duration_ms: u64,
    pub topics: BTreeMap<String, TopicSummary>,
    /// True when `topics[].partitions` was left out to fit a termination message (see
    /// [`IngestSummary::to_bounded_json`]); stdout always has every partition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitions_omitted: bool,
}

/// The most of a termination message the kubelet keeps: the rest is cut off, and a summary cut
/// off is no JSON.
pub const TERMINATION_MESSAGE_BYTES: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub records: u64,
    pub quarantined: u64,
    pub bytes: u64,
    pub partitions: BTreeMap<i32, PartitionSummary>,
    /// How far behind the topic the landing is when the drain ends: the partitions' high
    /// watermarks (last stable offsets) then, minus the offsets landed up to, summed. Watermark
    /// mode only: in interval mode later records belong to later intervals, not to a backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// One partition's share of a run: the offsets `[from, to)` it read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionSummary {
    pub from: i64,
    pub to: i64,
    pub records: u64,
    pub quarantined: u64,
    pub bytes: u64,
    /// Records deleted by Kafka's retention before this drain read them: between the last
    /// drain and this one, or while this one ran.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expired: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl IngestSummary {
    /// Adds one partition's figures to its topic and to the totals.
    pub fn add_partition(&mut self, topic: &str, partition: i32, part: PartitionSummary) {
        self.records += part.records;
        self.quarantined += part.quarantined;
        self.expired += part.expired;
        self.bytes += part.bytes;
        let t = self.topics.entry(topic.to_owned()).or_default();
        t.records += part.records;
        t.quarantined += part.quarantined;
        t.bytes += part.bytes;
        t.partitions.insert(partition, part);
    }

    /// One JSON line of at most [`TERMINATION_MESSAGE_BYTES`]: every partition's offsets when
    /// they fit (up to some 40 partitions), else only the totals and per-topic figures, with
    /// `partitions_omitted`. Per-topic figures grow with the topics drained, not the partitions.
    pub fn to_bounded_json(&self) -> Result<String, serde_json::Error> {
        let full = serde_json::to_string(self)?;
        if full.len() <= TERMINATION_MESSAGE_BYTES {
            return Ok(full);
        }
        let mut compact = self.clone();
        compact.partitions_omitted = true;
        for topic in compact.topics.values_mut() {
            topic.partitions.clear();
        }
        let json = serde_json::to_string(&compact)?;
        if json.len() <= TERMINATION_MESSAGE_BYTES {
            return Ok(json);
        }
        // Hundreds of topics: the totals alone.
        compact.topics.clear();
        serde_json::to_string(&compact)
    }
}

/// The result of one `streamflow etl` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EtlSummary {
    pub stage: String,
    pub interval: String,
    pub profile: String,
    /// What was read from the landing zone, per topic.
    pub read: BTreeMap<String, EtlReadSummary>,
    /// What was written, per gold table.
    pub tables: BTreeMap<String, EtlTableSummary>,
    /// Date partitions written per table.
    pub partitions: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
}

/// One topic's landing input to the ETL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EtlReadSummary {
    pub objects: u64,
    pub records: u64,
    pub bytes: u64,
    /// Records in the date folders read whose event time is outside the interval.
    pub outside_interval: u64,
    /// Further copies of an event id already seen, removed.
    pub duplicates: u64,
    /// Rows after flattening (one per distinct event in the interval).
    pub rows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EtlTableSummary {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
}

/// The result of one `streamflow validate` run. Only failed checks are listed (capped), so the
/// summary fits a termination message; the full report is `--report`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidateSummary {
    pub stage: String,
    pub interval: String,
    /// True when no check of severity `error` failed.
    pub ok: bool,
    pub checks: u64,
    pub passed: u64,
    pub failed_errors: u64,
    pub failed_warnings: u64,
    pub failures: Vec<CheckFailure>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckFailure {
    pub name: String,
    pub severity: String,
    pub message: String,
}

/// The result of one `streamflow run`: its stages' summaries, in order, up to the one that
/// failed, and where the output is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub stage: String,
    pub interval: String,
    /// True when every stage ran and no check of severity `error` failed.
    pub ok: bool,
    /// The stage that failed (`ingest`, `etl`, `validate`), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<String>,
    /// Why it failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etl: Option<EtlSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<ValidateSummary>,
    /// The landing zone and gold store, as given (local paths made absolute).
    pub landing: String,
    pub gold: String,
    /// Every gold file the ETL committed for the interval, under `gold`.
    #[serde(default)]
    pub gold_files: Vec<String>,
    pub duration_ms: u64,
}

/// What a backfill did with one interval of its range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackfillInterval {
    pub interval: String,
    /// What the gold store's record said before this backfill: `never`, `succeeded`, `failed`.
    pub prior: String,
    /// `ran` or `skipped`.
    pub action: String,
    /// The run's summary, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunSummary>,
}

/// The result of one `streamflow backfill`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackfillSummary {
    pub stage: String,
    pub from: String,
    pub to: String,
    pub step: String,
    pub reprocess: String,
    pub dry_run: bool,
    /// True when no interval run by this backfill failed.
    pub ok: bool,
    pub planned: u64,
    pub ran: u64,
    pub skipped: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// The one watermark drain that ran before the intervals, with `--group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestSummary>,
    pub intervals: Vec<BackfillInterval>,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_topic_and_overall() {
        let mut s = IngestSummary::default();
        let part = |records, quarantined, bytes| PartitionSummary {
            from: 0,
            to: (records + quarantined) as i64,
            records,
            quarantined,
            bytes,
            expired: records / 5,
        };
        s.add_partition("user_events", 0, part(10, 1, 100));
        s.add_partition("user_events", 1, part(5, 0, 50));
        s.add_partition("transaction_events", 0, part(7, 2, 70));
        assert_eq!(
            (s.records, s.quarantined, s.bytes, s.expired),
            (22, 3, 220, 4)
        );
        assert_eq!(s.topics["user_events"].records, 15);
        assert_eq!(s.topics["transaction_events"].quarantined, 2);
        let json = serde_json::to_string(&s).unwrap();
        let back: IngestSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.to_bounded_json().unwrap(), json, "small: every partition");
    }

    #[test]
    fn a_summary_of_200_partitions_fits_a_termination_message() {
        let mut s = IngestSummary {
            stage: "ingest".into(),
            mode: "watermark".into(),
            complete: true,
            ..Default::default()
        };
        for p in 0..200 {
            let part = PartitionSummary {
                from: 1_000_000_000,
                to: 1_000_012_345,
                records: 12_345,
                quarantined: 3,
                bytes: 9_876_543,
                expired: 0,
            };
            s.add_partition(
                if p % 2 == 0 {
                    "user_events"
                } else {
                    "transaction_events"
                },
                p,
                part,
            );
        }
        assert!(serde_json::to_string(&s).unwrap().len() > TERMINATION_MESSAGE_BYTES);
        let json = s.to_bounded_json().unwrap();
        assert!(
            json.len() <= TERMINATION_MESSAGE_BYTES,
            "{} bytes",
            json.len()
        );
        let back: IngestSummary = serde_json::from_str(&json).unwrap();
        assert!(back.partitions_omitted);
        assert_eq!((back.records, back.quarantined), (200 * 12_345, 600));
        assert_eq!(back.topics["user_events"].records, 100 * 12_345);
        assert!(back.topics.values().all(|t| t.partitions.is_empty()));
        // Hundreds of topics: the totals still fit.
        for t in 0..300 {
            s.add_partition(
                &format!("topic_with_a_rather_long_name_{t}"),
                0,
                PartitionSummary::default(),
            );
        }
        let json = s.to_bounded_json().unwrap();
        assert!(
            json.len() <= TERMINATION_MESSAGE_BYTES,
            "{} bytes",
            json.len()
        );
        let back: IngestSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.records, 200 * 12_345);
    }
}
