//! What every REST handler needs: the caller, the base of absolute URLs,
//! the query parameters, and which projects the caller may see.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};
use squadron_core::access::Caller;
use squadron_store::accounts::User;
use squadron_store::sql::{Row, Sql};

use crate::auth::{caller_in, rest_user};
use crate::error::ApiError;
use crate::AppState;

/// A REST request.
pub(crate) struct Rest {
    pub state: AppState,
    pub user: Option<User>,
    /// `scheme://host`, without a trailing slash.
    pub base: String,
    /// The request path, for pagination links.
    pub path: String,
    pub params: Vec<(String, String)>,
    /// The keys `?fields=` asks for, if it does.
    fields: Option<Vec<String>>,
    /// `base`, escaped for a JSON string.
    pub escaped_base: String,
}

impl FromRequestParts<AppState> for Rest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Rest, ApiError> {
        let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |o| &o.0);
        let params = uri.query().map(form_urlencoded).unwrap_or_default();
        let base = base_url(state.config.base_url.as_deref(), &parts.headers);
        let fields = params
            .iter()
            .rev()
            .find(|(k, _)| k == "fields")
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| v.split(',').map(|f| f.trim().to_string()).collect());
        let quoted = serde_json::to_string(&base).expect("a string serialises");
        Ok(Rest {
            user: rest_user(state, &parts.headers).await?,
            escaped_base: quoted[1..quoted.len() - 1].to_string(),
            base,
            fields,
            path: uri.path().to_string(),
            params,
            state: state.clone(),
        })
    }
}

/// Decodes a query string.
pub(crate) fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    let mut decoder = crate::urlencoded::Decoder::default();
    let mut events = Vec::new();
    decoder.feed(query.as_bytes(), &mut events);
    decoder.finish(&mut events);
    let mut pairs = Vec::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    for event in events {
        match event {
            crate::urlencoded::Event::Start(name) => current = Some((name, Vec::new())),
            crate::urlencoded::Event::Data(bytes) => {
                if let Some((_, value)) = current.as_mut() {
                    value.extend(bytes);
                }
            }
            crate::urlencoded::Event::End => {
                if let Some((name, value)) = current.take() {
                    pairs.push((name, String::from_utf8_lossy(&value).into_owned()));
                }
            }
        }
    }
    pairs
}

/// The base of absolute URLs: `SQUADRON_BASE_URL` when set, else the
/// scheme and host the client used (`X-Forwarded-Proto`, `X-Forwarded-Host`,
/// `Host`), as Django behind a proxy does.
fn base_url(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(base) = configured {
        return base.trim_end_matches('/').to_string();
    }
    let header = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or("").trim().to_string())
    };
    let scheme = header("x-forwarded-proto").filter(|s| !s.is_empty()).unwrap_or_else(|| "http".into());
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

