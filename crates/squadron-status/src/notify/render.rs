//! Rendering a report into an email: SQUAD's default subject, squadron's
//! default text and HTML bodies, or a custom template (SQUAD's
//! EmailTemplate, Jinja2, rendered with `minijinja` and SQUAD's context
//! keys).

use std::fmt;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Enumerator, Object, Value};
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use squadron_store::sql::Sql;
use squadron_store::Store;

use super::report::{BuildInfo, Exceeded, ProjectInfo, Report, Site, LISTED};
use crate::StatusError;

/// SQUAD's default subject.
const DEFAULT_SUBJECT: &str = "{{project}}: {{tests_total}} tests, {{tests_fail}} failed, {{tests_pass}} passed, \
                               {{tests_skip}} skipped (build {{build}})";

/// Bodies larger than this are replaced by a link (SMTP servers refuse
/// big messages; SQUAD's limit).
pub const LARGEST_BODY: usize = 1024 * 1024;

/// A custom template (SQUAD's EmailTemplate).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailTemplate {
    /// Its id.
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// The subject template (one line); empty or absent: the default.
    pub subject: Option<String>,
    /// The text body template.
    pub plain_text: String,
    /// The HTML body template; absent: text only.
    pub html: Option<String>,
}

impl EmailTemplate {
    /// The template with this id.
    pub async fn load(store: &Store, id: i64) -> Result<EmailTemplate, StatusError> {
        let mut sql = Sql::new("SELECT id, name, subject, plain_text, html FROM email_templates WHERE id = ");
        sql.bind(id);
        store.fetch_optional(&sql).await?.ok_or(StatusError::NoSuchTemplate(id))
    }

    /// Checks that each part parses; the error names the part and line.
    pub fn validate(subject: Option<&str>, plain_text: &str, html: Option<&str>) -> Result<(), StatusError> {
        let env = environment();
        for (part, text) in [("subject", subject), ("plain_text", Some(plain_text)), ("html", html)] {
            if let Some(text) = text {
                env.template_from_str(text).map_err(|e| template_error(part, &e))?;
            }
        }
        Ok(())
    }
}

/// Which template renders a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The project's own, or the default.
    Project,
    /// The default, whatever the project's.
    Default,
    /// This EmailTemplate.
    Custom(i64),
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The text body.
    pub text: String,
    /// The HTML body, when the project sends HTML.
    pub html: Option<String>,
}

impl Rendered {
    /// Replaces bodies over [`LARGEST_BODY`] by a link to the build's
    /// report, which renders the same email on demand.
    pub fn bounded(mut self, site: &Site, build_id: i64) -> Rendered {
        let too_big = self.text.len() > LARGEST_BODY || self.html.as_ref().is_some_and(|h| h.len() > LARGEST_BODY);
        if too_big {
            tracing::warn!(build = build_id, bytes = self.text.len(), "notification larger than 1 MB, sent as a link");
            self.text = format!(
                "The email got too big (> 1MB), please visit {}/api/builds/{build_id}/email/?keep=7",
                site.base_url
            );
            self.html = self.html.map(|_| format!("<html><body>{}</body></html>", self.text));
        }
        self
    }

    /// The moderation copy: `[PREVIEW]` subject and a banner saying it
    /// awaits approval.
    pub fn preview(self, report: &Report, site: &Site) -> Result<Rendered, StatusError> {
        let env = environment();
        let cx =
            context! { project => project_value(&report.project), build => &report.build, settings => settings(site) };
        let text_banner = env.get_template("moderation.txt").and_then(|t| t.render(&cx));
        let text_banner = text_banner.map_err(|e| template_error("moderation banner", &e))?;
        let html = match self.html {
            Some(html) => {
                let banner = env.get_template("moderation.html").and_then(|t| t.render(&cx));
                let banner = banner.map_err(|e| template_error("moderation banner", &e))?;
                Some(match html.find("<body>") {
                    Some(at) => format!("{}\n{banner}{}", &html[..at + 6], &html[at + 6..]),
                    None => format!("{banner}{html}"),
                })
            }
            None => None,
        };
        Ok(Rendered {
            subject: format!("[PREVIEW] {}", self.subject),
            text: format!("{text_banner}{}", self.text),
            html,
        })
    }
}

