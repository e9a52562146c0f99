//! The Backfill and Pipeline controllers. Reconcile = list the parent's PipelineRuns (from the
//! API, every time: concurrency limits and progress come from what exists, not from memory) →
//! decide (`backfill::decide`, `pipeline::decide`, pure) → create runs (deterministic names:
//! AlreadyExists means an earlier reconcile made it, when the run there is this parent's; a
//! run of that name held by another owner is a `RunNameConflict` in status and a Warning
//! Event, and its interval is not counted as started) and delete runs → write the status
//! (only when it changed) → Events.
//!
//! Deleting a parent deletes its runs through a finalizer (the API server this is tested
//! against has no garbage collector, and a finalizer works the same with one), unless the
//! deletion asked to orphan them (`propagationPolicy: Orphan`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use streamflow_core::Interval;
use tracing::{debug, info, warn};

use crate::api::backfill::{
    Backfill, BackfillStatus, COND_COMPLETE, COND_FAILED, COND_PROGRESSING,
};
use crate::api::condition::{Condition, set_condition};
use crate::api::parent::RunDeletionPolicy;
use crate::api::pipeline::{COND_READY, Pipeline, PipelineStatus};
use crate::api::pipelinerun::{PipelineRun, RunTemplate};
use crate::backfill;
use crate::children::{LABEL_BACKFILL, LABEL_PIPELINE, ObservedRun, ParentKind, build_child};
use crate::jobs::{LABEL_MANAGED_BY, MANAGER, to_chrono};
use crate::metrics::Metrics;
use crate::pipeline;
use crate::{Error, Result};

/// Removed once the parent's runs are deleted.
pub const FINALIZER: &str = "streamflow.io/runs";
/// Put on an object by the API server when its deletion asked to orphan dependents.
const ORPHAN_FINALIZER: &str = "orphan";
/// A parent waiting on nothing is looked at again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);
/// PipelineRuns per page when listing a parent's runs.
const LIST_PAGE: u32 = 250;
/// How often a parent blocked by what it does not watch (a run name held by another owner, a
/// missing Pipeline) looks again.
const RECHECK: Duration = Duration::from_secs(10);
/// After a status write refused as stale ([`Error::Stale`]): the watch event of the newer
/// object normally comes first.
const STALE_RETRY: Duration = Duration::from_secs(2);

pub struct ParentContext {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
}

impl ParentContext {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter::from(MANAGER));
        Self {
            client,
            recorder,
            metrics,
        }
    }

    async fn publish<K>(&self, obj: &K, reason: &str, note: String, warning: bool)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(reason, "cannot publish event: {e}");
        }
    }
}

/// Runs the Backfill and Pipeline controllers until SIGTERM or Ctrl-C.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    metrics: Metrics,
    config: kube::runtime::controller::Config,
) {
    let ctx = Arc::new(ParentContext::new(client.clone(), metrics));
    let (backfills, pipelines, runs): (Api<Backfill>, Api<Pipeline>, Api<PipelineRun>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let ours = || watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let mut tasks = Vec::new();
    if backfills
        .list(&ListParams::default().limit(1))
        .await
        .is_ok()
    {
        info!("watching Backfills");
        let controller = Controller::new(backfills, watcher::Config::default());
        let store = controller.store();
        // Runs of Pipelines: one that ends wakes the Backfills waiting for it.
        let of_pipelines = watcher::Config::default().labels(LABEL_PIPELINE);
        tasks.push(
            controller
                .with_config(config.clone())
                .owns(runs.clone(), ours())
                .watches(runs.clone(), of_pipelines, move |run| {
                    backfill::waiting_on(&run, store.state().iter().map(|b| b.as_ref()))
                })
                .shutdown_on_signal()
                .run(reconcile_backfill, error_policy, ctx.clone())
                .for_each(|_| async {})
                .boxed(),
        );
    } else {
        warn!("cannot list Backfills: is crds/backfill.yaml applied? Backfills are not watched");
    }
    if pipelines
        .list(&ListParams::default().limit(1))
        .await
        .is_ok()
    {
        info!("watching Pipelines");
        tasks.push(
            Controller::new(pipelines, watcher::Config::default())
                .with_config(config)
                .owns(runs, ours())
                .shutdown_on_signal()
                .run(reconcile_pipeline, error_policy, ctx)
                .for_each(|_| async {})
                .boxed(),
        );
    } else {
        warn!("cannot list Pipelines: is crds/pipeline.yaml applied? Pipelines are not watched");
    }
    futures::future::join_all(tasks).await;
}

/// Retries a failed reconcile after 5 s.
fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &Error, ctx: Arc<ParentContext>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    warn!(name = %obj.name_any(), "reconcile failed, retrying in 5s: {error}");
    Action::requeue(Duration::from_secs(5))
}

