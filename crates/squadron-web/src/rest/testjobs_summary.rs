//! `/api/builds/<id>/testjobs_summary/`: how many of a build's CI test
//! jobs are in each `job_status`, for the whole build or, with
//! `?per_environment` (any value, as SQUAD only checks that it is there),
//! per environment.

use axum::extract::Path;
use axum::Json;
use serde_json::{json, Map, Value};
use squadron_store::sql::Sql;

use super::builds::check_visible;
use super::Rest;
use crate::error::ApiError;

#[derive(sqlx::FromRow)]
struct Count {
    environment: String,
    job_status: Option<String>,
    jobs: i64,
}

/// The key of a status as SQUAD's JSON has it: a job without a status
/// counts under `"null"`.
fn status_key(status: Option<String>) -> String {
    status.unwrap_or_else(|| "null".to_string())
}

/// `{"results": {status: count}}`, or `{"results": {environment: {status:
/// count}}}` per environment.
pub(crate) async fn summary(rest: Rest, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    check_visible(&rest, id).await?;
    let per_environment = rest.param("per_environment").is_some();
    let mut sql = Sql::new(if per_environment {
        "SELECT environment, job_status, COUNT(*) AS jobs FROM testjobs WHERE target_build_id = "
    } else {
        "SELECT '' AS environment, job_status, COUNT(*) AS jobs FROM testjobs WHERE target_build_id = "
    });
    sql.bind(id);
    sql.push(if per_environment {
        " GROUP BY environment, job_status ORDER BY environment, job_status"
    } else {
        " GROUP BY job_status ORDER BY job_status"
    });
    let counts: Vec<Count> = rest.state.store.fetch_all(&sql).await?;
    let mut results = Map::new();
    for c in counts {
        let (status, jobs) = (status_key(c.job_status), json!(c.jobs));
        if !per_environment {
            results.insert(status, jobs);
        } else if let Value::Object(by_status) = results.entry(c.environment).or_insert_with(|| json!({})) {
            by_status.insert(status, jobs);
        }
    }
    Ok(Json(json!({ "results": results })))
}
