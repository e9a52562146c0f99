//! Which bucket file of a gold partition a row goes to: FNV-1a-64 of its user id, modulo the
//! bucket count (docs/etl.md, "Step 3"), a split other engines can reproduce.

use datafusion::arrow::array::{Array as _, StringArray};

/// FNV-1a, 64 bit: a hash that is stable across versions, platforms and engines (the benchmark
/// scripts reimplement it), unlike std's randomly seeded one. Used for short keys only: a byte
/// at a time, it was 3-4 % of a 10M-event run's samples when it also hashed the CSV output.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The bucket of a user id.
pub fn bucket_of(user_id: &str, buckets: u32) -> u32 {
    (fnv1a64(user_id.as_bytes()) % u64::from(buckets.max(1))) as u32
}

/// The rows of a batch by bucket, each bucket's in batch order, by their user ids (`users`, the
/// batch's bucketing column); a row without one goes to bucket 0.
pub fn rows_by_bucket(users: &StringArray, buckets: u32) -> Vec<Vec<usize>> {
    let mut indices = vec![Vec::new(); buckets.max(1) as usize];
    for row in 0..users.len() {
        let bucket = if users.is_valid(row) {
            bucket_of(users.value(row), buckets)
        } else {
            0
        };
        indices[bucket as usize].push(row);
    }
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference: the empty string and "a".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn rows_keep_their_order_within_a_bucket_and_nulls_go_to_bucket_0() {
        let users = StringArray::from(vec![Some("a"), None, Some("b"), Some("a"), Some("c")]);
        let split = rows_by_bucket(&users, 4);
        assert_eq!(split.len(), 4);
        for (bucket, rows) in split.iter().enumerate() {
            for &row in rows {
                let expected = if users.is_valid(row) {
                    bucket_of(users.value(row), 4)
                } else {
                    0
                };
                assert_eq!(expected as usize, bucket, "row {row}");
            }
            assert!(
                rows.windows(2).all(|w| w[0] < w[1]),
                "in batch order: {rows:?}"
            );
        }
        assert_eq!(split.iter().map(Vec::len).sum::<usize>(), users.len());
        assert!(split[0].contains(&1), "the null row");
    }
}
