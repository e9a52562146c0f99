//! The Pipeline controller. Reconcile = list the runs the Pipeline scheduled (from the API,
//! every time) → decide ([`decide::decide`], pure: the due ticks, catch-up, the concurrency
//! policy, the history limits) → delete and create runs (as a Backfill does: a name held by
//! another owner is a `RunNameConflict`) → write the status (only when it changed) → Events
//! and the freshness gauges.

mod apply;
pub mod decide;

use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;

use crate::api::labels::{LABEL_BACKFILL, LABEL_MANAGED_BY, LABEL_PIPELINE, MANAGER};
use crate::api::pipeline::Pipeline;
use crate::api::pipelinerun::PipelineRun;
use crate::parent::{FINALIZER, runs};
use crate::reconcile::{Context, namespace_of, with_finalizer};
use crate::{Error, Result};

/// Runs the Pipeline controller over `pipelines` (and their `runs`) until SIGTERM or Ctrl-C.
pub async fn run(
    pipelines: Api<Pipeline>,
    runs: Api<PipelineRun>,
    config: Config,
    ctx: Arc<Context>,
) {
    let ours = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    Controller::new(pipelines, watcher::Config::default())
        .with_config(config)
        .owns(runs, ours)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(pl: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .parent_reconciles
        .with_label_values(&["Pipeline"])
        .inc();
    let ns = namespace_of(pl.as_ref())?;
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let result = with_finalizer(&api, FINALIZER, pl.clone(), |event| async {
        use kube::runtime::finalizer::Event;
        match event {
            Event::Apply(pl) => apply::apply_pipeline(&pl, &ctx, &ns).await,
            Event::Cleanup(pl) => {
                ctx.metrics.pipeline_freshness(&ns, &pl.name_any(), None);
                let selector = pipeline_selector(&pl.name_any());
                let policy = pl.spec.run_deletion_policy;
                runs::cleanup(pl.as_ref(), &selector, policy, &ctx, &ns).await
            }
        }
    })
    .await;
    if result.is_ok() {
        ctx.succeeded(pl.as_ref());
    }
    result
}

fn error_policy(pl: Arc<Pipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(pl.as_ref(), error)
}

/// The runs a Pipeline scheduled itself (not those of Backfills of it).
fn pipeline_selector(pipeline: &str) -> String {
    format!("{LABEL_PIPELINE}={pipeline},!{LABEL_BACKFILL}")
}
