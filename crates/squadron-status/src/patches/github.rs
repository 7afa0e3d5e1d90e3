//! GitHub: a commit status on the patch's commit (`patch_id` is
//! `owner/repository/commit`, `/` or `:` between them).

use serde_json::json;

use super::{answered, Report, ReportError};

/// SQUAD's status context.
const CONTEXT: &str = "continuous-integration/squad";

fn parts(patch_id: &str) -> Result<(&str, &str, &str), ReportError> {
    let parts: Vec<&str> = patch_id.split([':', '/']).collect();
    match parts.as_slice() {
        [owner, repository, commit] if !owner.is_empty() && !repository.is_empty() && !commit.is_empty() => {
            Ok((owner, repository, commit))
        }
        _ => Err(ReportError::Permanent(format!("patch id {patch_id:?} is not owner/repository/commit"))),
    }
}

fn api(report: &Report<'_>, path: &str) -> String {
    format!("{}{path}", report.build.url.trim_end_matches('/'))
}

/// The commit's API URL (SQUAD's `get_url`).
pub(super) fn patch_url(report: &Report<'_>) -> Result<String, ReportError> {
    let (owner, repository, commit) = parts(&report.build.patch_id)?;
    Ok(api(report, &format!("/repos/{owner}/{repository}/commits/{commit}")))
}

/// Posts the commit status: pending while testing; success if no test
/// failed, failure otherwise; error without a status.
pub(super) async fn report(report: &Report<'_>) -> Result<(), ReportError> {
    let (owner, repository, commit) = parts(&report.build.patch_id)?;
    let (state, description) = match (report.finished, report.build.tests_fail) {
        (false, _) => ("pending", "This build is being tested"),
        (true, Some(0)) => ("success", "All tests passed"),
        (true, Some(_)) => ("failure", "Some tests failed"),
        (true, None) => ("error", "An error occurred"),
    };
    let payload = json!({
        "state": state,
        "target_url": report.build.build_url(&report.cx.site),
        "description": description,
        "context": CONTEXT,
    });
    let url = api(report, &format!("/repos/{owner}/{repository}/statuses/{commit}"));
    let token = report.build.token.as_deref().unwrap_or_default();
    let request = report
        .cx
        .http
        .post(url)
        .header("Authorization", format!("token {token}"))
        .header("Idempotency-Key", &report.key)
        .json(&payload);
    answered(request.send().await).await
}
