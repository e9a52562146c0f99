//! Scheduled Pipelines against a real kube-apiserver (`scripts/kube.sh start`), with the
//! operator as a child process and a kubelet stand-in that finishes each Job at once (see
//! `support`). Schedules tick every few seconds (six-field cron, seconds first) so the tests
//! stay short. Every test has its own namespace and its own operator process.

mod support;

use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use streamflow_operator::api::pipeline::Pipeline;
use streamflow_operator::api::pipelinerun::{Phase, PipelineRun};
use support::*;

async fn setup(prefix: &str) -> Result<(Client, String)> {
    let client = client().await?;
    install_crd(&client).await?;
    let ns = namespace(&client, prefix).await?;
    Ok((client, ns))
}

fn pipeline_body(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"template": {
            "stages": ["validate"],
            "kafka": {"bootstrap": "127.0.0.1:9094"},
            "storage": {"landing": "s3://landing/unused", "gold": "s3://gold/unused"},
            "retry": {"maxAttempts": 1},
        }},
    });
    if let (Some(b), Some(s)) = (base["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

async fn create_pipeline(client: &Client, ns: &str, body: serde_json::Value) -> Result<Pipeline> {
    let pl: Pipeline = serde_json::from_value(body)?;
    Ok(Api::<Pipeline>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pl)
        .await?)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The runs a Pipeline scheduled: (start, end, run), oldest first.
async fn scheduled(
    client: &Client,
    ns: &str,
    pipeline: &str,
) -> Result<Vec<(String, String, PipelineRun)>> {
    let mut out: Vec<(String, String, PipelineRun)> =
        runs(client, ns, &format!("streamflow.io/pipeline={pipeline}"))
            .await?
            .into_iter()
            .map(|r| (ts(r.spec.interval.start), ts(r.spec.interval.end), r))
            .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Waits until early in a 10-second tick, so that no tick passes while a test sets up; returns
/// the latest tick.
async fn early_in_a_tick() -> Result<DateTime<Utc>> {
    wait_for("the start of a 10 s tick", TIMEOUT, || async {
        let now = Utc::now();
        let into = now.second() % 10;
        Ok((into < 3).then(|| {
            now.with_nanosecond(0).unwrap_or(now) - chrono::Duration::seconds(into as i64)
        }))
    })
    .await
}

/// The operator was down for 5 ticks: its last write to the Pipeline's status says it last
/// scheduled the interval that ended 5 ticks ago. Started again, it creates exactly the 5
/// missed intervals, contiguous. A second Pipeline with maxCatchUp 3 creates the 3 latest and
/// says (in an Event) which ticks it skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_are_all_run_up_to_max_catch_up() -> Result<()> {
    let (client, ns) = setup("sf-plcatch").await?;
    let tick = early_in_a_tick().await?;
    let api: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let secs = |n: i64| tick - chrono::Duration::seconds(n);
    for (name, max) in [("all", 10), ("capped", 3)] {
        create_pipeline(
            &client,
            &ns,
            pipeline_body(
                name,
                json!({"schedule": "*/10 * * * * *", "maxCatchUp": max}),
            ),
        )
        .await?;
        // As the operator wrote it before it went down.
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduledInterval": {
                "start": ts(secs(60)), "end": ts(secs(50))}}})),
        )
        .await?;
    }
    let _op = Operator::start(&ns).await?;
    let all = wait_for("5 runs of `all`", TIMEOUT, || async {
        let s = scheduled(&client, &ns, "all").await?;
        Ok((s.len() >= 5).then_some(s))
    })
    .await?;
    let intervals: Vec<(String, String)> = all.iter().map(|s| (s.0.clone(), s.1.clone())).collect();
    let expected: Vec<(String, String)> = (0..5)
        .map(|k| (ts(secs(50 - 10 * k)), ts(secs(40 - 10 * k))))
        .collect();
    assert_eq!(intervals[..5], expected[..], "{intervals:?}");
    assert!(
        intervals.iter().skip(5).all(|i| i.0 >= ts(tick)),
        "nothing before the missed ticks: {intervals:?}"
    );
    let capped = wait_for("3 runs of `capped`", TIMEOUT, || async {
        let s = scheduled(&client, &ns, "capped").await?;
        Ok((s.len() >= 3).then_some(s))
    })
    .await?;
    let intervals: Vec<(String, String)> =
        capped.iter().map(|s| (s.0.clone(), s.1.clone())).collect();
    assert_eq!(intervals[..3], expected[2..], "{intervals:?}");
    let ev = wait_for("the MissedTicksSkipped event", TIMEOUT, || async {
        let ev = events_of(&client, &ns, "Pipeline", "capped").await?;
        Ok(ev.iter().any(|e| e.0 == "MissedTicksSkipped").then_some(ev))
    })
    .await?;
    let note = &ev
        .iter()
        .find(|e| e.0 == "MissedTicksSkipped")
        .context("event")?
        .1;
    assert!(note.contains("maxCatchUp (3)"), "{note}");
    // The status is written after the runs are created.
    let st = wait_for("the status of `all` after its runs", TIMEOUT, || async {
        let st = api.get("all").await?.status.unwrap_or_default();
        Ok(st.next_run_time.is_some().then_some(st))
    })
    .await?;
    assert!(st.next_run_time.is_some_and(|n| n > tick), "{st:?}");
    assert!(st.active_count >= 5, "{st:?}");
    assert!(
        st.last_scheduled_interval
            .as_ref()
            .is_some_and(|i| i.end >= tick),
        "{st:?}"
    );
    Ok(())
}

