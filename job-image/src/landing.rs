//! The landing zone's layout, in one place: how ingest names the objects it lands, how the ETL
//! lists and reads them back, and the log of landed ranges that makes the landing zone itself
//! the record of what is landed (docs/ingest.md, "Exactly once").
//!
//! ```text
//! <topic>/date=<event date>/<topic>-<topic id>-p<partition>-<first>-<last>.ndjson[.gz|.zst]
//! _quarantine/<topic>/date=<record date>/<same name>
//! _ingest/<topic>/<topic id>/<scope>/p<partition>/<seq>.json      the log of landed ranges
//! ```
//!
//! `<first>-<last>` is the range of offsets the log entry claims, not the first and last record
//! delivered: a retry names its objects after the claim, whatever Kafka delivers then.

use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::store::Location;

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
    /// drain to S3 took 9 s instead of 35 (docs/benchmarks.md, "Ingest").
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

/// Good records or the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChunkKind {
    Landing,
    Quarantine,
}

/// Where one object of a landed range goes.
#[derive(Debug, Clone, Copy)]
pub struct ObjectName<'a> {
    pub topic: &'a str,
    pub topic_id: &'a str,
    pub partition: i32,
    /// The claimed range `[first, next)`.
    pub first: i64,
    pub next: i64,
    pub kind: ChunkKind,
    pub date: chrono::NaiveDate,
    pub compression: Compression,
}

impl ObjectName<'_> {
    /// The object's name relative to the landing location. Zero-padded offsets sort by offset.
    pub fn relative(&self) -> String {
        let root = match self.kind {
            ChunkKind::Landing => "",
            ChunkKind::Quarantine => "_quarantine/",
        };
        format!(
            "{root}{topic}/date={date}/{topic}-{id}-p{partition:03}-{first:012}-{last:012}.ndjson{ext}",
            topic = self.topic,
            id = self.topic_id,
            date = self.date,
            partition = self.partition,
            first = self.first,
            last = self.next - 1,
            ext = self.compression.extension(),
        )
    }
}

/// Which log a drain extends: the watermark drains' (one per topic id, whatever the consumer
/// group), or one per interval, so a replayed interval resumes what it landed before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Watermark,
    Interval { start_ms: i64, end_ms: i64 },
}

/// The prefix, relative to the landing location, of one partition's log.
pub fn log_prefix(topic: &str, topic_id: &str, scope: Scope, partition: i32) -> String {
    let scope = match scope {
        Scope::Watermark => "watermark".to_owned(),
        Scope::Interval { start_ms, end_ms } => format!("interval={start_ms}-{end_ms}"),
    };
    format!("{LOG_ROOT}/{topic}/{topic_id}/{scope}/p{partition:05}")
}

/// The log's folder: `_`-prefixed, so readers of the data (the ETL, Spark, DuckDB) skip it.
pub const LOG_ROOT: &str = "_ingest";

/// One entry of a partition's log: a range of offsets `[first, next)` and the objects that
/// hold its records. Written (created, never replaced) before any of those objects; entry
/// `seq + 1` starts where entry `seq` ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub seq: u64,
    pub first: i64,
    pub next: i64,
    pub compression: Compression,
    /// Names relative to the landing location; empty when the range delivered no record.
    pub objects: Vec<String>,
    /// The drain that wrote it (a fresh id per run): a conditional create refused because the
    /// entry exists is our own earlier attempt when this matches, another writer otherwise.
    pub writer: String,
}

impl Claim {
    pub fn object_name(prefix: &str, seq: u64) -> String {
        format!("{prefix}/{seq:012}.json")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LandingError {
    #[error("cannot list {prefix} in the landing zone {store}: {source}")]
    List {
        store: String,
        prefix: String,
        source: Box<object_store::Error>,
    },
    #[error("cannot read {object} in the landing zone {store}: {source}")]
    Get {
        store: String,
        object: String,
        source: Box<object_store::Error>,
    },
    #[error("{object} in the landing zone {store} is not a landing log entry: {problem}")]
    Parse {
        store: String,
        object: String,
        problem: String,
    },
}

/// What a partition's log says: how many entries it has, and the last `recent` of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    /// The `seq` the next entry takes.
    pub next_seq: u64,
    /// The last entries, oldest first.
    pub recent: Vec<Claim>,
}

/// Reads the log under `prefix` (from [`log_prefix`]), keeping its last `recent` entries.
pub async fn read_log(
    landing: &Location,
    prefix: &str,
    recent: usize,
) -> Result<Log, LandingError> {
    let folder = landing.child(prefix);
    let listed: Vec<_> = landing
        .store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|source| LandingError::List {
            store: landing.display.clone(),
            prefix: folder.to_string(),
            source: Box::new(source),
        })?;
    let mut seqs: Vec<(u64, Path)> = listed
        .into_iter()
        .filter_map(|meta| {
            let seq = meta
                .location
                .filename()?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((seq, meta.location))
        })
        .collect();
    seqs.sort();
    let next_seq = seqs.last().map_or(0, |(seq, _)| seq + 1);
    let mut log = Log {
        next_seq,
        recent: Vec::new(),
    };
    for (_, path) in seqs.iter().skip(seqs.len().saturating_sub(recent)) {
        log.recent.push(get_claim(landing, path).await?);
    }
    Ok(log)
}

