//! Who is calling: API tokens, and access to a project on SQUAD's terms.

use axum::http::HeaderMap;
use squadron_core::access::Caller;
use squadron_store::accounts::User;
use squadron_store::projects::Project;

use crate::error::ApiError;
use crate::AppState;

/// The longest token SQUAD's `Auth-Token` header is read as.
const TOKEN_LENGTH: usize = 40;

/// A token as the request presents it.
#[derive(Debug, PartialEq, Eq)]
enum Presented {
    None,
    Token(String),
    /// An `Authorization: Token` header without exactly one key.
    Malformed,
}

/// Reads the token: `Authorization: Token <key>` (the word `Token` in any
/// case, as `squad-client` sends `token`) or, on the native endpoints,
/// SQUAD's `Auth-Token: <key>`, which wins when both are present.
fn presented_token(headers: &HeaderMap, native: bool) -> Presented {
    if native {
        if let Some(key) = headers.get("auth-token").and_then(|v| v.to_str().ok()) {
            return Presented::Token(key.chars().take(TOKEN_LENGTH).collect());
        }
    }
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Presented::None;
    };
    let mut words = value.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(scheme), Some(key), None) if scheme.eq_ignore_ascii_case("token") => Presented::Token(key.to_string()),
        (Some(scheme), _, _) if scheme.eq_ignore_ascii_case("token") => Presented::Malformed,
        _ => Presented::None,
    }
}

/// The user of a native endpoint (`/api/submit`, …): as in SQUAD, a wrong
/// or unknown token makes the caller anonymous.
pub(crate) async fn native_user(state: &AppState, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
    match presented_token(headers, true) {
        Presented::Token(key) => Ok(state.store.user_by_token(&key).await?),
        Presented::None | Presented::Malformed => Ok(None),
    }
}

/// The user of a REST endpoint: a wrong token is refused with 403
/// `{"detail": "Invalid token."}`, as DRF does.
pub(crate) async fn rest_user(state: &AppState, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
    match presented_token(headers, false) {
        Presented::None => Ok(None),
        Presented::Malformed => Err(ApiError::forbidden("Invalid token header. No credentials provided.")),
        Presented::Token(key) => match state.store.user_by_token(&key).await? {
            Some(user) => Ok(Some(user)),
            None => Err(ApiError::forbidden("Invalid token.")),
        },
    }
}

/// What a caller may do with a group.
pub(crate) async fn caller_in(state: &AppState, user: Option<&User>, group_id: i64) -> Result<Caller, ApiError> {
    Ok(match user {
        None => Caller::default(),
        Some(user) => Caller {
            authenticated: true,
            superuser: user.is_superuser,
            role: state.store.role_in_group(user.id, group_id).await?,
        },
    })
}

/// A project reached through a native endpoint, and who reaches it.
pub(crate) struct ProjectAccess {
    pub project: Project,
    pub caller: Caller,
}

/// Finds `group/project` for a native endpoint, SQUAD's way: 404 for an
/// unknown group or project, 401 for a private project the caller may not
/// see (so its existence is not revealed).
pub(crate) async fn native_project(
    state: &AppState,
    headers: &HeaderMap,
    group_slug: &str,
    project_slug: &str,
) -> Result<ProjectAccess, ApiError> {
    let group = state
        .store
        .group_by_slug(group_slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("group {group_slug:?} not found")))?;
    let project = state
        .store
        .project_by_slug(group.id, project_slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("project {group_slug}/{project_slug} not found")))?;
    let user = native_user(state, headers).await?;
    let caller = caller_in(state, user.as_ref(), group.id).await?;
    if !caller.can_view(project.is_public) {
        return Err(ApiError::unauthorized(format!(
            "authentication needed: project {group_slug}/{project_slug} is private"
        )));
    }
    Ok(ProjectAccess { project, caller })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn token_headers() {
        let key = "a".repeat(40);
        let t = |p: Presented| p;
        assert_eq!(
            presented_token(&headers(&[("authorization", &format!("token {key}"))]), false),
            t(Presented::Token(key.clone()))
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", &format!("Token {key}"))]), true),
            Presented::Token(key.clone())
        );
        assert_eq!(presented_token(&headers(&[("authorization", "Basic xyz")]), false), Presented::None);
        assert_eq!(presented_token(&headers(&[("authorization", "Token")]), false), Presented::Malformed);
        assert_eq!(presented_token(&headers(&[("authorization", "Token a b")]), false), Presented::Malformed);
        let long = format!("{key}EXTRA");
        assert_eq!(presented_token(&headers(&[("auth-token", &long)]), true), Presented::Token(key.clone()));
        assert_eq!(
            presented_token(&headers(&[("auth-token", &long)]), false),
            Presented::None,
            "REST ignores Auth-Token"
        );
        let both = headers(&[("auth-token", "first"), ("authorization", "Token second")]);
        assert_eq!(presented_token(&both, true), Presented::Token("first".into()));
    }
}
