//! The ETL's steps, each a named SQL query or DataFrame function in this one file.
//! docs/etl.md describes every table these produce: its grain and its columns.
//!
//! Step 1, flatten and type: the raw landing rows (streamed with an explicit schema by
//! [`super::read`]) become three flat tables, computed once and cached as Arrow IPC files on the
//! spill volume because every gold table reads them: `user_activity`, `transactions` and
//! `transaction_items`. Three intermediate aggregates used by several gold tables (`sessions`,
//! `user_day`, `buyer_day`) are cached the same way. Nothing is held in memory whole: inputs
//! larger than the memory limit stream through, and sorts and aggregates spill.
//!
//! Step 2, gold tables: [`GOLD_TABLES`], each with its grain, its row order (total, so a rerun
//! writes identical files: [`Order`]) and the column its rows are bucketed by.
//!
//! The flat tables keep [`SOURCE_ORDER`], each landing row's place in the landing zone: their
//! cache files hold it ascending, so they are written in landing order by merging the files,
//! not by sorting them.
//!
//! Every aggregate and window is partitioned by `event_date`, so a gold partition (one date)
//! depends only on that date's records: running the ETL for one day or for a week containing it
//! writes the same partition.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::options::{ArrowReadOptions, ReadOptions as _};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, min, sum};
use datafusion::functions_nested::expr_fn::{array_distinct, array_transform};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::SortExpr;
use datafusion::logical_expr::expr_fn::{lambda, lambda_var};
use datafusion::logical_expr::{ExprFunctionExt as _, JoinType};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::execute_stream_partitioned;
use datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};
use futures::TryStreamExt as _;
use streamflow_core::Interval;

use super::read::SOURCE_ORDER;

/// A failed step, named. A malformed landing object is reported as itself rather than wrapped
/// in the query engine's words.
#[derive(Debug, thiserror::Error)]
#[error("ETL step {step} failed: {}", describe(.source))]
pub struct StepError {
    pub step: &'static str,
    pub source: DataFusionError,
}

fn describe(error: &DataFusionError) -> String {
    super::read::read_error_in(error).map_or_else(|| error.to_string(), ToString::to_string)
}

fn step(step: &'static str) -> impl FnOnce(DataFusionError) -> StepError {
    move |source| StepError { step, source }
}

pub const RAW_USER_EVENTS: &str = "raw_user_events";
pub const RAW_TRANSACTION_EVENTS: &str = "raw_transaction_events";

/// Step 1a. User events: nested `page`, `device`, `geo` and `properties` become columns and rows
/// outside the interval (`$1`, `$2`) are excluded. Every copy of an event is kept here, with its
/// [`SOURCE_ORDER`]; [`deduplicate`] removes the later copies.
pub const FLATTEN_USER_EVENTS: &str = "
SELECT event_id, event_type, event_time, CAST(event_time AS DATE) AS event_date, user_id, session_id,
       page['url'] AS page_url, page['referrer'] AS page_referrer, page['title'] AS page_title,
       device['type'] AS device_type, device['os'] AS device_os, device['browser'] AS device_browser,
       geo['country'] AS geo_country, geo['city'] AS geo_city, geo['lat'] AS geo_lat, geo['lon'] AS geo_lon,
       properties['query'] AS search_query, properties['product_id'] AS product_id,
       properties['element'] AS click_element, source_order
FROM raw_user_events
WHERE event_time >= $1 AND event_time < $2";

/// Step 1b. Transactions, one row per copy: `payment` and `merchant` become columns; `items` is
/// kept here only to be exploded by [`EXPLODE_ITEMS`] and is not written.
pub const FLATTEN_TRANSACTIONS: &str = "
SELECT event_id, transaction_id, event_time, CAST(event_time AS DATE) AS event_date, user_id, session_id,
       amount, currency, status,
       payment['method'] AS payment_method, payment['card_brand'] AS card_brand,
       payment['card_last4'] AS card_last4,
       merchant['merchant_id'] AS merchant_id, merchant['name'] AS merchant_name,
       merchant['category'] AS merchant_category, merchant['country'] AS merchant_country,
       CAST(array_length(items) AS INT) AS item_count, items, source_order
FROM raw_transaction_events
WHERE event_time >= $1 AND event_time < $2";

