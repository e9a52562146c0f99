//! What a `Pipeline` ([`crate::api::pipeline`]: a cron schedule in a time zone that starts one
//! PipelineRun per tick, covering the data interval from the previous tick to this one) does
//! next: its [`Schedule`], and [`decide`], which picks the ticks to run, the runs to replace or forget and the status to write (pure,
//! unit-tested).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use streamflow_core::Interval;

use crate::Error;
use crate::api::condition::set_condition;
use crate::api::pipeline::{COND_READY, ConcurrencyPolicy, PipelineSpec, PipelineStatus};
use crate::api::pipelinerun::{IntervalSpec, Phase};
use crate::parent::children::{ObservedRun, child_name};

/// A parsed schedule in its time zone.
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    pub fn parse(schedule: &str, time_zone: &str) -> Result<Schedule, Error> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(schedule)
            .map_err(|e| Error::InvalidSpec {
                field: "spec.schedule",
                message: format!("{schedule:?} is not a cron schedule: {e}"),
            })?;
        let tz: Tz = time_zone.parse().map_err(|_| Error::InvalidSpec {
            field: "spec.timeZone",
            message: format!("{time_zone:?} is not an IANA time zone such as Europe/Berlin"),
        })?;
        Ok(Schedule { cron, tz })
    }

    fn err(e: croner::errors::CronError) -> Error {
        Error::InvalidSpec {
            field: "spec.schedule",
            message: format!("no tick found: {e}"),
        }
    }

    /// The first tick after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .map(|t| t.with_timezone(&Utc))
            .map_err(Self::err)
    }

    /// The last tick before `t` (or at `t` when `inclusive`).
    pub fn previous(&self, t: DateTime<Utc>, inclusive: bool) -> Result<DateTime<Utc>, Error> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), inclusive)
            .map(|t| t.with_timezone(&Utc))
            .map_err(Self::err)
    }

    /// The interval a run of `tick` covers: from the previous tick to this one.
    pub fn interval_of(&self, tick: DateTime<Utc>) -> Result<Interval, Error> {
        Ok(Interval {
            start: self.previous(tick, false)?,
            end: tick,
        })
    }

    /// The ticks in `(after, now]`, oldest first, at most `max` (the latest), and whether
    /// older ones were left out.
    pub fn due(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
        max: usize,
    ) -> Result<(Vec<DateTime<Utc>>, bool), Error> {
        let mut ticks = Vec::new();
        let mut t = now;
        let mut inclusive = true;
        loop {
            let tick = self.previous(t, inclusive)?;
            if tick <= after {
                break;
            }
            if ticks.len() == max {
                ticks.reverse();
                return Ok((ticks, true));
            }
            ticks.push(tick);
            t = tick;
            inclusive = false;
        }
        ticks.reverse();
        Ok((ticks, false))
    }
}

/// The due ticks (oldest first) that get a run now under `policy`, given the active runs.
fn choose(
    policy: ConcurrencyPolicy,
    due: &[DateTime<Utc>],
    active: &[&ObservedRun],
) -> Vec<DateTime<Utc>> {
    match policy {
        ConcurrencyPolicy::Allow => due.to_vec(),
        ConcurrencyPolicy::Forbid if active.is_empty() => due.iter().take(1).copied().collect(),
        ConcurrencyPolicy::Forbid => Vec::new(),
        ConcurrencyPolicy::Replace => due.last().copied().into_iter().collect(),
    }
}

/// What to do and write.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: PipelineStatus,
    /// Runs to create, oldest first.
    pub create: Vec<Interval>,
    /// Runs to delete: active runs replaced, finished runs beyond the history limits.
    pub delete: Vec<String>,
    /// Events: (reason, message, warning).
    pub events: Vec<(&'static str, String, bool)>,
    /// Look again then (the next tick).
    pub wake_at: Option<DateTime<Utc>>,
}

