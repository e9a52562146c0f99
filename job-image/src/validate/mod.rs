//! `streamflow validate`: declarative checks of the gold tables of an interval (the seed's
//! post-processing validation task, as a stage of its own). docs/validate.md lists the checks.
//!
//! Checks come from a YAML file (`examples/checks.yaml`); each names a table, what must hold
//! and a severity. Only committed partitions are read (the files a `_SUCCESS` manifest lists);
//! a date of the interval without one fails every check on that table. Each check is one SQL
//! query over the tables loaded into DataFusion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use streamflow_core::{CheckFailure, Interval, ValidateSummary};

use crate::etl::{read, steps, write};
use crate::events::{EventKind, Topics, TopicsError};
use crate::store::Location;

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("cannot parse the checks file {file}: {}", crate::excerpt::excerpt(.problem))]
    BadChecks { file: String, problem: String },
    #[error("check {check:?}: {problem}")]
    BadCheck { check: String, problem: String },
    #[error("check {check:?}: {source}")]
    Topic { check: String, source: TopicsError },
    #[error(
        "{failed} error-severity check(s) failed for {interval}, {unevaluable} of them because the gold zone does not hold their tables for the interval (run the ETL of the interval first), e.g. {example}"
    )]
    TablesMissing {
        failed: u64,
        interval: String,
        unevaluable: usize,
        example: String,
    },
    #[error(
        "cannot read the checks file {file}: {source}: pass --checks (STREAMFLOW_CHECKS) with a YAML file like examples/checks.yaml"
    )]
    ReadChecks {
        file: String,
        source: std::io::Error,
    },
}

/// The checks file: `checks:` followed by a list.
#[derive(Debug, Clone, Deserialize)]
pub struct ChecksFile {
    pub checks: Vec<CheckSpec>,
}

impl ChecksFile {
    pub fn parse(file: &str, yaml: &str) -> Result<Self, ValidateError> {
        let parsed: Self = serde_yaml_ng::from_str(yaml).map_err(|e| ValidateError::BadChecks {
            file: file.to_owned(),
            problem: e.to_string(),
        })?;
        for spec in &parsed.checks {
            if let Check::Freshness { max_lag, .. } = &spec.check {
                humantime::parse_duration(max_lag).map_err(|e| ValidateError::BadChecks {
                    file: file.to_owned(),
                    problem: format!("check {:?}: max_lag {max_lag:?}: {e}", spec.name()),
                })?;
            }
        }
        Ok(parsed)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A failure fails the run (non-zero exit).
    #[default]
    Error,
    /// A failure is reported only.
    Warn,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub severity: Severity,
    #[serde(flatten)]
    pub check: Check,
}

/// What must hold. Column and table names are quoted in the generated SQL, so `user` is a
/// column, not the SQL USER function.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Check {
    /// The table has at least one row in the interval.
    NonEmpty { table: String },
    /// None of the columns is null.
    NotNull { table: String, columns: Vec<String> },
    /// No two rows share the values of the columns.
    Unique { table: String, columns: Vec<String> },
    /// Every non-null value of the column is one of `values`.
    AcceptedValues {
        table: String,
        column: String,
        values: Vec<String>,
    },
    /// Every non-null value is within [min, max] (either bound optional).
    Range {
        table: String,
        column: String,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
    /// Every non-null value of `column` appears in `to_column` of `to_table`.
    Relationship {
        table: String,
        column: String,
        to_table: String,
        to_column: String,
    },
    /// The table has as many rows as the listed tables together (a grain that splits a table
    /// in parts, as the inner join and the anti-join split `transactions`).
    RowCountEqual {
        table: String,
        equals_sum_of: Vec<String>,
    },
    /// The table has one row per distinct event id of the landing records in the interval
    /// (landing → flattened → gold) of the topic that carries `schema` (`user_events` or
    /// `transaction_events`), or of `topic` by name.
    LandingReconciliation {
        #[serde(flatten)]
        source: LandingSource,
        table: String,
    },
    /// The timestamp column lies within the interval and its latest value is at most
    /// `max_lag` before the interval's end.
    Freshness {
        table: String,
        column: String,
        max_lag: String,
    },
}

/// Which landing records a `landing_reconciliation` counts: those of the topic that carries a
/// schema (`schema: user_events`), or of a topic by name (`topic: clicks`), which must then be
/// mapped to a schema.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LandingSourceFields")]
pub enum LandingSource {
    Schema(EventKind),
    Topic(String),
}

/// A `landing_reconciliation`'s fields as written: exactly one of the two.
#[derive(Deserialize)]
struct LandingSourceFields {
    #[serde(default)]
    schema: Option<EventKind>,
    #[serde(default)]
    topic: Option<String>,
}

impl TryFrom<LandingSourceFields> for LandingSource {
    type Error = &'static str;

