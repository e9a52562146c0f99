//! What GitOps tools make of the operator's objects, computed by the code those tools run: the
//! objects of all three kinds, in flight, finished and invalid, are produced by the operator
//! against a real kube-apiserver (`scripts/kube.sh start`, a kubelet stand-in finishing Jobs
//! after a hold), dumped, and read by `scripts/kstatus.sh`'s tool: kstatus from
//! sigs.k8s.io/cli-utils (what Flux's health checks use) and the chart's Argo CD health check
//! run in gopher-lua, as Argo CD runs it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use streamflow_operator::api::backfill::Backfill;
use streamflow_operator::api::pipeline::Pipeline;
use streamflow_operator::api::pipelinerun::{Phase, PipelineRun};
use support::*;

/// How long the stand-in holds each Job: the in-flight objects are dumped within it.
const HOLD: Duration = Duration::from_secs(30);

/// The tool's path: `STREAMFLOW_KSTATUS_TOOL` (scripts/test builds it first), else built (or
/// found in the cache) by `scripts/kstatus.sh path`. No tool is a failure, never a skip.
fn tool() -> Result<String> {
    if let Ok(p) = std::env::var("STREAMFLOW_KSTATUS_TOOL") {
        return Ok(p);
    }
    let out = std::process::Command::new(repo_root().join("scripts/kstatus.sh"))
        .arg("path")
        .output()
        .context("cannot run scripts/kstatus.sh path")?;
    ensure!(
        out.status.success(),
        "scripts/kstatus.sh path failed (it needs Go and the Go module proxy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `kstatus-tool ARGS... FILE` on `file`: name → status, for every object.
fn judge(file: &std::path::Path, args: &[&str]) -> Result<BTreeMap<String, String>> {
    let out = std::process::Command::new(tool()?)
        .args(args)
        .arg(file)
        .output()
        .context("cannot run kstatus-tool")?;
    ensure!(
        out.status.success(),
        "kstatus-tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut res = BTreeMap::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let status = v["status"].as_str().unwrap_or_default().to_owned();
        res.insert(name, status);
    }
    Ok(res)
}

/// Every object of kind `K` in `ns`, as the API serves it, with apiVersion and kind (a list's
/// items may omit them; the tools need them, as they have them from a watch).
async fn dump<K>(client: &Client, ns: &str) -> Result<Vec<serde_json::Value>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let items = Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    items
        .iter()
        .map(|o| {
            let mut v = serde_json::to_value(o)?;
            v["apiVersion"] = json!(K::api_version(&()));
            v["kind"] = json!(K::kind(&()));
            Ok(v)
        })
        .collect()
}

async fn dump_all(client: &Client, ns: &str) -> Result<Vec<serde_json::Value>> {
    let mut all = dump::<PipelineRun>(client, ns).await?;
    all.extend(dump::<Backfill>(client, ns).await?);
    all.extend(dump::<Pipeline>(client, ns).await?);
    Ok(all)
}

fn template() -> serde_json::Value {
    json!({
        "stages": ["validate"],
        "kafka": {"bootstrap": "127.0.0.1:9094"},
        "storage": {"landing": "s3://landing/unused", "gold": "s3://gold/unused"},
        "retry": {"maxAttempts": 1},
    })
}

fn run_body(name: &str, start: &str, end: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"interval": {"start": start, "end": end}});
    if let (Some(s), Some(t), Some(e)) = (
        spec.as_object_mut(),
        template().as_object(),
        extra.as_object(),
    ) {
        s.extend(t.clone());
        s.extend(e.clone());
    }
    json!({"apiVersion": "streamflow.io/v1alpha1", "kind": "PipelineRun",
           "metadata": {"name": name}, "spec": spec})
}

fn backfill_body(name: &str, from: &str, to: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"template": template(), "from": from, "to": to, "step": "1h"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "streamflow.io/v1alpha1", "kind": "Backfill",
           "metadata": {"name": name}, "spec": spec})
}

fn pipeline_body(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"template": template(), "schedule": "*/5 * * * * *"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "streamflow.io/v1alpha1", "kind": "Pipeline",
           "metadata": {"name": name}, "spec": spec})
}

async fn create<K>(client: &Client, ns: &str, body: serde_json::Value) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(body)?;
    Ok(Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await?)
}

/// The value of condition `type_` of a dumped object, if any.
fn cond(o: &serde_json::Value, type_: &str) -> Option<String> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

fn named<'a>(objects: &'a [serde_json::Value], name: &str) -> Result<&'a serde_json::Value> {
    objects
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .ok_or_else(|| anyhow!("no object {name} in the dump"))
}

