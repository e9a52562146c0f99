//! Cutting one partition's records into files: pure, so the cut is provably the same on a
//! retry.
//!
//! A batch is a run of consecutive offsets `[first, last]` of one partition. It becomes one
//! landing object per event date (and one quarantine object per record date for bad records),
//! each named by topic, partition and the batch's first and last offset.
//!
//! A compressed object is written as it fills, one frame (a gzip member) per [`FRAME_BYTES`] of
//! NDJSON, so a batch never holds its raw bytes whole: that halved a zstd drain's peak RSS. zstd
//! and gzip readers decode concatenated frames as one stream.

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::buffers::BufferPool;
use super::plan::{Compression, Rotation};
use crate::events::{EventKind, check_record};
use crate::landing::ObjectName;

pub use crate::landing::ChunkKind;

/// NDJSON compressed at a time into one frame of a compressed object. Frames of 1 MiB made a
/// 16 MiB landing file 0.3 % larger than one frame did (zstd -1), at the same speed.
pub const FRAME_BYTES: usize = 1 << 20;

/// The records of a batch that go into one object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub records: u64,
    /// The object's bytes: NDJSON, one record per line, compressed frame by frame when the
    /// batch is compressed.
    pub body: Vec<u8>,
    /// Lines of a compressed object not yet in a frame; always empty when not compressed.
    pending: Vec<u8>,
}

impl Chunk {
    /// Where the next NDJSON line goes.
    fn lines(&mut self, compression: Compression) -> &mut Vec<u8> {
        match compression {
            Compression::None => &mut self.body,
            Compression::Gzip | Compression::Zstd => &mut self.pending,
        }
    }

    /// Compresses the pending lines into a frame once there are [`FRAME_BYTES`] of them, or
    /// whatever is pending when `last`.
    fn compress_pending(&mut self, compression: Compression, last: bool) -> std::io::Result<()> {
        if self.pending.is_empty() || (!last && self.pending.len() < FRAME_BYTES) {
            return Ok(());
        }
        append_frame(compression, &self.pending, &mut self.body)?;
        self.pending.clear();
        Ok(())
    }
}

/// Appends `raw` to `out` as one frame of `compression`. The fast levels: a drain is CPU-bound,
/// and the ETL reads each file once.
fn append_frame(compression: Compression, raw: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    match compression {
        Compression::None => out.extend_from_slice(raw),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            std::io::Write::write_all(&mut encoder, raw)?;
            encoder.finish()?;
        }
        Compression::Zstd => ZSTD_COMPRESSOR.with(|slot| {
            let mut slot = slot.borrow_mut();
            let compressor = match &mut *slot {
                Some(compressor) => compressor,
                None => slot.insert(zstd_compressor()?),
            };
            out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            // zstd writes at the cursor, after the frames already there.
            let mut end = std::io::Cursor::new(&mut *out);
            end.set_position(end.get_ref().len() as u64);
            compressor.compress_to_buffer(raw, &mut end).map(|_| ())
        })?,
    }
    Ok(())
}

/// zstd's fastest regular level: 5.9x smaller on these records, at about 435 MB/s a core here
/// (`zstd -1` on 100 MB of landing NDJSON); its "fast" levels saved up to 30 % of that time
/// for 3.4-3.9x.
const ZSTD_LEVEL: i32 = 1;

/// Level 1's match table has 2^13 entries for inputs of 1 MiB; 2^12 fits the core's cache
/// better and finds as many matches in these records: `zstd -b1 -B1M --zstd=hlog=12` on
/// 118 MB of landing NDJSON compressed 10 % faster (671-683 MB/s against 613) for 5.885x
/// against 5.890x.
const ZSTD_HASH_LOG: u32 = 12;

fn zstd_compressor() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    compressor.set_parameter(zstd::zstd_safe::CParameter::HashLog(ZSTD_HASH_LOG))?;
    Ok(compressor)
}

