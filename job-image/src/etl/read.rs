//! Reading the landing zone: every NDJSON object of a topic for the interval's dates, decoded
//! with an explicit Arrow schema as a query streams through them.
//!
//! The schema is explicit because NDJSON inference samples only the first records (a field
//! first seen later would be silently dropped) and would read money as a float. Objects are
//! decoded here rather than by DataFusion's JSON source so that a malformed object fails the
//! run with a message naming the object and the line.

use std::borrow::Cow;
use std::io::Read as _;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{ArrayRef, AsArray as _, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Field, Fields, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionContext, col};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use streamflow_core::{EtlReadSummary, Interval};

use crate::events::EventKind;
use crate::landing::{Compression, LandingError, list_objects};
use crate::store::Location;

/// Precision and scale of every money column: two decimals, as upstream sends them.
pub const MONEY_PRECISION: u8 = 18;
pub const MONEY_SCALE: i8 = 2;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;
/// Column added to every raw row: (object index << 32) | line, so "first seen" is well defined
/// when duplicates are removed and reruns pick the same copy.
pub const SOURCE_ORDER: &str = "source_order";

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Listing the landing zone failed ([`crate::landing::list_objects`]).
    #[error(transparent)]
    List(#[from] LandingError),
    #[error("cannot read landing object {object}: {source}")]
    Get {
        object: String,
        source: object_store::Error,
    },
    #[error("landing object {object} is not valid {compression:?} data: {source}")]
    Decompress {
        object: String,
        compression: Compression,
        source: std::io::Error,
    },
    #[error("landing object {object}, line {line}: {}", crate::excerpt::excerpt(.problem))]
    Malformed {
        object: String,
        line: usize,
        problem: String,
    },
    #[error("landing object {object}: {problem}")]
    Decode { object: String, problem: String },
    #[error("the decoding task for {object} failed: {problem}")]
    Task { object: String, problem: String },
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn money() -> DataType {
    DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// `user_events` as docs/events.md describes it; required fields are non-nullable, so a record
/// missing one fails decoding instead of becoming a silent null.
pub fn user_events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("event_id", false),
        text("event_type", false),
        Field::new("event_time", utc_micros(), false),
        text("user_id", false),
        text("session_id", false),
        Field::new(
            "page",
            DataType::Struct(Fields::from(vec![
                text("url", false),
                text("referrer", true),
                text("title", false),
            ])),
            false,
        ),
        Field::new(
            "device",
            DataType::Struct(Fields::from(vec![
                text("type", false),
                text("os", false),
                text("browser", false),
            ])),
            false,
        ),
        Field::new(
            "geo",
            DataType::Struct(Fields::from(vec![
                text("country", false),
                text("city", false),
                Field::new("lat", DataType::Float64, false),
                Field::new("lon", DataType::Float64, false),
            ])),
            false,
        ),
        Field::new(
            "properties",
            DataType::Struct(Fields::from(vec![
                text("query", true),
                text("product_id", true),
                text("element", true),
            ])),
            true,
        ),
    ]))
}

/// The fields of one element of `items[]`.
pub fn item_fields() -> Fields {
    Fields::from(vec![
        text("sku", false),
        text("name", false),
        text("category", false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("unit_price", money(), false),
    ])
}

/// `transaction_events`; `amount` and `unit_price` are decimals, never floats.
pub fn transaction_events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("event_id", false),
        Field::new("event_time", utc_micros(), false),
        text("transaction_id", false),
        text("user_id", false),
        text("session_id", true),
        Field::new("amount", money(), false),
        text("currency", false),
        text("status", false),
        Field::new(
            "payment",
            DataType::Struct(Fields::from(vec![
                text("method", false),
                text("card_brand", true),
                text("card_last4", true),
            ])),
            false,
        ),
        Field::new(
            "merchant",
            DataType::Struct(Fields::from(vec![
                text("merchant_id", false),
                text("name", false),
                text("category", false),
                text("country", false),
            ])),
            false,
        ),
        Field::new(
            "items",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(item_fields()),
                false,
            ))),
            false,
        ),
    ]))
}

