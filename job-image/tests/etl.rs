//! `streamflow etl` on small hand-written landing fixtures, with every gold table's rows
//! computed by hand (see the fixture comments), plus rerun, atomicity, bucketing, malformed
//! input and the s3:// path.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path as FsPath;
use std::sync::Arc;

use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};

use object_store::ObjectStoreExt as _;
use streamflow::etl::bucket::bucket_of;
use streamflow::etl::session::{self, Profile, SessionSettings};
use streamflow::etl::write;
use streamflow::etl::{self, EtlConfig};
use streamflow::etl::{read, steps};
use streamflow::events::EventKind;
use streamflow::store::Location;
use streamflow_core::EtlSummary;

fn user_event(id: &str, user: &str, session: &str, kind: &str, time: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_type":"{kind}","event_time":"{time}","user_id":"{user}","session_id":"{session}","page":{{"url":"https://shop.example.com/","referrer":null,"title":"Home"}},"device":{{"type":"mobile","os":"iOS","browser":"Safari"}},"geo":{{"country":"DE","city":"Berlin","lat":52.5,"lon":13.4}},"extra_field_upstream_added":1}}"#
    )
}

/// `amount` and prices are written as the JSON number text given, to check they are read as
/// exact decimals.
fn transaction(
    id: &str,
    user: &str,
    session: Option<&str>,
    time: &str,
    amount: &str,
    status: &str,
    items: &[(&str, &str, u32, &str)],
) -> String {
    let session = session.map_or("null".to_owned(), |s| format!("\"{s}\""));
    let items: Vec<String> = items
        .iter()
        .map(|(sku, category, qty, price)| {
            format!(r#"{{"sku":"{sku}","name":"{category} {sku}","category":"{category}","quantity":{qty},"unit_price":{price}}}"#)
        })
        .collect();
    format!(
        r#"{{"event_id":"x{id}","event_time":"{time}","transaction_id":"{id}","user_id":"{user}","session_id":{session},"amount":{amount},"currency":"EUR","status":"{status}","payment":{{"method":"card","card_brand":"visa","card_last4":"0042"}},"merchant":{{"merchant_id":"m-001","name":"Northwind Books","category":"books","country":"DE"}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn put(dir: &FsPath, rel: &str, lines: &[String]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = lines.join("\n");
    text.push('\n');
    // Compressed objects are written as ingest writes them: frames (gzip members) of whole
    // lines one after another, here the first line in a frame of its own.
    let first_line = text.find('\n').map_or(text.len(), |i| i + 1);
    let frames = [&text[..first_line], &text[first_line..]];
    if rel.ends_with(".gz") {
        use std::io::Write as _;
        let mut members = Vec::new();
        for frame in frames {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(frame.as_bytes()).unwrap();
            members.extend(gz.finish().unwrap());
        }
        std::fs::write(path, members).unwrap();
    } else if rel.ends_with(".zst") {
        let encoded = frames.map(|frame| zstd::encode_all(frame.as_bytes(), 1).unwrap());
        std::fs::write(path, encoded.concat()).unwrap();
    } else {
        std::fs::write(path, text).unwrap();
    }
}

/// The fixture, date 2026-11-25 unless said otherwise.
///
/// Users and sessions: u1 logs in five times (sessions s1, s1b, s1c, s1d, s1e) and has one page
/// view; u2 has two events in s2; u3 logs in (s3) and has a page view at 23:59:59.999Z; u5 has
/// one login in s5. e2 is landed twice (the second copy in a gzipped object). e15 sits in
/// the 25th's folder but happened at 2026-11-26T00:00:00Z; e9 happened at
/// 2026-11-25T23:30:00-01:00, which is the 26th in UTC, and sits in the 26th's folder.
///
/// Transactions: u1 buys t1 10.00 (s1, 10:10), t2 20.00 (s1b, 11:10), t3 25.00 (s1c, 12:10),
/// t8 5.00 (s1c, 12:30); u2 buys t4 30.00 without a session (09:30) and t6 5.00 that failed
/// (s2); u4, who has no activity, has t5 7.50 pending in an unknown session; u5 buys t7 30.00
/// (s5, 14:05; two lines of one category). All in EUR, in a zstd-compressed object.
fn write_fixture(landing: &FsPath) {
    let d25 = "user_events/date=2026-11-25";
    put(
        landing,
        &format!("{d25}/user_events-p000-00000000000000000000-00000000000000000009.ndjson"),
        &[
            user_event("e1", "u1", "s1", "login", "2026-11-25T10:00:00Z"),
            user_event("e2", "u1", "s1", "page_view", "2026-11-25T10:05:00Z"),
            user_event("e3", "u1", "s1b", "login", "2026-11-25T11:00:00Z"),
            user_event("e4", "u1", "s1c", "login", "2026-11-25T12:00:00Z"),
            user_event("e13", "u1", "s1d", "login", "2026-11-25T13:00:00Z"),
            user_event("e14", "u1", "s1e", "login", "2026-11-25T13:30:00Z"),
            user_event("e5", "u2", "s2", "page_view", "2026-11-25T09:00:00Z"),
            user_event("e6", "u2", "s2", "click", "2026-11-25T09:10:00Z"),
            user_event("e15", "u3", "s3", "page_view", "2026-11-26T00:00:00Z"),
        ],
    );
    put(
        landing,
        &format!("{d25}/user_events-p001-00000000000000000000-00000000000000000004.ndjson.gz"),
        &[
            user_event("e7", "u3", "s3", "login", "2026-11-25T08:00:00Z"),
            user_event("e8", "u3", "s3", "page_view", "2026-11-25T23:59:59.999Z"),
            user_event("e11", "u5", "s5", "login", "2026-11-25T14:00:00Z"),
            user_event("e2", "u1", "s1", "page_view", "2026-11-25T10:05:00Z"),
        ],
    );
    put(
        landing,
        "user_events/date=2026-11-26/user_events-p000-00000000000000000010-00000000000000000011.ndjson",
        &[
            user_event("e9", "u9", "s9", "login", "2026-11-25T23:30:00-01:00"),
            user_event("e10", "u1", "s1", "page_view", "2026-11-26T00:00:00Z"),
        ],
    );
    // Quarantined records are not data, whatever they contain.
    put(
        landing,
        "_quarantine/user_events/date=2026-11-25/user_events-p000-0-0.ndjson",
        &["{not json".to_owned()],
    );
    put(
        landing,
        "transaction_events/date=2026-11-25/transaction_events-p000-00000000000000000000-00000000000000000007.ndjson.zst",
        &[
            transaction(
                "t1",
                "u1",
                Some("s1"),
                "2026-11-25T10:10:00Z",
                "10.00",
                "completed",
                &[("A", "books", 2, "5.00")],
            ),
            transaction(
                "t2",
                "u1",
                Some("s1b"),
                "2026-11-25T11:10:00Z",
                "20",
                "completed",
                &[("B", "electronics", 1, "20.00")],
            ),
            transaction(
                "t3",
                "u1",
                Some("s1c"),
                "2026-11-25T12:10:00Z",
                "25.00",
                "completed",
                &[("A", "books", 1, "5.00"), ("C", "home", 2, "10.00")],
            ),
            transaction(
                "t8",
                "u1",
                Some("s1c"),
                "2026-11-25T12:30:00Z",
                "5.00",
                "completed",
                &[("E", "grocery", 1, "5.00")],
            ),
            transaction(
                "t4",
                "u2",
                None,
                "2026-11-25T09:30:00Z",
                "30.00",
                "completed",
                &[("D", "fashion", 3, "10.00")],
            ),
            transaction(
                "t6",
                "u2",
                Some("s2"),
                "2026-11-25T09:20:00Z",
                "5.00",
                "failed",
                &[("E", "grocery", 1, "5.00")],
            ),
            transaction(
                "t5",
                "u4",
                Some("s-x"),
                "2026-11-25T13:00:00Z",
                "7.50",
                "pending",
                &[("F", "books", 1, "7.50")],
            ),
            transaction(
                "t7",
                "u5",
                Some("s5"),
                "2026-11-25T14:05:00Z",
                "30.00",
                "completed",
                &[("D", "fashion", 1, "10.00"), ("G", "fashion", 2, "10.00")],
            ),
        ],
    );
}

fn config(landing: Location, gold: Location, interval: &str) -> EtlConfig {
    let spill = std::env::temp_dir().join("streamflow-test-spill");
    EtlConfig {
        landing,
        gold,
        interval: interval.parse().unwrap(),
        session: SessionSettings {
            spill_dir: spill,
            ..SessionSettings::for_profile(Profile::Development)
        },
        buckets: 4,
        topics: Default::default(),
        allow_empty: false,
    }
}

fn local(dir: &FsPath) -> Location {
    Location::parse(dir.to_str().unwrap()).unwrap()
}

async fn run_local(landing: &FsPath, gold: &FsPath, interval: &str) -> EtlSummary {
    etl::run(&config(local(landing), local(gold), interval))
        .await
        .unwrap()
        .summary
}

/// The header and the data rows of a committed partition (all its files), rows sorted.
async fn rows(gold: &Location, table: &str, date: &str) -> (String, Vec<String>) {
    let manifest = write::read_manifest(gold, table, date.parse().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{table}/date={date} is committed"));
    let dir = write::partition_dir(gold, table, manifest.date);
    let mut header = String::new();
    let mut out = Vec::new();
    for file in &manifest.files {
        let path = object_store::path::Path::from(format!("{dir}/{}", file.path));
        let bytes = gold.store.get(&path).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let mut lines = text.lines();
        header = lines.next().unwrap().to_owned();
        out.extend(lines.map(str::to_owned));
    }
    out.sort();
    (header, out)
}

async fn data_rows(gold: &Location, table: &str, date: &str) -> Vec<String> {
    rows(gold, table, date).await.1
}

/// Every file under a directory with its bytes.
fn snapshot(dir: &FsPath) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn strs(rows: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

const DAY: &str = "2026-11-25";

#[tokio::test]
async fn flatten_types_deduplicates_and_excludes_records_outside_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    let summary = run_local(&landing, &gold, DAY).await;

    let users = &summary.read["user_events"];
    assert_eq!(
        (users.objects, users.records),
        (2, 13),
        "the 26th's folder and quarantine are not read"
    );
    assert_eq!(users.outside_interval, 1, "e15 happened on the 26th");
    assert_eq!(users.duplicates, 1, "e2 was landed twice");
    assert_eq!(users.rows, 11);
    assert_eq!(summary.read["transaction_events"].rows, 8);

    let gold = local(&gold);
    let (header, activity) = rows(&gold, "user_activity", DAY).await;
    assert_eq!(
        header,
        "event_id,event_type,event_time,event_date,user_id,session_id,page_url,page_referrer,page_title,device_type,device_os,device_browser,geo_country,geo_city,geo_lat,geo_lon,search_query,product_id,click_element"
    );
    let ids: Vec<&str> = activity
        .iter()
        .map(|r| r.split(',').next().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "e1", "e11", "e13", "e14", "e2", "e3", "e4", "e5", "e6", "e7", "e8"
        ]
    );
    assert!(
        activity.contains(
            &"e8,page_view,2026-11-25T23:59:59.999000Z,2026-11-25,u3,s3,https://shop.example.com/,,Home,mobile,iOS,Safari,DE,Berlin,52.5,13.4,,,".to_owned()
        ),
        "{activity:?}"
    );

    let (header, transactions) = rows(&gold, "transactions", DAY).await;
    assert_eq!(
        header,
        "event_id,transaction_id,event_time,event_date,user_id,session_id,amount,currency,status,payment_method,card_brand,card_last4,merchant_id,merchant_name,merchant_category,merchant_country,item_count"
    );
    assert!(
        transactions.contains(
            &"xt2,t2,2026-11-25T11:10:00.000000Z,2026-11-25,u1,s1b,20.00,EUR,completed,card,visa,0042,m-001,Northwind Books,books,DE,1".to_owned()
        ),
        "amount 20 is the decimal 20.00 and card_last4 keeps its zeros: {transactions:?}"
    );
    assert_eq!(transactions.len(), 8);

    let (header, items) = rows(&gold, "transaction_items", DAY).await;
    assert_eq!(
        header,
        "event_date,transaction_id,event_time,user_id,currency,status,sku,item_name,item_category,quantity,unit_price"
    );
    assert_eq!(
        items.len(),
        10,
        "t3 and t7 have two item lines, the others one"
    );
    assert!(
        items.contains(
            &"2026-11-25,t3,2026-11-25T12:10:00.000000Z,u1,EUR,completed,C,home C,home,2,10.00"
                .to_owned()
        )
    );
}

#[tokio::test]
async fn dates_come_from_the_utc_event_time_not_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    let summary = run_local(&landing, &gold, "2026-11-25/2026-11-27").await;
    assert_eq!(summary.read["user_events"].outside_interval, 0);
    let gold = local(&gold);
    let ids = |rows: Vec<String>| {
        rows.iter()
            .map(|r| r.split(',').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let day26 = ids(data_rows(&gold, "user_activity", "2026-11-26").await);
    assert_eq!(
        day26,
        ["e10", "e15", "e9"],
        "e9 (23:30 at -01:00) and e15 (00:00Z, in the 25th's folder) are the 26th"
    );
    let day25 = ids(data_rows(&gold, "user_activity", DAY).await);
    assert!(!day25.contains(&"e9".to_owned()) && day25.contains(&"e8".to_owned()));
    assert!(
        data_rows(&gold, "user_activity", "2026-11-26")
            .await
            .iter()
            .any(|r| r.starts_with("e9,login,2026-11-26T00:30:00.000000Z,2026-11-26,"))
    );
    // The 25th's partitions do not depend on the interval also covering the 26th.
    let single = tempfile::tempdir().unwrap();
    run_local(&landing, single.path(), DAY).await;
    let single = local(single.path());
    for table in [
        "user_daily_spend",
        "user_running_spend",
        "user_sets",
        "hourly_revenue",
    ] {
        assert_eq!(
            data_rows(&gold, table, DAY).await,
            data_rows(&single, table, DAY).await,
            "{table}"
        );
    }
}

#[tokio::test]
async fn gold_tables_match_the_hand_computed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    run_local(&landing, &gold, DAY).await;
    let gold = local(&gold);

    // Inner join: the transactions whose session has activity that day.
    let (header, enriched) = rows(&gold, "transactions_enriched", DAY).await;
    assert_eq!(
        header,
        "event_date,transaction_id,event_time,user_id,session_id,amount,currency,status,payment_method,merchant_id,session_start,session_events,session_device_type,session_country"
    );
    let ids: Vec<&str> = enriched
        .iter()
        .map(|r| r.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(ids, ["t1", "t2", "t3", "t6", "t7", "t8"]);
    assert!(enriched.contains(
        &"2026-11-25,t1,2026-11-25T10:10:00.000000Z,u1,s1,10.00,EUR,completed,card,m-001,2026-11-25T10:00:00.000000Z,2,mobile,DE".to_owned()
    ), "s1 has e1 and e2 once (deduplicated): {enriched:?}");

    // Anti-join with nulls: t4 has no session (NOT IN would drop it), t5's session is unknown.
    assert_eq!(
        data_rows(&gold, "orphan_transactions", DAY).await,
        strs(&[
            "2026-11-25,t4,2026-11-25T09:30:00.000000Z,u2,,30.00,EUR,completed,no_session",
            "2026-11-25,t5,2026-11-25T13:00:00.000000Z,u4,s-x,7.50,EUR,pending,unknown_session",
        ])
    );

    // Left join (u3 bought nothing: 0.00) and ranking with a tie at 30.00: RANK leaves a gap
    // (4), DENSE_RANK does not (3). u4 bought but was not active: not in the table.
    let (header, spend) = rows(&gold, "user_daily_spend", DAY).await;
    assert_eq!(
        header,
        "event_date,user_id,events,sessions,page_views,transactions,spend,spend_rank,spend_dense_rank"
    );
    assert_eq!(
        spend,
        strs(&[
            "2026-11-25,u1,6,5,1,4,60.00,1,1",
            "2026-11-25,u2,2,1,1,2,30.00,2,2",
            "2026-11-25,u3,2,1,1,0,0.00,4,3",
            "2026-11-25,u5,1,1,0,1,30.00,2,2",
        ])
    );

    // Anti-join: u2's only purchase failed, but it is a transaction, so u2 is a buyer.
    assert_eq!(
        data_rows(&gold, "active_non_buyers", DAY).await,
        strs(&["2026-11-25,u3,2,2026-11-25T23:59:59.999000Z"])
    );

    // Running total and a 3-row moving average: the first row averages itself, the fourth
    // drops the first (avg(20, 25, 5) = 16.666666, not avg of all four = 15). Decimal averages
    // have six places, truncated, as DataFusion divides decimals.
    let (header, running) = rows(&gold, "user_running_spend", DAY).await;
    assert_eq!(
        header,
        "event_date,user_id,transaction_id,event_time,amount,cumulative_spend,moving_avg_3"
    );
    let u1: Vec<String> = running
        .iter()
        .filter(|r| r.contains(",u1,"))
        .map(|r| r.split(',').skip(4).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        u1,
        [
            "10.00,10.00,10.000000",
            "20.00,30.00,15.000000",
            "25.00,55.00,18.333333",
            "5.00,60.00,16.666666"
        ]
    );
    assert_eq!(running.len(), 6, "completed transactions only");

    // Moving average over a RANGE of three clock hours: at 14 the frame is hours 12..14, so
    // hour 11 is out (a ROWS frame would take it in and give 26.67).
    let (header, hourly) = rows(&gold, "hourly_revenue", DAY).await;
    assert_eq!(
        header,
        "event_date,currency,hour,transactions,revenue,revenue_avg_3h"
    );
    assert_eq!(
        hourly,
        strs(&[
            "2026-11-25,EUR,9,1,30.00,30.000000",
            "2026-11-25,EUR,10,1,10.00,20.000000",
            "2026-11-25,EUR,11,1,20.00,20.000000",
            "2026-11-25,EUR,12,2,30.00,20.000000",
            "2026-11-25,EUR,14,1,30.00,30.000000",
        ])
    );

    // Added, renamed, cast and dropped columns, then aggregated.
    let (header, categories) = rows(&gold, "category_sales", DAY).await;
    assert_eq!(
        header,
        "event_date,category,currency,units,revenue,lines,transactions"
    );
    assert_eq!(
        categories,
        strs(&[
            "2026-11-25,books,EUR,3,15.00,2,2",
            "2026-11-25,electronics,EUR,1,20.00,1,1",
            "2026-11-25,fashion,EUR,6,60.00,3,2",
            "2026-11-25,grocery,EUR,1,5.00,1,1",
            "2026-11-25,home,EUR,2,20.00,1,1",
        ])
    );

    // Set operations. u1 logged in 5 times and bought 4 times: INTERSECT ALL keeps 4 copies
    // (a semi join would keep 5), EXCEPT ALL keeps 1 (EXCEPT and an anti join keep none). u5
    // logged in once and bought once: one copy in common, none left over.
    assert_eq!(
        data_rows(&gold, "user_sets", DAY).await,
        strs(&[
            "2026-11-25,active_or_buying,u1,1",
            "2026-11-25,active_or_buying,u2,1",
            "2026-11-25,active_or_buying,u3,1",
            "2026-11-25,active_or_buying,u4,1",
            "2026-11-25,active_or_buying,u5,1",
            "2026-11-25,active_and_buying,u1,1",
            "2026-11-25,active_and_buying,u2,1",
            "2026-11-25,active_and_buying,u5,1",
            "2026-11-25,active_not_buying,u3,1",
            "2026-11-25,buying_not_active,u4,1",
            "2026-11-25,logins_intersect_all_purchases,u1,4",
            "2026-11-25,logins_intersect_all_purchases,u5,1",
            "2026-11-25,logins_except_all_purchases,u1,1",
            "2026-11-25,logins_except_all_purchases,u3,1",
        ])
    );
}

#[tokio::test]
async fn partitions_are_bucketed_by_user_into_a_fixed_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    let summary = run_local(&landing, &gold, DAY).await;
    let gold = local(&gold);
    let manifest = write::read_manifest(&gold, "user_activity", DAY.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest.files.len(), 4);
    assert_eq!(manifest.rows, 11);
    let dir = write::partition_dir(&gold, "user_activity", manifest.date);
    for file in &manifest.files {
        let path = object_store::path::Path::from(format!("{dir}/{}", file.path));
        let text = String::from_utf8(
            gold.store
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert_eq!(
            text.lines().count() as u64,
            file.rows + 1,
            "header plus rows"
        );
        for line in text.lines().skip(1) {
            let user = line.split(',').nth(4).unwrap();
            assert_eq!(bucket_of(user, 4), file.bucket, "{line} in {}", file.path);
        }
    }
    // Tables without a user are one file per partition.
    let hourly = write::read_manifest(&gold, "hourly_revenue", DAY.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hourly.files.len(), 1);
    assert_eq!(summary.tables["user_activity"].files, 4);
}

#[tokio::test]
async fn rerunning_an_interval_writes_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    let first_summary = run_local(&landing, &gold, "2026-11-25/2026-11-27").await;
    let first = snapshot(&gold);
    let second_summary = run_local(&landing, &gold, "2026-11-25/2026-11-27").await;
    assert_eq!(snapshot(&gold), first, "same files, same bytes");
    assert_eq!(first_summary.tables, second_summary.tables);
    // 11 tables x 2 dates, each a manifest and its files.
    assert_eq!(first.keys().filter(|k| k.ends_with("_SUCCESS")).count(), 22);
}

#[tokio::test]
async fn the_first_copy_of_an_event_is_kept_whether_duplicates_are_listed_or_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let at = "2026-11-25T10:00:00Z";
    let d25 = "user_events/date=2026-11-25";
    // Object names sort p000 before p001: the first copy of d1 is p000's line 2 (a click).
    put(
        &landing,
        &format!("{d25}/user_events-p000-00000000000000000000-00000000000000000002.ndjson"),
        &[
            user_event("d0", "u1", "s1", "login", at),
            user_event("d1", "u1", "s1", "click", at),
            user_event("d1", "u1", "s1", "search", at),
        ],
    );
    put(
        &landing,
        &format!("{d25}/user_events-p001-00000000000000000000-00000000000000000000.ndjson"),
        &[user_event("d1", "u1", "s1", "logout", at)],
    );
    let tx = |amount| transaction("t1", "u1", Some("s1"), at, amount, "completed", &[]);
    put(
        &landing,
        "transaction_events/date=2026-11-25/transaction_events-p000-00000000000000000000-00000000000000000001.ndjson",
        &[tx("1.00"), tx("2.00")],
    );
    let run = |gold: &str, max_duplicates_in_memory: usize| {
        let mut config = config(local(&landing), local(&dir.path().join(gold)), DAY);
        config.session.max_duplicates_in_memory = max_duplicates_in_memory;
        async move { etl::run(&config).await.unwrap().summary }
    };
    let listed = run("listed", 10).await;
    let sorted = run("sorted", 0).await;

    assert_eq!(listed.read["user_events"].duplicates, 2);
    assert_eq!(listed.read["transaction_events"].duplicates, 1);
    let (_, activity) = rows(&local(&dir.path().join("listed")), "user_activity", DAY).await;
    let types: Vec<&str> = activity
        .iter()
        .map(|r| r.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(types, ["login", "click"], "d0, then d1's first copy");
    let (_, transactions) = rows(&local(&dir.path().join("listed")), "transactions", DAY).await;
    assert_eq!(transactions.len(), 1);
    assert_eq!(transactions[0].split(',').nth(6), Some("1.00"));

    assert_eq!(sorted.read, listed.read);
    assert_eq!(
        snapshot(&dir.path().join("sorted")),
        snapshot(&dir.path().join("listed")),
        "same files, same bytes"
    );
}

#[tokio::test]
async fn an_interrupted_write_leaves_the_previous_partition_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold_dir) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    run_local(&landing, &gold_dir, DAY).await;
    let gold = local(&gold_dir);
    let before = data_rows(&gold, "transactions", DAY).await;

    // A run that staged new files and died before its manifest: readers must not see them.
    let stray = gold_dir.join("transactions/date=2026-11-25/v-00000000deadbeef/part-00000.csv");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, "event_id\nghost\n").unwrap();
    assert_eq!(data_rows(&gold, "transactions", DAY).await, before);

    // New landing data replaces the partition whole; old versions and leftovers are removed.
    std::fs::remove_file(
        landing.join("transaction_events/date=2026-11-25/transaction_events-p000-00000000000000000000-00000000000000000007.ndjson.zst"),
    )
    .unwrap();
    let summary = run_local(&landing, &gold_dir, DAY).await;
    assert_eq!(summary.tables["transactions"].rows, 0);
    assert!(data_rows(&gold, "transactions", DAY).await.is_empty());
    assert!(
        !stray.exists(),
        "the interrupted run's files are cleaned up"
    );
    let left: Vec<String> = snapshot(&gold_dir.join("transactions/date=2026-11-25"))
        .into_keys()
        .collect();
    assert_eq!(
        left.len(),
        5,
        "the manifest and the 4 bucket files of one version, nothing else: {left:?}"
    );
}

