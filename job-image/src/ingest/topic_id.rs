//! A topic's identity: the id Kafka gives every topic when it is created (KIP-516), which
//! changes when a topic is deleted and created again under the same name. The landing zone
//! keys its object names and its log of landed ranges by it, so a recreated topic, whose
//! offsets start again at 0, never takes the names of what its predecessor landed.
//!
//! rust-rdkafka does not wrap librdkafka's DescribeTopics (the only call that returns the id),
//! so it is called here directly, on the drain's own client handle.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Why a topic's id could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopicIdError {
    #[error("describing topic {topic} failed: {message}")]
    Describe { topic: String, message: String },
    #[error("no answer describing topic {topic} within {seconds}s")]
    Timeout { topic: String, seconds: u64 },
}

/// The topic id of `topic` as 32 lowercase hex digits (the UUID's 128 bits), a form that is
/// safe in any object name, asked of the broker `broker` (any broker answers; librdkafka would
/// ask the controller, which a mock cluster never names).
pub fn topic_id(
    consumer: &BaseConsumer,
    topic: &str,
    broker: i32,
    timeout: Duration,
) -> Result<String, TopicIdError> {
    let fail = |message: String| TopicIdError::Describe {
        topic: topic.to_owned(),
        message,
    };
    let name = CString::new(topic).map_err(|e| fail(e.to_string()))?;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is valid while `consumer` is borrowed. Every handle created here (queue,
    // topic collection, result event) is destroyed by its guard below, whatever happens.
    unsafe {
        let queue = Guard::new(rdsys::rd_kafka_queue_new(rk), |q| {
            rdsys::rd_kafka_queue_destroy(q)
        })
        .ok_or_else(|| fail("librdkafka gave no queue".to_owned()))?;
        let mut names = [name.as_ptr()];
        let topics = Guard::new(
            rdsys::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1),
            |t| rdsys::rd_kafka_TopicCollection_destroy(t),
        )
        .ok_or_else(|| fail("librdkafka gave no topic collection".to_owned()))?;
        let options = Guard::new(
            rdsys::rd_kafka_AdminOptions_new(
                rk,
                rdsys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            ),
            |o| rdsys::rd_kafka_AdminOptions_destroy(o),
        )
        .ok_or_else(|| fail("librdkafka gave no admin options".to_owned()))?;
        let mut errstr = [0 as std::ffi::c_char; 256];
        let set = rdsys::rd_kafka_AdminOptions_set_broker(
            options.0.as_ptr(),
            broker,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        if set != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(fail(text(errstr.as_ptr())));
        }
        rdsys::rd_kafka_DescribeTopics(rk, topics.0.as_ptr(), options.0.as_ptr(), queue.0.as_ptr());
        let wait_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let event = Guard::new(rdsys::rd_kafka_queue_poll(queue.0.as_ptr(), wait_ms), |e| {
            rdsys::rd_kafka_event_destroy(e)
        })
        .ok_or_else(|| TopicIdError::Timeout {
            topic: topic.to_owned(),
            seconds: timeout.as_secs(),
        })?;
        let event = event.0.as_ptr();
        if rdsys::rd_kafka_event_error(event)
            != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(fail(text(rdsys::rd_kafka_event_error_string(event))));
        }
        let result = rdsys::rd_kafka_event_DescribeTopics_result(event);
        if result.is_null() {
            return Err(fail("not a DescribeTopics result".to_owned()));
        }
        let mut count = 0usize;
        let descriptions = rdsys::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        if descriptions.is_null() || count == 0 {
            return Err(fail("no topic in the answer".to_owned()));
        }
        for i in 0..count {
            let description = *descriptions.add(i);
            if description.is_null() {
                continue;
            }
            let error = rdsys::rd_kafka_TopicDescription_error(description);
            if !error.is_null() && rdsys::rd_kafka_error_code(error) as i32 != 0 {
                return Err(fail(text(rdsys::rd_kafka_error_string(error))));
            }
            let uuid = rdsys::rd_kafka_TopicDescription_topic_id(description);
            if uuid.is_null() {
                continue;
            }
            let (high, low) = (
                rdsys::rd_kafka_Uuid_most_significant_bits(uuid) as u64,
                rdsys::rd_kafka_Uuid_least_significant_bits(uuid) as u64,
            );
            // A broker too old for topic ids (before Kafka 2.8) answers the zero UUID.
            if high == 0 && low == 0 {
                return Err(fail(
                    "the broker gives no topic id (Kafka 2.8 or later is needed)".to_owned(),
                ));
            }
            return Ok(format!("{high:016x}{low:016x}"));
        }
        Err(fail("no topic id in the answer".to_owned()))
    }
}

/// A C string librdkafka owns, copied; empty for null.
///
/// # Safety
/// `s` is null or a valid NUL-terminated string.
unsafe fn text(s: *const std::ffi::c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: per the function's contract.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// Destroys a librdkafka handle when dropped.
struct Guard<T>(NonNull<T>, unsafe fn(*mut T));

impl<T> Guard<T> {
    fn new(ptr: *mut T, destroy: unsafe fn(*mut T)) -> Option<Self> {
        Some(Self(NonNull::new(ptr)?, destroy))
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        // SAFETY: the handle was created by librdkafka and is destroyed only here.
        unsafe { (self.1)(self.0.as_ptr()) }
    }
}

/// A topic's name and identity (docs/ingest.md): objects and the log are named by both; and
/// the schema its records are checked against.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub id: String,
    pub kind: crate::events::EventKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_has_an_id_and_an_unknown_topic_is_an_error() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "g")
            .create()
            .unwrap();
        let id = topic_id(&consumer, "t", 1, Duration::from_secs(10)).unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert_ne!(id, "0".repeat(32));
        assert!(topic_id(&consumer, "missing", 1, Duration::from_secs(10)).is_err());
    }
}
