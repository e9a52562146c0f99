//! Local mode against the real Kafka broker: the README's demo command (`scripts/demo --quick`),
//! `streamflow backfill` over several days with its reprocess behaviours, the configuration
//! precedence, and the error when Kafka is not there.
//!
//! Most of these tests use the default topics (`user_events`, `transaction_events`) and keep
//! apart by event time (each test has its own past days) and by consumer group (each backfill
//! drains the topics under a group of its own, into a landing zone of its own). A rerun of a test on the same broker sends the same records (same seeds) again;
//! the ETL keeps one row per event id, so gold counts stay exact.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{bootstrap, repo_root, run_ok, send_all, streamflow};
use serde_json::Value;
use streamflow::events::{EventKind, TRANSACTION_EVENTS, USER_EVENTS};
use streamflow::produce::{EventGenerator, GeneratedRecord, GeneratorConfig};

const GOLD_TABLES: [&str; 3] = ["user_activity", "transactions", "user_daily_spend"];

/// `per_day` good records of one kind on each of `days` days from `first` (a date). The n-th
/// record is timestamped in `[n·spacing, (n+1)·spacing)` from the first midnight (the generator
/// jitters within its slot), so each day gets exactly `per_day`.
fn records(
    kind: EventKind,
    seed: u64,
    first: &str,
    days: u32,
    per_day: u32,
) -> Vec<GeneratedRecord> {
    let mut generator = EventGenerator::new(
        kind,
        GeneratorConfig {
            seed,
            start: format!("{first}T00:00:00Z").parse().unwrap(),
            spacing: Duration::from_secs(86_400 / u64::from(per_day)),
            users: 20,
            bad_ratio: 0.0,
        },
    );
    (0..days * per_day)
        .map(|_| generator.next_record())
        .collect()
}