impl Rest {
    /// The value of a query parameter (the last one given).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A boolean query parameter: false when absent or empty, a 400 naming
    /// it when it is neither true nor false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.param(name).map(str::trim) {
            None | Some("") => Ok(false),
            Some(raw) => super::filter::parse_bool(raw)
                .ok_or_else(|| ApiError::bad_request(format!("{name}: {raw:?} is not true or false"))),
        }
    }

    /// An absolute API URL: `api("builds/3/")`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/{path}", self.base)
    }

    /// An absolute URL of this request's path with other parameters.
    pub fn self_url(&self, params: &[(String, String)]) -> String {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        if query.is_empty() {
            format!("{}{}", self.base, self.path)
        } else {
            format!("{}{}?{}", self.base, self.path, query.join("&"))
        }
    }

    /// Appends ` AND <column> IN (projects the caller may see)`, unless the
    /// caller is a superuser (who sees all).
    pub fn visible(&self, sql: &mut Sql, project_column: &str) {
        match &self.user {
            Some(user) if user.is_superuser => {}
            Some(user) => {
                sql.push(&format!(
                    " AND {project_column} IN (SELECT id FROM projects WHERE is_public OR group_id IN \
                     (SELECT group_id FROM group_members WHERE user_id = "
                ))
                .bind(user.id)
                .push("))");
            }
            None => {
                sql.push(&format!(" AND {project_column} IN (SELECT id FROM projects WHERE is_public)"));
            }
        }
    }

    /// Checks that the caller is a superuser: what site-wide objects (the
    /// queue, email templates) need.
    pub fn require_superuser(&self) -> Result<(), ApiError> {
        match &self.user {
            Some(user) if user.is_superuser => Ok(()),
            Some(_) => Err(ApiError::forbidden("You do not have permission to perform this action.")),
            None => Err(ApiError::unauthorized("Authentication credentials were not provided.")),
        }
    }

    /// Checks that the caller administers the group (or is a superuser):
    /// what REST writes need.
    pub async fn require_admin(&self, group_id: i64) -> Result<(), ApiError> {
        self.require(group_id, Caller::can_write).await
    }

    /// Checks that the caller may submit results to the group's projects
    /// (or is a superuser).
    pub async fn require_submitter(&self, group_id: i64) -> Result<(), ApiError> {
        self.require(group_id, Caller::can_submit_results).await
    }

    /// Checks that the caller may manage the group's CI test jobs
    /// (privileged role, or a superuser).
    pub async fn require_privileged(&self, group_id: i64) -> Result<(), ApiError> {
        self.require(group_id, Caller::can_submit_testjobs).await
    }

    async fn require(&self, group_id: i64, allowed: fn(&Caller) -> bool) -> Result<(), ApiError> {
        if self.user.is_none() {
            return Err(ApiError::unauthorized("Authentication credentials were not provided."));
        }
        if !allowed(&caller_in(&self.state, self.user.as_ref(), group_id).await?) {
            return Err(ApiError::forbidden("You do not have permission to perform this action."));
        }
        Ok(())
    }

    /// The row of `select` whose `id_column` is `id`, if the caller may
    /// see its project (`project_column`); 404 otherwise.
    pub async fn fetch_visible<T: Row>(
        &self,
        select: &str,
        id_column: &str,
        id: i64,
        project_column: &str,
    ) -> Result<T, ApiError> {
        let mut sql = Sql::new(select);
        sql.push(&format!(" WHERE {id_column} = ")).bind(id);
        self.visible(&mut sql, project_column);
        self.state.store.fetch_optional(&sql).await?.ok_or_else(|| ApiError::not_found("Not found."))
    }

    /// Whether `?fields=` (if given) asks for `key`.
    pub fn wants(&self, key: &str) -> bool {
        self.fields.as_ref().is_none_or(|f| f.iter().any(|k| k == key))
    }

    /// Keeps only the keys listed in `?fields=`, if given.
    pub fn trim(&self, mut object: Map<String, Value>) -> Value {
        if self.fields.is_some() {
            object.retain(|k, _| self.wants(k));
        }
        Value::Object(object)
    }
}

/// What a query component keeps as it is: RFC 3986's unreserved characters.
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a query component.
pub(crate) fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let mut h = HeaderMap::new();
        assert_eq!(base_url(None, &h), "http://localhost");
        h.insert("host", "squad.example.com:8000".parse().unwrap());
        assert_eq!(base_url(None, &h), "http://squad.example.com:8000");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "qa.example.com, proxy".parse().unwrap());
        assert_eq!(base_url(None, &h), "https://qa.example.com");
        assert_eq!(base_url(Some("https://fixed.example/"), &h), "https://fixed.example");
    }

    #[test]
    fn queries() {
        assert_eq!(
            form_urlencoded("a=1&b=x%2By+z&fields=id,name"),
            vec![("a".into(), "1".into()), ("b".into(), "x+y z".into()), ("fields".into(), "id,name".into())]
        );
        assert_eq!(encode("a b/c=d"), "a%20b%2Fc%3Dd");
        assert_eq!(encode("-_.~é+"), "-_.~%C3%A9%2B");
    }
}
