//! `streamflow ingest` against the real Kafka broker and S3 server started by `scripts/test`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use streamflow::events::EventKind;
use streamflow::store::Location;

fn ingest_args<'a>(
    cmd: &'a mut std::process::Command,
    topics: &[&str],
    landing: &str,
    group: &str,
) -> &'a mut std::process::Command {
    cmd.arg("ingest")
        .arg("--landing")
        .arg(landing)
        .arg("--group")
        .arg(group)
        .arg("--stall-timeout")
        .arg("30s");
    for t in topics {
        cmd.arg("--topic").arg(t).args(common::schema_flag(t));
    }
    cmd
}

#[tokio::test]
async fn local_landing_holds_each_good_event_once_and_each_bad_one_in_quarantine() {
    let users = fresh_topic(EventKind::User, 3).await;
    let txns = fresh_topic(EventKind::Transaction, 3).await;
    let mut ug = generator(EventKind::User, 1, "2026-11-24T23:50:00Z", 0.05);
    let mut tg = generator(EventKind::Transaction, 1, "2026-11-24T23:50:00Z", 0.05);
    let user_recs: Vec<_> = (0..1500).map(|_| ug.next_record()).collect();
    let txn_recs: Vec<_> = (0..800).map(|_| tg.next_record()).collect();
    send_all(&users, &user_recs);
    send_all(&txns, &txn_recs);

    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let out = run_ok(
        ingest_args(&mut streamflow(), &[&users, &txns], landing, &group)
            .args(["--max-file-records", "250"]),
    );
    let summary = summary_of(&out);
    let bad_users = user_recs.iter().filter(|r| r.bad.is_some()).count();
    let bad_txns = txn_recs.iter().filter(|r| r.bad.is_some()).count();
    assert!(bad_users > 0 && bad_txns > 0);
    assert_eq!(
        summary["records"],
        (1500 + 800 - bad_users - bad_txns) as u64
    );
    assert_eq!(summary["quarantined"], (bad_users + bad_txns) as u64);
    assert_eq!(
        summary["topics"][&users]["records"],
        (1500 - bad_users) as u64
    );
    assert_eq!(summary["complete"], true);

    let location = Location::parse(landing).unwrap();
    let landed_users = read_landing(&location, &users).await;
    assert_exactly_once(&landed_users, &good_ids(&user_recs));
    assert_eq!(landed_users.quarantine.len(), bad_users);
    let landed_txns = read_landing(&location, &txns).await;
    assert_exactly_once(&landed_txns, &good_ids(&txn_recs));
    assert_eq!(landed_txns.quarantine.len(), bad_txns);
    for q in landed_users
        .quarantine
        .iter()
        .chain(&landed_txns.quarantine)
    {
        assert!(!q["reason"].as_str().unwrap().is_empty());
        assert!(q["offset"].as_i64().is_some() && q["partition"].as_i64().is_some());
        assert!(q["topic"] == *users || q["topic"] == *txns);
    }
    // Layout: by topic and event date; the records straddle midnight.
    assert!(
        landed_users
            .objects
            .iter()
            .any(|o| o.contains(&format!("{users}/date=2026-11-24/")))
    );
    assert!(
        landed_users
            .objects
            .iter()
            .any(|o| o.contains(&format!("{users}/date=2026-11-25/")))
    );

    // A second drain picks up only what arrived since, and a third finds nothing new.
    let more: Vec<_> = (0..300).map(|_| ug.next_record()).collect();
    send_all(&users, &more);
    let out = run_ok(ingest_args(
        &mut streamflow(),
        &[&users, &txns],
        landing,
        &group,
    ));
    let bad_more = more.iter().filter(|r| r.bad.is_some()).count();
    assert_eq!(summary_of(&out)["records"], (300 - bad_more) as u64);
    let all: Vec<_> = user_recs.iter().chain(&more).cloned().collect();
    assert_exactly_once(&read_landing(&location, &users).await, &good_ids(&all));
    let out = run_ok(ingest_args(
        &mut streamflow(),
        &[&users, &txns],
        landing,
        &group,
    ));
    assert_eq!(summary_of(&out)["records"], 0);
}

