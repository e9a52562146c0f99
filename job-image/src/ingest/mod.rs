//! `streamflow ingest`: the bounded drain from Kafka into the landing zone.
//!
//! Per topic, one consumer polled on a dedicated thread reads each partition's planned offsets
//! ([`plan`]) and cuts them into batches ([`batch`]); an uploader task records each batch's
//! range in the landing zone's log ([`crate::landing`]), created only if absent, then creates
//! its objects, then commits the offset after it to Kafka as progress. The log, not Kafka,
//! says where the next run starts, so the landing zone holds each record once even when
//! Kafka forgets its offsets, a second drain runs, or the topic is recreated.

pub mod batch;
pub mod buffers;
pub mod fetch;
pub mod plan;
pub mod topic_id;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::PutPayload;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use streamflow_core::{IngestSummary, Interval, PartitionSummary};
use tokio::sync::mpsc;

use crate::landing::{self, Claim, LandingError, Scope};
use crate::produce::kafka_config;
use crate::store::Location;
use batch::{Batch, Batcher, Record};
use buffers::BufferPool;
use fetch::{BatchQueue, KafkaRecord, Polled};
use plan::{PartitionPlan, Progress, Rotation, landing_plan, seeds_log};

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
    pub topics: Vec<String>,
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

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "Kafka at {bootstrap}: {what}: {source}; check that the broker is reachable and the topic exists"
    )]
    Kafka {
        bootstrap: String,
        what: String,
        source: Box<KafkaError>,
    },
    #[error("topic {topic} has no partitions at {bootstrap}: does it exist?")]
    NoSuchTopic { topic: String, bootstrap: String },
    #[error(
        "cannot write {object} to {landing}: {source}; check the store's endpoint, credentials and free space"
    )]
    Store {
        object: String,
        landing: String,
        source: Box<object_store::Error>,
    },
    #[error(
        "cannot write {object} to {landing}: no answer within the upload retry window of {seconds}s (--upload-retry-timeout); is the store up and reachable?"
    )]
    UploadTimedOut {
        object: String,
        landing: String,
        seconds: f64,
    },
    #[error(
        "no records from Kafka at {bootstrap} for {seconds}s while {topic} partition {partition} still has offsets {position}..{end} to read; is the broker up?"
    )]
    Stalled {
        bootstrap: String,
        topic: String,
        partition: i32,
        position: i64,
        end: i64,
        seconds: u64,
    },
    #[error(
        "interval {interval} was not fully drained within {seconds}s; rerun with a larger --max-duration (what was written is kept and will be overwritten identically)"
    )]
    IntervalIncomplete { interval: String, seconds: u64 },
    #[error("cannot tell the identity of topic {topic} at {bootstrap}: {source}")]
    TopicId {
        topic: String,
        bootstrap: String,
        source: topic_id::TopicIdError,
    },
    #[error(
        "another drain is landing {topic} partition {partition} into {landing}: it wrote entry {seq} of the landing log ({object}) first; this run stopped before writing that range, so nothing is landed twice. Run one drain at a time; a rerun carries on after the other's last entry"
    )]
    Fenced {
        topic: String,
        partition: i32,
        landing: String,
        seq: u64,
        object: String,
    },
    #[error(transparent)]
    Landing(#[from] LandingError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Set by a stop signal: the drain ends as if its maximum duration were reached.
pub type StopFlag = Arc<AtomicBool>;

/// Runs one drain and returns its summary.
pub async fn ingest(config: IngestConfig, stop: StopFlag) -> Result<IngestSummary, IngestError> {
    let started = Instant::now();
    let mut summary = IngestSummary {
        stage: "ingest".to_owned(),
        mode: match &config.bound {
            Bound::Watermark { .. } => "watermark".to_owned(),
            Bound::Interval { .. } => "interval".to_owned(),
        },
        interval: match &config.bound {
            Bound::Interval { interval, .. } => Some(interval.to_string()),
            Bound::Watermark { .. } => None,
        },
        complete: true,
        ..Default::default()
    };
    let config = Arc::new(config);
    let buffers = BufferPool::default();
    let drains = config
        .topics
        .iter()
        .map(|topic| drain_topic(config.clone(), topic.clone(), stop.clone(), buffers.clone()));
    for result in futures::future::join_all(drains).await {
        let outcome = result?;
        summary.complete &= outcome.complete;
        summary.files += outcome.files;
        summary.skipped += outcome.skipped;
        for (partition, part) in outcome.partitions {
            summary.add_partition(&outcome.topic, partition, part);
        }
        summary.topics.entry(outcome.topic).or_default().lag = outcome.lag;
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if let (false, Bound::Interval { interval, .. }) = (summary.complete, &config.bound) {
        return Err(IngestError::IntervalIncomplete {
            interval: interval.to_string(),
            seconds: config.max_duration.as_secs(),
        });
    }
    Ok(summary)
}

struct TopicOutcome {
    topic: String,
    /// Watermark mode: the last stable offsets at the end minus the offsets landed up to.
    lag: Option<u64>,
    complete: bool,
    files: u64,
    skipped: u64,
    partitions: BTreeMap<i32, PartitionSummary>,
}

/// What the poll thread hands the uploader.
enum Work {
    Batch(Batch),
    /// A worker could not compress a batch: the run fails with this.
    Failed(IngestError),
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

fn kafka_err(
    config: &IngestConfig,
    what: impl Into<String>,
) -> impl FnOnce(KafkaError) -> IngestError {
    let bootstrap = config.bootstrap.clone();
    let what = what.into();
    move |source| IngestError::Kafka {
        bootstrap,
        what,
        source: Box::new(source),
    }
}

async fn drain_topic(
    config: Arc<IngestConfig>,
    topic: String,
    stop: StopFlag,
    buffers: BufferPool,
) -> Result<TopicOutcome, IngestError> {
    let group = match &config.bound {
        Bound::Watermark { group } => group.clone(),
        // librdkafka wants a group id; interval mode never commits under it.
        Bound::Interval { .. } => "streamflow-interval".to_owned(),
    };
    let mut client = kafka_config(&config.bootstrap, &[]);
    client
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // librdkafka's default, stated because exactly-once rests on it: records of aborted
        // and open transactions are never landed, the watermarks a plan ends at are the last
        // stable offsets, and partition EOF comes there. The offsets of aborted records and
        // transaction markers are never delivered; a plan's end is reached without them
        // (batch::Batcher::finish).
        .set("isolation.level", "read_committed")
        // Not a silent jump to the earliest offset: records retention deleted before the
        // drain read them are counted as expired, so an offset out of range must be seen.
        .set("auto.offset.reset", "error")
        // Larger than librdkafka's 1 MiB default, which starves a drain of small records.
        .set("max.partition.fetch.bytes", "2097152")
        .set("fetch.max.bytes", "67108864")
        .set("fetch.wait.max.ms", "100")
        // Pre-fetched records waiting to be polled, per consumer (librdkafka's default is
        // 64 MiB): 8 MiB, a few fetches, is as fast and keeps the drain's memory smaller (a
        // zstd drain's peak RSS 375 -> 290 MiB against 32 MiB, alternated runs).
        .set("queued.max.messages.kbytes", "8192")
        // When that queue is full librdkafka stops fetching for fetch.queue.backoff.ms, 1 s by
        // default: a drain that keeps its queue full spent most of its time waiting (the 5M
        // record benchmark took 29 s with the default and 15 s with 10 ms: ingest run 5 in
        // `git show 6552350:docs/benchmarks.md`).
        .set("fetch.queue.backoff.ms", "10");
    for (k, v) in &config.kafka_overrides {
        client.set(k, v);
    }
    let consumer: Arc<BaseConsumer> = Arc::new(
        client
            .create()
            .map_err(kafka_err(&config, "create consumer"))?,
    );

    let view = {
        let (config, consumer, topic) = (config.clone(), consumer.clone(), topic.clone());
        tokio::task::spawn_blocking(move || read_kafka(&config, &consumer, &topic))
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))??
    };
    let plans = make_plans(&config, &topic, &view).await?;
    if let Some(progress) = &config.progress {
        let planned: i64 = plans.iter().map(|p| (p.end - p.start).max(0)).sum();
        progress
            .planned
            .fetch_add(planned as u64, Ordering::Relaxed);
    }
    for p in plans.iter().filter(|p| p.expired > 0) {
        tracing::warn!(
            topic,
            partition = p.partition,
            expired = p.expired,
            start = p.start,
            "records expired by Kafka retention before they were drained"
        );
    }
    for p in plans.iter().filter(|p| p.resumed) {
        tracing::info!(
            topic,
            partition = p.partition,
            start = p.start,
            end = p.end,
            "finishing the plan of an interrupted run"
        );
    }

    let (tx, rx) = mpsc::channel::<Work>(2);
    let uploader = tokio::spawn(upload_and_commit(
        config.clone(),
        consumer.clone(),
        Topic {
            name: topic.clone(),
            id: view.topic_id.clone(),
        },
        plans.clone(),
        rx,
        buffers.clone(),
    ));
    let poller = {
        let (config, consumer, plans) = (config.clone(), consumer.clone(), plans.clone());
        let topic = Topic {
            name: topic.clone(),
            id: view.topic_id.clone(),
        };
        tokio::task::spawn_blocking(move || {
            poll_partitions(&config, &consumer, &topic, &plans, &tx, &stop, &buffers)
        })
    };
    let polled = poller
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    // The uploader ends when the poller drops its sender; its error explains a poller that
    // stopped because the channel closed, so it is reported first.
    let uploaded = uploader
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    let mut uploaded = uploaded?;
    let polled = polled?;
    for (partition, n) in &polled.expired {
        if let Some(summary) = uploaded.partitions.get_mut(partition) {
            summary.expired += n;
        }
    }
    let lag = match config.bound {
        Bound::Watermark { .. } => {
            let landed: Vec<(i32, i64)> = uploaded
                .partitions
                .iter()
                .map(|(p, s)| (*p, s.to))
                .collect();
            let (config, consumer, topic) = (config.clone(), consumer.clone(), topic.clone());
            Some(
                tokio::task::spawn_blocking(move || lag(&config, &consumer, &topic, &landed))
                    .await
                    .map_err(|e| IngestError::Internal(e.to_string()))??,
            )
        }
        Bound::Interval { .. } => None,
    };
    Ok(TopicOutcome {
        topic,
        lag,
        complete: polled.complete,
        files: uploaded.files,
        skipped: uploaded.skipped,
        partitions: uploaded.partitions,
    })
}

/// A topic's name and identity (docs/ingest.md): objects and the log are named by both.
#[derive(Debug, Clone)]
struct Topic {
    name: String,
    id: String,
}

/// What Kafka says about a topic at the start of a run.
struct KafkaView {
    topic_id: String,
    /// Per partition, the low watermark and where the plan may end: the last stable offset
    /// (watermark mode) or the offset of the interval's end.
    bounds: BTreeMap<i32, (i64, i64)>,
    /// Where a partition without a landing log starts: a committed offset of this topic's
    /// (watermark mode) or the offset of the interval's start.
    seeds: BTreeMap<i32, i64>,
}

/// The sum over `landed` (partition, offset landed up to) of how far the last stable offset
/// is now past it.
fn lag(
    config: &IngestConfig,
    consumer: &BaseConsumer,
    topic: &str,
    landed: &[(i32, i64)],
) -> Result<u64, IngestError> {
    let mut lag = 0u64;
    for &(p, to) in landed {
        let (_, high) = fetch_watermarks(config, consumer, topic, p)?;
        lag += (high - to).max(0) as u64;
    }
    Ok(lag)
}

/// A partition's low and high watermarks (the high one is the last stable offset under
/// read_committed).
fn fetch_watermarks(
    config: &IngestConfig,
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), IngestError> {
    consumer
        .fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
        .map_err(kafka_err(
            config,
            format!("fetch watermarks of {topic}/{partition}"),
        ))
}

/// Reads the topic's id, watermarks, and committed offsets or interval offsets.
fn read_kafka(
    config: &IngestConfig,
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<KafkaView, IngestError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .map_err(kafka_err(config, format!("fetch metadata of {topic}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(IngestError::NoSuchTopic {
            topic: topic.to_owned(),
            bootstrap: config.bootstrap.clone(),
        });
    }
    let broker = metadata.brokers().first().map_or(-1, |b| b.id());
    let topic_id =
        topic_id::topic_id(consumer, topic, broker, KAFKA_TIMEOUT).map_err(|source| {
            IngestError::TopicId {
                topic: topic.to_owned(),
                bootstrap: config.bootstrap.clone(),
                source,
            }
        })?;
    let mut watermarks = BTreeMap::new();
    for &p in &partitions {
        let wm = fetch_watermarks(config, consumer, topic, p)?;
        watermarks.insert(p, wm);
    }
    match &config.bound {
        Bound::Watermark { .. } => {
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition(topic, p);
            }
            let committed = with_kafka_retry(
                config,
                &format!("read committed offsets of {topic}"),
                is_transient,
                || consumer.committed_offsets(tpl.clone(), KAFKA_TIMEOUT),
            )?;
            let seeds = partitions
                .iter()
                .filter_map(|&p| {
                    let e = committed.find_partition(topic, p)?;
                    match e.offset() {
                        Offset::Offset(o) if seeds_log(e.metadata(), &topic_id) => Some((p, o)),
                        _ => None,
                    }
                })
                .collect();
            Ok(KafkaView {
                topic_id,
                bounds: watermarks,
                seeds,
            })
        }
        Bound::Interval { interval, grace } => {
            let lookup = |t: i64| -> Result<BTreeMap<i32, Offset>, IngestError> {
                let mut tpl = TopicPartitionList::new();
                for &p in &partitions {
                    tpl.add_partition_offset(topic, p, Offset::Offset(t))
                        .map_err(kafka_err(config, "build the time lookup"))?;
                }
                let found = consumer
                    .offsets_for_times(tpl, KAFKA_TIMEOUT)
                    .map_err(kafka_err(
                        config,
                        format!("look up offsets by time in {topic}"),
                    ))?;
                Ok(found
                    .elements()
                    .iter()
                    .map(|e| (e.partition(), e.offset()))
                    .collect())
            };
            let from = lookup(interval.start.timestamp_millis())?;
            let to_ms = (interval.end + chrono::Duration::from_std(*grace).unwrap_or_default())
                .timestamp_millis();
            let to = lookup(to_ms)?;
            let mut view = KafkaView {
                topic_id,
                bounds: BTreeMap::new(),
                seeds: BTreeMap::new(),
            };
            let mut open = Vec::new();
            for &p in &partitions {
                let (low, high) = watermarks[&p];
                // "No record at or after the time" comes back as the end of the partition.
                let at = |o: Option<&Offset>| match o {
                    Some(Offset::Offset(o)) => *o,
                    _ => high,
                };
                let end = at(to.get(&p));
                if !matches!(to.get(&p), Some(Offset::Offset(_))) && high > 0 {
                    open.push(p);
                }
                view.bounds.insert(p, (low, end));
                view.seeds.insert(p, at(from.get(&p)).min(end));
            }
            if !open.is_empty() {
                tracing::warn!(
                    topic,
                    partitions = ?open,
                    "no record after the interval's end yet: the interval may still be receiving records"
                );
            }
            Ok(view)
        }
    }
}

