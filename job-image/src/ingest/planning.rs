//! Planning a topic's drain: what Kafka says about the topic at the start of a run, and each
//! partition's landing log, made into the partition's plan by [`super::plan::landing_plan`].

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::config::{Bound, IngestConfig, log_scope};
use super::error::IngestError;
use super::kafka::{KAFKA_TIMEOUT, fetch_watermarks, is_transient, kafka_err, with_kafka_retry};
use super::plan::{PartitionPlan, landing_plan, seeds_log};
use super::topic_id;
use super::upload::UPLOADS_IN_FLIGHT;
use crate::landing;

/// What Kafka says about a topic at the start of a run.
pub(super) struct KafkaView {
    pub(super) topic_id: String,
    /// Per partition, the low watermark and where the plan may end: the last stable offset
    /// (watermark mode) or the offset of the interval's end.
    pub(super) bounds: BTreeMap<i32, (i64, i64)>,
    /// Where a partition without a landing log starts: a committed offset of this topic's
    /// (watermark mode) or the offset of the interval's start.
    pub(super) seeds: BTreeMap<i32, i64>,
}

/// Reads the topic's id, watermarks, and committed offsets or interval offsets.
pub(super) fn read_kafka(
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
pub(super) async fn make_plans(
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
