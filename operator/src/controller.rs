//! The PipelineRun controller: reconcile = dereference (the run's Jobs and their Pods) →
//! decide (`status::decide`, pure) → apply (create the next Job if absent) → write the status
//! (only when it changed) → publish Events and metrics for the transitions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::condition::set_condition;
use crate::api::pipelinerun::{
    COND_RUNNING, COND_SUCCEEDED, DEFAULT_IMAGE, Phase, PipelineRun, PipelineRunStatus, StagePhase,
    StageSummary,
};
use crate::api::stage::Stage;
use crate::jobs::{self, LABEL_MANAGED_BY, MANAGER, ObservedJob};
use crate::metrics::{Metrics, RunOwner};
use crate::status::{self, Transition};
use crate::{Error, Result};

/// Removed once the run's Jobs are deleted, so deleting a run deletes its Jobs even where no
/// garbage collector follows owner references.
pub const FINALIZER: &str = "streamflow.io/jobs";
/// A run waiting on nothing is looked at again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    /// Who publishes the run's Events (see [`Context::publish`] for why no Recorder is kept).
    reporter: Reporter,
    pub metrics: Metrics,
    /// The image of runs whose spec names none (`--default-image`).
    pub default_image: String,
    phases: Mutex<HashMap<String, Phase>>,
    failures: Mutex<HashMap<String, u32>>,
    /// One per (namespace, consumer group): held while checking that no other run drains the
    /// group and creating the ingest Job, so two reconciles cannot both start a drain.
    consumer_groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        Self {
            client,
            reporter: Reporter::from(MANAGER),
            metrics,
            default_image: DEFAULT_IMAGE.to_owned(),
            phases: Mutex::default(),
            failures: Mutex::default(),
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

    fn key(run: &PipelineRun) -> String {
        format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any())
    }

    fn record_phase(&self, run: &PipelineRun, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(Self::key(run), p),
            None => phases.remove(&Self::key(run)),
        };
        for p in [
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            let n = phases.values().filter(|v| **v == p).count();
            self.metrics
                .runs
                .with_label_values(&[p.as_str()])
                .set(n as i64);
        }
    }

    async fn publish(&self, run: &PipelineRun, t: &Transition) {
        let mut note = t.message.clone();
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_: if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            // The attempt's Job, shown with the Event.
            secondary: t.job.as_ref().map(|job| ObjectReference {
                api_version: Some("batch/v1".to_owned()),
                kind: Some("Job".to_owned()),
                name: Some(job.clone()),
                namespace: run.namespace(),
                ..Default::default()
            }),
        };
        // A Recorder for this Event alone: kube's Recorder keeps every Event it published for
        // 6 minutes to count repeats as a series, and one for every run held the last 6
        // minutes' Events of all runs (~10,000 at the ~28 a second of a large Backfill, most
        // of the operator's heap: docs/benchmarks.md). A run's transitions are published once
        // each (its status is written conditionally first): there is no repeat to count.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, &run.object_ref(&())).await {
            warn!(run = %Self::key(run), reason = t.reason, "cannot publish event: {e}");
        }
    }
}

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
    let (runs, jobs, pods): (Api<PipelineRun>, Api<Job>, Api<Pod>) = (
        scoped(&client, &opts.namespace),
        scoped(&client, &opts.namespace),
        scoped(&client, &opts.namespace),
    );
    let config = kube::runtime::controller::Config::default().concurrency(opts.concurrency);
    let parents = crate::parents::run(
        client.clone(),
        opts.namespace.clone(),
        metrics.clone(),
        config.clone(),
    );
    let mut ctx = Context::new(client, metrics);
    ctx.default_image = opts.default_image.clone();
    let ctx = Arc::new(ctx);
    info!(namespace = ?opts.namespace, "watching PipelineRuns and their Jobs");
    let ours = || watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let runs = Controller::new(runs, watcher::Config::default())
        .with_config(config)
        .owns(jobs, ours())
        // A Pod that cannot start changes nothing in its Job: its own changes wake the run.
        .watches(pods, ours(), |pod| {
            let run = pod.labels().get(jobs::LABEL_RUN).cloned();
            run.map(|name| ObjectRef::new(&name).within(&pod.namespace().unwrap_or_default()))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(run = %obj.name, "reconciled"),
                Err(e) => tracing::debug!("reconcile failed: {e}"),
            }
        });
    futures::join!(runs, parents);
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