/// Forbid: while a run is active no other starts, and due ticks wait (none is skipped); once
/// Jobs finish, the waiting ticks run one at a time, oldest first, without gaps. The status
/// keeps the newest succeeded and the newest failed interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_runs_one_at_a_time_without_skipping_ticks() -> Result<()> {
    let (client, ns) = setup("sf-plforbid").await?;
    let op = Operator::start(&ns).await?;
    let watch = RunWatch::start(&client, &ns, "streamflow.io/pipeline=solo").await?;
    create_pipeline(
        &client,
        &ns,
        pipeline_body(
            "solo",
            json!({"schedule": "*/2 * * * * *", "concurrencyPolicy": "Forbid",
                "successfulRunsHistoryLimit": 100}),
        ),
    )
    .await?;
    let (first_interval, first) = wait_for("the first run", TIMEOUT, || async {
        let s = scheduled(&client, &ns, "solo").await?;
        Ok(s.first()
            .map(|f| (format!("{}/{}", f.0, f.1), f.2.spec.interval.end)))
    })
    .await?;
    // No kubelet: the first run stays active while three more ticks pass.
    wait_for("three more ticks", TIMEOUT, || async {
        Ok((Utc::now() > first + chrono::Duration::seconds(7)).then_some(()))
    })
    .await?;
    let api: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let st = api.get("solo").await?.status.unwrap_or_default();
    assert_eq!(scheduled(&client, &ns, "solo").await?.len(), 1);
    assert_eq!(st.active_count, 1, "{st:?}");
    // Freshness before any run succeeded: the Pipeline's creation; the interval is the schedule's.
    let fresh = format!(
        "streamflow_operator_pipeline_last_success_interval_end_timestamp_seconds{{object_namespace=\"{ns}\",pipeline=\"solo\"}}"
    );
    let created = api
        .get("solo")
        .await?
        .metadata
        .creation_timestamp
        .context("creationTimestamp")?
        .0
        .as_second() as f64;
    assert_eq!(st.last_succeeded_interval, None, "{st:?}");
    assert_eq!(op.metric(&fresh).await?, created);
    let every = format!(
        "streamflow_operator_pipeline_interval_seconds{{object_namespace=\"{ns}\",pipeline=\"solo\"}}"
    );
    assert_eq!(op.metric(&every).await?, 2.0);
    // The first run fails (one attempt), the later ones succeed.
    let kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(50));
    kubelet.fail(&[first_interval]);
    let done = wait_for("5 succeeded runs", TIMEOUT, || async {
        let s = scheduled(&client, &ns, "solo").await?;
        let ok = s
            .iter()
            .filter(|r| {
                r.2.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Phase::Succeeded)
            })
            .count();
        Ok((ok >= 5).then_some(s))
    })
    .await?;
    for pair in done.windows(2) {
        assert_eq!(
            pair[0].1,
            pair[1].0,
            "contiguous intervals: {:?}",
            done.iter().map(|d| (&d.0, &d.1)).collect::<Vec<_>>()
        );
    }
    assert_eq!(watch.max_active(), 1, "never two runs at once");
    // Freshness: the end of the newest interval that succeeded, in status and as a gauge.
    let newest = wait_for(
        "lastSucceededInterval at the newest success",
        TIMEOUT,
        || async {
            let newest = scheduled(&client, &ns, "solo")
                .await?
                .iter()
                .filter(|r| {
                    r.2.status
                        .as_ref()
                        .is_some_and(|s| s.phase == Phase::Succeeded)
                })
                .map(|r| r.2.spec.interval.end)
                .max();
            let st = api.get("solo").await?.status.unwrap_or_default();
            Ok(match (newest, st.last_succeeded_interval) {
                (Some(n), Some(l)) if l.end == n => Some(n),
                _ => None,
            })
        },
    )
    .await?;
    wait_for(
        "the freshness gauge at the newest success",
        TIMEOUT,
        || async {
            let v = op.metric(&fresh).await?;
            Ok((v >= newest.timestamp() as f64).then_some(()))
        },
    )
    .await?;
    // The failed first run is in status too, older than the newest success.
    let st = api.get("solo").await?.status.unwrap_or_default();
    assert_eq!(
        st.last_failed_interval.as_ref().map(|i| i.end),
        Some(first),
        "{st:?}"
    );
    Ok(())
}

