//! Carrying out a PipelineRun's decision: read its Jobs and Pods, create the next Job (one
//! drain per consumer group at a time), write the status, then delete the Jobs of attempts
//! given up on and publish the transitions' Events and metrics.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::Context;
use super::decide::{self, Transition};
use super::jobs::{self, ObservedJob};
use crate::api::condition::set_condition;
use crate::api::labels::{LABEL_CONSUMER_GROUP, LABEL_RUN, LABEL_STAGE};
use crate::api::pipelinerun::{
    COND_RUNNING, COND_SUCCEEDED, Phase, PipelineRun, PipelineRunStatus, StagePhase, StageSummary,
};
use crate::api::stage::Stage;
use crate::metrics::RunOwner;
use crate::reconcile::{RESYNC, event};
use crate::{Error, Result};

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
    let owned: Vec<Job> = Api::<Job>::namespaced(ctx.shared.client.clone(), ns)
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
        Api::<Pod>::namespaced(ctx.shared.client.clone(), ns)
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

pub(super) async fn apply(run: &PipelineRun, ctx: &Context) -> Result<Action> {
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
        ctx.shared.metrics.run_seen(owner);
    }
    let mut observed = observe(run, ctx, ns).await?;
    let now = Utc::now();
    let created_at = run
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(crate::to_chrono);
    let decide = |status: &PipelineRunStatus, jobs: &[ObservedJob]| {
        decide::decide(&decide::Input {
            name,
            generation: run.metadata.generation,
            created: created_at,
            spec: &run.spec,
            status,
            jobs,
            now,
        })
    };
    let mut decision = match decide(current, &observed) {
        Ok(d) => d,
        Err(e @ Error::InvalidSpec { .. }) => {
            // Not retried: the spec must change first.
            let failed = PipelineRunStatus {
                phase: Phase::Failed,
                ..current.clone()
            };
            let t = decide::transition("InvalidSpec", None, e.to_string());
            let st = with_condition(run, failed, COND_SUCCEEDED, &t, now);
            if st != *current {
                write_status(ctx, run, &st).await?;
                ctx.shared.metrics.run_finished(owner, false);
                ctx.publish(run, &t).await;
            }
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let mut created = false;
    if let decide::Action::CreateJob { stage, attempt } = decision.action {
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
        decide::Action::CreateJob { .. } if created => Action::requeue(RESYNC),
        decide::Action::CreateJob { .. } => Action::requeue(Duration::from_secs(1)),
        decide::Action::WaitFor(d) => Action::requeue(d),
        decide::Action::Wait => Action::requeue(RESYNC),
        decide::Action::Done => Action::await_change(),
    };
    // Written right after the Job is created: a restarted operator sees the attempt.
    if decision.status != *current {
        write_status(ctx, run, &decision.status).await?;
    }
    // Only now that the status records their attempts as failed: a Job deleted earlier would
    // look like an attempt to create again.
    for job in &decision.delete_jobs {
        match Api::<Job>::namespaced(ctx.shared.client.clone(), ns)
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
                    ctx.shared.metrics.stage_finished(
                        stage,
                        t.reason == "StageSucceeded",
                        t.duration,
                        t.summary.as_ref(),
                    );
                }
            }
            "DeadlineMissed" => ctx.shared.metrics.deadline_missed(owner),
            "Succeeded" | "Failed" => ctx
                .shared
                .metrics
                .run_finished(owner, t.reason == "Succeeded"),
            _ => {}
        }
        ctx.publish(run, t).await;
    }
    ctx.record_phase(run, Some(decision.status.phase));
    ctx.shared
        .metrics
        .running_stage(ns, name, running_attempt(&decision.status));
    if let (Some(group), Some(summary)) = (
        &run.spec.template.kafka.group,
        finished_ingest_summary(&decision.status),
    ) {
        ctx.shared
            .metrics
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
        LABEL_CONSUMER_GROUP,
        jobs::consumer_group_label(group),
        LABEL_STAGE,
        Stage::Ingest
    ));
    Ok(Api::<Job>::namespaced(ctx.shared.client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .iter()
        .filter(|j| jobs::is_unfinished(j))
        .filter_map(|j| j.labels().get(LABEL_RUN).cloned())
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
    let t = decide::transition("WaitingForConsumerGroup", Some(Stage::Ingest), message);
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
    crate::reconcile::kstatus::run(&mut st, run.metadata.generation, now);
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
    let api: Api<Job> = Api::namespaced(ctx.shared.client.clone(), ns);
    match api.create(&PostParams::default(), &job).await {
        Ok(_) => {
            ctx.shared
                .metrics
                .jobs_created
                .with_label_values(&[stage.as_str()])
                .inc();
            ctx.shared
                .metrics
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
    ctx.shared.apply_status(run, st).await
}

/// On deletion: delete the run's Jobs (background propagation), then the finalizer goes.
pub(super) async fn cleanup(run: &PipelineRun, ctx: &Context) -> Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let lp = ListParams::default().labels(&jobs::run_selector(&run.name_any()));
    let api: Api<Job> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let _ = api
        .delete_collection(&DeleteParams::background(), &lp)
        .await?;
    ctx.shared
        .publish(run, &event("Deleted", "deleted the run's Jobs", false))
        .await;
    ctx.record_phase(run, None);
    ctx.shared.metrics.running_stage(&ns, &run.name_any(), None);
    Ok(Action::await_change())
}