thread_local! {
    /// One zstd context per compressing thread, kept: a streaming encoder per object allocated
    /// a fresh context and window each time (the kernel zeroing their pages was 8 % of a zstd
    /// drain's CPU) and compressed through the window in its slower external-dictionary mode
    /// (13 %). One-shot compression of each frame does neither.
    static ZSTD_COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A closed batch, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub topic: String,
    /// The topic's id (docs/ingest.md): part of every object name.
    pub topic_id: String,
    pub partition: i32,
    /// The range of offsets `[first, next)` it covers, which its objects are named after:
    /// from the end of the batch before, so a retry that finds fewer records (retention)
    /// still names the range alike. `last` is its last record's offset; `last < first` (and no
    /// chunks) for a batch that only carries the commit of a plan's end ([`Batcher::finish`]).
    pub first: i64,
    pub last: i64,
    /// The offset to commit once the batch is durable.
    pub next: i64,
    pub chunks: BTreeMap<(ChunkKind, NaiveDate), Chunk>,
    pub good: u64,
    pub quarantined: u64,
    pub skipped: u64,
    pub value_bytes: u64,
    pub compression: Compression,
}

impl Batch {
    /// A batch of no records that starts at `first` and, as it is, commits `first`.
    fn empty(
        topic: &str,
        topic_id: &str,
        partition: i32,
        compression: Compression,
        first: i64,
    ) -> Self {
        Batch {
            topic: topic.to_owned(),
            topic_id: topic_id.to_owned(),
            partition,
            first,
            last: first - 1,
            next: first,
            chunks: BTreeMap::new(),
            good: 0,
            quarantined: 0,
            skipped: 0,
            value_bytes: 0,
            compression,
        }
    }

    /// The object name of one chunk, relative to the landing location.
    pub fn object_name(&self, kind: ChunkKind, date: NaiveDate) -> String {
        ObjectName {
            topic: &self.topic,
            topic_id: &self.topic_id,
            partition: self.partition,
            first: self.first,
            next: self.next,
            kind,
            date,
            compression: self.compression,
        }
        .relative()
    }
}

/// One quarantined record: enough to find it in Kafka and see what was wrong, and the record
/// itself, losslessly, to replay it.
#[derive(Serialize)]
struct QuarantineLine<'a> {
    reason: String,
    reason_kind: &'static str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<String>,
    /// The key as text when it is UTF-8, else base64 in `key_base64`; both null for a record
    /// without a key.
    key: Option<&'a str>,
    key_base64: Option<String>,
    /// The value as text when it is UTF-8, else base64 in `value_base64`; both null for a null
    /// value (an empty one is `""`).
    value: Option<&'a str>,
    value_base64: Option<String>,
    value_bytes: usize,
    /// In the record's order; left out when it has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<QuarantineHeader>,
}

/// One header of a quarantined record; its value as the record's value is.
#[derive(Serialize)]
struct QuarantineHeader {
    key: String,
    value: Option<String>,
    value_base64: Option<String>,
}

