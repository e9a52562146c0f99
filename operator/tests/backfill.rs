//! Backfills against a real kube-apiserver (`scripts/kube.sh start`), with the operator as a
//! child process and a kubelet stand-in that finishes each Job at once (see `support`): what
//! runs are created, how many at a time, in which order, across restarts and deletions.
//! Every test has its own namespace and its own operator process watching only it.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use streamflow_operator::api::backfill::{Backfill, COND_COMPLETE, COND_FAILED, COND_SUSPENDED};
use streamflow_operator::api::pipeline::Pipeline;
use streamflow_operator::api::pipelinerun::{Phase, PipelineRun};
use support::*;

async fn setup(prefix: &str) -> Result<(Client, String)> {
    let client = client().await?;
    install_crd(&client).await?;
    let ns = namespace(&client, prefix).await?;
    Ok((client, ns))
}

/// A run template whose one stage the stand-in finishes: validate, one attempt.
fn template() -> serde_json::Value {
    json!({
        "stages": ["validate"],
        "kafka": {"bootstrap": "127.0.0.1:9094"},
        "storage": {"landing": "s3://landing/unused", "gold": "s3://gold/unused"},
        "retry": {"maxAttempts": 1},
    })
}

/// A suspended Pipeline: it schedules nothing; its template is what Backfills of it run.
async fn suspended_pipeline(client: &Client, ns: &str, name: &str) -> Result<()> {
    let pl: Pipeline = serde_json::from_value(json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"schedule": "0 0 * * *", "suspend": true, "template": template()},
    }))?;
    Api::<Pipeline>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pl)
        .await?;
    Ok(())
}

fn backfill_body(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "Backfill",
        "metadata": {"name": name},
        "spec": {"template": template(), "from": "2026-01-01T00:00:00Z", "step": "1h"},
    });
    if let (Some(b), Some(s)) = (base["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

async fn create_backfill(client: &Client, ns: &str, body: serde_json::Value) -> Result<Backfill> {
    let bf: Backfill = serde_json::from_value(body)?;
    Ok(Api::<Backfill>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &bf)
        .await?)
}

async fn wait_backfill(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Backfill) -> bool,
) -> Result<Backfill> {
    let api: Api<Backfill> = Api::namespaced(client.clone(), ns);
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    let res = wait_for(what, TIMEOUT, || {
        let api = api.clone();
        let pred = &pred;
        let last = last.clone();
        async move {
            let bf = api.get(name).await?;
            let ok = pred(&bf);
            if let Ok(mut l) = last.lock() {
                *l = bf.status.clone();
            }
            Ok(ok.then_some(bf))
        }
    })
    .await;
    res.map_err(|e| {
        let last = last.lock().ok().and_then(|l| l.clone());
        anyhow::anyhow!("{e}; last status: {last:#?}")
    })
}

/// Waits for an Event with `reason` about the Backfill (published after its status write).
async fn wait_backfill_event(client: &Client, ns: &str, name: &str, reason: &str) -> Result<()> {
    wait_for(&format!("a {reason} event of {name}"), TIMEOUT, || async {
        let ev = events_of(client, ns, "Backfill", name).await?;
        Ok(ev.iter().any(|e| e.0 == reason).then_some(()))
    })
    .await
}

fn complete(bf: &Backfill) -> bool {
    bf.status.as_ref().is_some_and(|s| s.is_true(COND_COMPLETE))
}

fn selector(backfill: &str) -> String {
    format!("streamflow.io/backfill={backfill}")
}

