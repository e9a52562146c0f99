//! `streamflow backfill`: the local counterpart of the Backfill resource. The range is cut into
//! intervals by core's planning (the operator's too), each interval's last outcome is read from
//! its record in the gold store, and the intervals the reprocess behaviour selects run through
//! the same pipeline as `streamflow run`, a bounded number at a time.
//!
//! Ingest is the one shared resource. By default one watermark drain of the consumer group runs
//! before the intervals, which then only build and check; with `--ingest interval` each interval
//! lands its own records, one drain at a time. Never two drains of one consumer group at once:
//! docs/local.md says why.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use streamflow::ingest::{Bound, StopFlag};
use streamflow::outcome;
use streamflow::store::Location;
use streamflow_core::backfill::{parse_step, plan_intervals};
use streamflow_core::interval::parse_time;
use streamflow_core::{BackfillInterval, BackfillSummary, Interval, PriorOutcome, Reprocess};
use tokio::sync::Mutex;

use super::report;
use super::run::{IngestMode, IngestStep, OutputArgs, Pipeline, PipelineArgs};
use super::stages::{self, KafkaArgs};
use super::ui::Ui;

const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Args, Clone, Debug)]
pub struct BackfillArgs {
    /// Start of the range (RFC 3339 or a date), a UTC midnight.
    #[arg(long, value_parser = parse_time)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the range, exclusive: `from` plus a whole number of steps.
    #[arg(long, value_parser = parse_time)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// Length of each interval: whole days (1d, 2d, ...), since gold partitions are dates and a
    /// shorter interval would replace its date's partition with part of the day.
    #[arg(long, env = "STREAMFLOW_STEP", default_value = "1d")]
    pub step: String,
    /// Intervals run at once (ingest still drains one at a time).
    #[arg(long, env = "STREAMFLOW_PARALLEL", default_value_t = 2)]
    pub parallel: usize,
    /// Which intervals with a record of an earlier run to run again: none (only those never
    /// run), failed (also those that failed), completed (all).
    #[arg(long, env = "STREAMFLOW_REPROCESS", default_value = "none", value_parser = parse_reprocess)]
    pub reprocess: Reprocess,
    /// Run the newest interval first.
    #[arg(long)]
    pub backwards: bool,
    /// Print what would run; run and record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How records reach the landing zone: watermark (one drain of --group before the
    /// intervals run), interval (each interval lands its own records, one drain at a time) or
    /// none. docs/local.md compares them.
    #[arg(long = "ingest", env = "STREAMFLOW_INGEST", value_name = "MODE", value_enum, default_value_t = IngestMode::Watermark)]
    pub ingest_mode: IngestMode,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_reprocess(s: &str) -> Result<Reprocess, String> {
    s.parse()
        .map_err(|e: streamflow_core::backfill::BackfillError| e.to_string())
}

/// The intervals of the range; whole days from a midnight, so each gold partition (a date) is
/// written by exactly one interval.
pub fn plan(args: &BackfillArgs) -> anyhow::Result<Vec<Interval>> {
    let step = parse_step(&args.step)?;
    anyhow::ensure!(
        step.as_secs() % DAY.as_secs() == 0 && step.subsec_nanos() == 0,
        "--step {} is not a whole number of days: gold partitions are dates, and an interval shorter than a day would replace its date's partition with part of that day (use 1d, 2d, ...; `streamflow run --interval` takes any interval)",
        args.step
    );
    anyhow::ensure!(
        args.from.time() == chrono::NaiveTime::MIN,
        "--from {} is not a UTC midnight: backfill intervals are whole days (give a date such as {})",
        args.from.to_rfc3339(),
        args.from.date_naive()
    );
    Ok(plan_intervals(args.from, args.to, step, args.backwards)?)
}

fn prior_name(prior: PriorOutcome) -> &'static str {
    match prior {
        PriorOutcome::Never => "never",
        PriorOutcome::Active => "active",
        PriorOutcome::Succeeded => "succeeded",
        PriorOutcome::Failed => "failed",
    }
}

