//! The job image's hand-written codecs against well-kept crates, on the inputs the product sees
//! (bench/codecs.sh runs it; docs/benchmarks.md, "Hand-written code and what it buys", has the
//! figures).
//!
//! `codecs check`: the ingest schema check of one record (`events::check_record`: the forward
//! scan of `events/canonical.rs`, serde_json for anything else) against the same check done by
//! a typed parse into `events.rs`'s types with serde_json alone, sonic-rs and simd-json, on the
//! records of a landing directory `streamflow ingest` wrote from `streamflow produce`'s
//! generator (a record's value is its line; its key, the user id, is read from it). First every
//! implementation checks edited copies of some records (bad ones, and forms no producer here
//! writes) and the decisions are compared with the product's; then the records are checked in
//! interleaved rounds and the medians compared.
//!
//! The product's codecs are compiled in from its source files (src/events.rs, src/events/ and
//! src/etl/ link to job-image/src/), without the rest of the job image.
//!
//! `codecs csv`: the gold tables' CSV encoder (`etl/csv_text.rs`, rows picked by index per
//! bucket) against Arrow's CSV writer with the same options (a bucket's rows taken into a batch
//! first, as the writer needs), and against Arrow's writer on whole batches (no bucketing: the
//! writer's own cost), on the batches of a gold store the ETL wrote: each partition's files are
//! read back with the schema of its manifest, re-cut into batches of the ETL's size and encoded
//! again; the bucketing encoders' bytes are compared with the files', the third's lines as a
//! multiset.

// Compiled for what the benchmark calls; their tests need the rest of the job image.
#[allow(dead_code)]
mod events;
#[allow(dead_code)]
mod etl {
    pub mod bucket;
    pub mod csv_text;
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use arrow::array::{AsArray as _, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::csv::ReaderBuilder;
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use etl::bucket::rows_by_bucket;
use etl::csv_text::{csv_writer, encode_rows};
use events::{EventKind, TransactionEvent, UserEvent};

/// Ingest's default `--max-record-bytes`.
const MAX_RECORD_BYTES: usize = 512 * 1024;
/// DataFusion's default batch size, which the gold tables are written in.
const BATCH_ROWS: usize = 8192;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args
        .split_first()
        .context("usage: codecs check|csv [--flag value]...")?;
    let flags = parse_flags(rest)?;
    let flag = |name: &str, default: &str| flags.get(name).cloned().unwrap_or(default.to_owned());
    let rounds: usize = flag("rounds", "7").parse().context("--rounds")?;
    match command.as_str() {
        "check" => check_bench(
            Path::new(&flags.get("landing").context("--landing DIR")?.clone()),
            flag("records", "200000").parse().context("--records")?,
            rounds,
        ),
        "csv" => csv_bench(
            Path::new(&flags.get("gold").context("--gold DIR")?.clone()),
            rounds,
        ),
        other => bail!("unknown command {other}: check or csv"),
    }
}

fn parse_flags(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut flags = BTreeMap::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let name = name
            .strip_prefix("--")
            .with_context(|| format!("not a flag: {name}"))?;
        let value = it
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        flags.insert(name.to_owned(), value.clone());
    }
    Ok(flags)
}