/// The runs of a backfill: (name, interval, phase), by name.
async fn children(
    client: &Client,
    ns: &str,
    backfill: &str,
) -> Result<Vec<(String, String, Phase)>> {
    let mut out: Vec<(String, String, Phase)> = runs(client, ns, &selector(backfill))
        .await?
        .iter()
        .map(|r| {
            (
                r.name_any(),
                r.spec.interval.arg(),
                r.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// 30 hourly intervals with maxActiveRuns 3: never more than 3 runs active (every change
/// seen through a watch), all 30 succeed, one run per interval, and the status adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_intervals_never_more_than_three_active_and_all_succeed() -> Result<()> {
    let (client, ns) = setup("sf-bf30").await?;
    let op = Operator::start(&ns).await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(300));
    let watch = RunWatch::start(&client, &ns, &selector("month")).await?;
    create_backfill(
        &client,
        &ns,
        backfill_body(
            "month",
            json!({"to": "2026-01-02T06:00:00Z", "maxActiveRuns": 3}),
        ),
    )
    .await?;
    let bf = wait_backfill(&client, &ns, "month", "Complete", complete).await?;
    let st = bf.status.clone().unwrap_or_default();
    assert_eq!(
        (st.total, st.succeeded, st.failed, st.active, st.pending),
        (30, 30, 0, 0, 0),
        "{st:#?}"
    );
    assert_eq!(st.progress.as_deref(), Some("30/30"));
    assert!(!st.is_true(COND_FAILED));
    assert!(st.completion_time.is_some());
    let kids = children(&client, &ns, "month").await?;
    assert_eq!(kids.len(), 30);
    let intervals: HashSet<&String> = kids.iter().map(|k| &k.1).collect();
    assert_eq!(intervals.len(), 30, "one run per interval");
    assert!(kids.iter().all(|k| k.2 == Phase::Succeeded), "{kids:?}");
    assert_eq!(kids[0].0, "month-20260101-bf");
    assert_eq!(kids[1].0, "month-20260101t01-bf");
    assert_eq!(
        watch.max_active(),
        3,
        "at most (and, with 30 to run, exactly) 3 at once"
    );
    // Oldest first.
    assert_eq!(
        watch.order()[..3],
        [
            "month-20260101-bf",
            "month-20260101t01-bf",
            "month-20260101t02-bf"
        ]
    );
    // Every run is owned by the Backfill (controller), so `kubectl get` shows the tree.
    let owned = runs(&client, &ns, &selector("month")).await?;
    assert!(owned.iter().all(|r| {
        r.owner_references()
            .iter()
            .any(|o| o.kind == "Backfill" && o.name == "month" && o.controller == Some(true))
    }));
    wait_backfill_event(&client, &ns, "month", "Completed").await?;
    let series = format!(
        "streamflow_operator_backfill_intervals{{backfill=\"month\",object_namespace=\"{ns}\",phase=\"Succeeded\"}}"
    );
    wait_for("the Succeeded gauge at 30", TIMEOUT, || async {
        Ok((op.metric(&series).await.unwrap_or(0.0) == 30.0).then_some(()))
    })
    .await?;
    let progress = format!(
        "streamflow_operator_backfill_last_progress_timestamp_seconds{{backfill=\"month\",object_namespace=\"{ns}\"}}"
    );
    let last = op.metric(&progress).await?;
    let completed = st
        .completion_time
        .map(|t| t.timestamp() as f64)
        .unwrap_or(0.0);
    assert!(
        (last - completed).abs() < 2.0,
        "last progress {last} vs completion {completed}"
    );
    Ok(())
}

/// Starts the Backfill `name` of 12 hourly intervals, 2 at a time, and a watch of its runs;
/// returns once 4 succeeded (2 more are in flight), for a test to crash an operator there.
async fn backfill_of_twelve_a_third_done(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<RunWatch> {
    let watch = RunWatch::start(client, ns, &selector(name)).await?;
    create_backfill(
        client,
        ns,
        backfill_body(
            name,
            json!({"to": "2026-01-01T12:00:00Z", "maxActiveRuns": 2}),
        ),
    )
    .await?;
    wait_backfill(client, ns, name, "4 succeeded", |b| {
        b.status.as_ref().is_some_and(|s| s.succeeded >= 4)
    })
    .await?;
    Ok(watch)
}

/// The Backfill of [`backfill_of_twelve_a_third_done`] completes with one run per interval,
/// never more than 2 active at once.
async fn completes_once_each(
    client: &Client,
    ns: &str,
    name: &str,
    watch: &RunWatch,
) -> Result<()> {
    let bf = wait_backfill(client, ns, name, "Complete", complete).await?;
    let st = bf.status.clone().unwrap_or_default();
    assert_eq!((st.total, st.succeeded), (12, 12), "{st:#?}");
    let kids = children(client, ns, name).await?;
    assert_eq!(kids.len(), 12, "{kids:?}");
    assert_eq!(watch.order().len(), 12, "no run was created twice");
    assert!(watch.max_active() <= 2, "max active {}", watch.max_active());
    Ok(())
}

/// The operator is killed (SIGKILL) mid-backfill and started again: it finishes, with one run
/// per interval and never more than maxActiveRuns at once, across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_backfill_finishes_without_duplicates() -> Result<()> {
    let (client, ns) = setup("sf-bfkill").await?;
    let op = Operator::start(&ns).await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(500));
    let watch = backfill_of_twelve_a_third_done(&client, &ns, "crashy").await?;
    op.kill().await?;
    let _op = Operator::start(&ns).await?;
    completes_once_each(&client, &ns, "crashy", &watch).await
}

/// The holder of the test operators' Lease, and its renewTime.
async fn lease_holder(
    client: &Client,
    ns: &str,
) -> Result<(Option<String>, Option<chrono::DateTime<chrono::Utc>>)> {
    use k8s_openapi::api::coordination::v1::Lease;
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get(LEASE_NAME)
        .await?;
    let spec = lease.spec.unwrap_or_default();
    let renewed = spec
        .renew_time
        .and_then(|t| chrono::DateTime::from_timestamp_micros(t.0.as_microsecond()));
    Ok((spec.holder_identity, renewed))
}

/// Waits until `op` leads and the Lease names it (`name_`); how long that took.
async fn wait_leads(
    client: &Client,
    ns: &str,
    op: &Operator,
    name: &str,
    timeout: Duration,
) -> Result<Duration> {
    let started = tokio::time::Instant::now();
    wait_for(&format!("{name} to lead"), timeout, || async {
        let holder = lease_holder(client, ns).await?.0.unwrap_or_default();
        Ok((op.leads().await? && holder.starts_with(&format!("{name}_"))).then_some(()))
    })
    .await?;
    Ok(started.elapsed())
}

/// Two replicas: exactly one leads; the leader is killed (SIGKILL) mid-backfill and the other
/// takes over within the lease duration (plus one retry period and scheduling slack) and
/// finishes it, with one run and one Job per interval and never more than maxActiveRuns at
/// once; a leader stopped with SIGTERM exits cleanly and hands over too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_backfill_the_standby_takes_over() -> Result<()> {
    let (client, ns) = setup("sf-bfha").await?;
    let takeover = LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(2);
    let a = Operator::start_named(&ns, "op-a").await?;
    wait_leads(&client, &ns, &a, "op-a", TIMEOUT).await?;
    let b = Operator::start_named(&ns, "op-b").await?;
    // One renewal after b joined: a still leads, b stands by (and is ready).
    let joined = chrono::Utc::now();
    wait_for("a renewal after op-b joined", TIMEOUT, || async {
        Ok(lease_holder(&client, &ns)
            .await?
            .1
            .filter(|renewed| *renewed > joined)
            .map(|_| ()))
    })
    .await?;
    ensure!(a.leads().await? && !b.leads().await?, "exactly one leads");
    ensure!(b.get("/readyz").await?.0 == 200, "a standby is ready");

    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(500));
    let watch = backfill_of_twelve_a_third_done(&client, &ns, "ha").await?;
    a.kill().await?;
    let took = wait_leads(&client, &ns, &b, "op-b", takeover).await?;
    eprintln!("op-b took over {took:?} after op-a was killed");
    // The killed pod's replacement stands by.
    let c = Operator::start_named(&ns, "op-c").await?;

    completes_once_each(&client, &ns, "ha", &watch).await?;
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await?;
    assert_eq!(jobs.items.len(), 12, "one Job per interval");
    ensure!(b.leads().await? && !c.leads().await?, "exactly one leads");

    // SIGTERM: the leader stops its controllers, releases the Lease and exits 0.
    let status = b.terminate().await?;
    ensure!(status.success(), "the leader exited with {status}");
    wait_leads(&client, &ns, &c, "op-c", takeover).await?;
    Ok(())
}