/// Reads one log entry.
pub async fn get_claim(landing: &Location, path: &Path) -> Result<Claim, LandingError> {
    let get_error = |source| LandingError::Get {
        store: landing.display.clone(),
        object: path.to_string(),
        source: Box::new(source),
    };
    let got = landing.store.get(path).await.map_err(get_error)?;
    let bytes = got.bytes().await.map_err(get_error)?;
    serde_json::from_slice(&bytes).map_err(|e| LandingError::Parse {
        store: landing.display.clone(),
        object: path.to_string(),
        problem: crate::excerpt::excerpt(&e.to_string()).into_owned(),
    })
}

/// Whether every object an entry names exists: a drain that crashed after writing the entry
/// may have written some of them, or none.
pub async fn is_complete(landing: &Location, claim: &Claim) -> Result<bool, LandingError> {
    for name in &claim.objects {
        let path = landing.child(name);
        match landing.store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(source) => {
                return Err(LandingError::Get {
                    store: landing.display.clone(),
                    object: path.to_string(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(true)
}

/// Lists the landing objects of `topic` for `dates`, sorted by name (so reruns read them, and
/// number their rows, in the same order). `_quarantine/` and names starting with `_` or `.`
/// (temporary uploads) are not data.
pub async fn list_objects(
    landing: &Location,
    topic: &str,
    dates: &[chrono::NaiveDate],
) -> Result<Vec<Path>, LandingError> {
    let mut objects = Vec::new();
    for date in dates {
        let prefix = landing.child(&format!("{topic}/date={date}"));
        let listed: Vec<_> = landing
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|source| LandingError::List {
                store: landing.display.clone(),
                prefix: prefix.to_string(),
                source: Box::new(source),
            })?;
        for meta in listed {
            let name = meta.location.filename().unwrap_or_default();
            let is_data =
                Compression::of_landing_object(name).is_some() && !name.starts_with(['_', '.']);
            if is_data {
                objects.push(meta.location);
            }
        }
    }
    objects.sort();
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn object_names_carry_the_topic_id_and_the_claimed_range() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap_or_default();
        let name = ObjectName {
            topic: "user_events",
            topic_id: "00ff",
            partition: 2,
            first: 100,
            next: 200,
            kind: ChunkKind::Quarantine,
            date,
            compression: Compression::Zstd,
        };
        assert_eq!(
            name.relative(),
            "_quarantine/user_events/date=2026-11-25/user_events-00ff-p002-000000000100-000000000199.ndjson.zst"
        );
    }

    #[tokio::test]
    async fn the_log_reads_back_its_last_entries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let landing = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let prefix = log_prefix("t", "id", Scope::Watermark, 0);
        assert_eq!(
            read_log(&landing, &prefix, 2).await.unwrap(),
            Log::default()
        );
        let claims: Vec<Claim> = (0..12)
            .map(|seq| Claim {
                seq,
                first: seq as i64 * 10,
                next: seq as i64 * 10 + 10,
                compression: Compression::None,
                objects: Vec::new(),
                writer: "w".to_owned(),
            })
            .collect();
        for c in &claims {
            let body = serde_json::to_vec(c).unwrap();
            landing
                .put_durable(
                    &landing.child(&Claim::object_name(&prefix, c.seq)),
                    body.into(),
                )
                .await
                .unwrap();
        }
        let log = read_log(&landing, &prefix, 2).await.unwrap();
        assert_eq!(log.next_seq, 12);
        assert_eq!(log.recent, claims[10..], "by seq, not by name length");
    }
}
