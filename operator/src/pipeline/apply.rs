//! Carrying out a Pipeline's decision: list its runs, delete and create runs, write the
//! status, then Events and the freshness gauges.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::{decide, pipeline_selector};
use crate::api::condition::set_condition;
use crate::api::labels::LABEL_PIPELINE;
use crate::api::pipeline::{COND_READY, Pipeline, PipelineStatus};
use crate::parent::RECHECK;
use crate::parent::children::{ObservedRun, ParentKind};
use crate::parent::runs::{
    NameConflict, Parent, create_runs, delete_runs, list_runs, name_conflict,
};
use crate::reconcile::{self, RESYNC, event};
use crate::{Error, Result, to_chrono};

/// The Pipeline's freshness gauges (docs/operations.md, alert StreamflowPipelineStale): the
/// end of the latest interval that succeeded, its creation before any did.
fn record_pipeline(
    ctx: &reconcile::Context,
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

pub(super) async fn apply_pipeline(
    pl: &Pipeline,
    ctx: &reconcile::Context,
    ns: &str,
) -> Result<Action> {
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
    let decision = match decide::decide(&decide::Input {
        name: &name,
        generation: pl.metadata.generation,
        created,
        spec: &pl.spec,
        status: &current,
        own: &own,
        now,
    }) {
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
            reconcile::kstatus::pipeline(&mut st, pl.metadata.generation, now);
            if st != current {
                ctx.apply_status(pl, &st).await?;
                ctx.publish(pl, &event("InvalidSpec", &message, true)).await;
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
        ctx.apply_status(pl, &status).await?;
    }
    record_pipeline(ctx, ns, &name, created, &status);
    for (reason, message, warning) in events {
        info!(pipeline = %format!("{ns}/{name}"), reason, "{message}");
        ctx.publish(pl, &event(reason, &message, warning)).await;
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