/// Generated events (40 users, one event per topic every 500 ms) written as landing objects
/// of 1,000 lines for 2026-11-25.
fn write_generated(landing: &FsPath, per_topic: usize) {
    for (kind, topic) in [
        (EventKind::User, "user_events"),
        (EventKind::Transaction, "transaction_events"),
    ] {
        let mut generator = common::generator(kind, 11, "2026-11-25T00:00:00Z", 0.0);
        let lines: Vec<String> = (0..per_topic)
            .map(|_| String::from_utf8(generator.next_record().value).unwrap())
            .collect();
        for (i, chunk) in lines.chunks(1000).enumerate() {
            put(
                landing,
                &format!("{topic}/date=2026-11-25/{topic}-p000-{i:05}.ndjson"),
                chunk,
            );
        }
    }
}

#[tokio::test]
async fn a_memory_limit_far_below_the_input_spills_and_gives_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    write_generated(&landing, 100_000);
    let run = |gold: &str, memory_limit: usize| {
        let mut config = config(local(&landing), local(&dir.path().join(gold)), DAY);
        config.session.memory_limit = memory_limit;
        // The whole limit is the pool here: the test is about operators spilling. It failed
        // about one run in ten while sorts could ask for memory that cannot spill when the pool
        // was full (docs/etl.md, Memory); a failure names the pool's largest consumers.
        config.session.memory_pool_percent = 100;
        // A sort holds at least one batch: smaller batches let four sorts (two tables at once,
        // two partitions each) share a pool this small.
        config.session.batch_size = 1024;
        config.session.spill_dir = dir.path().join(format!("spill-{gold}"));
        async move { etl::run(&config).await.unwrap().summary }
    };
    let limit = 48 * 1024 * 1024;
    let roomy = run("roomy", 1024 * 1024 * 1024).await;
    let tight = run("tight", limit).await;
    let input: u64 = tight.read.values().map(|r| r.bytes).sum();
    assert!(
        input > 2 * limit as u64,
        "the input ({input} bytes) is well above the limit"
    );
    assert_eq!(tight.read["user_events"].rows, 100_000);
    assert_eq!(tight.tables, roomy.tables);
    assert_eq!(
        snapshot(&dir.path().join("tight")),
        snapshot(&dir.path().join("roomy")),
        "same files, same bytes"
    );
}