fn backfill(gold: &Path, landing: &Path, group: &str, extra: &[&str]) -> Command {
    let mut cmd = streamflow();
    cmd.current_dir(repo_root())
        .arg("backfill")
        .args(["--group", group])
        .args(["--gold", gold.to_str().unwrap()])
        .args(["--landing", landing.to_str().unwrap()])
        .env("STREAMFLOW_OUTPUT", "json")
        .args(extra);
    cmd
}

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON summary ({e}): {stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn manifest(gold: &Path, table: &str, date: &str) -> Value {
    let path = gold.join(format!("{table}/date={date}/_SUCCESS"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn record(gold: &Path, day: &str, next: &str) -> Value {
    let name = format!(
        "_intervals/{}T000000Z_{}T000000Z.json",
        day.replace('-', ""),
        next.replace('-', "")
    );
    serde_json::from_slice(
        &std::fs::read(gold.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
    .unwrap()
}

fn dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn demo_quick_prints_the_table_of_what_it_produced_and_names_gold_files_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/demo"))
        .args(["--quick", "--data", data.to_str().unwrap()])
        .env("STREAMFLOW_BIN", env!("CARGO_BIN_EXE_streamflow"))
        .env("STREAMFLOW_BOOTSTRAP", bootstrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The producer's summary says what was sent; the run's table must show all of it landed
    // (good records) or quarantined (the 1% malformed ones), per topic.
    let produced: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("the producer's JSON summary line");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(data.join("run-summary.json")).unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    for topic in [USER_EVENTS, TRANSACTION_EVENTS] {
        let sent = produced["per_topic"][topic].as_u64().unwrap();
        assert_eq!(sent, 600, "--quick sends 600 per topic");
        let row: Vec<String> = stdout
            .lines()
            .find(|l| l.contains(&format!(" {topic} ")))
            .unwrap_or_else(|| panic!("no table row for {topic} in\n{stdout}"))
            .split(['│', '┆'])
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        let landed: u64 = row[1].parse().unwrap();
        let quarantined: u64 = row[2].parse().unwrap();
        assert_eq!(landed + quarantined, sent, "row {row:?}");
        assert!(quarantined > 0 && landed > 0, "row {row:?}");
        assert_eq!(summary["ingest"]["topics"][topic]["records"], landed);
    }
    assert!(
        stdout.contains("Checks: 17 passed, 0 failed (error)"),
        "{stdout}"
    );

    // The gold files it names exist, and are the ones the ETL wrote.
    let named: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(".csv"))
        .collect();
    assert_eq!(
        named.len() as u64,
        summary["etl"]["files"].as_u64().unwrap()
    );
    for file in &named {
        assert!(Path::new(file).is_file(), "{file} named but missing");
        assert!(
            file.starts_with(data.join("gold").to_str().unwrap()),
            "{file}"
        );
    }
    let user_activity_rows: u64 = named
        .iter()
        .filter(|f| f.contains("/user_activity/"))
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count() as u64 - 1)
        .sum();
    assert_eq!(
        user_activity_rows,
        summary["ingest"]["topics"][USER_EVENTS]["records"]
            .as_u64()
            .unwrap()
    );

    // The broker the test run started is still there: the demo stops only what it started.
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/kafka.sh"))
        .arg("status")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "the demo stopped a Kafka it did not start"
    );
}

#[test]
fn backfill_writes_every_partition_once_and_a_rerun_does_nothing() {
    let days = ["2025-01-10", "2025-01-11", "2025-01-12"];
    // The same seed and spacing for both kinds pick the same user for the n-th record of each,
    // so every user who buys on a day was active that day (the `relationship` checks).
    send_all(USER_EVENTS, &records(EventKind::User, 71, days[0], 3, 48));
    send_all(
        TRANSACTION_EVENTS,
        &records(EventKind::Transaction, 71, days[0], 3, 48),
    );
    let dir = tempfile::tempdir().unwrap();
    let (gold, landing) = (dir.path().join("gold"), dir.path().join("landing"));
    let range = ["--from", "2025-01-10", "--to", "2025-01-13", "--step", "1d"];
    let group = format!("test-backfill-{}", uuid::Uuid::new_v4().simple());

    let first = json_of(&run_ok(
        backfill(&gold, &landing, &group, &range).args(["--parallel", "2"]),
    ));
    assert_eq!(first["ingest"]["mode"], "watermark");
    assert!(
        first["ingest"]["topics"][USER_EVENTS]["records"]
            .as_u64()
            .unwrap()
            >= 144
    );
    assert_eq!(
        (
            &first["ok"],
            &first["planned"],
            &first["ran"],
            &first["succeeded"]
        ),
        (
            &Value::Bool(true),
            &Value::from(3),
            &Value::from(3),
            &Value::from(3)
        ),
        "{first}"
    );
    for (i, day) in days.iter().enumerate() {
        let item = &first["intervals"][i];
        assert_eq!(item["prior"], "never");
        assert!(item["interval"].as_str().unwrap().starts_with(day));
        let run = &item["run"];
        assert_eq!(run["ok"], true, "{run}");
        assert!(
            run.get("ingest").is_none(),
            "the drain ran once, before the intervals"
        );
        assert_eq!(run["etl"]["partitions"], 1, "one date per interval");
        assert_eq!(run["etl"]["tables"]["user_activity"]["rows"], 48);
        assert_eq!(run["etl"]["tables"]["transactions"]["rows"], 48);
    }
    // Every table has exactly the three dates, each committed once (one version directory)
    // and covering its whole day, with that day's rows.
    let dates: Vec<String> = days.iter().map(|d| format!("date={d}")).collect();
    for table in GOLD_TABLES {
        assert_eq!(dirs(&gold.join(table)), dates, "{table}");
        for day in days {
            let versions = dirs(&gold.join(format!("{table}/date={day}")));
            assert_eq!(versions.len(), 1, "{table} {day}: {versions:?}");
            let m = manifest(&gold, table, day);
            assert_eq!(
                m["covered"],
                format!("{day}T00:00:00Z/{}", first_next_day(day)),
                "{table}"
            );
        }
    }
    for day in days {
        assert_eq!(manifest(&gold, "user_activity", day)["rows"], 48);
        assert_eq!(
            record(&gold, day, &first_next_day(day)[..10])["outcome"],
            "succeeded"
        );
    }

    // A rerun finds every interval done: no stage runs, nothing changes.
    let before = (snapshot(&gold), snapshot(&landing));
    let rerun = json_of(&run_ok(&mut backfill(&gold, &landing, &group, &range)));
    assert_eq!(
        (&rerun["ran"], &rerun["skipped"], &rerun["ok"]),
        (&Value::from(0), &Value::from(3), &Value::Bool(true)),
        "{rerun}"
    );
    for item in rerun["intervals"].as_array().unwrap() {
        assert_eq!(
            (&item["prior"], &item["action"]),
            (&Value::from("succeeded"), &Value::from("skipped"))
        );
        assert!(item.get("run").is_none(), "a stage ran: {item}");
    }
    assert!(rerun.get("ingest").is_none(), "ingest ran: {rerun}");
    assert!(
        before == (snapshot(&gold), snapshot(&landing)),
        "the rerun changed files"
    );

    // The readable form says so too.
    let mut table = backfill(&gold, &landing, &group, &range);
    table.args(["--output", "table"]);
    let text = String::from_utf8_lossy(&run_ok(&mut table).stdout).into_owned();
    assert!(text.contains("ran 0, skipped 3"), "{text}");
    assert!(text.contains("Nothing to do"), "{text}");
}

fn first_next_day(day: &str) -> String {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    format!("{}T00:00:00Z", d.succ_opt().unwrap())
}

/// The event dates of every record now in the shared topics: the date folders of a drain of
/// both into a landing zone of its own.
fn dates_in_shared_topics() -> std::collections::BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let group = format!("test-dates-{}", uuid::Uuid::new_v4().simple());
    run_ok(streamflow().current_dir(repo_root()).args([
        "ingest",
        "--group",
        &group,
        "--landing",
        dir.path().to_str().unwrap(),
    ]));
    let mut dates = std::collections::BTreeSet::new();
    for topic in [USER_EVENTS, TRANSACTION_EVENTS] {
        let Ok(folders) = std::fs::read_dir(dir.path().join(topic)) else {
            continue;
        };
        for folder in folders.flatten() {
            let name = folder.file_name().to_string_lossy().into_owned();
            if let Some(date) = name.strip_prefix("date=") {
                dates.insert(date.to_owned());
            }
        }
    }
    dates
}

#[test]
fn reprocess_failed_runs_only_failed_intervals_and_completed_runs_all_again() {
    // Days of their own on every run: a rerun of this test must find the last day without
    // transactions again, so it cannot reuse the days (and late records) of an earlier run.
    // The topics are shared and kept between runs, and each drain reads them whole, so the
    // three days are drawn from 1971-2014 (no other test uses them; Kafka refuses timestamps
    // before 1970, and the records' timestamps are their event times) among the days without
    // records in the topics. Drawn at random alone, a run could meet an earlier run's days on
    // the same broker (the likely cause of one failed CI run).
    let used = dates_in_shared_topics();
    let start = (uuid::Uuid::new_v4().as_u128() % 16_000) as u64;
    let epoch = chrono::NaiveDate::from_ymd_opt(1971, 1, 1).unwrap();
    let first_day = (0..16_000)
        .map(|k| epoch + chrono::Days::new((start + k) % 16_000))
        .find(|day| (0..3).all(|i| !used.contains(&(*day + chrono::Days::new(i)).to_string())))
        .expect("three days in a row without records in 1971-2014");
    let day_names: Vec<String> = (0..4)
        .map(|i| (first_day + chrono::Days::new(i)).to_string())
        .collect();
    let days = [&day_names[0][..], &day_names[1][..], &day_names[2][..]];
    let end = &day_names[3][..];
    send_all(USER_EVENTS, &records(EventKind::User, 81, days[0], 3, 24));
    // No transactions on the last day yet: its `non_empty` check (severity error) fails.
    let transactions = records(EventKind::Transaction, 81, days[0], 3, 24);
    let (early, late) = transactions.split_at(48);
    send_all(TRANSACTION_EVENTS, early);
    let dir = tempfile::tempdir().unwrap();
    let (gold, landing) = (dir.path().join("gold"), dir.path().join("landing"));
    let range = ["--from", days[0], "--to", end, "--backwards"];
    let group = format!("test-reprocess-{}", uuid::Uuid::new_v4().simple());

    let out = backfill(&gold, &landing, &group, &range).output().unwrap();
    assert!(
        !out.status.success(),
        "a failed interval fails the backfill"
    );
    let first = json_of(&out);
    assert_eq!(
        (&first["succeeded"], &first["failed"]),
        (&Value::from(2), &Value::from(1))
    );
    // --backwards: the newest interval first.
    let newest = &first["intervals"][0];
    assert!(newest["interval"].as_str().unwrap().starts_with(days[2]));
    assert_eq!(newest["run"]["failed_stage"], "validate", "{newest}");
    assert_eq!(record(&gold, days[2], end)["outcome"], "failed");
    assert_eq!(record(&gold, days[0], days[1])["outcome"], "succeeded");

    // The default skips it (and says how to run it again), without failing.
    let out = run_ok(backfill(&gold, &landing, &group, &range).args(["--output", "table"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--reprocess failed"), "{text}");

    // The missing transactions arrive; --reprocess failed runs that interval only.
    send_all(TRANSACTION_EVENTS, late);
    let first_day_gold = gold.join(format!("user_activity/date={}", days[0]));
    let old_gold = snapshot(&first_day_gold);
    let second = json_of(&run_ok(
        backfill(&gold, &landing, &group, &range).args(["--reprocess", "failed"]),
    ));
    assert_eq!(
        (&second["ran"], &second["succeeded"]),
        (&Value::from(1), &Value::from(1)),
        "{second}"
    );
    let ran: Vec<&Value> = second["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "ran")
        .collect();
    assert!(ran[0]["interval"].as_str().unwrap().starts_with(days[2]));
    assert_eq!(ran[0]["run"]["etl"]["tables"]["transactions"]["rows"], 24);
    assert_eq!(record(&gold, days[2], end)["outcome"], "succeeded");
    assert!(old_gold == snapshot(&first_day_gold));

    // --reprocess completed runs all three again and rewrites identical partitions.
    let before = snapshot(&gold);
    let third = json_of(&run_ok(backfill(&gold, &landing, &group, &range).args([
        "--reprocess",
        "completed",
        "--parallel",
        "3",
    ])));
    assert_eq!(
        (&third["ran"], &third["succeeded"]),
        (&Value::from(3), &Value::from(3)),
        "{third}"
    );
    let after = snapshot(&gold);
    let tables = |s: &BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, Vec<u8>> {
        s.iter()
            .filter(|(p, _)| !p.to_string_lossy().contains("/_intervals/"))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect()
    };
    assert!(
        tables(&before) == tables(&after),
        "a rerun of the same data changed gold files"
    );
}

#[test]
fn configuration_file_environment_and_flags_take_precedence_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamflow.yaml");
    std::fs::write(
        &config,
        format!(
            "gold: {}\nbackfill:\n  step: 2d\n  reprocess: completed\n",
            dir.path().join("gold-from-file").display()
        ),
    )
    .unwrap();
    let dry = |env_step: Option<&str>, flag_step: Option<&str>| -> Value {
        let mut cmd = streamflow();
        cmd.args([
            "backfill",
            "--from",
            "2025-03-01",
            "--to",
            "2025-03-05",
            "--dry-run",
        ])
        .args(["--output", "json"])
        .env("STREAMFLOW_CONFIG", &config)
        .env_remove("STREAMFLOW_STEP");
        if let Some(step) = env_step {
            cmd.env("STREAMFLOW_STEP", step);
        }
        if let Some(step) = flag_step {
            cmd.args(["--step", step]);
        }
        json_of(&run_ok(&mut cmd))
    };
    let from_file = dry(None, None);
    assert_eq!(
        (&from_file["step"], &from_file["planned"]),
        (&Value::from("2d"), &Value::from(2))
    );
    assert_eq!(from_file["reprocess"], "Completed");
    assert!(
        dir.path().join("gold-from-file").is_dir(),
        "gold came from the file"
    );
    let from_env = dry(Some("1d"), None);
    assert_eq!(from_env["planned"], 4);
    let from_flag = dry(Some("1d"), Some("4d"));
    assert_eq!(from_flag["planned"], 1);

    std::fs::write(&config, "golden: x\n").unwrap();
    let mut cmd = streamflow();
    cmd.args([
        "backfill",
        "--from",
        "2025-03-01",
        "--to",
        "2025-03-02",
        "--dry-run",
    ])
    .env("STREAMFLOW_CONFIG", &config);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown setting `golden`"), "{stderr}");
}

#[test]
fn run_without_kafka_says_how_to_start_it_and_records_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let gold = dir.path().join("gold");
    let mut cmd = streamflow();
    cmd.current_dir(repo_root())
        .args([
            "run",
            "--interval",
            "2025-04-01",
            "--bootstrap",
            "127.0.0.1:9",
        ])
        .args(["--gold", gold.to_str().unwrap()])
        .args(["--landing", dir.path().join("landing").to_str().unwrap()]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scripts/kafka.sh start"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("│ ingest") && l.contains("FAILED")),
        "{stdout}"
    );
    let recorded = record(&gold, "2025-04-01", "2025-04-02");
    assert_eq!(
        (&recorded["outcome"], &recorded["failed_stage"]),
        (&Value::from("failed"), &Value::from("ingest"))
    );
}

#[test]
fn interval_records_are_kept_in_an_s3_gold_store_too() {
    // No ingest and an empty landing zone: the ETL writes empty tables and `non_empty` fails,
    // so the run is recorded as failed, in S3, where a backfill finds it.
    let landing = common::s3_landing();
    let gold = format!("s3://gold/test-{}", uuid::Uuid::new_v4().simple());
    let mut run = streamflow();
    common::s3_env(&mut run)
        .current_dir(repo_root())
        .args(["run", "--interval", "2025-05-01", "--ingest", "none"])
        .args(["--landing", &landing, "--gold", &gold, "--output", "json"]);
    let out = run.output().unwrap();
    assert!(!out.status.success(), "an empty interval fails its checks");
    let summary = json_of(&out);
    assert_eq!(summary["failed_stage"], "validate", "{summary}");
    assert!(summary.get("ingest").is_none());

    let mut dry = streamflow();
    common::s3_env(&mut dry)
        .current_dir(repo_root())
        .args([
            "backfill",
            "--from",
            "2025-05-01",
            "--to",
            "2025-05-03",
            "--dry-run",
        ])
        .args(["--landing", &landing, "--gold", &gold, "--output", "json"]);
    let plan = json_of(&run_ok(&mut dry));
    let states: Vec<(&str, &str)> = plan["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["prior"].as_str().unwrap(), i["action"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("failed", "skipped"), ("never", "would run")]);
}

#[test]
fn backfill_with_interval_ingest_lands_each_interval_in_its_own_drain() {
    // Interval mode finds offsets by time, which fits records timestamped as they arrive: these
    // are timestamped seconds ago, after everything else in the topics, and have a seed (so
    // event ids) of their own.
    let seed = (uuid::Uuid::new_v4().as_u128() % u128::from(u32::MAX)) as u64;
    let start = chrono::Utc::now() - chrono::Duration::seconds(20);
    let generate = |kind| -> Vec<GeneratedRecord> {
        let mut g = EventGenerator::new(
            kind,
            GeneratorConfig {
                seed,
                start,
                spacing: Duration::from_millis(50),
                users: 20,
                bad_ratio: 0.0,
            },
        );
        (0..100).map(|_| g.next_record()).collect()
    };
    let users = generate(EventKind::User);
    send_all(USER_EVENTS, &users);
    send_all(TRANSACTION_EVENTS, &generate(EventKind::Transaction));
    let first = users[0].timestamp.date_naive();
    let last = users[users.len() - 1].timestamp.date_naive();
    let (from, to) = (first.to_string(), last.succ_opt().unwrap().to_string());

    let dir = tempfile::tempdir().unwrap();
    let (gold, landing) = (dir.path().join("gold"), dir.path().join("landing"));
    let group = format!("test-unused-{}", uuid::Uuid::new_v4().simple());
    let summary = json_of(&run_ok(
        backfill(&gold, &landing, &group, &["--from", &from, "--to", &to]).args([
            "--ingest",
            "interval",
            "--parallel",
            "2",
        ]),
    ));
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(
        summary.get("ingest").is_none(),
        "no drain before the intervals"
    );
    let mut gold_ids = String::new();
    for item in summary["intervals"].as_array().unwrap() {
        let run = &item["run"];
        assert_eq!(run["ingest"]["mode"], "interval", "{run}");
        for file in run["gold_files"].as_array().unwrap() {
            let file = file.as_str().unwrap();
            if file.contains("/user_activity/") {
                gold_ids.push_str(&std::fs::read_to_string(file).unwrap());
            }
        }
    }
    for id in common::good_ids(&users) {
        assert!(gold_ids.contains(&id), "event {id} is not in user_activity");
    }
}

/// Every gold CSV file under `gold` with its bytes, by its path below it without the version
/// folder (`v-<hash>`, named after the partition's inputs, landing object names among them).
fn gold_tables(gold: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(gold)
        .into_iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "csv"))
        .map(|(path, bytes)| {
            let below = path.strip_prefix(gold).unwrap();
            let unversioned = below
                .components()
                .filter(|c| !c.as_os_str().to_string_lossy().starts_with("v-"))
                .collect();
            (unversioned, bytes)
        })
        .collect()
}

#[test]
fn topics_of_other_names_mapped_once_give_the_gold_of_the_default_names() {
    let day = "2025-07-14";
    let users = records(EventKind::User, 97, day, 1, 48);
    let transactions = records(EventKind::Transaction, 97, day, 1, 48);
    // The default names: the shared topics, on a day of this test's own.
    send_all(USER_EVENTS, &users);
    send_all(TRANSACTION_EVENTS, &transactions);
    // Other names, which say nothing of their schema: topics of this test's own.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (clicks, payments) = (
        format!("test_clicks_{suffix}"),
        format!("test_payments_{suffix}"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(common::create_topic(&clicks, 6));
    runtime.block_on(common::create_topic(&payments, 6));
    send_all(&clicks, &users);
    send_all(&payments, &transactions);

    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, config: Option<&Path>| -> (PathBuf, Value) {
        let (gold, landing) = (
            dir.path().join(name).join("gold"),
            dir.path().join(name).join("landing"),
        );
        let group = format!("test-topics-{name}-{suffix}");
        let mut cmd = streamflow();
        cmd.current_dir(repo_root())
            .args([
                "run",
                "--interval",
                day,
                "--ingest",
                "watermark",
                "--group",
                &group,
            ])
            .args(["--gold", gold.to_str().unwrap()])
            .args(["--landing", landing.to_str().unwrap()])
            .args(["--output", "json"]);
        if let Some(config) = config {
            cmd.env("STREAMFLOW_CONFIG", config);
        }
        let summary = json_of(&run_ok(&mut cmd));
        assert_eq!(summary["ok"], true, "{summary}");
        (gold, summary)
    };
    let (default_gold, _) = run("default", None);
    // The mapping said once, in the configuration file: every stage follows it.
    let config = dir.path().join("streamflow.yaml");
    std::fs::write(
        &config,
        format!("user-events-topic: {clicks}\ntransaction_events_topic: {payments}\n"),
    )
    .unwrap();
    let (renamed_gold, summary) = run("renamed", Some(&config));
    assert_eq!(
        summary["ingest"]["topics"][&clicks]["records"], 48,
        "{summary}"
    );
    assert_eq!(
        summary["ingest"]["topics"][&payments]["records"], 48,
        "{summary}"
    );
    assert_eq!(summary["etl"]["read"][&payments]["rows"], 48, "{summary}");
    assert_eq!(summary["validate"]["failed_errors"], 0, "{summary}");

    let (expected, renamed) = (gold_tables(&default_gold), gold_tables(&renamed_gold));
    assert!(
        expected.keys().any(|p| p.starts_with("user_activity"))
            && expected.keys().any(|p| p.starts_with("transactions")),
        "{:?}",
        expected.keys()
    );
    assert_eq!(
        renamed.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    // Row for row; the order of rows within a file follows the landing objects' order, which
    // the topics' offsets decide.
    let rows = |bytes: &[u8]| {
        let mut rows: Vec<String> = String::from_utf8_lossy(bytes)
            .lines()
            .map(String::from)
            .collect();
        rows.sort();
        rows
    };
    for (path, bytes) in &expected {
        assert_eq!(rows(&renamed[path]), rows(bytes), "{}", path.display());
    }

    // A topic no schema is mapped to is refused before anything is read, naming it.
    let landing = dir.path().join("unmapped");
    for command in [
        vec![
            "ingest",
            "--topic",
            &clicks,
            "--landing",
            landing.to_str().unwrap(),
        ],
        vec!["produce", "--topic", &clicks, "--count", "1"],
    ] {
        let out = streamflow().args(&command).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{command:?}: {stderr}");
        assert!(
            stderr.contains(&format!("topic {clicks} has no schema"))
                && stderr.contains("--user-events-topic"),
            "{command:?}: {stderr}"
        );
        assert!(!landing.exists(), "nothing landed");
    }
}
