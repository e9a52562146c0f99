//! The operator against a real kube-apiserver (`scripts/kube.sh start`), real Kafka
//! (`scripts/kafka.sh start`) and a real S3 server (`scripts/s3.sh start`), with a kubelet
//! stand-in running each Job's `streamflow` command as a local process (see `support`).
//! Every test has its own namespace and its own operator process watching only it.

mod support;

use anyhow::{Context as _, Result, ensure};
use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use streamflow_operator::api::pipelinerun::{DeadlineState, Phase, PipelineRun, StagePhase};
use streamflow_operator::api::stage::Stage;
use support::*;

async fn setup(prefix: &str) -> Result<(kube::Client, String)> {
    let client = client().await?;
    install_crd(&client).await?;
    let ns = namespace(&client, prefix).await?;
    Ok((client, ns))
}

/// A ConfigMap with checks the validate stage cannot parse, so it fails at once.
async fn bad_checks(client: &kube::Client, ns: &str) -> Result<()> {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "bad-checks"},
        "data": {"checks.yaml": "checks:\n  - check: no_such_check\n    table: transactions\n"}
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await?;
    Ok(())
}

fn run_body(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {
            "interval": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"},
            "kafka": {"bootstrap": "127.0.0.1:9094"},
            "storage": {"landing": "s3://landing/unused", "gold": "s3://gold/unused"},
        }
    });
    if let (Some(b), Some(s)) = (base["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// The whole pipeline under the operator, with the operator killed (SIGKILL) once the first
/// Job exists and started again: the run succeeds, each stage ran exactly once (one Job per
/// stage, attempt 1), and the counts of the stage summaries are in the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_succeeds_across_an_operator_restart_without_duplicate_jobs() -> Result<()> {
    require_streamflow_bin()?;
    let (client, ns) = setup("sf-e2e").await?;
    let s3 = script_env("scripts/s3.sh")?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": s3.get("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID")?,
            "AWS_SECRET_ACCESS_KEY": s3.get("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY")?,
        }
    }))?;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;

    // Data for the interval: 200 records per topic, the last one timestamped now.
    let start = Utc::now() - chrono::Duration::seconds(30);
    let out = tokio::process::Command::new(streamflow_bin())
        .args([
            "produce",
            "--count",
            "200",
            "--spacing",
            "20ms",
            "--users",
            "50",
        ])
        .output()
        .await
        .with_context(|| format!("cannot run {}", streamflow_bin().display()))?;
    ensure!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end = Utc::now() + chrono::Duration::seconds(1);
    let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);

    let body = run_body(
        "e2e",
        json!({
            "interval": {"start": ts(start), "end": ts(end)},
            "storage": {
                "landing": format!("s3://landing/{ns}/raw"),
                "gold": format!("s3://gold/{ns}/tables"),
                "endpoint": s3.get("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL")?,
                "region": "us-east-1",
                "allowHttp": true,
                "credentialsSecretRef": {"name": "s3"},
                "landingCompression": "zstd",
            },
            "etl": {"buckets": 2},
            "runDeadline": "1h",
        }),
    );
    let op = Operator::start(&ns).await?;
    create_run(&client, &ns, body).await?;
    // No kubelet yet: the ingest Job stays active; the status records it.
    wait_run(&client, &ns, "e2e", "ingest attempt 1 in status", |r| {
        r.status
            .as_ref()
            .and_then(|s| s.stage(Stage::Ingest))
            .is_some_and(|s| s.attempts == 1)
    })
    .await?;
    op.kill().await?;
    let op = Operator::start(&ns).await?;
    wait_for("a reconcile by the restarted operator", TIMEOUT, || async {
        Ok((op.metric("streamflow_operator_reconciles_total").await? >= 1.0).then_some(()))
    })
    .await?;
    assert_eq!(job_names(&client, &ns, "e2e").await?, vec!["e2e-ingest-1"]);

    let kubelet = Kubelet::start(client.clone(), &ns);
    let run = wait_run(&client, &ns, "e2e", "phase Succeeded", |r| {
        r.status.as_ref().is_some_and(|s| s.phase.is_finished())
    })
    .await?;
    let st = run.status.clone().unwrap_or_default();
    assert_eq!(
        st.phase,
        Phase::Succeeded,
        "status: {st:#?}\nran: {:#?}",
        kubelet.ran.lock().map(|r| r.clone())
    );
    assert_eq!(
        job_names(&client, &ns, "e2e").await?,
        vec!["e2e-etl-1", "e2e-ingest-1", "e2e-validate-1"]
    );
    let ingest = st
        .stage(Stage::Ingest)
        .and_then(|s| s.summary.clone())
        .context("ingest summary")?;
    assert!(
        ingest.records.unwrap_or(0) >= 400,
        "ingest summary {ingest:?}"
    );
    let etl = st
        .stage(Stage::Etl)
        .and_then(|s| s.summary.clone())
        .context("etl summary")?;
    assert!(etl.rows.unwrap_or(0) > 0, "etl summary {etl:?}");
    assert!(
        etl.tables.get("transactions").copied().unwrap_or(0) > 0,
        "gold transactions {etl:?}"
    );
    let validate = st
        .stage(Stage::Validate)
        .and_then(|s| s.summary.clone())
        .context("validate summary")?;
    assert_eq!(validate.ok, Some(true), "validate summary {validate:?}");
    // The spec's landingCompression reached the drain: every landed data object is zstd (the
    // drain's log of what it landed, `_ingest/`, is JSON).
    let landing = landing_objects(&s3, &format!("{ns}/raw")).await?;
    let data: Vec<&String> = landing
        .iter()
        .filter(|name| !name.contains("/_ingest/"))
        .collect();
    ensure!(
        !data.is_empty() && data.iter().all(|name| name.ends_with(".ndjson.zst")),
        "landing objects: {landing:?}"
    );
    assert_eq!(validate.checks_failed, Some(0));
    for s in &st.stages {
        assert_eq!((s.phase, s.attempts), (StagePhase::Succeeded, 1), "{s:?}");
        assert!(s.start_time.is_some() && s.finish_time.is_some());
    }
    assert_eq!(st.deadline, Some(DeadlineState::Met));
    let succeeded = st.condition("Succeeded").context("Succeeded condition")?;
    assert_eq!(
        (succeeded.status.as_str(), succeeded.observed_generation),
        ("True", Some(1))
    );
    // Metrics of the restarted operator saw the stages finish (updated after the status write).
    wait_for("the run counted as Succeeded", TIMEOUT, || async {
        Ok((op
            .metric("streamflow_operator_runs{phase=\"Succeeded\"}")
            .await?
            == 1.0)
            .then_some(()))
    })
    .await?;
    assert!(
        op.metric("streamflow_operator_records_total{kind=\"landed\"}")
            .await?
            >= 400.0
    );
    assert!(
        op.metric("streamflow_operator_gold_rows_total{table=\"transactions\"}")
            .await?
            > 0.0
    );
    let ev = wait_events(&client, &ns, "e2e", "Succeeded", 1).await?;
    for r in ["StageStarted", "StageSucceeded"] {
        assert_eq!(
            ev.iter().filter(|e| e.0 == r).count(),
            3,
            "3 {r} events expected: {ev:?}"
        );
    }
    Ok(())
}