/// A failed CI job, as the admins' email lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FailedJob {
    /// The job's id in its backend.
    pub job_id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Its environment.
    pub environment: String,
    /// Its backend status.
    pub job_status: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// Renders the email of `report` with the chosen template.
pub async fn render(
    store: &Store,
    site: &Site,
    report: &Report,
    choice: TemplateChoice,
) -> Result<Rendered, StatusError> {
    let custom = match (choice, report.project_template_id) {
        (TemplateChoice::Custom(id), _) | (TemplateChoice::Project, Some(id)) => {
            Some(EmailTemplate::load(store, id).await?)
        }
        _ => None,
    };
    let env = environment();
    let subject_template = custom.as_ref().and_then(|t| t.subject.as_deref()).filter(|s| !s.trim().is_empty());
    let subject = env
        .render_str(subject_template.unwrap_or(DEFAULT_SUBJECT), subject_context(report))
        .map_err(|e| template_error("subject", &e))?;
    let subject = subject.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    let cx = body_context(report, site);
    let (text, html) = match &custom {
        Some(t) => {
            let text = env.render_str(&t.plain_text, &cx).map_err(|e| template_error("plain_text", &e))?;
            let html = match t.html.as_deref().filter(|h| report.html_mail && !h.trim().is_empty()) {
                Some(h) => Some(render_html(env, h, &cx)?),
                None => None,
            };
            (text, html)
        }
        None => {
            let text = env.get_template("build.txt").and_then(|t| t.render(&cx));
            let text = text.map_err(|e| template_error("plain_text", &e))?;
            let html = if report.html_mail {
                let html = env.get_template("build.html").and_then(|t| t.render(&cx));
                Some(html.map_err(|e| template_error("html", &e))?)
            } else {
                None
            };
            (text, html)
        }
    };
    Ok(Rendered { subject, text, html })
}

/// The admins' email about a build's failed CI jobs (SQUAD's subject).
pub fn render_failed_jobs(report: &Report, site: &Site, jobs: &[FailedJob]) -> Result<Rendered, StatusError> {
    let env = environment();
    let cx = context! {
        project => project_value(&report.project),
        build => &report.build,
        test_jobs => jobs,
        count => jobs.len(),
        settings => settings(site),
    };
    let text = env.get_template("failed_jobs.txt").and_then(|t| t.render(&cx));
    let text = text.map_err(|e| template_error("failed test jobs", &e))?;
    let html = if report.html_mail {
        let html = env.get_template("failed_jobs.html").and_then(|t| t.render(&cx));
        Some(html.map_err(|e| template_error("failed test jobs", &e))?)
    } else {
        None
    };
    let subject =
        format!("{}: FAILED TEST JOBS ({}) -- {}", report.build.version, jobs.len(), report.project.full_name);
    Ok(Rendered { subject, text, html })
}

fn render_html(env: &Environment<'static>, source: &str, cx: &Value) -> Result<String, StatusError> {
    let template = env.template_from_named_str("custom.html", source).map_err(|e| template_error("html", &e))?;
    template.render(cx).map_err(|e| template_error("html", &e))
}

fn template_error(part: &str, error: &minijinja::Error) -> StatusError {
    let line = error.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    StatusError::Template(format!("{part}{line}: {error}"))
}