/// A leader cut off from the API server by a partition that drops packets (its requests
/// hang rather than fail) stops by its renew deadline, before the standby takes the Lease over
/// when the lease duration has passed: never two leaders, by the test's one clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_before_the_standby_takes_over() -> Result<()> {
    let (client, ns) = setup("sf-bfpart").await?;
    let partition = Blackhole::start().await?;
    let mut a = Operator::start_with_kubeconfig(&ns, "op-a", &partition.kubeconfig_path()?).await?;
    wait_leads(&client, &ns, &a, "op-a", TIMEOUT).await?;
    let b = Operator::start_named(&ns, "op-b").await?;
    partition.cut();
    let cut = tokio::time::Instant::now();
    let exited = wait_for(
        "op-a to stop",
        RENEW_DEADLINE + RETRY_PERIOD + Duration::from_secs(2),
        || {
            let status = a.child.try_wait();
            async move { Ok(status?) }
        },
    )
    .await?;
    let stopped = cut.elapsed();
    ensure!(!exited.success(), "op-a exited with {exited}, not an error");
    ensure!(
        !b.leads().await?,
        "op-b led before op-a stopped ({stopped:?} after the cut)"
    );
    let took = wait_leads(
        &client,
        &ns,
        &b,
        "op-b",
        LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(2),
    )
    .await?;
    eprintln!("op-a stopped {stopped:?} after the cut, op-b led {took:?} later");
    Ok(())
}