pub async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let ns = run.namespace().ok_or(Error::MissingField {
        object: run.name_any(),
        field: "metadata.namespace",
    })?;
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let result = crate::parents::finalizer_result(
        finalizer(&api, FINALIZER, run.clone(), |event| async {
            match event {
                FinalizerEvent::Apply(run) => apply(&run, &ctx).await,
                FinalizerEvent::Cleanup(run) => cleanup(&run, &ctx).await,
            }
        })
        .await,
    );
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok()
        && let Ok(mut failures) = ctx.failures.lock()
    {
        failures.remove(&Context::key(&run));
    }
    result
}

/// Retries a failed reconcile with a per-run exponential backoff (5 s doubling to 5 min).
pub fn error_policy(run: Arc<PipelineRun>, error: &Error, ctx: Arc<Context>) -> Action {
    let kind = match error {
        Error::Finalizer(e) => match &**e {
            kube::runtime::finalizer::Error::ApplyFailed(inner)
            | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
            _ => error.metric_label(),
        },
        other => other.metric_label(),
    };
    ctx.metrics.errors.with_label_values(&[kind]).inc();
    let n = match ctx.failures.lock() {
        Ok(mut failures) => {
            let n = failures.entry(Context::key(&run)).or_insert(0);
            *n += 1;
            *n
        }
        Err(_) => 1,
    };
    let wait = Duration::from_secs(5 * 2u64.saturating_pow(n.min(6) - 1)).min(RESYNC);
    warn!(run = %Context::key(&run), kind, "reconcile failed, retrying in {wait:?}: {error}");
    Action::requeue(wait)
}

/// The run's Jobs (owned by this very object, not a deleted namesake) and what they and their
/// Pods say: a finished Pod's termination message and how its container ended, a waiting
/// Pod's reason for not starting.
async fn observe(run: &PipelineRun, ctx: &Context, ns: &str) -> Result<Vec<ObservedJob>> {
    // A finished run decides nothing more: nothing to read (and no burst of lists of every
    // finished run's Jobs and Pods when the operator starts).
    if run.status.as_ref().is_some_and(|s| s.phase.is_finished()) {
        return Ok(Vec::new());
    }
    let lp = ListParams::default().labels(&jobs::run_selector(&run.name_any()));
    let uid = run.uid();
    let owned: Vec<Job> = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    let pods = if !owned.is_empty() {
        Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .list(&lp)
            .await?
            .items
    } else {
        Vec::new()
    };
    Ok(owned
        .iter()
        .filter_map(|j| jobs::observe(j, &pods))
        .collect())
}

async fn apply(run: &PipelineRun, ctx: &Context) -> Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let current = run.status.clone().unwrap_or_default();
    let result = step(run, ctx, &ns, &name, &current).await;
    if let Err(e) = &result
        && !matches!(e, Error::Stale { .. })
    {
        // Reported in status (best effort) and retried by error_policy.
        let mut st = current.clone();
        set_condition(
            &mut st.conditions,
            "ReconcileError",
            true,
            e.metric_label(),
            e.to_string(),
            run.metadata.generation,
            Utc::now(),
        );
        if st != current {
            let _ = write_status(ctx, run, &st).await;
        }
    }
    result
}