/// Unwraps what the finalizer helper wraps. The object being gone by the time its finalizer
/// is removed is the deletion finishing, not an error.
pub(crate) fn finalizer_result(
    r: Result<Action, kube::runtime::finalizer::Error<Error>>,
) -> Result<Action> {
    use kube::runtime::finalizer::Error as F;
    match r {
        Ok(a) => Ok(a),
        Err(F::RemoveFinalizer(kube::Error::Api(s))) if s.code == 404 => Ok(Action::await_change()),
        // Decided on a stale copy: the watch brings the newer one at once; this is a fallback.
        Err(F::ApplyFailed(Error::Stale { object })) => {
            debug!(%object, "stale copy: nothing written, reconciling the newer one");
            Ok(Action::requeue(STALE_RETRY))
        }
        Err(F::ApplyFailed(inner) | F::CleanupFailed(inner)) => Err(inner),
        Err(other) => Err(Error::Finalizer(Box::new(other))),
    }
}

async fn reconcile_backfill(bf: Arc<Backfill>, ctx: Arc<ParentContext>) -> Result<Action> {
    ctx.metrics
        .parent_reconciles
        .with_label_values(&["Backfill"])
        .inc();
    let ns = namespace_of(bf.as_ref())?;
    let api: Api<Backfill> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, bf, |event| async {
        match event {
            FinalizerEvent::Apply(bf) => apply_backfill(&bf, &ctx, &ns).await,
            FinalizerEvent::Cleanup(bf) => {
                forget_backfill(&ctx, &ns, &bf.name_any());
                let selector = format!("{LABEL_BACKFILL}={}", bf.name_any());
                let policy = bf.spec.run_deletion_policy;
                cleanup(bf.as_ref(), &selector, policy, &ctx, &ns).await
            }
        }
    })
    .await;
    finalizer_result(result)
}

async fn reconcile_pipeline(pl: Arc<Pipeline>, ctx: Arc<ParentContext>) -> Result<Action> {
    ctx.metrics
        .parent_reconciles
        .with_label_values(&["Pipeline"])
        .inc();
    let ns = namespace_of(pl.as_ref())?;
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, pl, |event| async {
        match event {
            FinalizerEvent::Apply(pl) => apply_pipeline(&pl, &ctx, &ns).await,
            FinalizerEvent::Cleanup(pl) => {
                ctx.metrics.pipeline_freshness(&ns, &pl.name_any(), None);
                let selector = pipeline_selector(&pl.name_any());
                let policy = pl.spec.run_deletion_policy;
                cleanup(pl.as_ref(), &selector, policy, &ctx, &ns).await
            }
        }
    })
    .await;
    finalizer_result(result)
}

fn namespace_of<K: ResourceExt>(obj: &K) -> Result<String> {
    obj.namespace().ok_or(Error::MissingField {
        object: obj.name_any(),
        field: "metadata.namespace",
    })
}

/// The runs a Pipeline scheduled itself (not those of Backfills of it).
fn pipeline_selector(pipeline: &str) -> String {
    format!("{LABEL_PIPELINE}={pipeline},!{LABEL_BACKFILL}")
}

/// Lists the runs matching `selector`, a page at a time (one consistent snapshot), keeping only
/// what the parents decide on: a page of full PipelineRuns is held at once, not thousands.
async fn list_runs(ctx: &ParentContext, ns: &str, selector: &str) -> Result<Vec<ObservedRun>> {
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    let mut lp = ListParams::default().labels(selector).limit(LIST_PAGE);
    let mut out = Vec::new();
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items.iter().map(ObservedRun::from_run));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// Deletes runs (each run's own finalizer deletes its Jobs); one already gone is deleted.
async fn delete_runs(ctx: &ParentContext, ns: &str, names: &[String]) -> Result<()> {
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    for name in names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The reason (condition and Event) of a run name held by another owner.
pub const REASON_NAME_CONFLICT: &str = "RunNameConflict";

/// A Backfill or Pipeline, as the owner of the runs it creates.
struct Parent<'a> {
    kind: ParentKind,
    name: &'a str,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    labels: BTreeMap<String, String>,
}

