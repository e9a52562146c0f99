//! What a `Backfill` ([`crate::api::backfill`]: one PipelineRun per interval of a range, at
//! most `maxActiveRuns` at a time) does next: [`decide`] picks the runs to start and the status to
//! write from the spec and the runs that exist (pure, unit-tested). The planning itself (the
//! intervals of a range, which to run again) is `streamflow_core::backfill`, shared with the
//! local `streamflow backfill` command.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use streamflow_core::Interval;
use streamflow_core::backfill::{PriorOutcome, Reprocess, parse_step, plan_intervals};

use crate::Error;
use crate::api::backfill::{
    Backfill, BackfillSpec, BackfillStatus, COND_COMPLETE, COND_FAILED, COND_PROGRESSING,
    COND_SUSPENDED, MAX_LISTED_INTERVALS, MAX_LISTED_RUNS, PrunedIntervals,
};
use crate::api::condition::set_condition;
use crate::api::labels::{LABEL_BACKFILL, LABEL_PIPELINE};
use crate::api::parent::ChildRunRef;
use crate::api::pipelinerun::{Phase, PipelineRun};
use crate::parent::children::{ObservedRun, ParentKind, run_name};

/// Where one interval of the range stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalState {
    /// This Backfill's run for it, in this phase.
    Run { active: bool, phase: Phase },
    /// To be run.
    ToRun,
    /// An earlier run of the Pipeline is still active: decided when it finishes.
    Waiting,
    /// Not run again: an earlier run of the Pipeline had this outcome.
    Skipped(PriorOutcome),
}

/// What to do and write.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: BackfillStatus,
    /// Runs to create now, in order.
    pub create: Vec<Interval>,
    /// Events: (reason, message, warning).
    pub events: Vec<(&'static str, String, bool)>,
    /// Finished runs beyond the history limits, to delete once `status` (which records their
    /// intervals in `pruned`) is written.
    pub delete: Vec<String>,
}

/// What a Backfill decides on: the runs that exist.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The Backfill's uid: the history limits delete only runs it controls (not runs released
    /// by an earlier Backfill of the same name, which count as its own).
    pub uid: Option<&'a str>,
    /// The runs labelled with this Backfill's name.
    pub own: &'a [ObservedRun],
    /// The other runs of its Pipeline (none for an inline template).
    pub earlier: &'a [ObservedRun],
}

/// The intervals of the range, in the order they run.
pub fn plan(spec: &BackfillSpec) -> Result<Vec<Interval>, Error> {
    let invalid = |e: streamflow_core::backfill::BackfillError| Error::InvalidSpec {
        field: "spec.step",
        message: e.to_string(),
    };
    let step = parse_step(&spec.step).map_err(invalid)?;
    plan_intervals(spec.from, spec.to, step, spec.backwards).map_err(invalid)
}

/// Where each planned interval stands. `own` are the runs labelled with this Backfill's name;
/// `earlier` the other runs of its Pipeline (none for an inline template); `pruned` the outcome
/// of each interval whose run the history limits deleted, by the interval's position in
/// `plan`.
pub fn states(
    plan: &[Interval],
    reprocess: Reprocess,
    own: &[ObservedRun],
    earlier: &[ObservedRun],
    pruned: &[Option<Phase>],
) -> Vec<(Interval, IntervalState)> {
    // By interval, not by name: runs stamped before Backfill run names got their `-bf` are
    // still this Backfill's (an upgrade must not run their intervals again).
    let own = own_by_interval(own);
    // The latest earlier run of each interval is its outcome.
    let mut latest: HashMap<Interval, &ObservedRun> = HashMap::new();
    for r in earlier {
        let e = latest.entry(r.interval).or_insert(r);
        if r.is_active() || (!e.is_active() && r.created > e.created) {
            *e = r;
        }
    }
    plan.iter()
        .enumerate()
        .map(|(i, interval)| {
            let state = if let Some(run) = own.get(interval) {
                IntervalState::Run {
                    active: run.is_active(),
                    phase: run.phase,
                }
            } else if let Some(phase) = pruned.get(i).copied().flatten() {
                IntervalState::Run {
                    active: false,
                    phase,
                }
            } else {
                let prior = latest
                    .get(interval)
                    .map(|r| r.outcome())
                    .unwrap_or(PriorOutcome::Never);
                if prior == PriorOutcome::Active {
                    IntervalState::Waiting
                } else if reprocess.should_run(prior) {
                    IntervalState::ToRun
                } else {
                    IntervalState::Skipped(prior)
                }
            };
            (*interval, state)
        })
        .collect()
}

