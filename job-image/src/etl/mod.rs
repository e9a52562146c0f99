//! `streamflow etl`: landing NDJSON → gold CSV tables with DataFusion (the seed's Module B).
//!
//! [`run`] reads each topic's landing objects for the interval once ([`read`]), flattens and
//! types them and caches the flat tables ([`steps::flatten`]), computes every gold table from
//! the cache ([`steps::GOLD_TABLES`]) and writes each as date partitions of bucketed CSV files,
//! committed atomically with a `_SUCCESS` manifest ([`write`]). docs/etl.md describes the tables.

pub mod read;
pub mod session;
pub mod steps;
pub mod write;

use std::time::Instant;

use streamflow_core::{EtlReadSummary, EtlSummary, EtlTableSummary, Interval};

use crate::events::{TRANSACTION_EVENTS, USER_EVENTS};
use crate::store::Location;
use read::ReadError;
use session::{SessionError, SessionSettings};
use steps::StepError;
use write::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Default number of bucket files per partition of a table bucketed by user.
pub const DEFAULT_BUCKETS: u32 = 4;

#[derive(Debug, Clone)]
pub struct EtlConfig {
    pub landing: Location,
    pub gold: Location,
    pub interval: Interval,
    pub session: SessionSettings,
    pub buckets: u32,
}

/// Runs the ETL for one interval: every gold table's partitions for the interval's dates are
/// replaced.
pub async fn run(config: &EtlConfig) -> Result<EtlSummary, EtlError> {
    let started = Instant::now();
    let dates = config.interval.dates();
    let ctx = session::build_session(&config.session, &[&config.landing, &config.gold])?;

    let (users, transactions) = futures::try_join!(
        read::read_topic(
            &config.landing,
            USER_EVENTS,
            &dates,
            read::user_events_schema()
        ),
        read::read_topic(
            &config.landing,
            TRANSACTION_EVENTS,
            &dates,
            read::transaction_events_schema()
        ),
    )?;
    tracing::info!(
        user_events = users.records,
        transaction_events = transactions.records,
        objects = users.objects + transactions.objects,
        "landing read"
    );
    let partitions = config.session.target_partitions;
    let mut read_summary = std::collections::BTreeMap::new();
    for (topic, data) in [(USER_EVENTS, &users), (TRANSACTION_EVENTS, &transactions)] {
        read_summary.insert(
            topic.to_owned(),
            EtlReadSummary {
                objects: data.objects,
                records: data.records,
                bytes: data.bytes,
                ..Default::default()
            },
        );
    }
    steps::register_raw(
        &ctx,
        steps::RAW_USER_EVENTS,
        users.schema,
        users.batches,
        partitions,
    )?;
    steps::register_raw(
        &ctx,
        steps::RAW_TRANSACTION_EVENTS,
        transactions.schema,
        transactions.batches,
        partitions,
    )?;

    let flat = steps::flatten(&ctx, &config.interval).await?;
    let c = flat.counts;
    for (topic, in_interval, rows) in [
        (
            USER_EVENTS,
            c.user_events_in_interval,
            c.user_events_deduplicated,
        ),
        (
            TRANSACTION_EVENTS,
            c.transaction_events_in_interval,
            c.transactions_deduplicated,
        ),
    ] {
        if let Some(s) = read_summary.get_mut(topic) {
            s.outside_interval = s.records.saturating_sub(in_interval);
            s.duplicates = in_interval.saturating_sub(rows);
            s.rows = rows;
        }
    }

    let mut summary = EtlSummary {
        stage: "etl".to_owned(),
        interval: config.interval.to_string(),
        profile: config.session.profile.name().to_owned(),
        read: read_summary,
        partitions: dates.len() as u64,
        ..Default::default()
    };
    for table in steps::GOLD_TABLES {
        let df = steps::gold_frame(&ctx, &flat, table).await?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await.map_err(|source| StepError {
            step: table.name,
            source,
        })?;
        let written = write::write_table(
            &config.gold,
            table.name,
            &schema,
            &batches,
            &dates,
            &config.interval,
            write::Bucketing {
                column: table.bucket_by,
                buckets: config.buckets,
            },
        )
        .await?;
        tracing::info!(
            table = table.name,
            rows = written.rows,
            files = written.files,
            "gold table written"
        );
        summary.rows += written.rows;
        summary.files += written.files;
        summary.bytes += written.bytes;
        summary.tables.insert(
            table.name.to_owned(),
            EtlTableSummary {
                rows: written.rows,
                files: written.files,
                bytes: written.bytes,
            },
        );
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}
