//! The drain when its servers fail under it: the Kafka broker stopped mid-drain and the S3
//! server stopped mid-upload. These stop and start the shared test servers, so they run one
//! after the other in this one test binary.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::TryStreamExt as _;
use streamflow::events::EventKind;
use streamflow::store::Location;

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

/// Freezes or thaws a process (SIGSTOP / SIGCONT), so a server can be stopped while the
/// drain is certainly in the middle of its work.
fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig}");
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
    let mut cmd = streamflow();
    cmd.args([
        "ingest",
        "--landing",
        landing,
        "--topic",
        topic,
        "--group",
        group,
        "--max-file-records",
        "500",
        "--stall-timeout",
        "20s",
    ]);
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
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = location
            .store
            .list(Some(&location.prefix))
            .try_collect::<Vec<_>>()
            .await
            .map(|v| v.len())
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert_still_draining(&mut child, &log);
        assert!(Instant::now() < deadline, "no objects reached S3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        location
            .store
            .list(Some(&location.prefix))
            .try_collect::<Vec<_>>()
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    );
    drain_to_completion(s3_ingest);
    let landed = read_landing(&location, &topic).await;
    assert!(
        landed.duplicates().is_empty(),
        "duplicates after an S3 restart"
    );
    assert_eq!(landed.event_ids.len(), good_ids(&recs).len());
}
