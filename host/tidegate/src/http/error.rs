//! Errors of the HTTP endpoint: `{"error": {"code", "message"}}` with the fitting status.
//!
//! `code` is the SQLSTATE when PostgreSQL or the broker reported one, else a `tidegate.*`
//! code. Internal failures say only that they happened; their detail goes to the log.

use super::wire::DbError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// SQLSTATE or `tidegate.*`.
    pub code: String,
    /// What went wrong, for the client.
    pub message: String,
    /// The input line (1-based) an ingest error is about.
    pub line: Option<u64>,
    /// The request body was not read to its end: the reply says `Connection: close` and the
    /// connection ends after it, since what follows on it is not the next request.
    pub close: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: &str) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            line: None,
            close: false,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: &str) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "tidegate.bad_request", message)
    }

    /// 401: no or wrong credentials.
    pub fn unauthorized() -> ApiError {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "28P01",
            "authentication required: Authorization: Bearer <token> or Basic",
        )
    }

    /// 403: the user may not use this endpoint.
    pub fn forbidden(message: &str) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "42501", message)
    }

    /// 404: no such table, row or route.
    pub fn not_found(message: &str) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "tidegate.not_found", message)
    }

    /// 405: the endpoint has no route for this method.
    pub fn method_not_allowed() -> ApiError {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "tidegate.method_not_allowed",
            "method not allowed on this endpoint",
        )
    }

    /// 405: a GET asked for a statement that is not provably read-only.
    pub fn read_only(message: &str) -> ApiError {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "25006", message)
    }

    /// 408: the request ran past `http.request_timeout`.
    pub fn timeout() -> ApiError {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "57014",
            "canceling statement due to request timeout",
        )
    }

    /// 413: the request or its JSON reply is over a limit.
    pub fn too_large(message: &str) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "54000", message)
    }

    /// 415: a body in a format the endpoint does not take.
    pub fn unsupported(message: &str) -> ApiError {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "tidegate.unsupported_media_type",
            message,
        )
    }

    /// 415: the body's Content-Type is missing or not one of `accepted`. Refused before the
    /// body is read, so the connection closes after the reply.
    pub fn unsupported_media_type(accepted: &[&str]) -> ApiError {
        let one_of = if accepted.len() > 1 { "one of " } else { "" };
        let mut e = Self::unsupported(&format!(
            "the body must be sent with Content-Type {one_of}{}",
            accepted.join(", ")
        ));
        e.close = true;
        e
    }

    /// 409: the request conflicts with the database's state.
    pub fn conflict(message: &str) -> ApiError {
        Self::new(StatusCode::CONFLICT, "tidegate.conflict", message)
    }

    /// 422: the request is well-formed but its content is not acceptable.
    pub fn unprocessable(message: &str) -> ApiError {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tidegate.invalid",
            message,
        )
    }

    /// 429: `http.max_concurrent` requests are already running.
    pub fn busy() -> ApiError {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "53300",
            "too many concurrent requests",
        )
    }

    /// 503: the database (or the broker) cannot serve now.
    pub fn unavailable(message: &str) -> ApiError {
        tracing::warn!(reason = message, "HTTP request failed: unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tidegate.unavailable",
            "the database is unavailable",
        )
    }

    /// 500: a broker fault; `detail` is logged, not sent.
    pub fn internal(detail: &str) -> ApiError {
        tracing::error!(detail, "HTTP request failed: internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tidegate.internal",
            "internal error",
        )
    }

    /// The reply for an error PostgreSQL or the broker's pipeline reported.
    pub fn from_db(e: &DbError) -> ApiError {
        let status = status_for(&e.code);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = %e.code, message = %e.message, "HTTP request failed in the database");
            return Self::new(status, &e.code, "internal error");
        }
        let mut message = e.message.clone();
        if let Some(d) = &e.detail {
            message.push_str(": ");
            message.push_str(d);
        }
        Self::new(status, &e.code, &message)
    }

    /// The body, as sent.
    pub fn body(&self) -> serde_json::Value {
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(line) = self.line {
            err["line"] = line.into();
        }
        serde_json::json!({ "error": err })
    }
}

/// The HTTP status for a SQLSTATE.
pub fn status_for(code: &str) -> StatusCode {
    let class = code.get(..2).unwrap_or("");
    match code {
        "42501" => return StatusCode::FORBIDDEN,
        "42P01" | "42883" | "3D000" | "3F000" => return StatusCode::NOT_FOUND,
        "23505" | "23503" | "23P01" | "40001" | "40P01" | "55P03" => return StatusCode::CONFLICT,
        "25006" => return StatusCode::METHOD_NOT_ALLOWED,
        "57014" => return StatusCode::REQUEST_TIMEOUT,
        "53300" => return StatusCode::TOO_MANY_REQUESTS,
        _ => {}
    }
    match class {
        "28" => StatusCode::UNAUTHORIZED,
        "22" | "23" => StatusCode::UNPROCESSABLE_ENTITY,
        "42" | "0A" | "P0" | "2B" | "25" | "26" | "34" => StatusCode::BAD_REQUEST,
        "54" => StatusCode::PAYLOAD_TOO_LARGE,
        "08" | "53" | "57" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // Bearer only: offering Basic makes a browser prompt for a password, remember it and
        // send it with cross-site requests too. Clients may still send Basic unasked.
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidegate\""),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_statuses() {
        for (code, status) in [
            ("42501", 403),
            ("42P01", 404),
            ("23505", 409),
            ("23502", 422),
            ("22P02", 422),
            ("42601", 400),
            ("28P01", 401),
            ("57014", 408),
            ("54000", 413),
            ("53300", 429),
            ("08006", 503),
            ("57P01", 503),
            ("XX000", 500),
        ] {
            assert_eq!(status_for(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let e = ApiError::from_db(&DbError {
            code: "XX000".into(),
            message: "could not read block 7 of relation base/5/1259".into(),
            detail: None,
            context: None,
        });
        assert_eq!(e.message, "internal error");
    }
}
