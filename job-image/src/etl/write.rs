//! Writing gold tables: CSV with a header, partitioned by date and bucketed by a hash of the
//! user id, each partition replaced atomically.
//!
//! Layout of one partition:
//!
//! ```text
//! <gold>/<table>/date=YYYY-MM-DD/_SUCCESS                       the manifest: the commit point
//! <gold>/<table>/date=YYYY-MM-DD/v-<content hash>/part-00000.csv one file per bucket
//! ```
//!
//! A partition is written in three steps: the bucket files under a version directory named by
//! the hash of their content, then the manifest (a single PUT, atomic on S3 and on a local
//! directory), then the files of earlier versions are deleted. Readers trust only the files the
//! manifest lists, so they see the old partition or the new one, never half of either; a run
//! that dies before the manifest leaves the previous partition readable and a stray version
//! directory the next run removes. The same input gives the same bytes, hence the same version
//! name and manifest: a rerun rewrites identical objects.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::csv::{ReaderBuilder, WriterBuilder};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use streamflow_core::Interval;

use crate::store::Location;

pub const MANIFEST: &str = "_SUCCESS";
/// How timestamps are written: UTC, microseconds, `Z`; the same in every file of every table.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
pub const DATE_COLUMN: &str = "event_date";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("table {table}: {problem}")]
    Shape { table: String, problem: String },
    #[error("table {table}, partition date={date}: cannot encode CSV: {source}")]
    Csv {
        table: String,
        date: NaiveDate,
        source: datafusion::arrow::error::ArrowError,
    },
    #[error("cannot {action} {object} in {store}: {source}")]
    Store {
        action: &'static str,
        object: String,
        store: String,
        // Boxed: object_store's error is large and this enum travels in every Result here.
        source: Box<object_store::Error>,
    },
    #[error("manifest {object} is not valid: {problem}")]
    BadManifest { object: String, problem: String },
    #[error("cannot read {object}: {problem}")]
    Read { object: String, problem: String },
}

/// The `_SUCCESS` manifest of one committed partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub table: String,
    pub date: NaiveDate,
    /// The part of the run's interval inside this date: a partition written by a run over part
    /// of a day holds only that part.
    pub covered: String,
    pub version: String,
    pub rows: u64,
    pub columns: Vec<Column>,
    pub bucket_column: Option<String>,
    pub buckets: u32,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The Arrow type, as Arrow prints it (and parses it back).
    pub r#type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the partition directory.
    pub path: String,
    pub bucket: u32,
    pub rows: u64,
    pub bytes: u64,
}

impl Manifest {
    pub fn schema(&self) -> Result<SchemaRef, String> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                c.r#type
                    .parse::<DataType>()
                    .map(|t| Field::new(&c.name, t, true))
                    .map_err(|e| format!("column {}: type {:?}: {e}", c.name, c.r#type))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// How a table's rows are spread over files: by a hash of `column` into `buckets` files, or
/// into one file when there is no column.
#[derive(Debug, Clone, Copy)]
pub struct Bucketing<'a> {
    pub column: Option<&'a str>,
    pub buckets: u32,
}

/// What writing one table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableWrite {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
}

/// FNV-1a, 64 bit: a hash that is stable across versions, platforms and engines (the benchmark
/// scripts reimplement it), unlike std's randomly seeded one.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The bucket of a user id.
pub fn bucket_of(user_id: &str, buckets: u32) -> u32 {
    (fnv1a64(user_id.as_bytes()) % u64::from(buckets.max(1))) as u32
}

pub fn partition_dir(gold: &Location, table: &str, date: NaiveDate) -> Path {
    gold.child(&format!("{table}/date={date}"))
}

fn store_err(
    gold: &Location,
    action: &'static str,
    object: &Path,
) -> impl FnOnce(object_store::Error) -> WriteError {
    let object = object.to_string();
    let store = gold.display.clone();
    move |source| WriteError::Store {
        action,
        object,
        store,
        source: Box::new(source),
    }
}

/// The rows of `batches` grouped by (date, bucket), in their original order, as (batch, row)
/// indices.
type Groups = BTreeMap<(i32, u32), Vec<(usize, usize)>>;

fn group_rows(
    table: &str,
    batches: &[RecordBatch],
    bucket_by: Option<&str>,
    buckets: u32,
) -> Result<Groups, WriteError> {
    let shape = |problem: String| WriteError::Shape {
        table: table.to_owned(),
        problem,
    };
    let mut groups = Groups::new();
    for (b, batch) in batches.iter().enumerate() {
        let dates = batch
            .column_by_name(DATE_COLUMN)
            .and_then(|c| c.as_primitive_opt::<Date32Type>())
            .ok_or_else(|| shape(format!("no {DATE_COLUMN} column of type DATE")))?;
        let users = match bucket_by {
            Some(name) => Some(
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| shape(format!("no text column {name} to bucket by")))?,
            ),
            None => None,
        };
        for row in 0..batch.num_rows() {
            if dates.is_null(row) {
                return Err(shape(format!("row {row} has no {DATE_COLUMN}")));
            }
            let bucket = match users {
                Some(users) if users.is_valid(row) => bucket_of(users.value(row), buckets),
                _ => 0,
            };
            groups
                .entry((dates.value(row), bucket))
                .or_default()
                .push((b, row));
        }
    }
    Ok(groups)
}