/// A run this parent would create whose name another owner holds.
struct NameConflict {
    run: String,
    /// `Pipeline daily`, or that the run has no controller.
    holder: String,
}

impl NameConflict {
    /// Every conflict, for a condition's message.
    fn message(parent: &Parent<'_>, conflicts: &[NameConflict]) -> String {
        let each: Vec<String> = conflicts
            .iter()
            .map(|c| format!("{} (held by {})", c.run, c.holder))
            .collect();
        format!(
            "PipelineRun names this {} {} would create exist and are not its: {}; their intervals are not run until those runs are deleted or renamed",
            parent.kind.as_str(),
            parent.name,
            each.join(", ")
        )
    }
}

/// Creates the runs of `intervals`; the ones whose name another owner holds are returned, not
/// created. A 409 is success only when the run there is this parent's (an earlier reconcile
/// or operator made it).
async fn create_runs(
    ctx: &ParentContext,
    ns: &str,
    parent: &Parent<'_>,
    template: &RunTemplate,
    intervals: &[Interval],
) -> Result<Vec<NameConflict>> {
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    let kind = parent.kind.as_str();
    let mut conflicts = Vec::new();
    for interval in intervals {
        let run = build_child(
            parent.kind,
            parent.name,
            ns,
            parent.owner.clone(),
            parent.labels.clone(),
            template,
            interval,
        );
        match api.create(&PostParams::default(), &run).await {
            Ok(_) => {
                ctx.metrics.runs_created.with_label_values(&[kind]).inc();
                info!(run = %run.name_any(), %interval, "{kind} {}: created PipelineRun", parent.name);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let name = run.name_any();
                // Gone since (deleted): the next reconcile creates it.
                let Some(there) = api.get_opt(&name).await? else {
                    continue;
                };
                let controller = there
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true));
                match controller {
                    // Deterministic name: an earlier reconcile (or operator) created it.
                    Some(o) if o.uid == parent.owner.uid => {}
                    other => {
                        let holder = other.map_or_else(
                            || "no controller: made by hand?".to_owned(),
                            |o| format!("{} {}", o.kind, o.name),
                        );
                        warn!(run = %name, %holder, "{kind} {}: the run's name is held by another owner", parent.name);
                        conflicts.push(NameConflict { run: name, holder });
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(conflicts)
}

/// Writes a resource's status with server-side apply, as this operator's field manager: the
/// one way every controller here writes status. The write is conditional on the object's
/// `resourceVersion` as read: a status decided from a stale copy is refused
/// ([`Error::Stale`]) instead of overwriting a newer one, so the callers' side effects of a
/// transition (Events, metrics), which follow the write, happen once.
pub(crate) async fn apply_status<K, S>(client: &Client, obj: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize,
{
    let ns = namespace_of(obj)?;
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": obj.resource_version()},
        "status": status,
    });
    match api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Stale {
            object: format!("{}/{ns}/{name}", K::kind(&())),
        }),
        Err(e) => Err(e.into()),
    }
}

