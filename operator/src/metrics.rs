//! Prometheus metrics (names as in docs/operator.md) and the HTTP endpoints `/metrics`,
//! `/healthz` and `/readyz`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::convert::Infallible;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use chrono::{DateTime, Utc};

use crate::Error;
use crate::api::pipelinerun::{Phase, StageSummary};
use crate::api::stage::Stage;

/// The label naming the namespace of the object a series is about. Not `namespace`: that is
/// the label Prometheus gives every series of the operator's scrape target (the operator's own
/// namespace, which the alerts select by), and one label says one thing.
pub const LABEL_OBJECT_NAMESPACE: &str = "object_namespace";

/// Who made a PipelineRun: its controller's kind and name (`Pipeline`/`Backfill` and its
/// name), both empty for a run made by hand. Labels of the per-owner series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOwner<'a> {
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

/// Requests this process sent to the API server, by verb and resource (counted by a layer of
/// the Kubernetes client, see [`count_api_request`]), so the cost of a run can be measured.
pub static API_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "streamflow_operator_api_requests_total",
            "Requests sent to the Kubernetes API server, by verb and resource.",
        ),
        &["verb", "resource"],
    )
    .unwrap_or_else(|e| unreachable!("static metric options are valid: {e}"))
});

/// Counts a request in [`API_REQUESTS`]: `verb` is the HTTP method in lower case, or `watch`
/// and `list` for GETs of collections; `resource` is e.g. `pipelineruns/status`.
pub fn count_api_request<B>(req: http::Request<B>) -> http::Request<B> {
    let (verb, resource) = classify(req.method(), req.uri());
    API_REQUESTS.with_label_values(&[verb, &resource]).inc();
    req
}

fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/..., /apis/GROUP/VERSION/...; then [namespaces/NS/]RESOURCE[/NAME[/SUB]]
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [r, _, sub, ..] => format!("{r}/{sub}"),
        [r, ..] => (*r).to_owned(),
        [] => "other".to_owned(),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if rest.len() == 1 => "list",
        http::Method::GET => "get",
        http::Method::POST => "post",
        http::Method::PUT => "put",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb, resource)
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounter,
    pub errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub runs: IntGaugeVec,
    pub stage_duration: HistogramVec,
    pub stage_attempts: IntCounterVec,
    pub deadline_misses: IntCounterVec,
    pub records: IntCounterVec,
    pub rows: IntCounterVec,
    pub jobs_created: IntCounterVec,
    pub parent_reconciles: IntCounterVec,
    pub runs_created: IntCounterVec,
    pub backfill_intervals: IntGaugeVec,
    pub backfill_last_progress: GaugeVec,
    pub runs_finished: IntCounterVec,
    pub stage_attempt_started: GaugeVec,
    pub pipeline_last_success: GaugeVec,
    pub pipeline_interval: GaugeVec,
    pub ingest_lag: IntGaugeVec,
    /// 1 while this replica holds the leader Lease and runs the controllers, else 0.
    pub leader: IntGauge,
    /// The interval end of the drain each (namespace, consumer group)'s lag gauges show: runs
    /// are reconciled in any order (all of them at a restart), and the newest drain wins.
    ingest_lag_shown: Arc<Mutex<HashMap<ConsumerGroup, DateTime<Utc>>>>,
}

/// (namespace, consumer group).
type ConsumerGroup = (String, String);