fn encode_csv(batch: &RecordBatch) -> Result<Vec<u8>, datafusion::arrow::error::ArrowError> {
    let mut writer = WriterBuilder::new()
        .with_header(true)
        .with_timestamp_tz_format(TIMESTAMP_FORMAT.to_owned())
        .build(Vec::new());
    writer.write(batch)?;
    Ok(writer.into_inner())
}

/// Arrow's DATE is days since 1970-01-01, which is `NaiveDate::default()`.
fn date_of(days: i32) -> NaiveDate {
    NaiveDate::default() + chrono::Duration::days(i64::from(days))
}

fn days_of(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// The files of one partition, encoded: (bucket, rows, bytes).
pub struct EncodedPartition {
    pub date: NaiveDate,
    pub files: Vec<(u32, u64, Vec<u8>)>,
}

/// Encodes a table's rows into one CSV file per bucket for each of `dates`; a date or bucket
/// without rows still gets its file (a header only), so every partition has the same files.
pub fn encode_table(
    table: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    dates: &[NaiveDate],
    bucket_by: Option<&str>,
    buckets: u32,
) -> Result<Vec<EncodedPartition>, WriteError> {
    let file_count = if bucket_by.is_some() {
        buckets.max(1)
    } else {
        1
    };
    let groups = group_rows(table, batches, bucket_by, file_count)?;
    if let Some(((days, _), _)) = groups
        .iter()
        .find(|((d, _), _)| !dates.contains(&date_of(*d)))
    {
        return Err(WriteError::Shape {
            table: table.to_owned(),
            problem: format!("a row dated {} is outside the run's dates", date_of(*days)),
        });
    }
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let mut out = Vec::new();
    for date in dates {
        let mut files = Vec::new();
        for bucket in 0..file_count {
            let rows = groups.get(&(days_of(*date), bucket));
            let batch = match rows {
                Some(indices) => interleave_record_batch(&refs, indices),
                None => Ok(RecordBatch::new_empty(schema.clone())),
            }
            .and_then(|b| encode_csv(&b).map(|bytes| (b.num_rows() as u64, bytes)))
            .map_err(|source| WriteError::Csv {
                table: table.to_owned(),
                date: *date,
                source,
            })?;
            files.push((bucket, batch.0, batch.1));
        }
        out.push(EncodedPartition { date: *date, files });
    }
    Ok(out)
}

/// The manifest an encoded partition would be committed with.
pub fn manifest_for(
    table: &str,
    schema: &SchemaRef,
    part: &EncodedPartition,
    interval: &Interval,
    bucket_by: Option<&str>,
) -> Manifest {
    let mut hash_input = Vec::new();
    for (bucket, _, bytes) in &part.files {
        hash_input.extend_from_slice(&bucket.to_le_bytes());
        hash_input.extend_from_slice(&fnv1a64(bytes).to_le_bytes());
        hash_input.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    }
    let version = format!("v-{:016x}", fnv1a64(&hash_input));
    let day = Interval::day(part.date);
    let covered = Interval {
        start: interval.start.max(day.start),
        end: interval.end.min(day.end),
    };
    Manifest {
        table: table.to_owned(),
        date: part.date,
        covered: covered.to_string(),
        rows: part.files.iter().map(|(_, rows, _)| rows).sum(),
        columns: schema
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().clone(),
                r#type: f.data_type().to_string(),
            })
            .collect(),
        bucket_column: bucket_by.map(str::to_owned),
        buckets: part.files.len() as u32,
        files: part
            .files
            .iter()
            .map(|(bucket, rows, bytes)| ManifestFile {
                path: format!("{version}/part-{bucket:05}.csv"),
                bucket: *bucket,
                rows: *rows,
                bytes: bytes.len() as u64,
            })
            .collect(),
        version,
    }
}