/// The first hash join in a plan, depth first.
fn hash_join_in(plan: &Arc<dyn ExecutionPlan>) -> Option<&HashJoinExec> {
    plan.downcast_ref::<HashJoinExec>()
        .or_else(|| plan.children().into_iter().find_map(hash_join_in))
}

/// The event ids of one landing folder in landing order: objects by name, lines in order.
fn landing_order(folder: &FsPath) -> HashMap<String, usize> {
    let mut objects: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    objects.sort();
    let mut order = HashMap::new();
    for object in objects {
        for line in std::fs::read_to_string(object).unwrap().lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = event["event_id"].as_str().unwrap().to_owned();
            order.insert(id, order.len());
        }
    }
    order
}

#[tokio::test]
async fn flat_tables_are_merged_into_landing_order_without_a_sort() {
    let dir = tempfile::tempdir().unwrap();
    let (landing_dir, gold_dir) = (dir.path().join("landing"), dir.path().join("gold"));
    write_generated(&landing_dir, 5_000);
    let config = config(local(&landing_dir), local(&gold_dir), DAY);
    assert_eq!(config.session.target_partitions, 2, "two streams to merge");

    // The plans: each flat table's cache files are merged by source order, not sorted.
    let ctx = session::build_session(&config.session, &[&config.landing]).unwrap();
    for (kind, raw) in [
        (EventKind::User, steps::RAW_USER_EVENTS),
        (EventKind::Transaction, steps::RAW_TRANSACTION_EVENTS),
    ] {
        let topic = kind.schema();
        read::register_landing(&ctx, raw, &config.landing, topic, kind, &config.interval, 2)
            .await
            .unwrap();
    }
    let cache = session::cache_dir(&config.session).unwrap();
    let flat = steps::flatten(&ctx, &config.interval, cache.path(), 10)
        .await
        .unwrap();
    for table in steps::GOLD_TABLES {
        if !matches!(table.order, steps::Order::Landing) {
            continue;
        }
        let frame = steps::gold_frame(&ctx, &flat, table).await.unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        let plan = displayable(plan.as_ref()).indent(true).to_string();
        assert!(
            plan.contains("SortPreservingMergeExec") && !plan.contains("SortExec"),
            "{} is merged, not sorted:\n{plan}",
            table.name
        );
    }

    // The joins of transactions with sessions hold sessions, one row per session, in memory.
    for name in ["transactions_enriched", "orphan_transactions"] {
        let table = steps::GOLD_TABLES.iter().find(|t| t.name == name).unwrap();
        let frame = steps::gold_frame(&ctx, &flat, table).await.unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        let join = hash_join_in(&plan).unwrap_or_else(|| panic!("{name} is a hash join"));
        let build = displayable(join.left().as_ref()).indent(true).to_string();
        assert!(
            build.contains("/sessions/") && !build.contains("transactions"),
            "{name} builds its hash table from sessions:\n{build}"
        );
    }

    // The files: each bucket file's rows are in landing order.
    let order = landing_order(&landing_dir.join("user_events/date=2026-11-25"));
    etl::run(&config).await.unwrap();
    let gold = local(&gold_dir);
    let manifest = write::read_manifest(&gold, "user_activity", DAY.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let dir = write::partition_dir(&gold, "user_activity", manifest.date);
    let mut seen = 0;
    for file in &manifest.files {
        let path = object_store::path::Path::from(format!("{dir}/{}", file.path));
        let bytes = gold.store.get(&path).await.unwrap().bytes().await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let places: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|row| order[row.split(',').next().unwrap()])
            .collect();
        assert!(
            places.is_sorted(),
            "{} holds its rows in landing order",
            file.path
        );
        seen += places.len();
    }
    assert_eq!(seen, 5_000);
}

