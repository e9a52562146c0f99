//! The streamflow operator: the `PipelineRun`, `Backfill` and `Pipeline` custom resources and
//! their controllers, which run data intervals through ingest → etl → validate as one
//! Kubernetes Job per stage attempt.
//!
//! - [`api`]: the resources (spec, status, admission rules, labels), from which `crdgen` prints
//!   the CRDs; it knows nothing of the controllers.
//! - One folder per controller, each a pure `decide` (an input struct in, a decision out) and
//!   an `apply` (the API calls that dereference, carry out the decision and write the status):
//!   [`pipelinerun`] (stages as Jobs: also [`pipelinerun::jobs`], the Job of an attempt and
//!   reading Jobs back), [`backfill`] (a range of intervals), [`pipeline`] (a cron schedule);
//!   [`parent`]: the runs Backfill and Pipeline create.
//! - [`reconcile`]: what the controllers share (Events, status writes, the finalizer, retries)
//!   and [`reconcile::kstatus`], the conditions GitOps tools read.
//! - [`controller`]: starts the controllers (after leader election, [`leader`]) and the
//!   `/metrics`, `/healthz`, `/readyz` server of [`metrics`].

pub mod api;
pub mod backfill;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod parent;
pub mod pipeline;
pub mod pipelinerun;
pub mod reconcile;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What went wrong in a reconcile; [`Error::metric_label`] names it in metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid spec: {field}: {message}")]
    InvalidSpec {
        field: &'static str,
        message: String,
    },
    #[error("{object} has no {field}")]
    MissingField { object: String, field: &'static str },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("cannot serialize the status: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The object changed since the copy this reconcile read (the informer's cache lags the
    /// operator's own writes): nothing was written, and no transition's side effect happened.
    #[error("{object} changed since it was read")]
    Stale { object: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Not a reconcile's error: the replica could not join the election or lost the
    /// leadership, and stops.
    #[error(transparent)]
    Leadership(#[from] leader::Error),
}

impl Error {
    /// Every value of [`Error::metric_label`] a reconcile can return: the operator exports each
    /// error count from 0, so a dashboard shows 0 errors rather than no data.
    pub const METRIC_LABELS: [&'static str; 8] = [
        "kube",
        "invalid_spec",
        "missing_field",
        "finalizer",
        "serialize",
        "metrics",
        "io",
        "stale",
    ];

    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::MissingField { .. } => "missing_field",
            Error::Finalizer(_) => "finalizer",
            Error::Serialize(_) => "serialize",
            Error::Metrics(_) => "metrics",
            Error::Io { .. } => "io",
            Error::Stale { .. } => "stale",
            Error::Leadership(_) => "leadership",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Kubernetes timestamp as chrono's (to the millisecond).
pub fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.0.as_millisecond())
}