/// Each partition's `[start, end)` from its landing log and what Kafka says.
async fn make_plans(
    config: &IngestConfig,
    topic: &str,
    view: &KafkaView,
) -> Result<Vec<PartitionPlan>, IngestError> {
    let scope = log_scope(&config.bound);
    let mut plans = Vec::new();
    for (&p, &(low, end)) in &view.bounds {
        let prefix = landing::log_prefix(topic, &view.topic_id, scope, p);
        // Entries are written before their objects, and at most UPLOADS_IN_FLIGHT batches of a
        // topic upload at once: only the last so many may name objects not written.
        let log = landing::read_log(&config.landing, &prefix, UPLOADS_IN_FLIGHT).await?;
        let mut recent = Vec::with_capacity(log.recent.len());
        for claim in log.recent {
            let complete = landing::is_complete(&config.landing, &claim).await?;
            recent.push((claim, complete));
        }
        let seed = view.seeds.get(&p).copied();
        plans.push(landing_plan(
            p,
            &recent,
            log.next_seq,
            seed,
            low,
            end,
            config.rotation,
        ));
    }
    Ok(plans)
}

/// Which log of the landing zone a run extends.
fn log_scope(bound: &Bound) -> Scope {
    match bound {
        Bound::Watermark { .. } => Scope::Watermark,
        Bound::Interval { interval, .. } => Scope::Interval {
            start_ms: interval.start.timestamp_millis(),
            end_ms: interval.end.timestamp_millis(),
        },
    }
}