/// Dumps the namespace until `ready` holds on the dump (the operator got there), then returns
/// that dump.
async fn dump_when(
    client: &Client,
    ns: &str,
    what: &str,
    ready: impl Fn(&[serde_json::Value]) -> bool,
) -> Result<Vec<serde_json::Value>> {
    wait_for(what, TIMEOUT, || async {
        let all = dump_all(client, ns).await?;
        Ok(ready(&all).then_some(all))
    })
    .await
}

/// Asserts `want` (name → (kstatus, Argo CD health)) on `objects`, all failures at once.
/// The dump is kept (named by `label`) in cargo's temp dir for a look after a failure.
fn check(label: &str, objects: &[serde_json::Value], want: &[(&str, &str, &str)]) -> Result<()> {
    let file =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gitops-{label}.json"));
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": objects}))?,
    )?;
    let kstatus = judge(&file, &["status"])?;
    let script = repo_root().join("charts/streamflow-operator/files/argocd/health.lua");
    let script = script.to_string_lossy().into_owned();
    let argo = judge(&file, &["health", &script])?;
    eprintln!("{}: kstatus {kstatus:?}, Argo CD {argo:?}", file.display());
    let mut wrong = Vec::new();
    for (name, k, a) in want {
        let got = (
            kstatus.get(*name).map(String::as_str),
            argo.get(*name).map(String::as_str),
        );
        if got != (Some(*k), Some(*a)) {
            wrong.push(format!(
                "{name}: kstatus {:?}, Argo CD {:?}; want {k}, {a}; status: {}",
                got.0,
                got.1,
                named(objects, name).map(|o| o["status"].to_string())?
            ));
        }
    }
    if !wrong.is_empty() {
        bail!("{}", wrong.join("\n"));
    }
    Ok(())
}

