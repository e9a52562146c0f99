//! The drain plan of one partition: which offsets `[start, end)` a run reads and how it cuts
//! them into files.
//!
//! Where a partition resumes comes from the landing zone's own log of landed ranges
//! ([`crate::landing`]), not from Kafka: the log's last entry ends where the next run starts.
//! An entry is written before the objects it names, so the last few entries (as many as were
//! uploading at once) may name objects a crashed run never wrote; such entries are read again
//! and cut at exactly their recorded ends, so the retry writes the same names. Kafka's
//! committed offset only seeds the log of a partition that has none (a landing zone written
//! before the log existed), and only when it was committed for the same topic id.

use serde::{Deserialize, Serialize};

use crate::landing::Claim;
pub use crate::landing::Compression;

const METADATA_PREFIX: &str = "streamflow-landed/v2 ";
/// The plan the drain used to keep in the commit metadata: its offset still seeds a new log.
const LEGACY_PREFIX: &str = "streamflow-plan/v1 ";

/// How a partition's records are cut into files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Close a file after this many records (good, bad and skipped alike).
    pub max_records: u64,
    /// Close a file after this many bytes of record values.
    pub max_bytes: u64,
    /// Plans written before zstd was offered say `"gzip": true|false` instead.
    #[serde(alias = "gzip", deserialize_with = "compression_or_gzip_flag")]
    pub compression: Compression,
}

fn compression_or_gzip_flag<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Compression, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Named(Compression),
        GzipFlag(bool),
    }
    Ok(match Stored::deserialize(deserializer)? {
        Stored::Named(c) => c,
        Stored::GzipFlag(true) => Compression::Gzip,
        Stored::GzipFlag(false) => Compression::None,
    })
}

/// A partition's plan: offsets `[start, end)` cut by `rotation`, the first ranges of which
/// (`redo`) are log entries to write again, cut exactly as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub rotation: Rotation,
    /// Entries of the log whose objects may not all have been written: re-read, cut at their
    /// ends and written where missing.
    pub redo: Vec<Claim>,
    /// The `seq` of the next new log entry.
    pub next_seq: u64,
    /// True when this plan starts by finishing the entries of an interrupted run.
    pub resumed: bool,
    /// Records deleted by Kafka's retention after the landed ones and before any drain read
    /// them. Reported, since they cannot be landed.
    pub expired: u64,
}

/// What Kafka's commit metadata records: progress for lag monitoring, and the topic id the
/// offset belongs to, so a recreated topic never resumes at its predecessor's offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub topic_id: String,
}

impl Progress {
    pub fn to_metadata(&self) -> String {
        // Serializing one string to JSON cannot fail.
        format!(
            "{METADATA_PREFIX}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }
}

/// Whether a committed offset with `metadata` may seed the log of the topic `topic_id`: it was
/// committed by this drain for that very topic, or by the drain before topic ids were recorded.
pub fn seeds_log(metadata: &str, topic_id: &str) -> bool {
    if let Some(json) = metadata.strip_prefix(METADATA_PREFIX) {
        return serde_json::from_str::<Progress>(json).is_ok_and(|p| p.topic_id == topic_id);
    }
    metadata.starts_with(LEGACY_PREFIX)
}

/// The plan of one partition from its log: `recent` holds the log's last entries (oldest
/// first), `complete` says for each whether all its objects exist, `next_seq` the log's next
/// seq. `seed` is where a partition without a log starts (a committed offset that
/// [`seeds_log`], else None for the low watermark); `low`/`end` the watermarks now.
pub fn landing_plan(
    partition: i32,
    recent: &[(Claim, bool)],
    next_seq: u64,
    seed: Option<i64>,
    low: i64,
    end: i64,
    rotation: Rotation,
) -> PartitionPlan {
    let Some((last, _)) = recent.last() else {
        // No log yet. A committed offset beyond the end is not this topic's.
        let seed = seed.filter(|&s| s <= end);
        let start = seed.unwrap_or(low).max(low);
        return PartitionPlan {
            partition,
            start,
            end: end.max(start),
            rotation,
            redo: Vec::new(),
            next_seq,
            resumed: false,
            expired: seed.map_or(0, |s| (low - s).max(0) as u64),
        };
    };
    let landed_to = last.next;
    let redo: Vec<Claim> = recent
        .iter()
        .skip_while(|(_, complete)| *complete)
        .map(|(c, _)| c.clone())
        .collect();
    let start = redo.first().map_or(landed_to, |c| c.first);
    PartitionPlan {
        partition,
        start,
        end: end.max(landed_to),
        rotation,
        resumed: !redo.is_empty(),
        redo,
        next_seq,
        expired: (low - landed_to).max(0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rotation = Rotation {
        max_records: 100,
        max_bytes: 1 << 20,
        compression: Compression::None,
    };

    fn claim(seq: u64, first: i64, next: i64) -> Claim {
        Claim {
            seq,
            first,
            next,
            compression: Compression::Gzip,
            objects: vec![format!("o{seq}")],
            writer: "w".to_owned(),
        }
    }

    #[test]
    fn a_first_run_drains_from_the_low_to_the_high_watermark() {
        let p = landing_plan(3, &[], 0, None, 10, 500, R);
        assert_eq!((p.start, p.end, p.resumed, p.expired), (10, 500, false, 0));
    }

    #[test]
    fn the_log_decides_where_to_resume_not_kafka() {
        let recent = [(claim(7, 100, 200), true), (claim(8, 200, 300), true)];
        let p = landing_plan(0, &recent, 9, None, 0, 900, R);
        assert_eq!(
            (p.start, p.end, p.next_seq, p.resumed),
            (300, 900, 9, false)
        );
    }

    #[test]
    fn entries_with_missing_objects_are_done_again_from_the_first_of_them() {
        let recent = [
            (claim(7, 100, 200), true),
            (claim(8, 200, 300), false),
            (claim(9, 300, 320), true),
        ];
        let p = landing_plan(0, &recent, 10, None, 0, 900, R);
        assert_eq!((p.start, p.end, p.resumed), (200, 900, true));
        assert_eq!(p.redo, [claim(8, 200, 300), claim(9, 300, 320)]);
    }

    #[test]
    fn retention_past_the_landed_end_counts_as_expired() {
        let p = landing_plan(0, &[(claim(0, 0, 5), true)], 1, None, 40, 50, R);
        assert_eq!((p.start, p.end, p.expired), (5, 50, 35));
        let seeded = landing_plan(0, &[], 0, Some(5), 40, 50, R);
        assert_eq!((seeded.start, seeded.expired), (40, 35));
        assert_eq!(landing_plan(0, &[], 0, None, 40, 50, R).expired, 0);
    }

    #[test]
    fn a_committed_offset_seeds_a_new_log_only_for_its_own_topic() {
        let mine = Progress {
            topic_id: "aa".to_owned(),
        }
        .to_metadata();
        assert!(seeds_log(&mine, "aa"));
        assert!(!seeds_log(&mine, "bb"), "a recreated topic");
        assert!(!seeds_log("", "aa"), "someone else's commit");
        assert!(seeds_log(r#"streamflow-plan/v1 {"end":9}"#, "aa"));
        let past_the_end = landing_plan(0, &[], 0, Some(100), 0, 50, R);
        assert_eq!(
            past_the_end.start, 0,
            "an offset past the end is not this topic's"
        );
    }

    #[test]
    fn rotations_stored_with_the_gzip_flag_still_read() {
        let r: Rotation =
            serde_json::from_str(r#"{"max_records":5,"max_bytes":7,"gzip":true}"#).unwrap();
        assert_eq!(r.compression, Compression::Gzip);
    }
}
