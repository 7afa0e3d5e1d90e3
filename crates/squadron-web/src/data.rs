//! `GET /api/data/<group>/<project>/`: metric chart series, as SQUAD's
//! `squad/api/data.py` and `squad/core/queries.py` give them. For each
//! `?metric=` (every metric of the project and `:tests:` when none is
//! given) and each `?environment=` slug, a list of points:
//!
//! * a metric: `[build epoch, result, build version, annotation, metric id,
//!   "True"/"False" (outlier), min, max]`, one per measurement row, in run
//!   order;
//! * `:tests:`: `[build epoch, pass percentage (integer), version,
//!   annotation]` per build, from the runs' total status rows;
//! * `:summary:`: `[build epoch, metrics summary, version, annotation]` per
//!   build, from the per-environment build summaries;
//! * `:dynamic_summary:`: `[build timestamp (fractional), geometric mean of
//!   the other metrics asked for, version, annotation]` per build.
//!
//! `?date_start=` and `?date_end=` (`MM-DD-YYYY`) bound the runs' (for
//! `:summary:`, the builds') creation time; `?format=csv` answers SQUAD's
//! CSV lines instead of JSON.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};
use squadron_core::names::{join_name, parse_name};
use squadron_core::summary::Geomean;
use squadron_store::ingest::parse_measurements;
use squadron_store::sql::{Sql, Value as SqlValue};
use squadron_store::Store;

use crate::auth::native_project;
use crate::error::ApiError;
use crate::rest::{form_urlencoded, raw};
use crate::AppState;

/// The series that are not metric names.
const TESTS: &str = ":tests:";
const SUMMARY: &str = ":summary:";
const DYNAMIC_SUMMARY: &str = ":dynamic_summary:";

/// What the series of one request are drawn from.
struct Query<'a> {
    store: &'a Store,
    environments: Vec<(i64, String)>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The columns every series joins: the build, and its annotation.
const BUILD_JOINS: &str = "JOIN builds b ON b.id = r.build_id LEFT JOIN annotations a ON a.build_id = b.id";

#[derive(sqlx::FromRow)]
struct MetricPoint {
    id: i64,
    datetime: DateTime<Utc>,
    version: String,
    annotation: String,
    result: f64,
    is_outlier: bool,
    measurements: String,
}

#[derive(sqlx::FromRow)]
struct BuildPoint {
    datetime: DateTime<Utc>,
    version: String,
    annotation: String,
    value: f64,
}

#[derive(sqlx::FromRow)]
struct PercentPoint {
    datetime: DateTime<Utc>,
    version: String,
    annotation: String,
    value: i64,
}

#[derive(sqlx::FromRow)]
struct DynamicPoint {
    environment_id: i64,
    build_id: i64,
    datetime: DateTime<Utc>,
    version: String,
    annotation: String,
    measurements: String,
    is_outlier: bool,
}

