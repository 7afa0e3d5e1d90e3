//! `/api/testruns/` (with the files of a run) and `/api/statuses/`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use squadron_store::sql::{Sql, Value as SqlValue};

use super::builds::{check_visible, BUILD_FILTERS};
use super::context::encode;
use super::environments::ENVIRONMENT_FILTERS;
use super::filter::{field, relation, FilterSet, Filters, Kind, Lookup, EXACT, EXACT_IN, GT_LT, ORDERED};
use super::page::{fetch, id_cursor, keyed_by_id, Paging};
use super::suites::SUITE_FILTERS;
use super::{not_found, not_implemented, raw, time, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `TestRunFilter`.
pub(crate) static TESTRUN_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("id", "{p}id", Kind::Int, EXACT_IN),
        field("job_id", "{p}job_id", Kind::Text, &[Lookup::Exact, Lookup::In, Lookup::StartsWith]),
        field("job_status", "{p}job_status", Kind::Text, &[Lookup::Exact, Lookup::In, Lookup::StartsWith]),
        field("environment_id", "{p}environment_id", Kind::Int, EXACT_IN),
        field("data_processed", "{p}data_processed", Kind::Bool, EXACT),
        field("status_recorded", "{p}status_recorded", Kind::Bool, EXACT),
        field("created_at", "{p}created_at", Kind::Time, ORDERED),
        field("datetime", "{p}datetime", Kind::Time, ORDERED),
        field("completed", "{p}completed", Kind::Bool, EXACT),
    ],
    relations: &[
        relation("build", "{p}build_id", "builds", &BUILD_FILTERS),
        relation("environment", "{p}environment_id", "environments", &ENVIRONMENT_FILTERS),
    ],
    unsupported: &[],
};

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    build_id: i64,
    environment_id: i64,
    created_at: DateTime<Utc>,
    datetime: DateTime<Utc>,
    completed: bool,
    build_url: Option<String>,
    job_id: Option<String>,
    job_status: Option<String>,
    job_url: Option<String>,
    resubmit_url: Option<String>,
    data_processed: bool,
    status_recorded: bool,
    /// Tests counted in the run's total status row (NULL without one).
    tests_total: Option<i64>,
    has_metrics: Option<bool>,
}

keyed_by_id!(RunRow);

const SELECT: &str = "SELECT r.id, r.build_id, r.environment_id, r.created_at, r.datetime, r.completed, r.build_url, \
    r.job_id, r.job_status, r.job_url, r.resubmit_url, r.data_processed, r.status_recorded, \
    s.tests_pass + s.tests_fail + s.tests_xfail + s.tests_skip AS tests_total, s.has_metrics \
    FROM testruns r JOIN builds b ON b.id = r.build_id \
    LEFT JOIN statuses s ON s.test_run_id = r.id AND s.suite_id IS NULL";

#[derive(sqlx::FromRow)]
struct AttachmentRow {
    test_run_id: i64,
    filename: String,
    mimetype: String,
    length: i64,
}

/// The attachments of `runs`, by run.
async fn attachments(rest: &Rest, runs: &[RunRow]) -> Result<HashMap<i64, Vec<AttachmentRow>>, ApiError> {
    let mut by_run: HashMap<i64, Vec<AttachmentRow>> = HashMap::new();
    if runs.is_empty() {
        return Ok(by_run);
    }
    let mut sql = Sql::new("SELECT test_run_id, filename, mimetype, length FROM attachments WHERE test_run_id IN ");
    sql.bind_list(runs.iter().map(|r| SqlValue::Int(r.id))).push(" ORDER BY id");
    let rows: Vec<AttachmentRow> = rest.state.store.fetch_all(&sql).await?;
    for row in rows {
        by_run.entry(row.test_run_id).or_default().push(row);
    }
    Ok(by_run)
}

