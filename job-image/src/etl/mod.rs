//! `streamflow etl`: landing NDJSON → gold CSV tables with DataFusion (the seed's Module B).
//!
//! [`run`] streams each topic's landing objects for the interval once ([`read`]) through
//! flattening and typing into an Arrow IPC cache on the spill volume ([`steps::flatten`]),
//! computes every gold table from the cache ([`steps::GOLD_TABLES`]) and streams each, in its
//! order, into date partitions of bucketed CSV files committed atomically with a `_SUCCESS`
//! manifest ([`write`]). No table is held in memory whole: DataFusion's memory pool bounds what
//! sorts and aggregates hold, and they spill beyond it; joins hold only their small side, one
//! row per session or per user and day. docs/etl.md describes the tables.

pub mod csv_text;
pub mod read;
pub mod session;
pub mod steps;
pub mod write;

use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use streamflow_core::{EtlSummary, EtlTableSummary, Interval};

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
    let cache = session::cache_dir(&config.session)?;
    let partitions = config.session.target_partitions;

    let mut landed = Vec::new();
    for (topic, raw) in [
        (USER_EVENTS, steps::RAW_USER_EVENTS),
        (TRANSACTION_EVENTS, steps::RAW_TRANSACTION_EVENTS),
    ] {
        let counts = read::register_landing(
            &ctx,
            raw,
            &config.landing,
            topic,
            &config.interval,
            partitions,
        )
        .await?;
        landed.push((topic, counts));
    }

    let flat = steps::flatten(
        &ctx,
        &config.interval,
        cache.path(),
        config.session.max_duplicates_in_memory,
    )
    .await?;
    let mut read_summary = std::collections::BTreeMap::new();
    for (topic, counts) in &landed {
        let rows = if *topic == USER_EVENTS {
            flat.user_events_deduplicated
        } else {
            flat.transactions_deduplicated
        };
        read_summary.insert((*topic).to_owned(), counts.summary(rows));
    }
    tracing::info!(
        user_events = flat.user_events_deduplicated,
        transactions = flat.transactions_deduplicated,
        "landing read and flattened"
    );

    let mut summary = EtlSummary {
        stage: "etl".to_owned(),
        interval: config.interval.to_string(),
        profile: config.session.profile.name().to_owned(),
        read: read_summary,
        partitions: dates.len() as u64,
        ..Default::default()
    };
    let written: Vec<(&str, write::TableWrite)> = futures::stream::iter(steps::GOLD_TABLES)
        .map(|table| async {
            let written = write_gold_table(&ctx, &flat, table, config, &dates).await?;
            Ok::<_, EtlError>((table.name, written))
        })
        // Unordered: a table that finishes early makes room for the next at once, where
        // `buffered` would hold its slot until every table before it had finished.
        .buffer_unordered(session::GOLD_TABLES_AT_ONCE)
        .try_collect()
        .await?;
    for (name, written) in written {
        summary.rows += written.rows;
        summary.files += written.files;
        summary.bytes += written.bytes;
        summary.tables.insert(
            name.to_owned(),
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

/// Computes one gold table and streams it, in its order ([`steps::Order`]), into its partitions.
async fn write_gold_table(
    ctx: &datafusion::prelude::SessionContext,
    flat: &steps::Flattened,
    table: &steps::GoldTable,
    config: &EtlConfig,
    dates: &[chrono::NaiveDate],
) -> Result<write::TableWrite, EtlError> {
    let started = Instant::now();
    let failed = |source| StepError {
        step: table.name,
        source,
    };
    let df = steps::gold_frame(ctx, flat, table).await?;
    let mut rows = df.execute_stream().await.map_err(failed)?;
    let mut writer = write::TableWriter::new(
        &config.gold,
        table.name,
        rows.schema(),
        dates,
        &config.interval,
        write::Bucketing {
            column: table.bucket_by,
            buckets: config.buckets,
        },
    )?;
    while let Some(batch) = rows.try_next().await.map_err(failed)? {
        writer.write(&batch).await?;
    }
    let written = writer.finish().await?;
    tracing::info!(
        table = table.name,
        rows = written.rows,
        files = written.files,
        seconds = started.elapsed().as_secs_f64(),
        "gold table written"
    );
    Ok(written)
}