/// The names of the objects under `prefix` in the S3 server's landing bucket.
async fn landing_objects(
    s3: &std::collections::BTreeMap<String, String>,
    prefix: &str,
) -> Result<Vec<String>> {
    use futures::TryStreamExt as _;
    use object_store::ObjectStore as _;
    let var = |name: &str| s3.get(name).cloned().context(name.to_owned());
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(var("AWS_ENDPOINT_URL")?)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("landing")
        .with_access_key_id(var("AWS_ACCESS_KEY_ID")?)
        .with_secret_access_key(var("AWS_SECRET_ACCESS_KEY")?)
        .build()?;
    let objects: Vec<_> = store
        .list(Some(&object_store::path::Path::from(prefix)))
        .try_collect()
        .await?;
    Ok(objects
        .into_iter()
        .map(|o| o.location.to_string())
        .collect())
}

/// A stage that fails for a reason a retry may get past (exit code 1: Kafka unreachable) is
/// retried after 1 s, then 2 s, and the run fails after three attempts with the reason from the
/// Job and the stage's last log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_stage_retries_with_backoff_then_fails() -> Result<()> {
    require_streamflow_bin()?;
    let (client, ns) = setup("sf-retry").await?;
    let op = Operator::start(&ns).await?;
    let _kubelet = Kubelet::start(client.clone(), &ns);
    create_run(
        &client,
        &ns,
        run_body(
            "retry",
            json!({
                "stages": ["ingest"],
                // Nothing listens there: the drain fails at once, and may not next time.
                "kafka": {"bootstrap": "127.0.0.1:1"},
                "retry": {"maxAttempts": 3, "initialBackoff": "1s", "factor": 2, "maxBackoff": "10s"},
            }),
        ),
    )
    .await?;
    let run = wait_run(&client, &ns, "retry", "phase Failed", |r| {
        r.status.as_ref().is_some_and(|s| s.phase.is_finished())
    })
    .await?;
    let st = run.status.clone().unwrap_or_default();
    assert_eq!(st.phase, Phase::Failed, "{st:#?}");
    let v = st.stage(Stage::Ingest).context("ingest stage")?;
    assert_eq!((v.phase, v.attempts), (StagePhase::Failed, 3));
    assert_eq!(v.job_name, "retry-ingest-3");
    let message = v.message.clone().unwrap_or_default();
    assert!(message.starts_with("BackoffLimitExceeded"), "{message}");
    assert!(
        message.contains("Kafka is not reachable at 127.0.0.1:1"),
        "the log tail says why: {message}"
    );
    let cond = st.condition("Succeeded").context("Succeeded condition")?;
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "StageFailed")
    );
    assert!(
        cond.message.contains("ingest failed after 3 attempt(s)"),
        "{}",
        cond.message
    );
    assert_eq!(
        job_names(&client, &ns, "retry").await?,
        vec!["retry-ingest-1", "retry-ingest-2", "retry-ingest-3"]
    );
    let ev = wait_events(&client, &ns, "retry", "Failed", 1).await?;
    let retries: Vec<&String> = ev
        .iter()
        .filter(|e| e.0 == "Retrying")
        .map(|e| &e.1)
        .collect();
    assert_eq!(retries.len(), 2, "{ev:?}");
    assert!(
        retries.iter().any(|n| n.contains("after a 1s backoff")),
        "{retries:?}"
    );
    assert!(
        retries.iter().any(|n| n.contains("after a 2s backoff")),
        "{retries:?}"
    );
    assert!(ev.iter().any(|e| e.0 == "Failed"), "{ev:?}");
    // The failure as it happened, once, for alerts (StreamflowPipelineRunFailed): a run made by
    // hand has no owner.
    let finished = |result: &str| {
        format!(
            "streamflow_operator_runs_finished_total{{object_namespace=\"{ns}\",owner=\"\",owner_kind=\"\",result=\"{result}\"}}"
        )
    };
    assert_eq!(op.metric(&finished("failed")).await?, 1.0);
    assert_eq!(op.metric(&finished("succeeded")).await?, 0.0);
    Ok(())
}