fn commit_with_retry(
    config: &IngestConfig,
    consumer: &BaseConsumer,
    tpl: &TopicPartitionList,
) -> Result<(), IngestError> {
    // Any failed commit is retried: committing the same offsets again is harmless.
    with_kafka_retry(
        config,
        "commit offsets",
        |_| true,
        || consumer.commit(tpl, CommitMode::Sync),
    )
}

/// How long a Kafka call is retried before the run fails: a broker that has just started
/// loads its group coordinator's state for seconds (longer with a large offsets topic).
const KAFKA_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of a group coordinator that is starting, moving or briefly unreachable. librdkafka
/// retries some of them itself but hands others ("Not coordinator") straight back.
fn is_transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NetworkException
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
        )
    )
}

/// Runs a blocking Kafka call, retrying the errors `retry` accepts with exponential backoff
/// until [`KAFKA_RETRY_TIMEOUT`].
fn with_kafka_retry<T>(
    config: &IngestConfig,
    what: &str,
    retry: impl Fn(&KafkaError) -> bool,
    mut call: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, IngestError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if retry(&e) && started.elapsed() + delay < KAFKA_RETRY_TIMEOUT => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(kafka_err(config, what)(e)),
        }
    }
}

struct PollOutcome {
    complete: bool,
    /// Per partition, records retention deleted while the run was reading towards them.
    expired: BTreeMap<i32, u64>,
}

