"""The gold tables of docs/etl.md computed by PySpark 4 in local[2] (the seed's engine), for
bench/etl.sh.

Reads the same landing NDJSON as `streamflow etl` with an explicit schema (FAILFAST: a malformed
record fails the run), flattens it once and caches the flat tables and shared intermediates
like ours, computes every gold table with the same SQL as job-image/src/etl/steps.rs (Spark
dialect), and writes each as headerless CSV part files under <out>/<table>/ (sorted by ours'
key where ours sorts; the three flat tables unsorted, as ours writes them in landing order),
in the gold text format: timestamps `2026-11-25T10:00:00.000000Z` (UTC), decimals with their
scale, nulls empty. Averages are rounded to 4 decimals (bench/etl_compare.py explains why).

Deliberate differences from ours, none of which changes a row: no date partitions, buckets or
manifests; duplicates by event_id keep the first copy in object-name order (ours: object name,
then line), and the benchmark data has no duplicates; INTERSECT ALL and EXCEPT ALL are Spark's
own (correct for multisets), which cross-checks our workaround.

    python bench/etl_pyspark.py --landing DIR --interval START/END --out DIR [--driver-memory 6g]
"""

import argparse
import datetime as dt
import glob
import os

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ArrayType,
    DecimalType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def text(name: str, nullable: bool = False) -> StructField:
    return StructField(name, StringType(), nullable)


MONEY = DecimalType(18, 2)
USER_SCHEMA = StructType([
    text("event_id"), text("event_type"), StructField("event_time", TimestampType(), False),
    text("user_id"), text("session_id"),
    StructField("page", StructType([text("url"), text("referrer", True), text("title")]), False),
    StructField("device", StructType([text("type"), text("os"), text("browser")]), False),
    StructField("geo", StructType([text("country"), text("city"), StructField("lat", DoubleType(), False),
                                   StructField("lon", DoubleType(), False)]), False),
    StructField("properties", StructType([text("query", True), text("product_id", True),
                                          text("element", True)]), True),
])
TRANSACTION_SCHEMA = StructType([
    text("event_id"), StructField("event_time", TimestampType(), False), text("transaction_id"),
    text("user_id"), text("session_id", True), StructField("amount", MONEY, False),
    text("currency"), text("status"),
    StructField("payment", StructType([text("method"), text("card_brand", True), text("card_last4", True)]), False),
    StructField("merchant", StructType([text("merchant_id"), text("name"), text("category"), text("country")]), False),
    StructField("items", ArrayType(StructType([
        text("sku"), text("name"), text("category"), StructField("quantity", IntegerType(), False),
        StructField("unit_price", MONEY, False),
    ]), False), False),
])

FLATTEN_USER_EVENTS = """
SELECT event_id, event_type, event_time, CAST(event_time AS DATE) AS event_date, user_id, session_id,
       page.url AS page_url, page.referrer AS page_referrer, page.title AS page_title,
       device.type AS device_type, device.os AS device_os, device.browser AS device_browser,
       geo.country AS geo_country, geo.city AS geo_city, geo.lat AS geo_lat, geo.lon AS geo_lon,
       properties.query AS search_query, properties.product_id AS product_id,
       properties.element AS click_element
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY source_file) AS copy_number
    FROM raw_user_events
    WHERE event_time >= TIMESTAMP '{start}' AND event_time < TIMESTAMP '{end}'
) WHERE copy_number = 1"""

FLATTEN_TRANSACTIONS = """
SELECT event_id, transaction_id, event_time, CAST(event_time AS DATE) AS event_date, user_id, session_id,
       amount, currency, status,
       payment.method AS payment_method, payment.card_brand AS card_brand,
       payment.card_last4 AS card_last4,
       merchant.merchant_id AS merchant_id, merchant.name AS merchant_name,
       merchant.category AS merchant_category, merchant.country AS merchant_country,
       CAST(size(items) AS INT) AS item_count, items
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY source_file) AS copy_number
    FROM raw_transaction_events
    WHERE event_time >= TIMESTAMP '{start}' AND event_time < TIMESTAMP '{end}'
) WHERE copy_number = 1"""

EXPLODE_ITEMS = """
SELECT event_date, transaction_id, event_time, user_id, currency, status,
       item.sku AS sku, item.name AS item_name, item.category AS item_category,
       item.quantity AS quantity, item.unit_price AS unit_price
FROM (SELECT event_date, transaction_id, event_time, user_id, currency, status, explode(items) AS item
      FROM transactions_nested)"""