fn render(rest: &Rest, r: &RunRow, files: Option<&Vec<AttachmentRow>>) -> Value {
    let base = rest.api(&format!("testruns/{}/", r.id));
    let has_tests = r.tests_total.unwrap_or(0) > 0;
    let has_metrics = r.has_metrics.unwrap_or(false);
    let link = |what: &str, present: bool| if present { json!(format!("{base}{what}/")) } else { Value::Null };
    let attachments: Vec<Value> = files
        .into_iter()
        .flatten()
        .map(|a| {
            json!({
                "download_url": format!("{base}attachments/?filename={}", encode(&a.filename)),
                "filename": a.filename,
                "mimetype": a.mimetype,
                "length": a.length,
            })
        })
        .collect();
    let mut m = Map::new();
    m.insert("url".into(), json!(base));
    m.insert("id".into(), json!(r.id));
    m.insert("tests_file".into(), link("tests_file", has_tests));
    m.insert("metrics_file".into(), link("metrics_file", has_metrics));
    m.insert("metadata_file".into(), link("metadata_file", true));
    m.insert("log_file".into(), link("log_file", true));
    m.insert("tests".into(), link("tests", has_tests));
    m.insert("metrics".into(), link("metrics", has_metrics));
    m.insert("attachments".into(), Value::Array(attachments));
    m.insert("build".into(), json!(rest.api(&format!("builds/{}/", r.build_id))));
    m.insert("environment".into(), json!(rest.api(&format!("environments/{}/", r.environment_id))));
    m.insert("created_at".into(), time(&r.created_at));
    m.insert("completed".into(), json!(r.completed));
    m.insert("datetime".into(), time(&r.datetime));
    m.insert("build_url".into(), json!(r.build_url));
    m.insert("job_id".into(), json!(r.job_id));
    m.insert("job_status".into(), json!(r.job_status));
    m.insert("job_url".into(), json!(r.job_url));
    m.insert("resubmit_url".into(), json!(r.resubmit_url));
    m.insert("data_processed".into(), json!(r.data_processed));
    m.insert("status_recorded".into(), json!(r.status_recorded));
    rest.trim(m)
}