impl PollOutcome {
    fn new(complete: bool) -> Self {
        Self {
            complete,
            expired: BTreeMap::new(),
        }
    }
}

/// The poll loop: reads every planned partition to its end (or until stopped) and hands its
/// records to the partition's worker ([`check_and_cut`]), which checks them, cuts batches and
/// hands closed batches to the uploader.
///
/// Checking records (a schema parse of each) is most of a drain's CPU, so it runs on a few
/// worker threads per topic, each owning a fixed set of partitions: a partition's records are
/// still cut in offset order by one batcher, so the cuts are the same whatever the number of
/// workers, and a topic with more work than another can use every core.
fn poll_partitions(
    config: &IngestConfig,
    consumer: &BaseConsumer,
    named: &Topic,
    plans: &[PartitionPlan],
    tx: &mpsc::Sender<Work>,
    stop: &AtomicBool,
    buffers: &BufferPool,
) -> Result<PollOutcome, IngestError> {
    let topic = named.name.as_str();
    let keep = match &config.bound {
        Bound::Interval { interval, .. } => Some((
            interval.start.timestamp_millis(),
            interval.end.timestamp_millis(),
        )),
        Bound::Watermark { .. } => None,
    };
    struct Progress {
        plan: PartitionPlan,
        worker: usize,
        position: i64,
        done: bool,
    }
    let due: Vec<&PartitionPlan> = plans.iter().filter(|p| p.start < p.end).collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(due.len())
        .max(1);
    let mut parts: BTreeMap<i32, Progress> = plans
        .iter()
        .map(|p| {
            let worker = due
                .iter()
                .position(|d| d.partition == p.partition)
                .unwrap_or(0)
                % workers;
            (
                p.partition,
                Progress {
                    plan: p.clone(),
                    worker,
                    position: p.start,
                    done: p.start >= p.end,
                },
            )
        })
        .collect();
    let mut assignment = TopicPartitionList::new();
    for p in parts.values().filter(|p| !p.done) {
        assignment
            .add_partition_offset(topic, p.plan.partition, Offset::Offset(p.plan.start))
            .map_err(kafka_err(config, "build the assignment"))?;
    }
    if assignment.count() == 0 {
        return Ok(PollOutcome::new(true));
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_err(config, format!("assign {topic}")))?;

    let mut expired: BTreeMap<i32, u64> = BTreeMap::new();
    let polled = std::thread::scope(|scope| {
        let mut steps = Vec::with_capacity(workers);
        for w in 0..workers {
            let (step_tx, step_rx) = std::sync::mpsc::sync_channel::<Step<'_>>(STEPS_QUEUED);
            let batchers: BTreeMap<i32, Batcher> = parts
                .values()
                .filter(|p| p.worker == w)
                .map(|p| {
                    let batcher = Batcher::new(
                        topic,
                        p.plan.partition,
                        p.plan.rotation,
                        config.max_record_bytes,
                        keep,
                        buffers.clone(),
                    )
                    .starting_at(
                        &named.id,
                        p.plan.start,
                        p.plan.redo.iter().map(|c| c.next).collect(),
                    );
                    (p.plan.partition, batcher)
                })
                .collect();
            let (tx, cut_keeps) = (tx.clone(), matches!(config.bound, Bound::Watermark { .. }));
            scope.spawn(move || check_and_cut(batchers, step_rx, &tx, cut_keeps));
            steps.push(Workers::new(step_tx));
        }
        let mut queue = BatchQueue::new(consumer, RECORDS_PER_POLL)
            .ok_or_else(|| IngestError::Internal("librdkafka gave no consumer queue".to_owned()))?;
        let mut polled = Vec::with_capacity(RECORDS_PER_POLL);
        // Time spent waiting for a worker (which waits for the uploader) is not Kafka's
        // silence, so a hand-off restarts the stall clock too.
        let mut last_progress = Instant::now();
        // The stall clock is restarted when the stream pauses after records (a poll timeout
        // late at most), not per batch.
        let mut delivered = false;
        let started = Instant::now();
        let finish = |p: &mut Progress, next: i64, steps: &mut [Workers<'_>]| -> bool {
            p.done = true;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, p.plan.partition);
            // Stop fetching what the plan does not need; failing to pause only costs bandwidth.
            let _ = consumer.pause(&tpl);
            steps[p.worker].send(Step::Finish {
                partition: p.plan.partition,
                next,
            })
        };
        while parts.values().any(|p| !p.done) {
            if stop.load(Ordering::Relaxed) || started.elapsed() >= config.max_duration {
                // Cut short: keep what was read, write the cut ahead so a retry cuts the same.
                for w in &mut steps {
                    w.send(Step::Cut);
                }
                return Ok(PollOutcome::new(false));
            }
            if queue.poll(POLL_WAIT, &mut polled) == 0 {
                if std::mem::take(&mut delivered) {
                    last_progress = Instant::now();
                }
                // A pause in the stream: hand what is pending on, so nothing waits for more.
                for w in &mut steps {
                    if !w.flush() {
                        return Ok(PollOutcome::new(false));
                    }
                }
                if let Some(handed) = steps.iter().map(|w| w.sent).max() {
                    last_progress = last_progress.max(handed);
                }
                if last_progress.elapsed() >= config.stall_timeout
                    && let Some(p) = parts.values().find(|p| !p.done)
                {
                    return Err(IngestError::Stalled {
                        bootstrap: config.bootstrap.clone(),
                        topic: topic.to_owned(),
                        partition: p.plan.partition,
                        position: p.position,
                        end: p.plan.end,
                        seconds: config.stall_timeout.as_secs(),
                    });
                }
                continue;
            }
            for item in polled.drain(..) {
                match item {
                    Polled::Record(record) => {
                        delivered = true;
                        let Some(p) = parts.get_mut(&record.partition()) else {
                            continue;
                        };
                        if p.done {
                            continue;
                        }
                        let offset = record.offset();
                        if offset < p.position {
                            // Fetched before the partition was assigned again further on
                            // (skip_expired): out of range now.
                            continue;
                        }
                        if offset >= p.plan.end {
                            if !finish(p, p.plan.end, &mut steps) {
                                return Ok(PollOutcome::new(false));
                            }
                            continue;
                        }
                        p.position = offset + 1;
                        if !steps[p.worker].push(record) {
                            return Ok(PollOutcome::new(false));
                        }
                        if p.position >= p.plan.end && !finish(p, p.plan.end, &mut steps) {
                            return Ok(PollOutcome::new(false));
                        }
                    }
                    Polled::PartitionEof(partition) => {
                        last_progress = Instant::now();
                        // EOF is the high watermark now, which is at or past the plan's end:
                        // every planned record has been delivered, even if the last offsets
                        // were gaps.
                        if let Some(p) = parts.get_mut(&partition)
                            && !p.done
                            && p.position < p.plan.end
                            && let Ok((_, high)) =
                                consumer.fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
                            && high >= p.plan.end
                            && !finish(p, p.plan.end, &mut steps)
                        {
                            return Ok(PollOutcome::new(false));
                        }
                    }
                    Polled::OffsetOutOfRange(partition) => {
                        last_progress = Instant::now();
                        let Some(p) = parts.get_mut(&partition).filter(|p| !p.done) else {
                            continue;
                        };
                        let resume = skip_expired(config, consumer, topic, &p.plan, p.position)?;
                        *expired.entry(partition).or_default() +=
                            (resume.min(p.plan.end) - p.position).max(0) as u64;
                        p.position = resume;
                        if resume >= p.plan.end && !finish(p, p.plan.end, &mut steps) {
                            return Ok(PollOutcome::new(false));
                        }
                    }
                    Polled::Error(e) => {
                        // Transport errors are retried by librdkafka; the stall timeout bounds
                        // them.
                        tracing::warn!(topic, error = %e, "Kafka reported an error; retrying");
                    }
                }
            }
        }
        Ok(PollOutcome::new(true))
        // Leaving the scope drops the step senders: the workers finish their queues and end.
    });
    polled.map(|outcome| PollOutcome { expired, ..outcome })
}