/// Replace: when the next tick is due, the active run is deleted and the tick's run starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_deletes_the_active_run_for_the_next_tick() -> Result<()> {
    let (client, ns) = setup("sf-plreplace").await?;
    let _op = Operator::start(&ns).await?;
    create_pipeline(
        &client,
        &ns,
        pipeline_body(
            "latest",
            json!({"schedule": "*/3 * * * * *", "concurrencyPolicy": "Replace"}),
        ),
    )
    .await?;
    // No kubelet: runs stay active until replaced.
    let first = wait_for("the first run", TIMEOUT, || async {
        let s = scheduled(&client, &ns, "latest").await?;
        Ok(s.first().map(|f| (f.2.name_any(), f.1.clone())))
    })
    .await?;
    let second = wait_for("the first run replaced by the next", TIMEOUT, || async {
        let s = scheduled(&client, &ns, "latest").await?;
        let gone = !s.iter().any(|r| r.2.name_any() == first.0);
        Ok(gone
            .then(|| s.last().map(|r| (r.0.clone(), r.2.name_any())))
            .flatten())
    })
    .await?;
    assert!(
        second.0 >= first.1,
        "the replacement is of a later tick: {first:?} {second:?}"
    );
    // Events are published after the status is written.
    wait_for(
        "a RunReplaced event naming the first run",
        TIMEOUT,
        || async {
            let ev = events_of(&client, &ns, "Pipeline", "latest").await?;
            Ok(ev
                .iter()
                .any(|e| e.0 == "RunReplaced" && e.1.contains(&first.0))
                .then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// A run name a Pipeline's tick would stamp, held by a run it does not own (made by hand
/// here), is an error in its status (Ready False, RunNameConflict, naming the run) and a
/// Warning Event, not a tick taken as scheduled (issue 22 item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_name_held_by_another_owner_is_an_error_in_status() -> Result<()> {
    let (client, ns) = setup("sf-plheld").await?;
    let _op = Operator::start(&ns).await?;
    let tick = early_in_a_tick().await?;
    // The runs of the next 18 ticks of a 10-second schedule (three minutes), made by hand
    // under the names the Pipeline would give them.
    let api: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    for k in 0..18 {
        let start = tick + chrono::Duration::seconds(10 * k);
        let interval = streamflow_core::Interval {
            start,
            end: start + chrono::Duration::seconds(10),
        };
        let run: PipelineRun = serde_json::from_value(json!({
            "apiVersion": "streamflow.io/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": streamflow_operator::parent::children::child_name("held", &interval)},
            "spec": {
                "interval": {"start": ts(interval.start), "end": ts(interval.end)},
                "stages": ["validate"],
                "kafka": {"bootstrap": "127.0.0.1:9094"},
                "storage": {"landing": "s3://landing/unused", "gold": "s3://gold/unused"},
            },
        }))?;
        api.create(&PostParams::default(), &run).await?;
    }
    create_pipeline(
        &client,
        &ns,
        pipeline_body("held", json!({"schedule": "*/10 * * * * *"})),
    )
    .await?;
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let pl = wait_for("Ready False, RunNameConflict", TIMEOUT, || async {
        let pl = pipelines.get("held").await?;
        let conflict = pl
            .status
            .as_ref()
            .and_then(|s| s.condition("Ready"))
            .is_some_and(|c| c.status == "False" && c.reason == "RunNameConflict");
        Ok(conflict.then_some(pl))
    })
    .await?;
    let st = pl.status.unwrap_or_default();
    let message = st
        .condition("Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("held-") && message.contains("no controller"),
        "{message}"
    );
    // The tick is not taken as scheduled, and no run of the Pipeline exists.
    assert_eq!(st.last_scheduled_interval, None, "{st:#?}");
    assert!(st.active.is_empty(), "{st:#?}");
    assert!(scheduled(&client, &ns, "held").await?.is_empty());
    wait_for("a RunNameConflict event", TIMEOUT, || async {
        let ev = events_of(&client, &ns, "Pipeline", "held").await?;
        Ok(ev.iter().any(|e| e.0 == "RunNameConflict").then_some(()))
    })
    .await?;
    Ok(())
}

/// A Pipeline's template is a PipelineRun's spec without its interval: what the API server
/// refuses in a run it refuses in the template, when the Pipeline is created rather than
/// when its first tick creates a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pipeline_templates_are_refused_with_a_reason() -> Result<()> {
    let (client, ns) = setup("sf-pltpl").await?;
    let ar = ApiResource::erase::<Pipeline>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let template = |extra: serde_json::Value| {
        let mut t = json!({
            "kafka": {"bootstrap": "127.0.0.1:9094"},
            "storage": {"landing": "s3://landing/unused", "gold": "s3://gold/unused"},
        });
        if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(e.clone());
        }
        json!({"schedule": "0 2 * * *", "template": t})
    };
    let cases = [
        (
            "order",
            template(json!({"stages": ["validate", "ingest"]})),
            "list them in pipeline order",
        ),
        (
            "pull",
            template(json!({"imagePullPolicy": "Sometimes"})),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            "topics",
            template(json!({"kafka": {"bootstrap": "k:9092", "topics": []}})),
            "spec.template.kafka.topics",
        ),
        (
            "gold",
            template(json!({"storage": {"landing": "s3://l", "gold": "gs://g/t"}})),
            "storage.gold: must be s3://bucket/prefix",
        ),
        (
            "quantity",
            template(json!({"resources": {"limits": {"memory": "lots"}}})),
            "spec.template.resources.limits.memory",
        ),
        (
            "tolerations",
            template(
                json!({"podTemplate": {"tolerations": [{"key": "k", "operator": "Matches"}]}}),
            ),
            "spec.template.podTemplate.tolerations[0].operator",
        ),
        (
            "labels",
            template(json!({"stageOverrides": {"validate": {"podTemplate": {
                "metadata": {"labels": {"streamflow.io/pipelinerun": "other"}}}}}})),
            "spec.template.stageOverrides.validate.podTemplate.metadata.labels",
        ),
        (
            "tmp",
            template(json!({"podTemplate": {"tmpDirSizeLimit": "lots"}})),
            "tmpDirSizeLimit: must be a Kubernetes quantity above zero",
        ),
    ];
    for (name, spec, expected) in cases {
        let msg = refusal(&api, pipeline_body(name, spec)).await?;
        assert!(
            msg.contains(expected),
            "{name}: expected {expected:?} in: {msg}"
        );
    }
    Ok(())
}

/// A Pipeline with a bad schedule or time zone says so in its status: CEL cannot parse a cron
/// expression or know the IANA zones, so these are the operator's to report, at the first
/// reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_reported_in_status() -> Result<()> {
    let (client, ns) = setup("sf-plbad").await?;
    let _op = Operator::start(&ns).await?;
    let cases = [
        ("tz", "0 2 * * *", "Mars/Olympus", "IANA time zone"),
        ("minute", "61 2 * * *", "UTC", "is not a cron schedule"),
    ];
    for (name, schedule, tz, _) in cases {
        create_pipeline(
            &client,
            &ns,
            pipeline_body(name, json!({"schedule": schedule, "timeZone": tz})),
        )
        .await?;
    }
    let api: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    for (name, _, _, expected) in cases {
        let cond = wait_for("Ready False", TIMEOUT, || async {
            let pl = api.get(name).await?;
            Ok(pl
                .status
                .and_then(|s| s.condition("Ready").cloned())
                .filter(|c| c.status == "False"))
        })
        .await?;
        assert_eq!(cond.reason, "InvalidSpec", "{name}");
        assert!(cond.message.contains(expected), "{name}: {}", cond.message);
    }
    Ok(())
}
