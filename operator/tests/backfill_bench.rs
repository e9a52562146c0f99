//! The cost of a large Backfill: N intervals (`STREAMFLOW_BENCH_INTERVALS`, default 200;
//! `bench/backfill.sh` runs 10,000) with `maxActiveRuns` M (`STREAMFLOW_BENCH_MAX_ACTIVE`,
//! default 20) and history limits H (`STREAMFLOW_BENCH_HISTORY_LIMIT`, both limits; default
//! 10; `none` keeps every run), one stage each, and a kubelet stand-in that finishes each Job
//! as soon as it sees it. Measures the time to Complete, the operator's peak RSS and the API
//! requests the operator sent per run (its own counter, by verb and resource), prints them,
//! and holds them to budgets: no more than 3x the writes a run needs, and, with history
//! limits, peak RSS under 64 MiB (without, every run stays in the operator's cache: the
//! figure is printed, not held).
//!
//! The fewest writes a one-stage run needs: create the PipelineRun, add its finalizer, create
//! its Job, write its status twice (running, then finished) = 5; pruned, 3 more: delete it,
//! delete its Jobs, remove its finalizer.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use kube::api::{Api, PostParams};
use serde_json::json;
use streamflow_operator::api::backfill::{Backfill, COND_COMPLETE};
use support::*;

const FEWEST_WRITES_PER_RUN: f64 = 5.0;
const FEWEST_WRITES_PER_PRUNED_RUN: f64 = 8.0;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_backfill_cost() -> Result<()> {
    let intervals = env_or("STREAMFLOW_BENCH_INTERVALS", 200);
    let max_active = env_or("STREAMFLOW_BENCH_MAX_ACTIVE", 20);
    // `none`: no limits.
    let history_limit = match std::env::var("STREAMFLOW_BENCH_HISTORY_LIMIT").as_deref() {
        Ok("none") => None,
        _ => Some(env_or("STREAMFLOW_BENCH_HISTORY_LIMIT", 10)),
    };
    let client = client().await?;
    install_crd(&client).await?;
    let ns = namespace(&client, "sf-bfbench").await?;
    let op = Operator::start(&ns).await?;
    let _kubelet = InstantKubelet::start(client.clone(), &ns, Duration::ZERO);
    let before = op.samples("streamflow_operator_api_requests_total").await?;
    let to = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?
        + chrono::Duration::hours(i64::from(intervals));
    let bf: Backfill = serde_json::from_value(json!({
        "apiVersion": "streamflow.io/v1alpha1",
        "kind": "Backfill",
        "metadata": {"name": "bench"},
        "spec": {
            "template": {
                "stages": ["validate"],
                "kafka": {"bootstrap": "127.0.0.1:9094"},
                "storage": {"landing": "s3://landing/unused", "gold": "s3://gold/unused"},
                "retry": {"maxAttempts": 1},
            },
            "from": "2026-01-01T00:00:00Z",
            "to": to.to_rfc3339(),
            "step": "1h",
            "maxActiveRuns": max_active,
            "successfulRunsHistoryLimit": history_limit,
            "failedRunsHistoryLimit": history_limit,
        }
    }))?;
    let api: Api<Backfill> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let created = api.create(&PostParams::default(), &bf).await?;
    // A Backfill CRD without the limits (applied by another checkout's tests on a shared API
    // server) would drop them silently and measure something else.
    anyhow::ensure!(
        created.spec.successful_runs_history_limit == history_limit,
        "the API server dropped the history limits: is an older Backfill CRD installed?"
    );
    let timeout = Duration::from_secs(60 + u64::from(intervals));
    let done = wait_for("the Backfill to complete", timeout, || async {
        let bf = api.get("bench").await?;
        Ok(bf.status.filter(|s| {
            s.condition(COND_COMPLETE)
                .is_some_and(|c| c.status == "True")
        }))
    })
    .await?;
    let elapsed = started.elapsed();
    assert_eq!(done.succeeded, intervals, "{done:#?}");

    // Requests after the runs finished (the stand-in's are not the operator's).
    let after = op.samples("streamflow_operator_api_requests_total").await?;
    let before: BTreeMap<String, f64> = before.into_iter().collect();
    let mut by_verb: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_series = Vec::new();
    for (series, value) in after {
        let delta = value - before.get(&series).copied().unwrap_or(0.0);
        if delta > 0.0 {
            let verb = series
                .split("verb=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("?")
                .to_owned();
            *by_verb.entry(verb).or_default() += delta;
            by_series.push((series, delta));
        }
    }
    let n = f64::from(intervals);
    let writes: f64 = ["post", "put", "patch", "delete"]
        .iter()
        .map(|v| by_verb.get(*v).copied().unwrap_or(0.0))
        .sum();
    let reads =
        by_verb.get("get").copied().unwrap_or(0.0) + by_verb.get("list").copied().unwrap_or(0.0);
    let rss_mib = op.peak_rss_kib()? as f64 / 1024.0;
    let reconciles = op
        .metric("streamflow_operator_parent_reconciles_total{kind=\"Backfill\"}")
        .await?;
    let limit = history_limit.map_or_else(|| "none".to_owned(), |h| h.to_string());
    println!("BENCH intervals={intervals} max_active={max_active} history_limit={limit}");
    println!(
        "BENCH | {intervals} | {max_active} | {limit} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} |",
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64(),
        rss_mib,
        writes / n,
        reads / n,
        reconciles / n,
    );
    for (series, delta) in &by_series {
        println!("BENCH requests {series} {delta} ({:.2}/run)", delta / n);
    }
    if history_limit.is_some() {
        assert!(rss_mib < 64.0, "operator peak RSS {rss_mib:.1} MiB");
    }
    // An Event is patched only to count a repeat of one published before, which means the
    // operator kept what it published: kube's Recorder does, for 6 minutes, and one for all
    // runs held most of the operator's memory in a large Backfill (docs/benchmarks.md). Each
    // transition is published once, so nothing here is a repeat to count.
    let event_patches: f64 = by_series
        .iter()
        .filter(|(series, _)| {
            series.contains("verb=\"patch\"") && series.contains("resource=\"events\"")
        })
        .map(|(_, delta)| delta)
        .sum();
    assert!(
        event_patches == 0.0,
        "{event_patches} Event patches: the operator keeps the Events it published"
    );
    let fewest = if history_limit.is_some() {
        FEWEST_WRITES_PER_PRUNED_RUN
    } else {
        FEWEST_WRITES_PER_RUN
    };
    assert!(
        writes / n <= 3.0 * fewest,
        "{:.1} writes per run: {by_series:#?}",
        writes / n
    );
    Ok(())
}