async fn list_where(rest: &Rest, mut conditions: Sql, paging: &Paging) -> Result<Json<Value>, ApiError> {
    rest.visible(&mut conditions, "b.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(&TESTRUN_FILTERS, "r.", &rest.params, &mut conditions)?;
    let page = fetch::<RunRow>(rest, SELECT, conditions, "r.id", paging).await?;
    let files = attachments(rest, &page.rows).await?;
    Ok(Json(page.into_json(|r| render(rest, r, files.get(&r.id)))))
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    list_where(&rest, Sql::new(" WHERE r.visible"), &id_cursor(&rest, "test runs")?).await
}

/// `/api/builds/<id>/testruns/`: newest first, limit/offset.
pub(crate) async fn build_testruns(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_visible(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE r.visible AND r.build_id = ");
    conditions.bind(id);
    list_where(&rest, conditions, &Paging::LimitOffset { default: "r.id DESC", fields: &[], search: &[] }).await
}

/// A visible test run the caller may see.
async fn one(rest: &Rest, id: i64) -> Result<RunRow, ApiError> {
    // Hidden runs (being ingested) are not there.
    rest.fetch_visible(SELECT, "r.visible AND r.id", id, "b.project_id").await
}

/// Checks that the run exists, is visible and the caller may see it.
pub(crate) async fn check_run(rest: &Rest, id: i64) -> Result<(), ApiError> {
    one(rest, id).await.map(|_| ())
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let run = one(&rest, id).await?;
    let files = attachments(&rest, std::slice::from_ref(&run)).await?;
    Ok(Json(render(&rest, &run, files.get(&run.id))))
}

#[derive(sqlx::FromRow)]
struct Files {
    metadata_file: Option<String>,
    tests_file: Option<String>,
    metrics_file: Option<String>,
    log_file: Option<String>,
}

async fn files(rest: &Rest, id: i64) -> Result<Files, ApiError> {
    check_run(rest, id).await?;
    let mut sql = Sql::new("SELECT metadata_file, tests_file, metrics_file, log_file FROM testruns WHERE id = ");
    sql.bind(id);
    rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)
}

/// A stored blob as a response body, streamed; nothing when there is none.
async fn blob(rest: &Rest, key: Option<&str>, content_type: &str) -> Result<Response, ApiError> {
    let Some(key) = key else { return Ok(raw(content_type, "")) };
    let file = rest.state.blobs.open_blob(key).map_err(|e| ApiError::internal(&e))?;
    let stream = file_stream(tokio::fs::File::from_std(file));
    Ok(raw(content_type, Body::from_stream(stream)))
}

/// Reads a file as a stream of chunks.
fn file_stream(file: tokio::fs::File) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

async fn tests_file(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let f = files(&rest, id).await?;
    blob(&rest, f.tests_file.as_deref(), "application/json").await
}

async fn metrics_file(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let f = files(&rest, id).await?;
    blob(&rest, f.metrics_file.as_deref(), "application/json").await
}

async fn log_file(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let f = files(&rest, id).await?;
    blob(&rest, f.log_file.as_deref(), "text/plain").await
}

/// The metadata as submitted; `None` without any, as SQUAD answers (and
/// squad-client expects).
async fn metadata_file(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let f = files(&rest, id).await?;
    Ok(raw("application/json", f.metadata_file.unwrap_or_else(|| "None".to_string())))
}

#[derive(sqlx::FromRow)]
struct AttachmentBlob {
    blob: String,
    mimetype: String,
}

/// `/api/testruns/<id>/attachments/?filename=`.
async fn attachment(rest: Rest, Path(id): Path<i64>) -> Result<Response, ApiError> {
    check_run(&rest, id).await?;
    let filename = rest.param("filename").ok_or_else(not_found)?.to_string();
    attachment_named(&rest, id, filename).await
}

/// SQUAD's page address of an attachment,
/// `/<group>/<project>/build/<version>/attachments/testrun/<id>/<filename>`:
/// what the tradefed plugin links the report's stylesheet, CSS and logo
/// with. The run must be of that build.
async fn page_attachment(
    rest: Rest,
    Path((group, project, version, id, filename)): Path<(String, String, String, i64, String)>,
) -> Result<Response, ApiError> {
    let run = one(&rest, id).await?;
    let mut place = Sql::new(
        "SELECT b.id FROM builds b JOIN projects p ON p.id = b.project_id JOIN groups g ON g.id = p.group_id \
         WHERE b.id = ",
    );
    place.bind(run.build_id).push(" AND b.version = ").bind(version);
    place.push(" AND p.slug = ").bind(project).push(" AND g.slug = ").bind(group);
    rest.state.store.fetch_optional::<(i64,)>(&place).await?.ok_or_else(not_found)?;
    attachment_named(&rest, id, filename).await
}

/// The newest attachment of run `id` called `filename`.
async fn attachment_named(rest: &Rest, id: i64, filename: String) -> Result<Response, ApiError> {
    let mut sql = Sql::new("SELECT blob, mimetype FROM attachments WHERE test_run_id = ");
    sql.bind(id).push(" AND filename = ").bind(filename).push(" ORDER BY id DESC");
    let found: AttachmentBlob = rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)?;
    blob(rest, Some(&found.blob), &found.mimetype).await
}

/// SQUAD's `StatusFilter`.
pub(crate) static STATUS_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("metrics_summary", "{p}metrics_summary", Kind::Float, GT_LT),
        field("tests_pass", "{p}tests_pass", Kind::Int, GT_LT),
        field("tests_fail", "{p}tests_fail", Kind::Int, GT_LT),
        field("tests_xfail", "{p}tests_xfail", Kind::Int, GT_LT),
        field("tests_skip", "{p}tests_skip", Kind::Int, GT_LT),
        field("has_metrics", "{p}has_metrics", Kind::Bool, EXACT),
        field("suite_id", "{p}suite_id", Kind::Int, &[Lookup::Exact, Lookup::In, Lookup::IsNull]),
        field("test_run_id", "{p}test_run_id", Kind::Int, EXACT_IN),
    ],
    relations: &[
        relation("test_run", "{p}test_run_id", "testruns", &TESTRUN_FILTERS),
        relation("suite", "{p}suite_id", "suites", &SUITE_FILTERS),
    ],
    unsupported: &[],
};

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: i64,
    test_run_id: i64,
    suite_id: Option<i64>,
    tests_pass: i64,
    tests_fail: i64,
    tests_xfail: i64,
    tests_skip: i64,
    metrics_summary: f64,
    has_metrics: bool,
}