    fn try_from(fields: LandingSourceFields) -> Result<Self, Self::Error> {
        match (fields.schema, fields.topic) {
            (Some(schema), None) => Ok(Self::Schema(schema)),
            (None, Some(topic)) => Ok(Self::Topic(topic)),
            _ => Err(
                "landing_reconciliation needs either `schema` (user_events or transaction_events) or `topic`, not both",
            ),
        }
    }
}

impl CheckSpec {
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.check {
            Check::NonEmpty { table } => format!("non_empty {table}"),
            Check::NotNull { table, columns } => format!("not_null {table}.{}", columns.join(",")),
            Check::Unique { table, columns } => format!("unique {table}.{}", columns.join(",")),
            Check::AcceptedValues { table, column, .. } => {
                format!("accepted_values {table}.{column}")
            }
            Check::Range { table, column, .. } => format!("range {table}.{column}"),
            Check::Relationship {
                table,
                column,
                to_table,
                to_column,
            } => format!("relationship {table}.{column} -> {to_table}.{to_column}"),
            Check::RowCountEqual {
                table,
                equals_sum_of,
            } => {
                format!("row_count_equal {table} = {}", equals_sum_of.join(" + "))
            }
            Check::LandingReconciliation { source, table } => {
                let source = match source {
                    LandingSource::Schema(schema) => schema.schema(),
                    LandingSource::Topic(topic) => topic,
                };
                format!("landing_reconciliation {source} -> {table}")
            }
            Check::Freshness { table, column, .. } => format!("freshness {table}.{column}"),
        }
    }

    fn tables(&self) -> Vec<&str> {
        match &self.check {
            Check::NonEmpty { table }
            | Check::NotNull { table, .. }
            | Check::Unique { table, .. }
            | Check::AcceptedValues { table, .. }
            | Check::Range { table, .. }
            | Check::LandingReconciliation { table, .. }
            | Check::Freshness { table, .. } => vec![table],
            Check::Relationship {
                table, to_table, ..
            } => vec![table, to_table],
            Check::RowCountEqual {
                table,
                equals_sum_of,
            } => std::iter::once(table.as_str())
                .chain(equals_sum_of.iter().map(String::as_str))
                .collect(),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub severity: Severity,
    pub passed: bool,
    pub message: String,
    /// The check could not run (its table could not be loaded, its query failed): its failure
    /// says nothing of the data, and may not happen again (a store that was unreachable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unevaluated: bool,
    /// It could not run for a reason a retry does not change: a table the ETL did not commit
    /// for the interval, or committed with a manifest that does not describe it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unevaluable: bool,
}

/// The full report (`--report`); the summary is its compact form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub interval: String,
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Clone)]
pub struct ValidateConfig {
    pub gold: Location,
    /// Needed by `landing_reconciliation` checks only.
    pub landing: Option<Location>,
    pub interval: Interval,
    pub checks: ChecksFile,
    /// Which topic carries each schema: where `landing_reconciliation` reads.
    pub topics: Topics,
}

/// Failures listed in the summary at most, and their message length: the summary must fit a
/// 4 KiB termination message.
const SUMMARY_FAILURES: usize = 8;
const SUMMARY_MESSAGE_CHARS: usize = 200;
/// Streams decoding landing objects at once for a `landing_reconciliation` check.
const LANDING_PARTITIONS: usize = 2;

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn quote_text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Why a table could not be loaded, and whether loading it again may work.
#[derive(Debug, Clone)]
struct LoadProblem {
    message: String,
    /// The gold zone itself says the table is not there for the interval (a retry reads the
    /// same), rather than the store failing to answer.
    permanent: bool,
}

impl LoadProblem {
    fn permanent(message: String) -> Self {
        Self {
            message,
            permanent: true,
        }
    }

    fn transient(message: String) -> Self {
        Self {
            message,
            permanent: false,
        }
    }
}