/// Step 1c. `items[]` exploded: one row per item line of a transaction, in array order.
pub const EXPLODE_ITEMS: &str = "
SELECT event_date, transaction_id, event_time, user_id, currency, status,
       item['sku'] AS sku, item['name'] AS item_name, item['category'] AS item_category,
       item['quantity'] AS quantity, item['unit_price'] AS unit_price, source_order
FROM (SELECT event_date, transaction_id, event_time, user_id, currency, status, unnest(items) AS item,
             source_order
      FROM transactions_nested)";

/// Intermediate: one row per (date, session, user) of user activity.
pub const SESSIONS: &str = "
SELECT event_date, session_id, user_id,
       MIN(event_time) AS session_start, MAX(event_time) AS session_end, COUNT(*) AS session_events,
       SUM(CASE WHEN event_type = 'page_view' THEN 1 ELSE 0 END) AS page_views,
       first_value(device_type ORDER BY event_time, event_id) AS device_type,
       first_value(geo_country ORDER BY event_time, event_id) AS geo_country
FROM user_activity
GROUP BY event_date, session_id, user_id";

/// Intermediate: one row per (date, user) with any activity, summed up from their sessions: a
/// user's sessions are the rows of `sessions`, so `COUNT(session_id)` is the distinct count
/// without COUNT(DISTINCT), whose per-user sets of session ids showed in a 10M-event profile.
pub const USER_DAY: &str = "
SELECT event_date, user_id, SUM(session_events) AS events, COUNT(session_id) AS sessions,
       SUM(page_views) AS page_views, MAX(session_end) AS last_event_time
FROM sessions
GROUP BY event_date, user_id";

/// Intermediate: one row per (date, user) with any transaction; spend counts completed ones.
pub const BUYER_DAY: &str = "
SELECT event_date, user_id, COUNT(*) AS transactions,
       SUM(CASE WHEN status = 'completed' THEN amount END) AS spend
FROM transactions
GROUP BY event_date, user_id";

/// Inner join: each transaction with the context of its session that day. Transactions
/// without a session, or whose session has no activity that day, are in `orphan_transactions`.
/// `sessions` comes first: a hash join holds its first side in memory.
pub const TRANSACTIONS_ENRICHED: &str = "
SELECT t.event_date, t.transaction_id, t.event_time, t.user_id, t.session_id, t.amount, t.currency,
       t.status, t.payment_method, t.merchant_id,
       s.session_start, s.session_events, s.device_type AS session_device_type,
       s.geo_country AS session_country
FROM sessions s
JOIN transactions t ON t.session_id = s.session_id AND t.user_id = s.user_id AND t.event_date = s.event_date";

/// Anti-join: transactions with no user activity in their session that day. The anti join
/// keeps a transaction whose `session_id` is null, as NOT EXISTS would (`NOT IN` would drop
/// it: NULL NOT IN (…) is not true). Written as `sessions RIGHT ANTI JOIN transactions`
/// so the hash join's in-memory side is `sessions`, one row per session, not the
/// transactions.
pub const ORPHAN_TRANSACTIONS: &str = "
SELECT t.event_date, t.transaction_id, t.event_time, t.user_id, t.session_id, t.amount, t.currency,
       t.status,
       CASE WHEN t.session_id IS NULL THEN 'no_session' ELSE 'unknown_session' END AS reason
FROM sessions s
RIGHT ANTI JOIN transactions t
  ON s.session_id = t.session_id AND s.user_id = t.user_id AND s.event_date = t.event_date";

/// Left join, aggregation and ranking: every active user of a day with their spend (0 when
/// they bought nothing), ranked by spend with RANK (gaps after ties) and DENSE_RANK (no gaps).
pub const USER_DAILY_SPEND: &str = "
SELECT a.event_date, a.user_id, a.events, a.sessions, a.page_views,
       COALESCE(b.transactions, 0) AS transactions,
       CAST(COALESCE(b.spend, 0) AS DECIMAL(28, 2)) AS spend,
       RANK() OVER (PARTITION BY a.event_date ORDER BY COALESCE(b.spend, 0) DESC) AS spend_rank,
       DENSE_RANK() OVER (PARTITION BY a.event_date ORDER BY COALESCE(b.spend, 0) DESC) AS spend_dense_rank
FROM user_day a
LEFT JOIN buyer_day b ON a.user_id = b.user_id AND a.event_date = b.event_date";

