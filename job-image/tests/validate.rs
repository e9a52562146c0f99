//! `streamflow validate`: every kind of check passes on the ETL's output of generated events and
//! catches a deliberately broken copy of it.

mod common;

use std::path::{Path as FsPath, PathBuf};

use streamflow::etl::session::{Profile, SessionSettings};
use streamflow::etl::{self, EtlConfig, write};
use streamflow::events::EventKind;
use streamflow::store::Location;
use streamflow::validate::{self, ChecksFile, Severity, ValidateConfig};
use streamflow_core::Interval;

const DAY: &str = "2026-11-25";

/// Generated events of both topics landed as ingest lays them out (one object per topic),
/// then the ETL run for the day.
async fn landed_and_transformed(dir: &FsPath) -> (PathBuf, PathBuf) {
    let (landing, gold) = (dir.join("landing"), dir.join("gold"));
    for (kind, topic) in [
        (EventKind::User, "user_events"),
        (EventKind::Transaction, "transaction_events"),
    ] {
        let mut generator = common::generator(kind, 7, "2026-11-25T06:00:00Z", 0.0);
        let mut text = Vec::new();
        for _ in 0..1500 {
            text.extend(generator.next_record().value);
            text.push(b'\n');
        }
        let folder = landing.join(format!("{topic}/date={DAY}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join(format!(
                "{topic}-p000-00000000000000000000-00000000000000001499.ndjson"
            )),
            text,
        )
        .unwrap();
    }
    let config = EtlConfig {
        landing: Location::parse(landing.to_str().unwrap()).unwrap(),
        gold: Location::parse(gold.to_str().unwrap()).unwrap(),
        interval: DAY.parse().unwrap(),
        session: SessionSettings {
            spill_dir: dir.join("spill"),
            ..SessionSettings::for_profile(Profile::Development)
        },
        buckets: 2,
        topics: Default::default(),
        allow_empty: false,
    };
    etl::run(&config).await.unwrap();
    (landing, gold)
}

fn copy_dir(from: &FsPath, to: &FsPath) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Rewrites the committed files of a table's partition line by line (header excluded).
fn edit_rows(gold: &FsPath, table: &str, edit: &dyn Fn(usize, &str) -> Option<String>) {
    let dir = gold.join(format!("{table}/date={DAY}"));
    let manifest: write::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("_SUCCESS")).unwrap()).unwrap();
    let mut row = 0;
    for file in &manifest.files {
        let path = dir.join(&file.path);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let mut out = vec![lines.next().unwrap().to_owned()];
        for line in lines {
            if let Some(new) = edit(row, line) {
                out.push(new);
            }
            row += 1;
        }
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
    }
}

/// Replaces the `n`th comma-separated field of the first data row.
fn set_field(gold: &FsPath, table: &str, n: usize, value: &'static str) {
    edit_rows(gold, table, &move |row, line| {
        if row != 0 {
            return Some(line.to_owned());
        }
        let mut fields: Vec<&str> = line.split(',').collect();
        fields[n] = value;
        Some(fields.join(","))
    });
}

async fn check(gold: &FsPath, landing: &FsPath, yaml: &str, interval: &str) -> validate::Report {
    let config = ValidateConfig {
        gold: Location::parse(gold.to_str().unwrap()).unwrap(),
        landing: Some(Location::parse(landing.to_str().unwrap()).unwrap()),
        interval: interval.parse::<Interval>().unwrap(),
        checks: ChecksFile::parse("test", &format!("checks:\n{yaml}")).unwrap(),
        topics: Default::default(),
    };
    validate::validate(&config).await.unwrap()
}

type Break = fn(&FsPath);

/// `streamflow validate` of `interval` with the given checks, gold and landing.
fn validate_command(
    checks: &FsPath,
    gold: impl AsRef<std::ffi::OsStr>,
    landing: &FsPath,
    interval: &str,
) -> std::process::Command {
    let mut cmd = common::streamflow();
    cmd.args(["validate", "--interval", interval])
        .arg("--checks")
        .arg(checks)
        .arg("--gold")
        .arg(gold)
        .arg("--landing")
        .arg(landing);
    cmd
}

