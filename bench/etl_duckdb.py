"""The gold tables of docs/etl.md computed by DuckDB, for bench/etl.sh.

Reads the same landing NDJSON as `streamflow etl` with an explicit schema, computes every gold
table with the same SQL as job-image/src/etl/steps.rs (DuckDB dialect), and writes one headerless
CSV per table (sorted by ours' key where ours sorts; the three flat tables unsorted, as ours
writes them in landing order), in the gold text format: timestamps
`2026-11-25T10:00:00.000000Z` (UTC), decimals with their scale, nulls empty. Averages are rounded
to 4 decimals (bench/etl.sh explains why; streamflow's are rounded the same way before the
comparison).

Deliberate differences from ours, none of which changes a row: no date partitions, buckets or
manifests (one file per table); duplicates by event_id keep the first copy in object-name
order (ours: object name, then line), and the benchmark data has no duplicates; INTERSECT ALL and
EXCEPT ALL are DuckDB's own (correct for multisets), which cross-checks our workaround.

    python bench/etl_duckdb.py --landing DIR --interval START/END --out DIR
                               [--threads 2] [--memory-limit 3GiB]
"""

import argparse
import datetime as dt
import glob
import os
import shutil

import duckdb

USER_COLUMNS = """{
  'event_id': 'VARCHAR', 'event_type': 'VARCHAR', 'event_time': 'TIMESTAMPTZ',
  'user_id': 'VARCHAR', 'session_id': 'VARCHAR',
  'page': 'STRUCT(url VARCHAR, referrer VARCHAR, title VARCHAR)',
  'device': 'STRUCT("type" VARCHAR, os VARCHAR, browser VARCHAR)',
  'geo': 'STRUCT(country VARCHAR, city VARCHAR, lat DOUBLE, lon DOUBLE)',
  'properties': 'STRUCT(query VARCHAR, product_id VARCHAR, "element" VARCHAR)'
}"""

TRANSACTION_COLUMNS = """{
  'event_id': 'VARCHAR', 'event_time': 'TIMESTAMPTZ', 'transaction_id': 'VARCHAR',
  'user_id': 'VARCHAR', 'session_id': 'VARCHAR', 'amount': 'DECIMAL(18,2)',
  'currency': 'VARCHAR', 'status': 'VARCHAR',
  'payment': 'STRUCT(method VARCHAR, card_brand VARCHAR, card_last4 VARCHAR)',
  'merchant': 'STRUCT(merchant_id VARCHAR, name VARCHAR, category VARCHAR, country VARCHAR)',
  'items': 'STRUCT(sku VARCHAR, name VARCHAR, category VARCHAR, quantity INTEGER, unit_price DECIMAL(18,2))[]'
}"""

# Step 1: flatten and type (steps.rs FLATTEN_USER_EVENTS, FLATTEN_TRANSACTIONS, EXPLODE_ITEMS).
FLATTEN = [
    """
CREATE TABLE user_activity AS
SELECT event_id, event_type, event_time, CAST(event_time AS DATE) AS event_date, user_id, session_id,
       page.url AS page_url, page.referrer AS page_referrer, page.title AS page_title,
       device."type" AS device_type, device.os AS device_os, device.browser AS device_browser,
       geo.country AS geo_country, geo.city AS geo_city, geo.lat AS geo_lat, geo.lon AS geo_lon,
       properties.query AS search_query, properties.product_id AS product_id,
       properties."element" AS click_element
FROM read_ndjson({user_files}, columns = {user_columns}, filename = true)
WHERE event_time >= $start AND event_time < $end
QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY filename) = 1""",
    """
CREATE TABLE transactions_nested AS
SELECT event_id, transaction_id, event_time, CAST(event_time AS DATE) AS event_date, user_id, session_id,
       amount, currency, status,
       payment.method AS payment_method, payment.card_brand AS card_brand,
       payment.card_last4 AS card_last4,
       merchant.merchant_id AS merchant_id, merchant.name AS merchant_name,
       merchant.category AS merchant_category, merchant.country AS merchant_country,
       CAST(len(items) AS INTEGER) AS item_count, items
FROM read_ndjson({transaction_files}, columns = {transaction_columns}, filename = true)
WHERE event_time >= $start AND event_time < $end
QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY filename) = 1""",
    "CREATE VIEW transactions AS SELECT * EXCLUDE (items) FROM transactions_nested",
    """
CREATE TABLE transaction_items AS
SELECT event_date, transaction_id, event_time, user_id, currency, status,
       item.sku AS sku, item.name AS item_name, item.category AS item_category,
       item.quantity AS quantity, item.unit_price AS unit_price
FROM (SELECT event_date, transaction_id, event_time, user_id, currency, status, unnest(items) AS item
      FROM transactions_nested)""",
    """
CREATE TABLE sessions AS
SELECT event_date, session_id, user_id,
       MIN(event_time) AS session_start, MAX(event_time) AS session_end, COUNT(*) AS session_events,
       SUM(CASE WHEN event_type = 'page_view' THEN 1 ELSE 0 END) AS page_views,
       first(device_type ORDER BY event_time, event_id) AS device_type,
       first(geo_country ORDER BY event_time, event_id) AS geo_country
FROM user_activity
GROUP BY event_date, session_id, user_id""",
    """
CREATE TABLE user_day AS
SELECT event_date, user_id, SUM(session_events) AS events, COUNT(session_id) AS sessions,
       SUM(page_views) AS page_views, MAX(session_end) AS last_event_time
FROM sessions
GROUP BY event_date, user_id""",
    """
CREATE TABLE buyer_day AS
SELECT event_date, user_id, COUNT(*) AS transactions,
       SUM(CASE WHEN status = 'completed' THEN amount END) AS spend
FROM transactions
GROUP BY event_date, user_id""",
]

