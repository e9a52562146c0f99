//! The PipelineRuns that a Backfill or a Pipeline stamps out, one per data interval: their
//! deterministic names, labels and owner references, and reading them back. Pure functions.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use streamflow_core::Interval;
use streamflow_core::backfill::PriorOutcome;

use crate::api::labels::{LABEL_MANAGED_BY, MANAGER};
use crate::api::parent::ChildRunRef;
use crate::api::pipelinerun::MAX_RUN_NAME;
use crate::api::pipelinerun::{IntervalSpec, Phase, PipelineRun, PipelineRunSpec, RunTemplate};
use crate::to_chrono;

/// The most characters of a Backfill's or Pipeline's name: it is a label value of its runs.
pub const MAX_PARENT_NAME: usize = 63;

/// Which kind of parent stamps a run: part of its name, so that a Backfill and a Pipeline of
/// the same name never stamp the same run name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentKind {
    Backfill,
    Pipeline,
}

impl ParentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParentKind::Backfill => "Backfill",
            ParentKind::Pipeline => "Pipeline",
        }
    }

    /// After the start stamp: a Pipeline's run names end in the stamp (a digit), a Backfill's
    /// in `-bf`, so the two can never be equal whatever the parents are called.
    fn suffix(self) -> &'static str {
        match self {
            ParentKind::Backfill => "-bf",
            ParentKind::Pipeline => "",
        }
    }
}

/// The name of the run of `interval` stamped by the `kind` named `parent`.
pub fn run_name(kind: ParentKind, parent: &str, interval: &Interval) -> String {
    stamped_name(
        parent,
        &format!("{}{}", start_stamp(interval.start), kind.suffix()),
    )
}

/// The name of a Pipeline's run: `<parent>-<start>`, e.g. `daily-20261101` or
/// `hourly-20261101t13`; a Backfill's adds `-bf` ([`run_name`]). Deterministic, so creating
/// it again (a retried reconcile, a restarted operator, a re-applied manifest) finds the run
/// that is already there instead of starting a second. The interval start is written as
/// compactly as it is precise. When the name would be longer than a run's name may be, the
/// parent's name is cut and a hash of the whole of it keeps different parents apart.
pub fn child_name(parent: &str, interval: &Interval) -> String {
    run_name(ParentKind::Pipeline, parent, interval)
}

fn stamped_name(parent: &str, stamp: &str) -> String {
    let name = format!("{parent}-{stamp}");
    if name.len() <= MAX_RUN_NAME {
        return name;
    }
    let digest = Sha256::digest(parent.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = MAX_RUN_NAME - stamp.len() - hash.len() - 2;
    // Names are DNS-1123 (ASCII), so any byte index is a char boundary.
    let prefix = parent[..keep.min(parent.len())].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}-{stamp}")
}

/// `YYYYMMDD`, then `tHH`, `MM`, `SS` only as far as the time is not zero.
fn start_stamp(t: DateTime<Utc>) -> String {
    let date = t.format("%Y%m%d").to_string();
    match (t.hour(), t.minute(), t.second()) {
        (0, 0, 0) => date,
        (h, 0, 0) => format!("{date}t{h:02}"),
        (h, m, 0) => format!("{date}t{h:02}{m:02}"),
        (h, m, s) => format!("{date}t{h:02}{m:02}{s:02}"),
    }
}

/// The PipelineRun for `interval`, owned (controller) by `owner`, from `template`.
pub fn build_child(
    kind: ParentKind,
    parent: &str,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    template: &RunTemplate,
    interval: &Interval,
) -> PipelineRun {
    let mut labels = labels;
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned());
    PipelineRun {
        metadata: ObjectMeta {
            name: Some(run_name(kind, parent, interval)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: PipelineRunSpec {
            interval: IntervalSpec {
                start: interval.start,
                end: interval.end,
            },
            template: template.clone(),
        },
        status: None,
    }
}

/// What a parent needs to know of one of its runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRun {
    pub name: String,
    pub interval: Interval,
    pub phase: Phase,
    /// Being deleted: its Jobs may still be running.
    pub deleting: bool,
    pub created: Option<DateTime<Utc>>,
    /// Its controller is the object with this uid.
    pub controller_uid: Option<String>,
    /// Its owner references other than its controller's (kept when it is released).
    pub other_owners: Vec<OwnerReference>,
}