/// What a Backfill's next status is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The Backfill's name (its runs' names derive from it).
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a BackfillSpec,
    pub status: &'a BackfillStatus,
    pub runs: Observed<'a>,
    pub now: DateTime<Utc>,
}

/// The next status of a Backfill, the runs to start and the runs to prune: at most
/// `maxActiveRuns` runs active, counting those that exist (listed from the API, so a restart
/// or a lost status write changes nothing), none when suspended or dry; finished runs beyond
/// the history limits deleted, their intervals kept in `status.pruned`.
pub fn decide(input: &Input<'_>) -> Result<Decision, Error> {
    let Input {
        name,
        generation,
        spec,
        status,
        runs: Observed { uid, own, earlier },
        now,
    } = *input;
    let plan = plan(spec)?;
    let mut pruned = pruned_by_position(spec, &plan, status);
    let delete = prune(spec, &plan, own, uid, &mut pruned);
    let states = states(&plan, spec.reprocess, own, earlier, &pruned);
    let to_run: Vec<Interval> = states
        .iter()
        .filter(|(_, s)| *s == IntervalState::ToRun)
        .map(|(i, _)| *i)
        .collect();
    let active = states
        .iter()
        .filter(|(_, s)| matches!(s, IntervalState::Run { active: true, .. }))
        .count();
    let create: Vec<Interval> = if spec.suspend || spec.dry_run {
        Vec::new()
    } else {
        let slots = (spec.max_active_runs.max(1) as usize).saturating_sub(active);
        to_run.iter().take(slots).copied().collect()
    };

    let mut st = status.clone();
    st.observed_generation = generation;
    st.range = Some(format!(
        "{}/{} by {}",
        spec.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        spec.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        spec.step
    ));
    st.start_time.get_or_insert(now);
    count(&mut st, &states, active, &create, to_run.len());
    let finished = st.succeeded + st.failed + st.skipped;
    if finished > status.succeeded + status.failed + status.skipped {
        st.last_progress_time = Some(now);
    }
    st.progress = Some(format!("{finished}/{}", st.total));
    st.would_run = if spec.dry_run {
        to_run
            .iter()
            .take(MAX_LISTED_INTERVALS)
            .map(|i| i.to_string())
            .collect()
    } else {
        Vec::new()
    };
    st.runs = listed_runs(name, &plan, own, &create);
    st.runs.retain(|r| !delete.contains(&r.name));
    st.pruned = PrunedIntervals::of(&by_index(spec, &pruned));

    let standing = if spec.dry_run {
        Standing::DryRun {
            would_run: to_run.len(),
        }
    } else if finished == st.total {
        Standing::Done
    } else if spec.suspend {
        Standing::Suspended
    } else {
        Standing::Running
    };
    let events = conditions(input, &mut st, standing);
    crate::reconcile::kstatus::backfill(&mut st, generation, now);
    Ok(Decision {
        status: st,
        create,
        events,
        delete,
    })
}

/// `k`'s position in `plan`, for the interval at index `k` of the range: `plan` may run the
/// range backwards.
fn position(spec: &BackfillSpec, len: usize, k: usize) -> usize {
    if spec.backwards { len - 1 - k } else { k }
}

/// The outcomes of the pruned runs, recorded by index in the range, by position in `plan`.
fn pruned_by_position(
    spec: &BackfillSpec,
    plan: &[Interval],
    status: &BackfillStatus,
) -> Vec<Option<Phase>> {
    let mut pruned = vec![None; plan.len()];
    for (k, outcome) in status
        .pruned
        .as_ref()
        .map(|p| p.outcomes(plan.len()))
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        pruned[position(spec, plan.len(), k)] = outcome;
    }
    pruned
}

/// The outcomes of the pruned runs by position in `plan`, by index in the range again.
fn by_index(spec: &BackfillSpec, pruned: &[Option<Phase>]) -> Vec<Option<Phase>> {
    (0..pruned.len())
        .map(|k| pruned[position(spec, pruned.len(), k)])
        .collect()
}