impl Query<'_> {
    /// ` AND r.visible AND r.created_at BETWEEN start AND end`.
    fn runs_in_range(&self, sql: &mut Sql) {
        sql.push(" AND r.visible AND r.created_at BETWEEN ").bind(self.start).push(" AND ").bind(self.end);
    }

    /// A metric's points, per environment.
    async fn metric(&self, full_name: &str) -> Result<Map<String, Value>, ApiError> {
        let (suite, name) = parse_name(full_name);
        let mut series = Map::new();
        for (environment, slug) in &self.environments {
            let mut sql = Sql::new(&format!(
                "SELECT x.id, b.datetime, b.version, COALESCE(a.description, '') AS annotation, x.result, \
                 x.is_outlier, x.measurements FROM metrics x JOIN testruns r ON r.id = x.test_run_id {BUILD_JOINS} \
                 WHERE x.metadata_id IN (SELECT id FROM suite_metadata WHERE suite = "
            ));
            sql.bind(suite).push(" AND name = ").bind(name).push(") AND x.environment_id = ").bind(*environment);
            self.runs_in_range(&mut sql);
            sql.push(" ORDER BY r.datetime, x.id");
            let points: Vec<MetricPoint> = self.store.fetch_all(&sql).await?;
            let points = points.into_iter().map(|p| {
                let measurements = parse_measurements(&p.measurements);
                let min = measurements.iter().copied().reduce(f64::min).unwrap_or(p.result);
                let max = measurements.iter().copied().reduce(f64::max).unwrap_or(p.result);
                let outlier = if p.is_outlier { "True" } else { "False" };
                json!([p.datetime.timestamp(), p.result, p.version, p.annotation, p.id, outlier, min, max])
            });
            series.insert(slug.clone(), Value::Array(points.collect()));
        }
        Ok(series)
    }

    /// The pass percentage (rounded down, as SQUAD's integer division) of
    /// each build, per environment.
    async fn tests(&self) -> Result<Map<String, Value>, ApiError> {
        let mut series = Map::new();
        for (environment, slug) in &self.environments {
            let mut sql = Sql::new(&format!(
                "SELECT b.datetime, b.version, COALESCE(a.description, '') AS annotation, \
                 (100 * CAST(SUM(s.tests_pass) AS BIGINT)) / \
                 CAST(SUM(s.tests_pass + s.tests_fail + s.tests_xfail + s.tests_skip) AS BIGINT) AS value \
                 FROM statuses s JOIN testruns r ON r.id = s.test_run_id {BUILD_JOINS} \
                 WHERE s.suite_id IS NULL AND r.environment_id = "
            ));
            sql.bind(*environment);
            self.runs_in_range(&mut sql);
            sql.push(
                " AND s.tests_pass + s.tests_fail + s.tests_xfail + s.tests_skip > 0 \
                 GROUP BY b.id, b.datetime, b.version, a.description ORDER BY b.datetime, b.id",
            );
            let points: Vec<PercentPoint> = self.store.fetch_all(&sql).await?;
            let points = points.into_iter().map(|p| json!([p.datetime.timestamp(), p.value, p.version, p.annotation]));
            series.insert(slug.clone(), Value::Array(points.collect()));
        }
        Ok(series)
    }

    /// Each build's metrics summary, per environment.
    async fn summary(&self) -> Result<Map<String, Value>, ApiError> {
        let mut series = Map::new();
        for (environment, slug) in &self.environments {
            let mut sql = Sql::new(
                "SELECT b.datetime, b.version, COALESCE(a.description, '') AS annotation, s.metrics_summary AS value \
                 FROM build_summaries s JOIN builds b ON b.id = s.build_id \
                 LEFT JOIN annotations a ON a.build_id = b.id WHERE s.metrics_summary > 0 AND s.environment_id = ",
            );
            sql.bind(*environment).push(" AND b.created_at BETWEEN ").bind(self.start);
            sql.push(" AND ").bind(self.end).push(" ORDER BY b.datetime, b.id");
            let points: Vec<BuildPoint> = self.store.fetch_all(&sql).await?;
            let points = points.into_iter().map(|p| json!([p.datetime.timestamp(), p.value, p.version, p.annotation]));
            series.insert(slug.clone(), Value::Array(points.collect()));
        }
        Ok(series)
    }

    /// The geometric mean of the measurements of `metrics` (outliers left
    /// out) in each build, per environment that has any.
    async fn dynamic_summary(&self, metrics: &[&str]) -> Result<Map<String, Value>, ApiError> {
        let mut series = Map::new();
        if metrics.is_empty() || self.environments.is_empty() {
            for (_, slug) in &self.environments {
                series.insert(slug.clone(), json!([]));
            }
            return Ok(series);
        }
        let mut sql = Sql::new(&format!(
            "SELECT x.environment_id, x.build_id, b.datetime, b.version, COALESCE(a.description, '') AS annotation, \
             x.measurements, x.is_outlier FROM metrics x JOIN testruns r ON r.id = x.test_run_id {BUILD_JOINS} \
             WHERE x.environment_id IN "
        ));
        sql.bind_list(self.environments.iter().map(|(id, _)| SqlValue::Int(*id)));
        self.runs_in_range(&mut sql);
        sql.push(" AND x.metadata_id IN (SELECT id FROM suite_metadata WHERE ");
        for (i, metric) in metrics.iter().enumerate() {
            let (suite, name) = parse_name(metric);
            sql.push(if i == 0 { "(suite = " } else { " OR (suite = " }).bind(suite).push(" AND name = ").bind(name);
            sql.push(")");
        }
        sql.push(") ORDER BY x.environment_id, x.build_id");
        let rows: Vec<DynamicPoint> = self.store.fetch_all(&sql).await?;
        for environment in rows.chunk_by(|a, b| a.environment_id == b.environment_id) {
            let mut points: Vec<(f64, Value)> = environment
                .chunk_by(|a, b| a.build_id == b.build_id)
                .map(|build| {
                    let mut mean = Geomean::default();
                    for row in build.iter().filter(|r| !r.is_outlier) {
                        parse_measurements(&row.measurements).into_iter().for_each(|v| mean.add(v));
                    }
                    let value = if mean == Geomean::default() { json!(0) } else { json!(mean.value()) };
                    let p = &build[0];
                    let timestamp = p.datetime.timestamp_micros() as f64 / 1e6;
                    (timestamp, json!([timestamp, value, p.version, p.annotation]))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let slug = self.environments.iter().find(|(id, _)| *id == environment[0].environment_id);
            if let Some((_, slug)) = slug {
                series.insert(slug.clone(), Value::Array(points.into_iter().map(|(_, p)| p).collect()));
            }
        }
        Ok(series)
    }
}

/// A `MM-DD-YYYY` date parameter, as midnight UTC.
fn date(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match raw.filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(raw) => NaiveDate::parse_from_str(raw, "%m-%d-%Y")
            .map(|d| Some(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()))
            .map_err(|_| ApiError::bad_request(format!("Invalid {name} format: {raw}. Try using %m-%d-%Y notation."))),
    }
}

