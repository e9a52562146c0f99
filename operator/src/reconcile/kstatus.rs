//! The conditions GitOps tools read (Kubernetes API conventions; kstatus, which Flux uses):
//! `Ready`, `Reconciling` (work in progress) and `Stalled` (no progress without a change),
//! derived from each kind's phase and own conditions by one pure function per kind, called
//! wherever its status is decided. kstatus reads `Reconciling=True` as InProgress,
//! `Stalled=True` as Failed, anything else (with `observedGeneration` current) as Current.

use chrono::{DateTime, Utc};

use crate::api::backfill::{self, BackfillStatus};
use crate::api::condition::{Condition, set_condition_status};
use crate::api::pipeline::{self, PipelineStatus};
use crate::api::pipelinerun::{COND_RUNNING, COND_SUCCEEDED, Phase, PipelineRunStatus};

pub const COND_READY: &str = "Ready";
pub const COND_RECONCILING: &str = "Reconciling";
pub const COND_STALLED: &str = "Stalled";

/// Where an object stands, for a GitOps tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Work in progress: `Reconciling=True`.
    Reconciling,
    /// Done, or doing what it should (a scheduling Pipeline): `Ready=True`.
    Ready,
    /// Cannot progress until its spec (or the world) changes: `Stalled=True`.
    Stalled,
    /// Suspended: nothing in progress, as its spec asks, so `Ready=True` with reason
    /// `Suspended` (kstatus reads `Ready=False` as InProgress, which would hold a Flux sync
    /// until its timeout); Argo CD's check shows it as Suspended.
    Idle,
}

/// Sets `Ready`, `Reconciling` and `Stalled` for `state`, all with the same reason and message
/// (the one that says why).
pub fn set_state(
    conditions: &mut Vec<Condition>,
    state: State,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    for (type_, on) in [
        (COND_READY, State::Ready),
        (COND_RECONCILING, State::Reconciling),
        (COND_STALLED, State::Stalled),
    ] {
        let status = if state == on || (on == State::Ready && state == State::Idle) {
            "True"
        } else {
            "False"
        };
        set_condition_status(
            conditions,
            type_,
            status,
            reason,
            message.to_owned(),
            generation,
            now,
        );
    }
}

fn why(conditions: &[Condition], type_: &str, default: &str) -> (String, String) {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| (default.to_owned(), String::new()))
}

/// A run: Pending/Running reconciles (and `Succeeded` is Unknown until it is decided),
/// Succeeded is Ready, Failed (a stage out of attempts, an invalid spec) is Stalled.
pub fn run(st: &mut PipelineRunStatus, generation: Option<i64>, now: DateTime<Utc>) {
    st.observed_generation = generation;
    let (state, (reason, message)) = match st.phase {
        Phase::Pending | Phase::Running => {
            let (reason, message) = why(&st.conditions, COND_RUNNING, "Pending");
            set_condition_status(
                &mut st.conditions,
                COND_SUCCEEDED,
                "Unknown",
                &reason,
                message.clone(),
                generation,
                now,
            );
            (State::Reconciling, (reason, message))
        }
        Phase::Succeeded => (
            State::Ready,
            why(&st.conditions, COND_SUCCEEDED, "Succeeded"),
        ),
        Phase::Failed => (
            State::Stalled,
            why(&st.conditions, COND_SUCCEEDED, "Failed"),
        ),
    };
    set_state(
        &mut st.conditions,
        state,
        &reason,
        &message,
        generation,
        now,
    );
}

/// A Backfill: reconciles while intervals are left (failed runs included) or its Pipeline is
/// missing; Ready once every interval is done without a failure (or a dry run is planned);
/// Stalled once done with failures, or when its spec is invalid; Idle while suspended.
pub fn backfill(st: &mut BackfillStatus, generation: Option<i64>, now: DateTime<Utc>) {
    st.observed_generation = generation;
    let (p_reason, p_message) = why(&st.conditions, backfill::COND_PROGRESSING, "Pending");
    let (f_reason, f_message) = why(&st.conditions, backfill::COND_FAILED, "");
    let (c_reason, c_message) = why(&st.conditions, backfill::COND_COMPLETE, "");
    let failed = st.is_true(backfill::COND_FAILED);
    let (state, reason, message) = if failed && f_reason == "InvalidSpec" {
        (State::Stalled, f_reason, f_message)
    } else if st.is_true(backfill::COND_COMPLETE) {
        if failed {
            (State::Stalled, f_reason, f_message)
        } else {
            (State::Ready, c_reason, c_message)
        }
    } else if p_reason == "DryRun" {
        (State::Ready, p_reason, p_message)
    } else if st.is_true(backfill::COND_SUSPENDED) && !st.is_true(backfill::COND_PROGRESSING) {
        (State::Idle, p_reason, p_message)
    } else {
        (State::Reconciling, p_reason, p_message)
    };
    set_state(
        &mut st.conditions,
        state,
        &reason,
        &message,
        generation,
        now,
    );
}

