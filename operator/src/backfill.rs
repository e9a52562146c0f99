//! The `Backfill` custom resource: one PipelineRun per interval of a range, at most
//! `maxActiveRuns` at a time, and [`decide`], which picks the runs to start and the status to
//! write from the spec and the runs that exist (pure, unit-tested). The planning itself (the
//! intervals of a range, which to run again) is `streamflow_core::backfill`, shared with the
//! local `streamflow backfill` command.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use streamflow_core::Interval;
use streamflow_core::backfill::{PriorOutcome, Reprocess, parse_step, plan_intervals};

use crate::Error;
use crate::children::{ChildRunRef, ObservedRun, ParentKind, RunDeletionPolicy, run_name};
use crate::crd::{Condition, Phase, RunTemplate};
use crate::status::set_condition;

pub const COND_PROGRESSING: &str = "Progressing";
pub const COND_COMPLETE: &str = "Complete";
pub const COND_FAILED: &str = "Failed";
pub const COND_SUSPENDED: &str = "Suspended";

/// The most runs listed in `status.runs`: the status of a 10,000-interval backfill stays small.
pub const MAX_LISTED_RUNS: usize = 50;
/// The most intervals listed in `status.wouldRun` of a dry run.
pub const MAX_LISTED_INTERVALS: usize = 1000;

// One `printcolumn(...)` per column is kube's syntax, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "streamflow.io",
    version = "v1alpha1",
    kind = "Backfill",
    plural = "backfills",
    shortname = "bf",
    category = "streamflow",
    namespaced,
    status = "BackfillStatus",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters (it labels the Backfill's runs)"),
    printcolumn(name = "Range", type_ = "string", json_path = ".status.range"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.active"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.template) != has(self.pipelineRef)").message("set exactly one of template and pipelineRef"))]
#[x_kube(validation = Rule::new("self.to > self.from").message("to must be after from"))]
#[x_kube(validation = Rule::new("self.from == oldSelf.from && self.to == oldSelf.to && self.step == oldSelf.step").message("from, to and step cannot change: create a new Backfill for another range"))]
// The step in seconds, summed from its `<n><d|h|m|s>` parts, against the range: the bound the
// operator plans with (streamflow_core::backfill::MAX_INTERVALS), refused at `kubectl apply`
// rather than reported at the first reconcile.
#[x_kube(validation = Rule::new("(self.to - self.from).getSeconds() <= 100000 * self.step.findAll('[0-9]+[dhms]').map(p, int(p.substring(0, size(p) - 1)) * (p.endsWith('d') ? 86400 : p.endsWith('h') ? 3600 : p.endsWith('m') ? 60 : 1)).sum()").message("the range holds more than 100000 intervals of this step: use a longer step or a shorter range"))]
pub struct BackfillSpec {
    /// What each run does: a PipelineRun spec without its interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<RunTemplate>,
    /// Or: run the template of this Pipeline (read when each run is created). Runs of the
    /// Pipeline, scheduled or backfilled, are what `reprocess` compares with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<PipelineRef>,
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive); `to - from` must be a whole number of steps.
    pub to: DateTime<Utc>,
    /// Length of each interval: `1d`, `1h`, `15m`.
    #[schemars(regex(pattern = r"^([0-9]+(d|h|m|s))+$"), length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("step must be longer than 0s"))]
    pub step: String,
    /// The most runs of this Backfill running at once.
    #[serde(default = "default_max_active_runs")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_active_runs: u32,
    /// Which intervals with an earlier run of the same Pipeline to run again: `None` (only
    /// intervals never run), `Failed` (also failed ones) or `Completed` (all). An interval
    /// whose run is still active is never run twice.
    #[serde(default)]
    pub reprocess: Reprocess,
    /// Newest interval first.
    #[serde(default)]
    pub backwards: bool,
    /// Start no more runs (those running carry on); `false` again resumes.
    #[serde(default)]
    pub suspend: bool,
    /// Create nothing; `status.wouldRun` lists the intervals a real backfill would run.
    #[serde(default)]
    pub dry_run: bool,
    /// What deleting this Backfill does to its runs: `Retain` (default; they go on as runs of
    /// their own, history kept) or `Delete` (they and their Jobs are deleted).
    #[serde(default)]
    pub run_deletion_policy: RunDeletionPolicy,
}