/// Bytes as JSON can hold them without loss: text when UTF-8, else base64 (the second);
/// neither for None.
fn text_or_base64(bytes: Option<&[u8]>) -> (Option<&str>, Option<String>) {
    match bytes.map(std::str::from_utf8) {
        None => (None, None),
        Some(Ok(text)) => (Some(text), None),
        Some(Err(_)) => (
            None,
            bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

/// A record's headers: name and value (None for a null value), in order. Read only for a
/// quarantined record: a landed record keeps its value alone, and parsing headers costs.
pub trait RecordHeaders {
    fn headers(&self) -> Vec<(String, Option<Vec<u8>>)>;
}

/// No headers (records built in tests).
impl RecordHeaders for () {
    fn headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        Vec::new()
    }
}

/// Accumulates one partition's records and closes batches at deterministic offsets.
pub struct Batcher {
    topic: String,
    topic_id: String,
    kind: EventKind,
    partition: i32,
    rotation: Rotation,
    max_record_bytes: usize,
    /// Interval mode keeps only records timestamped inside it.
    keep: Option<(i64, i64)>,
    open: Option<Batch>,
    /// Where the next batch's range starts: the plan's start, then the end of the batch
    /// before. None: at its first record (tests).
    range_start: Option<i64>,
    /// Ends of log entries being written again ([`super::plan::PartitionPlan::redo`]): the
    /// batches are cut at exactly these offsets, whatever the rotation, so they take the names
    /// the entries recorded.
    cuts: VecDeque<i64>,
    buffers: BufferPool,
}

/// A Kafka record as the batcher sees it.
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// None for a null value (a tombstone), which is not an empty one.
    pub value: Option<&'a [u8]>,
    pub headers: &'a dyn RecordHeaders,
}

impl Batcher {
    pub fn new(
        topic: &str,
        kind: EventKind,
        partition: i32,
        rotation: Rotation,
        max_record_bytes: usize,
        keep: Option<(i64, i64)>,
        buffers: BufferPool,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            topic_id: String::new(),
            kind,
            partition,
            rotation,
            max_record_bytes,
            keep,
            open: None,
            range_start: None,
            cuts: VecDeque::new(),
            buffers,
        }
    }

    /// Cuts the plan of topic `topic_id` from `start`, first at `cuts` (ascending).
    pub fn starting_at(mut self, topic_id: &str, start: i64, cuts: Vec<i64>) -> Self {
        self.topic_id = topic_id.to_owned();
        self.range_start = Some(start);
        self.cuts = cuts.into();
        self
    }

    /// Whether ends of log entries remain to be cut at ([`Batcher::reach`]).
    pub fn has_cuts(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// Closes the ranges of log entries that end at or before `offset` (the next record's):
    /// their last offsets delivered no record. Called before [`Batcher::push`] while
    /// [`Batcher::has_cuts`].
    pub fn reach(&mut self, offset: i64) -> std::io::Result<Vec<Batch>> {
        let mut closed = Vec::new();
        while let Some(&cut) = self.cuts.front()
            && cut <= offset
        {
            closed.extend(self.close_at(cut)?);
        }
        Ok(closed)
    }

    /// Closes the range ending at the next cut `cut`: the open batch stretched to it, or an
    /// empty batch when none of its offsets delivered a record.
    fn close_at(&mut self, cut: i64) -> std::io::Result<Option<Batch>> {
        self.cuts.pop_front();
        if self.open.is_some() {
            return self.close(Some(cut));
        }
        let first = self.range_start.unwrap_or(cut);
        if first >= cut {
            return Ok(None);
        }
        self.range_start = Some(cut);
        let mut batch = Batch::empty(
            &self.topic,
            &self.topic_id,
            self.partition,
            self.rotation.compression,
            first,
        );
        batch.next = cut;
        Ok(Some(batch))
    }

    /// Adds a record; returns the batch it closed, if the rotation limits were reached. Fails
    /// only if compressing a frame fails.
    pub fn push(&mut self, record: &Record<'_>) -> std::io::Result<Option<Batch>> {
        let first = self.range_start.unwrap_or(record.offset);
        let batch = self.open.get_or_insert_with(|| {
            Batch::empty(
                &self.topic,
                &self.topic_id,
                self.partition,
                self.rotation.compression,
                first,
            )
        });
        batch.last = record.offset;
        batch.next = record.offset + 1;
        let value = record.value.unwrap_or_default();
        batch.value_bytes += value.len() as u64;
        let in_interval = match (self.keep, record.timestamp_ms) {
            (None, _) => true,
            (Some((from, to)), Some(ts)) => from <= ts && ts < to,
            (Some(_), None) => false,
        };
        let compression = self.rotation.compression;
        if !in_interval {
            batch.skipped += 1;
        } else {
            match check_record(self.kind, record.key, value, self.max_record_bytes) {
                Ok(checked) => {
                    // The first landing chunk of a batch usually takes all of it: its buffer is
                    // reserved whole (untouched pages cost no memory), so it is not grown by
                    // doubling, which copied it and faulted in fresh pages at each step.
                    let first = batch.good == 0;
                    let (buffers, rotation) = (&self.buffers, self.rotation);
                    let max_record_bytes = self.max_record_bytes;
                    let chunk = batch
                        .chunks
                        .entry((ChunkKind::Landing, checked.event_time.date_naive()))
                        .or_insert_with(|| {
                            let whole = landing_capacity(rotation, max_record_bytes);
                            let compressed = compression != Compression::None;
                            // zstd's bound is above deflate's too.
                            let body = if compressed {
                                zstd::zstd_safe::compress_bound(whole)
                            } else {
                                whole
                            };
                            Chunk {
                                records: 0,
                                body: if first {
                                    buffers.take(body)
                                } else {
                                    Vec::new()
                                },
                                pending: if compressed {
                                    buffers.take(FRAME_BYTES + max_record_bytes + 1)
                                } else {
                                    Vec::new()
                                },
                            }
                        });
                    append_json_line(chunk.lines(compression), value);
                    chunk.compress_pending(compression, false)?;
                    chunk.records += 1;
                    batch.good += 1;
                }
                Err(rejection) => {
                    let date = record
                        .timestamp_ms
                        .and_then(DateTime::<Utc>::from_timestamp_millis)
                        .map(|t| t.date_naive())
                        .unwrap_or_default();
                    let (key, key_base64) = text_or_base64(record.key);
                    let (value_text, value_base64) = text_or_base64(record.value);
                    let headers = record
                        .headers
                        .headers()
                        .into_iter()
                        .map(|(key, value)| {
                            let (text, base64) = text_or_base64(value.as_deref());
                            QuarantineHeader {
                                key,
                                value: text.map(str::to_owned),
                                value_base64: base64,
                            }
                        })
                        .collect();
                    let line = QuarantineLine {
                        reason: rejection.to_string(),
                        reason_kind: rejection.kind(),
                        topic: &self.topic,
                        partition: self.partition,
                        offset: record.offset,
                        timestamp: record
                            .timestamp_ms
                            .and_then(DateTime::<Utc>::from_timestamp_millis)
                            .map(|t| t.to_rfc3339()),
                        key,
                        key_base64,
                        value: value_text,
                        value_base64,
                        value_bytes: value.len(),
                        headers,
                    };
                    let chunk = batch
                        .chunks
                        .entry((ChunkKind::Quarantine, date))
                        .or_default();
                    let lines = chunk.lines(compression);
                    // Serializing strings and integers to JSON cannot fail.
                    if serde_json::to_writer(&mut *lines, &line).is_ok() {
                        lines.push(b'\n');
                    }
                    chunk.compress_pending(compression, false)?;
                    chunk.records += 1;
                    batch.quarantined += 1;
                }
            }
        }
        if let Some(&cut) = self.cuts.front() {
            // A range of the log is written again: it ends where it ended, not by rotation.
            return if batch.next >= cut {
                self.close_at(cut)
            } else {
                Ok(None)
            };
        }
        let full = batch.good + batch.quarantined + batch.skipped >= self.rotation.max_records
            || batch.value_bytes >= self.rotation.max_bytes;
        if full { self.close(None) } else { Ok(None) }
    }

    /// Closes the open batch as it is, when the run stops early; a range of the log being
    /// written again is dropped instead (a later run writes it whole), since it must end where
    /// the log says.
    pub fn cut_short(&mut self) -> std::io::Result<Option<Batch>> {
        if self.has_cuts() {
            if let Some(batch) = self.open.take() {
                for chunk in batch.chunks.into_values() {
                    self.buffers.give(chunk.body);
                    self.buffers.give(chunk.pending);
                }
            }
            return Ok(None);
        }
        self.close(None)
    }

    /// Takes the open batch, if any, with its last frames compressed: when it is full, at the
    /// end of the plan or when the run stops. `next` is the offset to commit after it (the
    /// plan's end when the plan is done). Fails only if compressing the last frames fails.
    pub fn close(&mut self, next: Option<i64>) -> std::io::Result<Option<Batch>> {
        let Some(mut batch) = self.open.take() else {
            return Ok(None);
        };
        if let Some(next) = next {
            batch.next = next.max(batch.next);
        }
        for chunk in batch.chunks.values_mut() {
            chunk.compress_pending(batch.compression, true)?;
            self.buffers.give(std::mem::take(&mut chunk.pending));
        }
        self.range_start = Some(batch.next);
        Ok(Some(batch))
    }

    /// Closes the partition's plan at `end`: the open batch, stretched to `end`, or else an
    /// empty batch that only carries the commit of `end`. The last offsets of a plan may hold
    /// no record a consumer receives (an aborted transaction, a transaction marker, a
    /// compacted-away record); without that commit the plan would stay unfinished and every
    /// later run would resume it and never read past it. No batch when the last one closed
    /// already ends there.
    pub fn finish(&mut self, end: i64) -> std::io::Result<Vec<Batch>> {
        let mut closed = self.reach(end)?;
        if self.open.is_some() {
            closed.extend(self.close(Some(end))?);
            return Ok(closed);
        }
        match self.range_start {
            Some(first) if first >= end => {}
            first => {
                self.range_start = Some(end);
                let mut batch = Batch::empty(
                    &self.topic,
                    &self.topic_id,
                    self.partition,
                    self.rotation.compression,
                    first.unwrap_or(end),
                );
                batch.next = end;
                closed.push(batch);
            }
        }
        Ok(closed)
    }

    pub fn has_open_batch(&self) -> bool {
        self.open.is_some()
    }
}

/// An upper bound of a batch's landing bytes when all its records are good: values up to the
/// byte limit, the last one up to the record limit, and a line break per record.
fn landing_capacity(rotation: Rotation, max_record_bytes: usize) -> usize {
    const MAX_RESERVE: u64 = 64 << 20;
    let values = rotation.max_bytes.min(MAX_RESERVE);
    let breaks = rotation.max_records.min(MAX_RESERVE);
    let last = (max_record_bytes as u64).min(MAX_RESERVE);
    (values + breaks + last) as usize
}

/// Writes a JSON value as one NDJSON line. JSON text can only hold raw line breaks as
/// whitespace, so a value with none is copied as is; one with line breaks is re-serialized.
fn append_json_line(out: &mut Vec<u8>, value: &[u8]) {
    if memchr::memchr2(b'\n', b'\r', value).is_some()
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(value)
        && serde_json::to_writer(&mut *out, &v).is_ok()
    {
        out.push(b'\n');
        return;
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::{EventGenerator, GeneratorConfig};
    use std::time::Duration;

    fn records(n: usize, bad_ratio: f64) -> Vec<crate::produce::GeneratedRecord> {
        let mut g = EventGenerator::new(
            EventKind::User,
            GeneratorConfig {
                seed: 1,
                start: "2026-11-24T23:59:00Z".parse().unwrap(),
                spacing: Duration::from_secs(1),
                users: 10,
                bad_ratio,
            },
        );
        (0..n).map(|_| g.next_record()).collect()
    }

    fn rotation(max_records: u64) -> Rotation {
        Rotation {
            max_records,
            max_bytes: u64::MAX,
            compression: Compression::None,
        }
    }

    fn feed(
        b: &mut Batcher,
        recs: &[crate::produce::GeneratedRecord],
        from_offset: i64,
    ) -> Vec<Batch> {
        let mut out = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            let rec = Record {
                offset: from_offset + i as i64,
                timestamp_ms: Some(r.timestamp.timestamp_millis()),
                key: Some(r.key.as_bytes()),
                value: Some(&r.value),
                headers: &(),
            };
            out.extend(b.push(&rec).unwrap());
        }
        out.extend(b.close(None).unwrap());
        out
    }

    #[test]
    fn rotation_cuts_at_the_same_offsets_whatever_the_end() {
        let recs = records(250, 0.05);
        let mut a = Batcher::new(
            "user_events",
            EventKind::User,
            2,
            rotation(100),
            1 << 19,
            None,
            BufferPool::default(),
        );
        let mut b = Batcher::new(
            "user_events",
            EventKind::User,
            2,
            rotation(100),
            1 << 19,
            None,
            BufferPool::default(),
        );
        let short = feed(&mut a, &recs[..150], 0);
        let long = feed(&mut b, &recs, 0);
        let ranges = |v: &[Batch]| v.iter().map(|b| (b.first, b.last)).collect::<Vec<_>>();
        assert_eq!(ranges(&short), [(0, 99), (100, 149)]);
        assert_eq!(ranges(&long), [(0, 99), (100, 199), (200, 249)]);
        assert_eq!(
            short[0], long[0],
            "a full batch is identical, byte for byte"
        );
    }

    #[test]
    fn finishing_a_plan_commits_its_end_even_past_the_last_record() {
        let new = || {
            Batcher::new(
                "user_events",
                EventKind::User,
                0,
                rotation(50),
                1 << 19,
                None,
                BufferPool::default(),
            )
        };
        let nothing = new()
            .finish(21)
            .unwrap()
            .pop()
            .expect("a batch to commit 21");
        assert_eq!((nothing.next, nothing.chunks.len()), (21, 0));

        let recs = records(50, 0.0);
        let mut b = new();
        let full = feed(&mut b, &recs, 21);
        assert_eq!(full.last().map(|b| b.next), Some(71));
        let marker = b
            .finish(72)
            .unwrap()
            .pop()
            .expect("the marker at 71 is committed past");
        assert_eq!((marker.next, marker.good, marker.chunks.len()), (72, 0, 0));
        assert_eq!(b.finish(72).unwrap(), [], "committed already");

        let mut c = new();
        assert!(feed(&mut c, &recs, 21).len() == 1);
        assert_eq!(c.finish(71).unwrap(), [], "the full batch commits 71");
    }

    #[test]
    fn ranges_of_the_log_written_again_end_where_they_ended() {
        // The log holds [100, 110), [110, 120) and [120, 160); retention has since deleted
        // offsets up to 124, and today's rotation is 7 records. The retry still cuts the
        // logged ranges, named alike, then rotates.
        let recs = records(60, 0.0);
        let mut b = Batcher::new(
            "user_events",
            EventKind::User,
            0,
            rotation(7),
            1 << 19,
            None,
            BufferPool::default(),
        )
        .starting_at("id", 100, vec![110, 120, 160]);
        let mut out = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            let offset = 125 + i as i64;
            if b.has_cuts() {
                out.extend(b.reach(offset).unwrap());
            }
            let rec = Record {
                offset,
                timestamp_ms: Some(r.timestamp.timestamp_millis()),
                key: Some(r.key.as_bytes()),
                value: Some(&r.value),
                headers: &(),
            };
            out.extend(b.push(&rec).unwrap());
        }
        out.extend(b.finish(190).unwrap());
        let ranges: Vec<_> = out.iter().map(|b| (b.first, b.next, b.good)).collect();
        assert_eq!(
            ranges,
            [
                (100, 110, 0),
                (110, 120, 0),
                (120, 160, 35),
                (160, 167, 7),
                (167, 174, 7),
                (174, 181, 7),
                (181, 190, 4)
            ]
        );
        let date = out[2].chunks.keys().next().map(|(_, d)| *d).unwrap();
        assert!(
            out[2]
                .object_name(ChunkKind::Landing, date)
                .ends_with("user_events-id-p000-000000000120-000000000159.ndjson")
        );
    }

    #[test]
    fn a_batch_splits_by_event_date_and_quarantines_bad_records() {
        let recs = records(200, 0.1);
        let mut b = Batcher::new(
            "user_events",
            EventKind::User,
            0,
            rotation(1000),
            1 << 19,
            None,
            BufferPool::default(),
        );
        let batches = feed(&mut b, &recs, 40);
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        let good = recs.iter().filter(|r| r.bad.is_none()).count() as u64;
        assert_eq!(batch.good, good);
        assert_eq!(batch.quarantined, 200 - good);
        let names: Vec<String> = batch
            .chunks
            .keys()
            .map(|(k, d)| batch.object_name(*k, *d))
            .collect();
        assert!(
            names.contains(
                &"user_events/date=2026-11-24/user_events--p000-000000000040-000000000239.ndjson"
                    .to_owned()
            ),
            "{names:?}"
        );
        assert!(
            names.contains(
                &"user_events/date=2026-11-25/user_events--p000-000000000040-000000000239.ndjson"
                    .to_owned()
            ),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("_quarantine/user_events/date="))
        );
        // Every landed line is a good record, unchanged.
        let landed: u64 = batch
            .chunks
            .iter()
            .filter(|((k, _), _)| *k == ChunkKind::Landing)
            .map(|(_, c)| {
                c.body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count() as u64
            })
            .sum();
        assert_eq!(landed, good);
    }

    #[test]
    fn quarantine_lines_say_why_and_where() {
        let mut b = Batcher::new(
            "user_events",
            EventKind::User,
            1,
            rotation(10),
            1 << 19,
            None,
            BufferPool::default(),
        );
        for (offset, value) in [
            (5, &b"{\"truncated"[..]),
            (6, &[0xff, 0xfe][..]),
            (7, &b""[..]),
        ] {
            b.push(&Record {
                offset,
                timestamp_ms: Some(0),
                key: None,
                value: Some(value),
                headers: &(),
            })
            .unwrap();
        }
        let batch = b.close(Some(10)).unwrap().unwrap();
        assert_eq!(
            batch.next, 10,
            "the plan's end is committed after the last batch"
        );
        let chunk = &batch.chunks[&(
            ChunkKind::Quarantine,
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap(),
        )];
        let lines: Vec<serde_json::Value> = chunk
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let kinds: Vec<&str> = lines
            .iter()
            .map(|l| l["reason_kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["not_json", "not_utf8", "empty"]);
        assert_eq!(lines[1]["value_base64"], "//4=");
        assert_eq!(lines[0]["offset"], 5);
        assert_eq!(lines[0]["partition"], 1);
    }

    #[test]
    fn interval_mode_skips_records_outside_the_interval() {
        let recs = records(120, 0.0);
        let from = recs[10].timestamp.timestamp_millis();
        let to = recs[20].timestamp.timestamp_millis();
        let mut b = Batcher::new(
            "user_events",
            EventKind::User,
            0,
            rotation(1000),
            1 << 19,
            Some((from, to)),
            BufferPool::default(),
        );
        let batch = feed(&mut b, &recs, 0).pop().unwrap();
        assert_eq!((batch.good, batch.skipped), (10, 110));
    }

    #[test]
    fn a_compressed_batch_decodes_to_the_plain_batch_over_several_frames() {
        let recs = records(4_000, 0.05);
        let batch_with = |compression| {
            let rotation = Rotation {
                compression,
                ..rotation(10_000)
            };
            let mut b = Batcher::new(
                "user_events",
                EventKind::User,
                0,
                rotation,
                1 << 19,
                None,
                BufferPool::default(),
            );
            let mut batches = feed(&mut b, &recs, 0);
            assert_eq!(batches.len(), 1);
            batches.remove(0)
        };
        let plain = batch_with(Compression::None);
        let landed: usize = plain.chunks.values().map(|c| c.body.len()).sum();
        assert!(landed > 2 * FRAME_BYTES, "{landed} bytes: several frames");
        let mut zstd_frames = 0;
        for compression in [Compression::Zstd, Compression::Gzip] {
            let compressed = batch_with(compression);
            assert_eq!(
                compressed.chunks.keys().collect::<Vec<_>>(),
                plain.chunks.keys().collect::<Vec<_>>()
            );
            for (key, chunk) in &compressed.chunks {
                let raw = &plain.chunks[key].body;
                let mut decoded = Vec::new();
                if compression == Compression::Zstd {
                    // Every frame but the last holds at least FRAME_BYTES of whole lines.
                    let mut rest = &chunk.body[..];
                    while !rest.is_empty() {
                        let size = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
                        let frame = zstd::decode_all(&rest[..size]).unwrap();
                        rest = &rest[size..];
                        assert!(frame.len() >= FRAME_BYTES || rest.is_empty(), "{key:?}");
                        assert_eq!(frame.last(), Some(&b'\n'));
                        decoded.extend(frame);
                        zstd_frames += 1;
                    }
                } else {
                    let mut members = flate2::bufread::MultiGzDecoder::new(&chunk.body[..]);
                    std::io::Read::read_to_end(&mut members, &mut decoded).unwrap();
                }
                assert_eq!(&decoded, raw, "{compression:?} {key:?}");
                assert!(
                    chunk.body.len() < raw.len() / 3,
                    "{compression:?} compresses"
                );
            }
        }
        // Compressed as they fill, not once at the end: more frames than objects.
        assert!(zstd_frames > plain.chunks.len(), "{zstd_frames} frames");
    }

    #[test]
    fn multi_line_json_becomes_one_line() {
        let mut out = Vec::new();
        append_json_line(&mut out, b"{\n  \"a\": 1\n}");
        assert_eq!(out, b"{\"a\":1}\n");
        out.clear();
        append_json_line(&mut out, b"{\"a\":\r2}");
        assert_eq!(
            out, b"{\"a\":2}\n",
            "a carriage return alone is a line break too"
        );
        out.clear();
        append_json_line(&mut out, b"{\"a\": \"x\\ny\"}");
        assert_eq!(
            out, b"{\"a\": \"x\\ny\"}\n",
            "an escaped break is copied as is"
        );
    }
}
