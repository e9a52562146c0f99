//! The streamflow operator: the `PipelineRun` custom resource and its controller, which runs a
//! data interval through ingest → etl → validate as one Kubernetes Job per stage attempt.
//!
//! - [`api`]: the resources (spec, status, admission rules), from which `crdgen` prints the CRDs.
//! - [`pod_overrides`]: a run's `podTemplate` and `stageOverrides`, merged per stage (pure).
//! - [`jobs`]: the Job of a stage attempt, and reading Jobs back (pure).
//! - [`status`]: the next status and action from spec, status and Jobs (pure).
//! - [`controller`]: reconcile, the watch loop, Events.
//! - [`backfill`], [`pipeline`]: what a `Backfill` and a `Pipeline` (a range of intervals, a
//!   cron schedule) run next (pure); [`children`]: the PipelineRuns they create;
//!   [`parents`]: their controllers.
//! - [`kstatus`]: `Ready`/`Reconciling`/`Stalled`, what GitOps tools read, from each kind's
//!   phase and conditions (pure).
//! - [`leader`]: leader election on a Lease: one replica runs the controllers.
//! - [`metrics`]: the Prometheus registry and the `/metrics`, `/healthz`, `/readyz` server.

pub mod api;
pub mod backfill;
pub mod children;
pub mod controller;
pub mod jobs;
pub mod kafka_secrets;
pub mod kstatus;
pub mod leader;
pub mod metrics;
pub mod parents;
pub mod pipeline;
pub mod pod_overrides;
pub mod status;

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
