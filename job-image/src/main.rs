//! The `streamflow` command: one binary for every stage, run by the operator's Jobs or by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use streamflow::etl::session::{Profile, SessionOverrides, SessionSettings, parse_size};
use streamflow::etl::{self, EtlConfig};
use streamflow::events::TOPICS;
use streamflow::ingest::{self, Bound, IngestConfig, plan::Rotation};
use streamflow::produce::{self, GeneratorConfig, ProduceConfig};
use streamflow::store::Location;
use streamflow::validate::{self, ChecksFile, ValidateConfig};
use streamflow_core::Interval;

#[derive(Parser)]
#[command(
    name = "streamflow",
    version,
    about = "Kafka → landing zone → gold tables, one stage at a time or all at once."
)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        global = true,
        env = "STREAMFLOW_BOOTSTRAP",
        default_value = "127.0.0.1:9094"
    )]
    bootstrap: String,
    /// Extra librdkafka setting, repeatable: -X security.protocol=SASL_SSL. Settings also come
    /// from STREAMFLOW_KAFKA_* variables (STREAMFLOW_KAFKA_SASL_USERNAME=u is
    /// sasl.username=u), which is how a Kubernetes Secret reaches the client; -X wins.
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    kafka_config: Vec<(String, String)>,
}

#[derive(Subcommand)]
enum Command {
    /// Send mock user and transaction events to Kafka (the upstream systems).
    Produce(ProduceArgs),
    /// Drain Kafka into the landing zone: NDJSON by topic and event date, exactly once.
    Ingest(IngestArgs),
    /// Build the gold CSV tables of an interval from the landing zone (DataFusion).
    Etl(EtlArgs),
    /// Check the gold tables of an interval against declarative checks (YAML).
    Validate(ValidateArgs),
}

#[derive(Args)]
struct EtlArgs {
    /// The data interval: START/END (RFC 3339) or one date; its dates' partitions are replaced.
    #[arg(long, env = "STREAMFLOW_INTERVAL")]
    interval: Interval,
    /// Landing zone to read: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, env = "STREAMFLOW_LANDING", default_value = "data/landing")]
    landing: String,
    /// Where the gold tables go: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, env = "STREAMFLOW_GOLD", default_value = "data/gold")]
    gold: String,
    /// Session profile: development or production; the flags below override its values.
    #[arg(long, env = "STREAMFLOW_ETL_PROFILE", default_value = "development")]
    profile: String,
    /// Memory DataFusion's operators may use before spilling (e.g. 512MiB, 2GiB).
    #[arg(long, env = "STREAMFLOW_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// Directory for spill files.
    #[arg(long, env = "STREAMFLOW_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// Parallelism of the query engine.
    #[arg(long, env = "STREAMFLOW_TARGET_PARTITIONS")]
    target_partitions: Option<usize>,
    /// Files per date partition of a table bucketed by user id.
    #[arg(long, env = "STREAMFLOW_BUCKETS", default_value_t = streamflow::etl::DEFAULT_BUCKETS)]
    buckets: u32,
    /// Also write the JSON summary here (a Job's /dev/termination-log, say).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

#[derive(Args)]
struct ValidateArgs {
    /// The data interval whose gold partitions are checked.
    #[arg(long, env = "STREAMFLOW_INTERVAL")]
    interval: Interval,
    /// The checks, as YAML (see examples/checks.yaml).
    #[arg(
        long,
        env = "STREAMFLOW_CHECKS",
        default_value = "examples/checks.yaml"
    )]
    checks: PathBuf,
    /// Gold tables to check.
    #[arg(long, env = "STREAMFLOW_GOLD", default_value = "data/gold")]
    gold: String,
    /// Landing zone, for landing_reconciliation checks.
    #[arg(long, env = "STREAMFLOW_LANDING", default_value = "data/landing")]
    landing: String,
    /// Also write the full JSON report (every check) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also write the JSON summary here (a Job's /dev/termination-log, say).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

