//! Upload and commit: each batch's range is recorded in the landing log (created only if
//! absent, which fences a second drain), its objects are created, and the offset after it is
//! committed to Kafka as progress, strictly in the order the batches were cut.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use bytes::Bytes;
use futures::StreamExt as _;
use object_store::PutPayload;
use rdkafka::consumer::BaseConsumer;
use rdkafka::{Offset, TopicPartitionList};
use streamflow_core::PartitionSummary;
use tokio::sync::mpsc;

use super::batch::Batch;
use super::buffers::BufferPool;
use super::config::{Bound, IngestConfig, log_scope};
use super::cut::Work;
use super::error::IngestError;
use super::kafka::{commit_with_retry, kafka_err};
use super::plan::{PartitionPlan, Progress};
use super::topic_id::Topic;
use crate::landing::{self, Claim};
use crate::store::Location;

pub(super) struct UploadOutcome {
    pub(super) files: u64,
    pub(super) skipped: u64,
    pub(super) partitions: BTreeMap<i32, PartitionSummary>,
}

/// One partition's log as the uploader extends it.
pub(super) struct Chain {
    prefix: String,
    next_seq: u64,
    /// Entries being written again, oldest first: batches with their ranges take them.
    redo: std::collections::VecDeque<Claim>,
}

/// Records each batch's range in the landing log, creates its objects, then commits the offset
/// after it to Kafka (watermark mode) as progress.
pub(super) async fn upload_and_commit(
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
pub(super) async fn create_claim(
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

pub(super) async fn commit_offset(
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
pub(super) const UPLOADS_IN_FLIGHT: usize = 4;

/// What is left of a batch once its objects are written: what to commit and count.
pub(super) struct Uploaded {
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
pub(super) async fn upload_batch(
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
pub(super) async fn put_with_retry(
    landing: &Location,
    object: &object_store::path::Path,
    payload: PutPayload,
    retry_timeout: Duration,
) -> Result<bool, IngestError> {
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times();
    let started = Instant::now();
    // Offsets are committed after this returns: the object must outlive a power cut.
    let upload = (|| landing.put_durable_new(object, payload.clone()))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| {
            !matches!(
                e,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotImplemented { .. }
            )
        })
        // No pause that would end past the window: a store that answers with errors fails
        // with its own error, not as one that did not answer.
        .adjust(|_, delay| delay.filter(|d| started.elapsed() + *d < retry_timeout))
        .notify(|e, delay| {
            tracing::warn!(object = %object, error = %e, retry_in = ?delay, "upload failed; retrying");
        });
    match tokio::time::timeout(retry_timeout, upload).await {
        Ok(Ok(created)) => Ok(created),
        Ok(Err(source)) => Err(IngestError::Store {
            object: object.to_string(),
            landing: landing.display.clone(),
            source: Box::new(source),
        }),
        Err(_) => Err(IngestError::UploadTimedOut {
            object: object.to_string(),
            landing: landing.display.clone(),
            seconds: retry_timeout.as_secs_f64(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_uploaded_batch_gives_its_buffer_back_to_the_pool() {
        use crate::ingest::batch::{Chunk, ChunkKind};
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
            compression: crate::ingest::plan::Compression::None,
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