/// Registers the committed partitions of a table for the interval's dates as a table read
/// from the files their manifests list (streamed, not loaded), or says which is missing.
async fn load_table(
    ctx: &SessionContext,
    gold: &Location,
    table: &str,
    dates: &[chrono::NaiveDate],
) -> Result<(), LoadProblem> {
    let mut schema = None;
    let mut files = Vec::new();
    for date in dates {
        let manifest = write::read_manifest(gold, table, *date)
            .await
            .map_err(|e| LoadProblem::transient(e.to_string()))?
            .ok_or_else(|| {
                LoadProblem::permanent(format!(
                    "partition {table}/date={date} is not committed (no {})",
                    write::MANIFEST
                ))
            })?;
        let part_schema = manifest
            .schema()
            .map_err(|e| LoadProblem::permanent(format!("partition {table}/date={date}: {e}")))?;
        match &schema {
            None => schema = Some(part_schema),
            Some(s) if *s != part_schema => {
                return Err(LoadProblem::permanent(format!(
                    "partition {table}/date={date} has other columns than the interval's first date"
                )));
            }
            Some(_) => {}
        }
        let dir = write::partition_dir(gold, table, *date);
        for file in &manifest.files {
            let url = format!("{}{dir}/{}", gold.store_url, file.path);
            files.push(
                ListingTableUrl::parse(&url)
                    .map_err(|e| LoadProblem::permanent(format!("{url}: {e}")))?,
            );
        }
    }
    let schema =
        schema.ok_or_else(|| LoadProblem::permanent("the interval has no dates".to_owned()))?;
    // A quoted value may span lines (free text such as page titles): never split a file.
    let format = CsvFormat::default()
        .with_has_header(true)
        .with_newlines_in_values(true);
    let config = ListingTableConfig::new_with_multi_paths(files)
        .with_listing_options(ListingOptions::new(Arc::new(format)).with_file_extension(".csv"))
        .with_schema(schema);
    let listed =
        ListingTable::try_new(config).map_err(|e| LoadProblem::transient(e.to_string()))?;
    ctx.register_table(table, Arc::new(listed))
        .map_err(|e| LoadProblem::transient(e.to_string()))?;
    Ok(())
}

async fn scalar_i64(
    ctx: &SessionContext,
    sql: &str,
    params: Option<Vec<ScalarValue>>,
) -> Result<Vec<Option<i64>>, DataFusionError> {
    let mut df = ctx.sql(sql).await?;
    if let Some(p) = params {
        df = df.with_param_values(p)?;
    }
    let batches = df.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    (0..batch.num_columns())
        .map(|i| match ScalarValue::try_from_array(batch.column(i), 0)? {
            ScalarValue::Int64(v) => Ok(v),
            other => Err(DataFusionError::Internal(format!(
                "expected an integer, got {other:?}"
            ))),
        })
        .collect()
}

async fn count(ctx: &SessionContext, sql: &str) -> Result<i64, DataFusionError> {
    Ok(scalar_i64(ctx, sql, None)
        .await?
        .first()
        .copied()
        .flatten()
        .unwrap_or(0))
}

fn verdict(bad: i64, what: &str) -> (bool, String) {
    if bad == 0 {
        (true, format!("no {what}"))
    } else {
        (false, format!("{bad} {what}"))
    }
}

/// The topic a `landing_reconciliation` reads and its schema; a topic without a schema is an
/// error.
fn landing_source(
    topics: &Topics,
    source: &LandingSource,
) -> Result<(String, EventKind), TopicsError> {
    match source {
        LandingSource::Schema(kind) => Ok((topics.topic(*kind).to_owned(), *kind)),
        LandingSource::Topic(topic) => Ok((topic.clone(), topics.kind_of(topic)?)),
    }
}

