//! `kafka.tls` and `kafka.authentication` as Strimzi's clients have them, against a real
//! kube-apiserver (`scripts/kube.sh`) and the secured listeners of the real broker
//! (`scripts/kafka.sh`: TLS with client certificates, SASL_SSL with SCRAM-SHA-512), the Jobs
//! run by the kubelet stand-in, which writes each Secret volume's files as the kubelet does.

mod support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use streamflow_operator::api::pipelinerun::{Phase, PipelineRun, StageStatus};
use streamflow_operator::api::stage::Stage;
use support::*;

/// `scripts/kafka.sh security`: the secured listeners and the files of their credentials.
fn secured() -> Result<BTreeMap<String, String>> {
    script_exports("scripts/kafka.sh", "security")
}

fn read(s: &BTreeMap<String, String>, var: &str) -> Result<String> {
    let path = s.get(var).with_context(|| format!("{var} not printed"))?;
    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
}

async fn put_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    data: &[(&str, &str)],
) -> Result<()> {
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": data,
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("kafka-security-test").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// A minute of its own, long ago, so that only this test's records are in it.
fn own_minute() -> DateTime<Utc> {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let minute = ((nanos / 1000) ^ std::process::id() as u64) % (365 * 24 * 60);
    "2019-01-01T00:00:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap_or_default()
        + Duration::minutes(minute as i64)
}

/// A topic of its own, of user events (named so where it is used), so that its offsets follow
/// its records' times, as interval mode expects.
async fn fresh_topic() -> Result<String> {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let topic = format!(
        "test_user_events_kafkasec_{nanos:x}{:x}",
        std::process::id()
    );
    let out = tokio::process::Command::new(repo_root().join("scripts/kafka.sh"))
        .args(["topics", "--create", "--topic", &topic, "--partitions", "2"])
        .args(["--replication-factor", "1"])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "cannot create topic {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(topic)
}

/// Produces `count` records into `topic` from `start` on, over the SCRAM listener.
async fn produce(
    s: &BTreeMap<String, String>,
    topic: &str,
    start: DateTime<Utc>,
    count: u32,
) -> Result<()> {
    let out = tokio::process::Command::new(streamflow_bin())
        .args(["--bootstrap", &s["KAFKA_SCRAM_BOOTSTRAP"]])
        .args(["--tls-ca", &s["KAFKA_CLUSTER_CA"]])
        .args(["--sasl-username", &s["KAFKA_SCRAM_USERNAME"]])
        .args(["--sasl-password-file", &s["KAFKA_SCRAM_PASSWORD_FILE"]])
        .args(["produce", "--topic", topic, "--user-events-topic", topic])
        .args(["--spacing", "100ms"])
        .args(["--count", &count.to_string()])
        .args(["--start", &start.to_rfc3339_opts(SecondsFormat::Secs, true)])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// An ingest-only run of `start`'s minute of `topic`, into `landing`.
fn run_body(
    name: &str,
    topic: &str,
    start: DateTime<Utc>,
    kafka: serde_json::Value,
    landing: &str,
) -> serde_json::Value {
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut spec = json!({
        "interval": {"start": ts(start), "end": ts(start + Duration::minutes(1))},
        "stages": ["ingest"],
        "kafka": {"topics": [topic], "userEventsTopic": topic},
        "storage": {"landing": landing, "gold": "/unused"},
        // Long enough to rotate the Secret between two attempts.
        "retry": {"maxAttempts": 3, "initialBackoff": "8s", "maxBackoff": "8s"},
    });
    if let Some(fields) = kafka.as_object() {
        for (k, v) in fields {
            spec["kafka"][k] = v.clone();
        }
    }
    json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn ingest(run: &PipelineRun) -> Option<&StageStatus> {
    run.status.as_ref().and_then(|s| s.stage(Stage::Ingest))
}

/// A run that trusts the cluster CA and logs in with a client certificate, and one that logs
/// in with SCRAM-SHA-512, each from the Secrets Strimzi would make (a cluster CA's `ca.crt`, a
/// KafkaUser's `user.crt`/`user.key` or `password`), land the records of their interval. The
/// SCRAM Secret first holds a wrong password: the attempt fails saying so, and once the
/// Secret is changed (as a rotation changes it) the next attempt's Job logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_log_in_with_strimzis_secrets_and_a_changed_secret_reaches_the_next_job() -> Result<()>
{
    require_streamflow_bin()?;
    let s = secured()?;
    let client = client().await?;
    install_crd(&client).await?;
    let ns = namespace(&client, "sf-kafkasec").await?;
    put_secret(
        &client,
        &ns,
        "events-cluster-ca-cert",
        &[("ca.crt", &read(&s, "KAFKA_CLUSTER_CA")?)],
    )
    .await?;
    put_secret(
        &client,
        &ns,
        "ingest-tls",
        &[
            ("user.crt", &read(&s, "KAFKA_USER_CERT")?),
            ("user.key", &read(&s, "KAFKA_USER_KEY")?),
        ],
    )
    .await?;
    put_secret(
        &client,
        &ns,
        "ingest-scram",
        &[("password", "not-the-password")],
    )
    .await?;
    let trusted = json!({"trustedCertificates": [
        {"secretName": "events-cluster-ca-cert", "certificate": "ca.crt"}]});

    let tls_minute = own_minute();
    let scram_minute = tls_minute + Duration::minutes(1);
    let topic = fresh_topic().await?;
    produce(&s, &topic, tls_minute, 30).await?;
    produce(&s, &topic, scram_minute, 20).await?;
    let dir = tempfile::tempdir()?;
    let landing = |name: &str| dir.path().join(name).display().to_string();

    let op = Operator::start(&ns).await?;
    let _kubelet = Kubelet::start(client.clone(), &ns);
    create_run(
        &client,
        &ns,
        run_body(
            "mtls",
            &topic,
            tls_minute,
            json!({"bootstrap": s["KAFKA_TLS_BOOTSTRAP"], "tls": trusted,
                "authentication": {"type": "tls", "certificateAndKey": {
                    "secretName": "ingest-tls", "certificate": "user.crt", "key": "user.key"}}}),
            &landing("mtls"),
        ),
    )
    .await?;
    create_run(
        &client,
        &ns,
        run_body(
            "scram",
            &topic,
            scram_minute,
            json!({"bootstrap": s["KAFKA_SCRAM_BOOTSTRAP"], "tls": trusted,
                "authentication": {"type": "scram-sha-512",
                    "username": s["KAFKA_SCRAM_USERNAME"],
                    "passwordSecret": {"secretName": "ingest-scram", "password": "password"}}}),
            &landing("scram"),
        ),
    )
    .await?;

    let run = wait_run(&client, &ns, "mtls", "phase Succeeded", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Succeeded)
    })
    .await?;
    let summary = ingest(&run)
        .and_then(|s| s.summary.clone())
        .unwrap_or_default();
    ensure!(summary.records == Some(30), "mtls landed {summary:?}");

    let failed = wait_run(&client, &ns, "scram", "attempt 1 failed", |r| {
        ingest(r).is_some_and(|s| s.attempts == 1 && s.message.is_some())
    })
    .await?;
    let message = ingest(&failed)
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("SASL authentication") && !message.contains("not-the-password"),
        "attempt 1: {message}"
    );
    // The rotation: the Secret gets the password the broker has.
    put_secret(
        &client,
        &ns,
        "ingest-scram",
        &[("password", &read(&s, "KAFKA_SCRAM_PASSWORD_FILE")?)],
    )
    .await?;
    let run = wait_run(&client, &ns, "scram", "phase Succeeded", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Succeeded)
    })
    .await?;
    let stage = ingest(&run).context("no ingest status")?;
    ensure!(stage.attempts == 2, "attempts: {}", stage.attempts);
    ensure!(
        stage.summary.as_ref().and_then(|s| s.records) == Some(20),
        "scram landed {:?}",
        stage.summary
    );
    op.kill().await?;
    Ok(())
}

