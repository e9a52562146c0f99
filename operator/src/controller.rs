//! Starting the operator: the `/metrics`, `/healthz`, `/readyz` server, leader election, and
//! the PipelineRun, Backfill and Pipeline controllers, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use tracing::{info, warn};

use crate::api::backfill::Backfill;
use crate::api::pipeline::Pipeline;
use crate::api::pipelinerun::PipelineRun;
use crate::metrics::Metrics;
use crate::{Error, Result, backfill, pipeline, pipelinerun, reconcile};

/// Options of [`run`].
pub struct Options {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// Reconciles in flight at once, per controller (PipelineRun, Backfill, Pipeline): a
    /// restart over thousands of objects is worked through this many at a time.
    pub concurrency: u16,
    /// The job image of runs that name none.
    pub default_image: String,
    /// Take part in leader election on this Lease, running the controllers only while
    /// holding it; `None`: run them at once (a single replica, or a test).
    pub leader_election: Option<crate::leader::Config>,
}

/// Runs the controllers until SIGTERM or Ctrl-C, or until this replica loses the leadership
/// (an error: the process exits, and its restart stands by for the Lease again).
pub async fn run(client: Client, mut opts: Options) -> Result<()> {
    let metrics = Metrics::new()?;
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(opts.http_addr)
        .await
        .map_err(|source| Error::Io {
            what: format!("cannot listen on {}", opts.http_addr),
            source,
        })?;
    info!("serving /metrics, /healthz, /readyz on {}", opts.http_addr);
    tokio::spawn(crate::metrics::serve(
        listener,
        metrics.clone(),
        ready.clone(),
    ));

    let runs: Api<PipelineRun> = scoped(&client, &opts.namespace);
    if let Err(e) = runs.list(&ListParams::default().limit(1)).await {
        return Err(Error::InvalidSpec {
            field: "CustomResourceDefinition",
            message: format!(
                "cannot list PipelineRuns ({e}); is the CRD installed? kubectl apply -f crds/pipelinerun.yaml"
            ),
        });
    }
    // Ready from here on, leader or not: a rollout must be able to replace the leader.
    ready.store(true, Ordering::Relaxed);
    let leader = match opts.leader_election.take() {
        None => None,
        Some(election) => {
            let candidate = crate::leader::Candidate::join(client.clone(), election).await?;
            tokio::select! {
                leader = candidate.lead() => Some(leader?),
                () = shutdown_signal() => {
                    info!("stopped while standing by");
                    return Ok(());
                }
            }
        }
    };
    metrics.leader.set(1);
    let controllers = controllers(client, &opts, metrics.clone());
    match leader {
        None => controllers.await,
        Some(mut leader) => {
            tokio::select! {
                () = controllers => leader.release().await,
                lost = leader.lost() => {
                    // Dropping the controllers stops every reconcile at its next await.
                    metrics.leader.set(0);
                    return Err(lost.into());
                }
            }
        }
    }
    info!("controller stopped");
    Ok(())
}

/// An Api of the watched namespace, or of all.
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The PipelineRun, Backfill and Pipeline controllers, until SIGTERM or Ctrl-C (each stops
/// after its reconciles in flight).
async fn controllers(client: Client, opts: &Options, metrics: Metrics) {
    let config = kube::runtime::controller::Config::default().concurrency(opts.concurrency);
    let mut tasks = Vec::new();

    let mut ctx = pipelinerun::Context::new(client.clone(), metrics.clone());
    ctx.default_image = opts.default_image.clone();
    info!(namespace = ?opts.namespace, "watching PipelineRuns and their Jobs");
    tasks.push(Box::pin(pipelinerun::run(
        scoped::<PipelineRun>(&client, &opts.namespace),
        scoped::<Job>(&client, &opts.namespace),
        scoped::<Pod>(&client, &opts.namespace),
        config.clone(),
        Arc::new(ctx),
    ))
        as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

    // The Backfill and Pipeline CRDs are optional: without one, its controller does not run.
    let backfills: Api<Backfill> = scoped(&client, &opts.namespace);
    if backfills
        .list(&ListParams::default().limit(1))
        .await
        .is_ok()
    {
        info!("watching Backfills");
        tasks.push(Box::pin(backfill::run(
            backfills,
            scoped(&client, &opts.namespace),
            config.clone(),
            Arc::new(reconcile::Context::new(client.clone(), metrics.clone())),
        )));
    } else {
        warn!("cannot list Backfills: is crds/backfill.yaml applied? Backfills are not watched");
    }
    let pipelines: Api<Pipeline> = scoped(&client, &opts.namespace);
    if pipelines
        .list(&ListParams::default().limit(1))
        .await
        .is_ok()
    {
        info!("watching Pipelines");
        tasks.push(Box::pin(pipeline::run(
            pipelines,
            scoped(&client, &opts.namespace),
            config,
            Arc::new(reconcile::Context::new(client, metrics)),
        )));
    } else {
        warn!("cannot list Pipelines: is crds/pipeline.yaml applied? Pipelines are not watched");
    }
    futures::future::join_all(tasks).await;
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