#[derive(Args)]
struct ProduceArgs {
    /// Topic to produce to, repeatable; its name says which schema (`transaction` in it:
    /// transactions, else user events).
    #[arg(long = "topic", default_values_t = TOPICS.map(String::from))]
    topics: Vec<String>,
    /// Records per topic.
    #[arg(long, required_unless_present = "duration")]
    count: Option<u64>,
    /// Produce for this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Records per second per topic; 0 sends as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seed of the generator: the same seed and --start give the same records.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the first record (RFC 3339 or a date). Default: with --count, early
    /// enough that the last record is timestamped now (brokers refuse records more than an
    /// hour in the future); with --duration, now.
    #[arg(long, value_parser = streamflow_core::interval::parse_time)]
    start: Option<chrono::DateTime<chrono::Utc>>,
    /// Event-time distance between records of one topic; default 1/rate, or 100ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    spacing: Option<Duration>,
    /// Number of distinct users.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Fraction of malformed records (not JSON, wrong types, missing fields, oversized).
    #[arg(long, default_value_t = 0.0)]
    bad_ratio: f64,
}

#[derive(Args)]
struct IngestArgs {
    /// Topic to drain, repeatable.
    #[arg(long = "topic", default_values_t = TOPICS.map(String::from))]
    topics: Vec<String>,
    /// Landing zone: a directory, file:///dir or s3://bucket/prefix (S3 endpoint and
    /// credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "STREAMFLOW_LANDING", default_value = "data/landing")]
    landing: String,
    /// Consumer group whose committed offsets say where the last drain stopped.
    #[arg(long, env = "STREAMFLOW_GROUP", default_value = "streamflow-ingest")]
    group: String,
    /// Drain only records timestamped in START/END (or one whole date) instead of draining
    /// up to the high watermarks; commits nothing and can be replayed.
    #[arg(long, conflicts_with = "group")]
    interval: Option<Interval>,
    /// In interval mode, also read records up to this long after the end, for records whose
    /// timestamps arrive out of order.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    grace: Duration,
    /// Stop after this long; what was drained is written and committed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    max_duration: Duration,
    /// Close a file after this many records per partition.
    #[arg(long, default_value_t = 200_000)]
    max_file_records: u64,
    /// Close a file after this many bytes per partition.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_file_bytes: u64,
    /// Gzip the NDJSON files (.ndjson.gz).
    #[arg(long)]
    gzip: bool,
    /// Records larger than this are quarantined as oversized.
    #[arg(long, default_value_t = 512 * 1024)]
    max_record_bytes: usize,
    /// Fail when Kafka delivers nothing for this long while records are still due.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    stall_timeout: Duration,
    /// Also write the JSON summary here (a Job's /dev/termination-log, say).
    #[arg(long)]
    summary_file: Option<PathBuf>,
    /// Fault injection for tests: abort after this many batches are uploaded, before their
    /// offsets are committed.
    #[arg(long, hide = true)]
    crash_after_uploads: Option<u64>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// librdkafka settings from `STREAMFLOW_KAFKA_<KEY>` variables, then from `-X` flags (later
/// settings win). librdkafka's property names are dotted lower case without underscores, so
/// the variable name maps back to one property.
fn kafka_settings(
    env: impl Iterator<Item = (String, String)>,
    flags: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = env
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("STREAMFLOW_KAFKA_")?;
            Some((key.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    settings.sort();
    settings.extend(flags);
    settings
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    cli.kafka.kafka_config = kafka_settings(
        std::env::vars(),
        std::mem::take(&mut cli.kafka.kafka_config),
    );
    match cli.command {
        Command::Produce(args) => {
            let spacing = args.spacing.unwrap_or(match args.rate {
                0 => Duration::from_millis(100),
                rate => Duration::from_secs_f64(1.0 / rate as f64),
            });
            let start = args.start.unwrap_or_else(|| {
                let span =
                    spacing.saturating_mul(args.count.unwrap_or(0).min(u32::MAX as u64) as u32);
                chrono::Utc::now() - chrono::Duration::from_std(span).unwrap_or_default()
            });
            let config = ProduceConfig {
                bootstrap: cli.kafka.bootstrap,
                topics: args.topics,
                count: args.count,
                duration: args.duration,
                rate: args.rate,
                generator: GeneratorConfig {
                    seed: args.seed,
                    start,
                    spacing,
                    users: args.users,
                    bad_ratio: args.bad_ratio,
                },
                kafka_overrides: cli.kafka.kafka_config,
            };
            let summary = tokio::task::spawn_blocking(move || produce::produce(&config))
                .await
                .context("the producer thread panicked")??;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Ingest(args) => {
            let landing = Location::parse(&args.landing)?;
            let bound = match args.interval {
                Some(interval) => Bound::Interval {
                    interval,
                    grace: args.grace,
                },
                None => Bound::Watermark { group: args.group },
            };
            let config = IngestConfig {
                bootstrap: cli.kafka.bootstrap,
                topics: args.topics,
                landing,
                bound,
                max_duration: args.max_duration,
                rotation: Rotation {
                    max_records: args.max_file_records.max(1),
                    max_bytes: args.max_file_bytes.max(1),
                    gzip: args.gzip,
                },
                max_record_bytes: args.max_record_bytes,
                stall_timeout: args.stall_timeout,
                kafka_overrides: cli.kafka.kafka_config,
                crash_after_uploads: args.crash_after_uploads,
            };
            let stop = stop_on_signal();
            let summary = ingest::ingest(config, stop).await?;
            write_summary(
                &serde_json::to_string(&summary)?,
                args.summary_file.as_ref(),
            )
        }
        Command::Etl(args) => run_etl(args).await,
        Command::Validate(args) => run_validate(args).await,
    }
}

/// Prints a stage's one-line JSON summary and, when asked, writes it to a file too.
fn write_summary(json: &str, path: Option<&PathBuf>) -> anyhow::Result<()> {
    println!("{json}");
    if let Some(path) = path {
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    Ok(())
}

async fn run_etl(args: EtlArgs) -> anyhow::Result<()> {
    let profile: Profile = args.profile.parse()?;
    let overrides = SessionOverrides {
        memory_limit: args.memory_limit.as_deref().map(parse_size).transpose()?,
        spill_dir: args.spill_dir,
        target_partitions: args.target_partitions,
    };
    let config = EtlConfig {
        landing: Location::parse(&args.landing).context("landing location")?,
        gold: Location::parse(&args.gold).context("gold location")?,
        interval: args.interval,
        session: SessionSettings::for_profile(profile).with_overrides(&overrides),
        buckets: args.buckets.max(1),
    };
    let summary = etl::run(&config).await.with_context(|| {
        format!(
            "the ETL of {} from {} to {} failed",
            args.interval, args.landing, args.gold
        )
    })?;
    write_summary(
        &serde_json::to_string(&summary)?,
        args.summary_file.as_ref(),
    )
}

async fn run_validate(args: ValidateArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let yaml = std::fs::read_to_string(&args.checks)
        .with_context(|| format!("cannot read the checks file {}", args.checks.display()))?;
    let checks = ChecksFile::parse(&args.checks.display().to_string(), &yaml)?;
    let config = ValidateConfig {
        gold: Location::parse(&args.gold).context("gold location")?,
        landing: Some(Location::parse(&args.landing).context("landing location")?),
        interval: args.interval,
        checks,
    };
    let report = validate::validate(&config).await?;
    eprint!("{}", report.readable());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    let summary = report.summary(started);
    write_summary(
        &serde_json::to_string(&summary)?,
        args.summary_file.as_ref(),
    )?;
    anyhow::ensure!(
        report.failed_errors() == 0,
        "{} error-severity check(s) failed for {}",
        report.failed_errors(),
        args.interval
    );
    Ok(())
}

/// SIGTERM (a Job's deadline, `kubectl delete`) and Ctrl-C end a drain cleanly: what was read
/// is written and committed before the process exits.
fn stop_on_signal() -> ingest::StopFlag {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::warn!("stop requested: finishing the current files and committing");
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_settings_come_from_the_environment_and_flags_win() {
        let env = [
            ("STREAMFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("STREAMFLOW_KAFKA_SASL_USERNAME", "svc"),
            ("STREAMFLOW_LANDING", "s3://x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let flags = vec![("sasl.username".to_owned(), "cli".to_owned())];
        let settings = kafka_settings(env.into_iter(), flags);
        assert_eq!(
            settings,
            [
                ("sasl.username", "svc"),
                ("security.protocol", "SASL_SSL"),
                ("sasl.username", "cli"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // librdkafka applies settings in order, so the flag's value is the one in force.
    }
}