async fn apply_backfill(bf: &Backfill, ctx: &ParentContext, ns: &str) -> Result<Action> {
    let started = Instant::now();
    let name = bf.name_any();
    let current = bf.status.clone().unwrap_or_default();
    let own = list_runs(ctx, ns, &format!("{LABEL_BACKFILL}={name}")).await?;
    let earlier = match &bf.spec.pipeline_ref {
        Some(p) => {
            list_runs(
                ctx,
                ns,
                &format!("{LABEL_PIPELINE}={},{LABEL_BACKFILL}!={name}", p.name),
            )
            .await?
        }
        None => Vec::new(),
    };
    let now = Utc::now();
    let uid = bf.uid();
    let observed = backfill::Observed {
        uid: uid.as_deref(),
        own: &own,
        earlier: &earlier,
    };
    let decision = match backfill::decide(
        &name,
        bf.metadata.generation,
        &bf.spec,
        &current,
        observed,
        now,
    ) {
        Ok(d) => d,
        Err(e @ Error::InvalidSpec { .. }) => {
            // Not retried: the spec must change first.
            let mut st = current.clone();
            st.observed_generation = bf.metadata.generation;
            let message = e.to_string();
            for (cond, status) in [(COND_FAILED, true), (COND_PROGRESSING, false)] {
                set_condition(
                    &mut st.conditions,
                    cond,
                    status,
                    "InvalidSpec",
                    message.clone(),
                    bf.metadata.generation,
                    now,
                );
            }
            crate::kstatus::backfill(&mut st, bf.metadata.generation, now);
            if st != current {
                apply_status(&ctx.client, bf, &st).await?;
                ctx.publish(bf, "InvalidSpec", message, true).await;
            }
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let mut status = decision.status.clone();
    let mut events = decision.events;
    let mut conflicted = false;
    if !decision.create.is_empty() {
        let template = match (&bf.spec.template, &bf.spec.pipeline_ref) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(p)) => Api::<Pipeline>::namespaced(ctx.client.clone(), ns)
                .get_opt(&p.name)
                .await?
                .map(|pl| pl.spec.template),
            (None, None) => None,
        };
        match template {
            Some(template) => {
                let owner = bf.controller_owner_ref(&()).ok_or(Error::MissingField {
                    object: name.clone(),
                    field: "metadata.uid",
                })?;
                let mut labels = BTreeMap::from([(LABEL_BACKFILL.to_owned(), name.clone())]);
                if let Some(p) = &bf.spec.pipeline_ref {
                    labels.insert(LABEL_PIPELINE.to_owned(), p.name.clone());
                }
                let parent = Parent {
                    kind: ParentKind::Backfill,
                    name: &name,
                    owner,
                    labels,
                };
                let conflicts = create_runs(ctx, ns, &parent, &template, &decision.create).await?;
                if !conflicts.is_empty() {
                    // Not started: its interval stays pending, not counted as this Backfill's.
                    let n = u32::try_from(conflicts.len()).unwrap_or(u32::MAX);
                    status.active = status.active.saturating_sub(n);
                    status.pending = status.pending.saturating_add(n);
                    status
                        .runs
                        .retain(|r| !conflicts.iter().any(|c| c.run == r.name));
                    let message = NameConflict::message(&parent, &conflicts);
                    if let Some(event) = name_conflict(
                        &mut status.conditions,
                        &current.conditions,
                        COND_PROGRESSING,
                        message,
                        bf.metadata.generation,
                        now,
                    ) {
                        events.push(event);
                    }
                    conflicted = true;
                }
            }
            None => {
                // Nothing was created: the status says why, and the counts stay as listed.
                let missing = bf
                    .spec
                    .pipeline_ref
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                status = current.clone();
                set_condition(
                    &mut status.conditions,
                    COND_PROGRESSING,
                    false,
                    "PipelineNotFound",
                    format!("Pipeline {missing:?} not found in namespace {ns}; waiting for it"),
                    bf.metadata.generation,
                    now,
                );
                crate::kstatus::backfill(&mut status, bf.metadata.generation, now);
                if status != current {
                    apply_status(&ctx.client, bf, &status).await?;
                }
                return Ok(Action::requeue(RECHECK));
            }
        }
    }
    if status != current {
        apply_status(&ctx.client, bf, &status).await?;
    }
    // Only now: the status just written records the pruned runs' intervals.
    delete_runs(ctx, ns, &decision.delete).await?;
    if !decision.delete.is_empty() {
        info!(backfill = %format!("{ns}/{name}"), runs = decision.delete.len(), "pruned finished runs beyond the history limits");
    }
    record_backfill(ctx, bf, ns, &status);
    for (reason, message, warning) in events {
        info!(backfill = %format!("{ns}/{name}"), reason, "{message}");
        ctx.publish(bf, reason, message, warning).await;
    }
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    // A held name is not watched (the run is not this Backfill's): look again. Waiting for
    // an earlier run is: `backfill::waiting_on` wakes it.
    Ok(if conflicted {
        Action::requeue(RECHECK)
    } else if status.is_true(COND_COMPLETE) {
        Action::await_change()
    } else {
        Action::requeue(RESYNC)
    })
}