/// Anti-join: active users who bought nothing that day (no transaction of any status).
/// `buyer_day` has a row for each (date, user) with any transaction, so the anti-join is of one
/// row per user and day on both sides instead of every transaction (at 10M events the
/// sort-merge join with `transactions` took 4-10 s for 106 results).
pub const ACTIVE_NON_BUYERS: &str = "
SELECT a.event_date, a.user_id, a.events, a.last_event_time
FROM user_day a
WHERE NOT EXISTS (
    SELECT 1 FROM buyer_day b WHERE b.user_id = a.user_id AND b.event_date = a.event_date)";

/// Running total and moving average per user in time order over completed transactions: the
/// cumulative spend that day, and the average of the last three transactions (ROWS frame: the
/// current one and up to two before it; the first has only itself). `transaction_id` breaks
/// ties in time so the order, and so the totals, are deterministic.
pub const USER_RUNNING_SPEND: &str = "
SELECT event_date, user_id, transaction_id, event_time, amount,
       SUM(amount) OVER (PARTITION BY event_date, user_id ORDER BY event_time, transaction_id
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_spend,
       AVG(amount) OVER (PARTITION BY event_date, user_id ORDER BY event_time, transaction_id
                         ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS moving_avg_3
FROM transactions
WHERE status = 'completed'";

/// Aggregation and a moving average over hours: completed revenue per (date, currency, hour),
/// and its average over the hours with sales in the last three clock hours (RANGE frame over
/// the hour number: hours 10 to 12 for hour 12, whether or not hour 11 had sales).
pub const HOURLY_REVENUE: &str = "
SELECT event_date, currency, hour, transactions, revenue,
       AVG(revenue) OVER (PARTITION BY event_date, currency ORDER BY hour
                          RANGE BETWEEN 2 PRECEDING AND CURRENT ROW) AS revenue_avg_3h
FROM (
    SELECT event_date, currency, CAST(date_part('hour', event_time) AS INT) AS hour,
           COUNT(*) AS transactions, SUM(amount) AS revenue
    FROM transactions
    WHERE status = 'completed'
    GROUP BY event_date, currency, CAST(date_part('hour', event_time) AS INT)
)";

/// Set operations on the users of the two streams per day. The distinct sets use UNION,
/// INTERSECT and EXCEPT on the users with activity (`user_day`) and with transactions
/// (`buyer_day`). The multiset ones, INTERSECT ALL and EXCEPT ALL of login users and buying
/// users (one copy per login or transaction), are computed from each user's counts: with m
/// logins and n transactions, INTERSECT ALL keeps min(m, n) copies and EXCEPT ALL m - n when
/// that is positive. DataFusion 55 plans INTERSECT ALL / EXCEPT ALL as plain semi / anti joins
/// (upstream #12955, #12956), which would give m and 0 whenever n > 0. The counts are
/// group-bys of one row per user and day; numbering every copy instead (ROW_NUMBER, then the
/// distinct operations on (user, copy)) sorts every transaction: 26 s of a 202 s run at 10M
/// events.
pub const USER_SETS: &str = "
WITH logins AS (SELECT event_date, user_id, COUNT(*) AS logins
                FROM user_activity WHERE event_type = 'login'
                GROUP BY event_date, user_id)
SELECT event_date, 'active_or_buying' AS set_name, user_id, CAST(1 AS BIGINT) AS copies
FROM (SELECT event_date, user_id FROM user_day UNION SELECT event_date, user_id FROM buyer_day)
UNION ALL
SELECT event_date, 'active_and_buying', user_id, CAST(1 AS BIGINT)
FROM (SELECT event_date, user_id FROM user_day INTERSECT SELECT event_date, user_id FROM buyer_day)
UNION ALL
SELECT event_date, 'active_not_buying', user_id, CAST(1 AS BIGINT)
FROM (SELECT event_date, user_id FROM user_day EXCEPT SELECT event_date, user_id FROM buyer_day)
UNION ALL
SELECT event_date, 'buying_not_active', user_id, CAST(1 AS BIGINT)
FROM (SELECT event_date, user_id FROM buyer_day EXCEPT SELECT event_date, user_id FROM user_day)
UNION ALL
SELECT l.event_date, 'logins_intersect_all_purchases', l.user_id, LEAST(l.logins, b.transactions)
FROM logins l
JOIN buyer_day b ON l.event_date = b.event_date AND l.user_id = b.user_id
UNION ALL
SELECT l.event_date, 'logins_except_all_purchases', l.user_id, l.logins - COALESCE(b.transactions, 0)
FROM logins l
LEFT JOIN buyer_day b ON l.event_date = b.event_date AND l.user_id = b.user_id
WHERE l.logins > COALESCE(b.transactions, 0)";

/// Dynamic column manipulation with the DataFrame API, then aggregation: completed item lines
/// get a computed `line_total` (add), `item_category` becomes `category` (rename), `quantity`
/// is widened to BIGINT (cast) and the columns the aggregate does not need are dropped (drop);
/// then units, revenue and lines per (date, category, currency), joined with the number of
/// completed transactions with a line in the category (a transaction is one deduplicated
/// transaction event, as in every table). Those are counted from each transaction's own items:
/// one row per distinct category among them (`array_transform` picks the categories,
/// `array_distinct` keeps one of each, then unnested), counted per (date, category, currency).
/// Distinct (date, category, currency, transaction) rows of the lines instead made a group per
/// pair, about eight million at 10M events, which spilled and took most of the table's 20 s;
/// `COUNT(DISTINCT)` would hold every transaction id unspilled.
pub fn category_sales(flat: &Flattened) -> Result<DataFrame, DataFusionError> {
    const KEYS: [&str; 3] = ["event_date", "category", "currency"];
    let keys = || KEYS.map(col).to_vec();
    let lines = flat
        .transaction_items
        .clone()
        .filter(col("status").eq(lit("completed")))?
        .with_column("line_total", col("quantity") * col("unit_price"))?
        .with_column_renamed("item_category", "category")?
        .with_column("quantity", cast(col("quantity"), DataType::Int64))?
        .drop_columns(&[
            "sku",
            "item_name",
            "unit_price",
            "user_id",
            "status",
            "event_time",
            "transaction_id",
        ])?;
    let totals = lines.aggregate(
        keys(),
        vec![
            sum(col("quantity")).alias("units"),
            sum(col("line_total")).alias("revenue"),
            count(lit(1)).alias("lines"),
        ],
    )?;
    let completed = flat
        .transactions_nested
        .clone()
        .filter(col("status").eq(lit("completed")))?;
    let item_category = lambda(["item"], get_field(lambda_var("item"), "category"));
    let categories = array_distinct(array_transform(col("items"), item_category))
        .resolve_lambda_variables(completed.schema())?
        .data
        .alias("category");
    let transactions = completed
        .select(vec![col("event_date"), col("currency"), categories])?
        .unnest_columns(&["category"])?
        .aggregate(keys(), vec![count(lit(1)).alias("transactions")])?;
    totals
        .alias("sales")?
        .join(
            transactions.alias("bought")?,
            JoinType::Inner,
            &KEYS,
            &KEYS,
            None,
        )?
        .select(vec![
            col("sales.event_date"),
            col("sales.category"),
            col("sales.currency"),
            col("units"),
            col("revenue"),
            col("lines"),
            col("transactions"),
        ])
}

/// How a gold table is computed.
#[derive(Clone, Copy)]
pub enum Query {
    Sql(&'static str),
    Frame(fn(&Flattened) -> Result<DataFrame, DataFusionError>),
    /// One of the flattened tables, written as it is.
    Flattened(fn(&Flattened) -> DataFrame),
}

/// The order a gold table's rows are written in; total, so a rerun writes the same bytes.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    /// Landing order: [`SOURCE_ORDER`] (object name, line), item lines in array order. For the
    /// flat tables, whose cache files hold it: merging them costs a fraction of a sort (at 10M
    /// events the gold step took 65 s with the three sorted by key, 43 s unsorted). The writer
    /// splits the rows into their date partitions.
    Landing,
    /// Sorted by `event_date`, then these columns: the grain's key.
    Key(&'static [&'static str]),
}

/// One gold table: its name, grain, query, row order and bucketing column.
#[derive(Clone, Copy)]
pub struct GoldTable {
    pub name: &'static str,
    pub grain: &'static str,
    pub query: Query,
    pub order: Order,
    /// The column hashed into buckets; tables without a user are written as one file.
    pub bucket_by: Option<&'static str>,
}

impl std::fmt::Debug for GoldTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoldTable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The gold tables, in the order they are computed (two at a time): longest first, as measured
/// at 10M events, so the last two finish close together.
pub const GOLD_TABLES: &[GoldTable] = &[
    GoldTable {
        name: "transaction_items",
        grain: "one row per item line of a transaction",
        query: Query::Flattened(|f| f.transaction_items.clone()),
        order: Order::Landing,
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "user_activity",
        grain: "one row per user event (deduplicated by event_id)",
        query: Query::Flattened(|f| f.user_activity.clone()),
        order: Order::Landing,
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "transactions",
        grain: "one row per transaction event (deduplicated by event_id)",
        query: Query::Flattened(|f| f.transactions.clone()),
        order: Order::Landing,
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "transactions_enriched",
        grain: "one row per transaction whose session has activity that day",
        query: Query::Sql(TRANSACTIONS_ENRICHED),
        order: Order::Key(&["transaction_id"]),
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "user_running_spend",
        grain: "one row per completed transaction",
        query: Query::Sql(USER_RUNNING_SPEND),
        order: Order::Key(&["user_id", "event_time", "transaction_id"]),
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "orphan_transactions",
        grain: "one row per transaction with no activity in its session that day",
        query: Query::Sql(ORPHAN_TRANSACTIONS),
        order: Order::Key(&["transaction_id"]),
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "user_sets",
        grain: "one row per (date, set, user) in the set",
        query: Query::Sql(USER_SETS),
        order: Order::Key(&["set_name", "user_id"]),
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "category_sales",
        grain: "one row per (date, item category, currency) with completed sales",
        query: Query::Frame(category_sales),
        order: Order::Key(&["category", "currency"]),
        bucket_by: None,
    },
    GoldTable {
        name: "user_daily_spend",
        grain: "one row per (date, user) with any activity",
        query: Query::Sql(USER_DAILY_SPEND),
        order: Order::Key(&["user_id"]),
        bucket_by: Some("user_id"),
    },
    GoldTable {
        name: "hourly_revenue",
        grain: "one row per (date, currency, hour) with completed sales",
        query: Query::Sql(HOURLY_REVENUE),
        order: Order::Key(&["currency", "hour"]),
        bucket_by: None,
    },
    GoldTable {
        name: "active_non_buyers",
        grain: "one row per (date, user) with activity and no transaction",
        query: Query::Sql(ACTIVE_NON_BUYERS),
        order: Order::Key(&["user_id"]),
        bucket_by: Some("user_id"),
    },
];

/// The flattened tables, each computed once and cached (see [`flatten`]), with their
/// [`SOURCE_ORDER`], and their row counts.
#[derive(Clone)]
pub struct Flattened {
    pub user_activity: DataFrame,
    pub transactions: DataFrame,
    pub transaction_items: DataFrame,
    /// The transactions with their `items` (`transactions` without them).
    pub transactions_nested: DataFrame,
    pub user_events_deduplicated: u64,
    pub transactions_deduplicated: u64,
}

pub fn interval_params(interval: &Interval) -> Vec<ScalarValue> {
    let utc = Some(Arc::from("UTC"));
    vec![
        ScalarValue::TimestampMicrosecond(Some(interval.start.timestamp_micros()), utc.clone()),
        ScalarValue::TimestampMicrosecond(Some(interval.end.timestamp_micros()), utc),
    ]
}

/// Computes `df` once into Arrow IPC files under `cache/<name>/` (one per output partition)
/// and registers them as the table `name`, which later queries stream from disk: the
/// intermediates several gold tables read are computed once without holding them in memory.
/// The order the plan guarantees within each partition is declared as the files' order, so
/// queries that need it do not sort again. Returns the rows written.
async fn cache_as(
    ctx: &SessionContext,
    cache: &std::path::Path,
    name: &'static str,
    df: DataFrame,
) -> Result<u64, StepError> {
    let started = std::time::Instant::now();
    let dir = cache.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| StepError {
        step: name,
        source: DataFusionError::IoError(e),
    })?;
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.map_err(step(name))?;
    let file_order = column_order(plan.properties().output_ordering());
    let streams = execute_stream_partitioned(plan, task).map_err(step(name))?;
    let schema = streams.first().map(|s| s.schema());
    let writes = streams
        .into_iter()
        .enumerate()
        .map(|(i, rows)| write_arrow_file(dir.join(format!("part-{i:05}.arrow")), rows));
    let rows: u64 = futures::future::try_join_all(writes)
        .await
        .map_err(step(name))?
        .into_iter()
        .sum();
    let mut options = ArrowReadOptions::default()
        .to_listing_options(&ctx.copied_config(), ctx.copied_table_options());
    if !file_order.is_empty() {
        options = options.with_file_sort_order(vec![file_order]);
    }
    ctx.register_listing_table(name, format!("{}/", dir.display()), options, schema, None)
        .await
        .map_err(step(name))?;
    tracing::info!(
        step = name,
        rows,
        seconds = started.elapsed().as_secs_f64(),
        "intermediate cached"
    );
    Ok(rows)
}