/// History limits (issue 22 item 10): 12 hourly intervals, 3 of them failing, keeping 2
/// succeeded and 1 failed run. Finished runs beyond the limits are deleted, their intervals
/// recorded in `status.pruned`, and none runs again: not after the operator is killed
/// mid-backfill, not after a restart once it is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_prune_finished_runs_and_no_interval_runs_twice() -> Result<()> {
    let (client, ns) = setup("sf-bfhist").await?;
    let op = Operator::start(&ns).await?;
    let kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(300));
    let hour = |h: u32| format!("2026-01-01T{h:02}:00:00Z/2026-01-01T{:02}:00:00Z", h + 1);
    kubelet.fail(&[hour(1), hour(5), hour(9)]);
    let watch = RunWatch::start(&client, &ns, &selector("pruned")).await?;
    create_backfill(
        &client,
        &ns,
        backfill_body(
            "pruned",
            json!({"to": "2026-01-01T12:00:00Z", "maxActiveRuns": 2,
                "successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 1}),
        ),
    )
    .await?;
    wait_backfill(&client, &ns, "pruned", "runs pruned, 4 succeeded", |b| {
        b.status
            .as_ref()
            .is_some_and(|s| s.succeeded >= 4 && s.pruned.is_some())
    })
    .await?;
    op.kill().await?;
    let op = Operator::start(&ns).await?;
    let bf = wait_backfill(&client, &ns, "pruned", "Complete", complete).await?;
    let st = bf.status.clone().unwrap_or_default();
    assert_eq!((st.total, st.succeeded, st.failed), (12, 9, 3), "{st:#?}");
    let pruned = st.pruned.clone().unwrap_or_default();
    assert_eq!(
        (pruned.succeeded.as_str(), pruned.failed.as_str()),
        ("0,2-4,6-8", "1,5"),
        "interval indices of the pruned runs: {st:#?}"
    );
    // The newest 2 succeeded runs and the newest failed one stay.
    let kept = wait_for("the pruned runs to be gone", TIMEOUT, || async {
        let kids = children(&client, &ns, "pruned").await?;
        Ok((kids.len() == 3).then_some(kids))
    })
    .await?;
    let kept: Vec<(&str, Phase)> = kept.iter().map(|k| (k.0.as_str(), k.2)).collect();
    assert_eq!(
        kept,
        [
            ("pruned-20260101t09-bf", Phase::Failed),
            ("pruned-20260101t10-bf", Phase::Succeeded),
            ("pruned-20260101t11-bf", Phase::Succeeded),
        ]
    );
    // Restarted once complete: the pruned intervals stay done.
    op.kill().await?;
    let op = Operator::start(&ns).await?;
    let series = format!(
        "streamflow_operator_backfill_intervals{{backfill=\"pruned\",object_namespace=\"{ns}\",phase=\"Succeeded\"}}"
    );
    wait_for(
        "the restarted operator to reconcile the Backfill",
        TIMEOUT,
        || async { Ok((op.metric(&series).await.unwrap_or(0.0) == 9.0).then_some(())) },
    )
    .await?;
    assert_eq!(
        watch.order().len(),
        12,
        "no interval ran twice: {:?}",
        watch.order()
    );
    assert!(watch.max_active() <= 2, "max active {}", watch.max_active());
    assert_eq!(children(&client, &ns, "pruned").await?.len(), 3);
    Ok(())
}

/// Reprocess compares with earlier runs of the same Pipeline: a first Backfill of it fails
/// two of six days; then `None` runs nothing, `Failed` runs the two failed days, `Completed`
/// runs all six.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_none_failed_and_completed() -> Result<()> {
    let (client, ns) = setup("sf-bfre").await?;
    suspended_pipeline(&client, &ns, "daily").await?;
    let _op = Operator::start(&ns).await?;
    let kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(50));
    kubelet.fail(&[
        "2026-03-02T00:00:00Z/2026-03-03T00:00:00Z".to_owned(),
        "2026-03-04T00:00:00Z/2026-03-05T00:00:00Z".to_owned(),
    ]);
    let spec = |reprocess: &str| {
        json!({
            "template": null,
            "pipelineRef": {"name": "daily"},
            "from": "2026-03-01T00:00:00Z", "to": "2026-03-07T00:00:00Z", "step": "1d",
            "maxActiveRuns": 6, "reprocess": reprocess,
        })
    };
    let mut first = backfill_body("first", spec("None"));
    first["spec"].as_object_mut().map(|s| s.remove("template"));
    create_backfill(&client, &ns, first).await?;
    let bf = wait_backfill(&client, &ns, "first", "Complete", complete).await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!((st.succeeded, st.failed), (4, 2), "{st:#?}");
    assert!(st.is_true(COND_FAILED));
    kubelet.fail(&[]);

    let mut expect = vec![("None", 0, 6), ("Failed", 2, 4), ("Completed", 6, 0)];
    for (reprocess, runs_expected, skipped) in expect.drain(..) {
        let name = format!("again-{}", reprocess.to_lowercase());
        let mut body = backfill_body(&name, spec(reprocess));
        body["spec"].as_object_mut().map(|s| s.remove("template"));
        create_backfill(&client, &ns, body).await?;
        let bf = wait_backfill(&client, &ns, &name, "Complete", complete).await?;
        let st = bf.status.unwrap_or_default();
        let kids = children(&client, &ns, &name).await?;
        assert_eq!(kids.len(), runs_expected, "{reprocess}: {kids:?}");
        assert_eq!(
            (st.succeeded as usize, st.skipped),
            (runs_expected, skipped),
            "{reprocess}: {st:#?}"
        );
        if reprocess == "Failed" {
            let days: Vec<&str> = kids.iter().map(|k| &k.1[..10]).collect();
            assert_eq!(days, ["2026-03-02", "2026-03-04"]);
        }
        // The runs carry the Pipeline's label: a later reprocess sees them.
        let of_pipeline = runs(&client, &ns, "streamflow.io/pipeline=daily").await?;
        assert!(of_pipeline.len() >= 6 + runs_expected);
    }
    Ok(())
}

