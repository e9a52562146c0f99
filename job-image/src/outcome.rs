//! The record of each interval's last run, kept in the gold store next to the tables it
//! describes: `<gold>/_intervals/<start>_<end>.json`. `streamflow run` writes it when an interval
//! ends (succeeded or failed); `streamflow backfill` reads it to skip what is done. It goes
//! through the same `object_store` code as the tables, so an `s3://` gold store keeps it too.

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use streamflow_core::{Interval, PriorOutcome};

use crate::store::Location;

/// Folder of the records under the gold location; `_` keeps it apart from table names.
pub const INTERVALS_DIR: &str = "_intervals";

#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("cannot {action} the interval record {object} in {store}: {source}")]
    Store {
        action: &'static str,
        object: String,
        store: String,
        source: Box<object_store::Error>,
    },
    #[error(
        "the interval record {object} is not valid JSON ({problem}); delete it to run that interval again"
    )]
    Bad { object: String, problem: String },
}

/// How an interval's last run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// The record of one interval's last run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalRecord {
    pub interval: String,
    pub outcome: Outcome,
    pub finished_at: DateTime<Utc>,
    /// The stage that failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl IntervalRecord {
    pub fn prior(&self) -> PriorOutcome {
        match self.outcome {
            Outcome::Succeeded => PriorOutcome::Succeeded,
            Outcome::Failed => PriorOutcome::Failed,
        }
    }
}

/// Where the record of `interval` lives: its bounds in basic ISO 8601 (no `:`), so the name is
/// a valid file name everywhere and sorts by time.
pub fn record_path(gold: &Location, interval: &Interval) -> Path {
    let stamp = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    gold.child(&format!(
        "{INTERVALS_DIR}/{}_{}.json",
        stamp(interval.start),
        stamp(interval.end)
    ))
}

/// The record of the interval's last run, or None when it never ran (or its record was removed).
pub async fn read_record(
    gold: &Location,
    interval: &Interval,
) -> Result<Option<IntervalRecord>, OutcomeError> {
    let path = record_path(gold, interval);
    let err = |action: &'static str| {
        let (object, store) = (path.to_string(), gold.display.clone());
        move |source| OutcomeError::Store {
            action,
            object,
            store,
            source: Box::new(source),
        }
    };
    let bytes = match gold.store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(err("read"))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(err("read")(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| OutcomeError::Bad {
            object: path.to_string(),
            problem: e.to_string(),
        })
}

/// Writes (replaces) the record of an interval: one PUT, atomic on S3 and on a local directory.
pub async fn write_record(
    gold: &Location,
    interval: &Interval,
    record: &IntervalRecord,
) -> Result<(), OutcomeError> {
    let path = record_path(gold, interval);
    let json = serde_json::to_vec_pretty(record).map_err(|e| OutcomeError::Bad {
        object: path.to_string(),
        problem: e.to_string(),
    })?;
    gold.store
        .put(&path, json.into())
        .await
        .map_err(|source| OutcomeError::Store {
            action: "write",
            object: path.to_string(),
            store: gold.display.clone(),
            source: Box::new(source),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_round_trips_and_a_missing_one_is_never_run() {
        let dir = tempfile::tempdir().unwrap();
        let gold = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let day: Interval = "2025-01-10".parse().unwrap();
        assert_eq!(read_record(&gold, &day).await.unwrap(), None);
        let record = IntervalRecord {
            interval: day.to_string(),
            outcome: Outcome::Failed,
            finished_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            failed_stage: Some("validate".to_owned()),
            error: Some("1 error-severity check failed".to_owned()),
        };
        write_record(&gold, &day, &record).await.unwrap();
        let back = read_record(&gold, &day).await.unwrap().unwrap();
        assert_eq!(back, record);
        assert_eq!(back.prior(), PriorOutcome::Failed);
        assert!(
            dir.path()
                .join("_intervals/20250110T000000Z_20250111T000000Z.json")
                .is_file()
        );
    }
}
