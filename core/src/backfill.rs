//! Backfill planning shared by the `Backfill` resource (operator) and `streamflow backfill`
//! (local mode): which intervals a range covers, in which order, and which of them to run
//! again given what happened to them before. One definition, so both behave the same.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Interval;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackfillError {
    #[error("backfill range end {to} is not after its start {from}")]
    EmptyRange { from: String, to: String },
    #[error("cannot parse step {input:?}: expected a duration such as 15m, 1h or 1d")]
    BadStep { input: String },
    #[error("step {step} must be at least one second")]
    StepTooSmall { step: String },
    #[error(
        "backfill range {from}..{to} is not a whole number of {step} steps: move `to` to a step boundary"
    )]
    RaggedRange {
        from: String,
        to: String,
        step: String,
    },
    #[error(
        "backfill range {from}..{to} in {step} steps has {count} intervals, more than the limit of {limit}"
    )]
    TooManyIntervals {
        from: String,
        to: String,
        step: String,
        count: u64,
        limit: u64,
    },
    #[error("unknown reprocess behaviour {input:?}: expected None, Failed or Completed")]
    BadReprocess { input: String },
}

/// The most intervals one backfill may cover: a year of minutes is a mistake, not a plan.
pub const MAX_INTERVALS: u64 = 100_000;

/// Parses a step such as `15m`, `1h`, `1d` (humantime syntax; `d` is 24 hours).
pub fn parse_step(input: &str) -> Result<Duration, BackfillError> {
    let step = humantime::parse_duration(input.trim()).map_err(|_| BackfillError::BadStep {
        input: input.to_owned(),
    })?;
    if step < Duration::from_secs(1) {
        return Err(BackfillError::StepTooSmall {
            step: input.to_owned(),
        });
    }
    Ok(step)
}

/// The intervals `[from + k·step, from + (k+1)·step)` covering `[from, to)`, oldest first, or
/// newest first when `backwards`. The range must be a whole number of steps, so every interval
/// has the same length and a rerun of the same range names the same intervals.
pub fn plan_intervals(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
    backwards: bool,
) -> Result<Vec<Interval>, BackfillError> {
    let step_text = humantime::format_duration(step).to_string();
    if to <= from {
        return Err(BackfillError::EmptyRange {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
        });
    }
    let step_ms = i64::try_from(step.as_millis()).map_err(|_| BackfillError::BadStep {
        input: step_text.clone(),
    })?;
    if step_ms < 1000 {
        return Err(BackfillError::StepTooSmall { step: step_text });
    }
    let span_ms = (to - from).num_milliseconds();
    if span_ms % step_ms != 0 {
        return Err(BackfillError::RaggedRange {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
            step: step_text,
        });
    }
    let count = (span_ms / step_ms) as u64;
    if count > MAX_INTERVALS {
        return Err(BackfillError::TooManyIntervals {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
            step: step_text,
            count,
            limit: MAX_INTERVALS,
        });
    }
    let step = chrono::Duration::milliseconds(step_ms);
    let mut intervals: Vec<Interval> = (0..count as i32)
        .map(|k| {
            let start = from + step * k;
            Interval {
                start,
                end: start + step,
            }
        })
        .collect();
    if backwards {
        intervals.reverse();
    }
    Ok(intervals)
}

/// Which intervals a backfill runs again: `None` skips intervals that already succeeded (a rerun
/// finishes what is left), `Failed` also reruns failed ones, `Completed` reruns everything.
/// An interval whose run is still active is never run twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
// Variant docs are `//`, not `///`: schemars would turn documented variants into a `oneOf`,
// which is noisier in a CRD than a plain string enum.
#[derive(schemars::JsonSchema)]
pub enum Reprocess {
    // Skip intervals that already succeeded (the default): a rerun finishes what is left.
    #[default]
    None,
    // Run intervals that never ran or failed; skip those that succeeded.
    Failed,
    // Run every interval again, including those that succeeded.
    Completed,
}