INTERMEDIATES = [
    ("sessions", """
SELECT event_date, session_id, user_id,
       MIN(event_time) AS session_start, MAX(event_time) AS session_end, COUNT(*) AS session_events,
       SUM(CASE WHEN event_type = 'page_view' THEN 1 ELSE 0 END) AS page_views,
       min_by(device_type, struct(event_time, event_id)) AS device_type,
       min_by(geo_country, struct(event_time, event_id)) AS geo_country
FROM user_activity
GROUP BY event_date, session_id, user_id"""),
    ("user_day", """
SELECT event_date, user_id, SUM(session_events) AS events, COUNT(session_id) AS sessions,
       SUM(page_views) AS page_views, MAX(session_end) AS last_event_time
FROM sessions
GROUP BY event_date, user_id"""),
    ("buyer_day", """
SELECT event_date, user_id, COUNT(*) AS transactions,
       SUM(CASE WHEN status = 'completed' THEN amount END) AS spend
FROM transactions
GROUP BY event_date, user_id"""),
]

# (table, query, sort key after event_date), as steps.rs GOLD_TABLES. The flat tables have no
# sort key: ours writes them in landing order, which it keeps without sorting; here they are
# written as the engine produces them.
GOLD = [
    ("user_activity", "SELECT * FROM user_activity", None),
    ("transactions", "SELECT * FROM transactions", None),
    ("transaction_items", "SELECT * FROM transaction_items", None),
    ("transactions_enriched", """
SELECT t.event_date, t.transaction_id, t.event_time, t.user_id, t.session_id, t.amount, t.currency,
       t.status, t.payment_method, t.merchant_id,
       s.session_start, s.session_events, s.device_type AS session_device_type,
       s.geo_country AS session_country
FROM transactions t
JOIN sessions s ON t.session_id = s.session_id AND t.user_id = s.user_id AND t.event_date = s.event_date""",
     "transaction_id"),
    ("orphan_transactions", """
SELECT t.event_date, t.transaction_id, t.event_time, t.user_id, t.session_id, t.amount, t.currency,
       t.status,
       CASE WHEN t.session_id IS NULL THEN 'no_session' ELSE 'unknown_session' END AS reason
FROM transactions t
WHERE NOT EXISTS (
    SELECT 1 FROM sessions s
    WHERE s.session_id = t.session_id AND s.user_id = t.user_id AND s.event_date = t.event_date)""",
     "transaction_id"),
    ("user_daily_spend", """
SELECT a.event_date, a.user_id, a.events, a.sessions, a.page_views,
       COALESCE(b.transactions, 0) AS transactions,
       CAST(COALESCE(b.spend, 0) AS DECIMAL(28, 2)) AS spend,
       RANK() OVER (PARTITION BY a.event_date ORDER BY COALESCE(b.spend, 0) DESC) AS spend_rank,
       DENSE_RANK() OVER (PARTITION BY a.event_date ORDER BY COALESCE(b.spend, 0) DESC) AS spend_dense_rank
FROM user_day a
LEFT JOIN buyer_day b ON a.user_id = b.user_id AND a.event_date = b.event_date""",
     "user_id"),
    ("active_non_buyers", """
SELECT a.event_date, a.user_id, a.events, a.last_event_time
FROM user_day a
WHERE NOT EXISTS (
    SELECT 1 FROM transactions t WHERE t.user_id = a.user_id AND t.event_date = a.event_date)""",
     "user_id"),
    ("user_running_spend", """
SELECT event_date, user_id, transaction_id, event_time, amount,
       SUM(amount) OVER (PARTITION BY event_date, user_id ORDER BY event_time, transaction_id
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_spend,
       round(AVG(amount) OVER (PARTITION BY event_date, user_id ORDER BY event_time, transaction_id
                         ROWS BETWEEN 2 PRECEDING AND CURRENT ROW), 4) AS moving_avg_3
FROM transactions
WHERE status = 'completed'""",
     "user_id, event_time, transaction_id"),
    ("hourly_revenue", """
SELECT event_date, currency, hour, transactions, revenue,
       round(AVG(revenue) OVER (PARTITION BY event_date, currency ORDER BY hour
                          RANGE BETWEEN 2 PRECEDING AND CURRENT ROW), 4) AS revenue_avg_3h
FROM (
    SELECT event_date, currency, CAST(date_part('hour', event_time) AS INT) AS hour,
           COUNT(*) AS transactions, SUM(amount) AS revenue
    FROM transactions
    WHERE status = 'completed'
    GROUP BY event_date, currency, CAST(date_part('hour', event_time) AS INT)
)""",
     "currency, hour"),
    None,  # category_sales: the DataFrame API, below
    ("user_sets", """
WITH active AS (SELECT DISTINCT event_date, user_id FROM user_activity),
     buying AS (SELECT DISTINCT event_date, user_id FROM transactions),
     logins AS (SELECT event_date, user_id FROM user_activity WHERE event_type = 'login'),
     purchases AS (SELECT event_date, user_id FROM transactions)
SELECT event_date, 'active_or_buying' AS set_name, user_id, CAST(1 AS BIGINT) AS copies
FROM (SELECT event_date, user_id FROM active UNION SELECT event_date, user_id FROM buying)
UNION ALL
SELECT event_date, 'active_and_buying', user_id, CAST(1 AS BIGINT)
FROM (SELECT event_date, user_id FROM active INTERSECT SELECT event_date, user_id FROM buying)
UNION ALL
SELECT event_date, 'active_not_buying', user_id, CAST(1 AS BIGINT)
FROM (SELECT event_date, user_id FROM active EXCEPT SELECT event_date, user_id FROM buying)
UNION ALL
SELECT event_date, 'buying_not_active', user_id, CAST(1 AS BIGINT)
FROM (SELECT event_date, user_id FROM buying EXCEPT SELECT event_date, user_id FROM active)
UNION ALL
SELECT event_date, 'logins_intersect_all_purchases', user_id, COUNT(*)
FROM (SELECT event_date, user_id FROM logins INTERSECT ALL SELECT event_date, user_id FROM purchases)
GROUP BY event_date, user_id
UNION ALL
SELECT event_date, 'logins_except_all_purchases', user_id, COUNT(*)
FROM (SELECT event_date, user_id FROM logins EXCEPT ALL SELECT event_date, user_id FROM purchases)
GROUP BY event_date, user_id""",
     "set_name, user_id"),
]


