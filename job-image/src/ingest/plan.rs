//! The drain plan of one partition: which offsets `[start, end)` a run reads and how it cuts
//! them into files.
//!
//! Exactly-once into the landing zone rests on one rule: a retry after a crash must cut the
//! same offsets into the same files, so it overwrites what the crashed run left instead of
//! adding to it. In watermark mode the end (the high watermark seen at start) and the rotation
//! settings are therefore written ahead into the consumer group's committed offset metadata,
//! before any file; a run that finds an unfinished plan there finishes that plan.

use serde::{Deserialize, Serialize};

const METADATA_PREFIX: &str = "streamflow-plan/v1 ";

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

/// How landing files are compressed; the object name ends in what [`Compression::extension`]
/// gives, so readers can tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain NDJSON (`.ndjson`).
    #[default]
    None,
    /// `.ndjson.gz`, level "fast": what every tool reads.
    Gzip,
    /// `.ndjson.zst`, level 1: the benchmark's 2.8 GB of records landed as 0.46 GB, and the
    /// drain to S3 took 19 s instead of 51 (docs/benchmarks.md, ingest run 7).
    Zstd,
}

impl Compression {
    /// What follows `.ndjson` in an object's name.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }

    /// The compression of a landing NDJSON object, by its name; `None` for other objects.
    pub fn of_landing_object(name: &str) -> Option<Compression> {
        [Compression::None, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .find(|c| {
                name.strip_suffix(c.extension())
                    .is_some_and(|stem| stem.ends_with(".ndjson"))
            })
    }
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

/// A partition's plan: offsets `[start, end)` cut by `rotation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub rotation: Rotation,
    /// True when this plan was found unfinished in the committed metadata.
    #[serde(skip)]
    pub resumed: bool,
    /// Records between the committed offset and the low watermark: deleted by Kafka's
    /// retention before any drain read them. Reported, since they cannot be landed.
    #[serde(skip)]
    pub expired: u64,
}

/// What the committed metadata of a partition says about the plan in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlan {
    pub end: i64,
    pub rotation: Rotation,
}

impl StoredPlan {
    pub fn to_metadata(&self) -> String {
        // Serializing two integers and a bool to JSON cannot fail.
        format!(
            "{METADATA_PREFIX}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// Reads a plan back; metadata written by other tools is not a plan.
    pub fn from_metadata(metadata: &str) -> Option<Self> {
        serde_json::from_str(metadata.strip_prefix(METADATA_PREFIX)?).ok()
    }
}

/// The watermark-mode plan of one partition, from what the broker reports.
///
/// `committed` is the group's committed offset (None when the group never committed),
/// `low`/`high` the partition's watermarks now.
pub fn watermark_plan(
    partition: i32,
    committed: Option<i64>,
    metadata: &str,
    low: i64,
    high: i64,
    rotation: Rotation,
) -> PartitionPlan {
    // Records below the low watermark are gone (retention); start at what still exists.
    let start = committed.unwrap_or(low).max(low);
    let expired = committed.map_or(0, |c| (low - c).max(0) as u64);
    if let Some(stored) = StoredPlan::from_metadata(metadata)
        && committed.is_some_and(|c| c < stored.end)
        && stored.end <= high
    {
        return PartitionPlan {
            partition,
            start,
            end: stored.end,
            rotation: stored.rotation,
            resumed: true,
            expired,
        };
    }
    PartitionPlan {
        partition,
        start,
        end: high.max(start),
        rotation,
        resumed: false,
        expired,
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

    #[test]
    fn first_run_drains_from_the_low_to_the_high_watermark() {
        let p = watermark_plan(3, None, "", 10, 500, R);
        assert_eq!((p.start, p.end, p.resumed), (10, 500, false));
    }

    #[test]
    fn an_unfinished_plan_is_finished_with_its_own_end_and_rotation() {
        let stored = StoredPlan {
            end: 300,
            rotation: Rotation {
                max_records: 7,
                ..R
            },
        };
        let p = watermark_plan(0, Some(200), &stored.to_metadata(), 0, 900, R);
        assert_eq!((p.start, p.end, p.resumed), (200, 300, true));
        assert_eq!(
            p.rotation.max_records, 7,
            "the crashed run's rotation, not today's flags"
        );
    }

    #[test]
    fn a_finished_plan_starts_a_new_one_at_the_high_watermark() {
        let stored = StoredPlan {
            end: 300,
            rotation: R,
        };
        let p = watermark_plan(0, Some(300), &stored.to_metadata(), 0, 900, R);
        assert_eq!((p.start, p.end, p.resumed), (300, 900, false));
    }

    #[test]
    fn foreign_or_broken_metadata_is_ignored() {
        assert_eq!(StoredPlan::from_metadata("hello"), None);
        assert_eq!(StoredPlan::from_metadata("streamflow-plan/v1 {"), None);
        let p = watermark_plan(0, Some(5), "hello", 0, 50, R);
        assert_eq!((p.start, p.end, p.resumed), (5, 50, false));
    }

    #[test]
    fn retention_past_the_committed_offset_starts_at_the_low_watermark() {
        let p = watermark_plan(0, Some(5), "", 40, 50, R);
        assert_eq!((p.start, p.end, p.expired), (40, 50, 35));
        assert_eq!(
            watermark_plan(0, None, "", 40, 50, R).expired,
            0,
            "a new group lost nothing"
        );
    }

    #[test]
    fn metadata_round_trips_and_stays_small() {
        let s = StoredPlan {
            end: i64::MAX,
            rotation: Rotation {
                max_records: u64::MAX,
                max_bytes: u64::MAX,
                compression: Compression::Zstd,
            },
        };
        let m = s.to_metadata();
        assert!(
            m.len() < 200,
            "Kafka caps offset metadata at 4096 bytes by default"
        );
        assert_eq!(StoredPlan::from_metadata(&m), Some(s));
    }

    #[test]
    fn a_landing_object_name_says_its_compression() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let name = format!("user_events-p000-0-9.ndjson{}", c.extension());
            assert_eq!(Compression::of_landing_object(&name), Some(c));
        }
        assert_eq!(Compression::of_landing_object("_SUCCESS"), None);
        assert_eq!(Compression::of_landing_object("x.ndjson.bz2"), None);
        assert_eq!(Compression::of_landing_object("x.json.gz"), None);
    }

    #[test]
    fn plans_stored_with_the_gzip_flag_still_read() {
        let stored = |gzip: bool| {
            let m = format!(
                r#"{METADATA_PREFIX}{{"end":9,"rotation":{{"max_records":5,"max_bytes":7,"gzip":{gzip}}}}}"#
            );
            StoredPlan::from_metadata(&m).map(|p| p.rotation.compression)
        };
        assert_eq!(stored(true), Some(Compression::Gzip));
        assert_eq!(stored(false), Some(Compression::None));
    }
}