/// The shared environment with the default templates; `.html` templates
/// escape what they show.
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // As Jinja2: a missing attribute of something missing is missing
        // too, not an error.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        // HTML escapes what HTML needs (minijinja also escapes `/`, which
        // makes every URL and test name unreadable in the source).
        env.set_formatter(|out, state, value| {
            if state.auto_escape() == AutoEscape::Html && !value.is_safe() && !value.is_none() {
                let text = value.to_string();
                let escaped = text
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
                    .replace('\'', "&#39;");
                out.write_str(&escaped).map_err(minijinja::Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
        for (name, source) in [
            ("build.txt", include_str!("templates/build.txt.jinja")),
            ("build.html", include_str!("templates/build.html.jinja")),
            ("moderation.txt", include_str!("templates/moderation.txt.jinja")),
            ("moderation.html", include_str!("templates/moderation.html.jinja")),
            ("failed_jobs.txt", include_str!("templates/failed_jobs.txt.jinja")),
            ("failed_jobs.html", include_str!("templates/failed_jobs.html.jinja")),
        ] {
            env.add_template(name, source).expect("the default templates parse");
        }
        env
    })
}

/// An object shown as a text (as a Django model's `__str__`) whose fields
/// can still be read.
#[derive(Debug)]
struct Shown {
    text: String,
    fields: Value,
}

impl Object for Shown {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.fields.get_item(key).ok().filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.fields.try_iter() {
            Ok(keys) => Enumerator::Values(keys.collect()),
            Err(_) => Enumerator::Empty,
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The project: `{{ project }}` shows `group/project`.
fn project_value(project: &ProjectInfo) -> Value {
    Value::from_object(Shown { text: project.full_name.clone(), fields: Value::from_serialize(project) })
}

/// A build: `{{ build }}` shows its version.
fn build_value(build: &BuildInfo, project: &ProjectInfo) -> Value {
    let fields = context! { id => build.id, version => &build.version, datetime => build.datetime.to_rfc3339(),
    url => &build.url, project => project_value(project) };
    Value::from_object(Shown { text: build.version.clone(), fields })
}

fn settings(site: &Site) -> Value {
    context! { BASE_URL => &site.base_url, SITE_NAME => &site.name }
}

/// SQUAD's subject context.
fn subject_context(report: &Report) -> Value {
    let s = &report.summary;
    context! {
        build => &report.build.version,
        important_metadata => &report.important_metadata,
        metadata => &report.metadata,
        project => project_value(&report.project),
        regressions => report.changes.regressions.values().map(Vec::len).sum::<usize>(),
        tests_fail => s.tests_fail,
        tests_pass => s.tests_pass,
        tests_total => s.tests_total,
        tests_skip => s.tests_skip,
    }
}

/// A threshold and its metric, as SQUAD's templates index them.
fn threshold_pair(e: &Exceeded) -> Value {
    let threshold = context! { name => &e.threshold_name, value => e.threshold,
    is_higher_better => e.is_higher_better, environment => context! { slug => &e.environment } };
    let metric = context! { name => &e.name, result => e.result };
    Value::from(vec![threshold, metric])
}

/// SQUAD's body context, plus the metric changes.
fn body_context(report: &Report, site: &Site) -> Value {
    let build = build_value(&report.build, &report.project);
    let previous = report.previous_build.as_ref().map_or(Value::UNDEFINED, |b| build_value(b, &report.project));
    context! {
        build => &build,
        project => project_value(&report.project),
        important_metadata => &report.important_metadata,
        metadata => &report.metadata,
        notification => context! { project => project_value(&report.project), build => &build, previous_build => &previous },
        previous_build => &previous,
        regressions_grouped_by_suite => &report.changes.regressions_by_suite,
        fixes_grouped_by_suite => &report.changes.fixes_by_suite,
        regressions => &report.changes.regressions,
        fixes => &report.changes.fixes,
        metric_regressions => &report.metric_changes.regressions,
        metric_fixes => &report.metric_changes.fixes,
        known_issues => &report.known_issues,
        thresholds => report.thresholds.iter().map(threshold_pair).collect::<Vec<_>>(),
        settings => settings(site),
        summary => &report.summary,
        metrics => &report.metrics,
        listed_failures => LISTED.min(report.summary.failures_total),
    }
}
