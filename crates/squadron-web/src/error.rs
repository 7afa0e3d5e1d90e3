//! The API's error: a status code and a JSON `{"detail": …}` body, the
//! shape SQUAD and DRF use.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use squadron_store::StoreError;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person to read.
    pub detail: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError { status, detail: detail.into() }
    }

    /// 400: the request is wrong.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401: authentication needed (also hides private projects).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404: no such object.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 413: the upload is over the limit.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    /// 500: squadron failed; the cause is logged, not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "detail": self.detail }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::AlreadyExists(what) => ApiError::bad_request(format!("{what} already exists")),
            StoreError::Invalid(message) => ApiError::bad_request(message),
            other => ApiError::internal(&other),
        }
    }
}

impl From<squadron_ci::CiError> for ApiError {
    fn from(e: squadron_ci::CiError) -> Self {
        use squadron_ci::CiError;
        match e {
            CiError::Store(e) => e.into(),
            CiError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            CiError::Invalid(message) => ApiError::bad_request(message),
            other => ApiError::internal(&other),
        }
    }
}
