//! `streamflow run`: ingest → etl → validate for one interval in one process, with the stage
//! functions the stage subcommands use, then a record of the outcome in the gold store.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use object_store::path::Path;
use streamflow::etl::{steps::GOLD_TABLES, write};
use streamflow::ingest::{Bound, StopFlag};
use streamflow::outcome::{self, IntervalRecord, Outcome};
use streamflow::store::Location;
use streamflow_core::{Interval, RunSummary};
use tokio::sync::Mutex;

use super::report;
use super::stages::{self, ChecksArg, EtlOptions, GoldArg, IngestOptions, KafkaArgs, LandingArg};
use super::ui::Ui;

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The data interval: START/END (RFC 3339) or one date (2026-11-25). Ingest lands the
    /// records timestamped in it, etl replaces its dates' gold partitions, validate checks them.
    #[arg(long, env = "STREAMFLOW_INTERVAL")]
    pub interval: Interval,
    /// How ingest bounds its drain: the interval's records, or everything new in the group.
    #[arg(long = "ingest", env = "STREAMFLOW_INGEST", value_name = "MODE", value_enum, default_value_t = IngestMode::Interval)]
    pub ingest_mode: IngestMode,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What every local run needs: where data goes, how each stage is configured.
#[derive(Args, Clone, Debug)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub landing: LandingArg,
    #[command(flatten)]
    pub gold: GoldArg,
    #[command(flatten)]
    pub checks: ChecksArg,
    /// Consumer group of a watermark-mode drain (--ingest watermark): its committed offsets say
    /// where the last drain into this landing zone stopped.
    #[arg(long, env = "STREAMFLOW_GROUP", default_value = "streamflow-ingest")]
    pub group: String,
    #[command(flatten)]
    pub ingest: IngestOptions,
    #[command(flatten)]
    pub etl: EtlOptions,
}

#[derive(Args, Clone, Debug)]
pub struct OutputArgs {
    /// What to print on stdout: a readable table, or the JSON summary.
    #[arg(long, env = "STREAMFLOW_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Also write the JSON summary here.
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

/// How records get from Kafka into the landing zone before the ETL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IngestMode {
    /// Land the records timestamped in the interval (Kafka's offsets by time); commits nothing.
    Interval,
    /// Drain the consumer group (--group) up to the high watermarks and commit.
    Watermark,
    /// Do not ingest: the landing zone already holds the records.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

impl OutputArgs {
    /// Prints the summary as asked and writes the JSON file.
    pub fn emit<T: serde::Serialize>(&self, summary: &T, readable: String) -> anyhow::Result<()> {
        let json = serde_json::to_string(summary)?;
        match self.output {
            OutputFormat::Table => print!("{readable}"),
            OutputFormat::Json => println!("{json}"),
        }
        if let Some(path) = &self.summary_file {
            std::fs::write(path, &json)
                .with_context(|| format!("cannot write the summary to {}", path.display()))?;
        }
        Ok(())
    }
}

/// How a run gets its records into the landing zone.
pub enum IngestStep<'a> {
    /// Land the interval's records (interval mode); with a lock, one such drain at a time.
    Interval(Option<&'a Mutex<()>>),
    /// Drain the group up to the high watermarks.
    Watermark(String),
    /// The landing zone already holds them.
    Skip,
}

/// Everything a run of one interval needs besides the interval.
pub struct Pipeline {
    pub kafka: KafkaArgs,
    pub args: PipelineArgs,
    pub stop: StopFlag,
    pub ui: Ui,
}

impl Pipeline {
    /// Runs the three stages of one interval and records the outcome in the gold store. A
    /// failing stage ends the run and is reported in the summary, not as an error; an error
    /// means the outcome could not be recorded.
    pub async fn run_interval(
        &self,
        interval: Interval,
        ingest: IngestStep<'_>,
    ) -> anyhow::Result<RunSummary> {
        let started = Instant::now();
        let gold = Location::parse(&self.args.gold.gold).context("gold location")?;
        let landing = Location::parse(&self.args.landing.landing).context("landing location")?;
        let mut summary = RunSummary {
            stage: "run".to_owned(),
            interval: interval.to_string(),
            landing: landing.display.clone(),
            gold: gold.display.clone(),
            ..Default::default()
        };
        if let Err(e) = self.stages(interval, ingest, &gold, &mut summary).await {
            summary.error = Some(format!("{e:#}"));
        }
        summary.ok = summary.failed_stage.is_none();
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let record = IntervalRecord {
            interval: summary.interval.clone(),
            outcome: if summary.ok {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            },
            finished_at: chrono::Utc::now(),
            failed_stage: summary.failed_stage.clone(),
            error: summary.error.clone(),
        };
        outcome::write_record(&gold, &interval, &record).await?;
        Ok(summary)
    }

