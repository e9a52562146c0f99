//! The API calls on the runs of a Backfill or Pipeline: listing them, creating them (a name
//! held by another owner is a conflict, not success), deleting them, and what becomes of them
//! when their parent is deleted.

use std::collections::BTreeMap;

use chrono::Utc;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use streamflow_core::Interval;
use tracing::{info, warn};

use super::children::{ObservedRun, ParentKind, build_child};
use crate::Result;
use crate::api::condition::{Condition, set_condition};
use crate::api::parent::RunDeletionPolicy;
use crate::api::pipelinerun::{PipelineRun, RunTemplate};
use crate::reconcile::{self, event};

/// PipelineRuns per page when listing a parent's runs.
const LIST_PAGE: u32 = 250;
/// Put on an object by the API server when its deletion asked to orphan dependents.
const ORPHAN_FINALIZER: &str = "orphan";

/// Lists the runs matching `selector`, a page at a time (one consistent snapshot), keeping only
/// what the parents decide on: a page of full PipelineRuns is held at once, not thousands.
pub async fn list_runs(
    ctx: &reconcile::Context,
    ns: &str,
    selector: &str,
) -> Result<Vec<ObservedRun>> {
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
pub async fn delete_runs(ctx: &reconcile::Context, ns: &str, names: &[String]) -> Result<()> {
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
pub struct Parent<'a> {
    pub kind: ParentKind,
    pub name: &'a str,
    pub owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    pub labels: BTreeMap<String, String>,
}

/// A run this parent would create whose name another owner holds.
pub struct NameConflict {
    pub run: String,
    /// `Pipeline daily`, or that the run has no controller.
    pub holder: String,
}

impl NameConflict {
    /// Every conflict, for a condition's message.
    pub fn message(parent: &Parent<'_>, conflicts: &[NameConflict]) -> String {
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
pub async fn create_runs(
    ctx: &reconcile::Context,
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

/// Sets `cond` False with reason [`REASON_NAME_CONFLICT`]; the Warning Event to publish when
/// that is news (not already so in `current`), so a conflict that lasts is told once.
pub fn name_conflict(
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
pub async fn cleanup<K>(
    obj: &K,
    selector: &str,
    policy: RunDeletionPolicy,
    ctx: &reconcile::Context,
    ns: &str,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
{
    let name = obj.name_any();
    if obj.finalizers().iter().any(|f| f == ORPHAN_FINALIZER) {
        let note = "deletion with propagationPolicy Orphan: the runs are kept";
        ctx.publish(obj, &event("Orphaned", note, false)).await;
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
    ctx.publish(obj, &event("Deleted", &message, false)).await;
    Ok(Action::await_change())
}