/// The Backfill's gauges (docs/operations.md, alert StreamflowBackfillStalled).
fn record_backfill(ctx: &ParentContext, bf: &Backfill, ns: &str, st: &BackfillStatus) {
    let name = bf.name_any();
    for (phase, n) in [
        ("Pending", st.pending + st.waiting),
        ("Running", st.active),
        ("Succeeded", st.succeeded),
        ("Failed", st.failed),
        ("Skipped", st.skipped),
    ] {
        ctx.metrics
            .backfill_intervals
            .with_label_values(&[ns, name.as_str(), phase])
            .set(i64::from(n));
    }
    let since = st
        .last_progress_time
        .or_else(|| bf.metadata.creation_timestamp.as_ref().and_then(to_chrono));
    if let Some(t) = since {
        ctx.metrics
            .backfill_last_progress
            .with_label_values(&[ns, name.as_str()])
            .set(crate::metrics::unix_seconds(t));
    }
}

/// Forgets a deleted Backfill's gauges.
fn forget_backfill(ctx: &ParentContext, ns: &str, name: &str) {
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Skipped"] {
        let _ = ctx
            .metrics
            .backfill_intervals
            .remove_label_values(&[ns, name, phase]);
    }
    let _ = ctx
        .metrics
        .backfill_last_progress
        .remove_label_values(&[ns, name]);
}

/// The Pipeline's freshness gauges (docs/operations.md, alert StreamflowPipelineStale): the
/// end of the latest interval that succeeded, its creation before any did.
fn record_pipeline(
    ctx: &ParentContext,
    ns: &str,
    name: &str,
    created: chrono::DateTime<Utc>,
    st: &PipelineStatus,
) {
    let fresh_until = st
        .last_succeeded_interval
        .as_ref()
        .map_or(created, |i| i.end);
    let interval = st.last_scheduled_interval.as_ref().map(|i| i.end - i.start);
    ctx.metrics
        .pipeline_freshness(ns, name, Some((fresh_until, interval)));
}

