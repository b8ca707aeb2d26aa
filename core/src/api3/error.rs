//! The API3 error body: HTTP 200 with `{"exception": true, "message": ..., "error_code": N}`.

use serde_json::{json, Value};

/// Error codes. Only 102/106/108/110 mean something to the client; the others are ours and
/// only distinguish kinds of failure in logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Generic fault (bad request, invalid filter, unknown field...).
    Fault,
    /// Bad credentials or expired session: the client raises `AuthenticationFault`.
    Authentication,
    /// The upstream site could not be reached.
    SiteUnavailable,
    /// An internal error of the cache (details are in its logs, never in the message).
    Internal,
}

impl ErrorCode {
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::Fault => 103,
            ErrorCode::Authentication => 102,
            ErrorCode::SiteUnavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// An error to send back in the API3 error format.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Api3Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Api3Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Api3Error {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Fault, message)
    }
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Authentication, message)
    }

    /// The JSON body the client expects.
    pub fn to_body(&self) -> Value {
        json!({"exception": true, "message": self.message, "error_code": self.code.code()})
    }
}

/// True when a response body is an API3 error (`exception` truthy).
pub fn is_error_body(body: &Value) -> bool {
    match body.get("exception") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(_) => true,
    }
}