/// A stage that fails in a way a retry meets again (checks the validate stage cannot parse:
/// exit code 3) fails its Job through the Job's podFailurePolicy, and the run after one
/// attempt, whatever `retry.maxAttempts` allows, saying why it was not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_fails_the_run_after_one_attempt() -> Result<()> {
    require_streamflow_bin()?;
    let (client, ns) = setup("sf-permanent").await?;
    bad_checks(&client, &ns).await?;
    let _op = Operator::start(&ns).await?;
    let kubelet = Kubelet::start(client.clone(), &ns);
    create_run(
        &client,
        &ns,
        run_body(
            "bad",
            json!({
                "stages": ["validate"],
                "validation": {"checksConfigMap": {"name": "bad-checks"}},
                "retry": {"maxAttempts": 3, "initialBackoff": "1s", "factor": 2, "maxBackoff": "10s"},
            }),
        ),
    )
    .await?;
    let run = wait_run(&client, &ns, "bad", "phase Failed", |r| {
        r.status.as_ref().is_some_and(|s| s.phase.is_finished())
    })
    .await?;
    let st = run.status.clone().unwrap_or_default();
    assert_eq!(st.phase, Phase::Failed, "{st:#?}");
    let v = st.stage(Stage::Validate).context("validate stage")?;
    assert_eq!((v.phase, v.attempts), (StagePhase::Failed, 1), "{v:?}");
    let ran = kubelet.ran.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(
        ran.iter().map(|r| r.exit_code).collect::<Vec<_>>(),
        [3],
        "{ran:?}"
    );
    let message = v.message.clone().unwrap_or_default();
    assert!(
        message.starts_with(
            "invalid input or configuration (exit code 3), not retried: PodFailurePolicy: Container validate"
        ),
        "{message}"
    );
    assert!(
        message.contains("no_such_check"),
        "the log tail names the bad check: {message}"
    );
    let cond = st.condition("Succeeded").context("Succeeded condition")?;
    assert!(
        cond.message.contains("validate failed after 1 attempt(s)"),
        "{}",
        cond.message
    );
    assert_eq!(
        job_names(&client, &ns, "bad").await?,
        vec!["bad-validate-1"]
    );
    let ev = wait_events(&client, &ns, "bad", "Failed", 1).await?;
    assert!(!ev.iter().any(|e| e.0 == "Retrying"), "{ev:?}");
    Ok(())
}

/// A Job the API server refuses (requests above limits, which the PipelineRun's schema lets
/// through) fails the run with the server's message, once, instead of a reconcile error
/// retried for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_api_server_refuses_fails_the_run_with_its_message() -> Result<()> {
    let (client, ns) = setup("sf-refused").await?;
    let _op = Operator::start(&ns).await?;
    create_run(
        &client,
        &ns,
        run_body(
            "refused",
            json!({
                "stages": ["etl"],
                "resources": {"limits": {"memory": "20Mi"}, "requests": {"memory": "1Gi"}},
                "retry": {"maxAttempts": 3, "initialBackoff": "1s"},
            }),
        ),
    )
    .await?;
    let run = wait_run(&client, &ns, "refused", "phase Failed", |r| {
        r.status.as_ref().is_some_and(|s| s.phase.is_finished())
    })
    .await?;
    let st = run.status.clone().unwrap_or_default();
    assert_eq!(st.phase, Phase::Failed, "{st:#?}");
    let etl = st.stage(Stage::Etl).context("etl stage")?;
    assert_eq!(
        (etl.phase, etl.attempts),
        (StagePhase::Failed, 1),
        "{etl:?}"
    );
    let message = etl.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("the API server refused the Job, not retried: JobRefused: "),
        "{message}"
    );
    assert!(
        message.contains("must be less than or equal to memory limit"),
        "the server's own words: {message}"
    );
    let cond = st.condition("Succeeded").context("Succeeded condition")?;
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "StageFailed")
    );
    assert!(
        st.condition("ReconcileError")
            .is_none_or(|c| c.status == "False"),
        "{st:#?}"
    );
    assert!(job_names(&client, &ns, "refused").await?.is_empty());
    let ev = wait_events(&client, &ns, "refused", "Failed", 1).await?;
    assert!(
        ev.iter()
            .any(|e| e.0 == "StageFailed" && e.1.contains("memory limit")),
        "{ev:?}"
    );
    Ok(())
}