/// backwards: the newest interval runs first, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backwards_runs_newest_first() -> Result<()> {
    let (client, ns) = setup("sf-bfback").await?;
    let _op = Operator::start(&ns).await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(50));
    let watch = RunWatch::start(&client, &ns, &selector("back")).await?;
    create_backfill(
        &client,
        &ns,
        backfill_body(
            "back",
            json!({"to": "2026-01-01T04:00:00Z", "backwards": true}),
        ),
    )
    .await?;
    wait_backfill(&client, &ns, "back", "Complete", complete).await?;
    assert_eq!(
        watch.order(),
        [
            "back-20260101t03-bf",
            "back-20260101t02-bf",
            "back-20260101t01-bf",
            "back-20260101-bf"
        ]
    );
    assert_eq!(watch.max_active(), 1, "maxActiveRuns defaults to 1");
    // A run deleted by hand is created again (how a failed run of a Backfill is rerun).
    let first = runs(&client, &ns, &selector("back"))
        .await?
        .into_iter()
        .find(|r| r.name_any() == "back-20260101-bf")
        .and_then(|r| r.uid())
        .ok_or_else(|| anyhow::anyhow!("no run back-20260101-bf"))?;
    Api::<streamflow_operator::api::pipelinerun::PipelineRun>::namespaced(client.clone(), &ns)
        .delete("back-20260101-bf", &DeleteParams::background())
        .await?;
    wait_for(
        "back-20260101-bf created again and succeeded",
        TIMEOUT,
        || async {
            let again = runs(&client, &ns, &selector("back"))
                .await?
                .into_iter()
                .find(|r| r.name_any() == "back-20260101-bf" && r.uid().as_ref() != Some(&first));
            Ok(again
                .filter(|r| {
                    r.status
                        .as_ref()
                        .is_some_and(|s| s.phase == Phase::Succeeded)
                })
                .map(|_| ()))
        },
    )
    .await?;
    let bf = wait_backfill(&client, &ns, "back", "Complete again", complete).await?;
    assert_eq!(bf.status.map(|s| s.succeeded), Some(4));
    Ok(())
}

/// suspend: the runs active go on, no new one starts; resume: the rest run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_new_runs_and_resume_continues() -> Result<()> {
    let (client, ns) = setup("sf-bfsusp").await?;
    let _op = Operator::start(&ns).await?;
    create_backfill(
        &client,
        &ns,
        backfill_body(
            "pausy",
            json!({"to": "2026-01-01T06:00:00Z", "maxActiveRuns": 2}),
        ),
    )
    .await?;
    // No kubelet yet: two runs start and stay active.
    wait_backfill(&client, &ns, "pausy", "2 active", |b| {
        b.status.as_ref().is_some_and(|s| s.active == 2)
    })
    .await?;
    let api: Api<Backfill> = Api::namespaced(client.clone(), &ns);
    let patch = |suspend: bool| Patch::Merge(json!({"spec": {"suspend": suspend}}));
    api.patch("pausy", &PatchParams::default(), &patch(true))
        .await?;
    wait_backfill(&client, &ns, "pausy", "Suspended", |b| {
        b.status.as_ref().is_some_and(|s| s.is_true(COND_SUSPENDED))
    })
    .await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(50));
    // The two finish; the status written after they did (by the same decision that would
    // have started more) shows none active and four to run.
    let bf = wait_backfill(&client, &ns, "pausy", "2 succeeded, 0 active", |b| {
        b.status
            .as_ref()
            .is_some_and(|s| s.succeeded == 2 && s.active == 0)
    })
    .await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!(st.pending, 4, "{st:#?}");
    assert_eq!(children(&client, &ns, "pausy").await?.len(), 2);
    api.patch("pausy", &PatchParams::default(), &patch(false))
        .await?;
    let bf = wait_backfill(&client, &ns, "pausy", "Complete", complete).await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!(st.succeeded, 6);
    assert!(!st.is_true(COND_SUSPENDED));
    // Events are published after the status is written.
    for reason in ["Suspended", "Resumed", "Completed"] {
        wait_backfill_event(&client, &ns, "pausy", reason).await?;
    }
    Ok(())
}