/// A Pipeline is never done: Ready while it schedules (runs in flight or not: a GitOps tool
/// should not wait for every tick), Stalled when its spec is invalid, Idle while suspended.
pub fn pipeline(st: &mut PipelineStatus, generation: Option<i64>, now: DateTime<Utc>) {
    st.observed_generation = generation;
    let (reason, message) = why(&st.conditions, pipeline::COND_READY, "Pending");
    let ready = st
        .condition(pipeline::COND_READY)
        .is_some_and(|c| c.status == "True");
    let state = if reason == "Suspended" {
        State::Idle
    } else if ready {
        State::Ready
    } else if reason == "InvalidSpec" {
        State::Stalled
    } else {
        State::Reconciling
    };
    set_state(
        &mut st.conditions,
        state,
        &reason,
        &message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: format!("{type_} {reason}"),
            last_transition_time: t("2026-01-01T00:00:00Z"),
            observed_generation: Some(1),
        }
    }

    /// (Ready, Reconciling, Stalled) statuses and the reason they share.
    fn states(conditions: &[Condition]) -> (String, String, String, String) {
        let get = |ty: &str| conditions.iter().find(|c| c.type_ == ty).unwrap();
        (
            get(COND_READY).status.clone(),
            get(COND_RECONCILING).status.clone(),
            get(COND_STALLED).status.clone(),
            get(COND_READY).reason.clone(),
        )
    }

    fn s(r: &str, rc: &str, st: &str, reason: &str) -> (String, String, String, String) {
        (r.into(), rc.into(), st.into(), reason.into())
    }

    #[test]
    fn a_run_reconciles_until_it_succeeds_or_stalls() {
        let now = t("2026-01-02T00:00:00Z");
        let mut st = PipelineRunStatus {
            phase: Phase::Running,
            conditions: vec![
                cond(COND_RUNNING, "True", "BackingOff"),
                // Written by an older operator: False while running.
                cond(COND_SUCCEEDED, "False", "Running"),
            ],
            ..Default::default()
        };
        run(&mut st, Some(3), now);
        assert_eq!(
            states(&st.conditions),
            s("False", "True", "False", "BackingOff")
        );
        let succeeded = st.condition(COND_SUCCEEDED).unwrap();
        assert_eq!(
            (succeeded.status.as_str(), succeeded.last_transition_time),
            ("Unknown", now)
        );
        assert_eq!(st.observed_generation, Some(3));

        st.phase = Phase::Succeeded;
        st.conditions = vec![cond(COND_SUCCEEDED, "True", "Succeeded")];
        run(&mut st, Some(4), now);
        assert_eq!(
            states(&st.conditions),
            s("True", "False", "False", "Succeeded")
        );
        // Finished objects keep observedGeneration current too (kstatus reads a stale one
        // as InProgress).
        assert_eq!(st.observed_generation, Some(4));

        for reason in ["StageFailed", "InvalidSpec"] {
            st.phase = Phase::Failed;
            st.conditions = vec![cond(COND_SUCCEEDED, "False", reason)];
            run(&mut st, Some(4), now);
            assert_eq!(states(&st.conditions), s("False", "False", "True", reason));
            assert_eq!(
                st.condition(COND_STALLED).unwrap().message,
                format!("Succeeded {reason}")
            );
        }
    }

    #[test]
    fn deriving_again_changes_no_transition_time() {
        let mut st = PipelineRunStatus {
            phase: Phase::Running,
            conditions: vec![cond(COND_RUNNING, "True", "StageRunning")],
            ..Default::default()
        };
        run(&mut st, Some(1), t("2026-01-02T00:00:00Z"));
        let first = st.clone();
        run(&mut st, Some(1), t("2026-01-03T00:00:00Z"));
        assert_eq!(st, first, "the same state again writes nothing");
        // Reason changes alone (BackingOff) keep the time; a status change moves it.
        st.conditions[0].reason = "BackingOff".into();
        run(&mut st, Some(1), t("2026-01-04T00:00:00Z"));
        let rec = st.condition(COND_RECONCILING).unwrap();
        assert_eq!(
            (rec.reason.as_str(), rec.last_transition_time),
            ("BackingOff", t("2026-01-02T00:00:00Z"))
        );
        st.phase = Phase::Succeeded;
        run(&mut st, Some(1), t("2026-01-05T00:00:00Z"));
        let rec = st.condition(COND_RECONCILING).unwrap();
        assert_eq!(
            (rec.status.as_str(), rec.last_transition_time),
            ("False", t("2026-01-05T00:00:00Z"))
        );
    }

    #[test]
    fn a_backfill_reconciles_while_intervals_are_left() {
        let now = t("2026-01-02T00:00:00Z");
        let cases: [(&[Condition], _); 7] = [
            (
                // Runs active, one failed already: still in progress.
                &[
                    cond(backfill::COND_PROGRESSING, "True", "RunsActive"),
                    cond(backfill::COND_FAILED, "True", "RunsFailed"),
                ],
                s("False", "True", "False", "RunsActive"),
            ),
            (
                &[
                    cond(backfill::COND_PROGRESSING, "False", "Finished"),
                    cond(backfill::COND_COMPLETE, "True", "Finished"),
                    cond(backfill::COND_FAILED, "False", "NoRunFailed"),
                ],
                s("True", "False", "False", "Finished"),
            ),
            (
                &[
                    cond(backfill::COND_PROGRESSING, "False", "Finished"),
                    cond(backfill::COND_COMPLETE, "True", "Finished"),
                    cond(backfill::COND_FAILED, "True", "RunsFailed"),
                ],
                s("False", "False", "True", "RunsFailed"),
            ),
            (
                &[
                    cond(backfill::COND_PROGRESSING, "False", "InvalidSpec"),
                    cond(backfill::COND_FAILED, "True", "InvalidSpec"),
                ],
                s("False", "False", "True", "InvalidSpec"),
            ),
            (
                &[
                    cond(backfill::COND_PROGRESSING, "False", "Suspended"),
                    cond(backfill::COND_SUSPENDED, "True", "Suspended"),
                ],
                s("True", "False", "False", "Suspended"),
            ),
            (
                &[cond(backfill::COND_PROGRESSING, "False", "DryRun")],
                s("True", "False", "False", "DryRun"),
            ),
            (
                &[cond(
                    backfill::COND_PROGRESSING,
                    "False",
                    "PipelineNotFound",
                )],
                s("False", "True", "False", "PipelineNotFound"),
            ),
        ];
        for (conditions, want) in cases {
            let mut st = BackfillStatus {
                conditions: conditions.to_vec(),
                ..Default::default()
            };
            backfill(&mut st, Some(2), now);
            assert_eq!(states(&st.conditions), want, "{conditions:?}");
            assert_eq!(st.observed_generation, Some(2));
        }
    }

    #[test]
    fn a_pipeline_is_ready_while_it_schedules() {
        let now = t("2026-01-02T00:00:00Z");
        for (ready, want) in [
            (
                cond(pipeline::COND_READY, "True", "Scheduling"),
                s("True", "False", "False", "Scheduling"),
            ),
            (
                cond(pipeline::COND_READY, "True", "Suspended"),
                s("True", "False", "False", "Suspended"),
            ),
            (
                cond(pipeline::COND_READY, "False", "InvalidSpec"),
                s("False", "False", "True", "InvalidSpec"),
            ),
        ] {
            let mut st = PipelineStatus {
                conditions: vec![ready.clone()],
                ..Default::default()
            };
            pipeline(&mut st, Some(5), now);
            assert_eq!(states(&st.conditions), want, "{ready:?}");
            // Its own Ready condition is the kstatus one: kept, not duplicated.
            assert_eq!(st.conditions.len(), 3);
            assert_eq!(st.observed_generation, Some(5));
        }
    }
}
