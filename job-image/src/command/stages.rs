//! One function per stage, shared by the stage subcommands (`ingest`, `etl`, `validate`, what a
//! Kubernetes Job runs) and the local commands (`run`, `backfill`), with the flag groups that
//! configure them. Whatever runs a stage, it runs this code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use streamflow::etl::session::{Profile, SessionOverrides, SessionSettings, parse_size};
use streamflow::etl::{self, EtlConfig, EtlOutcome};
use streamflow::events::{TRANSACTION_EVENTS, Topics, TopicsError, USER_EVENTS};
use streamflow::ingest::plan::{Compression, Rotation};
use streamflow::ingest::{self, Bound, IngestConfig, IngestProgress, StopFlag};
use streamflow::kafka_security::{self, KafkaSecurity};
use streamflow::store::Location;
use streamflow::validate::{self, ChecksFile, Report, ValidateConfig};
use streamflow_core::{IngestSummary, Interval, ValidateSummary};

use super::ui::Ui;

#[derive(Args, Clone, Debug)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (HOST:PORT, comma-separated).
    #[arg(
        long,
        global = true,
        env = "STREAMFLOW_BOOTSTRAP",
        default_value = "127.0.0.1:9094"
    )]
    pub bootstrap: String,
    /// Extra librdkafka setting, repeatable: -X security.protocol=SASL_SSL. Settings also come
    /// from STREAMFLOW_KAFKA_* variables (STREAMFLOW_KAFKA_SASL_USERNAME=u is
    /// sasl.username=u), which is how a Kubernetes Secret reaches the client; -X wins.
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
    #[command(flatten)]
    pub security: KafkaSecurityArgs,
    #[command(flatten)]
    pub topics: TopicsArgs,
}

/// Which topic carries each schema, for every stage: produce generates, ingest checks, the ETL
/// and validate read each topic's records by its schema (docs/events.md).
#[derive(Args, Clone, Debug)]
pub struct TopicsArgs {
    /// The topic of user events (page views, clicks, sessions; docs/events.md).
    #[arg(
        long,
        global = true,
        env = "STREAMFLOW_USER_EVENTS_TOPIC",
        default_value = USER_EVENTS,
        value_name = "TOPIC"
    )]
    pub user_events_topic: String,
    /// The topic of transaction events (payments, refunds; docs/events.md).
    #[arg(
        long,
        global = true,
        env = "STREAMFLOW_TRANSACTION_EVENTS_TOPIC",
        default_value = TRANSACTION_EVENTS,
        value_name = "TOPIC"
    )]
    pub transaction_events_topic: String,
}

impl TopicsArgs {
    pub fn topics(&self) -> Result<Topics, TopicsError> {
        Topics::new(&self.user_events_topic, &self.transaction_events_topic)
    }
}

/// Kafka's TLS and SASL from files, as Strimzi's Secrets hold them (docs/operations.md,
/// "Kafka secured by Strimzi"): read when the command starts.
#[derive(Args, Clone, Debug)]
pub struct KafkaSecurityArgs {
    /// Connect to Kafka over TLS; implied by --tls-ca and --tls-cert. Without --tls-ca the
    /// system's CA certificates are trusted.
    #[arg(long, global = true, env = "STREAMFLOW_TLS")]
    pub tls: bool,
    /// Trusted certificate of Kafka's TLS listener (PEM; a Strimzi cluster CA's ca.crt), or a
    /// glob pattern of such files (/certs/*.crt); repeatable, comma-separated in the variable.
    #[arg(
        long,
        global = true,
        env = "STREAMFLOW_TLS_CA",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub tls_ca: Vec<String>,
    /// Client certificate for mutual TLS (PEM; a Strimzi KafkaUser's user.crt), with --tls-key.
    #[arg(long, global = true, env = "STREAMFLOW_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM; a KafkaUser's user.key).
    #[arg(long, global = true, env = "STREAMFLOW_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// SASL user name, with --sasl-password-file (a SCRAM KafkaUser's name).
    #[arg(
        long,
        global = true,
        env = "STREAMFLOW_SASL_USERNAME",
        value_name = "NAME"
    )]
    pub sasl_username: Option<String>,
    /// File holding the SASL password (a KafkaUser's `password`), read when the command starts.
    #[arg(
        long,
        global = true,
        env = "STREAMFLOW_SASL_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub sasl_password_file: Option<PathBuf>,
    /// SASL mechanism of --sasl-username.
    #[arg(long, global = true, env = "STREAMFLOW_SASL_MECHANISM", default_value = "SCRAM-SHA-512",
          value_parser = kafka_security::SASL_MECHANISMS)]
    pub sasl_mechanism: String,
}