/// What `kafka.tls` and `kafka.authentication` must hold is checked when a run is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_kafka_security_is_refused_with_a_reason() -> Result<()> {
    let client = client().await?;
    install_crd(&client).await?;
    let ns = namespace(&client, "sf-kafkasec-invalid").await?;
    let ar = ApiResource::erase::<PipelineRun>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse()?;
    let scram = |extra: serde_json::Value| {
        let mut auth = json!({"type": "scram-sha-512", "username": "u",
            "passwordSecret": {"secretName": "u", "password": "password"}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            auth[k] = v.clone();
        }
        auth
    };
    let cases = [
        (
            json!({"authentication": {"type": "scram-sha-512", "username": "u"}}),
            "type scram-sha-512 takes username and passwordSecret",
        ),
        (
            json!({"authentication": scram(json!({"certificateAndKey":
                {"secretName": "u", "certificate": "user.crt", "key": "user.key"}}))}),
            "type scram-sha-512 takes username and passwordSecret (and no certificateAndKey)",
        ),
        (
            json!({"tls": {}, "authentication": {"type": "tls"}}),
            "type tls takes certificateAndKey",
        ),
        (
            json!({"authentication": {"type": "tls", "certificateAndKey":
                {"secretName": "u", "certificate": "user.crt", "key": "user.key"}}}),
            "type tls (client certificates) needs kafka.tls",
        ),
        (
            json!({"authentication": {"type": "oauth"}}),
            "Unsupported value: \"oauth\"",
        ),
        (
            json!({"tls": {"trustedCertificates": [{"secretName": "ca"}]}}),
            "give either certificate (a key) or pattern (a glob of keys), not both",
        ),
        (
            json!({"tls": {"trustedCertificates": [
                {"secretName": "ca", "certificate": "ca.crt", "pattern": "*.crt"}]}}),
            "give either certificate (a key) or pattern (a glob of keys), not both",
        ),
        (
            json!({"tls": {"trustedCertificates": [
                {"secretName": "Not_A_Secret", "certificate": "ca.crt"}]}}),
            "spec.kafka.tls.trustedCertificates[0].secretName",
        ),
        (
            json!({"authentication": scram(json!({"passwordSecret":
                {"secretName": "u", "password": "../etc/passwd"}}))}),
            "spec.kafka.authentication.passwordSecret.password",
        ),
    ];
    for (i, (kafka, expected)) in cases.into_iter().enumerate() {
        let mut fields = json!({"bootstrap": "k:9093"});
        for (k, v) in kafka.as_object().into_iter().flatten() {
            fields[k] = v.clone();
        }
        let msg = refusal(
            &api,
            run_body(&format!("bad-{i}"), "t", start, fields, "/l"),
        )
        .await?;
        ensure!(
            msg.contains(expected),
            "case {i}: expected {expected:?} in: {msg}"
        );
    }
    // Strimzi's shapes are accepted: a cluster CA by key or by pattern, either user type.
    let good = [
        json!({"tls": {"trustedCertificates": [
                {"secretName": "events-cluster-ca-cert", "certificate": "ca.crt"},
                {"secretName": "more-cas", "pattern": "*.crt"}]},
            "authentication": {"type": "tls", "certificateAndKey":
                {"secretName": "ingest", "certificate": "user.crt", "key": "user.key"}}}),
        json!({"authentication": scram(json!({}))}),
        json!({"tls": {}}),
    ];
    for (i, kafka) in good.into_iter().enumerate() {
        let mut fields = json!({"bootstrap": "k:9093"});
        for (k, v) in kafka.as_object().into_iter().flatten() {
            fields[k] = v.clone();
        }
        let obj: DynamicObject =
            serde_json::from_value(run_body(&format!("good-{i}"), "t", start, fields, "/l"))?;
        api.create(&PostParams::default(), &obj).await?;
    }
    Ok(())
}