/// Step 3a: uploads a partition's files under its version directory. Nothing reads them until
/// [`commit_partition`] writes the manifest.
pub async fn stage_partition(
    gold: &Location,
    manifest: &Manifest,
    part: &EncodedPartition,
) -> Result<(), WriteError> {
    let dir = partition_dir(gold, &manifest.table, manifest.date);
    let uploads = manifest
        .files
        .iter()
        .zip(&part.files)
        .map(|(file, (_, _, bytes))| {
            let path = Path::from_iter(dir.parts().chain(Path::from(file.path.as_str()).parts()));
            let payload = bytes::Bytes::from(bytes.clone());
            async move {
                gold.store
                    .put(&path, payload.into())
                    .await
                    .map(|_| ())
                    .map_err(store_err(gold, "upload", &path))
            }
        });
    futures::future::try_join_all(uploads).await?;
    Ok(())
}

/// Step 3b: writes the manifest (the commit), then deletes whatever else is in the partition
/// directory: earlier versions and the leftovers of interrupted runs.
pub async fn commit_partition(gold: &Location, manifest: &Manifest) -> Result<(), WriteError> {
    let dir = partition_dir(gold, &manifest.table, manifest.date);
    let manifest_path = dir.clone().join(MANIFEST);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| WriteError::BadManifest {
        object: manifest_path.to_string(),
        problem: e.to_string(),
    })?;
    gold.store
        .put(&manifest_path, bytes::Bytes::from(json).into())
        .await
        .map_err(store_err(gold, "commit", &manifest_path))?;
    let keep: Vec<Path> = manifest
        .files
        .iter()
        .map(|f| Path::from_iter(dir.parts().chain(Path::from(f.path.as_str()).parts())))
        .chain(std::iter::once(manifest_path))
        .collect();
    let listed: Vec<_> = gold
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(store_err(gold, "list", &dir))?;
    for meta in listed {
        if !keep.contains(&meta.location) {
            gold.store.delete(&meta.location).await.map_err(store_err(
                gold,
                "delete",
                &meta.location,
            ))?;
        }
    }
    Ok(())
}

/// Encodes, stages and commits every partition of one table for `dates`.
pub async fn write_table(
    gold: &Location,
    table: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    dates: &[NaiveDate],
    interval: &Interval,
    bucketing: Bucketing<'_>,
) -> Result<TableWrite, WriteError> {
    let bucket_by = bucketing.column;
    let parts = encode_table(table, schema, batches, dates, bucket_by, bucketing.buckets)?;
    let mut written = TableWrite::default();
    for part in &parts {
        let manifest = manifest_for(table, schema, part, interval, bucket_by);
        stage_partition(gold, &manifest, part).await?;
        commit_partition(gold, &manifest).await?;
        written.rows += manifest.rows;
        written.files += manifest.files.len() as u64;
        written.bytes += manifest.files.iter().map(|f| f.bytes).sum::<u64>();
    }
    Ok(written)
}

/// The committed manifest of a partition, or None when none was ever committed.
pub async fn read_manifest(
    gold: &Location,
    table: &str,
    date: NaiveDate,
) -> Result<Option<Manifest>, WriteError> {
    let path = partition_dir(gold, table, date).join(MANIFEST);
    let bytes = match gold.store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(store_err(gold, "read", &path))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_err(gold, "read", &path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| WriteError::BadManifest {
            object: path.to_string(),
            problem: e.to_string(),
        })
}

/// The rows of a committed partition: only the files its manifest lists, typed by its schema.
pub async fn read_partition(
    gold: &Location,
    manifest: &Manifest,
) -> Result<(SchemaRef, Vec<RecordBatch>), WriteError> {
    let dir = partition_dir(gold, &manifest.table, manifest.date);
    let schema = manifest
        .schema()
        .map_err(|problem| WriteError::BadManifest {
            object: dir.clone().join(MANIFEST).to_string(),
            problem,
        })?;
    let mut batches = Vec::new();
    for file in &manifest.files {
        let path = Path::from_iter(dir.parts().chain(Path::from(file.path.as_str()).parts()));
        let bytes = gold
            .store
            .get(&path)
            .await
            .map_err(store_err(gold, "read", &path))?
            .bytes()
            .await
            .map_err(store_err(gold, "read", &path))?;
        let read_err = |e: datafusion::arrow::error::ArrowError| WriteError::Read {
            object: path.to_string(),
            problem: e.to_string(),
        };
        let reader = ReaderBuilder::new(schema.clone())
            .with_header(true)
            .build(Cursor::new(bytes))
            .map_err(read_err)?;
        for batch in reader {
            batches.push(batch.map_err(read_err)?);
        }
    }
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference: the empty string and "a".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn dates_round_trip_through_days() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        assert_eq!(date_of(days_of(d)), d);
        assert_eq!(days_of(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap()), 1);
    }
}