async fn apply_pipeline(pl: &Pipeline, ctx: &ParentContext, ns: &str) -> Result<Action> {
    let started = Instant::now();
    let name = pl.name_any();
    let uid = pl.uid();
    let current: PipelineStatus = pl.status.clone().unwrap_or_default();
    let own: Vec<ObservedRun> = list_runs(ctx, ns, &pipeline_selector(&name))
        .await?
        .into_iter()
        .filter(|r| r.controller_uid.is_some() && r.controller_uid == uid)
        .collect();
    let now = Utc::now();
    let created = pl
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(to_chrono)
        .unwrap_or(now);
    let decision = match pipeline::decide(
        &name,
        pl.metadata.generation,
        created,
        &pl.spec,
        &current,
        &own,
        now,
    ) {
        Ok(d) => d,
        Err(e @ Error::InvalidSpec { .. }) => {
            let mut st = current.clone();
            st.observed_generation = pl.metadata.generation;
            st.next_run_time = None;
            let message = e.to_string();
            set_condition(
                &mut st.conditions,
                COND_READY,
                false,
                "InvalidSpec",
                message.clone(),
                pl.metadata.generation,
                now,
            );
            crate::kstatus::pipeline(&mut st, pl.metadata.generation, now);
            if st != current {
                apply_status(&ctx.client, pl, &st).await?;
                ctx.publish(pl, "InvalidSpec", message, true).await;
            }
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    delete_runs(ctx, ns, &decision.delete).await?;
    for victim in &decision.delete {
        info!(pipeline = %format!("{ns}/{name}"), run = %victim, "deleted PipelineRun");
    }
    let mut status = decision.status;
    let mut events = decision.events;
    let mut conflicted = false;
    if !decision.create.is_empty() {
        let owner = pl.controller_owner_ref(&()).ok_or(Error::MissingField {
            object: name.clone(),
            field: "metadata.uid",
        })?;
        let labels = BTreeMap::from([(LABEL_PIPELINE.to_owned(), name.clone())]);
        let parent = Parent {
            kind: ParentKind::Pipeline,
            name: &name,
            owner,
            labels,
        };
        let conflicts = create_runs(ctx, ns, &parent, &pl.spec.template, &decision.create).await?;
        if !conflicts.is_empty() {
            // The ticks are not scheduled: keep the last scheduled interval where it was, so
            // the next reconcile tries them again (the runs that were created are found).
            status.last_scheduled_interval = current.last_scheduled_interval.clone();
            status.last_schedule_time = current.last_schedule_time;
            status
                .active
                .retain(|r| !conflicts.iter().any(|c| &c.run == r));
            status.active_count = u32::try_from(status.active.len()).unwrap_or(u32::MAX);
            let message = NameConflict::message(&parent, &conflicts);
            if let Some(event) = name_conflict(
                &mut status.conditions,
                &current.conditions,
                COND_READY,
                message,
                pl.metadata.generation,
                now,
            ) {
                events.push(event);
            }
            conflicted = true;
        }
    }
    if status != current {
        apply_status(&ctx.client, pl, &status).await?;
    }
    record_pipeline(ctx, ns, &name, created, &status);
    for (reason, message, warning) in events {
        info!(pipeline = %format!("{ns}/{name}"), reason, "{message}");
        ctx.publish(pl, reason, message, warning).await;
    }
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(match decision.wake_at {
        // A held name is not watched (the run is not this Pipeline's): look again.
        _ if conflicted => Action::requeue(RECHECK),
        Some(at) => {
            // A little past the tick, so that the tick is due when the reconcile runs.
            let wait =
                (at - Utc::now()).to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(50);
            Action::requeue(wait.min(RESYNC))
        }
        None => Action::requeue(RESYNC),
    })
}

/// Sets `cond` False with reason [`REASON_NAME_CONFLICT`]; the Warning Event to publish when
/// that is news (not already so in `current`), so a conflict that lasts is told once.
fn name_conflict(
    conditions: &mut Vec<Condition>,
    current: &[Condition],
    cond: &str,
    message: String,
    generation: Option<i64>,
    now: chrono::DateTime<Utc>,
) -> Option<(&'static str, String, bool)> {
    let known = current
        .iter()
        .find(|c| c.type_ == cond && c.reason == REASON_NAME_CONFLICT && c.message == message);
    if let Some(known) = known {
        // As it was: `decide` set the condition from scratch, which would move its time.
        match conditions.iter_mut().find(|c| c.type_ == cond) {
            Some(slot) => *slot = known.clone(),
            None => conditions.push(known.clone()),
        }
        return None;
    }
    set_condition(
        conditions,
        cond,
        false,
        REASON_NAME_CONFLICT,
        message.clone(),
        generation,
        now,
    );
    Some((REASON_NAME_CONFLICT, message, true))
}

/// On deletion: delete the parent's runs (each run's own finalizer deletes its Jobs), unless
/// the deletion orphans dependents; then the finalizer goes.
async fn cleanup<K>(
    obj: &K,
    selector: &str,
    policy: RunDeletionPolicy,
    ctx: &ParentContext,
    ns: &str,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
{
    let name = obj.name_any();
    if obj.finalizers().iter().any(|f| f == ORPHAN_FINALIZER) {
        ctx.publish(
            obj,
            "Orphaned",
            "deletion with propagationPolicy Orphan: the runs are kept".to_owned(),
            false,
        )
        .await;
        return Ok(Action::await_change());
    }
    let uid = obj.uid();
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    let runs = list_runs(ctx, ns, selector).await?;
    let mut done = 0;
    for run in runs.iter().filter(|r| r.controller_uid == uid) {
        let result = match policy {
            RunDeletionPolicy::Delete => api
                .delete(&run.name, &DeleteParams::background())
                .await
                .map(|_| ()),
            // The garbage collector then has no dependent to delete with the parent.
            RunDeletionPolicy::Retain => api
                .patch(
                    &run.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"ownerReferences": run.other_owners}})),
                )
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => done += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let message = match policy {
        RunDeletionPolicy::Delete => format!("deleted {done} run(s) (runDeletionPolicy Delete)"),
        RunDeletionPolicy::Retain => {
            format!("released {done} run(s): they go on without it (runDeletionPolicy Retain)")
        }
    };
    info!(parent = %format!("{ns}/{name}"), "{message}");
    ctx.publish(obj, "Deleted", message, false).await;
    Ok(Action::await_change())
}