#[tokio::test]
async fn each_check_passes_on_good_output_and_catches_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = landed_and_transformed(dir.path()).await;
    // transactions columns: event_id(0) transaction_id(1) event_time(2) event_date(3)
    // user_id(4) session_id(5) amount(6) currency(7) status(8).
    let cases: Vec<(&str, Break)> = vec![
        ("  - {check: non_empty, table: transactions}", |g| {
            edit_rows(g, "transactions", &|_, _| None)
        }),
        (
            "  - {check: not_null, table: transactions, columns: [amount]}",
            |g| set_field(g, "transactions", 6, ""),
        ),
        (
            "  - {check: unique, table: transactions, columns: [transaction_id]}",
            |g| {
                edit_rows(g, "transactions", &|row, line| {
                    Some(if row == 0 {
                        format!("{line}\n{line}")
                    } else {
                        line.to_owned()
                    })
                })
            },
        ),
        (
            "  - {check: accepted_values, table: transactions, column: status, values: [completed, pending, failed, refunded]}",
            |g| set_field(g, "transactions", 8, "done"),
        ),
        (
            "  - {check: range, table: transactions, column: amount, min: 0}",
            |g| set_field(g, "transactions", 6, "-0.01"),
        ),
        (
            "  - {check: relationship, table: transaction_items, column: transaction_id, to_table: transactions, to_column: transaction_id}",
            |g| set_field(g, "transactions", 1, "t-renamed"),
        ),
        (
            "  - {check: row_count_equal, table: transactions, equals_sum_of: [transactions_enriched, orphan_transactions]}",
            |g| {
                edit_rows(g, "orphan_transactions", &|row, line| {
                    (row != 0).then(|| line.to_owned())
                })
            },
        ),
        (
            "  - {check: landing_reconciliation, topic: user_events, table: user_activity}",
            |g| {
                edit_rows(g, "user_activity", &|row, line| {
                    (row != 3).then(|| line.to_owned())
                })
            },
        ),
        (
            "  - {check: freshness, table: user_activity, column: event_time, max_lag: 24h}",
            |g| set_field(g, "user_activity", 2, "2026-11-24T23:59:59.000000Z"),
        ),
        (
            "  - {check: unique, table: user_daily_spend, columns: [event_date, user_id]}",
            |g| {
                std::fs::remove_file(g.join(format!("user_daily_spend/date={DAY}/_SUCCESS")))
                    .unwrap()
            },
        ),
    ];
    for (i, (yaml, break_it)) in cases.into_iter().enumerate() {
        let good = check(&gold, &landing, yaml, DAY).await;
        assert!(
            good.results[0].passed,
            "{yaml} passes on good output: {:?}",
            good.results[0]
        );

        let broken = dir.path().join(format!("broken-{i}"));
        copy_dir(&gold, &broken);
        break_it(&broken);
        let report = check(&broken, &landing, yaml, DAY).await;
        let result = &report.results[0];
        assert!(!result.passed, "{yaml} catches the break: {result:?}");
        assert_eq!(report.failed_errors(), 1);
    }
}

#[tokio::test]
async fn freshness_fails_when_data_stops_early_and_warnings_do_not_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = landed_and_transformed(dir.path()).await;
    // 1,500 user events 500 ms apart from 06:00 end before 07:00, 17 hours before the day ends.
    let report = check(
        &gold,
        &landing,
        "  - {check: freshness, table: user_activity, column: event_time, max_lag: 1h, severity: warn}",
        DAY,
    )
    .await;
    assert!(!report.results[0].passed);
    assert!(
        report.results[0]
            .message
            .contains("before the interval's end"),
        "{:?}",
        report.results[0]
    );
    assert_eq!(report.results[0].severity, Severity::Warn);
    assert_eq!(report.failed_errors(), 0);
    let summary = report.summary(std::time::Instant::now());
    assert!(summary.ok);
    assert_eq!(summary.failed_warnings, 1);
}

#[tokio::test]
async fn the_command_line_passes_the_example_checks_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = landed_and_transformed(dir.path()).await;
    let checks = common::repo_root().join("examples/checks.yaml");
    let report_file = dir.path().join("report.json");
    let out = common::run_ok(
        validate_command(&checks, &gold, &landing, DAY)
            .arg("--report")
            .arg(&report_file),
    );
    let summary = common::summary_of(&out);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["failed_errors"], 0, "{summary}");
    // The example's freshness check (1 h) warns: the generated day ends early in the morning.
    assert_eq!(summary["failed_warnings"], 1, "{summary}");
    let report: validate::Report =
        serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    assert_eq!(
        report.results.len() as u64,
        summary["checks"].as_u64().unwrap()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PASS  unique transactions.transaction_id")
    );

    set_field(&gold, "transactions", 8, "done");
    let out = validate_command(&checks, &gold, &landing, DAY)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an error-severity failure exits non-zero"
    );
    let summary = common::summary_of(&out);
    assert_eq!(summary["ok"], false);
    assert_eq!(
        summary["failures"][0]["name"],
        "accepted_values transactions.status"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FAIL  accepted_values transactions.status")
    );
}

#[tokio::test]
async fn an_interval_whose_tables_are_not_committed_fails_as_invalid_input_not_as_transient() {
    // Retried before: a validate of gold the ETL never wrote read the same nothing on every
    // attempt, spending the run's retries and its SLA.
    let dir = tempfile::tempdir().unwrap();
    let (landing, gold) = landed_and_transformed(dir.path()).await;
    let checks = common::repo_root().join("examples/checks.yaml");
    let out = validate_command(
        &checks,
        &gold,
        &landing,
        "2026-01-01T00:00:00Z/2026-01-02T00:00:00Z",
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(streamflow_core::exit::INVALID_INPUT)),
        "{stderr}"
    );
    assert!(
        stderr.contains("does not hold their tables") && stderr.contains("is not committed"),
        "{stderr}"
    );
    // A store that does not answer is another matter: worth a retry.
    let out = validate_command(&checks, "s3://gold/nothing-here", &landing, DAY)
        .env("AWS_ENDPOINT", "http://127.0.0.1:1")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(streamflow_core::exit::TRANSIENT)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_checks_file_is_quoted_in_a_short_excerpt_not_whole() {
    // Not YAML of the expected shape: one long scalar, which serde's message would quote whole.
    let yaml = "not a list of checks ".repeat(2000);
    let err = ChecksFile::parse("big.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("big.yaml") && err.contains("not a list"),
        "{err}"
    );
    assert!(err.len() < 600, "{} bytes of error: {err}", err.len());
}