def category_sales(spark):
    """Dynamic columns with the DataFrame API, then aggregation, as steps.rs category_sales."""
    from pyspark.sql import functions as F

    return (
        spark.table("transaction_items")
        .filter(F.col("status") == "completed")
        .withColumn("line_total", F.col("quantity") * F.col("unit_price"))
        .withColumnRenamed("item_category", "category")
        .withColumn("quantity", F.col("quantity").cast("bigint"))
        .drop("sku", "item_name", "unit_price", "user_id", "status", "event_time")
        .groupBy("event_date", "category", "currency")
        .agg(
            F.sum("quantity").alias("units"),
            F.sum("line_total").alias("revenue"),
            F.count(F.lit(1)).alias("lines"),
            F.countDistinct("transaction_id").alias("transactions"),
        )
    )


def landing_files(landing: str, topic: str, start: dt.datetime, end: dt.datetime) -> list[str]:
    files = []
    day = start.date()
    while dt.datetime.combine(day, dt.time(), dt.timezone.utc) < end:
        folder = os.path.join(landing, topic, f"date={day}")
        files += glob.glob(os.path.join(folder, "*.ndjson")) + glob.glob(os.path.join(folder, "*.ndjson.gz"))
        day += dt.timedelta(days=1)
    return sorted(files)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--landing", required=True)
    parser.add_argument("--interval", required=True, help="START/END, RFC 3339")
    parser.add_argument("--out", required=True)
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args()
    start, end = (dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in args.interval.split("/"))

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("streamflow-etl-reference")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    from pyspark.sql import functions as F

    for topic, schema, view in [
        ("user_events", USER_SCHEMA, "raw_user_events"),
        ("transaction_events", TRANSACTION_SCHEMA, "raw_transaction_events"),
    ]:
        files = landing_files(args.landing, topic, start, end)
        if not files:
            raise SystemExit(f"no landing objects under {args.landing}/{topic} for {args.interval}")
        (
            spark.read.schema(schema)
            .option("mode", "FAILFAST")
            .json(files)
            .withColumn("source_file", F.input_file_name())
            .createOrReplaceTempView(view)
        )

    bounds = {"start": f"{start:%Y-%m-%d %H:%M:%S}", "end": f"{end:%Y-%m-%d %H:%M:%S}"}
    spark.sql(FLATTEN_USER_EVENTS.format(**bounds)).cache().createOrReplaceTempView("user_activity")
    nested = spark.sql(FLATTEN_TRANSACTIONS.format(**bounds)).cache()
    nested.createOrReplaceTempView("transactions_nested")
    nested.drop("items").createOrReplaceTempView("transactions")
    spark.sql(EXPLODE_ITEMS).cache().createOrReplaceTempView("transaction_items")
    for name, sql in INTERMEDIATES:
        spark.sql(sql).cache().createOrReplaceTempView(name)

    for entry in GOLD:
        if entry is None:
            table, df, order = "category_sales", category_sales(spark), "category, currency"
        else:
            table, query, order = entry
            df = spark.sql(query)
        if order is not None:
            df = df.orderBy("event_date", *[k.strip() for k in order.split(",")])
        (
            df.write.mode("overwrite")
            .option("header", False)
            .option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
            .csv(os.path.join(args.out, table))
        )
    spark.stop()


if __name__ == "__main__":
    main()