/// A run still going after interval end + runDeadline gets DeadlineMissed: condition, Event,
/// metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_missed_sets_condition_event_and_metric() -> Result<()> {
    let (client, ns) = setup("sf-deadline").await?;
    let op = Operator::start(&ns).await?;
    // No kubelet: the Job never runs, and the deadline (2026-01-01T01:00:01Z) is long past.
    create_run(&client, &ns, run_body("late", json!({"runDeadline": "1s"}))).await?;
    let run = wait_run(&client, &ns, "late", "DeadlineMissed", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.deadline == Some(DeadlineState::Missed))
    })
    .await?;
    let st = run.status.clone().unwrap_or_default();
    let cond = st
        .condition("DeadlineMissed")
        .context("DeadlineMissed condition")?;
    assert_eq!(cond.status, "True");
    assert!(
        cond.message.contains("2026-01-01T01:00:01"),
        "{}",
        cond.message
    );
    assert_eq!(st.phase, Phase::Running, "the run carries on");
    wait_events(&client, &ns, "late", "DeadlineMissed", 1).await?;
    assert_eq!(
        op.metric(&format!(
            "streamflow_operator_deadline_misses_total{{object_namespace=\"{ns}\",owner=\"\",owner_kind=\"\"}}"
        ))
        .await?,
        1.0
    );
    // Stuck in its first stage (StreamflowStageStuck): the attempt's start, while it runs.
    let ingest = st.stage(Stage::Ingest).context("ingest stage")?;
    let started = ingest.start_time.context("ingest start")?;
    let series = |stage: &str| {
        format!(
            "streamflow_operator_stage_attempt_started_timestamp_seconds{{object_namespace=\"{ns}\",pipelinerun=\"late\",stage=\"{stage}\"}}"
        )
    };
    let v = op.metric(&series("ingest")).await?;
    assert!(
        (v - started.timestamp_millis() as f64 / 1000.0).abs() < 1.0,
        "{v} vs {started}"
    );
    assert!(
        op.metric(&series("etl")).await.is_err(),
        "only the running stage"
    );
    Ok(())
}

/// Bad PipelineRuns are refused by the API server, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_runs_are_refused_with_a_reason() -> Result<()> {
    let (client, ns) = setup("sf-invalid").await?;
    // Raw objects, so that values the Rust types cannot even hold reach the server.
    let ar = ApiResource::erase::<PipelineRun>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let cases = [
        (
            json!({"interval": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}}),
            "interval: end must be after start",
        ),
        (
            json!({"stages": ["ingest", "transform"]}),
            "Unsupported value: \"transform\"",
        ),
        (
            json!({"stages": ["etl", "etl"]}),
            "each stage may appear only once",
        ),
        (json!({"stages": []}), "name at least one stage"),
        (json!({"runDeadline": "ten minutes"}), "spec.runDeadline"),
        (
            json!({"retry": {"initialBackoff": "5m", "maxBackoff": "10s"}}),
            "maxBackoff must not be shorter than initialBackoff",
        ),
        (
            json!({"retry": {"maxAttempts": 0}}),
            "spec.retry.maxAttempts",
        ),
        (
            json!({"storage": {"landing": "s3://l/raw", "gold": "s3://g/t",
                "landingCompression": "lz4"}}),
            "Unsupported value: \"lz4\"",
        ),
        // Issue 22 item 11: each of these was accepted and failed only later, or not at all.
        (
            json!({"imagePullPolicy": "Sometimes"}),
            "Unsupported value: \"Sometimes\"",
        ),
        (json!({"image": ""}), "spec.image"),
        (
            json!({"kafka": {"bootstrap": "k:9092", "topics": []}}),
            "spec.kafka.topics",
        ),
        (
            json!({"kafka": {"bootstrap": "k:9092", "topics": ["user_events", ""]}}),
            "spec.kafka.topics[1]",
        ),
        // A topic without a schema: the job image would refuse it, so admission does.
        (
            json!({"kafka": {"bootstrap": "k:9092", "topics": ["clicks"]}}),
            "kafka.topics: each topic must be the user events or the transaction events topic",
        ),
        (
            json!({"kafka": {"bootstrap": "k:9092", "topics": ["user_events"],
                "userEventsTopic": "clicks"}}),
            "kafka.topics: each topic must be the user events or the transaction events topic",
        ),
        (
            json!({"kafka": {"bootstrap": "k:9092", "userEventsTopic": "events",
                "transactionEventsTopic": "events"}}),
            "name the same topic",
        ),
        (
            json!({"kafka": {"bootstrap": "k:9092", "transactionEventsTopic": "user_events"}}),
            "name the same topic",
        ),
        (
            json!({"kafka": {"bootstrap": "k:9092", "userEventsTopic": ""}}),
            "spec.kafka.userEventsTopic",
        ),
        (
            json!({"storage": {"landing": "ftp://host/raw", "gold": "s3://g/t"}}),
            "storage.landing: must be s3://bucket/prefix, file:///dir or a directory",
        ),
        (
            json!({"storage": {"landing": "s3://l/raw", "gold": "s3:///no-bucket"}}),
            "storage.gold: must be s3://bucket/prefix, file:///dir or a directory",
        ),
        (
            json!({"resources": {"limits": {"memory": "2 GB"}}}),
            "spec.resources.limits.memory",
        ),
        (
            json!({"resources": {"requests": {"cpu": "one"}}}),
            "spec.resources.requests.cpu",
        ),
        // The ETL's own size syntax, not a Kubernetes quantity: `2Gi` fails in the job.
        (
            json!({"etl": {"memoryLimit": "2Gi"}}),
            "spec.etl.memoryLimit",
        ),
        (
            json!({"stages": ["etl", "ingest"]}),
            "list them in pipeline order (ingest, etl, validate)",
        ),
        (
            json!({"stages": ["validate", "etl"]}),
            "list them in pipeline order (ingest, etl, validate)",
        ),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let msg = refusal(&api, run_body(&format!("bad-{i}"), spec)).await?;
        assert!(
            msg.contains(expected),
            "case {i}: expected {expected:?} in: {msg}"
        );
    }
    // Job names are `<run>-<stage>-<attempt>` (at most 63 characters): a run name over 50 is
    // refused when the run is created, not when its first Job is.
    let msg = refusal(&api, run_body(&"r".repeat(51), json!({}))).await?;
    assert!(msg.contains("at most 50 characters"), "{msg}");
    let fits: DynamicObject = serde_json::from_value(run_body(&"r".repeat(50), json!({})))?;
    api.create(&PostParams::default(), &fits).await?;
    // Valid locations of each kind, quantities, topics, a pull policy and a subset of stages
    // in order are accepted.
    let good: DynamicObject = serde_json::from_value(run_body(
        "good",
        json!({
            "stages": ["ingest", "validate"],
            "imagePullPolicy": "IfNotPresent",
            "kafka": {"bootstrap": "k:9092", "topics": ["user_events"]},
            "storage": {"landing": "/data/landing", "gold": "file:///data/gold/{date}"},
            "etl": {"memoryLimit": "512MiB"},
            "resources": {"requests": {"cpu": "500m", "memory": 1_073_741_824_u64},
                "limits": {"memory": "1.5Gi"}},
        }),
    ))?;
    api.create(&PostParams::default(), &good).await?;
    // Topics of other names, each mapped to its schema.
    let renamed: DynamicObject = serde_json::from_value(run_body(
        "renamed-topics",
        json!({"kafka": {"bootstrap": "k:9092", "topics": ["payments", "clicks"],
            "userEventsTopic": "clicks", "transactionEventsTopic": "payments"}}),
    ))?;
    api.create(&PostParams::default(), &renamed).await?;
    Ok(())
}

