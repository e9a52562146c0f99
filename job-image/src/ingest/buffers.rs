//! Batch buffers handed back after their upload, so the next batch writes into memory that is
//! already mapped.
//!
//! A landing batch is written into one buffer of about `--max-file-bytes`. Freed, such a
//! buffer goes back to the operating system, and the next one is page-faulted in afresh,
//! zeroed by the kernel page by page: that was an eighth of a drain's CPU (perf, 5M records).
//! The buffers in use at once are bounded by the pipeline (one open batch per partition, a few
//! queued and uploading), so keeping the returned ones costs no memory beyond that peak.

use std::sync::{Arc, Mutex};

/// Buffers smaller than this are left to the allocator, which reuses small blocks itself.
const POOLED_MIN_CAPACITY: usize = 1 << 20;

/// A shared free list of large, empty buffers.
#[derive(Debug, Clone, Default)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl BufferPool {
    /// An empty buffer with room for at least `capacity` bytes: a returned one when there is
    /// one large enough, else a new one. Returned buffers too small for this request stay for
    /// a later one: dropping them made landing buffers and compression outputs of different
    /// sizes replace each other, each new one faulted in afresh.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = {
            let mut free = self.lock();
            free.iter()
                .rposition(|buffer| buffer.capacity() >= capacity)
                .map(|i| free.swap_remove(i))
        };
        reused.unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Hands a buffer back for reuse; its contents are discarded.
    pub fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() >= POOLED_MIN_CAPACITY {
            buffer.clear();
            self.lock().push(buffer);
        }
    }

    /// How many buffers wait for reuse.
    #[cfg(test)]
    pub fn pooled(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock cannot leave the list inconsistent (push and pop are
        // whole), so a poisoned lock is still good to use.
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_empty() {
        let pool = BufferPool::default();
        let mut buffer = pool.take(2 << 20);
        buffer.extend_from_slice(b"records");
        let address = buffer.as_ptr();
        pool.give(buffer);
        let again = pool.take(2 << 20);
        assert_eq!(again.as_ptr(), address, "the same allocation");
        assert!(again.is_empty());
    }

    #[test]
    fn small_or_too_small_buffers_are_not_reused() {
        let pool = BufferPool::default();
        pool.give(Vec::with_capacity(1024));
        assert_eq!(
            pool.lock().len(),
            0,
            "small buffers are left to the allocator"
        );
        pool.give(Vec::with_capacity(2 << 20));
        let bigger = pool.take(4 << 20);
        assert!(bigger.capacity() >= 4 << 20);
    }

    #[test]
    fn a_buffer_too_small_for_one_request_stays_for_the_next() {
        // Landing buffers and compression outputs of two sizes share the pool.
        let pool = BufferPool::default();
        let small = pool.take(2 << 20);
        let small_address = small.as_ptr();
        let large = pool.take(4 << 20);
        let large_address = large.as_ptr();
        pool.give(large);
        pool.give(small);
        let again_large = pool.take(4 << 20);
        assert_eq!(
            again_large.as_ptr(),
            large_address,
            "found behind the small one"
        );
        let again_small = pool.take(2 << 20);
        assert_eq!(again_small.as_ptr(), small_address, "kept, not dropped");
        assert_eq!(pool.pooled(), 0);
    }
}
