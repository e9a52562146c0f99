//! Carrying out a Backfill's decision: list its runs (and its Pipeline's), create and prune
//! runs, write the status, then Events and gauges.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::decide;
use crate::api::backfill::{
    Backfill, BackfillStatus, COND_COMPLETE, COND_FAILED, COND_PROGRESSING,
};
use crate::api::condition::set_condition;
use crate::api::labels::{LABEL_BACKFILL, LABEL_PIPELINE};
use crate::api::pipeline::Pipeline;
use crate::parent::RECHECK;
use crate::parent::children::ParentKind;
use crate::parent::runs::{
    NameConflict, Parent, create_runs, delete_runs, list_runs, name_conflict,
};
use crate::reconcile::{self, RESYNC, event};
use crate::{Error, Result, to_chrono};

pub(super) async fn apply_backfill(
    bf: &Backfill,
    ctx: &reconcile::Context,
    ns: &str,
) -> Result<Action> {
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
    let decision = match decide::decide(&decide::Input {
        name: &name,
        generation: bf.metadata.generation,
        spec: &bf.spec,
        status: &current,
        runs: decide::Observed {
            uid: uid.as_deref(),
            own: &own,
            earlier: &earlier,
        },
        now,
    }) {
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
            reconcile::kstatus::backfill(&mut st, bf.metadata.generation, now);
            if st != current {
                ctx.apply_status(bf, &st).await?;
                ctx.publish(bf, &event("InvalidSpec", &message, true)).await;
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
                reconcile::kstatus::backfill(&mut status, bf.metadata.generation, now);
                if status != current {
                    ctx.apply_status(bf, &status).await?;
                }
                return Ok(Action::requeue(RECHECK));
            }
        }
    }
    if status != current {
        ctx.apply_status(bf, &status).await?;
    }
    // Only now: the status just written records the pruned runs' intervals.
    delete_runs(ctx, ns, &decision.delete).await?;
    if !decision.delete.is_empty() {
        info!(backfill = %format!("{ns}/{name}"), runs = decision.delete.len(), "pruned finished runs beyond the history limits");
    }
    record_backfill(ctx, bf, ns, &status);
    for (reason, message, warning) in events {
        info!(backfill = %format!("{ns}/{name}"), reason, "{message}");
        ctx.publish(bf, &event(reason, &message, warning)).await;
    }
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    // A held name is not watched (the run is not this Backfill's): look again. Waiting for
    // an earlier run is: `decide::waiting_on` wakes it.
    Ok(if conflicted {
        Action::requeue(RECHECK)
    } else if status.is_true(COND_COMPLETE) {
        Action::await_change()
    } else {
        Action::requeue(RESYNC)
    })
}

/// The Backfill's gauges (docs/operations.md, alert StreamflowBackfillStalled).
fn record_backfill(ctx: &reconcile::Context, bf: &Backfill, ns: &str, st: &BackfillStatus) {
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
pub(super) fn forget_backfill(ctx: &reconcile::Context, ns: &str, name: &str) {
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