/// Pod overrides (issue 25 item 4) are checked when the run is applied: values the API server
/// would refuse in the Job, and keys the operator and Pod Security rely on, are refused with a
/// message naming the field; every override at once, run-wide and per stage, is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_overrides_are_checked_at_admission() -> Result<()> {
    let (client, ns) = setup("sf-overrides").await?;
    let ar = ApiResource::erase::<PipelineRun>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let pod = |template: serde_json::Value| json!({"podTemplate": template});
    let etl =
        |template: serde_json::Value| json!({"stageOverrides": {"etl": {"podTemplate": template}}});
    let cases = [
        (
            pod(json!({"tolerations": [{"key": "batch", "operator": "Matches"}]})),
            "Unsupported value: \"Matches\"",
        ),
        (
            pod(json!({"tolerations": [{"key": "batch", "effect": "NoRun"}]})),
            "Unsupported value: \"NoRun\"",
        ),
        (
            pod(json!({"tolerations": [{"operator": "Equal", "value": "x"}]})),
            "a toleration without a key needs operator Exists",
        ),
        (
            pod(json!({"tolerations": [{"key": "k", "operator": "Exists", "value": "x"}]})),
            "operator Exists takes no value",
        ),
        (
            pod(
                json!({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 60}]}),
            ),
            "tolerationSeconds needs effect NoExecute",
        ),
        (
            pod(json!({"metadata": {"labels": {"streamflow.io/stage": "etl"}}})),
            "labels: streamflow.io/..., batch.kubernetes.io/..., app.kubernetes.io/managed-by, job-name and controller-uid are set by the operator",
        ),
        (
            etl(json!({"metadata": {"labels": {"job-name": "other"}}})),
            "spec.stageOverrides.etl.podTemplate.metadata.labels",
        ),
        (
            pod(json!({"metadata": {"labels": {"bad key!": "x"}}})),
            "labels: each key must be a label key",
        ),
        (
            pod(json!({"metadata": {"labels": {"team": "not a label value"}}})),
            "spec.podTemplate.metadata.labels.team",
        ),
        (
            pod(json!({"metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/etl": "unconfined"}}})),
            "the pods keep the restricted Pod Security Standard",
        ),
        (
            pod(json!({"nodeSelector": {"kubernetes.io/hostname": "a b"}})),
            "spec.podTemplate.nodeSelector.kubernetes.io/hostname",
        ),
        (
            pod(json!({"tmpDirSizeLimit": "10 GB"})),
            "tmpDirSizeLimit: must be a Kubernetes quantity above zero",
        ),
        (
            etl(json!({"tmpDirSizeLimit": "0"})),
            "tmpDirSizeLimit: must be a Kubernetes quantity above zero",
        ),
        (
            pod(json!({"priorityClassName": "Batch_High"})),
            "spec.podTemplate.priorityClassName",
        ),
        (
            pod(json!({"imagePullSecrets": [{"name": ""}]})),
            "spec.podTemplate.imagePullSecrets[0].name",
        ),
        (
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]}}}}),
            ),
            "Unsupported value: \"Near\"",
        ),
        (
            pod(
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}}]}}}),
            ),
            "Unsupported value: \"Gt\"",
        ),
        (
            json!({"stageOverrides": {"etl": {"resources": {"limits": {"memory": "4 GB"}}}}}),
            "spec.stageOverrides.etl.resources.limits.memory",
        ),
        (
            json!({"stageOverrides": {"etl": {"securityContext": {"privileged": true}}}}),
            "spec.stageOverrides.etl.securityContext: field not declared in schema",
        ),
        (
            pod(json!({"securityContext": {"runAsUser": 0}})),
            "spec.podTemplate.securityContext: field not declared in schema",
        ),
    ];
    // Applied with strict field validation, as `kubectl apply` does by default: an unknown
    // field (a securityContext, say) is refused, not dropped.
    let strict = PatchParams::apply("streamflow-tests").validation_strict();
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        let body = run_body(&name, spec);
        let msg = match api.patch(&name, &strict, &Patch::Apply(&body)).await {
            Ok(_) => anyhow::bail!("case {i} accepted: {body}"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains(expected),
            "case {i}: expected {expected:?} in: {msg}"
        );
    }
    let every = json!({
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
        "podTemplate": {
            "metadata": {"labels": {"team": "data", "app.kubernetes.io/part-of": "streamflow"},
                "annotations": {"sidecar.istio.io/inject": "false",
                    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute",
                    "tolerationSeconds": 300},
                {"operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
                    "preference": {"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["4"]}]}}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5,
                    "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"streamflow.io/stage": "etl"}}}}]}},
            "imagePullSecrets": [{"name": "registry"}],
            "priorityClassName": "batch-low",
            "tmpDirSizeLimit": "2Gi",
        },
        "stageOverrides": {
            "ingest": {"podTemplate": {"tolerations": []}},
            "etl": {"resources": {"limits": {"memory": "4Gi"}},
                "podTemplate": {"metadata": {"labels": {"team": "etl"}}, "tmpDirSizeLimit": "20Gi",
                    "priorityClassName": "batch-high"}},
        },
    });
    let good: DynamicObject = serde_json::from_value(run_body("good", every))?;
    api.create(&PostParams::default(), &good).await?;
    // Stored as given: read back through the typed API, the ETL's pod gets its own settings.
    let stored = Api::<PipelineRun>::namespaced(client.clone(), &ns)
        .get("good")
        .await?;
    let etl = streamflow_operator::pipelinerun::pod_overrides::stage_pod(
        &stored.spec.template,
        Stage::Etl,
    );
    assert_eq!(
        etl.template.tmp_dir_size_limit.map(|q| q.0).as_deref(),
        Some("20Gi")
    );
    assert_eq!(etl.template.metadata.labels["team"], "etl");
    assert_eq!(etl.template.tolerations.map(|t| t.len()), Some(3));
    Ok(())
}

/// A run's spec cannot change once it is created (stages already run must not be mixed with
/// an edited spec): the API server refuses the edit, saying to create a new run. Its metadata
/// stays editable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_started_runs_spec_is_refused() -> Result<()> {
    let (client, ns) = setup("sf-immutable").await?;
    let _op = Operator::start(&ns).await?;
    create_run(&client, &ns, run_body("fixed", json!({}))).await?;
    wait_run(&client, &ns, "fixed", "the run to start", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
    })
    .await?;
    // No image in the spec: none is stored (the CRD has no default that would pin the run to
    // one tag across upgrades), and the Job gets the operator's --default-image.
    let stored = kubectl(vec![
        "get".into(),
        "pipelinerun/fixed".into(),
        "-n".into(),
        ns.clone(),
        "-o".into(),
        "jsonpath={.spec.image}".into(),
    ])
    .await?;
    assert_eq!(stored, "", "an image was stored in the run");
    let job = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns)
        .get("fixed-ingest-1")
        .await?;
    let image = job
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.image);
    assert_eq!(
        image.as_deref(),
        Some(streamflow_operator::api::pipelinerun::DEFAULT_IMAGE)
    );
    let api: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    for patch in [
        json!({"spec": {"image": "streamflow:9.9.9"}}),
        json!({"spec": {"interval": {"end": "2026-01-01T02:00:00Z"}}}),
        json!({"spec": {"stages": ["ingest"]}}),
    ] {
        let msg = match api
            .patch("fixed", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => panic!("the edit {patch} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains("spec cannot change once the PipelineRun is created"),
            "{patch}: {msg}"
        );
    }
    api.patch(
        "fixed",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "data"}}})),
    )
    .await?;
    Ok(())
}