/// Every metric of the project, by full name, in suite then name order.
async fn project_metrics(store: &Store, project_id: i64) -> Result<Vec<String>, ApiError> {
    let mut sql = Sql::new(
        "SELECT m.suite, m.name FROM suite_metadata m WHERE m.kind = 'metric' \
         AND m.suite IN (SELECT slug FROM suites WHERE project_id = ",
    );
    sql.bind(project_id).push(
        ") AND EXISTS (SELECT 1 FROM metrics x WHERE x.metadata_id = m.id \
         AND x.environment_id IN (SELECT id FROM environments WHERE project_id = ",
    );
    sql.bind(project_id).push(")) ORDER BY m.suite, m.name");
    let names: Vec<(String, String)> = store.fetch_all(&sql).await?;
    Ok(names.into_iter().map(|(suite, name)| join_name(&suite, &name)).collect())
}

/// A value as Python's `str` writes it, for the CSV.
fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => python_float(f),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A float as Python's `repr` writes it: the shortest digits that read
/// back the same, fixed notation between 1e-4 and 1e16 (with `.0` when
/// integral), else `1.5e-05` / `1e+16`.
fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan"
        } else if x > 0.0 {
            "inf"
        } else {
            "-inf"
        }
        .to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` has an integer exponent");
    let digits = mantissa.replace('.', "");
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            return format!("{sign}0.{}{digits}", "0".repeat((-exponent - 1) as usize));
        }
        let point = exponent as usize + 1;
        if digits.len() <= point {
            return format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()));
        }
        return format!("{sign}{}.{}", &digits[..point], &digits[point..]);
    }
    let mantissa = if digits.len() == 1 { digits } else { format!("{}.{}", &digits[..1], &digits[1..]) };
    format!("{sign}{mantissa}e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs())
}

/// SQUAD's CSV: one line per point, `"metric","environment",…`, every
/// field quoted as is.
fn csv(results: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    for (metric, series) in results {
        for (environment, points) in series.as_object().into_iter().flatten() {
            for point in points.as_array().into_iter().flatten() {
                let fields = [metric.clone(), environment.clone()]
                    .into_iter()
                    .chain(point.as_array().into_iter().flatten().map(python_str));
                lines.push(fields.map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(","));
            }
        }
    }
    lines.join("\n")
}

/// `GET /api/data/<group>/<project>/`.
pub(crate) async fn data(
    State(state): State<AppState>,
    Path((group, project)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = native_project(&state, &headers, &group, &project).await?;
    let params = form_urlencoded(query.as_deref().unwrap_or(""));
    let all = |name: &str| params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    let last = |name: &str| params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let format = last("format").unwrap_or("json");
    if format != "json" && format != "csv" {
        return Err(ApiError::bad_request(format!("Invalid format: {format}")));
    }
    let start = date("date_start", last("date_start"))?.unwrap_or(DateTime::UNIX_EPOCH);
    let end = date("date_end", last("date_end"))?.unwrap_or_else(Utc::now);
    let mut metrics: Vec<String> = all("metric").into_iter().map(str::to_string).collect();
    if metrics.is_empty() {
        metrics.push(TESTS.to_string());
        metrics.extend(project_metrics(&state.store, access.project.id).await?);
    }
    let slugs = all("environment");
    let mut environments = Vec::new();
    if !slugs.is_empty() {
        let mut sql = Sql::new("SELECT id, slug FROM environments WHERE project_id = ");
        sql.bind(access.project.id).push(" AND slug IN ").bind_list(slugs.iter().map(|s| SqlValue::from(*s)));
        sql.push(" ORDER BY id");
        environments = state.store.fetch_all(&sql).await?;
    }
    let q = Query { store: &state.store, environments, start, end };
    let real: Vec<&str> =
        metrics.iter().map(String::as_str).filter(|m| ![TESTS, SUMMARY, DYNAMIC_SUMMARY].contains(m)).collect();
    let mut results = Map::new();
    for metric in &metrics {
        let series = match metric.as_str() {
            TESTS => q.tests().await?,
            SUMMARY => q.summary().await?,
            DYNAMIC_SUMMARY => q.dynamic_summary(&real).await?,
            name => q.metric(name).await?,
        };
        results.insert(metric.clone(), Value::Object(series));
    }
    Ok(match format {
        "csv" => raw("text/csv; charset=utf-8", csv(&results)),
        _ => raw("application/json; charset=utf-8", Value::Object(results).to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_python_writes_them() {
        for (x, python) in [
            (100.0, "100.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e20, "1.2345e+20"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float(x), python, "{x}");
        }
    }

    #[test]
    fn csv_lines() {
        let results =
            json!({"s/m": {"x86": [[1700000000, 2.0, "v1", "", 7, "False", 1.0, 3.0]]}, ":tests:": {"x86": []}});
        assert_eq!(
            csv(results.as_object().unwrap()),
            r#""s/m","x86","1700000000","2.0","v1","","7","False","1.0","3.0""#
        );
    }

    #[test]
    fn dates_are_month_day_year() {
        let d = date("date_start", Some("02-29-2024")).unwrap().unwrap();
        assert_eq!(d.to_rfc3339(), "2024-02-29T00:00:00+00:00");
        assert_eq!(date("date_start", None).unwrap(), None);
        let e = date("date_end", Some("2024-02-29")).unwrap_err();
        assert!(e.detail.contains("Invalid date_end format: 2024-02-29"), "{}", e.detail);
    }
}
