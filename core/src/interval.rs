//! A data interval `[start, end)` in UTC: the unit of work of a pipeline run.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntervalError {
    #[error("interval end {end} is not after its start {start}")]
    Empty { start: String, end: String },
    #[error(
        "cannot parse {input:?} as a time: expected RFC 3339 (2026-11-25T10:00:00Z) or a date (2026-11-25)"
    )]
    BadTime { input: String },
    #[error("cannot parse {input:?} as an interval: expected START/END")]
    BadInterval { input: String },
}

/// Half-open time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, IntervalError> {
        if end <= start {
            return Err(IntervalError::Empty {
                start: start.to_rfc3339(),
                end: end.to_rfc3339(),
            });
        }
        Ok(Self { start, end })
    }

    /// The whole UTC day `date`.
    pub fn day(date: NaiveDate) -> Self {
        let start = date.and_time(chrono::NaiveTime::MIN).and_utc();
        Self {
            start,
            end: start + chrono::Duration::days(1),
        }
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    pub fn contains_millis(&self, millis: i64) -> bool {
        self.start.timestamp_millis() <= millis && millis < self.end.timestamp_millis()
    }

    /// The UTC dates this interval touches, in order (the landing and gold partitions to read).
    pub fn dates(&self) -> Vec<NaiveDate> {
        let last = (self.end - chrono::Duration::nanoseconds(1)).date_naive();
        let mut dates = Vec::new();
        let mut d = self.start.date_naive();
        while d <= last {
            dates.push(d);
            match d.succ_opt() {
                Some(next) => d = next,
                None => break,
            }
        }
        dates
    }
}

/// Parses an RFC 3339 time, or a bare date meaning its midnight UTC.
pub fn parse_time(input: &str) -> Result<DateTime<Utc>, IntervalError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(input) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(input, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(IntervalError::BadTime {
        input: input.to_owned(),
    })
}

impl FromStr for Interval {
    type Err = IntervalError;

    /// `START/END` (ISO 8601 interval notation) or a single date for that whole day.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((a, b)) => Interval::new(parse_time(a)?, parse_time(b)?),
            None => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(d) => Ok(Interval::day(d)),
                Err(_) => Err(IntervalError::BadInterval {
                    input: s.to_owned(),
                }),
            },
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.start
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            self.end
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn parses_range_and_single_day() {
        let i: Interval = "2026-11-25T10:00:00Z/2026-11-25T11:00:00Z".parse().unwrap();
        assert_eq!(i.start, t("2026-11-25T10:00:00Z"));
        assert_eq!(i.end, t("2026-11-25T11:00:00Z"));
        let d: Interval = "2026-11-25".parse().unwrap();
        assert_eq!(d.end - d.start, chrono::Duration::days(1));
        assert_eq!(d.to_string(), "2026-11-25T00:00:00Z/2026-11-26T00:00:00Z");
    }

    #[test]
    fn refuses_empty_and_reversed() {
        assert!(matches!(
            "2026-11-25T11:00:00Z/2026-11-25T11:00:00Z".parse::<Interval>(),
            Err(IntervalError::Empty { .. })
        ));
        assert!(matches!(
            "2026-11-26/2026-11-25".parse::<Interval>(),
            Err(IntervalError::Empty { .. })
        ));
        assert!(matches!(
            "yesterday".parse::<Interval>(),
            Err(IntervalError::BadInterval { .. })
        ));
    }

    #[test]
    fn half_open_bounds() {
        let i: Interval = "2026-11-25T10:00:00Z/2026-11-25T11:00:00Z".parse().unwrap();
        assert!(i.contains(t("2026-11-25T10:00:00Z")));
        assert!(!i.contains(t("2026-11-25T11:00:00Z")));
        assert!(i.contains_millis(t("2026-11-25T10:59:59.999Z").timestamp_millis()));
        assert!(!i.contains_millis(t("2026-11-25T09:59:59.999Z").timestamp_millis()));
    }

    #[test]
    fn dates_touched_exclude_the_end_midnight() {
        let i: Interval = "2026-11-24T23:00:00Z/2026-11-26T00:00:00Z".parse().unwrap();
        let dates: Vec<String> = i.dates().iter().map(|d| d.to_string()).collect();
        assert_eq!(dates, ["2026-11-24", "2026-11-25"]);
        let one: Interval = "2026-11-25T10:00:00+02:00/2026-11-25T11:00:00+02:00"
            .parse()
            .unwrap();
        assert_eq!(one.dates().len(), 1);
        assert_eq!(one.start, t("2026-11-25T08:00:00Z"));
    }
}
