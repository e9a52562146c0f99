//! The Backfill controller. Reconcile = list the Backfill's PipelineRuns (from the API, every
//! time: concurrency limits and progress come from what exists, not from memory) → decide
//! ([`decide::decide`], pure) → create runs (deterministic names: AlreadyExists means an
//! earlier reconcile made it, when the run there is this Backfill's; a run of that name held
//! by another owner is a `RunNameConflict` in status and a Warning Event, and its interval is
//! not counted as started) and prune runs → write the status (only when it changed) → Events.

mod apply;
pub mod decide;

use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;

use crate::api::backfill::Backfill;
use crate::api::labels::{LABEL_BACKFILL, LABEL_MANAGED_BY, LABEL_PIPELINE, MANAGER};
use crate::api::pipelinerun::PipelineRun;
use crate::parent::{FINALIZER, runs};
use crate::reconcile::{Context, namespace_of, with_finalizer};
use crate::{Error, Result};

/// Runs the Backfill controller over `backfills` (and their `runs`) until SIGTERM or Ctrl-C.
pub async fn run(
    backfills: Api<Backfill>,
    runs: Api<PipelineRun>,
    config: Config,
    ctx: Arc<Context>,
) {
    let controller = Controller::new(backfills, watcher::Config::default());
    let store = controller.store();
    let ours = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    // Runs of Pipelines: one that ends wakes the Backfills waiting for it.
    let of_pipelines = watcher::Config::default().labels(LABEL_PIPELINE);
    controller
        .with_config(config)
        .owns(runs.clone(), ours)
        .watches(runs, of_pipelines, move |run| {
            decide::waiting_on(&run, store.state().iter().map(|b| b.as_ref()))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(bf: Arc<Backfill>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .parent_reconciles
        .with_label_values(&["Backfill"])
        .inc();
    let ns = namespace_of(bf.as_ref())?;
    let api: Api<Backfill> = Api::namespaced(ctx.client.clone(), &ns);
    let result = with_finalizer(&api, FINALIZER, bf.clone(), |event| async {
        use kube::runtime::finalizer::Event;
        match event {
            Event::Apply(bf) => apply::apply_backfill(&bf, &ctx, &ns).await,
            Event::Cleanup(bf) => {
                apply::forget_backfill(&ctx, &ns, &bf.name_any());
                let selector = format!("{LABEL_BACKFILL}={}", bf.name_any());
                let policy = bf.spec.run_deletion_policy;
                runs::cleanup(bf.as_ref(), &selector, policy, &ctx, &ns).await
            }
        }
    })
    .await;
    if result.is_ok() {
        ctx.succeeded(bf.as_ref());
    }
    result
}

fn error_policy(bf: Arc<Backfill>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(bf.as_ref(), error)
}