/// Where a partition whose next offset (`position`) retention deleted goes on: its new low
/// watermark, fetched from there (or nowhere, when that is past the plan's end). The records
/// in between are gone before the drain read them; the caller counts them as expired.
fn skip_expired(
    config: &IngestConfig,
    consumer: &BaseConsumer,
    topic: &str,
    plan: &PartitionPlan,
    position: i64,
) -> Result<i64, IngestError> {
    let partition = plan.partition;
    let (low, high) = fetch_watermarks(config, consumer, topic, partition)?;
    if low <= position {
        // Out of range above the end: the log was cut back (an unclean leader election).
        return Err(IngestError::Internal(format!(
            "offset {position} of {topic} partition {partition} is past its end ({high}): the \
             partition's log was truncated; check the brokers"
        )));
    }
    let resume = low;
    tracing::warn!(
        topic,
        partition,
        expired = resume.min(plan.end) - position,
        from = position,
        "records expired by Kafka retention while the drain read towards them"
    );
    if resume < plan.end {
        // librdkafka has stopped fetching the partition and takes no seek in that state: it is
        // assigned again, from `resume`.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        consumer
            .incremental_unassign(&tpl)
            .map_err(kafka_err(config, format!("unassign {topic}/{partition}")))?;
        tpl.set_all_offsets(Offset::Offset(resume))
            .map_err(kafka_err(config, format!("assign {topic}/{partition}")))?;
        consumer.incremental_assign(&tpl).map_err(kafka_err(
            config,
            format!("assign {topic}/{partition} at {resume}"),
        ))?;
    }
    Ok(resume)
}