#[tokio::test]
async fn s3_landing_with_gzip_holds_each_good_event_once() {
    let url = s3_landing();
    drain_compressed(
        EventKind::User,
        &url,
        &s3_location(&url),
        &["--gzip"],
        ".ndjson.gz",
    )
    .await;
}

#[tokio::test]
async fn local_landing_with_zstd_holds_each_good_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    drain_compressed(
        EventKind::Transaction,
        landing,
        &Location::parse(landing).unwrap(),
        &["--compression", "zstd"],
        ".ndjson.zst",
    )
    .await;
}

/// Drains 1,200 records (5 % bad) of a fresh topic into `landing` with `compression`, and
/// checks that every object, quarantine included, ends in `extension` and reads back to each
/// good event once and each bad record in quarantine.
async fn drain_compressed(
    kind: EventKind,
    landing: &str,
    location: &Location,
    compression: &[&str],
    extension: &str,
) {
    let topic = fresh_topic(kind, 2).await;
    let mut g = generator(kind, 2, "2026-11-25T08:00:00Z", 0.05);
    let recs: Vec<_> = (0..1200).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let mut cmd = streamflow();
    ingest_args(&mut cmd, &[&topic], landing, &group)
        .args(compression)
        .args(["--max-file-records", "400"]);
    if landing.starts_with("s3://") {
        s3_env(&mut cmd);
    }
    let out = run_ok(&mut cmd);
    assert_eq!(summary_of(&out)["complete"], true);
    let landed = read_landing(location, &topic).await;
    assert!(
        landed.objects.iter().all(|o| o.ends_with(extension)),
        "{:?}",
        landed.objects
    );
    assert_exactly_once(&landed, &good_ids(&recs));
    let bad = recs.iter().filter(|r| r.bad.is_some()).count();
    assert!(bad > 0);
    assert_eq!(landed.quarantine.len(), bad);
}

#[tokio::test]
async fn interval_mode_drains_exactly_the_records_timestamped_in_the_interval() {
    let users = fresh_topic(EventKind::User, 3).await;
    // 600 records, 500 ms apart: 10:00:00 to 10:05:00.
    let mut g = generator(EventKind::User, 3, "2026-11-25T10:00:00Z", 0.0);
    let recs: Vec<_> = (0..600).map(|_| g.next_record()).collect();
    send_all(&users, &recs);
    let interval = "2026-11-25T10:01:00Z/2026-11-25T10:02:30Z";
    let (from, to) = (
        "2026-11-25T10:01:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        "2026-11-25T10:02:30Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
    );
    let expected: Vec<String> = recs
        .iter()
        .filter(|r| from <= r.timestamp && r.timestamp < to)
        .filter_map(|r| r.event_id.clone())
        .collect();
    assert!(expected.len() > 100 && expected.len() < 600);

    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let mut cmd = streamflow();
    cmd.args([
        "ingest",
        "--landing",
        landing,
        "--topic",
        &users,
        "--user-events-topic",
        &users,
        "--interval",
        interval,
        "--max-file-records",
        "50",
    ]);
    let out = run_ok(&mut cmd);
    let summary = summary_of(&out);
    assert_eq!(summary["mode"], "interval");
    assert_eq!(summary["records"], expected.len() as u64);
    let location = Location::parse(landing).unwrap();
    let first = read_landing(&location, &users).await;
    assert_exactly_once(&first, &expected);

    // Replaying the interval rewrites the same objects: nothing doubles.
    run_ok(&mut cmd);
    let second = read_landing(&location, &users).await;
    assert_eq!(first.objects, second.objects);
    assert_exactly_once(&second, &expected);
}