async fn step(
    run: &PipelineRun,
    ctx: &Context,
    ns: &str,
    name: &str,
    current: &PipelineRunStatus,
) -> Result<Action> {
    let (owner_kind, owner_name) = owner_of(run);
    let owner = RunOwner {
        namespace: ns,
        kind: owner_kind,
        name: owner_name,
    };
    if !current.phase.is_finished() {
        ctx.metrics.run_seen(owner);
    }
    let mut observed = observe(run, ctx, ns).await?;
    let now = Utc::now();
    let created_at = run
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(jobs::to_chrono);
    let decide = |st: &PipelineRunStatus, observed: &[ObservedJob]| {
        status::decide(
            name,
            run.metadata.generation,
            created_at,
            &run.spec,
            st,
            observed,
            now,
        )
    };
    let mut decision = match decide(current, &observed) {
        Ok(d) => d,
        Err(e @ Error::InvalidSpec { .. }) => {
            // Not retried: the spec must change first.
            let failed = PipelineRunStatus {
                phase: Phase::Failed,
                ..current.clone()
            };
            let t = status::transition("InvalidSpec", None, e.to_string());
            let st = with_condition(run, failed, COND_SUCCEEDED, &t, now);
            if st != *current {
                write_status(ctx, run, &st).await?;
                ctx.metrics.run_finished(owner, false);
                ctx.publish(run, &t).await;
            }
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let mut created = false;
    if let status::Action::CreateJob { stage, attempt } = decision.action {
        // One drain per consumer group at a time, whatever made the runs (docs/ingest.md):
        // two drains of a group would race on its committed offsets.
        let _turn = match (stage, &run.spec.template.kafka.group) {
            (Stage::Ingest, Some(group)) => {
                let turn = ctx.consumer_group_turn(ns, group).await;
                if let Some(holder) = draining_run(ctx, ns, group, name).await? {
                    return wait_for_consumer_group(run, ctx, current, group, &holder).await;
                }
                Some(turn)
            }
            _ => None,
        };
        match create_job(run, ctx, ns, stage, attempt).await? {
            Created::Yes => created = true,
            Created::Refused(message) => {
                // The API server will refuse this Job whatever the retry: its refusal is the
                // attempt's outcome, decided like any failed Job's (permanent: the run fails
                // with the server's message instead of this reconcile failing for ever).
                observed.push(jobs::refused(name, stage, attempt, message));
                let mut again = decide(&decision.status, &observed)?;
                let mut transitions = std::mem::take(&mut decision.transitions);
                transitions.append(&mut again.transitions);
                again.transitions = transitions;
                decision = again;
            }
        }
    }
    if let Some(st) = decision
        .status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "ReconcileError")
    {
        st.status = "False".to_owned();
        st.reason = "Reconciled".to_owned();
        st.message = String::new();
    }

    let action = match decision.action {
        // Created above; a refused Job's attempt is permanent and never asks for another,
        // and should it, the next reconcile creates it.
        status::Action::CreateJob { .. } if created => Action::requeue(RESYNC),
        status::Action::CreateJob { .. } => Action::requeue(Duration::from_secs(1)),
        status::Action::WaitFor(d) => Action::requeue(d),
        status::Action::Wait => Action::requeue(RESYNC),
        status::Action::Done => Action::await_change(),
    };
    // Written right after the Job is created: a restarted operator sees the attempt.
    if decision.status != *current {
        write_status(ctx, run, &decision.status).await?;
    }
    // Only now that the status records their attempts as failed: a Job deleted earlier would
    // look like an attempt to create again.
    for job in &decision.delete_jobs {
        match Api::<Job>::namespaced(ctx.client.clone(), ns)
            .delete(job, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                info!(job = %job, "deleted the Job of a failed attempt whose Pod cannot start")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for t in &decision.transitions {
        info!(run = %format!("{ns}/{name}"), reason = t.reason, "{}", t.message);
        match t.reason {
            "StageSucceeded" | "StageFailed" => {
                if let Some(stage) = t.stage {
                    ctx.metrics.stage_finished(
                        stage,
                        t.reason == "StageSucceeded",
                        t.duration,
                        t.summary.as_ref(),
                    );
                }
            }
            "DeadlineMissed" => ctx.metrics.deadline_missed(owner),
            "Succeeded" | "Failed" => ctx.metrics.run_finished(owner, t.reason == "Succeeded"),
            _ => {}
        }
        ctx.publish(run, t).await;
    }
    ctx.record_phase(run, Some(decision.status.phase));
    ctx.metrics
        .running_stage(ns, name, running_attempt(&decision.status));
    if let (Some(group), Some(summary)) = (
        &run.spec.template.kafka.group,
        finished_ingest_summary(&decision.status),
    ) {
        ctx.metrics
            .ingest_lag(ns, group, run.spec.interval.end, &summary.lag);
    }
    Ok(action)
}

/// How often a run waiting for its consumer group looks again (the other run's Job finishing
/// wakes only that run).
const GROUP_WAIT: Duration = Duration::from_secs(5);

/// Another run whose ingest Job drains `group` and has not finished, if any.
async fn draining_run(ctx: &Context, ns: &str, group: &str, run: &str) -> Result<Option<String>> {
    let lp = ListParams::default().labels(&format!(
        "{}={},{}={}",
        jobs::LABEL_CONSUMER_GROUP,
        jobs::consumer_group_label(group),
        jobs::LABEL_STAGE,
        Stage::Ingest
    ));
    Ok(Api::<Job>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .iter()
        .filter(|j| jobs::is_unfinished(j))
        .filter_map(|j| j.labels().get(jobs::LABEL_RUN).cloned())
        .find(|holder| holder != run))
}

/// The run's ingest waits while `holder` drains the same consumer group: said in its `Running`
/// condition (and an Event, once); nothing else of the status changes, no attempt is spent.
async fn wait_for_consumer_group(
    run: &PipelineRun,
    ctx: &Context,
    current: &PipelineRunStatus,
    group: &str,
    holder: &str,
) -> Result<Action> {
    let message = format!(
        "ingest waits for consumer group {group:?}: run {holder} is draining it (one drain per group at a time)"
    );
    let t = status::transition("WaitingForConsumerGroup", Some(Stage::Ingest), message);
    // Still in progress, for GitOps tools too (and a run waiting before its first stage
    // has no other status that says so).
    let st = with_condition(run, current.clone(), COND_RUNNING, &t, Utc::now());
    if st != *current {
        write_status(ctx, run, &st).await?;
        ctx.publish(run, &t).await;
    }
    Ok(Action::requeue(GROUP_WAIT))
}

/// `st` with condition `type_` False for the transition's reason and message, and the
/// conditions GitOps tools read brought up to date.
fn with_condition(
    run: &PipelineRun,
    mut st: PipelineRunStatus,
    type_: &str,
    t: &Transition,
    now: chrono::DateTime<Utc>,
) -> PipelineRunStatus {
    set_condition(
        &mut st.conditions,
        type_,
        false,
        t.reason,
        t.message.clone(),
        run.metadata.generation,
        now,
    );
    crate::kstatus::run(&mut st, run.metadata.generation, now);
    st
}

/// The kind and name of the Pipeline or Backfill that made the run (its controller), empty
/// for a run made by hand.
fn owner_of(run: &PipelineRun) -> (&str, &str) {
    run.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map_or(("", ""), |o| (o.kind.as_str(), o.name.as_str()))
}

/// The stage whose attempt is running and when it started (not while backing off).
fn running_attempt(st: &PipelineRunStatus) -> Option<(Stage, chrono::DateTime<Utc>)> {
    st.stages
        .iter()
        .find(|s| s.phase == StagePhase::Running)
        .and_then(|s| Some((s.stage, s.start_time?)))
}

/// The summary of a run's ingest once it has one (its drain ended).
fn finished_ingest_summary(st: &PipelineRunStatus) -> Option<&StageSummary> {
    st.stages
        .iter()
        .find(|s| s.stage == Stage::Ingest)
        .and_then(|s| s.summary.as_ref())
}

/// What became of a Job to create.
enum Created {
    /// Created now, or by an earlier reconcile.
    Yes,
    /// Refused by the API server for its content: its message.
    Refused(String),
}

async fn create_job(
    run: &PipelineRun,
    ctx: &Context,
    ns: &str,
    stage: Stage,
    attempt: u32,
) -> Result<Created> {
    // The image is not a schema default (that would pin stored runs to one tag across
    // upgrades): a run naming none gets the operator's when its Job is built.
    let job = if run.spec.template.image.is_empty() {
        let mut run = run.clone();
        run.spec.template.image = ctx.default_image.clone();
        jobs::build_job(&run, stage, attempt)?
    } else {
        jobs::build_job(run, stage, attempt)?
    };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &job).await {
        Ok(_) => {
            ctx.metrics
                .jobs_created
                .with_label_values(&[stage.as_str()])
                .inc();
            ctx.metrics
                .stage_attempts
                .with_label_values(&[stage.as_str()])
                .inc();
            info!(job = %job.name_any(), "created Job");
            Ok(Created::Yes)
        }
        // Deterministic names: it exists, so an earlier reconcile created it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Created::Yes),
        // Invalid (422: a bad imagePullPolicy, requests above limits) or not even decodable
        // (400: a memory limit that is no quantity): the same spec gives the same Job. Other
        // refusals (403 from a quota or a webhook, 5xx) may pass, and go to error_policy.
        Err(kube::Error::Api(s)) if s.code == 400 || s.code == 422 => {
            warn!(job = %job.name_any(), "the API server refused the Job: {}", s.message);
            Ok(Created::Refused(s.message))
        }
        Err(e) => Err(e.into()),
    }
}

async fn write_status(ctx: &Context, run: &PipelineRun, st: &PipelineRunStatus) -> Result<()> {
    crate::parents::apply_status(&ctx.client, run, st).await
}

/// On deletion: delete the run's Jobs (background propagation), then the finalizer goes.
async fn cleanup(run: &PipelineRun, ctx: &Context) -> Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let lp = ListParams::default().labels(&jobs::run_selector(&run.name_any()));
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let _ = api
        .delete_collection(&DeleteParams::background(), &lp)
        .await?;
    ctx.publish(
        run,
        &Transition {
            reason: "Deleted",
            message: "deleted the run's Jobs".to_owned(),
            warning: false,
            stage: None,
            job: None,
            duration: None,
            summary: None,
        },
    )
    .await;
    ctx.record_phase(run, None);
    ctx.metrics.running_stage(&ns, &run.name_any(), None);
    Ok(Action::await_change())
}