/// The counts of the status: `active` runs exist, `create` start now, `to_run` intervals have
/// no run yet.
fn count(
    st: &mut BackfillStatus,
    states: &[(Interval, IntervalState)],
    active: usize,
    create: &[Interval],
    to_run: usize,
) {
    let count = |f: &dyn Fn(&IntervalState) -> bool| states.iter().filter(|(_, s)| f(s)).count();
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    st.total = n(states.len());
    st.active = n(active + create.len());
    st.pending = n(to_run - create.len());
    st.succeeded = n(count(&|s| {
        matches!(
            s,
            IntervalState::Run {
                active: false,
                phase: Phase::Succeeded
            }
        )
    }));
    st.failed = n(count(
        &|s| matches!(s, IntervalState::Run { active: false, phase } if *phase != Phase::Succeeded),
    ));
    st.skipped = n(count(&|s| matches!(s, IntervalState::Skipped(_))));
    st.waiting = n(count(&|s| *s == IntervalState::Waiting));
}

/// Where a Backfill stands, for its conditions.
enum Standing {
    /// A dry run: nothing starts; it would run this many intervals.
    DryRun {
        would_run: usize,
    },
    /// Every interval finished (succeeded, failed or skipped).
    Done,
    Suspended,
    Running,
}

/// The Backfill's conditions for where it stands, and the Events of what changed since `input.status`.
fn conditions(
    input: &Input<'_>,
    st: &mut BackfillStatus,
    standing: Standing,
) -> Vec<(&'static str, String, bool)> {
    let Input {
        generation,
        spec,
        status: current,
        now,
        ..
    } = *input;
    let done = matches!(standing, Standing::Done);
    if done {
        st.completion_time.get_or_insert(now);
    } else {
        st.completion_time = None;
    }
    let (progressing, reason, message) = match standing {
        Standing::DryRun { would_run } => (
            false,
            "DryRun",
            format!("dry run: would run {would_run} interval(s)"),
        ),
        Standing::Done => (
            false,
            "Finished",
            format!(
                "{} succeeded, {} failed, {} skipped",
                st.succeeded, st.failed, st.skipped
            ),
        ),
        Standing::Suspended => (
            false,
            "Suspended",
            format!("suspended with {} run(s) active", st.active),
        ),
        Standing::Running => (
            true,
            "RunsActive",
            format!(
                "{} active, {} to run, {} waiting for earlier runs",
                st.active, st.pending, st.waiting
            ),
        ),
    };
    let failed = st.failed > 0;
    let failed_message = if failed {
        format!("{} of {} interval(s) failed", st.failed, st.total)
    } else {
        String::new()
    };
    let (complete_reason, complete_message) = if done {
        ("Finished", message.clone())
    } else {
        (reason, String::new())
    };
    let suspended_reason = if spec.suspend {
        "Suspended"
    } else {
        "NotSuspended"
    };
    let failed_reason = if failed { "RunsFailed" } else { "NoRunFailed" };
    for (cond, status, reason, message) in [
        (COND_PROGRESSING, progressing, reason, message.clone()),
        (COND_COMPLETE, done, complete_reason, complete_message),
        (
            COND_SUSPENDED,
            spec.suspend,
            suspended_reason,
            String::new(),
        ),
        (COND_FAILED, failed, failed_reason, failed_message),
    ] {
        set_condition(
            &mut st.conditions,
            cond,
            status,
            reason,
            message,
            generation,
            now,
        );
    }

    let was = |t: &str| current.is_true(t);
    let mut events = Vec::new();
    if done && !was(COND_COMPLETE) {
        events.push(("Completed", message, failed));
    }
    if spec.suspend && !was(COND_SUSPENDED) {
        events.push(("Suspended", "no more runs start".to_owned(), false));
    }
    if !spec.suspend && was(COND_SUSPENDED) {
        events.push(("Resumed", "runs start again".to_owned(), false));
    }
    events
}

