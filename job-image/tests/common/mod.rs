//! Helpers for tests against the real Kafka broker and S3 server that `scripts/test` starts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamflow::events::EventKind;
use streamflow::produce::{EventGenerator, GeneratedRecord, GeneratorConfig};
use streamflow::store::Location;

pub fn bootstrap() -> String {
    std::env::var("STREAMFLOW_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9094".to_owned())
}

pub fn repo_root() -> PathBuf {
    // Read when the test runs (cargo sets it), not when it was built: clones share one target
    // directory, and cargo reuses a test binary built in another clone, whose path it has.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    PathBuf::from(manifest_dir).join("..")
}

/// A topic of its own for each test, so tests never see each other's records.
pub async fn fresh_topic(kind: EventKind, partitions: i32) -> String {
    let base = match kind {
        EventKind::User => "test_user_events",
        EventKind::Transaction => "test_transaction_events",
    };
    let name = format!("{base}_{}", uuid::Uuid::new_v4().simple());
    create_topic(&name, partitions).await;
    name
}

/// Creates a topic; its name should start with `test_`, which scripts/test deletes.
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic (is Kafka running? scripts/test starts it)");
    for r in results {
        r.expect("topic created");
    }
}

/// The schema of a topic made by [`fresh_topic`], which its name starts with.
pub fn kind_of(topic: &str) -> EventKind {
    if topic.starts_with("test_user_events_") {
        EventKind::User
    } else if topic.starts_with("test_transaction_events_") {
        EventKind::Transaction
    } else {
        panic!("{topic} is not a topic of fresh_topic")
    }
}

/// The flag that names a [`fresh_topic`] as its schema's topic: the command refuses a topic
/// whose schema it is not told.
pub fn schema_flag(topic: &str) -> [&str; 2] {
    match kind_of(topic) {
        EventKind::User => ["--user-events-topic", topic],
        EventKind::Transaction => ["--transaction-events-topic", topic],
    }
}

pub fn generator(kind: EventKind, seed: u64, start: &str, bad_ratio: f64) -> EventGenerator {
    EventGenerator::new(
        kind,
        GeneratorConfig {
            seed,
            start: start.parse().expect("start time"),
            spacing: Duration::from_millis(500),
            users: 40,
            bad_ratio,
        },
    )
}

/// Sends records to a topic and waits until the broker has them all.
pub fn send_all(topic: &str, records: &[GeneratedRecord]) {
    send_with(topic, records, |r| {
        (Some(r.key.as_bytes().to_vec()), r.value.clone())
    });
}

/// Sends with a custom key/value per record (for hand-made bad inputs).
pub fn send_with(
    topic: &str,
    records: &[GeneratedRecord],
    kv: impl FnMut(&GeneratedRecord) -> (Option<Vec<u8>>, Vec<u8>),
) {
    send_to(&bootstrap(), topic, records, kv);
}

/// [`send_with`] to another cluster (librdkafka's mock cluster).
pub fn send_to(
    bootstrap: &str,
    topic: &str,
    records: &[GeneratedRecord],
    mut kv: impl FnMut(&GeneratedRecord) -> (Option<Vec<u8>>, Vec<u8>),
) {
    let producer: BaseProducer<FailedDeliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.max.bytes", "2000000")
        .set("linger.ms", "5")
        .create_with_context(FailedDeliveries::default())
        .expect("producer");
    for r in records {
        let (key, value) = kv(r);
        let mut rec = BaseRecord::to(topic)
            .payload(&value)
            .timestamp(r.timestamp.timestamp_millis());
        if let Some(k) = key.as_ref() {
            rec = rec.key(k);
        }
        send_retrying(&producer, rec);
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("all records delivered");
    let failed = producer.context().0.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} records not delivered to {topic}, e.g. {:?}",
        failed.len(),
        failed.first()
    );
}

/// Queues a record, waiting for room while the producer's queue is full.
fn send_retrying<K, P>(producer: &BaseProducer<FailedDeliveries>, mut rec: BaseRecord<'_, K, P>)
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((_, back)) => {
                rec = back;
                producer.poll(Duration::from_millis(20));
            }
        }
    }
}

/// Collects delivery errors: `flush` alone does not say whether records were refused.
#[derive(Default)]
pub struct FailedDeliveries(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for FailedDeliveries {}

impl rdkafka::producer::ProducerContext for FailedDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
}

/// Everything under a location: landed event ids (with multiplicity) and quarantine lines.
#[derive(Debug, Default)]
pub struct LandingContents {
    pub event_ids: BTreeMap<String, usize>,
    pub quarantine: Vec<serde_json::Value>,
    pub objects: Vec<String>,
}

impl LandingContents {
    pub fn duplicates(&self) -> Vec<&String> {
        self.event_ids
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id)
            .collect()
    }
}

