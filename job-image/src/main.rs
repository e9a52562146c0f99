//! The `streamflow` command: one binary for every stage, run by the operator's Jobs or by hand.

mod command;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use streamflow::ingest::{self, Bound};
use streamflow::produce::{self, GeneratorConfig, ProduceConfig};
use streamflow_core::{Interval, exit};

use command::backfill::BackfillArgs;
use command::run::RunArgs;
use command::stages::{
    self, ChecksArg, EtlOptions, GoldArg, IngestOptions, KafkaArgs, LandingArg, TopicsArgs,
};
use command::ui::Ui;

// mimalloc instead of glibc's malloc: the ETL's threads allocate and free many short-lived
// Arrow buffers, and glibc keeps freed memory in per-thread arenas that count against a pod's
// memory limit (docs/etl.md, "Memory", with the peaks measured with each).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "streamflow",
    version,
    about = "Kafka → landing zone → gold tables, one stage at a time or all at once.",
    after_help = "Every flag can also be set by the environment variable shown in its help, \
                  or in a YAML configuration file (--config); flags win over the environment, \
                  which wins over the file. docs/local.md describes the local commands.\n\n\
                  Exit codes (docs/operator.md, \"Exit codes and retries\"): 0 done; \
                  1 transient or unclassified failure (Kafka or S3 unreachable, a timeout: \
                  retrying may help); 2 usage error (flags, --config file); 3 invalid input or \
                  configuration (checks file, location, profile, undecodable landing data, \
                  missing topic: a retry fails the same way); 4 validation ran and \
                  error-severity checks failed. The operator retries only 1 (and signals)."
)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// YAML file of flag defaults: `landing: data/landing`, or per command (`backfill:` then
    /// `parallel: 4` indented). Flags and environment variables win over it.
    #[arg(long, global = true, env = "STREAMFLOW_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
    /// Ingest → etl → validate for one interval in this process; prints a summary table.
    Run(RunArgs),
    /// Run every interval of a date range that is not done yet, a few at a time.
    Backfill(BackfillArgs),
}

