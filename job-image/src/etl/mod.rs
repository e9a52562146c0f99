//! `streamflow etl`: landing NDJSON → gold CSV tables with DataFusion (the seed's Module B).
//!
//! [`run`] streams each topic's landing objects for the interval once ([`read`]) through
//! flattening and typing into an Arrow IPC cache on the spill volume ([`steps::flatten`]),
//! computes every gold table from the cache ([`steps::GOLD_TABLES`]) and streams each, in its
//! order, into date partitions of bucketed CSV files committed atomically with a `_SUCCESS`
//! manifest ([`write`]). No table is held in memory whole: DataFusion's memory pool bounds what
//! sorts and aggregates hold, and they spill beyond it; joins hold only their small side, one
//! row per session or per user and day. docs/etl.md describes the tables.

pub mod bucket;
pub mod csv_text;
pub mod read;
pub mod session;
pub mod steps;
pub mod write;

use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use streamflow_core::{EtlSummary, EtlTableSummary, Interval};

use crate::events::{EventKind, Topics};
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
    #[error(
        "the landing zone {landing} holds no events for {interval}, and the gold tables already hold rows in {partitions} of its partitions ({example}{more}): they are kept. Check --landing; pass --allow-empty to replace them with empty partitions"
    )]
    EmptyLanding {
        landing: String,
        interval: String,
        partitions: usize,
        example: String,
        more: &'static str,
    },
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
    /// Which topic carries each schema: the landing objects read.
    pub topics: Topics,
    /// Replace gold partitions that hold rows even when the landing zone holds no events for
    /// the interval (a mistyped location or a lost landing zone looks just like that).
    pub allow_empty: bool,
}

/// What a run did: its summary, plus the gold partitions that held rows and were replaced by
/// empty ones (only ever with [`EtlConfig::allow_empty`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EtlOutcome {
    #[serde(flatten)]
    pub summary: EtlSummary,
    #[serde(skip_serializing_if = "is_zero")]
    pub emptied_partitions: usize,
    /// The first [`EMPTIED_NAMED`] of them, `table/date=YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emptied: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Emptied partitions the summary names: it must fit a Kubernetes termination message (4 KiB).
const EMPTIED_NAMED: usize = 12;

/// Runs the ETL for one interval: every gold table's partitions for the interval's dates are
/// replaced. An interval with no events in the landing zone replaces partitions that hold rows
/// only when [`EtlConfig::allow_empty`] says so.
pub async fn run(config: &EtlConfig) -> Result<EtlOutcome, EtlError> {
    let started = Instant::now();
    let dates = config.interval.dates();
    let ctx = session::build_session(&config.session, &[&config.landing, &config.gold])?;
    let cache = session::cache_dir(&config.session)?;
    let partitions = config.session.target_partitions;

    let mut landed = Vec::new();
    for (kind, raw) in [
        (EventKind::User, steps::RAW_USER_EVENTS),
        (EventKind::Transaction, steps::RAW_TRANSACTION_EVENTS),
    ] {
        let topic = config.topics.topic(kind);
        let counts = read::register_landing(
            &ctx,
            raw,
            &config.landing,
            topic,
            kind,
            &config.interval,
            partitions,
        )
        .await?;
        landed.push((topic, kind, counts));
    }

    let flat = steps::flatten(
        &ctx,
        &config.interval,
        cache.path(),
        config.session.max_duplicates_in_memory,
    )
    .await?;
    let emptied = if flat.user_events_deduplicated + flat.transactions_deduplicated == 0 {
        partitions_with_rows(&config.gold, &dates).await?
    } else {
        Vec::new()
    };
    if let Some(example) = emptied.first() {
        if !config.allow_empty {
            return Err(EtlError::EmptyLanding {
                landing: config.landing.display.clone(),
                interval: config.interval.to_string(),
                partitions: emptied.len(),
                example: example.clone(),
                more: if emptied.len() > 1 { ", ..." } else { "" },
            });
        }
        tracing::warn!(
            partitions = emptied.len(),
            example,
            "no events in the landing zone: replacing gold partitions that hold rows with empty ones (--allow-empty)"
        );
    }
    let mut read_summary = std::collections::BTreeMap::new();
    for (topic, kind, counts) in &landed {
        let rows = match kind {
            EventKind::User => flat.user_events_deduplicated,
            EventKind::Transaction => flat.transactions_deduplicated,
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
    Ok(EtlOutcome {
        summary,
        emptied_partitions: emptied.len(),
        emptied: emptied.into_iter().take(EMPTIED_NAMED).collect(),
    })
}

/// The committed gold partitions of `dates` that hold rows, as `table/date=YYYY-MM-DD`.
async fn partitions_with_rows(
    gold: &Location,
    dates: &[chrono::NaiveDate],
) -> Result<Vec<String>, EtlError> {
    let mut found = Vec::new();
    for table in steps::GOLD_TABLES {
        for date in dates {
            if write::read_manifest(gold, table.name, *date)
                .await?
                .is_some_and(|m| m.rows > 0)
            {
                found.push(format!("{}/date={date}", table.name));
            }
        }
    }
    Ok(found)
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