/// The finished runs this Backfill controls beyond its history limits, keeping the latest to
/// run of each outcome (by position in `plan`); each one's outcome goes into `pruned`, by
/// position in `plan`. Runs being deleted already are not counted.
fn prune(
    spec: &BackfillSpec,
    plan: &[Interval],
    own: &[ObservedRun],
    uid: Option<&str>,
    pruned: &mut [Option<Phase>],
) -> Vec<String> {
    if spec.successful_runs_history_limit.is_none() && spec.failed_runs_history_limit.is_none() {
        return Vec::new();
    }
    let by_interval = own_by_interval(own);
    let finished: Vec<(usize, &ObservedRun)> = plan
        .iter()
        .enumerate()
        .filter_map(|(i, interval)| by_interval.get(interval).map(|r| (i, *r)))
        .filter(|(_, r)| {
            !r.is_active() && !r.deleting && uid.is_some() && r.controller_uid.as_deref() == uid
        })
        .collect();
    let mut delete = Vec::new();
    for (succeeded, limit) in [
        (true, spec.successful_runs_history_limit),
        (false, spec.failed_runs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let of_outcome: Vec<&(usize, &ObservedRun)> = finished
            .iter()
            .filter(|(_, r)| (r.phase == Phase::Succeeded) == succeeded)
            .collect();
        let beyond = of_outcome.len().saturating_sub(limit as usize);
        for (i, r) in &of_outcome[..beyond] {
            pruned[*i] = Some(if succeeded {
                Phase::Succeeded
            } else {
                Phase::Failed
            });
            delete.push(r.name.clone());
        }
    }
    delete
}

/// The Backfills to wake when `run` (a run of a Pipeline, see [`LABEL_PIPELINE`]) changes:
/// once it is finished or being deleted, those of its Pipeline with intervals waiting for an
/// earlier run (`status.waiting`), other than its own Backfill (which its owner reference
/// wakes). So a waiting Backfill is decided when the run it waits for ends, with no polling.
pub fn waiting_on<'a>(
    run: &PipelineRun,
    backfills: impl IntoIterator<Item = &'a Backfill>,
) -> Vec<ObjectRef<Backfill>> {
    let ended = run.status.as_ref().is_some_and(|s| s.phase.is_finished())
        || run.metadata.deletion_timestamp.is_some();
    let labels = run.labels();
    let (Some(pipeline), true) = (labels.get(LABEL_PIPELINE), ended) else {
        return Vec::new();
    };
    let own = labels.get(LABEL_BACKFILL);
    backfills
        .into_iter()
        .filter(|bf| {
            bf.namespace() == run.namespace()
                && bf
                    .spec
                    .pipeline_ref
                    .as_ref()
                    .is_some_and(|p| &p.name == pipeline)
                && bf.status.as_ref().is_some_and(|s| s.waiting > 0)
                && own != Some(&bf.name_any())
        })
        .map(ObjectRef::from_obj)
        .collect()
}

/// This Backfill's runs by interval; of two of one interval (a run deleted and made again), the
/// active one, else the newer.
fn own_by_interval(own: &[ObservedRun]) -> HashMap<Interval, &ObservedRun> {
    let mut by: HashMap<Interval, &ObservedRun> = HashMap::new();
    for r in own {
        let e = by.entry(r.interval).or_insert(r);
        if (r.is_active() && !e.is_active())
            || (e.is_active() == r.is_active() && r.created > e.created)
        {
            *e = r;
        }
    }
    by
}