/// The leading plain columns of a plan's output ordering, as sort expressions on them.
fn column_order(ordering: Option<&LexOrdering>) -> Vec<SortExpr> {
    ordering
        .into_iter()
        .flat_map(|ordering| ordering.iter())
        .map_while(|sort| {
            let column = sort.expr.downcast_ref::<Column>()?;
            Some(col(column.name()).sort(!sort.options.descending, sort.options.nulls_first))
        })
        .collect()
}

/// Streams `rows` into one Arrow IPC file; returns the rows written.
async fn write_arrow_file(
    path: std::path::PathBuf,
    mut rows: SendableRecordBatchStream,
) -> Result<u64, DataFusionError> {
    let file = std::fs::File::create(&path)?;
    let mut writer = FileWriter::try_new(std::io::BufWriter::new(file), &rows.schema())?;
    let mut written = 0;
    while let Some(batch) = rows.try_next().await? {
        written += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    Ok(written)
}

/// Step 1: flattens the registered raw tables for `interval`, caching the flat tables and the
/// shared intermediates under their names in `cache`.
pub async fn flatten(
    ctx: &SessionContext,
    interval: &Interval,
    cache: &std::path::Path,
    max_duplicates_in_memory: usize,
) -> Result<Flattened, StepError> {
    let params = interval_params(interval);
    let user_events_deduplicated = deduplicate(
        ctx,
        cache,
        ["user_activity", "user_activity_copies"],
        FLATTEN_USER_EVENTS,
        params.clone(),
        max_duplicates_in_memory,
    )
    .await?;
    let transactions_deduplicated = deduplicate(
        ctx,
        cache,
        ["transactions_nested", "transactions_nested_copies"],
        FLATTEN_TRANSACTIONS,
        params,
        max_duplicates_in_memory,
    )
    .await?;
    let transactions_nested = ctx
        .table("transactions_nested")
        .await
        .map_err(step("flatten transactions"))?;
    let transactions = transactions_nested
        .clone()
        .drop_columns(&["items"])
        .map_err(step("flatten transactions"))?;
    ctx.register_table("transactions", transactions.clone().into_view())
        .map_err(step("flatten transactions"))?;
    let items = ctx
        .sql(EXPLODE_ITEMS)
        .await
        .map_err(step("explode items"))?;
    cache_as(ctx, cache, "transaction_items", items).await?;

    for (name, sql) in [
        ("sessions", SESSIONS),
        ("user_day", USER_DAY),
        ("buyer_day", BUYER_DAY),
    ] {
        let df = ctx.sql(sql).await.map_err(step(name))?;
        cache_as(ctx, cache, name, df).await?;
    }
    let table = |name: &'static str| async move { ctx.table(name).await.map_err(step(name)) };
    Ok(Flattened {
        user_activity: table("user_activity").await?,
        transactions,
        transaction_items: table("transaction_items").await?,
        transactions_nested,
        user_events_deduplicated,
        transactions_deduplicated,
    })
}

/// Step 1, duplicates: caches every copy of the flattened rows of `flatten_sql` as `copies`,
/// then registers `name` as those rows without the copies of an event after
/// its first (lowest [`SOURCE_ORDER`]: first in object-name and line order, so a rerun keeps the
/// same copy). Returns the rows of `name`.
///
/// The events with more than one copy are found by a group-by on the narrow `event_id` column.
/// Landing holds each record once (ingest is exactly-once), so there are none or few: then
/// `name` is a filter of the copies by that list, held in memory. With more than
/// `max_duplicates_in_memory` duplicated events the first copies are picked by a window
/// (ROW_NUMBER per event_id), which sorts and spills but is slow with one window partition per
/// event: at 10M events step 1 took 157 s with that window and 42 s without it.
async fn deduplicate(
    ctx: &SessionContext,
    cache: &std::path::Path,
    [name, copies_name]: [&'static str; 2],
    flatten_sql: &'static str,
    params: Vec<ScalarValue>,
    max_duplicates_in_memory: usize,
) -> Result<u64, StepError> {
    let copies = ctx
        .sql(flatten_sql)
        .await
        .and_then(|df| df.with_param_values(params))
        .map_err(step(name))?;
    let copied_rows = cache_as(ctx, cache, copies_name, copies).await?;
    let copies = ctx.table(copies_name).await.map_err(step(name))?;
    let duplicated = copies
        .clone()
        .aggregate(
            vec![col("event_id")],
            vec![
                min(col(SOURCE_ORDER)).alias("first_copy"),
                count(lit(1)).alias("copies"),
            ],
        )
        .and_then(|df| df.filter(col("copies").gt(lit(1i64))))
        .and_then(|df| df.limit(0, Some(max_duplicates_in_memory.saturating_add(1))))
        .map_err(step(name))?
        .collect()
        .await
        .map_err(step(name))?;
    let listed: usize = duplicated.iter().map(RecordBatch::num_rows).sum();
    let register = |first_copies: DataFrame| {
        ctx.register_table(name, first_copies.into_view())
            .map(|_| ())
    };
    if listed == 0 {
        register(copies).map_err(step(name))?;
        Ok(copied_rows)
    } else if listed <= max_duplicates_in_memory {
        let (mut ids, mut firsts, mut later_copies) = (Vec::new(), Vec::new(), 0u64);
        for batch in &duplicated {
            let (id, first, n) = (batch.column(0), batch.column(1), batch.column(2));
            for row in 0..batch.num_rows() {
                ids.push(lit(
                    ScalarValue::try_from_array(id, row).map_err(step(name))?
                ));
                firsts.push(lit(
                    ScalarValue::try_from_array(first, row).map_err(step(name))?
                ));
                if let ScalarValue::Int64(Some(n)) =
                    ScalarValue::try_from_array(n, row).map_err(step(name))?
                {
                    later_copies += n.saturating_sub(1) as u64;
                }
            }
        }
        // A row is a first copy when its event has one copy, or when its source order is one
        // of the first copies' (source orders are unique, so it is its own event's).
        let keep = col("event_id")
            .in_list(ids, true)
            .or(col(SOURCE_ORDER).in_list(firsts, false));
        copies.filter(keep).and_then(register).map_err(step(name))?;
        Ok(copied_rows - later_copies)
    } else {
        let copy_number = row_number()
            .partition_by(vec![col("event_id")])
            .order_by(vec![col(SOURCE_ORDER).sort(true, false)])
            .build()
            .map_err(step(name))?
            .alias("copy_number");
        let first_copies = copies
            .window(vec![copy_number])
            .and_then(|df| df.filter(col("copy_number").eq(lit(1u64))))
            .and_then(|df| df.drop_columns(&["copy_number"]))
            .map_err(step(name))?;
        cache_as(ctx, cache, name, first_copies).await
    }
}

/// Step 2: the DataFrame of one gold table, sorted for writing.
pub async fn gold_frame(
    ctx: &SessionContext,
    flat: &Flattened,
    table: &GoldTable,
) -> Result<DataFrame, StepError> {
    let df = match table.query {
        Query::Sql(sql) => ctx.sql(sql).await.map_err(step(table.name))?,
        Query::Frame(build) => build(flat).map_err(step(table.name))?,
        Query::Flattened(pick) => pick(flat),
    };
    let sorted = match table.order {
        Order::Landing => df
            .sort(vec![col(SOURCE_ORDER).sort(true, false)])
            .and_then(|df| df.drop_columns(&[SOURCE_ORDER])),
        Order::Key(key) => {
            let mut order = vec![col("event_date").sort(true, true)];
            order.extend(key.iter().map(|c| col(*c).sort(true, true)));
            df.sort(order)
        }
    };
    sorted.map_err(step(table.name))
}
