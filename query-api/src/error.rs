//! The one error → HTTP status table of the query API, and the JSON body
//! shape each dialect's clients expect for it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use trailhouse_common::http::{retry_after, status_headers};

use crate::auth::AuthError;
use crate::store::StoreError;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("parameter {param}: {reason}")]
    BadParam { param: String, reason: String },
    #[error("not found")]
    NotFound,
    #[error("method not allowed; this API only reads (GET)")]
    MethodNotAllowed,
    #[error("the organisation's rate limit is spent; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("too many queries of this organisation are running; retry shortly")]
    OrgBusy,
    #[error("too many queries are running; retry shortly")]
    Overloaded,
    #[error(
        "the result is larger than the service allows; narrow the filter or lower the page size"
    )]
    ResultTooLarge(#[source] StoreError),
    #[error("the query ran longer than the service allows; narrow the filter or the time range")]
    QueryTimeout(#[source] StoreError),
    #[error("storage temporarily unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    pub fn bad(param: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::BadParam {
            param: param.into(),
            reason: reason.into(),
        }
    }

    /// The status table.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. } | ApiError::OrgBusy => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ResultTooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Overloaded | ApiError::QueryTimeout(_) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Our machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadParam { .. } => "invalid_parameter",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::OrgBusy => "org_busy",
            ApiError::Overloaded => "overloaded",
            ApiError::ResultTooLarge(_) => "result_too_large",
            ApiError::QueryTimeout(_) => "query_timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::BadParam { param, .. } => Some(param),
            _ => None,
        }
    }

    /// Attaches the body shape of a dialect.
    pub fn shaped(self, shape: Shape) -> Failure {
        Failure { shape, error: self }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable(e),
            StoreError::TooLarge(_) => ApiError::ResultTooLarge(e),
            StoreError::Timeout(_) => ApiError::QueryTimeout(e),
            StoreError::Query(_) => ApiError::Internal(e),
        }
    }
}

/// The error body shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error": {"code", "message", "parameter"?}}`: native, Atomic-style
    /// and organisation audit log.
    Native,
    /// Torq's gRPC-gateway shape: `{"code": <grpc code>, "message", "details": [...]}`.
    Torq,
    /// Zendesk's shape: `{"error": "<Title>", "description", "parameter"?}`.
    Zendesk,
}

/// An error together with the shape its body takes.
#[derive(Debug)]
pub struct Failure {
    pub shape: Shape,
    pub error: ApiError,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            shape: Shape::Native,
            error,
        }
    }
}

impl Failure {
    pub fn body(&self) -> Value {
        let e = &self.error;
        let message = e.to_string();
        match self.shape {
            Shape::Native => {
                let mut err = json!({"code": e.code(), "message": message});
                if let Some(p) = e.param() {
                    err["parameter"] = json!(p);
                }
                json!({ "error": err })
            }
            Shape::Torq => {
                // google.rpc.Code numbers, as grpc-gateway writes them.
                let code = match e {
                    ApiError::BadParam { .. } => 3,
                    ApiError::NotFound => 5,
                    ApiError::MethodNotAllowed => 12,
                    ApiError::RateLimited { .. }
                    | ApiError::OrgBusy
                    | ApiError::ResultTooLarge(_) => 8,
                    ApiError::QueryTimeout(_) => 4,
                    ApiError::Overloaded => 14,
                    ApiError::Forbidden(_) => 7,
                    ApiError::Unauthenticated(_) => 16,
                    ApiError::Unavailable(_) => 14,
                    ApiError::Internal(_) => 13,
                };
                let details = match e {
                    ApiError::BadParam { param, reason } => json!([{
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "field_violations": [{"field": param, "description": reason}],
                    }]),
                    _ => json!([]),
                };
                json!({"code": code, "message": message, "details": details})
            }
            Shape::Zendesk => {
                let title = match e {
                    ApiError::BadParam { param, .. } if param.starts_with("page") => {
                        "InvalidPaginationParameter"
                    }
                    ApiError::BadParam { .. } => "InvalidParameter",
                    ApiError::Unauthenticated(_) => "Couldn't authenticate you",
                    ApiError::Forbidden(_) => "Forbidden",
                    ApiError::NotFound => "RecordNotFound",
                    ApiError::MethodNotAllowed => "MethodNotAllowed",
                    ApiError::RateLimited { .. } | ApiError::OrgBusy => "TooManyRequests",
                    ApiError::ResultTooLarge(_) => "UnprocessableEntity",
                    ApiError::Overloaded | ApiError::QueryTimeout(_) => "ServiceUnavailable",
                    ApiError::Unavailable(_) => "ServiceUnavailable",
                    ApiError::Internal(_) => "InternalError",
                };
                let mut body = json!({"error": title, "description": message});
                if let Some(p) = e.param() {
                    body["parameter"] = json!(p);
                }
                body
            }
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.error.status();
        match &self.error {
            ApiError::Unavailable(e) | ApiError::Internal(e) => {
                tracing::error!(error = %e, "query failed")
            }
            ApiError::ResultTooLarge(e) | ApiError::QueryTimeout(e) => {
                tracing::warn!(error = %e, "query refused by its limits")
            }
            _ => {}
        }
        let mut resp = (status, Json(self.body())).into_response();
        status_headers(status, resp.headers_mut());
        if let ApiError::RateLimited { retry_after: secs } = &self.error {
            retry_after(resp.headers_mut(), *secs);
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Failure::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_names_the_parameter() {
        let e = || ApiError::bad("page_size", "must be 1 to 500");
        let torq = e().shaped(Shape::Torq).body();
        assert_eq!(torq["code"], 3);
        assert_eq!(
            torq["details"][0]["field_violations"][0]["field"],
            "page_size"
        );
        assert_eq!(
            e().shaped(Shape::Native).body()["error"]["parameter"],
            "page_size"
        );
        let z = e().shaped(Shape::Zendesk).body();
        assert_eq!(z["parameter"], "page_size");
        assert_eq!(z["error"], "InvalidPaginationParameter");
        let z = ApiError::bad("sort", "no").shaped(Shape::Zendesk).body();
        assert_eq!(z["error"], "InvalidParameter");
        assert_eq!(
            ApiError::Forbidden("no".into()).shaped(Shape::Torq).body()["code"],
            7
        );
    }

    #[test]
    fn responses_carry_the_headers_their_status_implies() {
        let resp = ApiError::Unauthenticated(AuthError::Missing).into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let down = ApiError::Unavailable(StoreError::Unavailable("x".into()));
        let resp = down.shaped(Shape::Torq).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        let resp = ApiError::NotFound.into_response();
        assert!(resp.headers().get("retry-after").is_none());
        // (error, status, code, retry-after)
        let cases = [
            (
                ApiError::RateLimited { retry_after: 7 },
                429,
                "rate_limited",
                Some("7"),
            ),
            (ApiError::OrgBusy, 429, "org_busy", Some("1")),
            (ApiError::Overloaded, 503, "overloaded", Some("1")),
            (
                ApiError::ResultTooLarge(StoreError::TooLarge("x".into())),
                422,
                "result_too_large",
                None,
            ),
            (
                ApiError::QueryTimeout(StoreError::Timeout("x".into())),
                503,
                "query_timeout",
                Some("1"),
            ),
        ];
        for (e, status, code, retry) in cases {
            assert_eq!(e.code(), code);
            let resp = e.into_response();
            assert_eq!(resp.status().as_u16(), status, "{code}");
            let got = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok());
            assert_eq!(got, retry, "{code}");
        }
        assert!(resp.headers().get("www-authenticate").is_none());
    }
}
