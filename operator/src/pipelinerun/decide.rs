//! The next status of a run, and what to do, from its spec, its current status and the Jobs
//! observed: a pure function of those and the time, so every transition is unit-tested.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::Error;
use crate::api::condition::set_condition;
use crate::api::pipelinerun::{
    COND_DEADLINE_MISSED, COND_RUNNING, COND_SUCCEEDED, DeadlineAnchor, DeadlineState, Phase,
    PipelineRunSpec, PipelineRunStatus, StagePhase, StageStatus, StageSummary, parse_duration,
};
use crate::api::stage::Stage;
use crate::pipelinerun::jobs::{JobState, ObservedJob, job_name};

/// How long an attempt's Pod may take to start (to be scheduled, its image pulled, its
/// container created) before the attempt fails: long enough for a cluster autoscaler to add a
/// node and a large image to be pulled, short enough that a Pod no node can take costs minutes,
/// not the run. An operator-wide default; `stageDeadlineSeconds` still bounds the whole attempt.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
/// How a stage's message starts while its attempt's Pod has not started.
const NOT_STARTED: &str = "not started: ";

/// What the controller should do after writing the status.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this Job (create-if-absent: the name is deterministic).
    CreateJob { stage: Stage, attempt: u32 },
    /// Nothing to do until then (a backoff ends, the deadline passes), or a Job changes.
    WaitFor(Duration),
    /// Nothing to do until a Job changes.
    Wait,
    /// The run is finished.
    Done,
}

/// A change worth an Event and a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The Event's reason: StageStarted, StageSucceeded, StageFailed, Retrying, Succeeded,
    /// Failed, DeadlineMissed.
    pub reason: &'static str,
    pub message: String,
    pub warning: bool,
    pub stage: Option<Stage>,
    /// The Job of the attempt the transition is about (the Event's related object).
    pub job: Option<String>,
    /// For a finished attempt: how long it ran, and its summary.
    pub duration: Option<Duration>,
    pub summary: Option<StageSummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: PipelineRunStatus,
    pub action: Action,
    pub transitions: Vec<Transition>,
    /// Jobs of attempts that failed while still active (their Pod cannot start): deleted once
    /// the status recording the failure is written, so the kubelet stops retrying them.
    pub delete_jobs: Vec<String>,
}

/// A transition with its Event's reason and message; warnings are the reasons that say
/// something went wrong.
pub fn transition(reason: &'static str, stage: Option<Stage>, message: String) -> Transition {
    Transition {
        reason,
        message,
        warning: matches!(
            reason,
            "StageFailed"
                | "Failed"
                | "DeadlineMissed"
                | "Retrying"
                | "SummaryMissing"
                | "InvalidSpec"
        ),
        stage,
        job: None,
        duration: None,
        summary: None,
    }
}

fn with_job(mut t: Transition, job: &str) -> Transition {
    t.job = Some(job.to_owned());
    t
}