impl ObservedRun {
    pub fn from_run(run: &PipelineRun) -> ObservedRun {
        ObservedRun {
            name: run.name_any(),
            interval: Interval {
                start: run.spec.interval.start,
                end: run.spec.interval.end,
            },
            phase: run.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            deleting: run.metadata.deletion_timestamp.is_some(),
            created: run.metadata.creation_timestamp.as_ref().and_then(to_chrono),
            controller_uid: run
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            other_owners: run
                .owner_references()
                .iter()
                .filter(|o| o.controller != Some(true))
                .cloned()
                .collect(),
        }
    }

    /// Still running, or about to: counts against concurrency limits. An unfinished run being
    /// deleted counts until it is gone, since its Jobs may still be running; a finished one
    /// being deleted (history limits) runs nothing.
    pub fn is_active(&self) -> bool {
        !self.phase.is_finished()
    }

    /// The run as a parent's status lists it.
    pub fn listed(&self) -> ChildRunRef {
        ChildRunRef {
            name: self.name.clone(),
            interval: self.interval.to_string(),
            phase: self.phase,
        }
    }

    pub fn outcome(&self) -> PriorOutcome {
        if self.is_active() {
            PriorOutcome::Active
        } else if self.phase == Phase::Succeeded {
            PriorOutcome::Succeeded
        } else {
            PriorOutcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamflow_core::interval::parse_time;

    fn iv(start: &str, end: &str) -> Interval {
        Interval {
            start: parse_time(start).unwrap(),
            end: parse_time(end).unwrap(),
        }
    }

    #[test]
    fn names_are_as_precise_as_the_start() {
        let day = iv("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z");
        assert_eq!(child_name("daily", &day), "daily-20261101");
        let hour = iv("2026-11-01T13:00:00Z", "2026-11-01T14:00:00Z");
        assert_eq!(child_name("hourly", &hour), "hourly-20261101t13");
        let min = iv("2026-11-01T13:05:00Z", "2026-11-01T13:10:00Z");
        assert_eq!(child_name("p", &min), "p-20261101t1305");
        let sec = iv("2026-11-01T13:05:10Z", "2026-11-01T13:05:20Z");
        assert_eq!(child_name("p", &sec), "p-20261101t130510");
    }

    #[test]
    fn a_backfill_and_a_pipeline_of_one_name_stamp_different_names() {
        let day = iv("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z");
        let bf = run_name(ParentKind::Backfill, "daily", &day);
        assert_eq!(bf, "daily-20261101-bf");
        assert_ne!(bf, run_name(ParentKind::Pipeline, "daily", &day));
        // Cut names too: the suffix survives the cut.
        let long = "p".repeat(60);
        let (b, p) = (
            run_name(ParentKind::Backfill, &long, &day),
            run_name(ParentKind::Pipeline, &long, &day),
        );
        assert!(
            b.len() <= MAX_RUN_NAME && p.len() <= MAX_RUN_NAME,
            "{b} {p}"
        );
        assert!(b.ends_with("-20261101-bf"), "{b}");
        assert_ne!(b, p);
    }

    #[test]
    fn long_parent_names_are_cut_and_hashed_apart() {
        let i = iv("2026-11-01T13:05:10Z", "2026-11-01T13:05:20Z");
        let a = "a-very-long-backfill-name-for-the-whole-of-last-year-one";
        let b = "a-very-long-backfill-name-for-the-whole-of-last-year-two";
        let (na, nb) = (child_name(a, &i), child_name(b, &i));
        assert!(na.len() <= MAX_RUN_NAME, "{na}");
        assert_ne!(na, nb);
        assert!(na.ends_with("-20261101t130510"), "{na}");
        assert_eq!(na, child_name(a, &i), "deterministic");
        let valid = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        assert!(valid(&na), "{na}");
        // A prefix that would end in '-' after the cut does not give "--".
        let dashy = format!("{}-x", "a".repeat(MAX_RUN_NAME - 16 - 10));
        let n = child_name(&dashy, &i);
        assert!(!n.contains("--"), "{n}");
    }
}