/// What a Pipeline's next status is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The Pipeline's name (its runs' names derive from it).
    pub name: &'a str,
    pub generation: Option<i64>,
    /// When the Pipeline was created: the first tick due is the first after it.
    pub created: DateTime<Utc>,
    pub spec: &'a PipelineSpec,
    pub status: &'a PipelineStatus,
    /// The runs it scheduled, listed from the API.
    pub own: &'a [ObservedRun],
    pub now: DateTime<Utc>,
}

/// What a Pipeline's schedule gives at one reconcile.
#[derive(Default)]
struct Scheduled {
    create: Vec<Interval>,
    delete: Vec<String>,
    events: Vec<(&'static str, String, bool)>,
}

/// The next status of a Pipeline and what to do, from its spec, its status and its runs. The
/// last scheduled interval is the later of the status's and the newest run's, so a status
/// write lost in a crash creates no run twice.
pub fn decide(input: &Input<'_>) -> Result<Decision, Error> {
    let Input {
        name,
        generation,
        created,
        spec,
        status,
        own,
        now,
    } = *input;
    let schedule = Schedule::parse(&spec.schedule, &spec.time_zone)?;
    let mut st = status.clone();
    st.observed_generation = generation;
    let last = latest_intervals(&mut st, own);
    let after = last.map(|l| l.end).unwrap_or(created);
    let mut active: Vec<&ObservedRun> = own.iter().filter(|r| r.is_active()).collect();

    let Scheduled {
        create,
        mut delete,
        events,
    } = if spec.suspend {
        st.next_run_time = None;
        Scheduled::default()
    } else {
        let scheduled = due_ticks(spec, &schedule, after, &active, now)?;
        if let Some(newest) = scheduled.create.last() {
            st.last_scheduled_interval = Some(IntervalSpec {
                start: newest.start,
                end: newest.end,
            });
            st.last_schedule_time = Some(now);
        }
        st.next_run_time = Some(schedule.next_after(now)?);
        scheduled
    };
    delete.extend(beyond_history(spec, own));

    active.retain(|r| !delete.contains(&r.name));
    let mut names: Vec<String> = active.iter().map(|r| r.name.clone()).collect();
    names.extend(create.iter().map(|i| child_name(name, i)));
    names.sort();
    names.dedup();
    st.active_count = u32::try_from(names.len()).unwrap_or(u32::MAX);
    st.active = names;

    let (reason, message) = if spec.suspend {
        // Ready: doing what its spec asks (GitOps tools read Ready=False as in progress).
        ("Suspended", "suspended: no run starts".to_owned())
    } else {
        (
            "Scheduling",
            format!("{} in {}", spec.schedule, spec.time_zone),
        )
    };
    set_condition(
        &mut st.conditions,
        COND_READY,
        true,
        reason,
        message,
        generation,
        now,
    );
    crate::reconcile::kstatus::pipeline(&mut st, generation, now);
    Ok(Decision {
        wake_at: st.next_run_time,
        status: st,
        create,
        delete,
        events,
    })
}

/// Brings the last scheduled, succeeded and failed intervals up to what the runs say; the last
/// scheduled one.
fn latest_intervals(st: &mut PipelineStatus, own: &[ObservedRun]) -> Option<Interval> {
    let newest_run = own.iter().map(|r| r.interval).max_by_key(|i| i.end);
    let last = match (&st.last_scheduled_interval, newest_run) {
        (Some(s), Some(r)) if r.end > s.end => Some(r),
        (Some(s), _) => Some(Interval {
            start: s.start,
            end: s.end,
        }),
        (None, r) => r,
    };
    if let Some(l) = last {
        st.last_scheduled_interval = Some(IntervalSpec {
            start: l.start,
            end: l.end,
        });
    }
    keep_newest(&mut st.last_succeeded_interval, own, Phase::Succeeded);
    keep_newest(&mut st.last_failed_interval, own, Phase::Failed);
    last
}

/// Moves `kept` to the newest interval of the runs in `phase`, if it is newer: the status keeps
/// it when those runs are pruned.
fn keep_newest(kept: &mut Option<IntervalSpec>, own: &[ObservedRun], phase: Phase) {
    if let Some(newest) = own
        .iter()
        .filter(|r| r.phase == phase)
        .map(|r| r.interval)
        .max_by_key(|i| i.end)
        && kept.as_ref().is_none_or(|k| newest.end > k.end)
    {
        *kept = Some(IntervalSpec {
            start: newest.start,
            end: newest.end,
        });
    }
}

/// The runs of the ticks due since `after` that the concurrency policy starts now (with
/// `active` runs), the active runs it replaces, and the Events that say so.
fn due_ticks(
    spec: &PipelineSpec,
    schedule: &Schedule,
    after: DateTime<Utc>,
    active: &[&ObservedRun],
    now: DateTime<Utc>,
) -> Result<Scheduled, Error> {
    let mut out = Scheduled::default();
    let (due, older_skipped) = schedule.due(after, now, spec.max_catch_up.max(1) as usize)?;
    let chosen = choose(spec.concurrency_policy, &due, active);
    // Said once, when the runs are created (a Forbid backlog waits, and skips nothing yet).
    if older_skipped
        && !chosen.is_empty()
        && let Some(first) = due.first()
    {
        let from = schedule.interval_of(*first)?.start;
        out.events.push((
            "MissedTicksSkipped",
            format!(
                "ticks between {} and {} were not run: more than maxCatchUp ({}) were due; a Backfill can run them",
                after.to_rfc3339(),
                from.to_rfc3339(),
                spec.max_catch_up
            ),
            true,
        ));
    }
    if spec.concurrency_policy == ConcurrencyPolicy::Replace
        && let Some(newest) = chosen.last()
    {
        for r in active.iter().filter(|r| !r.deleting) {
            out.delete.push(r.name.clone());
            out.events.push((
                "RunReplaced",
                format!("deleted {} to run the tick {}", r.name, newest.to_rfc3339()),
                false,
            ));
        }
        if due.len() > 1 {
            out.events.push((
                "TicksReplaced",
                format!(
                    "{} older due tick(s) not run: concurrencyPolicy Replace runs the latest",
                    due.len() - 1
                ),
                false,
            ));
        }
    }
    for tick in chosen {
        out.create.push(schedule.interval_of(tick)?);
    }
    Ok(out)
}

/// The finished runs beyond the history limits: the newest are kept, by interval.
fn beyond_history(spec: &PipelineSpec, own: &[ObservedRun]) -> Vec<String> {
    let mut finished: Vec<&ObservedRun> = own
        .iter()
        .filter(|r| !r.is_active() && !r.deleting)
        .collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.interval.end));
    let mut out = Vec::new();
    for (phase, limit) in [
        (Phase::Succeeded, spec.successful_runs_history_limit),
        (Phase::Failed, spec.failed_runs_history_limit),
    ] {
        out.extend(
            finished
                .iter()
                .filter(|r| r.phase == phase)
                .skip(limit as usize)
                .map(|r| r.name.clone()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parent::RunDeletionPolicy;
    use crate::api::pipelinerun::RunTemplate;
    use streamflow_core::interval::parse_time;

    /// Decides for Pipeline `p`, created 2026-10-01, at `now`.
    fn decide_at(
        spec: &PipelineSpec,
        status: &PipelineStatus,
        own: &[ObservedRun],
        now: DateTime<Utc>,
    ) -> Result<Decision, Error> {
        decide(&Input {
            name: "p",
            generation: None,
            created: t("2026-10-01"),
            spec,
            status,
            own,
            now,
        })
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    fn template() -> RunTemplate {
        serde_json::from_value(serde_json::json!({
            "kafka": {"bootstrap": "k:9092"},
            "storage": {"landing": "s3://l/raw", "gold": "s3://g/t"},
        }))
        .unwrap()
    }

    fn spec(schedule: &str, policy: ConcurrencyPolicy) -> PipelineSpec {
        PipelineSpec {
            schedule: schedule.into(),
            time_zone: "UTC".into(),
            template: template(),
            max_catch_up: 10,
            concurrency_policy: policy,
            successful_runs_history_limit: 3,
            failed_runs_history_limit: 1,
            suspend: false,
            run_deletion_policy: RunDeletionPolicy::Retain,
        }
    }

    fn status_after(end: &str, start: &str) -> PipelineStatus {
        PipelineStatus {
            last_scheduled_interval: Some(IntervalSpec {
                start: t(start),
                end: t(end),
            }),
            ..Default::default()
        }
    }

    fn run(interval: Interval, phase: Phase) -> ObservedRun {
        ObservedRun {
            name: child_name("p", &interval),
            interval,
            phase,
            deleting: false,
            created: None,
            controller_uid: None,
            other_owners: Vec::new(),
        }
    }

    fn hours(d: &Decision) -> Vec<(u32, u32)> {
        use chrono::Timelike;
        d.create
            .iter()
            .map(|i| (i.start.hour(), i.end.hour()))
            .collect()
    }

    #[test]
    fn every_missed_tick_is_run_with_its_interval() {
        let s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        // Last run covered 03:00–04:00; the operator comes back at 09:30.
        let st = status_after("2026-11-01T04:00:00Z", "2026-11-01T03:00:00Z");
        let d = decide(&Input {
            name: "p",
            generation: Some(1),
            created: t("2026-10-01"),
            spec: &s,
            status: &st,
            own: &[],
            now: t("2026-11-01T09:30:00Z"),
        })
        .unwrap();
        assert_eq!(hours(&d), [(4, 5), (5, 6), (6, 7), (7, 8), (8, 9)]);
        assert_eq!(
            d.status.last_scheduled_interval.as_ref().map(|i| i.end),
            Some(t("2026-11-01T09:00:00Z"))
        );
        assert_eq!(d.status.next_run_time, Some(t("2026-11-01T10:00:00Z")));
        assert_eq!(d.wake_at, d.status.next_run_time);
        assert!(d.events.is_empty());
    }

    #[test]
    fn catch_up_is_capped_at_the_latest_ticks() {
        let mut s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        s.max_catch_up = 2;
        let st = status_after("2026-11-01T04:00:00Z", "2026-11-01T03:00:00Z");
        let d = decide_at(&s, &st, &[], t("2026-11-01T09:30:00Z")).unwrap();
        assert_eq!(hours(&d), [(7, 8), (8, 9)]);
        assert_eq!(d.events[0].0, "MissedTicksSkipped");
        assert!(
            d.events[0].1.contains("2026-11-01T07:00:00"),
            "{}",
            d.events[0].1
        );
    }

    #[test]
    fn a_new_pipeline_runs_from_its_first_tick_after_creation() {
        let s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        let created = t("2026-11-01T04:10:00Z");
        let d = decide(&Input {
            name: "p",
            generation: None,
            created,
            spec: &s,
            status: &PipelineStatus::default(),
            own: &[],
            now: t("2026-11-01T04:50:00Z"),
        })
        .unwrap();
        assert!(d.create.is_empty());
        assert_eq!(d.status.next_run_time, Some(t("2026-11-01T05:00:00Z")));
        let d = decide(&Input {
            name: "p",
            generation: None,
            created,
            spec: &s,
            status: &d.status,
            own: &[],
            now: t("2026-11-01T05:00:01Z"),
        })
        .unwrap();
        assert_eq!(hours(&d), [(4, 5)]);
    }

    #[test]
    fn the_newest_run_counts_when_the_status_write_was_lost() {
        let s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        let st = status_after("2026-11-01T04:00:00Z", "2026-11-01T03:00:00Z");
        let created = Interval {
            start: t("2026-11-01T04:00:00Z"),
            end: t("2026-11-01T05:00:00Z"),
        };
        let own = [run(created, Phase::Running)];
        let d = decide_at(&s, &st, &own, t("2026-11-01T05:10:00Z")).unwrap();
        assert!(d.create.is_empty(), "{:?}", d.create);
        assert_eq!(d.status.active, [own[0].name.clone()]);
    }

    #[test]
    fn the_newest_succeeded_and_failed_intervals_are_kept_after_their_runs_are_pruned() {
        let s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        let hour = |h: u32| Interval {
            start: t(&format!("2026-11-01T{h:02}:00:00Z")),
            end: t(&format!("2026-11-01T{:02}:00:00Z", h + 1)),
        };
        let st = status_after("2026-11-01T05:00:00Z", "2026-11-01T04:00:00Z");
        let own = [
            run(hour(1), Phase::Succeeded),
            run(hour(2), Phase::Failed),
            run(hour(3), Phase::Succeeded),
            run(hour(4), Phase::Failed),
        ];
        let now = t("2026-11-01T05:10:00Z");
        let d = decide_at(&s, &st, &own, now).unwrap();
        let end = |i: &Option<IntervalSpec>| i.as_ref().map(|i| i.end);
        assert_eq!(end(&d.status.last_succeeded_interval), Some(hour(3).end));
        assert_eq!(end(&d.status.last_failed_interval), Some(hour(4).end));
        // The runs pruned, then a newer one succeeds: the failure is kept, and older than the
        // success.
        let d = decide_at(&s, &d.status, &[run(hour(5), Phase::Succeeded)], now).unwrap();
        assert_eq!(end(&d.status.last_succeeded_interval), Some(hour(5).end));
        assert_eq!(end(&d.status.last_failed_interval), Some(hour(4).end));
    }

    #[test]
    fn time_zones_move_ticks() {
        // 02:00 in Berlin is 01:00 UTC in winter.
        let mut s = spec("0 2 * * *", ConcurrencyPolicy::Allow);
        s.time_zone = "Europe/Berlin".into();
        let st = status_after("2026-11-01T01:00:00Z", "2026-10-31T01:00:00Z");
        let d = decide_at(&s, &st, &[], t("2026-11-02T12:00:00Z")).unwrap();
        assert_eq!(d.create.len(), 1);
        assert_eq!(d.create[0].end, t("2026-11-02T01:00:00Z"));
        s.time_zone = "Mars/Olympus".into();
        let e = decide_at(&s, &st, &[], t("2026-11-02T12:00:00Z")).unwrap_err();
        assert!(e.to_string().contains("IANA"), "{e}");
        let e = Schedule::parse("every hour", "UTC")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not a cron schedule")));
    }

    #[test]
    fn forbid_runs_one_tick_at_a_time_oldest_first() {
        let s = spec("0 * * * *", ConcurrencyPolicy::Forbid);
        let st = status_after("2026-11-01T04:00:00Z", "2026-11-01T03:00:00Z");
        let active = [run(
            Interval {
                start: t("2026-11-01T03:00:00Z"),
                end: t("2026-11-01T04:00:00Z"),
            },
            Phase::Running,
        )];
        let now = t("2026-11-01T06:30:00Z");
        let d = decide_at(&s, &st, &active, now).unwrap();
        assert!(d.create.is_empty());
        assert_eq!(d.status.active_count, 1);
        let done = [run(active[0].interval, Phase::Succeeded)];
        let d = decide_at(&s, &st, &done, now).unwrap();
        assert_eq!(hours(&d), [(4, 5)]);
        assert_eq!(d.status.active_count, 1);
    }

    #[test]
    fn a_blocked_forbid_backlog_skips_nothing_until_it_runs() {
        let mut s = spec("0 * * * *", ConcurrencyPolicy::Forbid);
        s.max_catch_up = 1;
        let st = status_after("2026-11-01T04:00:00Z", "2026-11-01T03:00:00Z");
        let running = run(
            Interval {
                start: t("2026-11-01T03:00:00Z"),
                end: t("2026-11-01T04:00:00Z"),
            },
            Phase::Running,
        );
        let now = t("2026-11-01T06:30:00Z");
        let d = decide_at(&s, &st, std::slice::from_ref(&running), now).unwrap();
        assert!(d.create.is_empty() && d.events.is_empty(), "{:?}", d.events);
        // Finished, and being deleted by the history limit: no longer blocks.
        let mut done = run(running.interval, Phase::Succeeded);
        done.deleting = true;
        let d = decide_at(&s, &st, &[done], now).unwrap();
        assert_eq!(hours(&d), [(5, 6)]);
        assert_eq!(d.events[0].0, "MissedTicksSkipped");
        assert!(d.delete.is_empty(), "already being deleted");
    }

    #[test]
    fn replace_deletes_active_runs_and_runs_the_latest_tick() {
        let s = spec("0 * * * *", ConcurrencyPolicy::Replace);
        let st = status_after("2026-11-01T04:00:00Z", "2026-11-01T03:00:00Z");
        let active = [run(
            Interval {
                start: t("2026-11-01T03:00:00Z"),
                end: t("2026-11-01T04:00:00Z"),
            },
            Phase::Running,
        )];
        let d = decide_at(&s, &st, &active, t("2026-11-01T06:30:00Z")).unwrap();
        assert_eq!(hours(&d), [(5, 6)]);
        assert_eq!(d.delete, [active[0].name.clone()]);
        let reasons: Vec<&str> = d.events.iter().map(|e| e.0).collect();
        assert_eq!(reasons, ["RunReplaced", "TicksReplaced"]);
        // No tick due: nothing is replaced.
        let st = status_after("2026-11-01T06:00:00Z", "2026-11-01T05:00:00Z");
        let d = decide_at(&s, &st, &active, t("2026-11-01T06:30:00Z")).unwrap();
        assert!(d.delete.is_empty() && d.create.is_empty());
    }

    #[test]
    fn history_limits_keep_the_newest_finished_runs() {
        let mut s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        s.successful_runs_history_limit = 2;
        s.failed_runs_history_limit = 0;
        let iv = |h: u32| Interval {
            start: t("2026-11-01") + chrono::Duration::hours(h as i64),
            end: t("2026-11-01") + chrono::Duration::hours(h as i64 + 1),
        };
        let own = [
            run(iv(0), Phase::Succeeded),
            run(iv(1), Phase::Failed),
            run(iv(2), Phase::Succeeded),
            run(iv(3), Phase::Succeeded),
            run(iv(4), Phase::Running),
        ];
        let st = status_after("2026-11-01T05:00:00Z", "2026-11-01T04:00:00Z");
        let d = decide_at(&s, &st, &own, t("2026-11-01T05:30:00Z")).unwrap();
        let mut deleted = d.delete.clone();
        deleted.sort();
        assert_eq!(deleted, [own[0].name.clone(), own[1].name.clone()]);
    }

    #[test]
    fn suspended_pipelines_start_nothing_and_catch_up_on_resume() {
        let mut s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        s.suspend = true;
        let st = status_after("2026-11-01T04:00:00Z", "2026-11-01T03:00:00Z");
        let now = t("2026-11-01T06:30:00Z");
        let d = decide_at(&s, &st, &[], now).unwrap();
        assert!(d.create.is_empty());
        assert_eq!(d.status.next_run_time, None);
        s.suspend = false;
        let d = decide_at(&s, &d.status, &[], now).unwrap();
        assert_eq!(hours(&d), [(4, 5), (5, 6)]);
    }

    #[test]
    fn second_precision_schedules_work() {
        let s = spec("*/10 * * * * *", ConcurrencyPolicy::Allow);
        let st = status_after("2026-11-01T00:00:10Z", "2026-11-01T00:00:00Z");
        let d = decide_at(&s, &st, &[], t("2026-11-01T00:00:45Z")).unwrap();
        assert_eq!(d.create.len(), 3);
        assert_eq!(d.create[0].start, t("2026-11-01T00:00:10Z"));
        assert_eq!(d.create[2].end, t("2026-11-01T00:00:40Z"));
    }
}