impl KafkaSecurityArgs {
    pub fn security(&self) -> KafkaSecurity {
        KafkaSecurity {
            tls: self.tls,
            trusted: self.tls_ca.clone(),
            certificate: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            sasl_username: self.sasl_username.clone(),
            sasl_password_file: self.sasl_password_file.clone(),
            sasl_mechanism: self.sasl_mechanism.clone(),
        }
    }
}

/// With TLS or SASL in the settings, connects once before the stage starts, so that a refused
/// certificate or a wrong password fails the command at once and says why (as a transient
/// failure: the next attempt reads the Secret's files again, which Strimzi may have rotated).
pub async fn check_kafka_login(kafka: &KafkaArgs) -> anyhow::Result<()> {
    let secured = kafka
        .kafka_config
        .iter()
        .rev()
        .find(|(k, _)| k == "security.protocol")
        .is_some_and(|(_, v)| !v.eq_ignore_ascii_case("plaintext"));
    if !secured {
        return Ok(());
    }
    let (bootstrap, settings) = (kafka.bootstrap.clone(), kafka.kafka_config.clone());
    tokio::task::spawn_blocking(move || {
        kafka_security::check_login(&bootstrap, &settings, Duration::from_secs(30))
    })
    .await
    .context("the Kafka login check panicked")??;
    Ok(())
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Args, Clone, Debug)]
pub struct LandingArg {
    /// Landing zone: a directory, file:///dir or s3://bucket/prefix (S3 endpoint and
    /// credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "STREAMFLOW_LANDING", default_value = "data/landing")]
    pub landing: String,
}

#[derive(Args, Clone, Debug)]
pub struct GoldArg {
    /// Gold tables: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, env = "STREAMFLOW_GOLD", default_value = "data/gold")]
    pub gold: String,
}

#[derive(Args, Clone, Debug)]
pub struct ChecksArg {
    /// The checks, as YAML (see examples/checks.yaml and docs/validate.md).
    #[arg(
        long,
        env = "STREAMFLOW_CHECKS",
        default_value = "examples/checks.yaml"
    )]
    pub checks: PathBuf,
}