fn default_max_active_runs() -> u32 {
    1
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct PipelineRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackfillStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `FROM/TO` and the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// `finished/total` intervals (succeeded, failed or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Intervals of the range.
    #[serde(default)]
    pub total: u32,
    /// Intervals still to run.
    #[serde(default)]
    pub pending: u32,
    /// Runs of this Backfill not finished yet.
    #[serde(default)]
    pub active: u32,
    #[serde(default)]
    pub succeeded: u32,
    #[serde(default)]
    pub failed: u32,
    /// Intervals not run because of an earlier run of the Pipeline (see `reprocess`).
    #[serde(default)]
    pub skipped: u32,
    /// Intervals waiting for an earlier run of the Pipeline that is still active.
    #[serde(default)]
    pub waiting: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Active runs first, then failed, then the latest succeeded; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ChildRunRef>,
    /// Dry run: the intervals that would run (`START/END`), in order; at most 1000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_run: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// When an interval last finished (succeeded, failed or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
}

impl BackfillStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

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
    /// Runs of other owners are still active: look again later (they are not watched).
    pub recheck: bool,
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
/// `earlier` the other runs of its Pipeline (none for an inline template).
pub fn states(
    plan: &[Interval],
    reprocess: Reprocess,
    own: &[ObservedRun],
    earlier: &[ObservedRun],
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
        .map(|interval| {
            let state = if let Some(run) = own.get(interval) {
                IntervalState::Run {
                    active: run.is_active(),
                    phase: run.phase,
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

/// The next status of Backfill `name`, and the runs to start: at most `maxActiveRuns` runs
/// active, counting those that exist (listed from the API, so a restart or a lost status
/// write changes nothing), none when suspended or dry.
pub fn decide(
    name: &str,
    generation: Option<i64>,
    spec: &BackfillSpec,
    current: &BackfillStatus,
    own: &[ObservedRun],
    earlier: &[ObservedRun],
    now: DateTime<Utc>,
) -> Result<Decision, Error> {
    let plan = plan(spec)?;
    let states = states(&plan, spec.reprocess, own, earlier);
    let mut st = current.clone();
    st.observed_generation = generation;
    st.range = Some(format!(
        "{}/{} by {}",
        spec.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        spec.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        spec.step
    ));
    st.start_time.get_or_insert(now);

    let count = |f: &dyn Fn(&IntervalState) -> bool| states.iter().filter(|(_, s)| f(s)).count();
    let active = count(&|s| matches!(s, IntervalState::Run { active: true, .. }));
    let to_run: Vec<Interval> = states
        .iter()
        .filter(|(_, s)| *s == IntervalState::ToRun)
        .map(|(i, _)| *i)
        .collect();
    let create: Vec<Interval> = if spec.suspend || spec.dry_run {
        Vec::new()
    } else {
        let slots = (spec.max_active_runs.max(1) as usize).saturating_sub(active);
        to_run.iter().take(slots).copied().collect()
    };

    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    st.total = n(plan.len());
    st.active = n(active + create.len());
    st.pending = n(to_run.len() - create.len());
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
    let finished = st.succeeded + st.failed + st.skipped;
    if finished > current.succeeded + current.failed + current.skipped {
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

    let done = !spec.dry_run && finished == st.total;
    let mut events = Vec::new();
    let was = |t: &str| current.is_true(t);
    if done {
        st.completion_time.get_or_insert(now);
    } else {
        st.completion_time = None;
    }
    let (progressing, reason, message) = if spec.dry_run {
        (
            false,
            "DryRun",
            format!("dry run: would run {} interval(s)", to_run.len()),
        )
    } else if done {
        (
            false,
            "Finished",
            format!(
                "{} succeeded, {} failed, {} skipped",
                st.succeeded, st.failed, st.skipped
            ),
        )
    } else if spec.suspend {
        (
            false,
            "Suspended",
            format!("suspended with {} run(s) active", st.active),
        )
    } else {
        (
            true,
            "RunsActive",
            format!(
                "{} active, {} to run, {} waiting for earlier runs",
                st.active, st.pending, st.waiting
            ),
        )
    };
    set_condition(
        &mut st.conditions,
        COND_PROGRESSING,
        progressing,
        reason,
        message.clone(),
        generation,
        now,
    );
    set_condition(
        &mut st.conditions,
        COND_COMPLETE,
        done,
        if done { "Finished" } else { reason },
        if done { message.clone() } else { String::new() },
        generation,
        now,
    );
    set_condition(
        &mut st.conditions,
        COND_SUSPENDED,
        spec.suspend,
        if spec.suspend {
            "Suspended"
        } else {
            "NotSuspended"
        },
        String::new(),
        generation,
        now,
    );
    let failed = st.failed > 0;
    set_condition(
        &mut st.conditions,
        COND_FAILED,
        failed,
        if failed { "RunsFailed" } else { "NoRunFailed" },
        if failed {
            format!("{} of {} interval(s) failed", st.failed, st.total)
        } else {
            String::new()
        },
        generation,
        now,
    );
    if done && !was(COND_COMPLETE) {
        events.push(("Completed", message, failed));
    }
    if spec.suspend && !was(COND_SUSPENDED) {
        events.push(("Suspended", "no more runs start".to_owned(), false));
    }
    if !spec.suspend && was(COND_SUSPENDED) {
        events.push(("Resumed", "runs start again".to_owned(), false));
    }
    crate::kstatus::backfill(&mut st, generation, now);
    Ok(Decision {
        status: st,
        create,
        events,
        recheck: states.iter().any(|(_, s)| *s == IntervalState::Waiting),
    })
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
        .map(ChildRunRef::of)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
        }
    }

    fn run(owner: &str, interval: Interval, phase: Phase) -> ObservedRun {
        ObservedRun {
            name: run_name(ParentKind::Backfill, owner, &interval),
            interval,
            phase,
            deleting: false,
            created: Some(t("2026-01-01")),
            controller_uid: None,
            other_owners: Vec::new(),
        }
    }

    fn now() -> DateTime<Utc> {
        t("2026-12-01")
    }

    #[test]
    fn starts_up_to_max_active_in_order_then_fills_freed_slots() {
        let s = spec("2026-11-01", "2026-11-11", "1d", 3);
        let d = decide(
            "bf",
            Some(1),
            &s,
            &BackfillStatus::default(),
            &[],
            &[],
            now(),
        )
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
        let d2 = decide("bf", Some(1), &s, &d.status, &own, &[], now()).unwrap();
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
        let d = decide("bf", None, &s, &BackfillStatus::default(), &[], &[], now()).unwrap();
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
            let d = decide(
                "bf",
                None,
                &s,
                &BackfillStatus::default(),
                &[],
                earlier,
                now(),
            )
            .unwrap();
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
        let d = decide("bf", None, &s, &BackfillStatus::default(), &own, &[], now()).unwrap();
        assert!(!d.create.contains(&plan[0]));
        assert_eq!(d.status.failed, 1);
    }

    #[test]
    fn suspend_and_dry_run_create_nothing() {
        let mut s = spec("2026-11-01", "2026-11-04", "1d", 3);
        s.suspend = true;
        let d = decide("bf", None, &s, &BackfillStatus::default(), &[], &[], now()).unwrap();
        assert!(d.create.is_empty());
        assert!(d.status.is_true(COND_SUSPENDED));
        assert!(!d.status.is_true(COND_PROGRESSING));
        assert_eq!(d.events[0].0, "Suspended");
        s.suspend = false;
        let resumed = decide("bf", None, &s, &d.status, &[], &[], now()).unwrap();
        assert_eq!(resumed.create.len(), 3);
        assert_eq!(resumed.events[0].0, "Resumed");

        let mut s = spec("2026-11-01", "2026-11-04", "1d", 3);
        s.dry_run = true;
        let d = decide("bf", None, &s, &BackfillStatus::default(), &[], &[], now()).unwrap();
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
        let d = decide("bf", None, &s, &BackfillStatus::default(), &own, &[], now()).unwrap();
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
        let again = decide("bf", None, &s, &d.status, &own, &[], t("2026-12-02")).unwrap();
        assert_eq!(again.status, d.status);
        assert!(again.events.is_empty());
    }

    #[test]
    fn ragged_range_is_an_invalid_spec() {
        let s = spec("2026-11-01", "2026-11-01T05:30:00Z", "1h", 1);
        let e = decide("bf", None, &s, &BackfillStatus::default(), &[], &[], now()).unwrap_err();
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
        let d = decide("bf", None, &s, &BackfillStatus::default(), &own, &[], now()).unwrap();
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
                name: crate::children::child_name("bf", i),
                ..run("bf", *i, Phase::Succeeded)
            })
            .collect();
        let d = decide("bf", None, &s, &BackfillStatus::default(), &own, &[], now()).unwrap();
        assert_eq!(d.create, plan[2..].to_vec());
        assert_eq!((d.status.succeeded, d.status.active), (2, 1));
    }
}