/// In flight, finished, failed, invalid and suspended objects of all three kinds read as a
/// Flux user (kstatus) and an Argo CD user (the chart's health check) expect; a finished run
/// whose spec changes is InProgress until the operator observes it, then Current again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_tools_read_every_state_of_every_kind_right() -> Result<()> {
    // Built before the operator's objects exist: a cold build takes a while.
    tool()?;
    let client = client().await?;
    install_crd(&client).await?;
    let ns = namespace(&client, "sf-gitops").await?;
    let _op = Operator::start(&ns).await?;
    let kubelet = InstantKubelet::start(client.clone(), &ns, HOLD);
    kubelet.fail(&[
        "2026-01-02T00:00:00Z/2026-01-02T01:00:00Z".to_owned(),
        "2026-03-01T00:00:00Z/2026-03-01T01:00:00Z".to_owned(),
    ]);
    let c = &client;
    let ns = ns.as_str();
    let (h0, h1, h2) = ("T00:00:00Z", "T01:00:00Z", "T02:00:00Z");
    let d = |day: &str, h: &str| format!("2026-{day}{h}");
    create::<PipelineRun>(
        c,
        ns,
        run_body("run-ok", &d("01-01", h0), &d("01-01", h1), json!({})),
    )
    .await?;
    create::<PipelineRun>(
        c,
        ns,
        run_body("run-failed", &d("01-02", h0), &d("01-02", h1), json!({})),
    )
    .await?;
    // Valid to the API server (its pattern), not to the operator (more hours than it counts).
    create::<PipelineRun>(
        c,
        ns,
        run_body(
            "run-invalid",
            &d("01-03", h0),
            &d("01-03", h1),
            json!({"runDeadline": "99999999999999999999h"}),
        ),
    )
    .await?;
    // Two intervals, one at a time: in flight for two holds.
    create::<Backfill>(
        c,
        ns,
        backfill_body("bf-ok", &d("02-01", h0), &d("02-01", h2), json!({})),
    )
    .await?;
    create::<Backfill>(
        c,
        ns,
        backfill_body("bf-failed", &d("03-01", h0), &d("03-01", h1), json!({})),
    )
    .await?;
    // 90 minutes in 1h steps: ragged.
    create::<Backfill>(
        c,
        ns,
        backfill_body(
            "bf-invalid",
            &d("04-01", h0),
            "2026-04-01T01:30:00Z",
            json!({}),
        ),
    )
    .await?;
    create::<Backfill>(
        c,
        ns,
        backfill_body(
            "bf-suspended",
            &d("05-01", h0),
            &d("05-01", h1),
            json!({"suspend": true}),
        ),
    )
    .await?;
    create::<Pipeline>(c, ns, pipeline_body("pl", json!({}))).await?;
    create::<Pipeline>(
        c,
        ns,
        pipeline_body("pl-invalid", json!({"timeZone": "Mars/Olympus"})),
    )
    .await?;
    create::<Pipeline>(
        c,
        ns,
        pipeline_body("pl-suspended", json!({"suspend": true})),
    )
    .await?;

    // Every object decided on, the held Jobs not finished.
    let decided = |o: &serde_json::Value| cond(o, "Reconciling").is_some();
    let fixed = [
        "run-invalid",
        "bf-invalid",
        "bf-suspended",
        "pl",
        "pl-invalid",
        "pl-suspended",
    ];
    let in_flight = dump_when(c, ns, "every object decided, runs in flight", |all| {
        let running = |n: &str| {
            named(all, n)
                .is_ok_and(|o| o["status"]["phase"] == Phase::Running.as_str() && decided(o))
        };
        let progressing = |n: &str| named(all, n).is_ok_and(|o| o["status"]["active"] == 1);
        // The Backfills' runs too: a run its Backfill has just created has no status yet.
        let children_decided = all
            .iter()
            .filter(|o| {
                o["kind"] == "PipelineRun"
                    && o["metadata"]["labels"]
                        .to_string()
                        .contains("streamflow.io/backfill")
            })
            .all(&decided);
        running("run-ok")
            && running("run-failed")
            && progressing("bf-ok")
            && progressing("bf-failed")
            && children_decided
            && fixed.iter().all(|n| named(all, n).is_ok_and(decided))
    })
    .await?;
    check(
        "in-flight",
        &in_flight,
        &[
            ("run-ok", "InProgress", "Progressing"),
            ("run-failed", "InProgress", "Progressing"),
            ("run-invalid", "Failed", "Degraded"),
            ("bf-ok", "InProgress", "Progressing"),
            ("bf-failed", "InProgress", "Progressing"),
            ("bf-invalid", "Failed", "Degraded"),
            ("bf-suspended", "Current", "Suspended"),
            ("pl", "Current", "Healthy"),
            ("pl-invalid", "Failed", "Degraded"),
            ("pl-suspended", "Current", "Suspended"),
        ],
    )?;
    // The Backfills' runs are PipelineRuns too.
    let bf_run = in_flight
        .iter()
        .find(|o| {
            o["kind"] == "PipelineRun" && o["metadata"]["labels"].to_string().contains("bf-ok")
        })
        .context("a run of bf-ok")?;
    let bf_run_name = bf_run["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        cond(bf_run, "Succeeded").as_deref() == Some("Unknown"),
        "a running run's Succeeded is Unknown: {}",
        bf_run["status"]
    );

    let finished = dump_when(c, ns, "runs and Backfills finished", |all| {
        let phase =
            |n: &str, p: Phase| named(all, n).is_ok_and(|o| o["status"]["phase"] == p.as_str());
        let complete =
            |n: &str| named(all, n).is_ok_and(|o| cond(o, "Complete").as_deref() == Some("True"));
        phase("run-ok", Phase::Succeeded)
            && phase("run-failed", Phase::Failed)
            && complete("bf-ok")
            && complete("bf-failed")
    })
    .await?;
    check(
        "finished",
        &finished,
        &[
            ("run-ok", "Current", "Healthy"),
            ("run-failed", "Failed", "Degraded"),
            ("run-invalid", "Failed", "Degraded"),
            (&bf_run_name, "Current", "Healthy"),
            ("bf-ok", "Current", "Healthy"),
            ("bf-failed", "Failed", "Degraded"),
            ("bf-invalid", "Failed", "Degraded"),
            ("bf-suspended", "Current", "Suspended"),
            ("pl", "Current", "Healthy"),
            ("pl-invalid", "Failed", "Degraded"),
            ("pl-suspended", "Current", "Suspended"),
        ],
    )?;

    // A finished Backfill's spec changes (generation 2): not Current until the operator has
    // seen it, then Current again (observedGeneration follows finished objects too). A run's
    // spec cannot change at all (admission refuses it).
    Api::<Backfill>::namespaced(c.clone(), ns)
        .patch(
            "bf-ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxActiveRuns": 3}})),
        )
        .await?;
    let seen = dump_when(c, ns, "bf-ok's generation 2 observed", |all| {
        named(all, "bf-ok").is_ok_and(|o| o["status"]["observedGeneration"] == 2)
    })
    .await?;
    check("generation-2", &seen, &[("bf-ok", "Current", "Healthy")])?;
    Ok(())
}
