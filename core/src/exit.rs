//! The `streamflow` binary's exit codes: what a failed stage says about whether running it
//! again can help. The operator's Jobs fail at once (a `podFailurePolicy` FailJob rule) on the
//! permanent codes, and the operator spends no retry on them: the same input and configuration
//! fail the same way again.

/// The stage did its work.
pub const OK: u8 = 0;
/// A failure that a retry may get past (Kafka or S3 unreachable, a timeout, a stalled
/// drain), or one the binary cannot classify: retried under the run's retry policy.
pub const TRANSIENT: u8 = 1;
/// The command line (or `--config` file) is wrong: clap's own code for usage errors.
pub const USAGE: u8 = 2;
/// The input or configuration is wrong and stays wrong: a checks file that cannot be read or
/// parsed, a location that is not one, an unknown profile, landing data that cannot be
/// decoded, a topic that does not exist, an ETL that would empty gold partitions holding rows,
/// checks whose tables the gold zone does not hold for the interval.
pub const INVALID_INPUT: u8 = 3;
/// Validation ran and error-severity checks failed: the data, not the run, is wrong.
pub const CHECKS_FAILED: u8 = 4;

/// Exit codes on which a retry fails the same way.
pub const PERMANENT: [u8; 3] = [USAGE, INVALID_INPUT, CHECKS_FAILED];

/// What a (container's) exit code says, for messages: `None` for codes the binary does not
/// give (a signal's 128+n, say).
pub fn describe(code: i32) -> Option<&'static str> {
    Some(match u8::try_from(code).ok()? {
        OK => "succeeded",
        TRANSIENT => "transient or unclassified failure",
        USAGE => "usage error",
        INVALID_INPUT => "invalid input or configuration",
        CHECKS_FAILED => "validation checks failed",
        _ => return None,
    })
}

/// Whether a failed stage with this exit code would fail the same way again.
pub fn is_permanent(code: i32) -> bool {
    u8::try_from(code).is_ok_and(|c| PERMANENT.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_permanent_codes_are_permanent() {
        for code in [2, 3, 4] {
            assert!(is_permanent(code), "{code}");
        }
        for code in [0, 1, 5, 137, -1, 256 + 3] {
            assert!(!is_permanent(code), "{code}");
        }
        assert_eq!(describe(137), None);
    }
}
