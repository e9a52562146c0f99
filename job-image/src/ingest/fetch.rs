//! Records taken from the consumer's queue many at a time, through librdkafka's batch call
//! (`rd_kafka_consume_batch_queue`), which rust-rdkafka does not wrap.
//!
//! rust-rdkafka's `poll` returns one record per call, and each call goes through librdkafka's
//! event machinery: it reads the clock twice (once for the poll timeout, once for
//! `max.poll.interval.ms`) and wraps the record in an event. That was 5 % of a zstd drain's
//! CPU samples (`perf record -g`, 3.1 % in `clock_gettime` alone). The batch call reads the
//! clock once per batch and hands out librdkafka's own message structs.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::batch::RecordHeaders;

/// The consumer's queue, read in batches. Borrows the consumer: the queue and every record
/// taken from it must be gone before the consumer is.
pub struct BatchQueue<'c> {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    slots: Vec<*mut rdsys::rd_kafka_message_t>,
    _consumer: PhantomData<&'c BaseConsumer>,
}

/// What one read of the queue gave.
pub enum Polled<'c> {
    Record(KafkaRecord<'c>),
    /// The partition's end (the high watermark) was reached.
    PartitionEof(i32),
    /// The partition's next offset is gone (retention deleted it): librdkafka stopped fetching
    /// the partition (`auto.offset.reset=error`) and waits for a seek.
    OffsetOutOfRange(i32),
    /// An error librdkafka reports on the consumer queue (it retries transport errors itself).
    Error(KafkaError),
}

impl<'c> BatchQueue<'c> {
    /// The queue of `consumer`; None if librdkafka has none (not a consumer).
    pub fn new(consumer: &'c BaseConsumer, batch: usize) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` is, which outlives 'c; the
        // returned handle holds a reference of its own, released in Drop.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        Some(Self {
            queue: NonNull::new(queue)?,
            slots: vec![std::ptr::null_mut(); batch.max(1)],
            _consumer: PhantomData,
        })
    }

    /// Appends what is queued, up to the batch size, to `out`. Waits up to `wait` only when
    /// nothing is queued, and then returns as soon as one record arrives: librdkafka's call
    /// would otherwise wait out the whole timeout to fill the batch.
    pub fn poll(&mut self, wait: Duration, out: &mut Vec<Polled<'c>>) -> usize {
        let mut taken = self.take(0, self.slots.len(), out);
        if taken == 0 {
            let wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
            taken = self.take(wait_ms, 1, out);
        }
        taken
    }

    fn take(&mut self, timeout_ms: i32, max: usize, out: &mut Vec<Polled<'c>>) -> usize {
        let max = max.min(self.slots.len());
        // SAFETY: the queue is valid (held by self); librdkafka writes at most `max` message
        // pointers into `slots`, each of which we own from then on.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                self.slots.as_mut_ptr(),
                max,
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        out.reserve(n);
        for &slot in &self.slots[..n] {
            let Some(message) = NonNull::new(slot) else {
                continue;
            };
            let record = KafkaRecord {
                message,
                _consumer: PhantomData,
            };
            // SAFETY: a message from the batch call is valid until destroyed (by the record).
            let (err, partition) = unsafe {
                let m = message.as_ref();
                (m.err, m.partition)
            };
            out.push(match err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Polled::Record(record),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => Polled::PartitionEof(partition),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET => {
                    Polled::OffsetOutOfRange(partition)
                }
                err => Polled::Error(KafkaError::MessageConsumption(RDKafkaErrorCode::from(err))),
            });
        }
        n
    }
}

impl Drop for BatchQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `new`, once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// One record, still in librdkafka's fetch buffer: nothing is copied until it is read.
pub struct KafkaRecord<'c> {
    message: NonNull<rdsys::rd_kafka_message_t>,
    _consumer: PhantomData<&'c BaseConsumer>,
}

// librdkafka's messages may be read and destroyed on any thread (rust-rdkafka's own
// `BorrowedMessage` is Send for the same reason).
unsafe impl Send for KafkaRecord<'_> {}

impl KafkaRecord<'_> {
    fn message(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: valid until Drop.
        unsafe { self.message.as_ref() }
    }

    pub fn partition(&self) -> i32 {
        self.message().partition
    }

    pub fn offset(&self) -> i64 {
        self.message().offset
    }

    /// The record's Kafka timestamp in milliseconds, if it has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is valid; librdkafka only reads it and writes `kind`.
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.message.as_ptr(), &mut kind) };
        match kind {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => None,
            _ => Some(ms),
        }
    }

    pub fn key(&self) -> Option<&[u8]> {
        let m = self.message();
        bytes_at(m.key, m.key_len)
    }

    /// The value; None when the record has none (a null value).
    pub fn payload(&self) -> Option<&[u8]> {
        let m = self.message();
        bytes_at(m.payload, m.len)
    }
}

impl RecordHeaders for KafkaRecord<'_> {
    fn headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut headers: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: the message is valid; librdkafka parses its headers into a list the message
        // owns (freed with it) and points `headers` at it, or reports that there are none.
        let err = unsafe { rdsys::rd_kafka_message_headers(self.message.as_ptr(), &mut headers) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return Vec::new();
        }
        // SAFETY: `headers` is the message's valid list.
        let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
        (0..count)
            .filter_map(|index| {
                let mut name: *const std::ffi::c_char = std::ptr::null();
                let mut value: *const std::ffi::c_void = std::ptr::null();
                let mut size = 0usize;
                // SAFETY: `index` is below the count; librdkafka points `name` at a
                // NUL-terminated string and `value` at `size` bytes (null for a null value),
                // both owned by the list, which lives as long as the message.
                let err = unsafe {
                    rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
                };
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                    return None;
                }
                // SAFETY: as above.
                let name = unsafe { std::ffi::CStr::from_ptr(name) };
                let value = bytes_at(value.cast_mut(), size).map(<[u8]>::to_vec);
                Some((name.to_string_lossy().into_owned(), value))
            })
            .collect()
    }
}

fn bytes_at<'a>(ptr: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: librdkafka gives a pointer to `len` bytes that live as long as the message.
    Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
}

impl Drop for KafkaRecord<'_> {
    fn drop(&mut self) {
        // SAFETY: the message came from the batch call and is destroyed once, here.
        unsafe { rdsys::rd_kafka_message_destroy(self.message.as_ptr()) }
    }
}