/// Deleting a run deletes its Jobs (the operator's finalizer: this API server has no garbage
/// collector) and then the run itself goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_run_deletes_its_jobs() -> Result<()> {
    let (client, ns) = setup("sf-delete").await?;
    let _op = Operator::start(&ns).await?;
    create_run(&client, &ns, run_body("doomed", json!({}))).await?;
    wait_for("the ingest Job", TIMEOUT, || async {
        Ok((job_names(&client, &ns, "doomed").await? == vec!["doomed-ingest-1"]).then_some(()))
    })
    .await?;
    let api: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    api.delete("doomed", &DeleteParams::background()).await?;
    wait_for("the run and its Jobs to be gone", TIMEOUT, || async {
        let jobs = job_names(&client, &ns, "doomed").await?;
        let run = api.get_opt("doomed").await?;
        Ok((jobs.is_empty() && run.is_none()).then_some(()))
    })
    .await?;
    Ok(())
}

/// The real kubectl applies examples/pipelinerun.yaml, and `kubectl get pipelineruns` shows
/// the printer columns with the operator's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_example_and_shows_columns() -> Result<()> {
    let (client, ns) = setup("sf-kubectl").await?;
    let _op = Operator::start(&ns).await?;
    let example = repo_root()
        .join("examples/pipelinerun.yaml")
        .display()
        .to_string();
    let out = kubectl(vec![
        "apply".into(),
        "-n".into(),
        ns.clone(),
        "-f".into(),
        example,
    ])
    .await?;
    assert!(out.contains("pipelinerun.streamflow.io/"), "{out}");
    let name = "daily-2026-11-24";
    wait_run(&client, &ns, name, "phase Running", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
    })
    .await?;
    let table = kubectl(vec![
        "get".into(),
        "pipelineruns".into(),
        "-n".into(),
        ns.clone(),
    ])
    .await?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "PHASE", "START", "END", "STAGE", "ATTEMPTS", "DEADLINE", "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..7],
        [
            name,
            "Running",
            "2026-11-24T00:00:00Z",
            "2026-11-25T00:00:00Z",
            "ingest",
            "1",
            "Missed"
        ],
        "{table}"
    );
    Ok(())
}