/// How long a poll waits for a record when none is queued.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Records taken from librdkafka's queue at most per call.
const RECORDS_PER_POLL: usize = 1024;

/// Records handed to a worker at once: one channel message per this many records.
const RECORDS_PER_STEP: usize = 512;
/// Steps queued per worker before the poll thread waits for it.
const STEPS_QUEUED: usize = 16;

/// What the poll thread hands a worker.
enum Step<'c> {
    /// Records of the worker's partitions, in the order Kafka delivered them.
    Records(Vec<KafkaRecord<'c>>),
    /// A partition's plan is done: close its batch, to be committed up to `next`.
    Finish { partition: i32, next: i64 },
    /// The run is cut short: close every open batch as it is.
    Cut,
}

/// The poll thread's end of one worker's queue, gathering records into steps.
struct Workers<'c> {
    tx: std::sync::mpsc::SyncSender<Step<'c>>,
    pending: Vec<KafkaRecord<'c>>,
    /// When the last step was taken by the worker.
    sent: Instant,
}

impl<'c> Workers<'c> {
    fn new(tx: std::sync::mpsc::SyncSender<Step<'c>>) -> Self {
        Self {
            tx,
            pending: Vec::with_capacity(RECORDS_PER_STEP),
            sent: Instant::now(),
        }
    }

    /// Queues a record; false when the worker has ended (its uploader failed).
    fn push(&mut self, message: KafkaRecord<'c>) -> bool {
        self.pending.push(message);
        self.pending.len() < RECORDS_PER_STEP || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let records = std::mem::replace(&mut self.pending, Vec::with_capacity(RECORDS_PER_STEP));
        self.hand(Step::Records(records))
    }

    /// Sends a step after the records before it; false when the worker has ended.
    fn send(&mut self, step: Step<'c>) -> bool {
        self.flush() && self.hand(step)
    }

    fn hand(&mut self, step: Step<'c>) -> bool {
        let ok = self.tx.send(step).is_ok();
        self.sent = Instant::now();
        ok
    }
}

/// A worker: checks its partitions' records, cuts them into batches and hands closed batches
/// to the uploader. Ends when the poll thread drops its queue or the uploader is gone.
fn check_and_cut(
    mut batchers: BTreeMap<i32, Batcher>,
    steps: std::sync::mpsc::Receiver<Step<'_>>,
    tx: &mpsc::Sender<Work>,
    cut_keeps: bool,
) {
    // Hands a closed batch on; false ends the worker (and so the run): compressing failed or
    // the uploader is gone.
    let hand = |closed: std::io::Result<Option<Batch>>, partition: i32| match closed {
        Ok(None) => true,
        Ok(Some(batch)) => tx.blocking_send(Work::Batch(batch)).is_ok(),
        Err(e) => {
            let _ = tx.blocking_send(Work::Failed(IngestError::Internal(format!(
                "cannot compress a landing object of partition {partition}: {e}"
            ))));
            false
        }
    };
    // Several closed batches at once (ranges of the log closed together); false as `hand`.
    let hand_all = |closed: std::io::Result<Vec<Batch>>, partition: i32| match closed {
        Ok(closed) => closed
            .into_iter()
            .all(|batch| hand(Ok(Some(batch)), partition)),
        Err(e) => {
            hand(Err(e), partition);
            false
        }
    };
    for step in steps {
        match step {
            Step::Records(messages) => {
                for message in &messages {
                    let partition = message.partition();
                    let Some(batcher) = batchers.get_mut(&partition) else {
                        continue;
                    };
                    if batcher.has_cuts() && !hand_all(batcher.reach(message.offset()), partition) {
                        return;
                    }
                    let record = Record {
                        offset: message.offset(),
                        timestamp_ms: message.timestamp_ms(),
                        key: message.key(),
                        value: message.payload(),
                        headers: message,
                    };
                    if !hand(batcher.push(&record), partition) {
                        return;
                    }
                }
            }
            Step::Finish { partition, next } => {
                if let Some(batcher) = batchers.get_mut(&partition)
                    && !hand_all(batcher.finish(next), partition)
                {
                    return;
                }
            }
            Step::Cut => {
                for (partition, batcher) in &mut batchers {
                    // Interval mode keeps only whole batches; the run fails and its rerun
                    // drains the interval again.
                    let closed = batcher.cut_short();
                    let closed = if cut_keeps {
                        closed
                    } else {
                        closed.map(|_| None)
                    };
                    if !hand(closed, *partition) {
                        return;
                    }
                }
            }
        }
    }
}