pub async fn backfill(
    kafka: KafkaArgs,
    args: BackfillArgs,
    stop: StopFlag,
    ui: Ui,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let intervals = plan(&args)?;
    let gold = Location::parse(&args.pipeline.gold.gold).context("gold location")?;
    let mut items = Vec::with_capacity(intervals.len());
    let mut to_run = Vec::new();
    for interval in &intervals {
        let prior = outcome::read_record(&gold, interval)
            .await?
            .map_or(PriorOutcome::Never, |r| r.prior());
        let run = args.reprocess.should_run(prior);
        if run {
            to_run.push((items.len(), *interval));
        }
        items.push(BackfillInterval {
            interval: interval.to_string(),
            prior: prior_name(prior).to_owned(),
            action: if run { "ran" } else { "skipped" }.to_owned(),
            run: None,
        });
    }
    let mut summary = BackfillSummary {
        stage: "backfill".to_owned(),
        from: args.from.to_rfc3339(),
        to: args.to.to_rfc3339(),
        step: args.step.clone(),
        reprocess: args.reprocess.to_string(),
        dry_run: args.dry_run,
        planned: intervals.len() as u64,
        ran: to_run.len() as u64,
        skipped: (intervals.len() - to_run.len()) as u64,
        ..Default::default()
    };
    if args.dry_run {
        for item in items.iter_mut().filter(|i| i.action == "ran") {
            item.action = "would run".to_owned();
        }
    }
    if !args.dry_run && !to_run.is_empty() {
        let pipeline = Pipeline {
            kafka,
            args: args.pipeline.clone(),
            stop,
            ui: ui.clone(),
        };
        let ingest_lock = Mutex::new(());
        if args.ingest_mode == IngestMode::Watermark {
            let group = &args.pipeline.group;
            let drained = stages::ingest(
                &pipeline.kafka,
                &args.pipeline.landing.landing,
                &args.pipeline.ingest,
                Bound::Watermark {
                    group: group.clone(),
                },
                pipeline.stop.clone(),
                &ui,
            )
            .await?;
            anyhow::ensure!(
                drained.complete,
                "the watermark drain of group {group} did not finish within --max-duration: rerun the backfill (what was drained is kept) or raise --max-duration"
            );
            summary.ingest = Some(drained);
        }
        let step_for = || match args.ingest_mode {
            IngestMode::Interval => IngestStep::Interval(Some(&ingest_lock)),
            IngestMode::Watermark | IngestMode::None => IngestStep::Skip,
        };
        let bar = ui.counter("backfill", to_run.len() as u64);
        let runs = futures::stream::iter(to_run)
            .map(|(index, interval)| {
                let (pipeline, bar) = (&pipeline, &bar);
                let step = step_for();
                async move {
                    let result = pipeline.run_interval(interval, step).await;
                    bar.inc(1);
                    (index, result)
                }
            })
            .buffer_unordered(args.parallel.max(1))
            .collect::<Vec<_>>()
            .await;
        bar.finish_and_clear();
        for (index, result) in runs {
            let run = result?;
            if run.ok {
                summary.succeeded += 1;
            } else {
                summary.failed += 1;
            }
            items[index].run = Some(run);
        }
    }
    summary.ok = summary.failed == 0;
    summary.intervals = items;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    args.output.emit(&summary, report::backfill(&summary))?;
    anyhow::ensure!(
        summary.ok,
        "{} of {} intervals failed (see the table; each failed interval is recorded and `--reprocess failed` runs them again)",
        summary.failed,
        summary.ran
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BackfillArgs,
    }

    fn args(extra: &[&str]) -> BackfillArgs {
        let mut argv = vec!["backfill"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn days_plan_and_sub_day_steps_are_refused() {
        let days = plan(&args(&["--from", "2025-01-10", "--to", "2025-01-13"])).unwrap();
        assert_eq!(days.len(), 3);
        assert_eq!(
            days[0].to_string(),
            "2025-01-10T00:00:00Z/2025-01-11T00:00:00Z"
        );
        let err = plan(&args(&[
            "--from",
            "2025-01-10",
            "--to",
            "2025-01-11",
            "--step",
            "1h",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a whole number of days"), "{err}");
        let err = plan(&args(&[
            "--from",
            "2025-01-10T06:00:00Z",
            "--to",
            "2025-01-12T06:00:00Z",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a UTC midnight"), "{err}");
        let back = plan(&args(&[
            "--from",
            "2025-01-10",
            "--to",
            "2025-01-13",
            "--backwards",
            "--reprocess",
            "FAILED",
        ]))
        .unwrap();
        assert_eq!(back[0], days[2]);
    }
}