#[derive(Args)]
struct EtlArgs {
    /// The data interval: START/END (RFC 3339) or one date; its dates' partitions are replaced.
    #[arg(long, env = "STREAMFLOW_INTERVAL")]
    interval: Interval,
    #[command(flatten)]
    landing: LandingArg,
    #[command(flatten)]
    gold: GoldArg,
    #[command(flatten)]
    options: EtlOptions,
    /// Also write the JSON summary here (a Job's /dev/termination-log, say).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

#[derive(Args)]
struct ValidateArgs {
    /// The data interval whose gold partitions are checked.
    #[arg(long, env = "STREAMFLOW_INTERVAL")]
    interval: Interval,
    #[command(flatten)]
    checks: ChecksArg,
    #[command(flatten)]
    gold: GoldArg,
    #[command(flatten)]
    landing: LandingArg,
    /// Also write the full JSON report (every check) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also write the JSON summary here (a Job's /dev/termination-log, say).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

/// A generator seed: a number, or `random` for a fresh one.
fn parse_seed(input: &str) -> Result<u64, String> {
    if input.eq_ignore_ascii_case("random") {
        let seed = rand::random::<u64>();
        tracing::info!(seed, "random generator seed");
        return Ok(seed);
    }
    input
        .parse()
        .map_err(|_| format!("expected a number or `random`, got {input:?}"))
}

#[derive(Args)]
struct ProduceArgs {
    /// Topic to produce to, repeatable: the user events or the transaction events topic, each
    /// sent events of its schema. Default: both.
    #[arg(long = "topic")]
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
    /// Seed of the generator: the same seed and --start give the same records. `random` picks
    /// one (logged), so a restarted producer (a Deployment's pod) makes new event ids instead of
    /// repeating ones the ETL would deduplicate away.
    #[arg(long, env = "STREAMFLOW_SEED", default_value = "42", value_parser = parse_seed)]
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
    #[command(flatten)]
    landing: LandingArg,
    /// Consumer group whose committed offsets say where the last drain stopped.
    #[arg(long, env = "STREAMFLOW_GROUP", default_value = "streamflow-ingest")]
    group: String,
    /// Drain only records timestamped in START/END (or one whole date) instead of draining
    /// up to the high watermarks; commits nothing and can be replayed.
    #[arg(long, conflicts_with = "group")]
    interval: Option<Interval>,
    #[command(flatten)]
    options: IngestOptions,
    /// Also write the JSON summary here (a Job's /dev/termination-log, say).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let ui = Ui::for_stderr();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(ui.clone())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            // The --config file: as wrong as a bad flag, so clap's usage code.
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::TRANSIENT);
        }
    };
    match runtime.block_on(run(cli, ui)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Validation ran and error-severity checks failed (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{failed} error-severity check(s) failed for {interval}")]
struct ChecksFailed {
    failed: u64,
    interval: Interval,
}

/// The exit code of a failed command (`streamflow_core::exit`): permanent only for errors
/// that a retry with the same input and configuration meets again; anything not known to be
/// permanent is transient, so a new kind of error costs a retry rather than a run.
fn exit_code(error: &anyhow::Error) -> u8 {
    use streamflow::etl::{EtlError, read::ReadError, session::SessionError};
    use streamflow::ingest::IngestError;
    use streamflow::outcome::OutcomeError;
    use streamflow::store::StoreError;
    use streamflow::validate::ValidateError;
    let read = |e: &ReadError| {
        matches!(
            e,
            ReadError::Malformed { .. } | ReadError::Decode { .. } | ReadError::Decompress { .. }
        )
    };
    let session = |e: &SessionError| {
        matches!(
            e,
            SessionError::UnknownProfile(_) | SessionError::BadSize { .. }
        )
    };
    let store = |e: &StoreError| {
        matches!(
            e,
            StoreError::BadLocation { .. } | StoreError::Missing { .. } | StoreError::S3 { .. }
        )
    };
    let permanent = error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<EtlError>() {
            // `transparent` variants hide the inner error from the chain: look inside.
            return match e {
                EtlError::EmptyLanding { .. } => true,
                EtlError::Read(r) => read(r),
                EtlError::Session(s) => session(s),
                EtlError::Step(_) | EtlError::Write(_) => false,
            };
        }
        cause.is::<ValidateError>()
            || cause.is::<streamflow::kafka_security::SecurityError>()
            || cause.is::<streamflow::events::TopicsError>()
            || cause.downcast_ref::<ReadError>().is_some_and(read)
            || cause.downcast_ref::<SessionError>().is_some_and(session)
            || cause.downcast_ref::<StoreError>().is_some_and(store)
            || matches!(
                cause.downcast_ref::<IngestError>(),
                Some(IngestError::NoSuchTopic { .. })
            )
            || matches!(
                cause.downcast_ref::<OutcomeError>(),
                Some(OutcomeError::Bad { .. })
            )
            || cause.is::<streamflow_core::IntervalError>()
    });
    if error.chain().any(|cause| cause.is::<ChecksFailed>()) {
        exit::CHECKS_FAILED
    } else if permanent {
        exit::INVALID_INPUT
    } else {
        exit::TRANSIENT
    }
}

/// Parses the command line over the configuration file's defaults, when there is one. Usage
/// errors and --help exit here, as clap does.
fn parse_cli() -> anyhow::Result<Cli> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    if let Some(path) = command::config::config_path(&args, std::env::var_os("STREAMFLOW_CONFIG")) {
        command = command::config::apply_file(command, &path)?;
    }
    let matches = command.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches)?)
}

/// librdkafka settings from `STREAMFLOW_KAFKA_<KEY>` variables, then from `-X` flags (later
/// settings win). librdkafka's property names are dotted lower case without underscores, so
/// the variable name maps back to one property. Kubernetes' service links are not settings.
fn kafka_settings(
    env: impl Iterator<Item = (String, String)>,
    flags: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = env
        .filter(|(k, _)| !is_service_link(k))
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("STREAMFLOW_KAFKA_")?;
            Some((key.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    settings.sort();
    settings.extend(flags);
    settings
}

/// Whether `name` is one of the variables Kubernetes sets in a pod for every Service of its
/// namespace (unless the pod says `enableServiceLinks: false`): `<SVC>_SERVICE_HOST`,
/// `<SVC>_SERVICE_PORT[_<PORT NAME>]`, `<SVC>_PORT` and `<SVC>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`.
/// Strimzi's Service of a Kafka named `streamflow`, `streamflow-kafka-bootstrap`, gives every pod
/// beside it `STREAMFLOW_KAFKA_BOOTSTRAP_PORT=tcp://...`, which is no librdkafka property.
fn is_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST") || name.ends_with("_PORT") {
        return true;
    }
    if let Some((_, rest)) = name.rsplit_once("_SERVICE_PORT")
        && (rest.is_empty() || rest.starts_with('_'))
    {
        return true;
    }
    name.split("_PORT_").skip(1).any(|rest| {
        let mut parts = rest.split('_');
        let number = parts.next().unwrap_or_default();
        let protocol = parts.next().unwrap_or_default();
        !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && matches!(protocol, "TCP" | "UDP" | "SCTP")
    })
}