async fn evaluate(
    ctx: &SessionContext,
    landing: Option<&Location>,
    topics: &Topics,
    interval: &Interval,
    check: &Check,
) -> Result<(bool, String), String> {
    let df = |e: DataFusionError| e.to_string();
    match check {
        Check::NonEmpty { table } => {
            let n = count(ctx, &format!("SELECT COUNT(*) FROM {}", quote(table)))
                .await
                .map_err(df)?;
            Ok((n > 0, format!("{n} rows")))
        }
        Check::NotNull { table, columns } => {
            let any_null = columns
                .iter()
                .map(|c| format!("{} IS NULL", quote(c)))
                .collect::<Vec<_>>()
                .join(" OR ");
            let n = count(
                ctx,
                &format!("SELECT COUNT(*) FROM {} WHERE {any_null}", quote(table)),
            )
            .await
            .map_err(df)?;
            Ok(verdict(n, "rows with a null"))
        }
        Check::Unique { table, columns } => {
            let cols = columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", ");
            let n = count(
                ctx,
                &format!("SELECT COUNT(*) FROM (SELECT {cols} FROM {} GROUP BY {cols} HAVING COUNT(*) > 1)", quote(table)),
            )
            .await
            .map_err(df)?;
            Ok(verdict(n, "duplicated keys"))
        }
        Check::AcceptedValues {
            table,
            column,
            values,
        } => {
            let list = values
                .iter()
                .map(|v| quote_text(v))
                .collect::<Vec<_>>()
                .join(", ");
            let col = quote(column);
            let n = count(
                ctx,
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE {col} IS NOT NULL AND CAST({col} AS VARCHAR) NOT IN ({list})",
                    quote(table)
                ),
            )
            .await
            .map_err(df)?;
            Ok(verdict(n, "rows with a value not accepted"))
        }
        Check::Range {
            table,
            column,
            min,
            max,
        } => {
            let col = quote(column);
            let mut outside = Vec::new();
            if let Some(min) = min {
                outside.push(format!("{col} < {min:?}"));
            }
            if let Some(max) = max {
                outside.push(format!("{col} > {max:?}"));
            }
            if outside.is_empty() {
                return Err("a range check needs min, max or both".to_owned());
            }
            let n = count(
                ctx,
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE {}",
                    quote(table),
                    outside.join(" OR ")
                ),
            )
            .await
            .map_err(df)?;
            Ok(verdict(n, "rows out of range"))
        }
        Check::Relationship {
            table,
            column,
            to_table,
            to_column,
        } => {
            let n = count(
                ctx,
                &format!(
                    "SELECT COUNT(*) FROM {} a WHERE a.{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {} b WHERE b.{tc} = a.{c})",
                    quote(table),
                    quote(to_table),
                    c = quote(column),
                    tc = quote(to_column)
                ),
            )
            .await
            .map_err(df)?;
            Ok(verdict(
                n,
                &format!("rows whose {column} is not in {to_table}.{to_column}"),
            ))
        }
        Check::RowCountEqual {
            table,
            equals_sum_of,
        } => {
            let n = count(ctx, &format!("SELECT COUNT(*) FROM {}", quote(table)))
                .await
                .map_err(df)?;
            let mut parts = 0;
            for other in equals_sum_of {
                parts += count(ctx, &format!("SELECT COUNT(*) FROM {}", quote(other)))
                    .await
                    .map_err(df)?;
            }
            Ok((
                n == parts,
                format!("{table} has {n} rows, the others {parts} together"),
            ))
        }
        Check::LandingReconciliation { source, table } => {
            let landing = landing.ok_or("needs --landing")?;
            let (topic, kind) = landing_source(topics, source).map_err(|e| e.to_string())?;
            let raw = format!("landing_{topic}");
            read::register_landing(
                ctx,
                &raw,
                landing,
                &topic,
                kind,
                interval,
                LANDING_PARTITIONS,
            )
            .await
            .map_err(|e| e.to_string())?;
            let landed = scalar_i64(
                ctx,
                &format!(
                    "SELECT COUNT(DISTINCT event_id) FROM {} WHERE event_time >= $1 AND event_time < $2",
                    quote(&raw)
                ),
                Some(steps::interval_params(interval)),
            )
            .await
            .map_err(df)?
            .first()
            .copied()
            .flatten()
            .unwrap_or(0);
            let n = count(ctx, &format!("SELECT COUNT(*) FROM {}", quote(table)))
                .await
                .map_err(df)?;
            Ok((
                n == landed,
                format!(
                    "{landed} distinct {topic} events landed in the interval, {n} rows in {table}"
                ),
            ))
        }
        Check::Freshness {
            table,
            column,
            max_lag,
        } => {
            let lag = humantime::parse_duration(max_lag)
                .map_err(|e| format!("max_lag {max_lag:?}: {e}"))?;
            let col = quote(column);
            let bounds = scalar_i64(
                ctx,
                &format!(
                    "SELECT CAST(MIN({col}) AS BIGINT), CAST(MAX({col}) AS BIGINT) FROM {}",
                    quote(table)
                ),
                None,
            )
            .await
            .map_err(df)?;
            let (Some(Some(first)), Some(Some(last))) =
                (bounds.first().copied(), bounds.get(1).copied())
            else {
                return Ok((false, "no rows".to_owned()));
            };
            Ok(freshness_verdict(interval, lag, first, last))
        }
    }
}

