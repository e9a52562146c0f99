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
//! A partition is written in three steps: the bucket files, streamed to a staging directory and
//! then moved under a version directory named by the hash of their content, then the manifest
//! (a single PUT, atomic on S3 and on a local directory), then the files of earlier versions
//! and staging leftovers are deleted. Readers trust only the files the
//! manifest lists, so they see the old partition or the new one, never half of either; a run
//! that dies before the manifest leaves the previous partition readable and a stray version
//! directory the next run removes. The same input gives the same bytes, hence the same version
//! name and manifest: a rerun rewrites identical objects.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use streamflow_core::Interval;
use tokio::io::AsyncWriteExt as _;

use super::bucket::rows_by_bucket;
use super::csv_text::{csv_header, date_of, encode_rows};
use crate::store::Location;

pub const MANIFEST: &str = "_SUCCESS";
pub const DATE_COLUMN: &str = "event_date";
/// Bytes a bucket file buffers before it uploads them as a part: S3's smallest part size,
/// since every date of a run has its bucket files open at once.
const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;

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
    #[error("cannot finish uploading {object} to {store}: {source}")]
    Finish {
        object: String,
        store: String,
        source: std::io::Error,
    },
    #[error("manifest {object} is not valid: {problem}")]
    BadManifest { object: String, problem: String },
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

/// One bucket file of a partition, streamed to a staging object while its hash is computed.
struct StagedFile {
    bucket: u32,
    staging: Path,
    upload: BufWriter,
    rows: u64,
    bytes: u64,
    /// Of the file's content, for the version name.
    hash: blake3::Hasher,
}

impl StagedFile {
    async fn append(&mut self, gold: &Location, chunk: Vec<u8>) -> Result<(), WriteError> {
        self.hash.update(&chunk);
        self.bytes += chunk.len() as u64;
        self.upload
            .put(bytes::Bytes::from(chunk))
            .await
            .map_err(store_err(gold, "upload", &self.staging))
    }
}

/// The version name of a partition's files: a hash of each bucket's number and content, cut to
/// 64 bits (16 hex digits), plenty to tell the versions of one partition apart.
fn version_of(files: &[StagedFile]) -> String {
    let mut version = blake3::Hasher::new();
    for file in files {
        version.update(&file.bucket.to_le_bytes());
        version.update(file.hash.finalize().as_bytes());
        version.update(&file.bytes.to_le_bytes());
    }
    let hex = version.finalize().to_hex();
    format!("v-{}", &hex[..16])
}

/// A partition being written: one staged file per bucket under `_staging-<run>/` in the
/// partition directory, moved under its version directory and committed by [`Self::commit`].
struct PartitionWriter {
    date: NaiveDate,
    staging: Path,
    files: Vec<StagedFile>,
}

impl PartitionWriter {
    async fn open(
        gold: &Location,
        table: &str,
        date: NaiveDate,
        header: &[u8],
        file_count: u32,
    ) -> Result<Self, WriteError> {
        let staging = partition_dir(gold, table, date)
            .join(format!("_staging-{}", uuid::Uuid::new_v4().simple()).as_str());
        let mut files = Vec::new();
        for bucket in 0..file_count {
            let path = staging
                .clone()
                .join(format!("part-{bucket:05}.csv").as_str());
            let mut file = StagedFile {
                bucket,
                upload: BufWriter::with_capacity(
                    gold.store.clone(),
                    path.clone(),
                    UPLOAD_PART_BYTES,
                ),
                staging: path,
                rows: 0,
                bytes: 0,
                hash: blake3::Hasher::new(),
            };
            file.append(gold, header.to_vec()).await?;
            files.push(file);
        }
        Ok(Self {
            date,
            staging,
            files,
        })
    }

    /// Finishes the uploads, moves them to the version directory their content names and
    /// commits the manifest.
    async fn commit(
        self,
        gold: &Location,
        table: &str,
        schema: &SchemaRef,
        interval: &Interval,
        bucket_by: Option<&str>,
    ) -> Result<Manifest, WriteError> {
        let mut files = self.files;
        for file in &mut files {
            file.upload
                .shutdown()
                .await
                .map_err(|source| WriteError::Finish {
                    object: file.staging.to_string(),
                    store: gold.display.clone(),
                    source,
                })?;
        }
        let version = version_of(&files);
        let dir = partition_dir(gold, table, self.date);
        let day = Interval::day(self.date);
        let covered = Interval {
            start: interval.start.max(day.start),
            end: interval.end.min(day.end),
        };
        let manifest = Manifest {
            table: table.to_owned(),
            date: self.date,
            covered: covered.to_string(),
            rows: files.iter().map(|f| f.rows).sum(),
            columns: schema
                .fields()
                .iter()
                .map(|f| Column {
                    name: f.name().clone(),
                    r#type: f.data_type().to_string(),
                })
                .collect(),
            bucket_column: bucket_by.map(str::to_owned),
            buckets: files.len() as u32,
            files: files
                .iter()
                .map(|f| ManifestFile {
                    path: format!("{version}/part-{:05}.csv", f.bucket),
                    bucket: f.bucket,
                    rows: f.rows,
                    bytes: f.bytes,
                })
                .collect(),
            version,
        };
        for (file, listed) in files.iter().zip(&manifest.files) {
            let target =
                Path::from_iter(dir.parts().chain(Path::from(listed.path.as_str()).parts()));
            gold.store
                .rename(&file.staging, &target)
                .await
                .map_err(store_err(gold, "move", &file.staging))?;
        }
        gold.remove_empty_dir(&self.staging);
        commit_partition(gold, &manifest).await?;
        Ok(manifest)
    }
}