pub async fn read_landing(location: &Location, topic: &str) -> LandingContents {
    let mut out = LandingContents::default();
    let objects: Vec<_> = location
        .store
        .list(Some(&location.prefix))
        .try_collect()
        .await
        .expect("list landing");
    for meta in objects {
        let name = meta.location.to_string();
        let is_quarantine = name.contains("_quarantine/");
        // `_`-prefixed folders other than the quarantine (the landing log, `_ingest/`) and
        // hidden files are not data, as for every reader of the landing zone.
        let hidden = name
            .split('/')
            .any(|part| part.starts_with(['_', '.']) && part != "_quarantine");
        if !name.contains(&format!("{topic}/")) || hidden {
            continue;
        }
        let bytes = location
            .store
            .get(&meta.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let text = if name.ends_with(".gz") {
            let mut s = String::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut s)
                .expect("gunzip");
            s
        } else if name.ends_with(".zst") {
            String::from_utf8(zstd::decode_all(&bytes[..]).expect("zstd")).expect("utf-8")
        } else {
            String::from_utf8(bytes.to_vec()).expect("utf-8 landing file")
        };
        out.objects.push(name);
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
            if is_quarantine {
                out.quarantine.push(v);
            } else {
                let id = v["event_id"].as_str().expect("event_id").to_owned();
                *out.event_ids.entry(id).or_default() += 1;
            }
        }
    }
    out
}

/// Every expected event id landed exactly once, and nothing else.
pub fn assert_exactly_once(landed: &LandingContents, expected: &[String]) {
    let duplicates = landed.duplicates();
    assert!(
        duplicates.is_empty(),
        "{} event ids landed more than once, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(3)]
    );
    let got: std::collections::BTreeSet<&String> = landed.event_ids.keys().collect();
    let want: std::collections::BTreeSet<&String> = expected.iter().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty(),
        "{} good events missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(
        extra.is_empty(),
        "{} unexpected events, e.g. {:?}",
        extra.len(),
        extra.first()
    );
}

/// Every bad record of `records` is in the quarantine, once (by partition and offset).
pub fn assert_each_bad_record_quarantined_once(
    landed: &LandingContents,
    records: &[GeneratedRecord],
) {
    let offsets: std::collections::BTreeSet<(i64, i64)> = landed
        .quarantine
        .iter()
        .map(|q| {
            (
                q["partition"].as_i64().unwrap(),
                q["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        offsets.len(),
        landed.quarantine.len(),
        "no quarantined record twice"
    );
    assert_eq!(
        offsets.len(),
        records.iter().filter(|r| r.bad.is_some()).count()
    );
}

pub fn good_ids(records: &[GeneratedRecord]) -> Vec<String> {
    records.iter().filter_map(|r| r.event_id.clone()).collect()
}

pub fn streamflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamflow"));
    c.env("STREAMFLOW_BOOTSTRAP", bootstrap());
    c.env("RUST_LOG", "warn");
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run streamflow");
    assert!(
        out.status.success(),
        "streamflow failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn summary_of(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).expect("JSON summary")
}

/// Polls `check` until it returns Some or the timeout passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Number of files under a local directory, recursively.
pub fn count_files(dir: &std::path::Path) -> usize {
    fn walk(d: &std::path::Path, n: &mut usize) {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, n);
                } else {
                    *n += 1;
                }
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

/// Freezes or thaws a process (SIGSTOP / SIGCONT), so a server can be stopped while the
/// drain is certainly in the middle of its work.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig}");
}

pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The S3 location of a fresh prefix in the `landing` bucket of the test S3 server.
pub fn s3_landing() -> String {
    format!("s3://landing/test-{}", uuid::Uuid::new_v4().simple())
}

/// Sets the AWS_* variables for the test S3 server, as `scripts/s3.sh env` prints them.
pub fn s3_env(cmd: &mut Command) -> &mut Command {
    for (k, v) in s3_vars() {
        cmd.env(k, v);
    }
    cmd
}

pub fn s3_vars() -> Vec<(String, String)> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/s3.sh"))
        .arg("env")
        .output()
        .expect("scripts/s3.sh env");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.trim_matches('"').trim_matches('\'').to_owned(),
            )
        })
        .collect()
}

/// A [`Location`] for an `s3://` URL on the test S3 server, configured explicitly (tests run
/// in threads, so they do not change the process environment).
pub fn s3_location(url: &str) -> Location {
    let (bucket, prefix) = url
        .trim_start_matches("s3://")
        .split_once('/')
        .unwrap_or((url, ""));
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
    for (k, v) in s3_vars() {
        if let Ok(key) = k
            .to_ascii_lowercase()
            .parse::<object_store::aws::AmazonS3ConfigKey>()
        {
            builder = builder.with_config(key, v);
        }
    }
    Location {
        store: std::sync::Arc::new(builder.build().expect("S3 client")),
        store_url: url::Url::parse(&format!("s3://{bucket}/")).expect("url"),
        prefix: object_store::path::Path::from(prefix),
        display: url.to_owned(),
    }
}