async fn run(mut cli: Cli, ui: Ui) -> anyhow::Result<()> {
    // The files' settings first: -X and STREAMFLOW_KAFKA_* can still override any of them.
    let mut settings = cli.kafka.security.security().settings()?;
    settings.extend(kafka_settings(
        std::env::vars(),
        std::mem::take(&mut cli.kafka.kafka_config),
    ));
    cli.kafka.kafka_config = settings;
    match cli.command {
        Command::Produce(args) => {
            let topics = cli.kafka.topics.topics()?.select(&args.topics)?;
            stages::check_kafka_login(&cli.kafka).await?;
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
                topics,
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
            let bound = match args.interval {
                Some(interval) => Bound::Interval {
                    interval,
                    grace: args.options.grace,
                },
                None => Bound::Watermark { group: args.group },
            };
            let summary = stages::ingest(
                &cli.kafka,
                &args.landing.landing,
                &args.options,
                bound,
                stop_on_signal(),
                &ui,
            )
            .await?;
            println!("{}", serde_json::to_string(&summary)?);
            // The termination message: bounded, or the kubelet cuts it mid-JSON.
            if let Some(path) = &args.summary_file {
                std::fs::write(path, summary.to_bounded_json()?)
                    .with_context(|| format!("cannot write the summary to {}", path.display()))?;
            }
            Ok(())
        }
        Command::Etl(args) => {
            let summary = stages::etl(
                &args.landing.landing,
                &args.gold.gold,
                &args.options,
                &cli.kafka.topics,
                args.interval,
                &ui,
            )
            .await?;
            write_summary(
                &serde_json::to_string(&summary)?,
                args.summary_file.as_ref(),
            )
        }
        Command::Validate(args) => run_validate(args, &cli.kafka.topics, &ui).await,
        Command::Run(args) => command::run::run(cli.kafka, args, stop_on_signal(), ui).await,
        Command::Backfill(args) => {
            command::backfill::backfill(cli.kafka, args, stop_on_signal(), ui).await
        }
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

async fn run_validate(args: ValidateArgs, topics: &TopicsArgs, ui: &Ui) -> anyhow::Result<()> {
    let (report, summary) = stages::validate(
        &args.landing.landing,
        &args.gold.gold,
        &args.checks.checks,
        topics,
        args.interval,
        ui,
    )
    .await?;
    eprint!("{}", report.readable());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    write_summary(
        &serde_json::to_string(&summary)?,
        args.summary_file.as_ref(),
    )?;
    if summary.failed_errors == 0 {
        return Ok(());
    }
    // A check that could not run (a table that did not load from an unreachable store) says
    // nothing of the data: worth a retry, unlike checks that ran and failed — unless the gold
    // zone itself says its table is not there, which a retry reads again.
    let unevaluated: Vec<_> = report
        .results
        .iter()
        .filter(|r| {
            !r.passed && r.unevaluated && r.severity == streamflow::validate::Severity::Error
        })
        .collect();
    if !unevaluated.is_empty() && unevaluated.iter().all(|r| r.unevaluable) {
        return Err(streamflow::validate::ValidateError::TablesMissing {
            failed: summary.failed_errors,
            interval: args.interval.to_string(),
            unevaluable: unevaluated.len(),
            example: unevaluated[0].message.clone(),
        }
        .into());
    }
    let unevaluated = unevaluated.len();
    if unevaluated > 0 {
        anyhow::bail!(
            "{} error-severity check(s) failed for {}, {unevaluated} of them because they could not run",
            summary.failed_errors,
            args.interval
        );
    }
    Err(ChecksFailed {
        failed: summary.failed_errors,
        interval: args.interval,
    }
    .into())
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
    fn seed_is_a_number_or_random() {
        assert_eq!(parse_seed("42"), Ok(42));
        let a = parse_seed("random").unwrap();
        let b = parse_seed("RANDOM").unwrap();
        assert_ne!(a, b, "two random seeds should differ");
        assert!(parse_seed("forty-two").unwrap_err().contains("random"));
    }

    #[test]
    fn permanent_failures_get_their_own_exit_codes() {
        use streamflow::etl::{EtlError, read::ReadError};
        use streamflow::ingest::IngestError;
        use streamflow::validate::ValidateError;
        let interval: Interval = "2026-01-01".parse().unwrap();
        let checks = anyhow::Error::from(ChecksFailed {
            failed: 2,
            interval,
        });
        assert_eq!(exit_code(&checks), exit::CHECKS_FAILED);
        // Found under the context the stage functions add.
        let bad_checks = anyhow::Error::from(ValidateError::BadChecks {
            file: "checks.yaml".into(),
            problem: "unknown variant `no_such_check`".into(),
        })
        .context("validate failed");
        assert_eq!(exit_code(&bad_checks), exit::INVALID_INPUT);
        let malformed = anyhow::Error::from(EtlError::Read(ReadError::Malformed {
            object: "o".into(),
            line: 3,
            problem: "not JSON".into(),
        }))
        .context("the ETL failed");
        assert_eq!(exit_code(&malformed), exit::INVALID_INPUT);
        let no_topic = anyhow::Error::from(IngestError::NoSuchTopic {
            topic: "t".into(),
            bootstrap: "k:9092".into(),
        });
        assert_eq!(exit_code(&no_topic), exit::INVALID_INPUT);
        let no_schema = anyhow::Error::from(
            streamflow::events::Topics::default()
                .kind_of("clicks")
                .unwrap_err(),
        )
        .context("ingest failed");
        assert_eq!(exit_code(&no_schema), exit::INVALID_INPUT);
        // Kafka or S3 away, a timeout, anything unknown: worth a retry.
        let stalled = anyhow::Error::from(IngestError::Stalled {
            bootstrap: "k:9092".into(),
            topic: "t".into(),
            partition: 0,
            position: 1,
            end: 2,
            seconds: 60,
        });
        assert_eq!(exit_code(&stalled), exit::TRANSIENT);
        let task = anyhow::Error::from(EtlError::Read(ReadError::Task {
            object: "o".into(),
            problem: "panicked".into(),
        }));
        assert_eq!(exit_code(&task), exit::TRANSIENT);
        assert_eq!(
            exit_code(&anyhow::anyhow!("Kafka is not reachable")),
            exit::TRANSIENT
        );
    }

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

    #[test]
    fn kubernetes_service_links_are_not_kafka_settings() {
        // What a pod gets beside Strimzi's bootstrap Service of a Kafka named `streamflow`.
        let links = [
            ("STREAMFLOW_KAFKA_BOOTSTRAP_SERVICE_HOST", "10.96.0.7"),
            ("STREAMFLOW_KAFKA_BOOTSTRAP_SERVICE_PORT", "9092"),
            (
                "STREAMFLOW_KAFKA_BOOTSTRAP_SERVICE_PORT_TCP_CLIENTS",
                "9092",
            ),
            ("STREAMFLOW_KAFKA_BOOTSTRAP_PORT", "tcp://10.96.0.7:9092"),
            (
                "STREAMFLOW_KAFKA_BOOTSTRAP_PORT_9092_TCP",
                "tcp://10.96.0.7:9092",
            ),
            ("STREAMFLOW_KAFKA_BOOTSTRAP_PORT_9092_TCP_PROTO", "tcp"),
            ("STREAMFLOW_KAFKA_BOOTSTRAP_PORT_9092_TCP_PORT", "9092"),
            ("STREAMFLOW_KAFKA_BOOTSTRAP_PORT_9092_TCP_ADDR", "10.96.0.7"),
        ];
        let env = links
            .iter()
            .chain(&[("STREAMFLOW_KAFKA_SOCKET_TIMEOUT_MS", "5000")])
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            kafka_settings(env, Vec::new()),
            [("socket.timeout.ms".to_owned(), "5000".to_owned())]
        );
        for property in [
            "STREAMFLOW_KAFKA_SSL_CA_LOCATION",
            "STREAMFLOW_KAFKA_SASL_MECHANISM",
        ] {
            assert!(!is_service_link(property), "{property}");
        }
    }
}