/// What is already known about one interval of a backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorOutcome {
    /// Never run (or its record is gone).
    Never,
    /// A run for it is still in progress.
    Active,
    Succeeded,
    Failed,
}

impl Reprocess {
    /// Whether to start a run for an interval with this history. A run still active is never
    /// duplicated, whatever the behaviour.
    pub fn should_run(self, prior: PriorOutcome) -> bool {
        match prior {
            PriorOutcome::Never => true,
            PriorOutcome::Active => false,
            PriorOutcome::Succeeded => self == Reprocess::Completed,
            PriorOutcome::Failed => matches!(self, Reprocess::Failed | Reprocess::Completed),
        }
    }
}

impl fmt::Display for Reprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reprocess::None => "None",
            Reprocess::Failed => "Failed",
            Reprocess::Completed => "Completed",
        })
    }
}

impl FromStr for Reprocess {
    type Err = BackfillError;

    /// Case-insensitive, so `--reprocess failed` works on the command line.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Reprocess::None),
            "failed" => Ok(Reprocess::Failed),
            "completed" => Ok(Reprocess::Completed),
            _ => Err(BackfillError::BadReprocess {
                input: s.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::parse_time;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn days_forward_and_backward() {
        let day = parse_step("1d").unwrap();
        let fwd = plan_intervals(t("2026-11-01"), t("2026-11-04"), day, false).unwrap();
        let names: Vec<String> = fwd.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            names,
            [
                "2026-11-01T00:00:00Z/2026-11-02T00:00:00Z",
                "2026-11-02T00:00:00Z/2026-11-03T00:00:00Z",
                "2026-11-03T00:00:00Z/2026-11-04T00:00:00Z",
            ]
        );
        let back = plan_intervals(t("2026-11-01"), t("2026-11-04"), day, true).unwrap();
        assert_eq!(back.first(), fwd.last());
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn hourly_steps_cover_the_range_without_gaps() {
        let hour = parse_step("1h").unwrap();
        let plan = plan_intervals(t("2026-11-01"), t("2026-11-02"), hour, false).unwrap();
        assert_eq!(plan.len(), 24);
        for pair in plan.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(plan[23].end, t("2026-11-02"));
    }

    #[test]
    fn refuses_ragged_empty_and_tiny() {
        let hour = parse_step("1h").unwrap();
        assert!(matches!(
            plan_intervals(t("2026-11-01"), t("2026-11-01T01:30:00Z"), hour, false),
            Err(BackfillError::RaggedRange { .. })
        ));
        assert!(matches!(
            plan_intervals(t("2026-11-02"), t("2026-11-01"), hour, false),
            Err(BackfillError::EmptyRange { .. })
        ));
        assert!(matches!(
            parse_step("500ms"),
            Err(BackfillError::StepTooSmall { .. })
        ));
        assert!(matches!(
            parse_step("daily"),
            Err(BackfillError::BadStep { .. })
        ));
        assert!(matches!(
            plan_intervals(
                t("2020-01-01"),
                t("2026-01-01"),
                parse_step("1m").unwrap(),
                false
            ),
            Err(BackfillError::TooManyIntervals { .. })
        ));
    }

    #[test]
    fn reprocess_behaviours() {
        use PriorOutcome::*;
        let table = [
            (Reprocess::None, [true, false, false, false]),
            (Reprocess::Failed, [true, false, false, true]),
            (Reprocess::Completed, [true, false, true, true]),
        ];
        for (behaviour, expected) in table {
            let got = [Never, Active, Succeeded, Failed].map(|p| behaviour.should_run(p));
            assert_eq!(got, expected, "{behaviour}");
        }
        assert_eq!("failed".parse::<Reprocess>(), Ok(Reprocess::Failed));
        assert!("sometimes".parse::<Reprocess>().is_err());
    }
}