/// Stage pods are admitted in a namespace that enforces the `restricted` Pod Security
/// Standard: each stage's Job template, submitted as a Pod (server-side dry run, so the API
/// server's Pod Security admission judges it), is accepted, with no pod overrides and with
/// every one of them set — and the same Pod without its security settings is refused, which
/// shows the namespace really enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_pods_meet_the_restricted_pod_security_standard() -> Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Patch, PatchParams};
    use streamflow_operator::pipelinerun::jobs::build_job;

    let (client, ns) = setup("sf-pss").await?;
    let restricted = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&restricted))
        .await?;
    // The Priority admission plugin refuses a pod naming a PriorityClass that does not exist.
    let class: k8s_openapi::api::scheduling::v1::PriorityClass = serde_json::from_value(
        json!({"metadata": {"name": "streamflow-test-batch"}, "value": 100}),
    )?;
    Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(client.clone())
        .patch(
            "streamflow-test-batch",
            &PatchParams::apply("streamflow-tests"),
            &Patch::Apply(&class),
        )
        .await?;
    let overrides = json!({
        "resources": {"requests": {"cpu": "100m"}},
        "podTemplate": {
            "metadata": {"labels": {"team": "data"},
                "annotations": {"sidecar.istio.io/inject": "false"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/arch",
                    "operator": "Exists"}]}]}}},
            "imagePullSecrets": [{"name": "registry"}],
            "priorityClassName": "streamflow-test-batch",
            "tmpDirSizeLimit": "1Gi",
        },
        "stageOverrides": {"etl": {"resources": {"limits": {"memory": "1Gi"}},
            "podTemplate": {"tmpDirSizeLimit": "5Gi"}}},
    });
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for (variant, extra) in [("plain", json!({})), ("overridden", overrides)] {
        // Built here, not by the operator, which fills in its --default-image for a run naming
        // none: the run names one.
        let mut spec = json!({"validation": {"checksConfigMap": {"name": "checks", "key": "checks.yaml"}},
            "image": streamflow_operator::api::pipelinerun::DEFAULT_IMAGE});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let mut body = run_body("pss", spec);
        // The Jobs' owner reference needs what the API server would have given the run.
        body["metadata"]["namespace"] = json!(ns);
        body["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
        let run: PipelineRun = serde_json::from_value(body)?;
        for stage in [Stage::Ingest, Stage::Etl, Stage::Validate] {
            let job = build_job(&run, stage, 1)?;
            let template = job.spec.context("job spec")?.template;
            // With the template's labels and annotations: Pod Security reads annotations too.
            let mut metadata = template.metadata.unwrap_or_default();
            metadata.name = Some(format!("pss-{stage}"));
            let mut pod = Pod {
                metadata,
                spec: Some(template.spec.context("pod spec")?),
                ..Default::default()
            };
            pods.create(&dry_run, &pod)
                .await
                .with_context(|| format!("the {stage} stage's {variant} pod was refused"))?;

            if let Some(spec) = pod.spec.as_mut() {
                spec.security_context = None;
                for c in &mut spec.containers {
                    c.security_context = None;
                }
            }
            let refused = pods.create(&dry_run, &pod).await;
            ensure!(
                matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("restricted")),
                "a {stage} pod without security settings was not refused: {refused:?}"
            );
        }
    }
    Ok(())
}

/// Two reconciles of the same copy of a run, as when the informer's cache has not caught up
/// with the operator's own status write (the real Job controller posts several updates per
/// finished Job, each waking the run): the transition happens once. The second status write is
/// refused as stale, and no Event or metric follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_of_a_run_repeats_no_transition() -> Result<()> {
    use std::sync::Arc;
    use streamflow_operator::metrics::Metrics;
    use streamflow_operator::pipelinerun::{Context, reconcile};

    let (client, ns) = setup("sf-stale").await?;
    let metrics = Metrics::new()?;
    // No operator process: the test calls reconcile itself.
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone()));
    let api: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    create_run(
        &client,
        &ns,
        run_body("stale", json!({"stages": ["validate"]})),
    )
    .await?;
    // The finalizer, then the first Job and the status saying so.
    wait_for("the first attempt in status", TIMEOUT, || async {
        let run = api.get("stale").await?;
        let started = run.status.as_ref().is_some_and(|s| s.attempts == Some(1));
        if !started {
            reconcile(Arc::new(run), ctx.clone()).await?;
        }
        Ok(started.then_some(()))
    })
    .await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, std::time::Duration::from_millis(10));
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
    wait_for("the Job to succeed", TIMEOUT, || async {
        let job = jobs.get("stale-validate-1").await?;
        Ok(job
            .status
            .and_then(|s| s.succeeded)
            .is_some_and(|n| n > 0)
            .then_some(()))
    })
    .await?;
    let stale = Arc::new(api.get("stale").await?);
    reconcile(stale.clone(), ctx.clone()).await?;
    reconcile(stale, ctx.clone()).await?;
    let st = api.get("stale").await?.status.unwrap_or_default();
    assert_eq!(st.phase, Phase::Succeeded, "{st:?}");
    let succeeded = metrics
        .runs_finished
        .with_label_values(&[ns.as_str(), "", "", "succeeded"])
        .get();
    assert_eq!(succeeded, 1, "the run's success counted once");
    let durations = metrics
        .stage_duration
        .with_label_values(&["validate", "succeeded"])
        .get_sample_count();
    assert_eq!(durations, 1, "the stage's duration observed once");
    Ok(())
}