keyed_by_id!(StatusRow);

const STATUS_SELECT: &str = "SELECT s.id, s.test_run_id, s.suite_id, s.tests_pass, s.tests_fail, s.tests_xfail, \
    s.tests_skip, s.metrics_summary, s.has_metrics FROM statuses s JOIN testruns r ON r.id = s.test_run_id AND r.visible \
    JOIN builds b ON b.id = r.build_id";

fn render_status(rest: &Rest, s: &StatusRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("statuses/{}/", s.id))));
    m.insert("id".into(), json!(s.id));
    m.insert("test_run".into(), json!(rest.api(&format!("testruns/{}/", s.test_run_id))));
    m.insert("suite".into(), json!(s.suite_id.map(|id| rest.api(&format!("suites/{id}/")))));
    m.insert("tests_pass".into(), json!(s.tests_pass));
    m.insert("tests_fail".into(), json!(s.tests_fail));
    m.insert("tests_xfail".into(), json!(s.tests_xfail));
    m.insert("tests_skip".into(), json!(s.tests_skip));
    m.insert("metrics_summary".into(), json!(s.metrics_summary));
    m.insert("has_metrics".into(), json!(s.has_metrics));
    rest.trim(m)
}

async fn statuses_where(rest: &Rest, mut conditions: Sql) -> Result<Json<Value>, ApiError> {
    rest.visible(&mut conditions, "b.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(&STATUS_FILTERS, "s.", &rest.params, &mut conditions)?;
    let page =
        fetch::<StatusRow>(rest, STATUS_SELECT, conditions, "s.id", &Paging::Cursor { descending: false }).await?;
    Ok(Json(page.into_json(|s| render_status(rest, s))))
}

async fn statuses(rest: Rest) -> Result<Json<Value>, ApiError> {
    statuses_where(&rest, Sql::new(" WHERE TRUE")).await
}

/// `/api/testruns/<id>/status/`.
async fn run_status(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_run(&rest, id).await?;
    let mut conditions = Sql::new(" WHERE s.test_run_id = ");
    conditions.bind(id);
    statuses_where(&rest, conditions).await
}

async fn status_detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let status: StatusRow = rest.fetch_visible(STATUS_SELECT, "s.id", id, "b.project_id").await?;
    Ok(Json(render_status(&rest, &status)))
}

pub(crate) fn routes() -> Router<AppState> {
    let pending = |what: &'static str| move || async move { not_implemented(what) };
    Router::new()
        .route("/api/testruns/", get(list).post(pending("creating test runs through REST (use /api/submit)")))
        .route(
            "/api/testruns/{id}/",
            get(detail)
                .patch(pending("changing test runs"))
                .put(pending("changing test runs"))
                .delete(pending("deleting test runs")),
        )
        .route("/api/testruns/{id}/tests/", get(super::tests::run_tests))
        .route("/api/testruns/{id}/metrics/", get(super::tests::run_metrics))
        .route("/api/testruns/{id}/status/", get(run_status))
        .route("/api/testruns/{id}/tests_file/", get(tests_file))
        .route("/api/testruns/{id}/metrics_file/", get(metrics_file))
        .route("/api/testruns/{id}/metadata_file/", get(metadata_file))
        .route("/api/testruns/{id}/log_file/", get(log_file))
        .route("/api/testruns/{id}/attachments/", get(attachment))
        .route("/{group}/{project}/build/{version}/attachments/testrun/{id}/{*filename}", get(page_attachment))
        .route("/api/statuses/", get(statuses))
        .route("/api/statuses/{id}/", get(status_detail))
}