#[tokio::test]
async fn each_kind_of_bad_input_is_quarantined_with_its_reason() {
    let topic = fresh_topic(EventKind::Transaction, 1).await;
    let mut g = generator(EventKind::Transaction, 4, "2026-11-25T12:00:00Z", 0.0);
    let good = g.next_record();
    let good_text = String::from_utf8(good.value.clone()).unwrap();
    let mut wrong_type: serde_json::Value = serde_json::from_str(&good_text).unwrap();
    wrong_type["amount"] = serde_json::json!("12.50");
    let mut negative: serde_json::Value = serde_json::from_str(&good_text).unwrap();
    negative["amount"] = serde_json::json!(-3.5);
    let key = Some(good.key.as_bytes().to_vec());
    // (expected reason, key, value)
    type Case<'a> = (&'a str, Option<Vec<u8>>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "not_json",
            key.clone(),
            good.value[..good.value.len() - 7].to_vec(),
        ),
        (
            "schema",
            key.clone(),
            serde_json::to_vec(&wrong_type).unwrap(),
        ),
        (
            "not_utf8",
            key.clone(),
            [&good.value[..20], &[0xc3, 0x28][..], &good.value[20..]].concat(),
        ),
        (
            "oversized",
            key.clone(),
            format!("{{\"pad\":\"{}\"}}", "x".repeat(700 * 1024)).into_bytes(),
        ),
        ("empty", key.clone(), Vec::new()),
        ("missing_key", None, good.value.clone()),
        ("schema", key.clone(), b"[1,2,3]".to_vec()),
        (
            "negative_amount",
            key.clone(),
            serde_json::to_vec(&negative).unwrap(),
        ),
        (
            "key_mismatch",
            Some(b"someone-else".to_vec()),
            good.value.clone(),
        ),
    ];
    let records: Vec<_> = cases.iter().map(|_| good.clone()).collect();
    let mut i = 0;
    send_with(&topic, &records, |_| {
        let (_, k, v) = &cases[i];
        i += 1;
        (k.clone(), v.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let out = run_ok(ingest_args(
        &mut streamflow(),
        &[&topic],
        landing,
        "bad-inputs",
    ));
    assert_eq!(summary_of(&out)["quarantined"], cases.len() as u64);
    let landed = read_landing(&Location::parse(landing).unwrap(), &topic).await;
    assert!(landed.event_ids.is_empty());
    let mut by_offset = landed.quarantine.clone();
    by_offset.sort_by_key(|q| q["offset"].as_i64());
    let kinds: Vec<&str> = by_offset
        .iter()
        .map(|q| q["reason_kind"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(kinds, expected);
    // Nothing is lost: the bytes of a non-UTF-8 value are kept, base64-encoded.
    assert!(by_offset[2]["value_base64"].is_string());
    assert_eq!(
        by_offset[3]["value_bytes"],
        serde_json::json!(700 * 1024 + 10)
    );
}

#[tokio::test]
async fn kill_9_at_random_points_then_rerun_loses_and_duplicates_nothing() {
    let topic = fresh_topic(EventKind::User, 3).await;
    let mut g = generator(EventKind::User, 5, "2026-11-25T06:00:00Z", 0.02);
    let recs: Vec<_> = (0..30_000).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(std::process::id() as u64);
    let iterations = std::env::var("STREAMFLOW_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for _ in 0..iterations {
        let files_before = count_files(dir.path());
        // Kill once the drain has written a random number more files: somewhere between
        // batches, mid-batch, or between an upload and its commit.
        let target = files_before + rng.random_range(1..12);
        let mut child = ingest_args(&mut streamflow(), &[&topic], landing, &group)
            .args(["--max-file-records", "400"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let finished = wait_for(
            "files to appear or the drain to end",
            Duration::from_secs(120),
            || {
                if count_files(dir.path()) >= target {
                    return Some(false);
                }
                child.try_wait().unwrap().map(|_| true)
            },
        );
        kill9(&mut child);
        if finished {
            break;
        }
    }
    let out = run_ok(
        ingest_args(&mut streamflow(), &[&topic], landing, &group)
            .args(["--max-file-records", "400"]),
    );
    assert_eq!(summary_of(&out)["complete"], true);
    let landed = read_landing(&Location::parse(landing).unwrap(), &topic).await;
    assert_exactly_once(&landed, &good_ids(&recs));
    assert_each_bad_record_quarantined_once(&landed, &recs);
}

#[tokio::test]
async fn a_run_cut_short_by_its_max_duration_commits_what_it_drained() {
    let topic = fresh_topic(EventKind::User, 2).await;
    let mut g = generator(EventKind::User, 6, "2026-11-25T07:00:00Z", 0.0);
    let recs: Vec<_> = (0..60_000).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs < 200, "the drain never caught up");
        let out = run_ok(
            ingest_args(&mut streamflow(), &[&topic], landing, &group).args([
                "--max-duration",
                "200ms",
                "--max-file-records",
                "1000",
            ]),
        );
        if summary_of(&out)["complete"] == true {
            break;
        }
    }
    assert!(runs > 1, "the cap cut at least one run short");
    assert_exactly_once(
        &read_landing(&Location::parse(landing).unwrap(), &topic).await,
        &good_ids(&recs),
    );
}

#[tokio::test]
async fn a_crash_between_upload_and_commit_is_finished_by_the_next_run_with_the_same_cut() {
    // One partition, 1000 records, files of 300: batches end at 299, 599, 899 and 999. The run
    // crashes right after uploading the last, partial batch and before committing it; then
    // more records arrive. A retry that planned afresh up to the new high watermark would cut
    // 900..1199 and land 900..999 twice.
    let topic = fresh_topic(EventKind::User, 1).await;
    let mut g = generator(EventKind::User, 7, "2026-11-25T05:00:00Z", 0.0);
    let first: Vec<_> = (0..1000).map(|_| g.next_record()).collect();
    send_all(&topic, &first);
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let crashed = ingest_args(&mut streamflow(), &[&topic], landing, &group)
        .args(["--max-file-records", "300", "--crash-after-uploads", "4"])
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the fault hook aborts the run");
    let location = Location::parse(landing).unwrap();
    assert_eq!(
        read_landing(&location, &topic).await.event_ids.len(),
        1000,
        "all four batches were uploaded"
    );

    let more: Vec<_> = (0..500).map(|_| g.next_record()).collect();
    send_all(&topic, &more);
    let resumed = summary_of(&run_ok(
        ingest_args(&mut streamflow(), &[&topic], landing, &group)
            .args(["--max-file-records", "300"]),
    ));
    assert_eq!(
        resumed["topics"][&topic]["partitions"]["0"]["from"], 1000,
        "the landing log knows the uncommitted batch is landed"
    );
    assert_eq!(resumed["topics"][&topic]["partitions"]["0"]["to"], 1500);
    run_ok(
        ingest_args(&mut streamflow(), &[&topic], landing, &group)
            .args(["--max-file-records", "300"]),
    );
    let all: Vec<_> = first.iter().chain(&more).cloned().collect();
    assert_exactly_once(&read_landing(&location, &topic).await, &good_ids(&all));
}

/// A drain of `topics` on `bootstrap` into `landing`, called in-process.
fn watermark_config(
    bootstrap: String,
    topics: &[&str],
    landing: &str,
    group: &str,
) -> streamflow::ingest::IngestConfig {
    use streamflow::ingest::{Bound, IngestConfig, plan::Compression, plan::Rotation};
    IngestConfig {
        bootstrap,
        topics: topics
            .iter()
            .map(|t| (t.to_string(), common::kind_of(t)))
            .collect(),
        landing: Location::parse(landing).unwrap(),
        bound: Bound::Watermark {
            group: group.to_owned(),
        },
        max_duration: Duration::from_secs(120),
        rotation: Rotation {
            max_records: 100,
            max_bytes: 16 << 20,
            compression: Compression::None,
        },
        max_record_bytes: 1 << 20,
        stall_timeout: Duration::from_secs(30),
        upload_retry_timeout: Duration::from_secs(120),
        kafka_overrides: Vec::new(),
        crash_after_uploads: None,
        progress: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_still_loading_is_waited_for_not_a_failure() {
    // A broker that has just started answers OffsetFetch with "coordinator loading" and "not
    // coordinator" until it has read its offsets topic. The shared test broker is long past
    // that and must not be restarted, so librdkafka's mock broker plays the young one: it
    // answers the drain's first OffsetFetch requests with exactly those errors.
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let topic = format!("test_user_events_{}", uuid::Uuid::new_v4().simple());
    cluster.create_topic(&topic, 2, 1).unwrap();
    let mut g = generator(EventKind::User, 11, "2026-11-25T03:00:00Z", 0.0);
    let recs: Vec<_> = (0..300).map(|_| g.next_record()).collect();
    send_to(&cluster.bootstrap_servers(), &topic, &recs, |r| {
        (Some(r.key.as_bytes().to_vec()), r.value.clone())
    });
    cluster.request_errors(
        RDKafkaApiKey::OffsetFetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let config = watermark_config(cluster.bootstrap_servers(), &[&topic], landing, &group);
    let summary = streamflow::ingest::ingest(config, Default::default())
        .await
        .expect("the drain waits out the loading coordinator");
    assert!(summary.complete);
    assert_exactly_once(
        &read_landing(&Location::parse(landing).unwrap(), &topic).await,
        &good_ids(&recs),
    );
}

#[tokio::test]
async fn a_plan_whose_last_offsets_are_never_delivered_still_reaches_its_end() {
    // Aborted transactions and transaction markers take offsets that a read_committed
    // consumer never receives. Batches of 50, one partition:
    //   0..19 aborted, 20 abort marker                 run 1: nothing delivered at all
    //   21..70 committed (one full batch), 71 marker   run 2: the plan ends on a marker
    //   72..81 aborted, 82 marker, 83..92 committed, 93 marker
    // A plan whose end no delivered record reaches must still be committed as done; else
    // every later run resumes it and never reads what follows.
    let topic = fresh_topic(EventKind::User, 1).await;
    let producer = transactional_producer();
    let mut g = generator(EventKind::User, 12, "2026-11-25T08:00:00Z", 0.0);
    let mut batch = |n: usize| -> Vec<_> { (0..n).map(|_| g.next_record()).collect() };
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let location = Location::parse(landing).unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let drain = || {
        summary_of(&run_ok(
            ingest_args(&mut streamflow(), &[&topic], landing, &group)
                .args(["--max-file-records", "50"]),
        ))
    };
    let partition = |s: &serde_json::Value, field: &str| {
        s["topics"][&topic]["partitions"]["0"][field]
            .as_i64()
            .unwrap()
    };

    send_transaction(&producer, &topic, &batch(20), false);
    let s = drain();
    assert_eq!((partition(&s, "to"), s["records"].as_u64()), (21, Some(0)));

    let committed_50 = batch(50);
    send_transaction(&producer, &topic, &committed_50, true);
    let s = drain();
    assert_eq!(
        partition(&s, "from"),
        21,
        "run 1's plan was committed as done"
    );
    assert_eq!((partition(&s, "to"), s["records"].as_u64()), (72, Some(50)));

    send_transaction(&producer, &topic, &batch(10), false);
    let committed_10 = batch(10);
    send_transaction(&producer, &topic, &committed_10, true);
    let s = drain();
    assert_eq!(
        partition(&s, "from"),
        72,
        "run 2's plan was committed as done"
    );
    assert_eq!((partition(&s, "to"), s["records"].as_u64()), (94, Some(10)));
    let s = drain();
    assert_eq!(
        (partition(&s, "from"), partition(&s, "to")),
        (94, 94),
        "nothing left to read"
    );

    let oracle = committed_event_ids(&topic);
    let expected = good_ids(&[committed_50, committed_10].concat());
    assert_eq!(
        oracle, expected,
        "the oracle reads the committed transactions"
    );
    assert_exactly_once(&read_landing(&location, &topic).await, &oracle);
}

/// Every file under `dir`, recursively.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Files under `dir` whose path has no component starting with `.` or `_`: what Spark, DuckDB
/// or `cat */*/*` read from a landing directory.
fn visible_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(['.', '_']) {
                continue;
            }
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn a_write_cut_off_mid_file_leaves_nothing_other_readers_see() {
    let topic = fresh_topic(EventKind::User, 1).await;
    let mut g = generator(EventKind::User, 13, "2026-11-25T09:00:00Z", 0.0);
    let recs: Vec<_> = (0..3000).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());

    // A file size limit of 64 KiB kills the drain (SIGXFSZ) in the middle of writing its first
    // landing file, deterministically: an interrupted write, as a crash would leave it.
    let mut limited = std::process::Command::new("bash");
    limited
        .args(["-c", r#"ulimit -f 64 && exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_streamflow"))
        .env("STREAMFLOW_BOOTSTRAP", bootstrap())
        .env("RUST_LOG", "warn");
    let out = ingest_args(&mut limited, &[&topic], landing, &group)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the size limit cut the drain off");
    for file in visible_files(dir.path()) {
        let name = file.to_string_lossy();
        assert!(
            name.ends_with(".ndjson"),
            "a reader sees the temporary file {name}"
        );
    }

    run_ok(ingest_args(&mut streamflow(), &[&topic], landing, &group));
    assert_exactly_once(
        &read_landing(&Location::parse(landing).unwrap(), &topic).await,
        &good_ids(&recs),
    );
    let hidden: Vec<_> = walkdir_files(dir.path())
        .into_iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert!(
        hidden.is_empty(),
        "the rerun left temporary files behind: {hidden:?}"
    );
}

#[tokio::test]
async fn quarantine_keeps_key_headers_and_value_losslessly() {
    use base64::Engine as _;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let topic = fresh_topic(EventKind::User, 1).await;
    let mut g = generator(EventKind::User, 14, "2026-11-25T10:00:00Z", 0.0);
    let good = g.next_record();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let ts = good.timestamp.timestamp_millis();
    let odd_key: &[u8] = &[0xff, 0xfe, b'u'];
    let headers = || {
        OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some("abc"),
            })
            .insert(Header {
                key: "raw",
                value: Some(&[0u8, 0xff][..]),
            })
            .insert(Header::<&[u8]> {
                key: "none",
                value: None,
            })
    };
    // Offset 0: a good value under a key that is not UTF-8 (a key mismatch).
    producer
        .send(
            BaseRecord::to(&topic)
                .key(odd_key)
                .payload(&good.value)
                .timestamp(ts),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    // Offset 1: a null value, with headers.
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(&topic)
                .key(good.key.as_bytes())
                .headers(headers())
                .timestamp(ts),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    // Offset 2: an empty value.
    producer
        .send(
            BaseRecord::to(&topic)
                .key(good.key.as_bytes())
                .payload(&b""[..])
                .timestamp(ts),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    run_ok(ingest_args(&mut streamflow(), &[&topic], landing, &group));
    let mut q = read_landing(&Location::parse(landing).unwrap(), &topic)
        .await
        .quarantine;
    q.sort_by_key(|l| l["offset"].as_i64());
    assert_eq!(q.len(), 3, "{q:?}");
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 text"))
            .unwrap()
    };

    assert_eq!(b64(&q[0]["key_base64"]), odd_key, "{}", q[0]);
    assert!(q[0]["key"].is_null(), "not replaced by U+FFFD: {}", q[0]);
    assert_eq!(
        q[0]["value"].as_str().map(str::as_bytes),
        Some(&good.value[..])
    );

    assert_eq!(q[1]["key"], good.key.as_str());
    assert!(
        q[1]["value"].is_null() && q[1]["value_base64"].is_null(),
        "a null value: {}",
        q[1]
    );
    let h = &q[1]["headers"];
    assert_eq!(
        (h[0]["key"].as_str(), h[0]["value"].as_str()),
        (Some("trace"), Some("abc")),
        "{h}"
    );
    assert_eq!(h[1]["key"], "raw");
    assert_eq!(b64(&h[1]["value_base64"]), [0u8, 0xff]);
    assert_eq!(h[2]["key"], "none");
    assert!(
        h[2]["value"].is_null() && h[2]["value_base64"].is_null(),
        "{h}"
    );

    assert_eq!(
        q[2]["value"], "",
        "an empty value, not a null one: {}",
        q[2]
    );
    assert!(
        q[2].get("headers")
            .is_none_or(|h| h.as_array().is_some_and(Vec::is_empty))
    );
}

/// The drain's summary figure of one partition.
fn partition_field(summary: &serde_json::Value, topic: &str, partition: i32, field: &str) -> i64 {
    summary["topics"][topic]["partitions"][partition.to_string()][field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} of {topic}/{partition} in {summary}"))
}

/// A fresh topic of user events, its generator, and a local landing directory and consumer
/// group of their own to drain it with.
struct Drains {
    topic: String,
    generator: streamflow::produce::EventGenerator,
    dir: tempfile::TempDir,
    group: String,
}

impl Drains {
    async fn new(partitions: i32, seed: u64) -> Self {
        Self {
            topic: fresh_topic(EventKind::User, partitions).await,
            generator: generator(EventKind::User, seed, "2026-11-25T10:00:00Z", 0.0),
            dir: tempfile::tempdir().unwrap(),
            group: format!("g-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Sends `n` more records.
    fn send(&mut self, n: usize) {
        let recs: Vec<_> = (0..n).map(|_| self.generator.next_record()).collect();
        send_all(&self.topic, &recs);
    }

    fn landing(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// A watermark-mode drain of the topic with `args`.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = streamflow();
        ingest_args(&mut cmd, &[&self.topic], self.landing(), &self.group).args(args);
        cmd
    }

    /// Runs a drain that must succeed; its summary.
    fn run(&self, args: &[&str]) -> serde_json::Value {
        summary_of(&run_ok(&mut self.command(args)))
    }

    /// `[from, to)` of a partition in a summary.
    fn range(&self, summary: &serde_json::Value, partition: i32) -> (i64, i64) {
        (
            partition_field(summary, &self.topic, partition, "from"),
            partition_field(summary, &self.topic, partition, "to"),
        )
    }

    async fn landed(&self) -> LandingContents {
        read_landing(&Location::parse(self.landing()).unwrap(), &self.topic).await
    }
}

#[tokio::test]
async fn committed_offsets_that_disappear_land_nothing_again() {
    // Kafka forgets a group's committed offsets (offsets.retention.minutes after the last
    // commit of a quiet partition, or an operator deletes or resets the group). A drain that
    // resumed from Kafka would start at the earliest offset again and, with more records
    // since, cut the tail differently: 200..249 landed twice. The landing log remembers.
    let mut d = Drains::new(1, 21).await;
    d.send(250);
    d.run(&["--max-file-records", "100"]);
    d.send(100);
    delete_group(&d.group).await;
    let s = d.run(&["--max-file-records", "100"]);
    assert_eq!(d.range(&s, 0), (250, 350), "resumes where the landing ends");
    assert_exactly_once(&d.landed().await, &committed_event_ids(&d.topic));
}

#[tokio::test]
async fn retention_between_a_crash_and_its_retry_lands_nothing_twice() {
    // Files of 300: the crashed run uploaded 0..299 and 300..599 but committed only 300.
    // Retention then deletes everything before 400. A retry from Kafka's committed offset
    // starts at 400, cuts 400..699, lands 400..599 twice and reports 100 records as expired
    // although they were landed.
    let mut d = Drains::new(1, 22).await;
    d.send(1000);
    // Read before retention deletes the start of the topic.
    let oracle = committed_event_ids(&d.topic);
    let crashed = d
        .command(&["--max-file-records", "300", "--crash-after-uploads", "2"])
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the fault hook aborts the run");
    delete_records_before(&d.topic, 0, 400).await;
    let s = d.run(&["--max-file-records", "300"]);
    assert_eq!(s["expired"], 0, "every deleted record had been landed: {s}");
    assert_eq!(d.range(&s, 0).1, 1000);
    assert_exactly_once(&d.landed().await, &oracle);
}

#[tokio::test]
async fn records_retention_deletes_while_the_drain_reads_towards_them_are_counted_as_expired() {
    // The drain reset to the earliest offset without a word: the deleted records were neither
    // landed nor counted, and `complete: true` said nothing was missing.
    let mut d = Drains::new(1, 25).await;
    d.send(20_000);
    let oracle = committed_event_ids(&d.topic);
    // Small fetches and a small pre-fetch queue: most of the partition is still only in Kafka
    // when the drain is frozen after its first files.
    let mut child = d
        .command(&[
            "--max-file-records",
            "200",
            "-X",
            "queued.max.messages.kbytes=64",
            "-X",
            "max.partition.fetch.bytes=16384",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the drain's first files", Duration::from_secs(60), || {
        assert!(child.try_wait().unwrap().is_none(), "the drain ended early");
        (count_files(d.dir.path()) >= 3).then_some(())
    });
    signal(&child, "STOP");
    delete_records_before(&d.topic, 0, 15_000).await;
    signal(&child, "CONT");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary_of(&out);
    let landed = d.landed().await;
    assert_eq!(landed.duplicates().len(), 0);
    assert!(landed.event_ids.keys().all(|id| oracle.contains(id)));
    let expired = s["expired"].as_u64().unwrap_or(0);
    assert!(
        expired > 0,
        "the records deleted mid-run are not counted: {s}"
    );
    assert_eq!(
        landed.event_ids.len() as u64 + expired,
        20_000,
        "every offset is landed or counted as expired: {s}"
    );
    assert_eq!(d.range(&s, 0).1, 20_000);
}

#[tokio::test]
async fn two_drains_at_once_land_each_record_once() {
    // A drain run by hand (its own consumer group, other file sizes) next to the scheduled
    // one: nothing fenced them, and both landed everything under different names. Now the
    // second to claim a range of the landing log stops, and the log, not the group, says what
    // is landed.
    let mut d = Drains::new(3, 23).await;
    d.send(20_000);
    let by_hand = format!("by-hand-{}", uuid::Uuid::new_v4().simple());
    let spawn = |group: &str, files: &str| {
        ingest_args(&mut streamflow(), &[&d.topic], d.landing(), group)
            .args(["--max-file-records", files])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Either may be refused first, on any partition; both may be, on different ones.
    let (a, b) = (spawn(&d.group, "100"), spawn(&by_hand, "70"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("another drain is landing"),
            "a drain failed for another reason: {stderr}"
        );
    }
    assert_eq!(d.run(&["--max-file-records", "100"])["complete"], true);
    assert_exactly_once(&d.landed().await, &committed_event_ids(&d.topic));
}

#[tokio::test]
async fn a_topic_deleted_and_created_again_keeps_what_its_predecessor_landed() {
    // The new topic's offsets start at 0 again: objects named by offsets alone took the old
    // topic's names and replaced what it had landed. Names carry the topic id now.
    let mut d = Drains::new(1, 24).await;
    d.send(150);
    d.run(&["--max-file-records", "100"]);
    let mut expected = committed_event_ids(&d.topic);
    recreate_topic(&d.topic, 1).await;
    d.send(120);
    let s = d.run(&["--max-file-records", "100"]);
    assert_eq!(d.range(&s, 0), (0, 120), "the new topic from its start");
    expected.extend(committed_event_ids(&d.topic));
    assert_eq!(expected.len(), 270);
    assert_exactly_once(&d.landed().await, &expected);
}

#[tokio::test]
async fn interval_replays_with_other_settings_or_more_records_land_each_record_once() {
    // An interval drained with files of 100, then replayed after more of its records arrived,
    // with files of 70 and gzip, then with the defaults: each replay cut other names and
    // landed the same records again. A replay now carries on after what the interval's log
    // holds.
    let mut d = Drains::new(2, 25).await;
    d.send(300);
    let replay = |d: &Drains, extra: &[&str]| {
        let mut cmd = streamflow();
        cmd.args(["ingest", "--landing", d.landing(), "--topic", &d.topic])
            .args(common::schema_flag(&d.topic))
            .args(["--interval", "2026-11-25T10:00:00Z/2026-11-25T11:00:00Z"])
            .args(extra);
        summary_of(&run_ok(&mut cmd))
    };
    let s = replay(&d, &["--max-file-records", "100"]);
    assert_eq!(s["records"], 300);
    assert!(
        s["topics"][&d.topic].get("lag").is_none(),
        "no lag in interval mode: {s}"
    );
    d.send(200);
    let s = replay(&d, &["--max-file-records", "70", "--compression", "gzip"]);
    assert_eq!(s["records"], 200, "only the records that arrived since");
    replay(&d, &[]);
    let landed = d.landed().await;
    assert!(
        landed.objects.iter().any(|o| o.ends_with(".gz")),
        "the replay's own settings apply to what it lands"
    );
    assert_exactly_once(&landed, &committed_event_ids(&d.topic));
}

#[tokio::test]
async fn the_summary_says_how_far_behind_the_topic_the_landing_is() {
    let mut d = Drains::new(2, 26).await;
    d.send(60_000);
    let s = d.run(&["--max-duration", "200ms", "--max-file-records", "1000"]);
    assert_eq!(s["complete"], false, "the cap cut the run short: {s}");
    let landed_to: i64 = (0..2).map(|p| d.range(&s, p).1).sum();
    let behind = high_watermarks(&d.topic).values().sum::<i64>() - landed_to;
    assert!(behind > 0);
    assert_eq!(s["topics"][&d.topic]["lag"], behind, "{s}");
    assert_eq!(
        s["topics"][&d.topic]["lag"],
        60_000 - s["records"].as_i64().unwrap(),
        "every record not landed yet"
    );
    let s = d.run(&["--max-file-records", "1000"]);
    assert_eq!(
        (&s["complete"], &s["topics"][&d.topic]["lag"]),
        (&true.into(), &0.into())
    );
}