/// Active runs (including those about to be created), then failed, then the latest succeeded.
fn listed_runs(
    name: &str,
    plan: &[Interval],
    own: &[ObservedRun],
    create: &[Interval],
) -> Vec<ChildRunRef> {
    let by_interval = own_by_interval(own);
    let ours: Vec<ObservedRun> = plan
        .iter()
        .filter_map(|i| match by_interval.get(i) {
            // Pruned: going.
            Some(r) if r.deleting && !r.is_active() => None,
            Some(r) => Some((*r).clone()),
            None if create.contains(i) => Some(ObservedRun {
                name: run_name(ParentKind::Backfill, name, i),
                interval: *i,
                phase: Phase::Pending,
                deleting: false,
                created: None,
                controller_uid: None,
                other_owners: Vec::new(),
            }),
            None => None,
        })
        .collect();
    let active = ours.iter().filter(|r| r.is_active());
    let failed = ours
        .iter()
        .filter(|r| !r.is_active() && r.phase != Phase::Succeeded);
    let succeeded = ours
        .iter()
        .rev()
        .filter(|r| !r.is_active() && r.phase == Phase::Succeeded);
    active
        .chain(failed)
        .chain(succeeded)
        .take(MAX_LISTED_RUNS)
        .map(ObservedRun::listed)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backfill::PipelineRef;
    use crate::api::parent::RunDeletionPolicy;
    use streamflow_core::interval::parse_time;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    pub fn spec(from: &str, to: &str, step: &str, max: u32) -> BackfillSpec {
        BackfillSpec {
            template: None,
            pipeline_ref: Some(PipelineRef { name: "p".into() }),
            from: t(from),
            to: t(to),
            step: step.into(),
            max_active_runs: max,
            reprocess: Reprocess::None,
            backwards: false,
            suspend: false,
            dry_run: false,
            run_deletion_policy: RunDeletionPolicy::Retain,
            successful_runs_history_limit: None,
            failed_runs_history_limit: None,
        }
    }

    fn run(owner: &str, interval: Interval, phase: Phase) -> ObservedRun {
        ObservedRun {
            name: run_name(ParentKind::Backfill, owner, &interval),
            interval,
            phase,
            deleting: false,
            created: Some(t("2026-01-01")),
            controller_uid: Some("uid".into()),
            other_owners: Vec::new(),
        }
    }

    /// Runs as listed: this Backfill's uid is `uid`.
    fn obs<'a>(own: &'a [ObservedRun], earlier: &'a [ObservedRun]) -> Observed<'a> {
        Observed {
            uid: Some("uid"),
            own,
            earlier,
        }
    }

    /// Finished runs of `intervals`, the one at `failed` failed, the others succeeded.
    fn finished_runs(intervals: &[Interval], failed: usize) -> Vec<ObservedRun> {
        let phase = |i| {
            if i == failed {
                Phase::Failed
            } else {
                Phase::Succeeded
            }
        };
        intervals
            .iter()
            .enumerate()
            .map(|(i, interval)| run("bf", *interval, phase(i)))
            .collect()
    }

    /// The first decision on `s`, with these runs of its own and no earlier ones.
    fn first(s: &BackfillSpec, own: &[ObservedRun]) -> Decision {
        next(s, &BackfillStatus::default(), obs(own, &[])).unwrap()
    }

    /// The next decision of Backfill `bf` from `status`, now.
    fn next(
        s: &BackfillSpec,
        status: &BackfillStatus,
        runs: Observed<'_>,
    ) -> Result<Decision, Error> {
        decide(&Input {
            name: "bf",
            generation: None,
            spec: s,
            status,
            runs,
            now: now(),
        })
    }

    fn now() -> DateTime<Utc> {
        t("2026-12-01")
    }

    #[test]
    fn starts_up_to_max_active_in_order_then_fills_freed_slots() {
        let s = spec("2026-11-01", "2026-11-11", "1d", 3);
        let d = decide(&Input {
            name: "bf",
            generation: Some(1),
            spec: &s,
            status: &BackfillStatus::default(),
            runs: obs(&[], &[]),
            now: now(),
        })
        .unwrap();
        let starts: Vec<String> = d.create.iter().map(|i| i.start.to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2026-11-01T00:00:00+00:00",
                "2026-11-02T00:00:00+00:00",
                "2026-11-03T00:00:00+00:00"
            ]
        );
        assert_eq!(
            (d.status.total, d.status.active, d.status.pending),
            (10, 3, 7)
        );
        assert_eq!(d.status.progress.as_deref(), Some("0/10"));
        assert!(d.status.is_true(COND_PROGRESSING));
        assert_eq!(d.status.runs.len(), 3);

        // Restarted with those three existing (one finished): one more starts, none twice.
        let plan = plan(&s).unwrap();
        let own = vec![
            run("bf", plan[0], Phase::Succeeded),
            run("bf", plan[1], Phase::Running),
            run("bf", plan[2], Phase::Pending),
        ];
        let d2 = decide(&Input {
            name: "bf",
            generation: Some(1),
            spec: &s,
            status: &d.status,
            runs: obs(&own, &[]),
            now: now(),
        })
        .unwrap();
        assert_eq!(d2.create, vec![plan[3]]);
        assert_eq!((d2.status.active, d2.status.succeeded), (3, 1));
        assert_eq!(d.status.last_progress_time, None);
        assert_eq!(d2.status.last_progress_time, Some(now()));
        assert_eq!(d2.status.progress.as_deref(), Some("1/10"));
    }

    #[test]
    fn backwards_runs_the_newest_interval_first() {
        let mut s = spec("2026-11-01", "2026-11-04", "1d", 1);
        s.backwards = true;
        let d = first(&s, &[]);
        assert_eq!(d.create.len(), 1);
        assert_eq!(d.create[0].start, t("2026-11-03"));
    }

    #[test]
    fn reprocess_compares_with_the_pipelines_earlier_runs() {
        let plan = plan(&spec("2026-11-01", "2026-11-05", "1d", 10)).unwrap();
        // Earlier runs of the Pipeline: day 1 succeeded, day 2 failed, day 3 still running;
        // day 4 never ran. Day 2 failed once, then succeeded: the latest run counts.
        let mut retried = run("p", plan[1], Phase::Succeeded);
        retried.name = "p-retry".into();
        retried.created = Some(t("2026-01-02"));
        let earlier_with_retry = vec![
            run("p", plan[0], Phase::Succeeded),
            run("p", plan[1], Phase::Failed),
            run("p", plan[2], Phase::Running),
            retried,
        ];
        let earlier = &earlier_with_retry[..3];
        let starts = |reprocess, earlier: &[ObservedRun]| {
            let mut s = spec("2026-11-01", "2026-11-05", "1d", 10);
            s.reprocess = reprocess;
            let d = next(&s, &BackfillStatus::default(), obs(&[], earlier)).unwrap();
            let days: Vec<u32> = d
                .create
                .iter()
                .map(|i| chrono::Datelike::day(&i.start))
                .collect();
            (days, d.status.skipped, d.status.waiting)
        };
        assert_eq!(starts(Reprocess::None, earlier), (vec![4], 2, 1));
        assert_eq!(starts(Reprocess::Failed, earlier), (vec![2, 4], 1, 1));
        assert_eq!(starts(Reprocess::Completed, earlier), (vec![1, 2, 4], 0, 1));
        assert_eq!(
            starts(Reprocess::Failed, &earlier_with_retry),
            (vec![4], 2, 1)
        );
        // A backfill's own run of an interval is final: never run again by reprocess.
        let mut s = spec("2026-11-01", "2026-11-05", "1d", 10);
        s.reprocess = Reprocess::Completed;
        let own = vec![run("bf", plan[0], Phase::Failed)];
        let d = first(&s, &own);
        assert!(!d.create.contains(&plan[0]));
        assert_eq!(d.status.failed, 1);
    }

    #[test]
    fn suspend_and_dry_run_create_nothing() {
        let mut s = spec("2026-11-01", "2026-11-04", "1d", 3);
        s.suspend = true;
        let d = first(&s, &[]);
        assert!(d.create.is_empty());
        assert!(d.status.is_true(COND_SUSPENDED));
        assert!(!d.status.is_true(COND_PROGRESSING));
        assert_eq!(d.events[0].0, "Suspended");
        s.suspend = false;
        let resumed = next(&s, &d.status, obs(&[], &[])).unwrap();
        assert_eq!(resumed.create.len(), 3);
        assert_eq!(resumed.events[0].0, "Resumed");

        let mut s = spec("2026-11-01", "2026-11-04", "1d", 3);
        s.dry_run = true;
        let d = first(&s, &[]);
        assert!(d.create.is_empty());
        assert_eq!(
            d.status.would_run,
            [
                "2026-11-01T00:00:00Z/2026-11-02T00:00:00Z",
                "2026-11-02T00:00:00Z/2026-11-03T00:00:00Z",
                "2026-11-03T00:00:00Z/2026-11-04T00:00:00Z"
            ]
        );
        assert!(!d.status.is_true(COND_COMPLETE));
        assert_eq!(
            d.status
                .condition(COND_PROGRESSING)
                .map(|c| c.reason.as_str()),
            Some("DryRun")
        );
    }

    #[test]
    fn completes_once_every_interval_finished_with_failures_reported() {
        let s = spec("2026-11-01", "2026-11-04", "1d", 3);
        let plan = plan(&s).unwrap();
        let own = vec![
            run("bf", plan[0], Phase::Succeeded),
            run("bf", plan[1], Phase::Failed),
            run("bf", plan[2], Phase::Succeeded),
        ];
        let d = first(&s, &own);
        assert!(d.create.is_empty());
        assert!(d.status.is_true(COND_COMPLETE));
        assert!(d.status.is_true(COND_FAILED));
        assert_eq!(d.status.completion_time, Some(now()));
        assert_eq!(
            d.events,
            vec![(
                "Completed",
                "2 succeeded, 1 failed, 0 skipped".to_owned(),
                true
            )]
        );
        assert_eq!(
            d.status.runs[0].phase,
            Phase::Failed,
            "failed runs listed first"
        );
        // Deciding again from the written status changes nothing: no status write loop.
        let again = decide(&Input {
            name: "bf",
            generation: None,
            spec: &s,
            status: &d.status,
            runs: obs(&own, &[]),
            now: t("2026-12-02"),
        })
        .unwrap();
        assert_eq!(again.status, d.status);
        assert!(again.events.is_empty());
    }

    #[test]
    fn history_limits_prune_the_oldest_finished_runs_and_remember_their_intervals() {
        let mut s = spec("2026-11-01", "2026-11-11", "1d", 2);
        s.successful_runs_history_limit = Some(2);
        s.failed_runs_history_limit = Some(0);
        let plan = plan(&s).unwrap();
        // Days 1-5 finished (day 2 failed), 6 running; day 1's run was released by an
        // earlier Backfill of this name (no controller): not this one's to delete.
        let mut own = finished_runs(&plan[..5], 1);
        own[0].controller_uid = None;
        own.push(run("bf", plan[5], Phase::Running));
        let d = first(&s, &own);
        let mut deleted = d.delete.clone();
        deleted.sort();
        assert_eq!(deleted, [own[1].name.clone(), own[2].name.clone()]);
        let pruned = d.status.pruned.clone().unwrap();
        assert_eq!(
            (pruned.succeeded.as_str(), pruned.failed.as_str()),
            ("2", "1")
        );
        assert_eq!((d.status.succeeded, d.status.failed), (4, 1));
        assert_eq!(
            d.create,
            vec![plan[6]],
            "one slot free; pruned days not run again"
        );
        assert!(d.status.runs.iter().all(|r| !d.delete.contains(&r.name)));

        // Once they are gone (or a restart finds them gone): the status still knows.
        let left: Vec<ObservedRun> = own
            .iter()
            .filter(|r| !d.delete.contains(&r.name))
            .cloned()
            .collect();
        let again = next(&s, &d.status, obs(&left, &[])).unwrap();
        assert!(again.delete.is_empty());
        assert_eq!(again.create, vec![plan[6]]);
        assert_eq!((again.status.succeeded, again.status.failed), (4, 1));
        assert_eq!(again.status.pruned, d.status.pruned);
        // A pruned failed interval is final, whatever reprocess says.
        s.reprocess = Reprocess::Completed;
        let re = next(&s, &d.status, obs(&left, &[])).unwrap();
        assert_eq!(re.create, vec![plan[6]]);
    }

    #[test]
    fn pruned_intervals_are_recorded_by_index_in_the_range_as_ranges() {
        let mut s = spec("2026-11-01", "2026-11-11", "1d", 1);
        s.backwards = true;
        s.successful_runs_history_limit = Some(1);
        let plan = plan(&s).unwrap();
        // Backwards: days 10, 9, 8, 7 ran; 8 failed (kept: no failed limit).
        let own = finished_runs(&plan[..4], 2);
        let d = first(&s, &own);
        let pruned = d.status.pruned.clone().unwrap();
        // Days 10 and 9 are indices 9 and 8; day 7 (index 6), the latest to run, is kept.
        assert_eq!(
            (pruned.succeeded.as_str(), pruned.failed.as_str()),
            ("8-9", "")
        );
        let outcomes = pruned.outcomes(10);
        assert_eq!(outcomes[7], None);
        assert_eq!(outcomes[8], Some(Phase::Succeeded));
        assert_eq!(PrunedIntervals::of(&outcomes), Some(pruned));
        assert_eq!(PrunedIntervals::of(&[None, None]), None);
        let record = PrunedIntervals {
            succeeded: "0-2,5,7-8".into(),
            failed: "3,x,99".into(),
        };
        let o = record.outcomes(9);
        assert_eq!(
            PrunedIntervals::of(&o).unwrap().failed,
            "3",
            "bad parts ignored"
        );
        assert_eq!(PrunedIntervals::of(&o).unwrap().succeeded, "0-2,5,7-8");
    }

    #[test]
    fn a_run_of_the_pipeline_that_ends_wakes_the_backfills_waiting_for_one() {
        let backfill = |name: &str, pipeline: &str, waiting: u32| -> Backfill {
            let mut bf = Backfill::new(name, spec("2026-11-01", "2026-11-04", "1d", 1));
            bf.metadata.namespace = Some("ns".into());
            bf.spec.pipeline_ref = Some(PipelineRef {
                name: pipeline.into(),
            });
            bf.status = Some(BackfillStatus {
                waiting,
                ..Default::default()
            });
            bf
        };
        let backfills = [
            backfill("waits", "p", 1),
            backfill("waits-too", "p", 2),
            backfill("busy", "p", 0),
            backfill("other", "q", 1),
        ];
        let run = |phase: Phase, backfill: Option<&str>| -> PipelineRun {
            let mut labels = serde_json::json!({LABEL_PIPELINE: "p"});
            if let Some(b) = backfill {
                labels[LABEL_BACKFILL] = b.into();
            }
            serde_json::from_value(serde_json::json!({
                "apiVersion": "streamflow.io/v1alpha1", "kind": "PipelineRun",
                "metadata": {"name": "p-20261101", "namespace": "ns", "labels": labels},
                "spec": {"interval": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
                    "stages": ["validate"], "kafka": {"bootstrap": "k:9092"},
                    "storage": {"landing": "s3://l/x", "gold": "s3://g/x"}},
                "status": {"phase": phase},
            }))
            .unwrap()
        };
        let woken = |r: &PipelineRun| -> Vec<String> {
            waiting_on(r, &backfills)
                .into_iter()
                .map(|o| o.name)
                .collect()
        };
        assert_eq!(woken(&run(Phase::Succeeded, None)), ["waits", "waits-too"]);
        assert_eq!(woken(&run(Phase::Failed, Some("waits"))), ["waits-too"]);
        assert!(
            woken(&run(Phase::Running, None)).is_empty(),
            "not ended yet"
        );
        let mut deleted = serde_json::to_value(run(Phase::Running, None)).unwrap();
        deleted["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z".into();
        let deleted: PipelineRun = serde_json::from_value(deleted).unwrap();
        assert_eq!(woken(&deleted), ["waits", "waits-too"]);
    }

    #[test]
    fn ragged_range_is_an_invalid_spec() {
        let s = spec("2026-11-01", "2026-11-01T05:30:00Z", "1h", 1);
        let e = next(&s, &BackfillStatus::default(), obs(&[], &[])).unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
    }

    #[test]
    fn the_status_lists_a_bounded_number_of_runs() {
        let s = spec("2026-01-01", "2026-05-01", "1d", 5);
        let plan = plan(&s).unwrap();
        let own: Vec<ObservedRun> = plan
            .iter()
            .map(|i| run("bf", *i, Phase::Succeeded))
            .collect();
        let d = first(&s, &own);
        assert_eq!(d.status.runs.len(), MAX_LISTED_RUNS);
        assert_eq!(d.status.runs[0].name, "bf-20260430-bf", "latest first");
        assert_eq!(d.status.succeeded, 120);
    }

    #[test]
    fn runs_named_before_the_bf_suffix_are_still_this_backfills() {
        // Stamped by an operator from before Backfill run names ended in `-bf`: found by
        // interval, so an upgrade runs none of them again.
        let s = spec("2026-01-01", "2026-01-04", "1d", 5);
        let plan = plan(&s).unwrap();
        let own: Vec<ObservedRun> = plan[..2]
            .iter()
            .map(|i| ObservedRun {
                name: crate::parent::children::child_name("bf", i),
                ..run("bf", *i, Phase::Succeeded)
            })
            .collect();
        let d = first(&s, &own);
        assert_eq!(d.create, plan[2..].to_vec());
        assert_eq!((d.status.succeeded, d.status.active), (2, 1));
    }
}
