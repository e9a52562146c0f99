//! The readable summaries of `streamflow run` and `streamflow backfill`: small tables for people
//! (the JSON summaries are for programs).

use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table, presets};
use streamflow_core::{BackfillSummary, RunSummary};

/// A table whose columns named in `numeric` are right-aligned.
fn table(header: &[&str], numeric: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    for &i in numeric {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// What `streamflow run` prints for people.
pub fn run(summary: &RunSummary) -> String {
    let mut out = String::new();
    let verdict = if summary.ok { "succeeded" } else { "FAILED" };
    let _ = writeln!(
        out,
        "streamflow run {}: {verdict} in {}",
        summary.interval,
        duration(summary.duration_ms)
    );

    let mut stages = table(&["stage", "result", "duration"], &[2]);
    let failed = summary.failed_stage.as_deref();
    let result = |stage: &str, ran_ms: Option<u64>| -> (String, String) {
        match (ran_ms, failed == Some(stage)) {
            (_, true) => ("FAILED".to_owned(), "-".to_owned()),
            (Some(ms), false) => ("ok".to_owned(), duration(ms)),
            (None, false) => ("not run".to_owned(), "-".to_owned()),
        }
    };
    let ingest_ms = summary.ingest.as_ref().map(|s| s.duration_ms);
    let etl_ms = summary.etl.as_ref().map(|s| s.duration_ms);
    let validate_ms = summary.validate.as_ref().map(|s| s.duration_ms);
    for (stage, ms) in [
        ("ingest", ingest_ms),
        ("etl", etl_ms),
        ("validate", validate_ms),
    ] {
        let (result, took) = result(stage, ms);
        stages.add_row(vec![stage.to_owned(), result, took]);
    }
    let _ = writeln!(out, "{stages}");

    if let Some(ingest) = &summary.ingest {
        let mut topics = table(
            &["topic", "landed", "quarantined", "bytes", "files"],
            &[1, 2, 3, 4],
        );
        for (name, t) in &ingest.topics {
            topics.add_row(vec![
                name.clone(),
                t.records.to_string(),
                t.quarantined.to_string(),
                t.bytes.to_string(),
                String::new(),
            ]);
        }
        topics.add_row(vec![
            "total".to_owned(),
            ingest.records.to_string(),
            ingest.quarantined.to_string(),
            ingest.bytes.to_string(),
            ingest.files.to_string(),
        ]);
        let _ = writeln!(out, "Ingest ({} mode):\n{topics}", ingest.mode);
        if ingest.skipped > 0 || ingest.expired > 0 {
            let _ = writeln!(
                out,
                "  {} records read outside the interval, {} expired by retention",
                ingest.skipped, ingest.expired
            );
        }
    }

    if let Some(etl) = &summary.etl {
        let mut tables = table(&["gold table", "rows", "files", "location"], &[1, 2]);
        for (name, t) in &etl.tables {
            tables.add_row(vec![
                name.clone(),
                t.rows.to_string(),
                t.files.to_string(),
                format!("{}/{name}/", summary.gold.trim_end_matches('/')),
            ]);
        }
        let _ = writeln!(out, "ETL:\n{tables}");
    }

    if let Some(v) = &summary.validate {
        let _ = writeln!(
            out,
            "Checks: {} passed, {} failed (error), {} failed (warn), of {}",
            v.passed, v.failed_errors, v.failed_warnings, v.checks
        );
        for f in &v.failures {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                f.severity.to_uppercase(),
                f.name,
                f.message
            );
        }
    }
    if let Some(error) = &summary.error {
        let _ = writeln!(
            out,
            "Error in {}: {error}",
            summary.failed_stage.as_deref().unwrap_or("run")
        );
    }
    let _ = writeln!(out, "Landing zone: {}", summary.landing);
    let _ = writeln!(
        out,
        "Gold tables:  {} ({} CSV files for this interval)",
        summary.gold,
        summary
            .gold_files
            .iter()
            .filter(|f| f.ends_with(".csv"))
            .count()
    );
    out
}

/// What `streamflow backfill` prints for people.
pub fn backfill(summary: &BackfillSummary) -> String {
    let mut out = String::new();
    let mut t = table(
        &[
            "interval",
            "before",
            "action",
            "landed",
            "gold rows",
            "checks passed",
            "result",
            "duration",
        ],
        &[3, 4, 5, 7],
    );
    for i in &summary.intervals {
        let run = i.run.as_ref();
        let ingest = run.and_then(|r| r.ingest.as_ref());
        let etl = run.and_then(|r| r.etl.as_ref());
        let validate = run.and_then(|r| r.validate.as_ref());
        let result = match run {
            None => "-".to_owned(),
            Some(r) if r.ok => "ok".to_owned(),
            Some(r) => format!("FAILED ({})", r.failed_stage.as_deref().unwrap_or("run")),
        };
        t.add_row(vec![
            i.interval.clone(),
            i.prior.clone(),
            i.action.clone(),
            ingest.map_or("-".to_owned(), |s| s.records.to_string()),
            etl.map_or("-".to_owned(), |s| s.rows.to_string()),
            validate.map_or("-".to_owned(), |s| format!("{}/{}", s.passed, s.checks)),
            result,
            run.map_or("-".to_owned(), |r| duration(r.duration_ms)),
        ]);
    }
    let mode = if summary.dry_run { " (dry run)" } else { "" };
    let _ = writeln!(
        out,
        "streamflow backfill {}..{} step {} reprocess {}{mode}",
        summary.from, summary.to, summary.step, summary.reprocess
    );
    let _ = writeln!(out, "{t}");
    if let Some(ingest) = &summary.ingest {
        let _ = writeln!(
            out,
            "One watermark drain before the intervals: {} records landed, {} quarantined, {}",
            ingest.records,
            ingest.quarantined,
            duration(ingest.duration_ms)
        );
    }
    let verb = if summary.dry_run { "would run" } else { "ran" };
    let _ = writeln!(
        out,
        "{} intervals: {verb} {}, skipped {}; {} succeeded, {} failed; {}",
        summary.planned,
        summary.ran,
        summary.skipped,
        summary.succeeded,
        summary.failed,
        duration(summary.duration_ms)
    );
    let failed_before = summary
        .intervals
        .iter()
        .filter(|i| i.action == "skipped" && i.prior == "failed")
        .count();
    if failed_before > 0 {
        let _ = writeln!(
            out,
            "{failed_before} skipped interval(s) failed before: rerun with --reprocess failed to run them again"
        );
    }
    if summary.ran == 0 && summary.planned > 0 && !summary.dry_run {
        let _ = writeln!(
            out,
            "Nothing to do: every interval has a record of its last run (--reprocess completed runs them again)"
        );
    }
    out
}