#[tokio::test]
async fn a_malformed_landing_object_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    let bad_amount = transaction(
        "t9",
        "u1",
        Some("s1"),
        "2026-11-25T10:00:00Z",
        "\"ten\"",
        "completed",
        &[("A", "books", 1, "5.00")],
    );
    put(
        &landing,
        "transaction_events/date=2026-11-25/transaction_events-p003-00000000000000000000-00000000000000000001.ndjson",
        &[
            transaction(
                "t10",
                "u1",
                None,
                "2026-11-25T10:00:00Z",
                "1.00",
                "completed",
                &[("A", "books", 1, "1.00")],
            ),
            bad_amount,
        ],
    );
    let err = etl::run(&config(local(&landing), local(&gold), DAY))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("transaction_events-p003-00000000000000000000-00000000000000000001.ndjson"),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("amount"), "{err}");

    std::fs::remove_file(landing.join(
        "transaction_events/date=2026-11-25/transaction_events-p003-00000000000000000000-00000000000000000001.ndjson",
    ))
    .unwrap();
    let missing_id = user_event("e99", "u1", "s1", "login", "2026-11-25T10:00:00Z")
        .replace(r#""event_id":"e99","#, "");
    put(
        &landing,
        "user_events/date=2026-11-25/user_events-p009-0-0.ndjson",
        &[missing_id],
    );
    let err = etl::run(&config(local(&landing), local(&gold), DAY))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("user_events-p009-0-0.ndjson") && err.contains("event_id"),
        "{err}"
    );
    assert!(
        !gold.join("transactions").exists(),
        "a failed run commits nothing"
    );
}

