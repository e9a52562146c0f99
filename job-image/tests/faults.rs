//! The drain when its servers fail under it or it is killed: the Kafka broker stopped
//! mid-drain, the S3 server stopped mid-upload or hung past the upload window, and a storm of
//! kill -9s at random moments into S3. The outages stop and start the shared test servers, so
//! these tests take turns ([`SERVERS`]).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::TryStreamExt as _;
use streamflow::events::EventKind;
use streamflow::store::Location;

/// Held by each test for its whole run: one test's outage must not land in another's drain.
static SERVERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn script(name: &str, action: &str) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts").join(name))
        .arg(action)
        .stdout(Stdio::null())
        .status()
        .expect("run script");
    assert!(status.success(), "scripts/{name} {action} failed");
}

/// Waits for the child to end, for at most `timeout`; returns whether it succeeded, or None.
fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status.success());
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    None
}

/// Freezes the drain mid-way, runs `outage` (the server goes down), and lets the drain go on
/// against the missing server.
fn with_drain_frozen(child: &mut std::process::Child, outage: impl FnOnce()) {
    signal(child, "STOP");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the drain ended before the outage: give it more records"
    );
    outage();
    signal(child, "CONT");
}

/// Starts the drain with its output in `log`, so a drain that ends early can say why.
fn spawn_logged(mut cmd: Command, log: &std::path::Path) -> std::process::Child {
    let out = std::fs::File::create(log).expect("create the drain's log");
    let err = out.try_clone().expect("clone the log's handle");
    cmd.stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the drain")
}

