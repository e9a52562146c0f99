//! The Kafka poll loop: one thread per topic reads every planned partition to its plan's end
//! and hands the records to the cutting workers ([`super::cut`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::batch::Batcher;
use super::buffers::BufferPool;
use super::config::{Bound, IngestConfig};
use super::cut::{Step, Work, check_and_cut};
use super::error::IngestError;
use super::fetch::{BatchQueue, KafkaRecord, Polled};
use super::kafka::{KAFKA_TIMEOUT, fetch_watermarks, kafka_err};
use super::plan::PartitionPlan;
use super::topic_id::Topic;

pub(super) struct PollOutcome {
    pub(super) complete: bool,
    /// Per partition, records retention deleted while the run was reading towards them.
    pub(super) expired: BTreeMap<i32, u64>,
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
pub(super) fn poll_partitions(
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
                        named.kind,
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
pub(super) fn skip_expired(
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
pub(super) const POLL_WAIT: Duration = Duration::from_millis(100);

/// Records taken from librdkafka's queue at most per call.
pub(super) const RECORDS_PER_POLL: usize = 1024;

/// Records handed to a worker at once: one channel message per this many records.
pub(super) const RECORDS_PER_STEP: usize = 512;

/// Steps queued per worker before the poll thread waits for it.
pub(super) const STEPS_QUEUED: usize = 16;

/// The poll thread's end of one worker's queue, gathering records into steps.
pub(super) struct Workers<'c> {
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
