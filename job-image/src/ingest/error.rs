//! Why a drain failed, in words a user can act on.

use rdkafka::error::KafkaError;

use super::topic_id;
use crate::landing::LandingError;

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