/// An operator (re)started over many finished runs costs no API call per run: no list of their
/// Jobs or Pods, no status write, no finalizer patch (they have it from their first life).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_cost_no_api_call_at_a_restart() -> Result<()> {
    use kube::api::{Patch, PatchParams};
    let (client, ns) = setup("sf-finished").await?;
    let api: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    let runs = 60;
    for k in 0..runs {
        let mut body = run_body(&format!("done-{k}"), json!({"stages": ["validate"]}));
        body["metadata"]["finalizers"] = json!(["streamflow.io/jobs"]);
        create_run(&client, &ns, body).await?;
        // Finished as this operator leaves them: with the conditions GitOps tools read and
        // observedGeneration (an older operator's finished runs get them in one write each).
        let mut status = streamflow_operator::api::pipelinerun::PipelineRunStatus {
            phase: if k % 3 == 0 {
                Phase::Failed
            } else {
                Phase::Succeeded
            },
            ..Default::default()
        };
        streamflow_operator::reconcile::kstatus::run(&mut status, Some(1), chrono::Utc::now());
        api.patch_status(
            &format!("done-{k}"),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    let op = Operator::start(&ns).await?;
    wait_for("every run reconciled", TIMEOUT, || async {
        let ok = op
            .metric("streamflow_operator_runs{phase=\"Succeeded\"}")
            .await
            .unwrap_or(0.0);
        let failed = op
            .metric("streamflow_operator_runs{phase=\"Failed\"}")
            .await
            .unwrap_or(0.0);
        Ok((ok + failed == runs as f64).then_some(()))
    })
    .await?;
    let requests = op.samples("streamflow_operator_api_requests_total").await?;
    let count = |verb: &str, resource: &str| {
        let labels = format!("resource=\"{resource}\",verb=\"{verb}\"");
        requests
            .iter()
            .filter(|(l, _)| l.contains(&labels))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    // The controllers' own watches list once each at start; nothing per run.
    assert!(count("list", "jobs") <= 1.0, "{requests:?}");
    assert!(count("list", "pods") <= 1.0, "{requests:?}");
    assert_eq!(count("patch", "pipelineruns"), 0.0, "{requests:?}");
    assert_eq!(count("patch", "pipelineruns/status"), 0.0, "{requests:?}");
    Ok(())
}

/// Runs that drain one consumer group take turns, whatever made them: never two of the
/// group's ingest Jobs unfinished at once, and a waiting run says why in its status. A run
/// of another group is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_drain_per_consumer_group_at_a_time() -> Result<()> {
    use k8s_openapi::api::batch::v1::Job;
    use kube::ResourceExt;
    use std::sync::{Arc, Mutex};
    use streamflow_operator::pipelinerun::jobs::is_unfinished;

    let (client, ns) = setup("sf-group").await?;
    let _op = Operator::start(&ns).await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, std::time::Duration::from_secs(2));
    let kafka = |group: &str| json!({"bootstrap": "127.0.0.1:9094", "group": group});
    let shared = ["g-0", "g-1", "g-2"];
    for name in shared {
        create_run(
            &client,
            &ns,
            run_body(
                name,
                json!({"stages": ["ingest"], "kafka": kafka("shared")}),
            ),
        )
        .await?;
    }
    create_run(
        &client,
        &ns,
        run_body(
            "other",
            json!({"stages": ["ingest"], "kafka": kafka("other")}),
        ),
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    // (most unfinished ingest Jobs of group `shared` seen at once, a run seen waiting, most
    // unfinished Jobs of all groups at once)
    let seen = Arc::new(Mutex::new((0usize, false, 0usize)));
    wait_for("every run to finish", TIMEOUT, || async {
        let all = jobs.list(&Default::default()).await?.items;
        let unfinished: Vec<&Job> = all.iter().filter(|j| is_unfinished(j)).collect();
        let of_shared = unfinished
            .iter()
            .filter(|j| {
                j.labels()
                    .get("streamflow.io/consumer-group")
                    .map(String::as_str)
                    == Some("shared")
            })
            .count();
        let listed = runs.list(&Default::default()).await?.items;
        let waiting = listed.iter().any(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.condition("Running")
                    .is_some_and(|c| c.reason == "WaitingForConsumerGroup")
            })
        });
        if let Ok(mut s) = seen.lock() {
            s.0 = s.0.max(of_shared);
            s.1 |= waiting;
            s.2 = s.2.max(unfinished.len());
        }
        let done = listed
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.phase.is_finished()))
            .count();
        Ok((done == 4).then_some(()))
    })
    .await?;
    let (max_shared, waited, max_all) = *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert_eq!(max_shared, 1, "two drains of group `shared` at once");
    assert!(waited, "no run said it waited for the group");
    assert!(max_all >= 2, "the run of group `other` was held back too");
    for name in shared.iter().chain(["other"].iter()) {
        let run = runs.get(name).await?;
        assert_eq!(
            run.status.map(|s| s.phase),
            Some(Phase::Succeeded),
            "{name}"
        );
    }
    let ev = events(&client, &ns, "g-1").await?;
    let ev2 = events(&client, &ns, "g-2").await?;
    assert!(
        ev.iter()
            .chain(ev2.iter())
            .any(|e| e.0 == "WaitingForConsumerGroup"),
        "{ev:?} {ev2:?}"
    );
    Ok(())
}
