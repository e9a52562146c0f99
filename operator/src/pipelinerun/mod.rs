//! The PipelineRun controller: reconcile = dereference (the run's Jobs and their Pods) →
//! decide ([`decide::decide`], pure) → apply (create the next Job if absent) → write the
//! status (only when it changed) → publish Events and metrics for the transitions
//! ([`apply`]).
//!
//! - [`jobs`]: the Job of a stage attempt, and reading Jobs back (pure), with the pod of a
//!   stage from the run's `podTemplate` and `stageOverrides` ([`pod_overrides`]) and the
//!   files of its Kafka credentials ([`kafka_secrets`]).

mod apply;
pub mod decide;
pub mod jobs;
pub mod kafka_secrets;
pub mod pod_overrides;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::info;

use crate::api::labels::{LABEL_MANAGED_BY, LABEL_RUN, MANAGER};
use crate::api::pipelinerun::{DEFAULT_IMAGE, Phase, PipelineRun};
use crate::metrics::Metrics;
use crate::reconcile::{self, key, with_finalizer};
use crate::{Error, Result};
use decide::Transition;

/// Removed once the run's Jobs are deleted, so deleting a run deletes its Jobs even where no
/// garbage collector follows owner references.
pub const FINALIZER: &str = "streamflow.io/jobs";

pub struct Context {
    pub shared: reconcile::Context,
    /// The image of runs whose spec names none (`--default-image`).
    pub default_image: String,
    phases: Mutex<HashMap<String, Phase>>,
    /// One per (namespace, consumer group): held while checking that no other run drains the
    /// group and creating the ingest Job, so two reconciles cannot both start a drain.
    consumer_groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        Self {
            shared: reconcile::Context::new(client, metrics),
            default_image: DEFAULT_IMAGE.to_owned(),
            phases: Mutex::default(),
            consumer_groups: Mutex::default(),
        }
    }

    /// Waits for this process's turn to start a drain of `group` in `ns`.
    async fn consumer_group_turn(&self, ns: &str, group: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = match self.consumer_groups.lock() {
            Ok(mut locks) => locks.entry(format!("{ns}/{group}")).or_default().clone(),
            // A panic elsewhere poisoned the map: serialize on a fresh lock rather than fail.
            Err(_) => Arc::default(),
        };
        lock.lock_owned().await
    }

    /// Records the run's phase (`None`: the run is gone) and sets the runs-by-phase gauges.
    fn record_phase(&self, run: &PipelineRun, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(key(run), p),
            None => phases.remove(&key(run)),
        };
        for p in [
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            let n = phases.values().filter(|v| **v == p).count();
            self.shared
                .metrics
                .runs
                .with_label_values(&[p.as_str()])
                .set(n as i64);
        }
    }

    /// The transition's Event, with the attempt's Job as its related object.
    async fn publish(&self, run: &PipelineRun, t: &Transition) {
        let mut event = reconcile::event(t.reason, &t.message, t.warning);
        event.secondary = t.job.as_ref().map(|job| ObjectReference {
            api_version: Some("batch/v1".to_owned()),
            kind: Some("Job".to_owned()),
            name: Some(job.clone()),
            namespace: run.namespace(),
            ..Default::default()
        });
        self.shared.publish(run, &event).await;
    }
}

/// Runs the PipelineRun controller over `runs` (and the Jobs and Pods of `jobs`, `pods`) until
/// SIGTERM or Ctrl-C.
pub async fn run(
    runs: Api<PipelineRun>,
    jobs: Api<Job>,
    pods: Api<Pod>,
    config: Config,
    ctx: Arc<Context>,
) {
    let ours = || watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    Controller::new(runs, watcher::Config::default())
        .with_config(config)
        .owns(jobs, ours())
        // A Pod that cannot start changes nothing in its Job: its own changes wake the run.
        .watches(pods, ours(), |pod| {
            let run = pod.labels().get(LABEL_RUN).cloned();
            run.map(|name| ObjectRef::new(&name).within(&pod.namespace().unwrap_or_default()))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(run = %obj.name, "reconciled"),
                Err(e) => tracing::debug!("reconcile failed: {e}"),
            }
        })
        .await;
    info!("PipelineRun controller stopped");
}

pub async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.shared.metrics.reconciles.inc();
    let ns = reconcile::namespace_of(run.as_ref())?;
    let api: Api<PipelineRun> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let result = with_finalizer(&api, FINALIZER, run.clone(), |event| async {
        use kube::runtime::finalizer::Event;
        match event {
            Event::Apply(run) => apply::apply(&run, &ctx).await,
            Event::Cleanup(run) => apply::cleanup(&run, &ctx).await,
        }
    })
    .await;
    ctx.shared
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.shared.succeeded(run.as_ref());
    }
    result
}

/// Retries a failed reconcile with a per-run exponential backoff.
fn error_policy(run: Arc<PipelineRun>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.shared.retry_after(run.as_ref(), error)
}