/// Times each implementation once per round, in a rotated order, and prints the medians.
/// `run(i)` runs implementation `i` once and returns how many bytes it handled.
fn interleaved(
    names: &[&str],
    rounds: usize,
    units: u64,
    unit: &str,
    mut run: impl FnMut(usize) -> u64,
) {
    let mut times = vec![Vec::new(); names.len()];
    let mut bytes = 0;
    for round in 0..rounds {
        for k in 0..names.len() {
            let i = (round + k) % names.len();
            let start = Instant::now();
            bytes = run(i);
            times[i].push(start.elapsed());
        }
    }
    let medians: Vec<Duration> = times
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    println!(
        "\n{units} {unit}, {:.1} MB, {rounds} interleaved rounds, medians:\n",
        bytes as f64 / 1e6
    );
    println!(
        "| implementation | median ms | each round, ms | {unit}/s | MB/s | throughput vs first |"
    );
    println!("|---|---:|---|---:|---:|---:|");
    for (i, name) in names.iter().enumerate() {
        let secs = medians[i].as_secs_f64();
        let each: Vec<String> = times[i]
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1e3))
            .collect();
        println!(
            "| {name} | {:.1} | {} | {:.0} | {:.0} | {:.2}x |",
            secs * 1e3,
            each.join(", "),
            units as f64 / secs,
            bytes as f64 / 1e6 / secs,
            medians[0].as_secs_f64() / secs
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The schema check.

/// What a check decided: the event time of a good record, or the quarantine reason's kind and
/// message.
type Decision = Result<DateTime<Utc>, (&'static str, String)>;

struct Record {
    kind: EventKind,
    key: Vec<u8>,
    value: Vec<u8>,
}

const CHECKERS: [&str; 4] = ["serde_json", "product (scan)", "sonic-rs", "simd-json"];

/// One checker's reusable state: simd-json parses in place, so it needs a copy of each record.
#[derive(Default)]
struct Scratch {
    copy: Vec<u8>,
}

fn check_with(checker: usize, record: &Record, scratch: &mut Scratch) -> Decision {
    let key = Some(record.key.as_slice());
    match checker {
        0 => typed(record, |text| {
            typed_check(
                record.kind,
                key,
                text,
                serde_json::from_str,
                serde_json::from_str,
            )
        }),
        1 => events::check_record(record.kind, key, &record.value, MAX_RECORD_BYTES)
            .map(|c| c.event_time)
            .map_err(|r| (r.kind(), r.to_string())),
        2 => typed(record, |text| {
            typed_check(
                record.kind,
                key,
                text,
                sonic_rs::from_str,
                sonic_rs::from_str,
            )
        }),
        3 => typed(record, |_| {
            scratch.copy.clear();
            scratch.copy.extend_from_slice(&record.value);
            let buf = scratch.copy.as_mut_slice();
            match record.kind {
                EventKind::User => simd_json::serde::from_slice::<UserEvent>(buf)
                    .map_err(simd_rejection)
                    .and_then(|e| user_decision(key, &e)),
                EventKind::Transaction => simd_json::serde::from_slice::<TransactionEvent>(buf)
                    .map_err(simd_rejection)
                    .and_then(|e| transaction_decision(key, &e)),
            }
        }),
        _ => unreachable!("four checkers"),
    }
}

/// The checks before the schema, as `check_record` makes them, then `parse`.
fn typed(record: &Record, parse: impl FnOnce(&str) -> Decision) -> Decision {
    if record.value.is_empty() {
        return Err(("empty", "empty value".into()));
    }
    if record.value.len() > MAX_RECORD_BYTES {
        return Err((
            "oversized",
            format!("oversized: {} bytes", record.value.len()),
        ));
    }
    let text = std::str::from_utf8(&record.value).map_err(|e| ("not_utf8", e.to_string()))?;
    parse(text)
}

trait Classify {
    fn rejection(self) -> (&'static str, String);
}

impl Classify for serde_json::Error {
    fn rejection(self) -> (&'static str, String) {
        match self.classify() {
            serde_json::error::Category::Data => ("schema", format!("schema: {self}")),
            _ => ("not_json", format!("not JSON: {self}")),
        }
    }
}

impl Classify for sonic_rs::Error {
    fn rejection(self) -> (&'static str, String) {
        match self.classify() {
            // A value that does not fit the type, or a field it needs that is missing.
            sonic_rs::error::Category::TypeUnmatched | sonic_rs::error::Category::NotFound => {
                ("schema", format!("schema: {self}"))
            }
            _ => ("not_json", format!("not JSON: {self}")),
        }
    }
}

fn simd_rejection(e: simd_json::Error) -> (&'static str, String) {
    match e.error() {
        simd_json::ErrorType::Serde(_) => ("schema", format!("schema: {e}")),
        _ => ("not_json", format!("not JSON: {e}")),
    }
}

fn typed_check<'a, E: Classify>(
    kind: EventKind,
    key: Option<&[u8]>,
    text: &'a str,
    user: impl FnOnce(&'a str) -> Result<UserEvent<'a>, E>,
    transaction: impl FnOnce(&'a str) -> Result<TransactionEvent<'a>, E>,
) -> Decision {
    match kind {
        EventKind::User => user(text)
            .map_err(Classify::rejection)
            .and_then(|e| user_decision(key, &e)),
        EventKind::Transaction => transaction(text)
            .map_err(Classify::rejection)
            .and_then(|e| transaction_decision(key, &e)),
    }
}

fn user_decision(key: Option<&[u8]>, e: &UserEvent) -> Decision {
    key_decision(key, &e.user_id)?;
    Ok(e.event_time)
}

fn transaction_decision(key: Option<&[u8]>, e: &TransactionEvent) -> Decision {
    if e.amount < 0.0 {
        return Err(("negative_amount", format!("negative amount {}", e.amount)));
    }
    key_decision(key, &e.user_id)?;
    Ok(e.event_time)
}

fn key_decision(key: Option<&[u8]>, user_id: &str) -> Result<(), (&'static str, String)> {
    match key {
        None => Err(("missing_key", "missing key".into())),
        Some(k) if k == user_id.as_bytes() => Ok(()),
        Some(k) => Err((
            "key_mismatch",
            format!(
                "key {:?} differs from user_id {user_id:?}",
                String::from_utf8_lossy(k)
            ),
        )),
    }
}

/// Every record of a landing directory (plain NDJSON files under `<topic>/`), its key read from
/// its `user_id` as the generator keys records.
fn landed(dir: &Path) -> anyhow::Result<Vec<Record>> {
    let mut files = Vec::new();
    files_under(
        dir,
        &|p| p.extension().is_some_and(|e| e == "ndjson"),
        &mut files,
    )?;
    files.sort();
    // bench/codecs.sh names the topic directories by the default topic names.
    let topics = events::Topics::default();
    let mut records = Vec::new();
    for file in files {
        let topic = file
            .strip_prefix(dir)?
            .components()
            .next()
            .context("a topic directory")?
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let kind = topics.kind_of(&topic)?;
        for line in std::fs::read(&file)?.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_slice(line)
                .with_context(|| format!("a landed record in {}", file.display()))?;
            let key = value["user_id"]
                .as_str()
                .context("a user_id")?
                .as_bytes()
                .to_vec();
            records.push(Record {
                kind,
                key,
                value: line.to_vec(),
            });
        }
    }
    anyhow::ensure!(!records.is_empty(), "no records under {}", dir.display());
    Ok(records)
}

/// Every file under `dir` whose name `wanted` accepts.
fn files_under(
    dir: &Path,
    wanted: &impl Fn(&Path) -> bool,
    found: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, wanted, found)?;
        } else if wanted(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// Edits of a good record in forms no producer here writes but another might, where JSON
/// parsers are known to differ.
fn mutations(record: &Record) -> Vec<(&'static str, Record)> {
    let text = String::from_utf8_lossy(&record.value).into_owned();
    let edit = |name: &'static str, value: String| {
        (
            name,
            Record {
                kind: record.kind,
                key: record.key.clone(),
                value: value.into_bytes(),
            },
        )
    };
    let first_string = text.find(":\"").map(|i| i + 2).unwrap_or(0);
    vec![
        edit("unchanged", text.clone()),
        edit("not JSON (cut short)", text[..text.len() / 2].to_owned()),
        edit(
            "missing event_time",
            text.replacen("\"event_time\":", "\"event_tim\":", 1),
        ),
        edit(
            "wrong type",
            text.replacen("\"event_id\":", "\"event_id\":1,\"x\":", 1),
        ),
        edit("bad time", text.replacen("T", "t", 1)),
        edit(
            "negative amount",
            text.replacen("\"amount\":", "\"amount\":-1.5,\"x\":", 1),
        ),
        edit(
            "key mismatch",
            text.replacen("\"user_id\":\"", "\"user_id\":\"z", 1),
        ),
        edit("trailing newline", format!("{text}\n")),
        edit("trailing garbage", format!("{text}x")),
        edit("trailing comma", format!("{},}}", &text[..text.len() - 1])),
        edit(
            "duplicate user_id",
            format!("{{\"user_id\":\"someone\",{}", &text[1..]),
        ),
        edit(
            "unknown field",
            format!("{{\"extra\":[1,{{\"a\":null}}],{}", &text[1..]),
        ),
        edit(
            "escaped string",
            format!("{}\\u0041{}", &text[..first_string], &text[first_string..]),
        ),
        edit(
            "lone surrogate escape",
            format!("{}\\ud800{}", &text[..first_string], &text[first_string..]),
        ),
        edit(
            "raw control character",
            format!("{}\t{}", &text[..first_string], &text[first_string..]),
        ),
        edit(
            "exponent number",
            text.replacen("\"lat\":", "\"lat\":1e1,\"x\":", 1).replacen(
                "\"amount\":",
                "\"amount\":1e2,\"x\":",
                1,
            ),
        ),
        edit(
            "huge number",
            text.replacen("\"amount\":", "\"amount\":1e400,\"x\":", 1)
                .replacen("\"lat\":", "\"lat\":1e400,\"x\":", 1),
        ),
        edit(
            "negative zero",
            text.replacen("\"amount\":", "\"amount\":-0.0,\"x\":", 1),
        ),
        edit(
            "null optional",
            text.replacen("\"properties\":{", "\"properties\":null,\"x\":{", 1)
                .replacen("\"session_id\":", "\"session_id\":null,\"x\":", 1),
        ),
        edit("BOM", format!("\u{feff}{text}")),
        edit("leading whitespace", format!(" \n{text}")),
        edit("time with offset", text.replacen("Z\"", "+00:00\"", 1)),
        edit(
            "deep nesting",
            format!(
                "{{\"x\":{}{}, {}",
                "[".repeat(200),
                "]".repeat(200),
                &text[1..]
            ),
        ),
    ]
}

fn check_bench(landing: &Path, count: usize, rounds: usize) -> anyhow::Result<()> {
    // Half of `count` from each schema's records.
    let mut records = Vec::new();
    let all = landed(landing)?;
    for kind in [EventKind::User, EventKind::Transaction] {
        records.extend(
            all.iter()
                .filter(|r| r.kind == kind)
                .take(count / 2)
                .map(|r| Record {
                    kind,
                    key: r.key.clone(),
                    value: r.value.clone(),
                }),
        );
    }
    drop(all);
    // Decisions: edits of the first good records of each schema, every checker against the
    // product's.
    let mut probe: Vec<(&str, Record)> = Vec::new();
    for kind in [EventKind::User, EventKind::Transaction] {
        for r in records.iter().filter(|r| r.kind == kind).take(10) {
            probe.extend(mutations(r));
        }
    }
    println!(
        "## Decisions against the product's, on {} edited records (20 records, {} edits each)\n",
        probe.len(),
        probe.len() / 20
    );
    let mut scratch = Scratch::default();
    let product: Vec<Decision> = probe
        .iter()
        .map(|(_, r)| check_with(1, r, &mut scratch))
        .collect();
    for checker in [0, 2, 3] {
        let (mut accept, mut kind, mut message, mut time) = (0, 0, 0, 0);
        let mut examples: BTreeMap<String, String> = BTreeMap::new();
        for ((edit, record), theirs) in probe.iter().zip(&product) {
            let ours = check_with(checker, record, &mut scratch);
            let what = match (&ours, theirs) {
                (Ok(a), Ok(b)) if a == b => continue,
                (Ok(_), Ok(_)) => {
                    time += 1;
                    "event time"
                }
                (Err((ka, ma)), Err((kb, mb))) if ka == kb => {
                    if ma == mb {
                        continue;
                    }
                    message += 1;
                    "message"
                }
                (Err(_), Err(_)) => {
                    kind += 1;
                    "reason kind"
                }
                _ => {
                    accept += 1;
                    "accepted or not"
                }
            };
            examples
                .entry(format!("{edit}: {what}"))
                .or_insert_with(|| format!("{}: {ours:?}, product: {theirs:?}", CHECKERS[checker]));
        }
        println!(
            "- {}: {accept} differ in accepted or not, {kind} in the reason's kind, {message} in the message only, {time} in the event time",
            CHECKERS[checker]
        );
        for (what, example) in examples {
            println!("  - {what}: {}", truncate(&example, 300));
        }
    }

    let bytes: u64 = records.iter().map(|r| r.value.len() as u64).sum();
    println!("\n## Throughput: the landed records, both schemas");
    interleaved(
        &CHECKERS,
        rounds,
        records.len() as u64,
        "records",
        |checker| {
            let mut good = 0u64;
            for record in &records {
                if check_with(checker, record, &mut scratch).is_ok() {
                    good += 1;
                }
            }
            assert_eq!(
                good,
                records.len() as u64,
                "{} rejected a good record",
                CHECKERS[checker]
            );
            bytes
        },
    );
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The CSV encoder.

/// One committed partition of a gold table, read back.
struct Partition {
    table: String,
    bucket_column: Option<String>,
    buckets: u32,
    batches: Vec<RecordBatch>,
    /// Each bucket file's bytes after the header.
    bodies: Vec<Vec<u8>>,
}

fn read_partition(manifest_path: &Path) -> anyhow::Result<Partition> {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest_path)?)
        .with_context(|| format!("manifest {}", manifest_path.display()))?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).context("a string");
    let fields = manifest["columns"]
        .as_array()
        .context("columns")?
        .iter()
        .map(|c| {
            Ok(Field::new(
                text(&c["name"])?,
                text(&c["type"])?.parse::<DataType>()?,
                true,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let schema = std::sync::Arc::new(Schema::new(fields));
    let files = manifest["files"]
        .as_array()
        .context("files")?
        .iter()
        .map(text_at("path"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = manifest_path.parent().context("a manifest's directory")?;
    let mut read = Vec::new();
    let mut bodies = Vec::new();
    for file in &files {
        let bytes = std::fs::read(dir.join(file))?;
        let body_at = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bodies.push(bytes[body_at..].to_vec());
        let reader = ReaderBuilder::new(schema.clone())
            .with_header(true)
            .build(std::io::Cursor::new(bytes))?;
        for batch in reader {
            read.push(batch?);
        }
    }
    // The files' rows, bucket after bucket, re-cut into batches of the ETL's size: bucketing
    // them again gives each file's rows in their order.
    let all = concat_batches(&schema, &read)?;
    let batches = (0..all.num_rows())
        .step_by(BATCH_ROWS)
        .map(|at| all.slice(at, BATCH_ROWS.min(all.num_rows() - at)))
        .collect();
    Ok(Partition {
        table: text(&manifest["table"])?,
        bucket_column: manifest["bucket_column"].as_str().map(str::to_owned),
        buckets: manifest["buckets"].as_u64().context("buckets")? as u32,
        batches,
        bodies,
    })
}

fn text_at(name: &'static str) -> impl Fn(&serde_json::Value) -> anyhow::Result<String> {
    move |v| v[name].as_str().map(str::to_owned).context(name)
}

/// A batch's rows by bucket file, as `etl/write.rs` splits them (with `etl/bucket.rs`).
fn by_bucket(partition: &Partition, batch: &RecordBatch) -> anyhow::Result<Vec<Vec<usize>>> {
    let Some(column) = &partition.bucket_column else {
        return Ok(vec![(0..batch.num_rows()).collect()]);
    };
    let users = batch
        .column_by_name(column)
        .and_then(|c| c.as_string_opt::<i32>())
        .with_context(|| format!("{}: no text column {column}", partition.table))?;
    Ok(rows_by_bucket(users, partition.buckets))
}

const ENCODERS: [&str; 3] = [
    "arrow-csv (Writer)",
    "product (csv_text)",
    "arrow-csv, whole batches",
];
/// The encoder that writes each batch whole, not bucket by bucket: Arrow's writer without the
/// `take` that bucketing needs, the least any use of it could cost. Its files hold the rows in
/// another order, so its lines are compared with the ETL's as a multiset.
const WHOLE_BATCHES: usize = 2;

fn encode(encoder: usize, partition: &Partition, out: &mut [Vec<u8>]) -> anyhow::Result<()> {
    for batch in &partition.batches {
        if encoder == WHOLE_BATCHES {
            csv_writer(false).build(&mut out[0]).write(batch)?;
            continue;
        }
        for (indices, file) in by_bucket(partition, batch)?.iter().zip(out.iter_mut()) {
            if indices.is_empty() {
                continue;
            }
            match encoder {
                0 => {
                    let whole = partition.bucket_column.is_none();
                    let taken;
                    let rows = if whole {
                        batch
                    } else {
                        let indices =
                            UInt32Array::from_iter_values(indices.iter().map(|&i| i as u32));
                        taken = take_record_batch(batch, &indices)?;
                        &taken
                    };
                    let mut writer = csv_writer(false).build(&mut *file);
                    writer.write(rows)?;
                }
                _ => encode_rows(batch, indices.iter().copied(), file)?,
            }
        }
    }
    Ok(())
}

/// The lines of some files, sorted.
fn lines(files: &[Vec<u8>]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = files
        .iter()
        .flat_map(|f| f.split(|&b| b == b'\n'))
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort_unstable();
    lines
}

fn csv_bench(gold: &Path, rounds: usize) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    files_under(
        gold,
        &|p| p.file_name().is_some_and(|n| n == "_SUCCESS"),
        &mut paths,
    )?;
    paths.sort();
    let partitions = paths
        .iter()
        .map(|p| read_partition(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rows: usize = partitions
        .iter()
        .flat_map(|p| &p.batches)
        .map(|b| b.num_rows())
        .sum();
    println!(
        "## {} partitions of {} tables under {}, {rows} rows\n",
        partitions.len(),
        partitions
            .iter()
            .map(|p| &p.table)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        gold.display()
    );
    let mut outputs: Vec<Vec<Vec<u8>>> = partitions
        .iter()
        .map(|p| vec![Vec::new(); p.bodies.len()])
        .collect();
    for (encoder, name) in ENCODERS.iter().enumerate() {
        let mut differ = BTreeMap::<&str, usize>::new();
        for (partition, out) in partitions.iter().zip(outputs.iter_mut()) {
            out.iter_mut().for_each(Vec::clear);
            encode(encoder, partition, out)?;
            if encoder == WHOLE_BATCHES {
                if lines(out) != lines(&partition.bodies) {
                    *differ.entry(&partition.table).or_default() += 1;
                }
                continue;
            }
            for (ours, file) in out.iter().zip(&partition.bodies) {
                if ours != file {
                    *differ.entry(&partition.table).or_default() += 1;
                }
            }
        }
        if differ.is_empty() && encoder == WHOLE_BATCHES {
            println!("- {name}: each partition's lines the ETL's, in another order");
        } else if differ.is_empty() {
            println!("- {name}: every file's bytes identical to the ETL's");
        } else {
            println!("- {name}: files with other bytes than the ETL's, by table: {differ:?}");
        }
    }
    println!("\n## Throughput: every partition, encoded per bucket");
    interleaved(&ENCODERS, rounds, rows as u64, "rows", |encoder| {
        let mut bytes = 0;
        for (partition, out) in partitions.iter().zip(outputs.iter_mut()) {
            out.iter_mut().for_each(Vec::clear);
            encode(encoder, partition, out).expect("encoded once already");
            bytes += out.iter().map(|f| f.len() as u64).sum::<u64>();
        }
        bytes
    });
    Ok(())
}