/// The schema of a topic's raw rows as read: the event schema plus [`SOURCE_ORDER`].
pub fn with_source_order(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(SOURCE_ORDER, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// What the landing table of one topic has read so far: complete once a query has consumed
/// the table (each object is read once per query).
#[derive(Debug, Default)]
pub struct LandingCounts {
    pub objects: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// Records whose `event_time` is inside the interval given to [`register_landing`].
    pub in_interval: AtomicU64,
}

impl LandingCounts {
    /// The read summary of the topic, given the `rows` left after deduplication.
    pub fn summary(&self, rows: u64) -> EtlReadSummary {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (records, in_interval) = (get(&self.records), get(&self.in_interval));
        EtlReadSummary {
            objects: get(&self.objects),
            records,
            bytes: get(&self.bytes),
            outside_interval: records.saturating_sub(in_interval),
            duplicates: in_interval.saturating_sub(rows),
            rows,
        }
    }
}

/// Registers the landing objects of `topic`, whose records follow `kind`'s schema, for the
/// interval's dates as the streaming table `name`: rows of that schema plus [`SOURCE_ORDER`], decoded object by object while a query runs, so the input
/// is never held in memory whole. The objects are spread over `partitions` streams that decode
/// in parallel. A malformed object fails the query with a [`ReadError`] naming it.
pub async fn register_landing(
    ctx: &SessionContext,
    name: &str,
    landing: &Location,
    topic: &str,
    kind: EventKind,
    interval: &Interval,
    partitions: usize,
) -> Result<Arc<LandingCounts>, ReadError> {
    let objects = list_objects(landing, topic, &interval.dates()).await?;
    let schema = match kind {
        EventKind::User => user_events_schema(),
        EventKind::Transaction => transaction_events_schema(),
    };
    let counts = Arc::new(LandingCounts::default());
    let out_schema = with_source_order(&schema);
    let mut spread: Vec<Vec<(u64, Path)>> = vec![Vec::new(); partitions.max(1)];
    let n = spread.len();
    for (index, path) in objects.into_iter().enumerate() {
        spread[index % n].push((index as u64, path));
    }
    let streams: Vec<Arc<dyn PartitionStream>> = spread
        .into_iter()
        .map(|objects| {
            Arc::new(LandingPartition {
                store: landing.store.clone(),
                objects,
                event_schema: schema.clone(),
                schema: out_schema.clone(),
                interval: (
                    interval.start.timestamp_micros(),
                    interval.end.timestamp_micros(),
                ),
                counts: counts.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    // Each stream yields its objects in index order and their lines in order: rows ascend by
    // SOURCE_ORDER. Declared, it lets the flat tables be merged back into landing order
    // without a sort (steps::Order::Landing).
    let table = StreamingTable::try_new(out_schema, streams)
        .map_err(|e| ReadError::Decode {
            object: name.to_owned(),
            problem: e.to_string(),
        })?
        .with_sort_order(vec![col(SOURCE_ORDER).sort(true, false)]);
    ctx.register_table(name, Arc::new(table))
        .map_err(|e| ReadError::Decode {
            object: name.to_owned(),
            problem: e.to_string(),
        })?;
    Ok(counts)
}

/// One stream of a landing table: its share of the objects, fetched and decoded in order.
#[derive(Debug)]
struct LandingPartition {
    store: Arc<dyn ObjectStore>,
    objects: Vec<(u64, Path)>,
    /// What the objects hold; `schema` adds [`SOURCE_ORDER`].
    event_schema: SchemaRef,
    schema: SchemaRef,
    /// The interval in microseconds, for [`LandingCounts::in_interval`].
    interval: (i64, i64),
    counts: Arc<LandingCounts>,
}

impl PartitionStream for LandingPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let store = self.store.clone();
        let schema = self.event_schema.clone();
        let counts = self.counts.clone();
        let interval = self.interval;
        let batches = futures::stream::iter(self.objects.clone())
            .map(move |(index, path)| {
                let store = store.clone();
                let schema = schema.clone();
                let counts = counts.clone();
                async move {
                    let (batches, records, size) =
                        fetch_and_decode(store, path, index, schema).await?;
                    let in_interval = batches
                        .iter()
                        .map(|b| rows_in_interval(b, interval))
                        .sum::<u64>();
                    counts.objects.fetch_add(1, Ordering::Relaxed);
                    counts.records.fetch_add(records, Ordering::Relaxed);
                    counts.bytes.fetch_add(size, Ordering::Relaxed);
                    counts.in_interval.fetch_add(in_interval, Ordering::Relaxed);
                    Ok::<_, ReadError>(futures::stream::iter(batches.into_iter().map(Ok)))
                }
            })
            // The next object is fetched and decoded while this one's rows are consumed.
            .buffered(2)
            .try_flatten()
            .map_err(|e: ReadError| DataFusionError::External(Box::new(e)));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

/// Rows of a decoded batch whose `event_time` is in `[start, end)` (microseconds).
fn rows_in_interval(batch: &RecordBatch, (start, end): (i64, i64)) -> u64 {
    let Some(times) = batch
        .column_by_name("event_time")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
    else {
        return 0;
    };
    times
        .iter()
        .filter(|t| t.is_some_and(|t| t >= start && t < end))
        .count() as u64
}

/// Fetches one object and decodes it off the async threads: (batches, records, bytes).
async fn fetch_and_decode(
    store: Arc<dyn ObjectStore>,
    path: Path,
    index: u64,
    schema: SchemaRef,
) -> Result<(Vec<RecordBatch>, u64, u64), ReadError> {
    let object = path.to_string();
    let bytes = store
        .get(&path)
        .await
        .map_err(|source| ReadError::Get {
            object: object.clone(),
            source,
        })?
        .bytes()
        .await
        .map_err(|source| ReadError::Get {
            object: object.clone(),
            source,
        })?;
    let size = bytes.len() as u64;
    let task_object = object.clone();
    let (batches, records) =
        tokio::task::spawn_blocking(move || decode_object(&task_object, index, &bytes, schema))
            .await
            .map_err(|e| ReadError::Task {
                object,
                problem: e.to_string(),
            })??;
    Ok((batches, records, size))
}

/// The [`ReadError`] a failed query carries, if a landing table's stream failed it.
pub fn read_error_in(error: &DataFusionError) -> Option<&ReadError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(read) = e.downcast_ref::<ReadError>() {
            return Some(read);
        }
        current = e.source();
    }
    None
}

/// An object's NDJSON text: `raw` itself when it is not compressed.
fn decompress(compression: Compression, raw: &[u8]) -> std::io::Result<Cow<'_, [u8]>> {
    let mut out = Vec::new();
    match compression {
        Compression::None => return Ok(Cow::Borrowed(raw)),
        Compression::Gzip => flate2::read::MultiGzDecoder::new(raw).read_to_end(&mut out)?,
        Compression::Zstd => zstd::stream::read::Decoder::new(raw)?.read_to_end(&mut out)?,
    };
    Ok(Cow::Owned(out))
}

/// Decodes one object: decompresses it as its name says, then one JSON object per non-empty
/// line.
fn decode_object(
    object: &str,
    index: u64,
    raw: &[u8],
    schema: SchemaRef,
) -> Result<(Vec<RecordBatch>, u64), ReadError> {
    let compression = Compression::of_landing_object(object).unwrap_or_default();
    let content = decompress(compression, raw).map_err(|source| ReadError::Decompress {
        object: object.to_owned(),
        compression,
        source,
    })?;
    let malformed = |line: usize, problem: String| ReadError::Malformed {
        object: object.to_owned(),
        line,
        problem,
    };
    let new_decoder = || {
        ReaderBuilder::new(schema.clone())
            .with_batch_size(BATCH_ROWS)
            .build_decoder()
            .map_err(|e| ReadError::Decode {
                object: object.to_owned(),
                problem: e.to_string(),
            })
    };
    let mut decoder = new_decoder()?;
    let mut batches = Vec::new();
    // Line numbers (1-based) of the rows in the decoder, to name the line of a typing error,
    // which Arrow reports only when a batch is flushed.
    let mut pending: Vec<(usize, &[u8])> = Vec::with_capacity(BATCH_ROWS);
    let mut records = 0u64;
    let flush = |decoder: &mut datafusion::arrow::json::reader::Decoder,
                 pending: &mut Vec<(usize, &[u8])>,
                 batches: &mut Vec<RecordBatch>|
     -> Result<(), ReadError> {
        match decoder.flush() {
            Ok(Some(batch)) => {
                let order: Int64Array = pending
                    .iter()
                    .map(|(line, _)| ((index << 32) | *line as u64) as i64)
                    .collect();
                let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                columns.push(Arc::new(order));
                let batch =
                    RecordBatch::try_new(with_source_order(&schema), columns).map_err(|e| {
                        ReadError::Decode {
                            object: object.to_owned(),
                            problem: e.to_string(),
                        }
                    })?;
                batches.push(batch);
                pending.clear();
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(batch_error) => Err(locate_bad_line(object, &schema, pending, &new_decoder)
                .unwrap_or_else(|| {
                    malformed(
                        pending.first().map_or(0, |(l, _)| *l),
                        batch_error.to_string(),
                    )
                })),
        }
    };
    // memchr finds the line ends a word at a time; a byte-by-byte split showed in profiles.
    let line_ends = memchr::memchr_iter(b'\n', &content).chain(std::iter::once(content.len()));
    let mut line_start = 0;
    for (number, line_end) in line_ends.enumerate() {
        let line = &content[line_start..line_end];
        line_start = line_end + 1;
        let line_no = number + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let used = decoder
            .decode(line)
            .map_err(|e| malformed(line_no, e.to_string()))?;
        if used < line.len() || decoder.has_partial_record() {
            return Err(malformed(
                line_no,
                "not exactly one complete JSON object on the line".to_owned(),
            ));
        }
        pending.push((line_no, line));
        records += 1;
        if pending.len() == BATCH_ROWS {
            flush(&mut decoder, &mut pending, &mut batches)?;
        }
    }
    flush(&mut decoder, &mut pending, &mut batches)?;
    Ok((batches, records))
}

/// Re-decodes a failed batch line by line to name the first line that does not fit the schema.
fn locate_bad_line(
    object: &str,
    schema: &SchemaRef,
    pending: &[(usize, &[u8])],
    new_decoder: &dyn Fn() -> Result<datafusion::arrow::json::reader::Decoder, ReadError>,
) -> Option<ReadError> {
    for (line, bytes) in pending {
        let mut decoder = match new_decoder() {
            Ok(d) => d,
            Err(e) => return Some(e),
        };
        let result = decoder.decode(bytes).and_then(|_| decoder.flush());
        if let Err(e) = result {
            return Some(ReadError::Malformed {
                object: object.to_owned(),
                line: *line,
                problem: format!("{}{e}", bad_field(schema, bytes)),
            });
        }
    }
    None
}

/// Names the first top-level field of `line` that does not decode on its own (Arrow's message
/// for a bad value does not always say which field it was in), as "field NAME: ".
fn bad_field(schema: &SchemaRef, line: &[u8]) -> String {
    for field in schema.fields() {
        let single = Arc::new(Schema::new(vec![field.as_ref().clone()]));
        let decoded = ReaderBuilder::new(single)
            .build_decoder()
            .and_then(|mut d| d.decode(line).and_then(|_| d.flush()));
        if decoded.is_err() {
            return format!("field {}: ", field.name());
        }
    }
    String::new()
}