#[tokio::test]
async fn the_command_line_runs_the_etl_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing);
    let summary_file = dir.path().join("summary.json");
    let out = common::run_ok(
        common::streamflow()
            .args([
                "etl",
                "--interval",
                DAY,
                "--memory-limit",
                "256MiB",
                "--target-partitions",
                "2",
            ])
            .arg("--landing")
            .arg(&landing)
            .arg("--gold")
            .arg(&gold)
            .arg("--spill-dir")
            .arg(dir.path().join("spill"))
            .arg("--summary-file")
            .arg(&summary_file),
    );
    let summary = common::summary_of(&out);
    assert_eq!(summary["stage"], "etl");
    assert_eq!(summary["tables"]["user_daily_spend"]["rows"], 4);
    let json = std::fs::read_to_string(&summary_file).unwrap();
    assert!(
        json.len() < 4096,
        "fits a termination message: {} bytes",
        json.len()
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        summary
    );

    let out = common::streamflow()
        .args(["etl", "--interval", DAY, "--profile", "staging"])
        .arg("--landing")
        .arg(&landing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("staging"));
}

#[tokio::test]
async fn s3_landing_and_gold_give_the_same_tables_as_local() {
    let dir = tempfile::tempdir().unwrap();
    let (landing_dir, gold_dir) = (dir.path().join("landing"), dir.path().join("gold"));
    write_fixture(&landing_dir);
    run_local(&landing_dir, &gold_dir, DAY).await;

    let landing_url = common::s3_landing();
    let gold_url = format!("s3://gold/test-{}", uuid::Uuid::new_v4().simple());
    let landing = common::s3_location(&landing_url);
    for (rel, bytes) in snapshot(&landing_dir) {
        landing
            .store
            .put(&landing.child(&rel), bytes.into())
            .await
            .unwrap();
    }
    let gold = common::s3_location(&gold_url);
    let s3_summary = etl::run(&config(landing, gold.clone(), DAY))
        .await
        .unwrap()
        .summary;
    let local_gold = local(&gold_dir);
    for table in etl::steps::GOLD_TABLES {
        assert_eq!(
            rows(&gold, table.name, DAY).await,
            rows(&local_gold, table.name, DAY).await,
            "{}",
            table.name
        );
    }
    assert_eq!(s3_summary.read["user_events"].duplicates, 1);
}

