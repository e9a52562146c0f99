//! Produce and ingest against the secured listeners of the test broker (scripts/kafka.sh: TLS
//! with a client certificate, SASL_SSL with SCRAM-SHA-512), with the certificates and the
//! password it made, given as files the way the operator mounts Strimzi's Secrets.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::*;
use streamflow::events::EventKind;
use streamflow::store::Location;

/// `scripts/kafka.sh security`: where the secured listeners are, and the files to use.
fn secured() -> BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/kafka.sh"))
        .arg("security")
        .output()
        .expect("run scripts/kafka.sh security");
    assert!(
        out.status.success(),
        "no secured listeners (scripts/test starts the broker with them: scripts/kafka.sh start): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The flags of mutual TLS: the cluster CA trusted, the user's certificate and key.
fn mutual_tls(s: &BTreeMap<String, String>) -> Vec<String> {
    [
        ("--bootstrap", "KAFKA_TLS_BOOTSTRAP"),
        ("--tls-ca", "KAFKA_CLUSTER_CA"),
        ("--tls-cert", "KAFKA_USER_CERT"),
        ("--tls-key", "KAFKA_USER_KEY"),
    ]
    .iter()
    .flat_map(|(flag, var)| [flag.to_string(), s[*var].clone()])
    .collect()
}

/// The flags of SCRAM-SHA-512 over TLS, with the password in `password_file`.
fn scram(s: &BTreeMap<String, String>, password_file: &str) -> Vec<String> {
    vec![
        "--bootstrap".into(),
        s["KAFKA_SCRAM_BOOTSTRAP"].clone(),
        "--tls-ca".into(),
        s["KAFKA_CLUSTER_CA"].clone(),
        "--sasl-username".into(),
        s["KAFKA_SCRAM_USERNAME"].clone(),
        "--sasl-password-file".into(),
        password_file.into(),
    ]
}

fn run(security: &[String], args: &[&str]) -> Output {
    streamflow()
        .args(security)
        .args(args)
        .output()
        .expect("run streamflow")
}

/// Produces `count` records to a topic of its own and ingests them, both with `security`;
/// returns the topic and what landed.
async fn produce_and_ingest(security: &[String], count: u64) -> (String, LandingContents) {
    let topic = fresh_topic(EventKind::User, 2).await;
    let produced = run(
        security,
        &[
            "produce",
            "--topic",
            &topic,
            "--user-events-topic",
            &topic,
            "--count",
            &count.to_string(),
        ],
    );
    assert!(
        produced.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert_eq!(summary_of(&produced)["records"], count);
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().to_str().unwrap();
    let group = format!("test_secured_{}", uuid::Uuid::new_v4().simple());
    let ingested = run(
        security,
        &[
            "ingest",
            "--topic",
            &topic,
            "--user-events-topic",
            &topic,
            "--landing",
            landing,
            "--group",
            &group,
        ],
    );
    assert!(
        ingested.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&ingested.stderr)
    );
    assert_eq!(summary_of(&ingested)["records"], count);
    let landed = read_landing(&Location::parse(landing).unwrap(), &topic).await;
    (topic, landed)
}

#[tokio::test]
async fn produce_and_ingest_over_mutual_tls() {
    let (_, landed) = produce_and_ingest(&mutual_tls(&secured()), 40).await;
    assert_eq!(landed.event_ids.len(), 40);
    assert!(landed.duplicates().is_empty());
}

#[tokio::test]
async fn produce_and_ingest_over_scram_sha_512() {
    let s = secured();
    let (_, landed) = produce_and_ingest(&scram(&s, &s["KAFKA_SCRAM_PASSWORD_FILE"]), 40).await;
    assert_eq!(landed.event_ids.len(), 40);
    assert!(landed.duplicates().is_empty());
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_with_the_brokers_reason_and_lands_nothing() {
    let s = secured();
    let topic = fresh_topic(EventKind::User, 1).await;
    let mut g = generator(EventKind::User, 7, "2026-03-01T00:00:00Z", 0.0);
    let records: Vec<_> = (0..10).map(|_| g.next_record()).collect();
    send_all(&topic, &records);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let landing = dir.path().join("landing");
    let started = std::time::Instant::now();
    let out = run(
        &scram(&s, wrong.to_str().unwrap()),
        &[
            "ingest",
            "--topic",
            &topic,
            "--user-events-topic",
            &topic,
            "--landing",
            landing.to_str().unwrap(),
            "--interval",
            "2026-03-01",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Transient: the next attempt reads the Secret again, which may have been rotated.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("SASL authentication") && stderr.contains("invalid credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "a refused login should fail at once, not at a timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(count_files(&landing), 0, "nothing landed");

    // A client certificate the broker does not know of: the TLS listener refuses it.
    let out = run(
        &[
            "--bootstrap".into(),
            s["KAFKA_TLS_BOOTSTRAP"].clone(),
            "--tls-ca".into(),
            s["KAFKA_CLUSTER_CA"].clone(),
        ],
        &[
            "produce",
            "--topic",
            &topic,
            "--user-events-topic",
            &topic,
            "--count",
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad certificate"), "{stderr}");
}

#[test]
fn a_missing_credentials_file_is_named_with_its_flag() {
    let s = secured();
    let out = run(
        &scram(&s, "/nonexistent/kafka-user/password"),
        &["ingest", "--interval", "2026-03-01", "--landing", "/tmp/x"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Permanent: the same files give the same error.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/kafka-user/password")
            && stderr.contains("--sasl-password-file"),
        "{stderr}"
    );
}