/// How a drain reads and writes; what bounds it (watermarks or an interval) is chosen apart.
#[derive(Args, Clone, Debug)]
pub struct IngestOptions {
    /// Topic to drain, repeatable (comma-separated in STREAMFLOW_TOPICS): the user events or
    /// the transaction events topic. Default: both.
    #[arg(long = "topic", env = "STREAMFLOW_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// In interval mode, also read records up to this long after the end, for records whose
    /// timestamps arrive out of order.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub grace: Duration,
    /// Stop a drain after this long; what was drained is written (and committed in watermark
    /// mode). An interval not drained in time fails.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub max_duration: Duration,
    /// Close a landing file after this many records per partition.
    #[arg(long, default_value_t = 200_000)]
    pub max_file_records: u64,
    /// Close a landing file after this many bytes per partition.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_file_bytes: u64,
    /// Compress the landing NDJSON files: none (.ndjson), gzip (.ndjson.gz) or zstd
    /// (.ndjson.zst).
    #[arg(long, value_enum, env = "STREAMFLOW_LANDING_COMPRESSION", default_value_t = Compression::None)]
    pub compression: Compression,
    /// Same as --compression gzip.
    #[arg(long, conflicts_with = "compression")]
    pub gzip: bool,
    /// Records larger than this are quarantined as oversized.
    #[arg(long, default_value_t = 512 * 1024)]
    pub max_record_bytes: usize,
    /// Fail when Kafka delivers nothing for this long while records are still due.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub stall_timeout: Duration,
    /// Retry a failed upload to the landing zone for this long before the run fails: long
    /// enough to ride out a restarting S3 server, short enough that a stage with a deadline
    /// still fails in time.
    #[arg(long, env = "STREAMFLOW_UPLOAD_RETRY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "2m")]
    pub upload_retry_timeout: Duration,
    /// Fault injection for tests: abort after this many batches are uploaded, before their
    /// offsets are committed.
    #[arg(long, hide = true)]
    pub crash_after_uploads: Option<u64>,
}

/// The ETL's query-engine settings.
#[derive(Args, Clone, Debug)]
pub struct EtlOptions {
    /// Session profile: development or production; the flags below override its values.
    #[arg(long, env = "STREAMFLOW_ETL_PROFILE", default_value = "development")]
    pub profile: String,
    /// Memory the ETL may use (e.g. 512MiB, 2GiB): the query engine's operators spill to disk
    /// beyond a share of it, the rest is headroom for data in flight.
    #[arg(long, env = "STREAMFLOW_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Percent of the memory limit the operators may reserve before they spill (the rest is
    /// headroom for data in flight; like Spark's spark.memory.fraction). Default 60.
    #[arg(long, env = "STREAMFLOW_MEMORY_POOL_PERCENT",
          value_parser = clap::value_parser!(u8).range(5..=100))]
    pub memory_pool_percent: Option<u8>,
    /// Directory for spill files.
    #[arg(long, env = "STREAMFLOW_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Parallelism of the query engine.
    #[arg(long, env = "STREAMFLOW_TARGET_PARTITIONS")]
    pub target_partitions: Option<usize>,
    /// Files per date partition of a table bucketed by user id.
    #[arg(long, env = "STREAMFLOW_BUCKETS", default_value_t = streamflow::etl::DEFAULT_BUCKETS)]
    pub buckets: u32,
    /// Replace gold partitions that hold rows even when the landing zone holds no events for
    /// the interval (without it such a run fails and keeps them: a mistyped --landing looks
    /// just like that).
    #[arg(long, env = "STREAMFLOW_ALLOW_EMPTY")]
    pub allow_empty: bool,
}

/// Kafka is reachable when a TCP connection to one of its bootstrap servers opens. Checked
/// before a drain so that a broker that is not running is reported at once and with the fix,
/// rather than after librdkafka's metadata timeout.
async fn check_kafka_reachable(bootstrap: &str) -> anyhow::Result<()> {
    let mut last_error = String::from("no servers listed");
    for server in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last_error = format!("{server}: {e}"),
            Err(_) => last_error = format!("{server}: no answer within 5s"),
        }
    }
    anyhow::bail!(
        "Kafka is not reachable at {bootstrap} ({last_error}): start a local broker with \
         `scripts/kafka.sh start`, or point --bootstrap (STREAMFLOW_BOOTSTRAP) at a running one"
    )
}

