//! The drain's Kafka client: the consumer's settings, and the blocking calls it makes with
//! their timeouts and retries.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder as _, BlockingRetryable as _, ExponentialBuilder};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;

use super::config::{Bound, IngestConfig};
use super::error::IngestError;
use crate::produce::kafka_config;

pub(super) const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn kafka_err(
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

/// The sum over `landed` (partition, offset landed up to) of how far the last stable offset
/// is now past it.
pub(super) fn lag(
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
pub(super) fn fetch_watermarks(
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

pub(super) fn commit_with_retry(
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
pub(super) const KAFKA_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of a group coordinator that is starting, moving or briefly unreachable. librdkafka
/// retries some of them itself but hands others ("Not coordinator") straight back.
pub(super) fn is_transient(e: &KafkaError) -> bool {
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
pub(super) fn with_kafka_retry<T>(
    config: &IngestConfig,
    what: &str,
    retry: impl Fn(&KafkaError) -> bool,
    call: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, IngestError> {
    retry_within(KAFKA_RETRY_TIMEOUT, what, retry, call).map_err(kafka_err(config, what))
}

/// `call`, retried while `retry` accepts its error and the next pause ends within `window` of
/// the first call. The window bounds the calls too (each may wait for its own timeout), not
/// only the pauses; no pause ends past it, so a call that keeps failing fails with its own
/// error by the end of the window.
fn retry_within<T>(
    window: Duration,
    what: &str,
    retry: impl Fn(&KafkaError) -> bool,
    call: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let started = Instant::now();
    // Asked for a pause only after a failed call, so `elapsed` is read when the pause starts.
    let pauses = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
        .take_while(move |pause| started.elapsed() + *pause < window);
    call.retry(pauses)
        .sleep(std::thread::sleep)
        .when(retry)
        .notify(|e, delay| tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying"))
        .call()
}

/// The drain's consumer: partitions are assigned to it, it never joins the group, and it
/// commits only what the uploader tells it to.
pub(super) fn consumer(config: &IngestConfig) -> Result<BaseConsumer, IngestError> {
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
    client
        .create()
        .map_err(kafka_err(config, "create consumer"))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    fn not_coordinator() -> KafkaError {
        KafkaError::MetadataFetch(RDKafkaErrorCode::NotCoordinator)
    }

    #[test]
    fn a_call_that_keeps_failing_is_retried_and_fails_with_its_own_error_within_the_window() {
        let window = Duration::from_millis(1500);
        let calls = Cell::new(0);
        let started = Instant::now();
        let result: Result<(), _> = retry_within(window, "test call", is_transient, || {
            calls.set(calls.get() + 1);
            Err(not_coordinator())
        });
        let took = started.elapsed();
        assert_eq!(
            result.err().and_then(|e| e.rdkafka_error_code()),
            Some(RDKafkaErrorCode::NotCoordinator)
        );
        // Pauses of 0.2, 0.4 and 0.8 s would end at 1.4 s; a fourth (1.6 s) would pass 1.5 s.
        assert!(calls.get() >= 3, "retried {} times", calls.get());
        // A loaded machine may wake a little late; a check made only before each pause (the
        // pause then ending past the window) would make the fifth call at 3.0 s.
        let late = Duration::from_millis(300);
        assert!(
            took < window + late,
            "took {took:?}, past the {window:?} window"
        );
    }

    #[test]
    fn an_error_not_retried_fails_at_once_and_a_transient_one_is_waited_out() {
        let calls = Cell::new(0);
        let result: Result<(), _> =
            retry_within(Duration::from_secs(60), "test call", is_transient, || {
                calls.set(calls.get() + 1);
                Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::UnknownTopicOrPartition,
                ))
            });
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);

        let calls = Cell::new(0);
        let result = retry_within(Duration::from_secs(60), "test call", is_transient, || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(not_coordinator())
            } else {
                Ok(calls.get())
            }
        });
        assert_eq!(result.ok(), Some(3));
    }
}