/// dryRun lists the intervals that would run and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lists_intervals_and_creates_nothing() -> Result<()> {
    let (client, ns) = setup("sf-bfdry").await?;
    let op = Operator::start(&ns).await?;
    create_backfill(
        &client,
        &ns,
        backfill_body(
            "dry",
            json!({"to": "2026-01-01T03:00:00Z", "dryRun": true, "maxActiveRuns": 5}),
        ),
    )
    .await?;
    let bf = wait_backfill(&client, &ns, "dry", "wouldRun", |b| {
        b.status.as_ref().is_some_and(|s| !s.would_run.is_empty())
    })
    .await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!(
        st.would_run,
        [
            "2026-01-01T00:00:00Z/2026-01-01T01:00:00Z",
            "2026-01-01T01:00:00Z/2026-01-01T02:00:00Z",
            "2026-01-01T02:00:00Z/2026-01-01T03:00:00Z"
        ]
    );
    assert_eq!((st.active, st.pending), (0, 3));
    assert!(!st.is_true(COND_COMPLETE));
    assert!(
        runs(&client, &ns, "").await?.is_empty(),
        "a dry run creates nothing"
    );
    assert_eq!(
        op.metric("streamflow_operator_runs_created_total{kind=\"Backfill\"}")
            .await
            .unwrap_or(0.0),
        0.0
    );
    Ok(())
}

/// Deleting a Backfill: with `runDeletionPolicy: Delete` its runs go with it (the finalizer:
/// this API server has no garbage collector); with the default, `Retain`, they stay, released
/// (no owner reference to it left for a garbage collector to follow), runs in flight included;
/// deleting with propagationPolicy Orphan keeps them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_backfill_deletes_its_runs_only_when_asked() -> Result<()> {
    let (client, ns) = setup("sf-bfdel").await?;
    let _op = Operator::start(&ns).await?;
    for (name, policy) in [
        ("doomed", Some("Delete")),
        ("kept", None),
        ("orphaner", None),
    ] {
        let mut spec = json!({"to": "2026-01-01T05:00:00Z", "maxActiveRuns": 2});
        if let Some(p) = policy {
            spec["runDeletionPolicy"] = json!(p);
        }
        create_backfill(&client, &ns, backfill_body(name, spec)).await?;
    }
    for name in ["doomed", "kept", "orphaner"] {
        wait_for("2 runs each", TIMEOUT, || async {
            Ok((children(&client, &ns, name).await?.len() == 2).then_some(()))
        })
        .await?;
    }
    let api: Api<Backfill> = Api::namespaced(client.clone(), &ns);
    api.delete("doomed", &DeleteParams::background()).await?;
    wait_for("the Backfill and its runs to be gone", TIMEOUT, || async {
        let kids = children(&client, &ns, "doomed").await?;
        Ok((kids.is_empty() && api.get_opt("doomed").await?.is_none()).then_some(()))
    })
    .await?;

    // No kubelet: both runs of `kept` are still in flight when it goes.
    api.delete("kept", &DeleteParams::background()).await?;
    wait_for("the Backfill `kept` to be gone", TIMEOUT, || async {
        Ok(api.get_opt("kept").await?.is_none().then_some(()))
    })
    .await?;
    let kept = runs(&client, &ns, "streamflow.io/backfill=kept").await?;
    assert_eq!(kept.len(), 2, "its runs stay");
    for run in &kept {
        assert!(
            run.owner_references().iter().all(|o| o.kind != "Backfill"),
            "{} still owned: {:?}",
            run.name_any(),
            run.owner_references()
        );
        assert!(run.metadata.deletion_timestamp.is_none());
    }

    api.delete("orphaner", &DeleteParams::orphan()).await?;
    // The operator's finalizer goes without deleting the runs; the `orphan` finalizer stays
    // for the garbage collector, which this API server does not have.
    let bf = wait_for("the operator's finalizer removed", TIMEOUT, || async {
        let bf = api.get("orphaner").await?;
        Ok((!bf.finalizers().iter().any(|f| f == "streamflow.io/runs")).then_some(bf))
    })
    .await?;
    ensure!(
        bf.finalizers().iter().any(|f| f == "orphan"),
        "{:?}",
        bf.finalizers()
    );
    assert_eq!(children(&client, &ns, "orphaner").await?.len(), 2);
    Ok(())
}

/// A run's spec (validate, which the stand-in finishes) for `2026-01-01`, as a parent would
/// stamp it, with `metadata` as given.
fn day_run(metadata: serde_json::Value) -> Result<PipelineRun> {
    let mut spec = template();
    spec["interval"] = json!({"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"});
    Ok(serde_json::from_value(json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": metadata,
        "spec": spec,
    }))?)
}