/// `first` and `last` in microseconds since the epoch, as the gold timestamps are.
fn freshness_verdict(
    interval: &Interval,
    max_lag: Duration,
    first: i64,
    last: i64,
) -> (bool, String) {
    let start = interval.start.timestamp_micros();
    let end = interval.end.timestamp_micros();
    let show = |micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros)
            .map_or_else(|| micros.to_string(), |t| t.to_rfc3339())
    };
    if first < start || last >= end {
        return (
            false,
            format!(
                "values from {} to {} lie outside the interval",
                show(first),
                show(last)
            ),
        );
    }
    let lag = Duration::from_micros((end - last).max(0) as u64);
    if lag > max_lag {
        return (
            false,
            format!(
                "latest value {} is {} before the interval's end",
                show(last),
                humantime::format_duration(lag)
            ),
        );
    }
    (true, format!("latest value {}", show(last)))
}

/// Runs every check and returns the report.
pub async fn validate(config: &ValidateConfig) -> Result<Report, ValidateError> {
    // A check of a topic without a schema is refused before any check runs.
    for spec in &config.checks.checks {
        if let Check::LandingReconciliation { source, .. } = &spec.check {
            landing_source(&config.topics, source).map_err(|source| ValidateError::Topic {
                check: spec.name(),
                source,
            })?;
        }
    }
    let ctx = SessionContext::new();
    config.gold.register_with(&ctx.runtime_env());
    let dates = config.interval.dates();
    let mut loaded: BTreeMap<String, Result<(), LoadProblem>> = BTreeMap::new();
    let mut results = Vec::new();
    for spec in &config.checks.checks {
        let name = spec.name();
        let mut problem = None;
        for table in spec.tables() {
            if !loaded.contains_key(table) {
                let outcome = load_table(&ctx, &config.gold, table, &dates).await;
                loaded.insert(table.to_owned(), outcome);
            }
            if let Some(Err(e)) = loaded.get(table) {
                problem = Some(LoadProblem {
                    message: format!("table {table}: {}", e.message),
                    permanent: e.permanent,
                });
                break;
            }
        }
        let (passed, message, unevaluated, unevaluable) = match problem {
            Some(p) => (false, p.message, true, p.permanent),
            None => {
                let evaluated = evaluate(
                    &ctx,
                    config.landing.as_ref(),
                    &config.topics,
                    &config.interval,
                    &spec.check,
                )
                .await;
                match evaluated {
                    Ok((passed, message)) => (passed, message, false, false),
                    Err(e) => (false, format!("could not be evaluated: {e}"), true, false),
                }
            }
        };
        results.push(CheckResult {
            name,
            severity: spec.severity,
            passed,
            message,
            unevaluated,
            unevaluable,
        });
    }
    Ok(Report {
        interval: config.interval.to_string(),
        results,
    })
}

