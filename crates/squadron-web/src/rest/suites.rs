//! `/api/suites/` and `/api/suitemetadata/` (the interned suite, test and
//! metric names).

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use squadron_store::sql::{Sql, Value as SqlValue};

use super::filter::{field, relation, FilterSet, Filters, Kind, EXACT_IN, TEXT};
use super::page::{fetch, keyed_by_id, Paging};
use super::projects::PROJECT_FILTERS;
use super::{not_found, not_implemented, Rest};
use crate::error::ApiError;
use crate::AppState;

/// SQUAD's `SuiteFilter`.
pub(crate) static SUITE_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("id", "{p}id", Kind::Int, EXACT_IN),
        field("name", "{p}name", Kind::Text, TEXT),
        field("slug", "{p}slug", Kind::Text, TEXT),
    ],
    relations: &[relation("project", "{p}project_id", "projects", &PROJECT_FILTERS)],
    unsupported: &[],
};

/// SQUAD's `SuiteMetadataFilter`.
pub(crate) static SUITE_METADATA_FILTERS: FilterSet = FilterSet {
    fields: &[
        field("id", "{p}id", Kind::Int, EXACT_IN),
        field("name", "{p}name", Kind::Text, TEXT),
        field("suite", "{p}suite", Kind::Text, TEXT),
        field("kind", "{p}kind", Kind::Text, TEXT),
    ],
    relations: &[],
    unsupported: &[],
};

#[derive(sqlx::FromRow)]
struct SuiteRow {
    id: i64,
    project_id: i64,
    slug: String,
    name: Option<String>,
}

keyed_by_id!(SuiteRow);

const SELECT: &str = "SELECT s.id, s.project_id, s.slug, s.name FROM suites s";

fn render(rest: &Rest, s: &SuiteRow) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(rest.api(&format!("suites/{}/", s.id))));
    m.insert("id".into(), json!(s.id));
    m.insert("project".into(), json!(rest.api(&format!("projects/{}/", s.project_id))));
    m.insert("slug".into(), json!(s.slug));
    m.insert("name".into(), json!(s.name));
    rest.trim(m)
}

async fn list(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    rest.visible(&mut conditions, "s.project_id");
    Filters { engine: rest.state.store.engine_name() }.apply(&SUITE_FILTERS, "s.", &rest.params, &mut conditions)?;
    let paging = Paging::LimitOffset { default: "s.id", fields: &[], search: &[] };
    let page = fetch::<SuiteRow>(&rest, SELECT, conditions, "s.id", &paging).await?;
    Ok(Json(page.into_json(|s| render(&rest, s))))
}

async fn one(rest: &Rest, id: i64) -> Result<SuiteRow, ApiError> {
    rest.fetch_visible(SELECT, "s.id", id, "s.project_id").await
}

/// Checks that the suite exists and the caller may see it.
pub(crate) async fn check_suite(rest: &Rest, id: i64) -> Result<(), ApiError> {
    one(rest, id).await.map(|_| ())
}

async fn detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    Ok(Json(render(&rest, &one(&rest, id).await?)))
}

/// An interned name.
#[derive(sqlx::FromRow)]
pub(crate) struct NameRow {
    id: i64,
    suite: String,
    kind: String,
    name: String,
    description: Option<String>,
    instructions_to_reproduce: Option<String>,
}

keyed_by_id!(NameRow);

/// Selects interned names (alias `m`).
pub(crate) const NAME_SELECT: &str =
    "SELECT m.id, m.suite, m.kind, m.name, m.description, m.instructions_to_reproduce FROM suite_metadata m";

/// `SuiteMetadata` as SQUAD shows it.
pub(crate) fn render_name(rest: &Rest, m: &NameRow) -> Value {
    let mut o = Map::new();
    o.insert("url".into(), json!(rest.api(&format!("suitemetadata/{}/", m.id))));
    o.insert("id".into(), json!(m.id));
    o.insert("suite".into(), json!(m.suite));
    o.insert("kind".into(), json!(m.kind));
    o.insert("name".into(), json!(m.name));
    o.insert("description".into(), json!(m.description));
    o.insert("instructions_to_reproduce".into(), json!(m.instructions_to_reproduce));
    rest.trim(o)
}

/// Names are global, but a name is shown only when a project the caller
/// may see uses it: a suite of the project, or a test or metric of one of
/// its builds (SQUAD shows them all).
fn visible_names(rest: &Rest, sql: &mut Sql) {
    let mut suites = Sql::new(" AND ((m.kind = 'suite' AND m.suite IN (SELECT su.slug FROM suites su WHERE TRUE");
    rest.visible(&mut suites, "su.project_id");
    sql.append(&suites).push("))");
    for (kind, table) in [("test", "tests"), ("metric", "metrics")] {
        let mut used = Sql::new(&format!(
            " OR (m.kind = '{kind}' AND EXISTS (SELECT 1 FROM {table} x JOIN builds xb ON xb.id = x.build_id WHERE x.metadata_id = m.id"
        ));
        rest.visible(&mut used, "xb.project_id");
        sql.append(&used).push("))");
    }
    sql.push(")");
}

/// `/api/suitemetadata/[?project=1,2]`.
async fn names(rest: Rest) -> Result<Json<Value>, ApiError> {
    let mut conditions = Sql::new(" WHERE TRUE");
    visible_names(&rest, &mut conditions);
    if let Some(projects) = rest.param("project") {
        let ids: Vec<SqlValue> =
            projects.split(',').filter_map(|p| p.trim().parse::<i64>().ok()).map(SqlValue::Int).collect();
        if !ids.is_empty() {
            conditions.push(" AND m.suite IN (SELECT slug FROM suites WHERE project_id IN ").bind_list(ids).push(")");
        }
    }
    Filters { engine: rest.state.store.engine_name() }.apply(
        &SUITE_METADATA_FILTERS,
        "m.",
        &rest.params,
        &mut conditions,
    )?;
    let page = fetch::<NameRow>(&rest, NAME_SELECT, conditions, "m.id", &Paging::Cursor { descending: false }).await?;
    Ok(Json(page.into_json(|m| render_name(&rest, m))))
}

async fn name_detail(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let mut sql = Sql::new(NAME_SELECT);
    sql.push(" WHERE m.id = ").bind(id);
    visible_names(&rest, &mut sql);
    let name: NameRow = rest.state.store.fetch_optional(&sql).await?.ok_or_else(not_found)?;
    Ok(Json(render_name(&rest, &name)))
}

pub(crate) fn routes() -> Router<AppState> {
    let pending = |what: &'static str| move || async move { not_implemented(what) };
    Router::new()
        .route("/api/suites/", get(list).post(pending("creating suites through REST")))
        .route(
            "/api/suites/{id}/",
            get(detail)
                .patch(pending("changing suites"))
                .put(pending("changing suites"))
                .delete(pending("deleting suites")),
        )
        .route("/api/suites/{id}/tests/", get(super::tests::suite_tests))
        .route("/api/suitemetadata/", get(names).post(pending("creating suite metadata through REST")))
        .route(
            "/api/suitemetadata/{id}/",
            get(name_detail)
                .patch(pending("changing suite metadata"))
                .put(pending("changing suite metadata"))
                .delete(pending("deleting suite metadata")),
        )
}