/// `streamflow etl` for [`DAY`] from `landing` into `gold`, with `extra` flags.
fn etl_command(
    landing: &FsPath,
    gold: &FsPath,
    spill: &FsPath,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = common::streamflow();
    cmd.args(["etl", "--interval", DAY, "--memory-limit", "256MiB"])
        .arg("--landing")
        .arg(landing)
        .arg("--gold")
        .arg(gold)
        .arg("--spill-dir")
        .arg(spill)
        .args(extra);
    cmd
}

#[tokio::test]
async fn a_mistyped_landing_fails_and_an_empty_interval_keeps_good_gold_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold, spill) = (
        dir.path().join("landing"),
        dir.path().join("gold"),
        dir.path().join("spill"),
    );
    write_fixture(&landing);
    run_local(&landing, &gold, DAY).await;
    let good = snapshot(&gold);
    let rows_of = async |table: &str| {
        write::read_manifest(&local(&gold), table, DAY.parse().unwrap())
            .await
            .unwrap()
            .map(|m| m.rows)
    };
    assert!(
        rows_of("user_activity").await.is_some_and(|n| n > 0),
        "the gold to keep"
    );

    // A landing root that does not exist is an error naming it; the gold is untouched.
    let typo = dir.path().join("landnig");
    let out = etl_command(&typo, &gold, &spill, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing landing root fails");
    assert!(
        stderr.contains("landnig") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert_eq!(snapshot(&gold), good, "nothing replaced");

    // A landing zone with nothing for the interval does not replace gold that has rows...
    let empty = dir.path().join("empty-landing");
    std::fs::create_dir_all(empty.join("user_events/date=2026-11-20")).unwrap();
    let out = etl_command(&empty, &gold, &spill, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an empty interval over good gold fails"
    );
    assert!(
        stderr.contains("--allow-empty") && stderr.contains("already hold rows"),
        "{stderr}"
    );
    assert_eq!(snapshot(&gold), good, "nothing replaced");

    // ...unless asked to, and the summary names what it emptied.
    let out = common::run_ok(&mut etl_command(&empty, &gold, &spill, &["--allow-empty"]));
    let summary = common::summary_of(&out);
    let emptied: Vec<&str> = summary["emptied"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        emptied.contains(&"user_activity/date=2026-11-25"),
        "{summary}"
    );
    assert_eq!(rows_of("user_activity").await, Some(0));

    // Over empty gold an empty interval needs no flag, and empties nothing worth naming.
    let fresh = dir.path().join("fresh-gold");
    let out = common::run_ok(&mut etl_command(&empty, &fresh, &spill, &[]));
    assert_eq!(common::summary_of(&out).get("emptied"), None);
}