struct UploadOutcome {
    files: u64,
    skipped: u64,
    partitions: BTreeMap<i32, PartitionSummary>,
}

/// One partition's log as the uploader extends it.
struct Chain {
    prefix: String,
    next_seq: u64,
    /// Entries being written again, oldest first: batches with their ranges take them.
    redo: std::collections::VecDeque<Claim>,
}

/// Records each batch's range in the landing log, creates its objects, then commits the offset
/// after it to Kafka (watermark mode) as progress.
async fn upload_and_commit(
    config: Arc<IngestConfig>,
    consumer: Arc<BaseConsumer>,
    topic: Topic,
    plans: Vec<PartitionPlan>,
    mut rx: mpsc::Receiver<Work>,
    buffers: BufferPool,
) -> Result<UploadOutcome, IngestError> {
    let mut outcome = UploadOutcome {
        files: 0,
        skipped: 0,
        partitions: plans
            .iter()
            .map(|p| {
                (
                    p.partition,
                    PartitionSummary {
                        from: p.start,
                        to: p.start,
                        expired: p.expired,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    };
    let scope = log_scope(&config.bound);
    let mut chains: BTreeMap<i32, Chain> = plans
        .iter()
        .map(|p| {
            (
                p.partition,
                Chain {
                    prefix: landing::log_prefix(&topic.name, &topic.id, scope, p.partition),
                    next_seq: p.next_seq,
                    redo: p.redo.iter().cloned().collect(),
                },
            )
        })
        .collect();
    // Tells this run's own log entries from another drain's.
    let writer = uuid::Uuid::new_v4().simple().to_string();
    let progress = Progress {
        topic_id: topic.id.clone(),
    };
    let commits = matches!(config.bound, Bound::Watermark { .. });
    let mut uploaded = 0u64;
    // Several batches upload at once (S3 PUTs are mostly waiting), but they are finished, and
    // their offsets committed, strictly in the order they were cut.
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut finish =
        async |done: Uploaded, outcome: &mut UploadOutcome| -> Result<(), IngestError> {
            uploaded += 1;
            if config.crash_after_uploads == Some(uploaded) {
                std::process::abort();
            }
            if commits {
                commit_offset(
                    &config,
                    &consumer,
                    &topic.name,
                    done.partition,
                    done.next,
                    &progress,
                )
                .await?;
            }
            outcome.files += done.files;
            outcome.skipped += done.skipped;
            if let Some(s) = outcome.partitions.get_mut(&done.partition) {
                if let Some(progress) = &config.progress {
                    let advanced = (done.next - s.to).max(0) as u64;
                    progress.done.fetch_add(advanced, Ordering::Relaxed);
                }
                s.to = done.next;
                s.records += done.good;
                s.quarantined += done.quarantined;
                s.bytes += done.value_bytes;
            }
            Ok(())
        };
    while let Some(work) = rx.recv().await {
        let batch = match work {
            Work::Batch(b) => b,
            Work::Failed(e) => return Err(e),
        };
        let Some(chain) = chains.get_mut(&batch.partition) else {
            return Err(IngestError::Internal(format!(
                "a batch of partition {} that has no plan",
                batch.partition
            )));
        };
        if let Some(entry) = chain.redo.front().filter(|c| c.first == batch.first) {
            // An entry written before a crash: the batch was cut to its range, so its objects
            // take the names the entry holds, and those already written are kept.
            if entry.next != batch.next {
                return Err(IngestError::Internal(format!(
                    "partition {} entry {} ends at {}, the batch written again at {}",
                    batch.partition, entry.seq, entry.next, batch.next
                )));
            }
            chain.redo.pop_front();
        } else {
            let claim = Claim {
                seq: chain.next_seq,
                first: batch.first,
                next: batch.next,
                compression: batch.compression,
                objects: batch
                    .chunks
                    .keys()
                    .map(|(kind, date)| batch.object_name(*kind, *date))
                    .collect(),
                writer: writer.clone(),
            };
            create_claim(&config, &topic.name, batch.partition, &chain.prefix, &claim).await?;
            chain.next_seq += 1;
        }
        in_flight.push_back(upload_batch(
            &config.landing,
            config.upload_retry_timeout,
            batch,
            &buffers,
        ));
        if in_flight.len() >= UPLOADS_IN_FLIGHT
            && let Some(done) = in_flight.next().await
        {
            finish(done?, &mut outcome).await?;
        }
    }
    while let Some(done) = in_flight.next().await {
        finish(done?, &mut outcome).await?;
    }
    Ok(outcome)
}

/// Creates a log entry, or finds that the range is taken: by this run's own earlier attempt
/// (a PUT whose answer was lost), which is fine, or by another drain, which ends this run.
async fn create_claim(
    config: &IngestConfig,
    topic: &str,
    partition: i32,
    prefix: &str,
    claim: &Claim,
) -> Result<(), IngestError> {
    let landing = &config.landing;
    let object = landing.child(&Claim::object_name(prefix, claim.seq));
    let body = serde_json::to_vec(claim).map_err(|e| IngestError::Internal(e.to_string()))?;
    if put_with_retry(
        landing,
        &object,
        PutPayload::from(body),
        config.upload_retry_timeout,
    )
    .await?
    {
        return Ok(());
    }
    let found = landing::get_claim(landing, &object).await?;
    if found.writer == claim.writer {
        return Ok(());
    }
    Err(IngestError::Fenced {
        topic: topic.to_owned(),
        partition,
        landing: landing.display.clone(),
        seq: claim.seq,
        object: object.to_string(),
    })
}

async fn commit_offset(
    config: &Arc<IngestConfig>,
    consumer: &Arc<BaseConsumer>,
    topic: &str,
    partition: i32,
    offset: i64,
    progress: &Progress,
) -> Result<(), IngestError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(kafka_err(config, "build the offset commit"))?;
    if let Some(mut e) = tpl.find_partition(topic, partition) {
        e.set_metadata(progress.to_metadata());
    }
    let (config, consumer) = (config.clone(), consumer.clone());
    tokio::task::spawn_blocking(move || commit_with_retry(&config, &consumer, &tpl))
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?
}

/// Batches uploading at once per topic.
const UPLOADS_IN_FLIGHT: usize = 4;

/// What is left of a batch once its objects are written: what to commit and count.
struct Uploaded {
    partition: i32,
    next: i64,
    files: u64,
    good: u64,
    quarantined: u64,
    skipped: u64,
    value_bytes: u64,
}

/// Creates every object of a batch that does not exist yet, consuming it: its buffers go to
/// the store, not copied, and come back to the pool once the store is done with them. An
/// object that exists was written by an attempt before a crash: the records of its range and
/// date, all of them, since an object is written whole or not at all, so it is kept; a retry
/// may hold fewer (retention since) and must not replace it.
async fn upload_batch(
    landing: &Location,
    retry_timeout: Duration,
    batch: Batch,
    buffers: &BufferPool,
) -> Result<Uploaded, IngestError> {
    let names: Vec<String> = batch
        .chunks
        .keys()
        .map(|(kind, date)| batch.object_name(*kind, *date))
        .collect();
    let done = Uploaded {
        partition: batch.partition,
        next: batch.next,
        files: names.len() as u64,
        good: batch.good,
        quarantined: batch.quarantined,
        skipped: batch.skipped,
        value_bytes: batch.value_bytes,
    };
    let uploads = batch
        .chunks
        .into_values()
        .zip(names)
        .map(|(chunk, name)| async move {
            let object = landing.child(&name);
            let body = Bytes::from(chunk.body);
            put_with_retry(
                landing,
                &object,
                PutPayload::from(body.clone()),
                retry_timeout,
            )
            .await?;
            // The store has dropped its copies by now, unless it keeps one for its own reasons;
            // then the buffer is simply freed.
            if let Ok(buffer) = body.try_into_mut() {
                buffers.give(buffer.into());
            }
            Ok::<_, IngestError>(())
        });
    for result in futures::future::join_all(uploads).await {
        result?;
    }
    Ok(done)
}

/// Creates one object unless one of that name exists (false then: a retry after an unknown
/// outcome may find its own first attempt so), retrying with exponential backoff (on top of
/// object_store's own quick retries) until `retry_timeout` has passed. A request still
/// unanswered then (a hung server answers nothing, and a client's own request timeout is
/// long) is abandoned: the window bounds the whole upload, not only the pauses between tries.
async fn put_with_retry(
    landing: &Location,
    object: &object_store::path::Path,
    payload: PutPayload,
    retry_timeout: Duration,
) -> Result<bool, IngestError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let left = retry_timeout.saturating_sub(started.elapsed());
        // Offsets are committed after this returns: the object must outlive a power cut.
        let attempt = tokio::time::timeout(left, landing.put_durable_new(object, payload.clone()));
        let Ok(result) = attempt.await else {
            return Err(IngestError::UploadTimedOut {
                object: object.to_string(),
                landing: landing.display.clone(),
                seconds: retry_timeout.as_secs_f64(),
            });
        };
        match result {
            Ok(created) => return Ok(created),
            Err(e)
                if started.elapsed() + delay < retry_timeout
                    && !matches!(
                        e,
                        object_store::Error::PermissionDenied { .. }
                            | object_store::Error::Unauthenticated { .. }
                            | object_store::Error::NotImplemented { .. }
                    ) =>
            {
                tracing::warn!(object = %object, error = %e, retry_in = ?delay, "upload failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(source) => {
                return Err(IngestError::Store {
                    object: object.to_string(),
                    landing: landing.display.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_uploaded_batch_gives_its_buffer_back_to_the_pool() {
        use batch::{Chunk, ChunkKind};
        let dir = tempfile::tempdir().unwrap();
        let landing = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let pool = BufferPool::default();
        let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let mut body = pool.take(2 << 20);
        body.extend_from_slice(b"{\"event_id\":\"e1\"}\n");
        let address = body.as_ptr();
        let mut chunk = Chunk::default();
        (chunk.records, chunk.body) = (1, body);
        let batch = Batch {
            topic: "user_events".to_owned(),
            partition: 0,
            first: 0,
            last: 0,
            next: 1,
            chunks: BTreeMap::from([((ChunkKind::Landing, date), chunk)]),
            good: 1,
            quarantined: 0,
            skipped: 0,
            value_bytes: 18,
            compression: plan::Compression::None,
            topic_id: "id".to_owned(),
        };
        let name = batch.object_name(ChunkKind::Landing, date);
        upload_batch(&landing, Duration::from_secs(1), batch, &pool)
            .await
            .unwrap();
        assert!(dir.path().join(&name).is_file(), "{name} written");
        assert_eq!(pool.pooled(), 1);
        let reused = pool.take(2 << 20);
        assert_eq!(
            reused.as_ptr(),
            address,
            "the batch's buffer is back in the pool"
        );
    }
}