impl Metrics {
    pub fn new() -> Result<Self, Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "streamflow_operator_reconciles_total",
            "Reconciles of PipelineRuns.",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_reconcile_errors_total",
                "Failed reconciles, by error kind.",
            ),
            &["kind"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "streamflow_operator_reconcile_duration_seconds",
                "Time spent in a reconcile.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
        )?;
        let runs = IntGaugeVec::new(
            Opts::new("streamflow_operator_runs", "PipelineRuns seen, by phase."),
            &["phase"],
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "streamflow_operator_stage_duration_seconds",
                "Duration of finished stage attempts.",
            )
            .buckets(vec![1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
            &["stage", "result"],
        )?;
        let stage_attempts = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_stage_attempts_total",
                "Stage attempts started (a Job each).",
            ),
            &["stage"],
        )?;
        let deadline_misses = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_deadline_misses_total",
                "PipelineRuns that missed their runDeadline, by owner (the Pipeline or Backfill that made them).",
            ),
            &[LABEL_OBJECT_NAMESPACE, "owner_kind", "owner"],
        )?;
        let records = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_records_total",
                "Records landed and quarantined by ingest stages.",
            ),
            &["kind"],
        )?;
        let rows = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_gold_rows_total",
                "Rows written by etl stages, by gold table.",
            ),
            &["table"],
        )?;
        let jobs_created = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_jobs_created_total",
                "Jobs created, by stage.",
            ),
            &["stage"],
        )?;
        let parent_reconciles = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_parent_reconciles_total",
                "Reconciles of Backfills and Pipelines, by kind.",
            ),
            &["kind"],
        )?;
        let runs_created = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_runs_created_total",
                "PipelineRuns created by Backfills and Pipelines, by kind of parent.",
            ),
            &["kind"],
        )?;
        let backfill_intervals = IntGaugeVec::new(
            Opts::new(
                "streamflow_operator_backfill_intervals",
                "Intervals of a Backfill by phase (Pending: not started yet, Running, Succeeded, Failed, Skipped).",
            ),
            &[LABEL_OBJECT_NAMESPACE, "backfill", "phase"],
        )?;
        let backfill_last_progress = GaugeVec::new(
            Opts::new(
                "streamflow_operator_backfill_last_progress_timestamp_seconds",
                "Unix time at which an interval of the Backfill last finished (its creation, before any did).",
            ),
            &[LABEL_OBJECT_NAMESPACE, "backfill"],
        )?;
        let runs_finished = IntCounterVec::new(
            Opts::new(
                "streamflow_operator_runs_finished_total",
                "PipelineRuns that finished, by owner (the Pipeline or Backfill that made them) and result (succeeded, failed).",
            ),
            &[LABEL_OBJECT_NAMESPACE, "owner_kind", "owner", "result"],
        )?;
        let stage_attempt_started = GaugeVec::new(
            Opts::new(
                "streamflow_operator_stage_attempt_started_timestamp_seconds",
                "Unix time at which the running attempt of a PipelineRun's current stage started (only while it runs).",
            ),
            &[LABEL_OBJECT_NAMESPACE, "pipelinerun", "stage"],
        )?;
        let pipeline_last_success = GaugeVec::new(
            Opts::new(
                "streamflow_operator_pipeline_last_success_interval_end_timestamp_seconds",
                "Unix time of the end of the latest interval a Pipeline's run succeeded for (the Pipeline's creation before any did): how fresh its gold tables are.",
            ),
            &[LABEL_OBJECT_NAMESPACE, "pipeline"],
        )?;
        let pipeline_interval = GaugeVec::new(
            Opts::new(
                "streamflow_operator_pipeline_interval_seconds",
                "Length of the latest interval a Pipeline scheduled: how often its gold tables should be refreshed.",
            ),
            &[LABEL_OBJECT_NAMESPACE, "pipeline"],
        )?;
        let ingest_lag = IntGaugeVec::new(
            Opts::new(
                "streamflow_operator_ingest_lag_records",
                "Records of a topic past what a consumer group's drain had landed when it last ended (its ingest summary).",
            ),
            &[LABEL_OBJECT_NAMESPACE, "consumer_group", "topic"],
        )?;
        let leader = IntGauge::new(
            "streamflow_operator_leader",
            "1 while this replica holds the leader Lease and runs the controllers, 0 while it stands by.",
        )?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(ingest_lag.clone()))?;
        registry.register(Box::new(runs_finished.clone()))?;
        registry.register(Box::new(stage_attempt_started.clone()))?;
        registry.register(Box::new(pipeline_last_success.clone()))?;
        registry.register(Box::new(pipeline_interval.clone()))?;
        registry.register(Box::new(backfill_intervals.clone()))?;
        registry.register(Box::new(backfill_last_progress.clone()))?;
        registry.register(Box::new(API_REQUESTS.clone()))?;
        registry.register(Box::new(parent_reconciles.clone()))?;
        registry.register(Box::new(runs_created.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(stage_duration.clone()))?;
        registry.register(Box::new(stage_attempts.clone()))?;
        registry.register(Box::new(deadline_misses.clone()))?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(jobs_created.clone()))?;
        for kind in crate::Error::METRIC_LABELS {
            errors.with_label_values(&[kind]).reset();
        }
        for phase in [
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            runs.with_label_values(&[phase.as_str()]).set(0);
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            reconcile_duration,
            runs,
            stage_duration,
            stage_attempts,
            deadline_misses,
            records,
            rows,
            jobs_created,
            parent_reconciles,
            runs_created,
            backfill_intervals,
            backfill_last_progress,
            runs_finished,
            stage_attempt_started,
            pipeline_last_success,
            pipeline_interval,
            ingest_lag,
            leader,
            ingest_lag_shown: Arc::default(),
        })
    }

    /// A run not finished yet: its owner's finished-run counters are exported from 0, so that
    /// its first failure is an increase Prometheus sees (a counter born at 1 shows none).
    pub fn run_seen(&self, owner: RunOwner<'_>) {
        for result in ["succeeded", "failed"] {
            self.runs_finished
                .with_label_values(&[owner.namespace, owner.kind, owner.name, result])
                .inc_by(0);
        }
        self.deadline_misses
            .with_label_values(&[owner.namespace, owner.kind, owner.name])
            .inc_by(0);
    }

    /// A run missed its deadline (once per run).
    pub fn deadline_missed(&self, owner: RunOwner<'_>) {
        self.deadline_misses
            .with_label_values(&[owner.namespace, owner.kind, owner.name])
            .inc();
    }

    /// A run reached a final phase (once per run: see the PipelineRun controller).
    pub fn run_finished(&self, owner: RunOwner<'_>, succeeded: bool) {
        let result = if succeeded { "succeeded" } else { "failed" };
        self.runs_finished
            .with_label_values(&[owner.namespace, owner.kind, owner.name, result])
            .inc();
    }

    /// The stage a run is running now and when its attempt started; `None` once it runs none
    /// (finished, backing off, deleted): the run's series go.
    pub fn running_stage(&self, ns: &str, run: &str, running: Option<(Stage, DateTime<Utc>)>) {
        for stage in Stage::ALL {
            let labels = [ns, run, stage.as_str()];
            match running {
                Some((s, started)) if s == stage => self
                    .stage_attempt_started
                    .with_label_values(&labels)
                    .set(unix_seconds(started)),
                _ => {
                    let _ = self.stage_attempt_started.remove_label_values(&labels);
                }
            }
        }
    }

    /// What a consumer group's drain of the interval ending at `interval_end` reported of each
    /// topic's lag when it ended; shown unless a drain of a later interval is shown already.
    /// Fed by every reconcile of a run with a finished ingest, so that a restarted operator
    /// exports the lag again without waiting for the group's next drain.
    pub fn ingest_lag(
        &self,
        ns: &str,
        group: &str,
        interval_end: DateTime<Utc>,
        lag: &std::collections::BTreeMap<String, u64>,
    ) {
        let mut shown = self
            .ingest_lag_shown
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let newest = shown
            .entry((ns.to_owned(), group.to_owned()))
            .or_insert(interval_end);
        if *newest > interval_end {
            return;
        }
        *newest = interval_end;
        for (topic, n) in lag {
            self.ingest_lag
                .with_label_values(&[ns, group, topic.as_str()])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// A Pipeline's freshness gauges; `None` forgets a deleted Pipeline's.
    pub fn pipeline_freshness(
        &self,
        ns: &str,
        pipeline: &str,
        freshness: Option<(DateTime<Utc>, Option<chrono::Duration>)>,
    ) {
        let labels = [ns, pipeline];
        match freshness {
            Some((last_success_end, interval)) => {
                self.pipeline_last_success
                    .with_label_values(&labels)
                    .set(unix_seconds(last_success_end));
                if let Some(i) = interval {
                    self.pipeline_interval
                        .with_label_values(&labels)
                        .set(i.num_milliseconds() as f64 / 1000.0);
                }
            }
            None => {
                let _ = self.pipeline_last_success.remove_label_values(&labels);
                let _ = self.pipeline_interval.remove_label_values(&labels);
            }
        }
    }

    pub fn stage_finished(
        &self,
        stage: Stage,
        ok: bool,
        duration: Option<Duration>,
        summary: Option<&StageSummary>,
    ) {
        if let Some(d) = duration {
            self.stage_duration
                .with_label_values(&[stage.as_str(), if ok { "succeeded" } else { "failed" }])
                .observe(d.as_secs_f64());
        }
        if let Some(s) = summary {
            if let Some(n) = s.records {
                self.records.with_label_values(&["landed"]).inc_by(n);
            }
            if let Some(n) = s.quarantined {
                self.records.with_label_values(&["quarantined"]).inc_by(n);
            }
            for (table, n) in &s.tables {
                self.rows.with_label_values(&[table.as_str()]).inc_by(*n);
            }
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // The text encoder only fails on a writer error, and a Vec does not fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

pub fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Serves `/metrics`, `/healthz` (the process runs) and `/readyz` (the CRDs are reachable:
/// a replica standing by for the leader Lease is ready too, so a rolling update can replace
/// the leader) with hyper, until the listener fails.
pub async fn serve(listener: TcpListener, metrics: Metrics, ready: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(req.uri().path(), &metrics, ready.load(Ordering::Relaxed));
                async move { Ok::<_, Infallible>(response) }
            });
            // A client that never finishes its request head is dropped, not kept for ever.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

/// The response to a GET of `path`.
fn respond(path: &str, metrics: &Metrics, ready: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" if ready => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            b"not ready\n".to_vec(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::BTreeMap;

    #[test]
    fn every_error_kind_is_exported_from_zero() {
        let text = String::from_utf8(Metrics::new().unwrap().render()).unwrap();
        for kind in crate::Error::METRIC_LABELS {
            let line = format!("streamflow_operator_reconcile_errors_total{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&line), "{line} missing");
        }
        let invalid = crate::Error::InvalidSpec {
            field: "f",
            message: String::new(),
        };
        assert!(crate::Error::METRIC_LABELS.contains(&invalid.metric_label()));
    }

    #[test]
    fn the_lag_shown_is_the_newest_drains_whatever_order_runs_are_reconciled_in() {
        let m = Metrics::new().unwrap();
        let at = |h: u32| Utc.with_ymd_and_hms(2026, 12, 7, h, 0, 0).unwrap();
        let lag = |n: u64| BTreeMap::from([("user_events".to_owned(), n)]);
        let shown = || {
            m.ingest_lag
                .with_label_values(&["ns", "g", "user_events"])
                .get()
        };
        m.ingest_lag("ns", "g", at(2), &lag(20));
        m.ingest_lag("ns", "g", at(1), &lag(10));
        assert_eq!(shown(), 20, "an older drain's lag replaced the newer one's");
        m.ingest_lag("ns", "g", at(3), &lag(30));
        assert_eq!(shown(), 30);
        m.ingest_lag("ns", "other", at(1), &lag(5));
        assert_eq!(shown(), 30, "groups are apart");
    }

    #[test]
    fn the_endpoints_answer_as_probes_and_prometheus_expect() {
        let m = Metrics::new().unwrap();
        let metrics = respond("/metrics", &m, false);
        assert_eq!(metrics.status(), StatusCode::OK);
        assert_eq!(metrics.headers()[CONTENT_TYPE], "text/plain; version=0.0.4");
        assert_eq!(respond("/healthz", &m, false).status(), StatusCode::OK);
        assert_eq!(
            respond("/readyz", &m, false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond("/readyz", &m, true).status(), StatusCode::OK);
        assert_eq!(respond("/nope", &m, true).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        let c = |m: http::Method, u: &str| {
            let (v, r) = classify(&m, &u.parse().unwrap());
            (v, r)
        };
        use http::Method as M;
        let ns = "/apis/streamflow.io/v1alpha1/namespaces/a";
        assert_eq!(
            c(M::GET, &format!("{ns}/pipelineruns?labelSelector=x")),
            ("list", "pipelineruns".into())
        );
        assert_eq!(
            c(
                M::GET,
                &format!("{ns}/pipelineruns?watch=true&resourceVersion=1")
            ),
            ("watch", "pipelineruns".into())
        );
        assert_eq!(
            c(M::PATCH, &format!("{ns}/backfills/b/status?fieldManager=x")),
            ("patch", "backfills/status".into())
        );
        assert_eq!(
            c(M::GET, "/apis/streamflow.io/v1alpha1/pipelines?limit=1"),
            ("list", "pipelines".into())
        );
        assert_eq!(
            c(M::POST, "/apis/batch/v1/namespaces/a/jobs"),
            ("post", "jobs".into())
        );
        assert_eq!(
            c(M::GET, "/api/v1/namespaces/a/pods/p"),
            ("get", "pods".into())
        );
    }
}