/// A Backfill and a Pipeline of one name (issue 22 item 9): the Pipeline's run of a day is
/// there (`twin-20260101`, owned by the Pipeline); the Backfill's run of that day has a name of
/// its own and the Backfill completes, instead of taking the Pipeline's run's 409 as its own
/// run and waiting on it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_and_a_pipeline_of_one_name_stamp_different_runs() -> Result<()> {
    let (client, ns) = setup("sf-bftwin").await?;
    let _op = Operator::start(&ns).await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(100));
    let pl: Pipeline = serde_json::from_value(json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "twin"},
        "spec": {"schedule": "0 2 * * *", "suspend": true, "template": template()},
    }))?;
    let pl = Api::<Pipeline>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pl)
        .await?;
    let owner = pl
        .controller_owner_ref(&())
        .ok_or_else(|| anyhow::anyhow!("the Pipeline has no uid"))?;
    let pipeline_run = day_run(json!({
        "name": "twin-20260101",
        "labels": {"streamflow.io/pipeline": "twin",
            "app.kubernetes.io/managed-by": "streamflow-operator"},
        "ownerReferences": [owner],
    }))?;
    let runs_api: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    runs_api
        .create(&PostParams::default(), &pipeline_run)
        .await?;
    create_backfill(
        &client,
        &ns,
        backfill_body("twin", json!({"to": "2026-01-02T00:00:00Z", "step": "1d"})),
    )
    .await?;
    let bf = wait_backfill(&client, &ns, "twin", "Complete", complete).await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!((st.total, st.succeeded), (1, 1), "{st:#?}");
    let kids = children(&client, &ns, "twin").await?;
    assert_eq!(
        kids.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["twin-20260101-bf"]
    );
    // The Pipeline's run is still the Pipeline's alone.
    let theirs = runs_api.get("twin-20260101").await?;
    assert!(
        theirs
            .owner_references()
            .iter()
            .all(|o| o.kind == "Pipeline")
    );
    assert!(!theirs.labels().contains_key("streamflow.io/backfill"));
    Ok(())
}

/// A Backfill waiting for an earlier run of its Pipeline (issue 22 item 10: it listed every
/// run every 10 s) is woken when that run ends, by its watch of the Pipeline's runs: it has no
/// run of its own to wake it, and its fallback resync (5 min) is longer than the test's wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_waiting_for_an_earlier_run_goes_on_when_it_ends() -> Result<()> {
    let (client, ns) = setup("sf-bfwait").await?;
    suspended_pipeline(&client, &ns, "daily").await?;
    let _op = Operator::start(&ns).await?;
    // Made by hand, labelled as the Pipeline's: no kubelet yet, so it stays active.
    let earlier = day_run(json!({
        "name": "earlier-20260101",
        "labels": {"streamflow.io/pipeline": "daily"},
    }))?;
    Api::<PipelineRun>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &earlier)
        .await?;
    let mut body = backfill_body(
        "later",
        json!({"pipelineRef": {"name": "daily"}, "to": "2026-01-02T00:00:00Z", "step": "1d",
            "reprocess": "Completed"}),
    );
    body["spec"].as_object_mut().map(|s| s.remove("template"));
    create_backfill(&client, &ns, body).await?;
    wait_backfill(&client, &ns, "later", "waiting for the earlier run", |b| {
        b.status.as_ref().is_some_and(|s| s.waiting == 1)
    })
    .await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(50));
    let bf = wait_backfill(&client, &ns, "later", "Complete", complete).await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!((st.succeeded, st.waiting, st.skipped), (1, 0, 0), "{st:#?}");
    let kids = children(&client, &ns, "later").await?;
    assert_eq!(kids.len(), 1, "{kids:?}");
    Ok(())
}

/// A run name the Backfill would stamp, held by a run it does not own (made by hand here), is
/// an error in its status (Progressing False, RunNameConflict, naming the run and its holder)
/// and a Warning Event, not a run taken for its own; once that run is gone the Backfill makes
/// its own and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_name_held_by_another_owner_is_an_error_in_status() -> Result<()> {
    let (client, ns) = setup("sf-bfheld").await?;
    let _op = Operator::start(&ns).await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::from_millis(100));
    let runs_api: Api<PipelineRun> = Api::namespaced(client.clone(), &ns);
    runs_api
        .create(
            &PostParams::default(),
            &day_run(json!({"name": "held-20260101-bf"}))?,
        )
        .await?;
    create_backfill(
        &client,
        &ns,
        backfill_body("held", json!({"to": "2026-01-02T00:00:00Z", "step": "1d"})),
    )
    .await?;
    let bf = wait_backfill(&client, &ns, "held", "RunNameConflict", |b| {
        b.status
            .as_ref()
            .and_then(|s| s.condition("Progressing"))
            .is_some_and(|c| c.status == "False" && c.reason == "RunNameConflict")
    })
    .await?;
    let st = bf.status.unwrap_or_default();
    let cond = st
        .condition("Progressing")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        cond.contains("held-20260101-bf") && cond.contains("no controller"),
        "{cond}"
    );
    assert!(!st.is_true(COND_COMPLETE), "{st:#?}");
    assert_eq!((st.active, st.pending, st.succeeded), (0, 1, 0), "{st:#?}");
    assert!(st.runs.is_empty(), "{st:#?}");
    wait_backfill_event(&client, &ns, "held", "RunNameConflict").await?;
    runs_api
        .delete("held-20260101-bf", &DeleteParams::background())
        .await?;
    let bf = wait_backfill(&client, &ns, "held", "Complete", complete).await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!((st.total, st.succeeded), (1, 1), "{st:#?}");
    let theirs = runs_api.get("held-20260101-bf").await?;
    assert!(
        theirs
            .owner_references()
            .iter()
            .any(|o| o.kind == "Backfill" && o.name == "held"),
        "{:?}",
        theirs.owner_references()
    );
    Ok(())
}