# Step 2: (table, query, sort key after event_date), as steps.rs GOLD_TABLES. The flat tables
# have no sort key: ours writes them in landing order, which it keeps without sorting; here they
# are written as the engine produces them.
GOLD = [
    ("user_activity", "SELECT * FROM user_activity", None),
    ("transactions", "SELECT * FROM transactions", None),
    ("transaction_items", "SELECT * FROM transaction_items", None),
    (
        "transactions_enriched",
        """
SELECT t.event_date, t.transaction_id, t.event_time, t.user_id, t.session_id, t.amount, t.currency,
       t.status, t.payment_method, t.merchant_id,
       s.session_start, s.session_events, s.device_type AS session_device_type,
       s.geo_country AS session_country
FROM transactions t
JOIN sessions s ON t.session_id = s.session_id AND t.user_id = s.user_id AND t.event_date = s.event_date""",
        "transaction_id",
    ),
    (
        "orphan_transactions",
        """
SELECT t.event_date, t.transaction_id, t.event_time, t.user_id, t.session_id, t.amount, t.currency,
       t.status,
       CASE WHEN t.session_id IS NULL THEN 'no_session' ELSE 'unknown_session' END AS reason
FROM transactions t
WHERE NOT EXISTS (
    SELECT 1 FROM sessions s
    WHERE s.session_id = t.session_id AND s.user_id = t.user_id AND s.event_date = t.event_date)""",
        "transaction_id",
    ),
    (
        "user_daily_spend",
        """
SELECT a.event_date, a.user_id, a.events, a.sessions, a.page_views,
       COALESCE(b.transactions, 0) AS transactions,
       CAST(COALESCE(b.spend, 0) AS DECIMAL(28, 2)) AS spend,
       RANK() OVER (PARTITION BY a.event_date ORDER BY COALESCE(b.spend, 0) DESC) AS spend_rank,
       DENSE_RANK() OVER (PARTITION BY a.event_date ORDER BY COALESCE(b.spend, 0) DESC) AS spend_dense_rank
FROM user_day a
LEFT JOIN buyer_day b ON a.user_id = b.user_id AND a.event_date = b.event_date""",
        "user_id",
    ),
    (
        "active_non_buyers",
        """
SELECT a.event_date, a.user_id, a.events, a.last_event_time
FROM user_day a
WHERE NOT EXISTS (
    SELECT 1 FROM transactions t WHERE t.user_id = a.user_id AND t.event_date = a.event_date)""",
        "user_id",
    ),
    (
        "user_running_spend",
        """
SELECT event_date, user_id, transaction_id, event_time, amount,
       SUM(amount) OVER (PARTITION BY event_date, user_id ORDER BY event_time, transaction_id
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_spend,
       CAST(round(AVG(amount) OVER (PARTITION BY event_date, user_id ORDER BY event_time, transaction_id
                         ROWS BETWEEN 2 PRECEDING AND CURRENT ROW), 4) AS DECIMAL(38, 4)) AS moving_avg_3
FROM transactions
WHERE status = 'completed'""",
        "user_id, event_time, transaction_id",
    ),
    (
        "hourly_revenue",
        """
SELECT event_date, currency, hour, transactions, revenue,
       CAST(round(AVG(revenue) OVER (PARTITION BY event_date, currency ORDER BY hour
                          RANGE BETWEEN 2 PRECEDING AND CURRENT ROW), 4) AS DECIMAL(38, 4)) AS revenue_avg_3h
FROM (
    SELECT event_date, currency, CAST(date_part('hour', event_time) AS INTEGER) AS hour,
           COUNT(*) AS transactions, SUM(amount) AS revenue
    FROM transactions
    WHERE status = 'completed'
    GROUP BY event_date, currency, CAST(date_part('hour', event_time) AS INTEGER)
)""",
        "currency, hour",
    ),
    (
        # The DataFrame step of ours (add line_total, rename, cast, drop), here as SQL.
        "category_sales",
        """
SELECT event_date, item_category AS category, currency,
       SUM(CAST(quantity AS BIGINT)) AS units, SUM(quantity * unit_price) AS revenue,
       COUNT(*) AS lines, COUNT(DISTINCT transaction_id) AS transactions
FROM transaction_items
WHERE status = 'completed'
GROUP BY event_date, item_category, currency""",
        "category, currency",
    ),
    (
        "user_sets",
        """
WITH active AS (SELECT DISTINCT event_date, user_id FROM user_activity),
     buying AS (SELECT DISTINCT event_date, user_id FROM transactions),
     logins AS (SELECT event_date, user_id FROM user_activity WHERE event_type = 'login'),
     purchases AS (SELECT event_date, user_id FROM transactions)
SELECT event_date, 'active_or_buying' AS set_name, user_id, CAST(1 AS BIGINT) AS copies
FROM (SELECT event_date, user_id FROM active UNION SELECT event_date, user_id FROM buying)
UNION ALL
SELECT event_date, 'active_and_buying', user_id, 1
FROM (SELECT event_date, user_id FROM active INTERSECT SELECT event_date, user_id FROM buying)
UNION ALL
SELECT event_date, 'active_not_buying', user_id, 1
FROM (SELECT event_date, user_id FROM active EXCEPT SELECT event_date, user_id FROM buying)
UNION ALL
SELECT event_date, 'buying_not_active', user_id, 1
FROM (SELECT event_date, user_id FROM buying EXCEPT SELECT event_date, user_id FROM active)
UNION ALL
SELECT event_date, 'logins_intersect_all_purchases', user_id, COUNT(*)
FROM (SELECT event_date, user_id FROM logins INTERSECT ALL SELECT event_date, user_id FROM purchases)
GROUP BY event_date, user_id
UNION ALL
SELECT event_date, 'logins_except_all_purchases', user_id, COUNT(*)
FROM (SELECT event_date, user_id FROM logins EXCEPT ALL SELECT event_date, user_id FROM purchases)
GROUP BY event_date, user_id""",
        "set_name, user_id",
    ),
]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="3GiB")
    args = parser.parse_args()
    start, end = (dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in args.interval.split("/"))

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET threads = {args.threads}")
    con.execute(f"SET memory_limit = '{args.memory_limit}'")
    params = {"start": start, "end": end}
    user_files = landing_files(args.landing, "user_events", start, end)
    transaction_files = landing_files(args.landing, "transaction_events", start, end)
    if not user_files or not transaction_files:
        raise SystemExit(f"no landing objects under {args.landing} for {args.interval}")
    for sql in FLATTEN:
        sql = sql.format(
            user_files=repr(user_files),
            transaction_files=repr(transaction_files),
            user_columns=USER_COLUMNS,
            transaction_columns=TRANSACTION_COLUMNS,
        )
        con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})

    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    for table, query, order in GOLD:
        columns = con.execute(f"DESCRIBE ({query})").fetchall()
        select = ", ".join(
            f"strftime({name}, '{TIMESTAMP_FORMAT}') AS {name}" if kind.startswith("TIMESTAMP") else name
            for name, kind, *_ in columns
        )
        path = os.path.join(args.out, f"{table}.csv")
        con.execute(
            f"COPY (SELECT {select} FROM ({query}){'' if order is None else f' ORDER BY event_date, {order}'})"
            f" TO '{path}' (HEADER false)"
        )


if __name__ == "__main__":
    main()