    async fn stages(
        &self,
        interval: Interval,
        ingest: IngestStep<'_>,
        gold: &Location,
        summary: &mut RunSummary,
    ) -> anyhow::Result<()> {
        let args = &self.args;
        let (landing_url, gold_url) = (&args.landing.landing, &args.gold.gold);
        let bound = match ingest {
            IngestStep::Interval(lock) => Some((
                Bound::Interval {
                    interval,
                    grace: args.ingest.grace,
                },
                lock,
            )),
            IngestStep::Watermark(group) => Some((Bound::Watermark { group }, None)),
            IngestStep::Skip => None,
        };
        if let Some((bound, lock)) = bound {
            summary.failed_stage = Some("ingest".to_owned());
            let _turn = match lock {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            let ingested = stages::ingest(
                &self.kafka,
                landing_url,
                &args.ingest,
                bound,
                self.stop.clone(),
                &self.ui,
            )
            .await?;
            summary.ingest = Some(ingested);
        }
        summary.failed_stage = Some("etl".to_owned());
        summary.etl = Some(
            stages::etl(
                landing_url,
                gold_url,
                &args.etl,
                &self.kafka.topics,
                interval,
                &self.ui,
            )
            .await?
            .summary,
        );
        summary.gold_files = gold_files(gold, &interval).await?;
        summary.failed_stage = Some("validate".to_owned());
        let (_, validated) = stages::validate(
            landing_url,
            gold_url,
            &args.checks.checks,
            &self.kafka.topics,
            interval,
            &self.ui,
        )
        .await?;
        let failed = validated.failed_errors;
        summary.validate = Some(validated);
        anyhow::ensure!(
            failed == 0,
            "{failed} error-severity check(s) failed for {interval}"
        );
        summary.failed_stage = None;
        Ok(())
    }
}

/// The files of every gold partition of the interval, as their manifests list them: paths for
/// a local store, URLs for S3.
async fn gold_files(gold: &Location, interval: &Interval) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for table in GOLD_TABLES {
        for date in interval.dates() {
            let Some(manifest) = write::read_manifest(gold, table.name, date).await? else {
                continue;
            };
            let dir = write::partition_dir(gold, table.name, date);
            for file in &manifest.files {
                let path =
                    Path::from_iter(dir.parts().chain(Path::from(file.path.as_str()).parts()));
                files.push(object_address(gold, &path));
            }
        }
    }
    Ok(files)
}

fn object_address(location: &Location, path: &Path) -> String {
    match location.store_url.to_file_path() {
        Ok(root) if location.store_url.scheme() == "file" => path
            .parts()
            .fold(root, |dir, part| dir.join(part.as_ref()))
            .display()
            .to_string(),
        _ => format!("{}{path}", location.store_url),
    }
}

/// `streamflow run`.
pub async fn run(kafka: KafkaArgs, args: RunArgs, stop: StopFlag, ui: Ui) -> anyhow::Result<()> {
    let ingest = match args.ingest_mode {
        IngestMode::Interval => IngestStep::Interval(None),
        IngestMode::Watermark => IngestStep::Watermark(args.pipeline.group.clone()),
        IngestMode::None => IngestStep::Skip,
    };
    let pipeline = Pipeline {
        kafka,
        args: args.pipeline.clone(),
        stop,
        ui,
    };
    let summary = pipeline.run_interval(args.interval, ingest).await?;
    args.output.emit(&summary, report::run(&summary))?;
    if !summary.ok {
        anyhow::bail!(
            "{} of {} failed: {}",
            summary.failed_stage.as_deref().unwrap_or("a stage"),
            summary.interval,
            summary.error.as_deref().unwrap_or("see above")
        );
    }
    Ok(())
}