/// Step 3: writes one table's rows, streamed in any date order, as a partition per date of the
/// run; a date or bucket without rows still gets its file (a header only), so every partition
/// has the same files. Every date's partition stays open, its bucket files streaming, until
/// [`TableWriter::finish`] commits them all: a run holds an upload buffer per bucket file of
/// each of its dates ([`UPLOAD_PART_BYTES`]).
pub struct TableWriter<'a> {
    gold: &'a Location,
    table: &'a str,
    schema: SchemaRef,
    header: Vec<u8>,
    dates: &'a [NaiveDate],
    interval: &'a Interval,
    bucket_by: Option<&'a str>,
    file_count: u32,
    /// The partitions with rows so far, by date: rows may come in any date order.
    open: BTreeMap<NaiveDate, PartitionWriter>,
    written: TableWrite,
}

impl<'a> TableWriter<'a> {
    /// `dates` ascending: the dates rows may have.
    pub fn new(
        gold: &'a Location,
        table: &'a str,
        schema: SchemaRef,
        dates: &'a [NaiveDate],
        interval: &'a Interval,
        bucketing: Bucketing<'a>,
    ) -> Result<Self, WriteError> {
        let header = csv_header(&schema).map_err(|source| WriteError::Csv {
            table: table.to_owned(),
            date: dates.first().copied().unwrap_or_default(),
            source,
        })?;
        let file_count = if bucketing.column.is_some() {
            bucketing.buckets.max(1)
        } else {
            1
        };
        Ok(Self {
            gold,
            table,
            schema,
            header,
            dates,
            interval,
            bucket_by: bucketing.column,
            file_count,
            open: BTreeMap::new(),
            written: TableWrite::default(),
        })
    }

    fn shape(&self, problem: String) -> WriteError {
        WriteError::Shape {
            table: self.table.to_owned(),
            problem,
        }
    }

    /// Appends a batch of rows.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let dates = batch
            .column_by_name(DATE_COLUMN)
            .and_then(|c| c.as_primitive_opt::<Date32Type>())
            .ok_or_else(|| self.shape(format!("no {DATE_COLUMN} column of type DATE")))?
            .clone();
        if dates.null_count() > 0 {
            return Err(self.shape(format!("a row has no {DATE_COLUMN}")));
        }
        let mut start = 0;
        while start < batch.num_rows() {
            let day = dates.value(start);
            let end = (start..batch.num_rows())
                .find(|&row| dates.value(row) != day)
                .unwrap_or(batch.num_rows());
            let date = date_of(day).ok_or_else(|| {
                self.shape(format!("a row's {DATE_COLUMN} is {day} days from 1970"))
            })?;
            self.append(date, &batch.slice(start, end - start)).await?;
            start = end;
        }
        Ok(())
    }

    /// `date`'s partition, opened when its first row comes.
    async fn partition(&mut self, date: NaiveDate) -> Result<&mut PartitionWriter, WriteError> {
        if !self.dates.contains(&date) {
            return Err(self.shape(format!("a row dated {date} is outside the run's dates")));
        }
        match self.open.entry(date) {
            Entry::Occupied(open) => Ok(open.into_mut()),
            Entry::Vacant(vacant) => {
                let partition = PartitionWriter::open(
                    self.gold,
                    self.table,
                    date,
                    &self.header,
                    self.file_count,
                )
                .await?;
                Ok(vacant.insert(partition))
            }
        }
    }

    async fn commit(&mut self, partition: PartitionWriter) -> Result<(), WriteError> {
        let manifest = partition
            .commit(
                self.gold,
                self.table,
                &self.schema,
                self.interval,
                self.bucket_by,
            )
            .await?;
        self.written.rows += manifest.rows;
        self.written.files += manifest.files.len() as u64;
        self.written.bytes += manifest.files.iter().map(|f| f.bytes).sum::<u64>();
        Ok(())
    }

    /// Appends rows of one date, each to its bucket's file in the order given.
    async fn append(&mut self, date: NaiveDate, rows: &RecordBatch) -> Result<(), WriteError> {
        let csv_error = |table: &str, date: NaiveDate| {
            let table = table.to_owned();
            move |source| WriteError::Csv {
                table,
                date,
                source,
            }
        };
        let buckets: Option<Vec<Vec<usize>>> = match self.bucket_by {
            Some(name) => {
                let users = rows
                    .column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| self.shape(format!("no text column {name} to bucket by")))?;
                Some(rows_by_bucket(users, self.file_count))
            }
            None => None,
        };
        let (gold, table) = (self.gold, self.table);
        let partition = self.partition(date).await?;
        let all_rows = [(0..rows.num_rows()).collect::<Vec<_>>()];
        let by_file = match &buckets {
            Some(indices) => indices.as_slice(),
            None => all_rows.as_slice(),
        };
        for (file, indices) in partition.files.iter_mut().zip(by_file) {
            if indices.is_empty() {
                continue;
            }
            let mut chunk = Vec::with_capacity(indices.len() * 128);
            encode_rows(rows, indices.iter().copied(), &mut chunk)
                .map_err(csv_error(table, date))?;
            file.rows += indices.len() as u64;
            file.append(gold, chunk).await?;
        }
        Ok(())
    }

    /// Commits every date's partition, those without rows too.
    pub async fn finish(mut self) -> Result<TableWrite, WriteError> {
        for &date in self.dates {
            self.partition(date).await?;
            if let Some(partition) = self.open.remove(&date) {
                self.commit(partition).await?;
            }
        }
        Ok(self.written)
    }
}

/// Writes the manifest (the commit), then deletes whatever else is in the partition
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
