//! Gerrit: a review on the patch set (`patch_id` is `change/patchset`,
//! `:`, `/` or `,` between them), over the REST API with basic auth or,
//! for an `ssh://` source, with `gerrit review` over SSH.

use serde_json::{json, Map, Value};
use tokio::process::Command;

use super::{answered, PatchBuild, Report, ReportError};

/// Gerrit's SSH port when the URL names none.
const SSH_PORT: u16 = 29418;

/// What Gerrit prefixes its JSON with.
const XSSI_PREFIX: &str = ")]}'";

fn parts(patch_id: &str) -> Result<(&str, &str), ReportError> {
    match patch_id.split([':', '/', ',']).collect::<Vec<_>>().as_slice() {
        [change, patchset] if !change.is_empty() && !patchset.is_empty() => Ok((change, patchset)),
        _ => Err(ReportError::Permanent(format!("patch id {patch_id:?} is not change/patchset"))),
    }
}

/// The review message, as SQUAD words it.
fn message(report: &Report<'_>) -> String {
    let build = report.build;
    let site = &report.cx.site;
    let stage = if report.finished { "finished" } else { "created" };
    let mut text = format!("Build {stage}: {} ({})", build.version, build.build_url(site));
    if let (Some(version), Some(url)) = (&build.baseline_version, build.baseline_url(site)) {
        text.push_str(&format!("\nBaseline: {version} ({url})"));
    }
    if report.finished {
        text.push('\n');
        text.push_str(&match build.tests_fail {
            Some(0) => "All tests passed".to_string(),
            Some(n) => format!("Some tests failed ({n})"),
            None => "An error occurred".to_string(),
        });
    }
    text
}

/// The labels of a finished build: `Code-Review: -1` on failure and none on
/// success, unless the project setting `plugins.gerrit.build_finished`
/// gives its own `success` or `error` labels.
fn labels(build: &PatchBuild) -> Map<String, Value> {
    let success = build.tests_fail == Some(0);
    let configured = build
        .setting("plugins")
        .and_then(|p| p.get("gerrit")?.get("build_finished")?.get(if success { "success" } else { "error" }).cloned());
    match configured {
        Some(Value::Object(labels)) => labels,
        _ if success => Map::new(),
        _ => Map::from_iter([("Code-Review".to_string(), json!("-1"))]),
    }
}

fn host(url: &reqwest::Url) -> Result<String, ReportError> {
    let host = url.host_str().ok_or_else(|| ReportError::Permanent(format!("no host in {url}")))?;
    Ok(match url.port() {
        Some(port) if url.scheme() != "ssh" => format!("{host}:{port}"),
        _ => host.to_string(),
    })
}

fn source_url(build: &PatchBuild) -> Result<reqwest::Url, ReportError> {
    build.url.parse().map_err(|e| ReportError::Permanent(format!("patch source URL {:?}: {e}", build.url)))
}

/// The change's page, from the project Gerrit says it belongs to (SQUAD's
/// `get_url`); none over SSH or if Gerrit does not answer.
pub(super) async fn patch_url(report: &Report<'_>) -> Option<String> {
    let build = report.build;
    let url = source_url(build).ok()?;
    if !url.scheme().starts_with("http") {
        return None;
    }
    let (change, patchset) = parts(&build.patch_id).ok()?;
    let base = format!("{}://{}", url.scheme(), host(&url).ok()?);
    let response = report
        .cx
        .http
        .get(format!("{base}/a/changes/{change}/"))
        .basic_auth(&build.username, build.password.as_deref())
        .send()
        .await
        .ok()?;
    let text = response.error_for_status().ok()?.text().await.ok()?;
    let details: Value = serde_json::from_str(text.trim_start_matches(XSSI_PREFIX).trim_start()).ok()?;
    let project = details.get("project")?.as_str()?;
    Some(format!("{base}/c/{project}/+/{change}/{patchset}"))
}

/// Posts the review.
pub(super) async fn report(report: &Report<'_>) -> Result<(), ReportError> {
    let build = report.build;
    let (change, patchset) = parts(&build.patch_id)?;
    let url = source_url(build)?;
    let message = message(report);
    let labels = if report.finished { labels(build) } else { Map::new() };
    if url.scheme() == "ssh" {
        return review_over_ssh(report, &url, change, patchset, &message, &labels).await;
    }
    let endpoint = format!("{}://{}/a/changes/{change}/revisions/{patchset}/review", url.scheme(), host(&url)?);
    let mut payload = json!({ "message": message });
    if report.finished {
        payload["labels"] = Value::Object(labels);
    }
    let request = report
        .cx
        .http
        .post(endpoint)
        .basic_auth(&build.username, build.password.as_deref())
        .header("Idempotency-Key", &report.key)
        .json(&payload);
    answered(request.send().await).await
}

/// `ssh -p PORT user@host 'gerrit review -m "…" change,patchset --label name=value'`,
/// host key checking off as SQUAD's; any output is a failure.
async fn review_over_ssh(
    report: &Report<'_>,
    url: &reqwest::Url,
    change: &str,
    patchset: &str,
    message: &str,
    labels: &Map<String, Value>,
) -> Result<(), ReportError> {
    let quoted = message.replace('\\', "\\\\").replace('"', "\\\"");
    let mut command = format!("gerrit review -m \"{quoted}\" {change},{patchset}");
    for (name, value) in labels {
        let value = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        command.push_str(&format!(" --label {}={value}", name.to_lowercase()));
    }
    let target = format!("{}@{}", report.build.username, host(url)?);
    let port = url.port().unwrap_or(SSH_PORT).to_string();
    let output = Command::new(&report.cx.ssh)
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR"])
        .args(["-p", &port, &target, &command])
        .output()
        .await
        .map_err(|e| ReportError::Transient(format!("cannot run {}: {e}", report.cx.ssh.display())))?;
    if output.status.success() && output.stdout.is_empty() && output.stderr.is_empty() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
        Err(ReportError::Transient(format!("gerrit review over ssh failed ({}): {said}", output.status)))
    }
}