impl Report {
    /// The compact summary for stdout and the termination message.
    pub fn summary(&self, started: Instant) -> ValidateSummary {
        let failed = |s: Severity| {
            self.results
                .iter()
                .filter(|r| !r.passed && r.severity == s)
                .count() as u64
        };
        let failed_errors = failed(Severity::Error);
        ValidateSummary {
            stage: "validate".to_owned(),
            interval: self.interval.clone(),
            ok: failed_errors == 0,
            checks: self.results.len() as u64,
            passed: self.results.iter().filter(|r| r.passed).count() as u64,
            failed_errors,
            failed_warnings: failed(Severity::Warn),
            failures: self
                .results
                .iter()
                .filter(|r| !r.passed)
                .take(SUMMARY_FAILURES)
                .map(|r| CheckFailure {
                    name: r.name.clone(),
                    severity: r.severity.as_str().to_owned(),
                    message: r.message.chars().take(SUMMARY_MESSAGE_CHARS).collect(),
                })
                .collect(),
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// One line per check, for people.
    pub fn readable(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let verdict = match (r.passed, r.severity) {
                (true, _) => "PASS",
                (false, Severity::Error) => "FAIL",
                (false, Severity::Warn) => "WARN",
            };
            out.push_str(&format!("{verdict}  {}: {}\n", r.name, r.message));
        }
        out
    }

    pub fn failed_errors(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.passed && r.severity == Severity::Error)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse_with_defaults_and_names() {
        let yaml = "
checks:
  - check: unique
    table: transactions
    columns: [transaction_id]
  - name: amounts are not negative
    check: range
    table: transactions
    column: amount
    min: 0
    severity: warn
";
        let file = ChecksFile::parse("t.yaml", yaml).unwrap();
        assert_eq!(file.checks[0].name(), "unique transactions.transaction_id");
        assert_eq!(file.checks[0].severity, Severity::Error);
        assert_eq!(file.checks[1].name(), "amounts are not negative");
        assert_eq!(file.checks[1].severity, Severity::Warn);
        assert!(
            matches!(file.checks[1].check, Check::Range { min: Some(m), max: None, .. } if m == 0.0)
        );
    }

    #[test]
    fn unknown_checks_and_bad_lags_are_refused() {
        let unknown = "checks:\n  - check: vibes\n    table: t\n";
        assert!(ChecksFile::parse("t.yaml", unknown).is_err());
        let lag = "checks:\n  - check: freshness\n    table: t\n    column: c\n    max_lag: soon\n";
        let err = ChecksFile::parse("t.yaml", lag).unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn a_landing_reconciliation_reads_the_topic_of_its_schema_and_refuses_an_unmapped_topic() {
        let yaml = "checks:
  - check: landing_reconciliation
    schema: transaction_events
    table: transactions
  - check: landing_reconciliation
    topic: clicks
    table: user_activity
";
        let file = ChecksFile::parse("t.yaml", yaml).unwrap();
        assert_eq!(
            file.checks[0].name(),
            "landing_reconciliation transaction_events -> transactions"
        );
        let topics = Topics::new("clicks", "payments").unwrap();
        let source = |check: &Check| match check {
            Check::LandingReconciliation { source, .. } => landing_source(&topics, source),
            _ => unreachable!(),
        };
        assert_eq!(
            source(&file.checks[0].check),
            Ok(("payments".to_owned(), EventKind::Transaction))
        );
        assert_eq!(
            source(&file.checks[1].check),
            Ok(("clicks".to_owned(), EventKind::User))
        );
        let unmapped = ChecksFile::parse(
            "t.yaml",
            "checks:\n  - check: landing_reconciliation\n    topic: user_events\n    table: t\n",
        )
        .unwrap();
        let err = source(&unmapped.checks[0].check).unwrap_err().to_string();
        assert!(err.starts_with("topic user_events has no schema"), "{err}");
        let both = "checks:\n  - check: landing_reconciliation\n    topic: a\n    schema: user_events\n    table: t\n";
        let err = ChecksFile::parse("t.yaml", both).unwrap_err().to_string();
        assert!(err.contains("either `schema`"), "{err}");
    }

    #[test]
    fn freshness_needs_recent_data_inside_the_interval() {
        let interval: Interval = "2026-11-25T10:00:00Z/2026-11-25T11:00:00Z".parse().unwrap();
        let at = |s: &str| {
            streamflow_core::interval::parse_time(s)
                .unwrap()
                .timestamp_micros()
        };
        let lag = Duration::from_secs(600);
        assert!(
            freshness_verdict(
                &interval,
                lag,
                at("2026-11-25T10:00:00Z"),
                at("2026-11-25T10:55:00Z")
            )
            .0
        );
        assert!(
            !freshness_verdict(
                &interval,
                lag,
                at("2026-11-25T10:00:00Z"),
                at("2026-11-25T10:45:00Z")
            )
            .0
        );
        assert!(
            !freshness_verdict(
                &interval,
                lag,
                at("2026-11-25T09:59:59Z"),
                at("2026-11-25T10:55:00Z")
            )
            .0
        );
        assert!(
            !freshness_verdict(
                &interval,
                lag,
                at("2026-11-25T10:00:00Z"),
                at("2026-11-25T11:00:00Z")
            )
            .0
        );
    }
}