/// The deadline of a run: `runDeadline` after its interval's end (or after its creation).
pub fn deadline(
    spec: &PipelineRunSpec,
    created: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let Some(d) = &spec.template.run_deadline else {
        return Ok(None);
    };
    let d = parse_duration("runDeadline", d)?;
    let d = chrono::Duration::from_std(d).map_err(|e| Error::InvalidSpec {
        field: "runDeadline",
        message: e.to_string(),
    })?;
    let anchor = match spec.template.run_deadline_from {
        DeadlineAnchor::IntervalEnd => spec.interval.end,
        DeadlineAnchor::Creation => match created {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    Ok(anchor.checked_add_signed(d))
}

fn new_attempt(ss: &mut StageStatus, run: &str, attempt: u32, now: DateTime<Utc>) {
    ss.attempts = attempt;
    ss.job_name = job_name(run, ss.stage, attempt);
    ss.phase = StagePhase::Running;
    ss.start_time = Some(now);
    ss.finish_time = None;
}

fn secs(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

/// What a run's next status is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The run's name (its Jobs' names derive from it).
    pub name: &'a str,
    pub generation: Option<i64>,
    /// When the run was created (a `runDeadline` may count from it).
    pub created: Option<DateTime<Utc>>,
    pub spec: &'a PipelineRunSpec,
    pub status: &'a PipelineRunStatus,
    /// The run's Jobs, as listed from the API server.
    pub jobs: &'a [ObservedJob],
    pub now: DateTime<Utc>,
}

/// Decides the next status and action of a run: a finished run only judges its deadline; a
/// run going on is taken through its stages in order, each by the state of its attempt's Job.
pub fn decide(input: &Input<'_>) -> Result<Decision, Error> {
    if input.status.phase.is_finished() {
        Ok(finished(input))
    } else {
        going_on(input)
    }
}

/// A finished run: its deadline may still pass (and a failed run then misses it); nothing else
/// changes.
fn finished(input: &Input<'_>) -> Decision {
    let Input {
        generation,
        spec,
        status,
        now,
        ..
    } = *input;
    let mut st = status.clone();
    let mut transitions = Vec::new();
    let deadline_time = st.deadline_time;
    let action = match judge_deadline(&mut st, spec, deadline_time, generation, now) {
        Judged::Missed(t) => {
            transitions.push(*t);
            Action::Done
        }
        Judged::Due(at) => Action::WaitFor(secs(at - now).max(Duration::from_millis(100))),
        Judged::Settled => Action::Done,
    };
    crate::reconcile::kstatus::run(&mut st, generation, now);
    Decision {
        status: st,
        action,
        transitions,
        delete_jobs: Vec::new(),
    }
}

/// What deciding a run that goes on gathers, stage by stage.
struct Draft {
    st: PipelineRunStatus,
    action: Action,
    transitions: Vec<Transition>,
    delete_jobs: Vec<String>,
    /// Look again then (a backoff ends, a Pod's start-up timeout passes).
    wake: Option<DateTime<Utc>>,
    /// Why the run failed, once a stage is out of attempts.
    failed: Option<String>,
    /// Why the running attempt's Pod has not started, for the Running condition.
    not_started: Option<String>,
}

/// A run not finished: its stages in spec order, up to the first that has not succeeded, each
/// decided by the state of its latest attempt's Job; then the run's phase and deadline.
fn going_on(input: &Input<'_>) -> Result<Decision, Error> {
    let Input {
        name,
        generation,
        created,
        spec,
        status,
        jobs,
        now,
    } = *input;
    if spec.template.stages.is_empty() {
        return Err(Error::InvalidSpec {
            field: "stages",
            message: "no stage to run".to_owned(),
        });
    }
    let mut st = status.clone();
    st.observed_generation = generation;
    st.start_time.get_or_insert(now);
    let deadline_time = deadline(spec, created)?;
    st.deadline_time = deadline_time;
    if st.deadline.is_none() || st.deadline == Some(DeadlineState::None) {
        st.deadline = Some(match deadline_time {
            Some(_) => DeadlineState::Pending,
            None => DeadlineState::None,
        });
    }
    let mut d = Draft {
        st,
        action: Action::Wait,
        transitions: Vec::new(),
        delete_jobs: Vec::new(),
        wake: None,
        failed: None,
        not_started: None,
    };

    for &stage in &spec.template.stages {
        let mut ss = d.st.stage(stage).cloned().unwrap_or(StageStatus {
            stage,
            phase: StagePhase::Pending,
            job_name: String::new(),
            attempts: 0,
            start_time: None,
            finish_time: None,
            message: None,
            summary: None,
        });
        if ss.phase == StagePhase::Succeeded {
            continue;
        }
        // A Job created just before a crash, before its status was written, counts.
        let latest = jobs
            .iter()
            .filter(|j| j.stage == stage)
            .map(|j| j.attempt)
            .chain([ss.attempts])
            .max()
            .unwrap_or(0);
        if latest > ss.attempts {
            new_attempt(&mut ss, name, latest, now);
        }
        d.st.current_stage = Some(stage);
        let lost;
        let mut job = jobs
            .iter()
            .find(|j| j.stage == stage && j.attempt == latest);
        if job.is_none() && latest > 0 && ss.phase == StagePhase::Running {
            // The Job is created before the status records its attempt, and Jobs are listed
            // from the API server, not a cache: a recorded attempt without its Job was deleted
            // (ttlSecondsAfterFinished, by hand) before its result was read. Whatever it did,
            // the attempt is spent: it fails, counted, and the retry policy decides.
            lost = lost_job(&ss, latest);
            job = Some(&lost);
        }
        let succeeded = match (latest, job) {
            (0, _) => {
                first_attempt(input, &mut d, &mut ss);
                false
            }
            (_, None) if ss.phase == StagePhase::BackingOff => {
                retry_after_job_gone(input, &mut d, &mut ss, latest);
                false
            }
            (_, None) => {
                // A stage recorded as BackingOff or Failed whose phase says no Job is due:
                // unreachable for Running (see `lost_job`); kept safe by creating if absent.
                d.action = Action::CreateJob {
                    stage,
                    attempt: latest,
                };
                false
            }
            (_, Some(job)) => match &job.state {
                JobState::Active => {
                    attempt_active(&mut ss, job);
                    false
                }
                JobState::NotStarted {
                    reason,
                    message,
                    since,
                } if now < startup_due(since.or(ss.start_time).or(job.start_time), now) => {
                    attempt_not_started(now, &mut d, &mut ss, job, (reason, message, *since));
                    false
                }
                JobState::Succeeded => {
                    attempt_succeeded(now, &mut d, &mut ss, latest, job);
                    true
                }
                JobState::Failed { .. } | JobState::Stuck { .. } | JobState::NotStarted { .. } => {
                    attempt_failed(input, &mut d, &mut ss, latest, job)?;
                    false
                }
            },
        };
        match d.st.stages.iter_mut().find(|s| s.stage == stage) {
            Some(slot) => *slot = ss.clone(),
            None => d.st.stages.push(ss.clone()),
        }
        d.st.attempts = Some(ss.attempts);
        if !succeeded {
            break;
        }
    }
    Ok(conclude(input, d, deadline_time))
}

/// A stage with no attempt yet: its first Job.
fn first_attempt(input: &Input<'_>, d: &mut Draft, ss: &mut StageStatus) {
    let stage = ss.stage;
    new_attempt(ss, input.name, 1, input.now);
    d.action = Action::CreateJob { stage, attempt: 1 };
    d.transitions.push(with_job(
        transition(
            "StageStarted",
            Some(stage),
            format!("{stage}: attempt 1, Job {}", ss.job_name),
        ),
        &ss.job_name,
    ));
}

/// A stage backing off whose failed Job is gone (ttlSecondsAfterFinished, or deleted by hand):
/// the status remembers when the next attempt is due.
fn retry_after_job_gone(input: &Input<'_>, d: &mut Draft, ss: &mut StageStatus, latest: u32) {
    match d.st.next_attempt_time {
        Some(due) if input.now < due => d.wake = Some(due),
        _ => retry(input, d, ss, latest, ""),
    }
}

/// The next attempt of a stage whose attempt `latest` failed: its Job is created now.
fn retry(input: &Input<'_>, d: &mut Draft, ss: &mut StageStatus, latest: u32, after: &str) {
    let stage = ss.stage;
    let max_attempts = input.spec.template.retry.max_attempts.max(1);
    new_attempt(ss, input.name, latest + 1, input.now);
    d.st.next_attempt_time = None;
    d.action = Action::CreateJob {
        stage,
        attempt: latest + 1,
    };
    d.transitions.push(with_job(
        transition(
            "Retrying",
            Some(stage),
            format!(
                "{stage}: attempt {} of {max_attempts}{after}, Job {}",
                latest + 1,
                ss.job_name
            ),
        ),
        &ss.job_name,
    ));
}

/// The attempt's Pod runs.
fn attempt_active(ss: &mut StageStatus, job: &ObservedJob) {
    ss.phase = StagePhase::Running;
    if let Some(t) = job.start_time {
        ss.start_time = Some(t);
    }
    // It started: why it had not is no longer true.
    if ss
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with(NOT_STARTED))
    {
        ss.message = None;
    }
}

/// The attempt's Pod has not started (`why`: the kubelet's reason and message, and since when),
/// within the start-up timeout: said in the stage's message and the Running condition.
fn attempt_not_started(
    now: DateTime<Utc>,
    d: &mut Draft,
    ss: &mut StageStatus,
    job: &ObservedJob,
    (reason, message, since): (&str, &str, Option<DateTime<Utc>>),
) {
    ss.phase = StagePhase::Running;
    if let Some(t) = job.start_time {
        ss.start_time = Some(t);
    }
    let why = cut_message(if message.is_empty() {
        format!("{NOT_STARTED}{reason}")
    } else {
        format!("{NOT_STARTED}{reason}: {message}")
    });
    ss.message = Some(why.clone());
    d.not_started = Some(why);
    d.wake = Some(startup_due(since.or(ss.start_time), now));
}

/// The attempt succeeded: the stage is done, with the summary its Pod left (or a warning that
/// it left none).
fn attempt_succeeded(
    now: DateTime<Utc>,
    d: &mut Draft,
    ss: &mut StageStatus,
    latest: u32,
    job: &ObservedJob,
) {
    let stage = ss.stage;
    let finish = job.finish_time.unwrap_or(now);
    ss.phase = StagePhase::Succeeded;
    ss.finish_time = Some(finish);
    ss.message = None;
    ss.summary = job
        .termination_message
        .as_deref()
        .and_then(|m| StageSummary::parse(stage, m));
    let mut t = transition(
        "StageSucceeded",
        Some(stage),
        format!("{stage}: attempt {latest} succeeded (Job {})", job.name),
    );
    t.duration = ss.start_time.map(|s| secs(finish - s));
    t.summary = ss.summary.clone();
    d.transitions.push(with_job(t, &job.name));
    if ss.summary.is_none() {
        // Its figures are lost to status and metrics: say so, not nothing.
        let why = match job.termination_message.as_deref() {
            None | Some("") => "no termination message".to_owned(),
            Some(m) => format!(
                "the termination message ({} bytes) holds no summary of this stage",
                m.len()
            ),
        };
        let message = format!("{stage}: succeeded without a summary: {why}");
        ss.message = Some(message.clone());
        d.transitions.push(with_job(
            transition("SummaryMissing", Some(stage), message),
            &job.name,
        ));
    }
}

/// The attempt failed (its Job failed, its Pod cannot start, or did not start in time): told
/// once, then retried after the backoff, or the stage fails when it is out of attempts or the
/// failure is permanent.
fn attempt_failed(
    input: &Input<'_>,
    d: &mut Draft,
    ss: &mut StageStatus,
    latest: u32,
    job: &ObservedJob,
) -> Result<(), Error> {
    let (stage, now, spec) = (ss.stage, input.now, input.spec);
    let max_attempts = spec.template.retry.max_attempts.max(1);
    // A stuck Job has no finish time: the failure's, once recorded, holds (so the backoff does
    // not slide while the Job is being deleted).
    let recorded = matches!(ss.phase, StagePhase::BackingOff | StagePhase::Failed)
        .then_some(ss.finish_time)
        .flatten();
    let finish = job.finish_time.or(recorded).unwrap_or(now);
    let permanent = permanent_failure(&job.state);
    let why = match &job.state {
        JobState::Stuck { reason, message } => {
            d.delete_jobs.push(job.name.clone());
            stuck_message(reason, message)
        }
        // Past the start-up timeout (`going_on` takes it before).
        JobState::NotStarted {
            reason, message, ..
        } => {
            d.delete_jobs.push(job.name.clone());
            let mut out = format!(
                "StartupTimeout: the stage's Pod did not start within {}s: {reason}",
                STARTUP_TIMEOUT.as_secs()
            );
            if !message.is_empty() {
                out.push_str(": ");
                out.push_str(message);
            }
            cut_message(out)
        }
        JobState::Failed {
            reason,
            message,
            container,
            ..
        } => {
            let why = failure_message(
                reason,
                message,
                container.as_deref(),
                job.termination_message.as_deref(),
            );
            match &permanent {
                Some(p) => cut_message(format!("{p}, not retried: {why}")),
                None => why,
            }
        }
        // Not a failure (`going_on` takes these before).
        JobState::Active | JobState::Succeeded => String::new(),
    };
    if !matches!(ss.phase, StagePhase::BackingOff | StagePhase::Failed) {
        ss.finish_time = Some(finish);
        ss.message = Some(why.clone());
        let mut t = transition(
            "StageFailed",
            Some(stage),
            format!("{stage}: attempt {latest}/{max_attempts} failed: {why}"),
        );
        t.duration = ss.start_time.map(|s| secs(finish - s));
        d.transitions.push(with_job(t, &job.name));
    }
    if latest >= max_attempts || permanent.is_some() {
        ss.phase = StagePhase::Failed;
        d.failed = Some(format!("{stage} failed after {latest} attempt(s): {why}"));
        return Ok(());
    }
    let wait = spec.template.retry.backoff(latest)?;
    let due = finish + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    if now < due {
        ss.phase = StagePhase::BackingOff;
        d.st.next_attempt_time = Some(due);
        d.wake = Some(due);
        return Ok(());
    }
    let after = format!(" after a {}s backoff", wait.as_secs_f64());
    retry(input, d, ss, latest, &after);
    Ok(())
}

/// The run's phase and conditions from its stages (failed, all succeeded, or going on), then
/// its deadline, and when to look again.
fn conclude(input: &Input<'_>, mut d: Draft, deadline_time: Option<DateTime<Utc>>) -> Decision {
    let Input {
        generation,
        spec,
        now,
        ..
    } = *input;
    let st = &mut d.st;
    let all_done = spec.template.stages.iter().all(|s| {
        st.stage(*s)
            .is_some_and(|x| x.phase == StagePhase::Succeeded)
    });
    if st.phase == Phase::Pending {
        st.phase = Phase::Running;
    }
    // When the run ended is when its last Job did, not when the operator noticed (after an
    // outage or a backlog, that can be much later).
    let last_finish = st.stages.iter().filter_map(|s| s.finish_time).max();
    let set = |st: &mut PipelineRunStatus, type_, status, reason, message: &str| {
        set_condition(
            &mut st.conditions,
            type_,
            status,
            reason,
            message.to_owned(),
            generation,
            now,
        );
    };
    if let Some(reason) = d.failed.take() {
        st.phase = Phase::Failed;
        st.completion_time = Some(last_finish.unwrap_or(now));
        st.next_attempt_time = None;
        set(st, COND_RUNNING, false, "Failed", &reason);
        set(st, COND_SUCCEEDED, false, "StageFailed", &reason);
        d.transitions
            .push(transition("Failed", st.current_stage, reason));
        d.action = Action::Done;
    } else if all_done {
        st.phase = Phase::Succeeded;
        st.completion_time = Some(last_finish.unwrap_or(now));
        st.current_stage = None;
        st.next_attempt_time = None;
        let message = format!("all {} stage(s) succeeded", spec.template.stages.len());
        set(st, COND_RUNNING, false, "Succeeded", &message);
        set(st, COND_SUCCEEDED, true, "Succeeded", &message);
        d.transitions.push(transition("Succeeded", None, message));
        d.action = Action::Done;
    } else {
        let stage = st.current_stage.map(|s| s.to_string()).unwrap_or_default();
        let (reason, message) = match (st.next_attempt_time, d.not_started.take()) {
            (Some(t), _) => (
                "BackingOff",
                format!("{stage}: next attempt at {}", t.to_rfc3339()),
            ),
            (None, Some(why)) => (
                "StageNotStarted",
                format!("{stage}: attempt {} {why}", st.attempts.unwrap_or(0)),
            ),
            (None, None) => (
                "StageRunning",
                format!("{stage}: attempt {}", st.attempts.unwrap_or(0)),
            ),
        };
        set(st, COND_RUNNING, true, reason, &message);
    }

    match judge_deadline(st, spec, deadline_time, generation, now) {
        Judged::Missed(t) => d.transitions.push(*t),
        Judged::Due(at) => d.wake = Some(d.wake.map_or(at, |w| w.min(at))),
        Judged::Settled => {}
    }
    if matches!(d.action, Action::Wait | Action::Done)
        && let Some(w) = d.wake
    {
        d.action = Action::WaitFor(secs(w - now).max(Duration::from_millis(100)));
    }
    crate::reconcile::kstatus::run(&mut d.st, generation, now);
    Decision {
        status: d.st,
        action: d.action,
        transitions: d.transitions,
        delete_jobs: d.delete_jobs,
    }
}

/// What [`judge_deadline`] found.
enum Judged {
    /// Missed now: the transition to publish.
    Missed(Box<Transition>),
    /// Not decided before this time.
    Due(DateTime<Utc>),
    /// No deadline, or already Met or Missed.
    Settled,
}

/// The SLA: a run meets its deadline only by succeeding by then, judged on when its last Job
/// finished; a run still going, or failed, misses it once the deadline passes.
fn judge_deadline(
    st: &mut PipelineRunStatus,
    spec: &PipelineRunSpec,
    deadline_time: Option<DateTime<Utc>>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Judged {
    let (Some(dl), Some(DeadlineState::Pending)) = (deadline_time, st.deadline) else {
        return Judged::Settled;
    };
    let succeeded = st.phase == Phase::Succeeded;
    let judged_at = if succeeded {
        st.completion_time.unwrap_or(now)
    } else {
        now
    };
    if judged_at > dl {
        st.deadline = Some(DeadlineState::Missed);
        let message = format!(
            "the run was not {} by its deadline {} ({} + {})",
            if st.phase == Phase::Failed {
                "done (it failed)"
            } else {
                "done"
            },
            dl.to_rfc3339(),
            match spec.template.run_deadline_from {
                DeadlineAnchor::IntervalEnd => "interval end",
                DeadlineAnchor::Creation => "creation",
            },
            spec.template.run_deadline.as_deref().unwrap_or_default()
        );
        set_condition(
            &mut st.conditions,
            COND_DEADLINE_MISSED,
            true,
            "DeadlineMissed",
            message.clone(),
            generation,
            now,
        );
        Judged::Missed(Box::new(transition(
            "DeadlineMissed",
            st.current_stage,
            message,
        )))
    } else if succeeded {
        st.deadline = Some(DeadlineState::Met);
        set_condition(
            &mut st.conditions,
            COND_DEADLINE_MISSED,
            false,
            "DeadlineMet",
            format!("succeeded before {}", dl.to_rfc3339()),
            generation,
            now,
        );
        Judged::Settled
    } else {
        Judged::Due(dl)
    }
}

/// The stand-in for an attempt's Job that was deleted before its result was read: failed.
fn lost_job(ss: &StageStatus, attempt: u32) -> ObservedJob {
    ObservedJob {
        name: ss.job_name.clone(),
        stage: ss.stage,
        attempt,
        state: JobState::Failed {
            reason: "JobDeleted".to_owned(),
            message: format!(
                "Job {} was deleted before its result was read (ttlSecondsAfterFinished, or deleted by hand); the attempt counts as failed",
                ss.job_name
            ),
            container: None,
            exit_code: None,
        },
        start_time: ss.start_time,
        finish_time: None,
        termination_message: None,
    }
}

/// Why a Job failed: how its container ended when the kubelet said (OOMKilled first: the log
/// lines of a killed process say nothing of why), the Job's condition, and the termination
/// message (the last log lines).
fn failure_message(
    reason: &str,
    message: &str,
    container: Option<&str>,
    termination: Option<&str>,
) -> String {
    let mut out = String::new();
    if let Some(c) = container {
        out.push_str(c);
        out.push_str("; ");
    }
    out.push_str(reason);
    if !message.is_empty() {
        out.push_str(": ");
        out.push_str(message);
    }
    if let Some(t) = termination {
        let tail: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        if !tail.is_empty() {
            out.push_str(if container.is_some() {
                "; last log lines: "
            } else {
                ": "
            });
            out.push_str(&tail);
        }
    }
    cut_message(out)
}

/// When an attempt fails if its Pod, created at `start` (or, unknown, its Job), has not started.
fn startup_due(start: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    start.unwrap_or(now) + chrono::Duration::from_std(STARTUP_TIMEOUT).unwrap_or_default()
}

/// Why a failed attempt would fail the same way again, if it would: the job image's
/// permanent exit codes (read from the Pod, or, once the Pod is gone, from the Job's
/// `PodFailurePolicy` reason), or a Job the API server refused. No retry is spent on these.
fn permanent_failure(state: &JobState) -> Option<String> {
    let JobState::Failed {
        reason, exit_code, ..
    } = state
    else {
        return None;
    };
    if let Some(code) = exit_code.filter(|c| streamflow_core::exit::is_permanent(*c)) {
        let what = streamflow_core::exit::describe(code).unwrap_or("permanent failure");
        return Some(format!("{what} (exit code {code})"));
    }
    match reason.as_str() {
        crate::pipelinerun::jobs::POD_FAILURE_POLICY => {
            Some("a permanent failure (the Job's podFailurePolicy failed it)".to_owned())
        }
        crate::pipelinerun::jobs::REFUSED => Some("the API server refused the Job".to_owned()),
        _ => None,
    }
}

/// Why an attempt whose Pod cannot start failed: the kubelet's waiting reason and message.
fn stuck_message(reason: &str, message: &str) -> String {
    let mut out = format!("{reason}: the stage's container cannot start");
    if !message.is_empty() {
        out.push_str(": ");
        out.push_str(message);
    }
    cut_message(out)
}

fn cut_message(mut out: String) -> String {
    if out.len() > 1024 {
        let mut cut = 1024;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pipelinerun::PipelineRun;
    use crate::pipelinerun::jobs::tests::run;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn job(
        stage: Stage,
        attempt: u32,
        state: JobState,
        finish: Option<&str>,
        msg: Option<&str>,
    ) -> ObservedJob {
        ObservedJob {
            name: job_name("daily", stage, attempt),
            stage,
            attempt,
            state,
            start_time: Some(t("2026-11-25T01:00:00Z")),
            finish_time: finish.map(t),
            termination_message: msg.map(str::to_owned),
        }
    }

    fn failed() -> JobState {
        JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
            container: None,
            exit_code: Some(1),
        }
    }

    #[test]
    fn an_oom_kill_is_the_first_thing_the_failure_says() {
        let r = run(serde_json::json!({"stages": ["etl"], "retry": {"maxAttempts": 1}}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let killed = JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
            container: Some("OOMKilled (exit code 137, memory limit 20Mi)".into()),
            exit_code: Some(137),
        };
        let jobs = [job(
            Stage::Etl,
            1,
            killed,
            Some("2026-11-25T01:01:00Z"),
            Some("WARN streamflow::ingest: no record after the interval's end yet"),
        )];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:01:01Z");
        assert_eq!(d.status.phase, Phase::Failed);
        let message = d.status.stage(Stage::Etl).unwrap().message.clone().unwrap();
        assert!(
            message
                .starts_with("OOMKilled (exit code 137, memory limit 20Mi); BackoffLimitExceeded"),
            "{message}"
        );
        assert!(
            message.ends_with(
                "; last log lines: WARN streamflow::ingest: no record after the interval's end yet"
            ),
            "{message}"
        );
    }

    #[test]
    fn an_attempt_whose_pod_cannot_start_fails_is_deleted_and_is_retried() {
        let r = run(serde_json::json!({"stages": ["ingest"],
            "retry": {"maxAttempts": 2, "initialBackoff": "10s"}}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let stuck = JobState::Stuck {
            reason: "ImagePullBackOff".into(),
            message: "Back-off pulling image \"streamflow:nope\"".into(),
        };
        let jobs = vec![job(Stage::Ingest, 1, stuck.clone(), None, None)];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:00:30Z");
        let ingest = d.status.stage(Stage::Ingest).unwrap();
        assert_eq!(ingest.phase, StagePhase::BackingOff);
        assert_eq!(
            ingest.message.as_deref(),
            Some(
                "ImagePullBackOff: the stage's container cannot start: Back-off pulling image \"streamflow:nope\""
            )
        );
        assert_eq!(d.delete_jobs, ["daily-ingest-1"]);
        assert_eq!(d.status.next_attempt_time, Some(t("2026-11-25T01:00:40Z")));
        assert_eq!(d.transitions[0].reason, "StageFailed");
        // Seen again before its deletion lands: the backoff does not move, nothing is told twice.
        let again = decide_at(&r, &d.status, &jobs, "2026-11-25T01:00:35Z");
        assert_eq!(
            (again.status == d.status, again.transitions.len()),
            (true, 0)
        );
        assert_eq!(again.delete_jobs, ["daily-ingest-1"]);
        // Deleted: the next attempt once the backoff is over; then the last one fails the run.
        let d = decide_at(&r, &d.status, &[], "2026-11-25T01:00:40Z");
        assert_eq!(
            d.action,
            Action::CreateJob {
                stage: Stage::Ingest,
                attempt: 2
            }
        );
        let jobs = vec![job(Stage::Ingest, 2, stuck, None, None)];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:01:00Z");
        assert_eq!(
            (d.status.phase, d.action.clone()),
            (Phase::Failed, Action::Done)
        );
        assert_eq!(d.delete_jobs, ["daily-ingest-2"]);
        assert!(
            d.status
                .condition(COND_SUCCEEDED)
                .unwrap()
                .message
                .starts_with("ingest failed after 2 attempt(s): ImagePullBackOff"),
        );
    }

    fn decide_at(
        r: &PipelineRun,
        st: &PipelineRunStatus,
        jobs: &[ObservedJob],
        now: &str,
    ) -> Decision {
        decide(&Input {
            name: "daily",
            generation: r.metadata.generation,
            created: Some(t("2026-11-25T00:00:00Z")),
            spec: &r.spec,
            status: st,
            jobs,
            now: t(now),
        })
        .unwrap()
    }

    #[test]
    fn a_permanent_failure_spends_no_retry() {
        let r = run(serde_json::json!({"stages": ["validate"], "retry": {"maxAttempts": 3}}));
        let start = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let with = |reason: &str, exit_code: Option<i32>| {
            let state = JobState::Failed {
                reason: reason.into(),
                message: "Job has reached the specified backoff limit".into(),
                container: None,
                exit_code,
            };
            let jobs = [job(
                Stage::Validate,
                1,
                state,
                Some("2026-11-25T01:01:00Z"),
                Some("error: cannot parse the checks file"),
            )];
            decide_at(&r, &start.status, &jobs, "2026-11-25T01:01:01Z")
        };
        // Exit code 3 (invalid input), read from the Pod.
        let d = with("BackoffLimitExceeded", Some(3));
        assert_eq!(
            (d.status.phase, d.action.clone()),
            (Phase::Failed, Action::Done)
        );
        let v = d.status.stage(Stage::Validate).unwrap();
        assert_eq!((v.phase, v.attempts), (StagePhase::Failed, 1));
        let message = v.message.clone().unwrap_or_default();
        assert!(
            message.starts_with("invalid input or configuration (exit code 3), not retried: "),
            "{message}"
        );
        assert!(
            message.contains("cannot parse the checks file"),
            "{message}"
        );
        let c = d.status.condition(COND_SUCCEEDED).unwrap();
        assert!(
            c.message
                .starts_with("validate failed after 1 attempt(s): invalid input"),
            "{}",
            c.message
        );
        // Checks that failed, and a usage error: permanent too.
        for code in [4, 2] {
            assert_eq!(
                with("BackoffLimitExceeded", Some(code)).status.phase,
                Phase::Failed
            );
        }
        // The Pod is gone, the Job's reason says it: a FailJob rule of its podFailurePolicy.
        let d = with("PodFailurePolicy", None);
        assert_eq!(d.status.phase, Phase::Failed, "{:?}", d.status);
        // A transient failure (exit 1), a kill (137), or nothing known: retried.
        for code in [Some(1), Some(137), None] {
            let d = with("BackoffLimitExceeded", code);
            assert_eq!(
                d.status.stage(Stage::Validate).unwrap().phase,
                StagePhase::BackingOff,
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_refused_job_fails_the_run_with_the_api_servers_message() {
        let r = run(serde_json::json!({"stages": ["etl"], "retry": {"maxAttempts": 3}}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        assert_eq!(
            d.action,
            Action::CreateJob {
                stage: Stage::Etl,
                attempt: 1
            }
        );
        // The controller's create got a 422: the refusal is the attempt's outcome.
        let server = "Job.batch \"daily-etl-1\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"1Gi\": must be less than or equal to memory limit of 20Mi";
        let refused = [crate::pipelinerun::jobs::refused(
            "daily",
            Stage::Etl,
            1,
            server.to_owned(),
        )];
        let d = decide_at(&r, &d.status, &refused, "2026-11-25T01:00:00Z");
        assert_eq!(
            (d.status.phase, d.action.clone()),
            (Phase::Failed, Action::Done)
        );
        let etl = d.status.stage(Stage::Etl).unwrap();
        assert_eq!((etl.phase, etl.attempts), (StagePhase::Failed, 1));
        let message = etl.message.clone().unwrap_or_default();
        assert!(
            message.starts_with("the API server refused the Job, not retried: JobRefused: "),
            "{message}"
        );
        assert!(
            message.contains("must be less than or equal to memory limit"),
            "{message}"
        );
        assert_eq!(
            d.transitions.iter().map(|t| t.reason).collect::<Vec<_>>(),
            ["StageFailed", "Failed"]
        );
        assert!(d.delete_jobs.is_empty(), "there is no Job to delete");
    }

    #[test]
    fn an_unschedulable_pod_is_shown_then_fails_its_attempt_after_the_startup_timeout() {
        let r = run(
            serde_json::json!({"stages": ["ingest"], "retry": {"maxAttempts": 2, "initialBackoff": "10s"}}),
        );
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let scheduler = "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
        let pending = |reason: &str, message: &str| {
            [job(
                Stage::Ingest,
                1,
                JobState::NotStarted {
                    reason: reason.into(),
                    message: message.into(),
                    since: None,
                },
                None,
                None,
            )]
        };
        let unschedulable = pending("Unschedulable", scheduler);
        // Seen at once: the stage's message and the Running condition say why.
        let d = decide_at(&r, &d.status, &unschedulable, "2026-11-25T01:00:05Z");
        let ingest = d.status.stage(Stage::Ingest).unwrap();
        assert_eq!(ingest.phase, StagePhase::Running);
        assert_eq!(
            ingest.message.as_deref(),
            Some(format!("not started: Unschedulable: {scheduler}").as_str())
        );
        let running = d.status.condition(COND_RUNNING).unwrap();
        assert_eq!(
            (running.reason.as_str(), running.message.as_str()),
            (
                "StageNotStarted",
                format!("ingest: attempt 1 not started: Unschedulable: {scheduler}").as_str()
            )
        );
        // Woken when the start-up timeout ends (the Job started at 01:00:00).
        assert_eq!(
            d.action,
            Action::WaitFor(STARTUP_TIMEOUT - Duration::from_secs(5))
        );
        assert!(d.transitions.is_empty(), "{:?}", d.transitions);
        // Still waiting just before: nothing changes.
        let early = decide_at(&r, &d.status, &unschedulable, "2026-11-25T01:04:59Z");
        assert_eq!(early.status, d.status);
        // After it: the attempt fails, its Job is deleted, the retry policy decides.
        let late = decide_at(&r, &d.status, &unschedulable, "2026-11-25T01:05:00Z");
        let ingest = late.status.stage(Stage::Ingest).unwrap();
        assert_eq!(ingest.phase, StagePhase::BackingOff);
        let message = ingest.message.clone().unwrap_or_default();
        assert!(
            message.starts_with(
                "StartupTimeout: the stage's Pod did not start within 300s: Unschedulable: 0/1 nodes"
            ),
            "{message}"
        );
        assert_eq!(late.delete_jobs, ["daily-ingest-1"]);
        assert_eq!(
            late.transitions
                .iter()
                .map(|t| t.reason)
                .collect::<Vec<_>>(),
            ["StageFailed"]
        );
        // A Pod that replaced a disrupted one at 01:20 has its own five minutes.
        let replacement = [job(
            Stage::Ingest,
            1,
            JobState::NotStarted {
                reason: "Unschedulable".into(),
                message: scheduler.into(),
                since: Some(t("2026-11-25T01:20:00Z")),
            },
            None,
            None,
        )];
        let d2 = decide_at(&r, &d.status, &replacement, "2026-11-25T01:21:00Z");
        assert_eq!(
            (
                d2.status.stage(Stage::Ingest).unwrap().phase,
                d2.action.clone()
            ),
            (
                StagePhase::Running,
                Action::WaitFor(STARTUP_TIMEOUT - Duration::from_secs(60))
            )
        );
        // A Pod that starts after a wait: the wait is no longer the stage's message.
        let started = decide_at(
            &r,
            &d.status,
            &[job(Stage::Ingest, 1, JobState::Active, None, None)],
            "2026-11-25T01:02:00Z",
        );
        let ingest = started.status.stage(Stage::Ingest).unwrap();
        assert_eq!(
            (ingest.phase, ingest.message.as_deref()),
            (StagePhase::Running, None)
        );
        assert_eq!(
            started.status.condition(COND_RUNNING).unwrap().reason,
            "StageRunning"
        );
    }

    #[test]
    fn a_new_run_starts_its_first_stage() {
        let r = run(serde_json::json!({}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        assert_eq!(
            d.action,
            Action::CreateJob {
                stage: Stage::Ingest,
                attempt: 1
            }
        );
        assert_eq!(d.status.phase, Phase::Running);
        assert_eq!(d.status.current_stage, Some(Stage::Ingest));
        let s = d.status.stage(Stage::Ingest).unwrap();
        assert_eq!(
            (s.attempts, s.job_name.as_str(), s.phase),
            (1, "daily-ingest-1", StagePhase::Running)
        );
        assert_eq!(d.transitions[0].reason, "StageStarted");
        let running = d.status.condition(COND_RUNNING).unwrap();
        assert_eq!(
            (running.status.as_str(), running.observed_generation),
            ("True", Some(1))
        );
        // Not decided yet: Unknown (kstatus and Argo CD would read False as failed), and
        // Reconciling says work is in progress.
        let succeeded = d.status.condition(COND_SUCCEEDED).unwrap();
        assert_eq!(
            (succeeded.status.as_str(), succeeded.reason.as_str()),
            ("Unknown", "StageRunning")
        );
        let reconciling = d
            .status
            .condition(crate::reconcile::kstatus::COND_RECONCILING)
            .unwrap();
        assert_eq!(reconciling.status, "True");
    }

    #[test]
    fn a_succeeded_stage_records_its_summary_and_starts_the_next() {
        let r = run(serde_json::json!({}));
        let d1 = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let summary = r#"{"stage":"ingest","mode":"interval","complete":true,"records":40,"quarantined":2,"skipped":0,"bytes":1,"files":1,"duration_ms":5,"topics":{}}"#;
        let jobs = [job(
            Stage::Ingest,
            1,
            JobState::Succeeded,
            Some("2026-11-25T01:02:00Z"),
            Some(summary),
        )];
        let d = decide_at(&r, &d1.status, &jobs, "2026-11-25T01:02:01Z");
        assert_eq!(
            d.action,
            Action::CreateJob {
                stage: Stage::Etl,
                attempt: 1
            }
        );
        let ingest = d.status.stage(Stage::Ingest).unwrap();
        assert_eq!(ingest.phase, StagePhase::Succeeded);
        let s = ingest.summary.as_ref().unwrap();
        assert_eq!((s.records, s.quarantined), (Some(40), Some(2)));
        let reasons: Vec<_> = d.transitions.iter().map(|t| t.reason).collect();
        assert_eq!(reasons, ["StageSucceeded", "StageStarted"]);
        assert_eq!(d.transitions[0].duration, Some(Duration::from_secs(120)));
    }

    #[test]
    fn a_failed_attempt_backs_off_then_retries_then_the_run_fails() {
        let r = run(
            serde_json::json!({"stages": ["etl"], "retry": {"maxAttempts": 2, "initialBackoff": "10s"}}),
        );
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let jobs = vec![job(
            Stage::Etl,
            1,
            failed(),
            Some("2026-11-25T01:01:00Z"),
            Some("error: no landing data"),
        )];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:01:02Z");
        assert_eq!(d.action, Action::WaitFor(Duration::from_secs(8)));
        let etl = d.status.stage(Stage::Etl).unwrap();
        assert_eq!(etl.phase, StagePhase::BackingOff);
        assert!(etl.message.as_ref().unwrap().contains("no landing data"));
        assert_eq!(d.status.next_attempt_time, Some(t("2026-11-25T01:01:10Z")));
        assert_eq!(d.transitions[0].reason, "StageFailed");
        // Looked at again before the backoff ends: nothing changes, no second StageFailed.
        let again = decide_at(&r, &d.status, &jobs, "2026-11-25T01:01:05Z");
        assert_eq!(
            (again.status == d.status, again.transitions.len()),
            (true, 0)
        );
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:01:10Z");
        assert_eq!(
            d.action,
            Action::CreateJob {
                stage: Stage::Etl,
                attempt: 2
            }
        );
        assert_eq!(d.transitions[0].reason, "Retrying");
        assert_eq!(d.status.next_attempt_time, None);
        let mut jobs = jobs;
        jobs.push(job(
            Stage::Etl,
            2,
            failed(),
            Some("2026-11-25T01:02:00Z"),
            None,
        ));
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:02:01Z");
        assert_eq!(d.action, Action::Done);
        assert_eq!(d.status.phase, Phase::Failed);
        let c = d.status.condition(COND_SUCCEEDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "StageFailed")
        );
        assert!(
            c.message
                .starts_with("etl failed after 2 attempt(s): BackoffLimitExceeded"),
            "{}",
            c.message
        );
        // A finished run stays as it is.
        let done = decide_at(&r, &d.status, &jobs, "2026-11-26T00:00:00Z");
        assert_eq!((done.status == d.status, done.action), (true, Action::Done));
    }

    #[test]
    fn a_job_created_before_a_crash_is_not_created_again() {
        let r = run(serde_json::json!({}));
        // Status never recorded the attempt; the Job exists and runs.
        let jobs = [job(Stage::Ingest, 1, JobState::Active, None, None)];
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &jobs,
            "2026-11-25T01:00:00Z",
        );
        assert_eq!(d.action, Action::Wait);
        assert_eq!(d.status.stage(Stage::Ingest).unwrap().attempts, 1);
    }

    #[test]
    fn a_stage_that_succeeds_without_a_readable_summary_says_so() {
        let r = run(serde_json::json!({"stages": ["ingest"]}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        // What a kubelet leaves of a summary longer than 4096 bytes: its start.
        let cut = r#"{"stage":"ingest","mode":"watermark","complete":true,"records":12,"topics":{"user_events":{"partitions":{"0":{"from""#;
        let jobs = [job(
            Stage::Ingest,
            1,
            JobState::Succeeded,
            Some("2026-11-25T01:01:00Z"),
            Some(cut),
        )];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:01:01Z");
        assert_eq!(d.status.phase, Phase::Succeeded);
        let ingest = d.status.stage(Stage::Ingest).unwrap();
        assert_eq!(ingest.summary, None);
        assert!(
            ingest
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("holds no summary"),
            "{ingest:?}"
        );
        let missing = d.transitions.iter().find(|t| t.reason == "SummaryMissing");
        assert!(missing.is_some_and(|t| t.warning), "{:?}", d.transitions);
    }

    #[test]
    fn a_job_deleted_before_its_result_was_read_is_a_failed_attempt() {
        let r = run(
            serde_json::json!({"stages": ["etl"], "retry": {"maxAttempts": 2, "initialBackoff": "10s"}}),
        );
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        // Attempt 1 recorded; its Job is gone (ttlSecondsAfterFinished: 0, or by hand).
        let d = decide_at(&r, &d.status, &[], "2026-11-25T01:05:00Z");
        let etl = d.status.stage(Stage::Etl).unwrap();
        assert_eq!((etl.phase, etl.attempts), (StagePhase::BackingOff, 1));
        assert!(
            etl.message
                .as_deref()
                .unwrap_or_default()
                .contains("was deleted before its result was read"),
            "{etl:?}"
        );
        assert_eq!(
            d.transitions.iter().map(|t| t.reason).collect::<Vec<_>>(),
            ["StageFailed"]
        );
        assert_eq!(d.action, Action::WaitFor(Duration::from_secs(10)));
        // The retry is attempt 2, and its Job vanishing too spends the last attempt.
        let d = decide_at(&r, &d.status, &[], "2026-11-25T01:05:10Z");
        assert_eq!(
            d.action,
            Action::CreateJob {
                stage: Stage::Etl,
                attempt: 2
            }
        );
        let d = decide_at(&r, &d.status, &[], "2026-11-25T01:06:00Z");
        assert_eq!(d.status.phase, Phase::Failed, "{:?}", d.status);
        assert_eq!(d.action, Action::Done);
    }

    #[test]
    fn the_deadline_is_judged_on_the_jobs_times_not_on_when_the_operator_looked() {
        let r = run(serde_json::json!({"stages": ["validate"], "runDeadline": "1h"}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T00:10:00Z",
        );
        // The Job finished at 00:50, before the 01:00 deadline; the operator was down until 03:00.
        let jobs = [job(
            Stage::Validate,
            1,
            JobState::Succeeded,
            Some("2026-11-25T00:50:00Z"),
            None,
        )];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T03:00:00Z");
        assert_eq!(
            (d.status.phase, d.status.deadline),
            (Phase::Succeeded, Some(DeadlineState::Met))
        );
        assert_eq!(d.status.completion_time, Some(t("2026-11-25T00:50:00Z")));
        assert!(d.transitions.iter().all(|t| t.reason != "DeadlineMissed"));
    }

    #[test]
    fn a_failed_run_never_meets_its_deadline_and_misses_it_when_it_passes() {
        let r = run(
            serde_json::json!({"stages": ["validate"], "runDeadline": "1h", "retry": {"maxAttempts": 1}}),
        );
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T00:10:00Z",
        );
        let jobs = [job(
            Stage::Validate,
            1,
            failed(),
            Some("2026-11-25T00:20:00Z"),
            None,
        )];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T00:20:01Z");
        assert_eq!(
            (d.status.phase, d.status.deadline),
            (Phase::Failed, Some(DeadlineState::Pending))
        );
        assert_eq!(d.status.completion_time, Some(t("2026-11-25T00:20:00Z")));
        // Looked at again when the deadline passes.
        assert_eq!(d.action, Action::WaitFor(Duration::from_secs(40 * 60 - 1)));
        let early = decide_at(&r, &d.status, &[], "2026-11-25T00:59:00Z");
        assert_eq!(early.status, d.status);
        let late = decide_at(&r, &d.status, &[], "2026-11-25T01:00:01Z");
        assert_eq!(late.status.deadline, Some(DeadlineState::Missed));
        assert_eq!(
            late.transitions
                .iter()
                .map(|t| t.reason)
                .collect::<Vec<_>>(),
            ["DeadlineMissed"]
        );
        assert_eq!(late.action, Action::Done);
        let again = decide_at(&r, &late.status, &[], "2026-11-25T02:00:00Z");
        assert!(again.transitions.is_empty());
    }

    #[test]
    fn an_unchanged_world_gives_an_unchanged_status() {
        let r = run(serde_json::json!({"runDeadline": "6h"}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let jobs = [job(Stage::Ingest, 1, JobState::Active, None, None)];
        let d1 = decide_at(&r, &d.status, &jobs, "2026-11-25T01:00:05Z");
        let d2 = decide_at(&r, &d1.status, &jobs, "2026-11-25T01:03:00Z");
        assert_eq!(
            d1.status, d2.status,
            "no status write, so no reconcile storm"
        );
        assert_eq!(
            d2.action,
            Action::WaitFor(Duration::from_secs(5 * 3600 - 180))
        );
    }

    #[test]
    fn the_deadline_is_missed_once_and_the_run_carries_on() {
        let r = run(serde_json::json!({"stages": ["etl"], "runDeadline": "1h"}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T00:30:00Z",
        );
        assert_eq!(d.status.deadline, Some(DeadlineState::Pending));
        assert_eq!(d.status.deadline_time, Some(t("2026-11-25T01:00:00Z")));
        let jobs = [job(Stage::Etl, 1, JobState::Active, None, None)];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:00:01Z");
        assert_eq!(d.status.deadline, Some(DeadlineState::Missed));
        assert_eq!(
            d.transitions.iter().map(|t| t.reason).collect::<Vec<_>>(),
            ["DeadlineMissed"]
        );
        assert_eq!(
            d.status.condition(COND_DEADLINE_MISSED).unwrap().status,
            "True"
        );
        assert_eq!(d.status.phase, Phase::Running);
        let again = decide_at(&r, &d.status, &jobs, "2026-11-25T01:10:00Z");
        assert!(again.transitions.is_empty());
        let jobs = [job(
            Stage::Etl,
            1,
            JobState::Succeeded,
            Some("2026-11-25T01:20:00Z"),
            None,
        )];
        let done = decide_at(&r, &again.status, &jobs, "2026-11-25T01:20:01Z");
        assert_eq!(
            (done.status.phase, done.status.deadline),
            (Phase::Succeeded, Some(DeadlineState::Missed))
        );
    }

    #[test]
    fn a_retry_is_due_even_when_the_failed_job_is_gone() {
        let r = run(serde_json::json!({"stages": ["etl"], "retry": {"initialBackoff": "10s"}}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T01:00:00Z",
        );
        let jobs = [job(
            Stage::Etl,
            1,
            failed(),
            Some("2026-11-25T01:01:00Z"),
            None,
        )];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T01:01:01Z");
        assert_eq!(
            d.status.stage(Stage::Etl).unwrap().phase,
            StagePhase::BackingOff
        );
        // The Job was deleted by its TTL during the backoff.
        let early = decide_at(&r, &d.status, &[], "2026-11-25T01:01:05Z");
        assert_eq!(early.action, Action::WaitFor(Duration::from_secs(5)));
        let due = decide_at(&r, &d.status, &[], "2026-11-25T01:01:10Z");
        assert_eq!(
            due.action,
            Action::CreateJob {
                stage: Stage::Etl,
                attempt: 2
            }
        );
    }

    #[test]
    fn the_deadline_can_count_from_creation() {
        let r = run(serde_json::json!({"runDeadline": "30m", "runDeadlineFrom": "Creation"}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T00:10:00Z",
        );
        assert_eq!(d.status.deadline_time, Some(t("2026-11-25T00:30:00Z")));
    }

    #[test]
    fn a_run_done_in_time_meets_its_deadline() {
        let r = run(serde_json::json!({"stages": ["validate"], "runDeadline": "1h"}));
        let d = decide_at(
            &r,
            &PipelineRunStatus::default(),
            &[],
            "2026-11-25T00:10:00Z",
        );
        let jobs = [job(
            Stage::Validate,
            1,
            JobState::Succeeded,
            Some("2026-11-25T00:20:00Z"),
            None,
        )];
        let d = decide_at(&r, &d.status, &jobs, "2026-11-25T00:20:01Z");
        assert_eq!(
            (d.status.phase, d.status.deadline),
            (Phase::Succeeded, Some(DeadlineState::Met))
        );
        assert_eq!(d.status.condition(COND_SUCCEEDED).unwrap().status, "True");
        assert_eq!(
            d.status.condition(COND_DEADLINE_MISSED).unwrap().status,
            "False"
        );
        assert_eq!(d.action, Action::Done);
    }
}