/// Bad Backfills are refused by the API server, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_backfills_are_refused_with_a_reason() -> Result<()> {
    let (client, ns) = setup("sf-bfbad").await?;
    let ar = ApiResource::erase::<Backfill>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let long = "x".repeat(64);
    let cases = [
        (
            "both",
            json!({"to": "2026-01-02T00:00:00Z", "pipelineRef": {"name": "p"}}),
            "exactly one of template and pipelineRef",
        ),
        (
            "backwards-range",
            json!({"to": "2025-01-01T00:00:00Z"}),
            "to must be after from",
        ),
        (
            "bad-step",
            json!({"to": "2026-01-02T00:00:00Z", "step": "daily"}),
            "spec.step",
        ),
        (
            "zero",
            json!({"to": "2026-01-02T00:00:00Z", "maxActiveRuns": 0}),
            "spec.maxActiveRuns",
        ),
        (
            "reprocess",
            json!({"to": "2026-01-02T00:00:00Z", "reprocess": "Sometimes"}),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            long.as_str(),
            json!({"to": "2026-01-02T00:00:00Z"}),
            "at most 63 characters",
        ),
        // Issue 22 item 11: these were accepted and failed only at the first reconcile.
        (
            "zero-step",
            json!({"to": "2026-01-02T00:00:00Z", "step": "0h"}),
            "step must be longer than 0s",
        ),
        (
            "millions",
            json!({"to": "2036-01-01T00:00:00Z", "step": "1m"}),
            "more than 100000 intervals",
        ),
        (
            "many-days",
            json!({"to": "2400-01-01T00:00:00Z", "step": "1d"}),
            "more than 100000 intervals",
        ),
        // The template is a PipelineRun's spec: its rules hold here too.
        (
            "ftp",
            json!({"to": "2026-01-02T00:00:00Z", "template": {
                "kafka": {"bootstrap": "k:9092"},
                "storage": {"landing": "ftp://host/raw", "gold": "s3://g/t"}}}),
            "storage.landing: must be s3://bucket/prefix",
        ),
    ];
    for (name, spec, expected) in cases {
        let msg = refusal(&api, backfill_body(name, spec)).await?;
        assert!(
            msg.contains(expected),
            "{name}: expected {expected:?} in: {msg}"
        );
    }
    // Exactly 100,000 intervals (a 100,000-minute range) and a step of mixed units fit.
    for (name, spec) in [
        (
            "bound",
            json!({"to": "2026-03-11T10:40:00Z", "step": "1m", "dryRun": true}),
        ),
        (
            "mixed",
            json!({"to": "2026-01-02T00:00:00Z", "step": "1h30m", "dryRun": true}),
        ),
    ] {
        let body: DynamicObject = serde_json::from_value(backfill_body(name, spec))?;
        api.create(&PostParams::default(), &body).await?;
    }
    // The range cannot change after creation.
    let ok: DynamicObject = serde_json::from_value(backfill_body(
        "fixed",
        json!({"to": "2026-01-02T00:00:00Z"}),
    ))?;
    api.create(&PostParams::default(), &ok).await?;
    let err = api
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"step": "2h"}})),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("cannot change"), "{err}");
    Ok(())
}

/// The real kubectl applies examples/backfill.yaml (with the Pipeline it refers to, from
/// examples/pipeline.yaml) and shows the printer columns; dry run, so nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_examples_and_shows_columns() -> Result<()> {
    let (client, ns) = setup("sf-bfctl").await?;
    let _op = Operator::start(&ns).await?;
    for file in ["examples/pipeline.yaml", "examples/backfill.yaml"] {
        let path = repo_root().join(file).display().to_string();
        kubectl(vec![
            "apply".into(),
            "-n".into(),
            ns.clone(),
            "-f".into(),
            path,
        ])
        .await?;
    }
    let bf = wait_backfill(&client, &ns, "november-2026", "wouldRun", |b| {
        b.status.as_ref().is_some_and(|s| !s.would_run.is_empty())
    })
    .await?;
    let st = bf.status.unwrap_or_default();
    assert_eq!(st.total, 30);
    let table = kubectl(vec![
        "get".into(),
        "backfills".into(),
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
        ["NAME", "RANGE", "PROGRESS", "ACTIVE", "FAILED", "AGE"],
        "{table}"
    );
    assert!(table.contains("0/30"), "{table}");
    let table = kubectl(vec![
        "get".into(),
        "pipelines".into(),
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
            "NAME", "SCHEDULE", "SUSPEND", "LAST", "FRESH", "FAILED", "NEXT", "ACTIVE", "AGE"
        ],
        "{table}"
    );
    Ok(())
}