/// Fails the test at once, with the drain's output, if the drain has already ended: the
/// fault is to meet a drain at work, and a drain that failed before it would otherwise be
/// waited for until the timeout.
fn assert_still_draining(child: &mut std::process::Child, log: &std::path::Path) {
    if let Some(status) = child.try_wait().expect("try_wait") {
        panic!(
            "the drain ended ({status}) before the fault was injected; its output:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

fn ingest(landing: &str, topic: &str, group: &str) -> Command {
    ingest_in_files_of(landing, topic, group, 500)
}

fn ingest_in_files_of(landing: &str, topic: &str, group: &str, records: u32) -> Command {
    let mut cmd = streamflow();
    cmd.args([
        "ingest",
        "--landing",
        landing,
        "--topic",
        topic,
        common::schema_flag(topic)[0],
        topic,
        "--group",
        group,
        "--stall-timeout",
        "20s",
    ]);
    cmd.arg("--max-file-records").arg(records.to_string());
    cmd
}

/// Reruns the drain until one completes (a failed attempt is allowed: it must fail cleanly).
fn drain_to_completion(mut make: impl FnMut() -> Command) {
    for _ in 0..5 {
        let out = make().output().expect("run ingest");
        eprintln!(
            "rerun: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        if out.status.success() && summary_of(&out)["complete"] == true {
            return;
        }
    }
    panic!("the drain did not complete after the servers came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn drains_survive_a_stopped_broker_and_a_stopped_s3_server() {
    let _turn = SERVERS.lock().await;
    // Kafka stopped mid-drain, then started again.
    let topic = fresh_topic(EventKind::User, 3).await;
    let mut g = generator(EventKind::User, 11, "2026-11-20T00:00:00Z", 0.01);
    let recs: Vec<_> = (0..150_000).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap().to_owned();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let log = logs.path().join("broker-fault.log");
    let mut child = spawn_logged(ingest(&landing, &topic, &group), &log);
    wait_for("the drain to write files", Duration::from_secs(120), || {
        assert_still_draining(&mut child, &log);
        (count_files(dir.path()) >= 2).then_some(())
    });
    with_drain_frozen(&mut child, || script("kafka.sh", "stop"));
    // Let the drain meet the missing broker, then bring the broker back.
    let _ = wait_exit(&mut child, Duration::from_secs(3));
    script("kafka.sh", "start");
    let ended = wait_exit(&mut child, Duration::from_secs(180));
    kill9(&mut child);
    assert!(
        ended.is_some(),
        "the drain neither finished nor failed after the broker came back"
    );
    drain_to_completion(|| ingest(&landing, &topic, &group));
    let landed = read_landing(&Location::parse(&landing).unwrap(), &topic).await;
    assert!(
        landed.duplicates().is_empty(),
        "duplicates after a broker restart"
    );
    assert_eq!(landed.event_ids.len(), good_ids(&recs).len());

    // S3 stopped mid-upload, then started again.
    let topic = fresh_topic(EventKind::User, 3).await;
    let mut g = generator(EventKind::User, 12, "2026-11-22T00:00:00Z", 0.01);
    let recs: Vec<_> = (0..100_000).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let url = s3_landing();
    let location = s3_location(&url);
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let s3_ingest = || {
        let mut cmd = ingest(&url, &topic, &group);
        s3_env(&mut cmd);
        cmd
    };
    let log = logs.path().join("s3-fault.log");
    let mut child = spawn_logged(s3_ingest(), &log);
    wait_for_objects_in_s3(&location, &mut child, &log).await;
    with_drain_frozen(&mut child, || script("s3.sh", "stop"));
    // Leave it down long enough for uploads to fail and be retried, then bring it back.
    let _ = wait_exit(&mut child, Duration::from_secs(3));
    script("s3.sh", "start");
    let ended = wait_exit(&mut child, Duration::from_secs(180));
    kill9(&mut child);
    assert!(
        ended.is_some(),
        "the drain neither finished nor failed after S3 came back"
    );
    eprintln!(
        "first drain succeeded: {ended:?}; objects now: {}",
        count_objects(&location).await
    );
    drain_to_completion(s3_ingest);
    let landed = read_landing(&location, &topic).await;
    assert!(
        landed.duplicates().is_empty(),
        "duplicates after an S3 restart"
    );
    assert_eq!(landed.event_ids.len(), good_ids(&recs).len());
}

/// A drain into S3 (SeaweedFS) of `topic` for the kill storm: small batches, so that there
/// are many uploads and commits to be cut between.
fn s3_storm_ingest(url: &str, topic: &str, group: &str) -> Command {
    let mut cmd = ingest_in_files_of(url, topic, group, 100);
    s3_env(&mut cmd);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_kill_9s_at_random_moments_into_s3_land_every_record_once() {
    let _turn = SERVERS.lock().await;
    use rand::{Rng, SeedableRng};
    const KILLS: usize = 30;
    let topic = fresh_topic(EventKind::Transaction, 3).await;
    let mut g = generator(EventKind::Transaction, 21, "2026-11-23T00:00:00Z", 0.02);
    let recs: Vec<_> = (0..120_000).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let url = s3_landing();
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let seed = std::process::id() as u64;
    eprintln!("kill moments from seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("storm.log");
    for kill in 1..=KILLS {
        let mut child = spawn_logged(s3_storm_ingest(&url, &topic, &group), &log);
        // Any moment of a run: starting up (listing the landing log, reading offsets),
        // cutting, uploading, between an upload and its commit.
        let moment = Duration::from_millis(rng.random_range(0..1_000));
        if let Some(succeeded) = wait_exit(&mut child, moment) {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                !succeeded,
                "the drain completed before kill {kill} of {KILLS}: give it more records"
            );
            panic!("the drain failed by itself before kill {kill}:\n{output}");
        }
        kill9(&mut child);
    }
    drain_to_completion(|| s3_storm_ingest(&url, &topic, &group));
    let landed = read_landing(&s3_location(&url), &topic).await;
    assert_exactly_once(&landed, &good_ids(&recs));
    assert_each_bad_record_quarantined_once(&landed, &recs);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_server_hung_past_the_upload_window_fails_the_drain_and_loses_nothing() {
    let _turn = SERVERS.lock().await;
    const WINDOW: Duration = Duration::from_secs(4);
    let topic = fresh_topic(EventKind::User, 3).await;
    let mut g = generator(EventKind::User, 22, "2026-11-24T00:00:00Z", 0.01);
    let recs: Vec<_> = (0..100_000).map(|_| g.next_record()).collect();
    send_all(&topic, &recs);
    let url = s3_landing();
    let location = s3_location(&url);
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let hung_ingest = || {
        let mut cmd = ingest(&url, &topic, &group);
        cmd.arg("--upload-retry-timeout")
            .arg(format!("{}s", WINDOW.as_secs()));
        s3_env(&mut cmd);
        cmd
    };
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("hung.log");
    let mut child = spawn_logged(hung_ingest(), &log);
    wait_for_objects_in_s3(&location, &mut child, &log).await;
    // Hung, not stopped: connections open and requests go unanswered, so only the drain's
    // own window can end the wait.
    with_drain_frozen(&mut child, || script("s3.sh", "freeze"));
    let ended = wait_exit(&mut child, WINDOW + Duration::from_secs(20));
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    kill9(&mut child);
    script("s3.sh", "thaw");
    assert_eq!(
        ended,
        Some(false),
        "the drain did not fail within its upload window while S3 hung:\n{output}"
    );
    assert!(
        output.contains("no answer within the upload retry window"),
        "the drain's error does not say the store did not answer:\n{output}"
    );
    drain_to_completion(|| {
        let mut cmd = ingest(&url, &topic, &group);
        s3_env(&mut cmd);
        cmd
    });
    let landed = read_landing(&location, &topic).await;
    assert_exactly_once(&landed, &good_ids(&recs));
    assert_each_bad_record_quarantined_once(&landed, &recs);
}

/// Waits until the drain has written a few objects to S3, so that what follows hits it mid-way.
async fn wait_for_objects_in_s3(
    location: &Location,
    child: &mut std::process::Child,
    log: &std::path::Path,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_objects(location).await < 3 {
        assert_still_draining(child, log);
        assert!(Instant::now() < deadline, "no objects reached S3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count_objects(location: &Location) -> usize {
    location
        .store
        .list(Some(&location.prefix))
        .try_collect::<Vec<_>>()
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}
