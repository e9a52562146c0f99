//! The cost of a large Backfill: N intervals (`STREAMFLOW_BENCH_INTERVALS`, default 200;
//! `bench/backfill.sh` runs 1,000) with `maxActiveRuns` M (`STREAMFLOW_BENCH_MAX_ACTIVE`,
//! default 20), one stage each, and a kubelet stand-in that finishes each Job as soon as it
//! sees it. Measures the time to Complete, the operator's peak RSS and the API requests the
//! operator sent per run (its own counter, by verb and resource), prints them, and holds them
//! to budgets: peak RSS under 64 MiB, and no more than 3x the writes a run needs.
//!
//! The fewest writes a one-stage run needs: create the PipelineRun, add its finalizer, create
//! its Job, write its status twice (running, then finished) = 5.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use kube::api::{Api, PostParams};
use serde_json::json;
use streamflow_operator::backfill::{Backfill, COND_COMPLETE};
use support::*;

const FEWEST_WRITES_PER_RUN: f64 = 5.0;

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
        }
    }))?;
    let api: Api<Backfill> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    api.create(&PostParams::default(), &bf).await?;
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
    println!("BENCH intervals={intervals} max_active={max_active}");
    println!(
        "BENCH | {intervals} | {max_active} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} |",
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
    assert!(rss_mib < 64.0, "operator peak RSS {rss_mib:.1} MiB");
    assert!(
        writes / n <= 3.0 * FEWEST_WRITES_PER_RUN,
        "{:.1} writes per run: {by_series:#?}",
        writes / n
    );
    Ok(())
}