/// A transactional producer on the test broker, its transactions initialised.
pub fn transactional_producer() -> BaseProducer<FailedDeliveries> {
    let producer: BaseProducer<FailedDeliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set(
            "transactional.id",
            format!("test-tx-{}", uuid::Uuid::new_v4().simple()),
        )
        .create_with_context(FailedDeliveries::default())
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    producer
}

/// Sends `records` to `topic` in one transaction, then commits or aborts it.
pub fn send_transaction(
    producer: &BaseProducer<FailedDeliveries>,
    topic: &str,
    records: &[GeneratedRecord],
    commit: bool,
) {
    producer.begin_transaction().expect("begin transaction");
    for r in records {
        let rec = BaseRecord::to(topic)
            .payload(&r.value)
            .key(r.key.as_bytes())
            .timestamp(r.timestamp.timestamp_millis());
        send_retrying(producer, rec);
    }
    // Written to the log before the end of the transaction, so an aborted one takes offsets
    // too (and delivery reports need polling before an abort).
    producer
        .flush(Duration::from_secs(30))
        .expect("transaction's records written");
    if commit {
        producer
            .commit_transaction(Duration::from_secs(30))
            .expect("commit transaction");
    } else {
        producer
            .abort_transaction(Duration::from_secs(30))
            .expect("abort transaction");
    }
    let failed = producer.context().0.lock().unwrap();
    assert!(
        failed.is_empty(),
        "records not delivered: {:?}",
        failed.first()
    );
    // The commit or abort returns before the brokers have written the transaction's markers;
    // until then the last stable offset stays before the transaction.
    wait_for("the transaction's markers", Duration::from_secs(30), || {
        (high_watermarks_as(topic, "read_committed")
            == high_watermarks_as(topic, "read_uncommitted"))
        .then_some(())
    });
}

/// The oracle: the event ids a `read_committed` consumer of its own reads from every
/// partition of `topic`, from the start to the end, independently of the drain.
pub fn committed_event_ids(topic: &str) -> Vec<String> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set(
            "group.id",
            format!("oracle-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("oracle consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut open = std::collections::BTreeSet::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .expect("assignment");
        open.insert(p.id());
    }
    consumer.assign(&tpl).expect("assign");
    let mut ids = Vec::new();
    wait_for(
        "the oracle to read every partition",
        Duration::from_secs(60),
        || {
            // Everything queued at once: wait_for pauses between calls.
            let mut wait = Duration::from_millis(100);
            while let Some(polled) = consumer.poll(wait) {
                wait = Duration::ZERO;
                match polled {
                    Ok(m) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON");
                        if let Some(id) = v["event_id"].as_str() {
                            ids.push(id.to_owned());
                        }
                    }
                    Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                        open.remove(&p);
                    }
                    Err(e) => panic!("oracle: {e}"),
                }
            }
            open.is_empty().then_some(())
        },
    );
    ids
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Deletes a consumer group and its committed offsets, as an operator (or the broker's
/// `offsets.retention.minutes` expiry) would.
pub async fn delete_group(group: &str) {
    for r in admin()
        .delete_groups(&[group], &admin_options())
        .await
        .expect("delete group")
    {
        r.expect("group deleted");
    }
}

/// Deletes the records of `topic`'s partition before `offset`, as retention would.
pub async fn delete_records_before(topic: &str, partition: i32, offset: i64) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .expect("offsets");
    let result = admin()
        .delete_records(&tpl, &admin_options())
        .await
        .expect("delete records");
    for e in result.elements() {
        e.error().expect("records deleted");
    }
}

/// Deletes `topic` and creates a topic of the same name again, waiting (with a timeout) until
/// the broker has finished deleting the old one.
pub async fn recreate_topic(topic: &str, partitions: i32) {
    let admin = admin();
    for r in admin
        .delete_topics(&[topic], &admin_options())
        .await
        .expect("delete topic")
    {
        r.expect("topic deleted");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let created = admin
            .create_topics([&new], &admin_options())
            .await
            .expect("create topic")
            .into_iter()
            .all(|r| r.is_ok());
        if created {
            return;
        }
        // The old topic is still being deleted.
        assert!(
            Instant::now() < deadline,
            "{topic} could not be created again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The high watermarks (last stable offsets, read_committed) of every partition of `topic`,
/// read by a client of its own.
pub fn high_watermarks(topic: &str) -> BTreeMap<i32, i64> {
    high_watermarks_as(topic, "read_committed")
}

/// The high watermarks of `topic` as a consumer of `isolation` (librdkafka's
/// `isolation.level`) sees them.
fn high_watermarks_as(topic: &str, isolation: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("wm-{}", uuid::Uuid::new_v4().simple()))
        .set("isolation.level", isolation)
        .create()
        .expect("watermark consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .expect("watermarks");
            (p.id(), high)
        })
        .collect()
}
