//! `streamflow ingest`: the bounded drain from Kafka into the landing zone.
//!
//! Per topic, one consumer ([`kafka`]) polled on a dedicated thread ([`poll`]) reads each
//! partition's planned offsets ([`planning`], [`plan`]); worker threads check the records and
//! cut them into batches ([`cut`], [`batch`]); an uploader task ([`upload`]) records each
//! batch's range in the landing zone's log ([`crate::landing`]), created only if absent, then
//! creates its objects, then commits the offset after it to Kafka as progress. The log, not
//! Kafka, says where the next run starts, so the landing zone holds each record once even when
//! Kafka forgets its offsets, a second drain runs, or the topic is recreated.

pub mod batch;
pub mod buffers;
mod config;
mod cut;
mod error;
pub mod fetch;
mod kafka;
pub mod plan;
mod planning;
mod poll;
pub mod topic_id;
mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::BaseConsumer;
use streamflow_core::{IngestSummary, PartitionSummary};
use tokio::sync::mpsc;

use crate::events::EventKind;
use buffers::BufferPool;
pub use config::{Bound, IngestConfig, IngestProgress, StopFlag};
use cut::Work;
pub use error::IngestError;
use topic_id::Topic;

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
    let drains = config.topics.iter().map(|(topic, kind)| {
        drain_topic(
            config.clone(),
            topic.clone(),
            *kind,
            stop.clone(),
            buffers.clone(),
        )
    });
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

async fn drain_topic(
    config: Arc<IngestConfig>,
    topic: String,
    kind: EventKind,
    stop: StopFlag,
    buffers: BufferPool,
) -> Result<TopicOutcome, IngestError> {
    let consumer: Arc<BaseConsumer> = Arc::new(kafka::consumer(&config)?);

    let view = {
        let (config, consumer, topic) = (config.clone(), consumer.clone(), topic.clone());
        tokio::task::spawn_blocking(move || planning::read_kafka(&config, &consumer, &topic))
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))??
    };
    let plans = planning::make_plans(&config, &topic, &view).await?;
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
    let uploader = tokio::spawn(upload::upload_and_commit(
        config.clone(),
        consumer.clone(),
        Topic {
            name: topic.clone(),
            id: view.topic_id.clone(),
            kind,
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
            kind,
        };
        tokio::task::spawn_blocking(move || {
            poll::poll_partitions(&config, &consumer, &topic, &plans, &tx, &stop, &buffers)
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
                tokio::task::spawn_blocking(move || {
                    kafka::lag(&config, &consumer, &topic, &landed)
                })
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
