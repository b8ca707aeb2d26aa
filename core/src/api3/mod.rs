//! The API3 JSON protocol as `shotgun_api3` speaks it: the request envelope, the error body,
//! the filter tree and the `read` payload. Shared by the proxy and the test site.

mod error;
mod filter;
mod read;

pub use error::{is_error_body, Api3Error, ErrorCode};
pub use filter::{Condition, Filter, LogicalOperator};
pub use read::{Paging, PagingStyle, ReadRequest, ReturnOnly, Sort, SortDirection};

use serde_json::{Map, Value};

/// `{"method_name": "...", "params": [AUTH, PAYLOAD]}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method_name: String,
    /// The auth object; empty for `info`.
    pub auth: Map<String, Value>,
    /// The payload; `Null` when the client sent none (it omits falsy payloads).
    pub payload: Value,
}

impl Request {
    /// Parses a request body. Errors are API3 errors the client can show.
    pub fn parse(body: &[u8]) -> Result<Request, Api3Error> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Api3Error::bad_request(format!("request body is not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Request, Api3Error> {
        let Value::Object(mut body) = value else {
            return Err(Api3Error::bad_request("request body must be a JSON object"));
        };
        let method_name = match body.remove("method_name") {
            Some(Value::String(s)) => s,
            _ => return Err(Api3Error::bad_request("request has no method_name")),
        };
        let params = match body.remove("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(Api3Error::bad_request("params must be an array")),
        };
        if params.len() > 2 {
            return Err(Api3Error::bad_request("params has more than two elements"));
        }
        let mut params = params.into_iter();
        let auth = match params.next() {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Api3Error::bad_request(
                    "the first param must be the auth object",
                ))
            }
        };
        let payload = params.next().unwrap_or(Value::Null);
        Ok(Request {
            method_name,
            auth,
            payload,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut params = vec![Value::Object(self.auth.clone())];
        if !self.payload.is_null() {
            params.push(self.payload.clone());
        }
        serde_json::json!({"method_name": self.method_name, "params": params})
    }
}

/// Wraps a method result the way the site does: `{"results": ...}`.
pub fn results(value: Value) -> Value {
    serde_json::json!({ "results": value })
}

/// Keys of the auth object that are secrets; never logged.
pub const SECRET_AUTH_KEYS: &[&str] =
    &["script_key", "user_password", "session_token", "auth_token"];

/// The auth object with its secrets masked, for logs.
pub fn redacted_auth(auth: &Map<String, Value>) -> Map<String, Value> {
    auth.iter()
        .map(|(k, v)| {
            let v = if SECRET_AUTH_KEYS.contains(&k.as_str()) {
                Value::from("*****")
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_envelopes() {
        let r = Request::parse(br#"{"method_name":"info","params":[]}"#).unwrap();
        assert_eq!(r.method_name, "info");
        assert!(r.auth.is_empty() && r.payload.is_null());
        let r = Request::parse(
            br#"{"method_name":"read","params":[{"script_name":"a","script_key":"k"},{"type":"Shot"}]}"#,
        )
        .unwrap();
        assert_eq!(r.payload, json!({"type": "Shot"}));
        assert_eq!(redacted_auth(&r.auth)["script_key"], "*****");
        assert_eq!(Request::from_value(r.to_value()).unwrap(), r);
        assert!(Request::parse(b"[1]").is_err());
        assert!(Request::parse(b"{\"method_name\": 3}").is_err());
        assert!(Request::parse(b"not json").is_err());
    }
}