/// Ingest: drains Kafka into the landing zone, bounded by `bound`.
pub async fn ingest(
    kafka: &KafkaArgs,
    landing: &str,
    options: &IngestOptions,
    bound: Bound,
    stop: StopFlag,
    ui: &Ui,
) -> anyhow::Result<IngestSummary> {
    // Before Kafka is asked anything: a topic without a schema is a mistake, not a retry.
    let topics = kafka.topics.topics()?.select(&options.topics)?;
    check_kafka_reachable(&kafka.bootstrap).await?;
    check_kafka_login(kafka).await?;
    let what = match &bound {
        Bound::Interval { interval, .. } => format!("ingest {interval}"),
        Bound::Watermark { group } => format!("ingest (group {group})"),
    };
    let progress = Arc::new(IngestProgress::default());
    let config = IngestConfig {
        bootstrap: kafka.bootstrap.clone(),
        topics,
        landing: Location::parse(landing).context("landing location")?,
        bound,
        max_duration: options.max_duration,
        rotation: Rotation {
            max_records: options.max_file_records.max(1),
            max_bytes: options.max_file_bytes.max(1),
            compression: if options.gzip {
                Compression::Gzip
            } else {
                options.compression
            },
        },
        max_record_bytes: options.max_record_bytes,
        stall_timeout: options.stall_timeout,
        upload_retry_timeout: options.upload_retry_timeout,
        kafka_overrides: kafka.kafka_config.clone(),
        crash_after_uploads: options.crash_after_uploads,
        progress: Some(progress.clone()),
    };
    let bar = ui.offsets_bar(&what, progress);
    let result = ingest::ingest(config, stop).await;
    bar.finish();
    result.with_context(|| format!("{what} from Kafka at {} failed", kafka.bootstrap))
}

/// ETL: builds the gold tables of an interval from the landing zone.
pub async fn etl(
    landing: &str,
    gold: &str,
    options: &EtlOptions,
    topics: &TopicsArgs,
    interval: Interval,
    ui: &Ui,
) -> anyhow::Result<EtlOutcome> {
    let topics = topics.topics()?;
    let profile: Profile = options.profile.parse()?;
    let overrides = SessionOverrides {
        memory_limit: options
            .memory_limit
            .as_deref()
            .map(parse_size)
            .transpose()?,
        memory_pool_percent: options.memory_pool_percent,
        spill_dir: options.spill_dir.clone(),
        target_partitions: options.target_partitions,
    };
    let config = EtlConfig {
        // Read, not written: a landing directory that does not exist is a mistake.
        landing: Location::parse_existing(landing).context("landing location")?,
        gold: Location::parse(gold).context("gold location")?,
        interval,
        session: SessionSettings::for_profile(profile).with_overrides(&overrides),
        buckets: options.buckets.max(1),
        topics,
        allow_empty: options.allow_empty,
    };
    let spinner = ui.spinner(&format!("etl {interval}: building the gold tables"));
    let result = etl::run(&config).await;
    spinner.finish();
    result.with_context(|| format!("the ETL of {interval} from {landing} to {gold} failed"))
}

/// Validate: checks the gold tables of an interval. Failed checks are in the report, not an
/// error: the caller decides what a failed error-severity check means for its exit code.
pub async fn validate(
    landing: &str,
    gold: &str,
    checks: &Path,
    topics: &TopicsArgs,
    interval: Interval,
    ui: &Ui,
) -> anyhow::Result<(Report, ValidateSummary)> {
    let started = Instant::now();
    let topics = topics.topics()?;
    // A typed error: the exit code tells a missing checks file (permanent) from the rest.
    let yaml =
        std::fs::read_to_string(checks).map_err(|source| validate::ValidateError::ReadChecks {
            file: checks.display().to_string(),
            source,
        })?;
    let checks = ChecksFile::parse(&checks.display().to_string(), &yaml)?;
    let config = ValidateConfig {
        gold: Location::parse(gold).context("gold location")?,
        landing: Some(Location::parse(landing).context("landing location")?),
        interval,
        checks,
        topics,
    };
    let spinner = ui.spinner(&format!("validate {interval}: running the checks"));
    let result = validate::validate(&config).await;
    spinner.finish();
    let report = result.with_context(|| format!("the checks of {interval} could not run"))?;
    let summary = report.summary(started);
    Ok((report, summary))
}
