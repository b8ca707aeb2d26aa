//! A minimal API3 client for what the cache asks the site itself: the schema. Authenticates
//! as the spec's script; the key never reaches a log line or an error message.

use serde_json::{json, Value};

use crate::api3::{is_error_body, Request};
use crate::schema::{SchemaError, SiteSchema};
use crate::spec::SiteConnection;

/// A failed call to the site.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot reach the site {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the site answered HTTP {status} to {method}")]
    Status { method: String, status: u16 },
    #[error("the site refused {method}: {message}")]
    Api { method: String, message: String },
    #[error("the site's answer to {method} is not JSON: {message}")]
    BadBody { method: String, message: String },
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Calls the site's `/api3/json` endpoint as a script.
pub struct SiteClient {
    http: reqwest::Client,
    conn: SiteConnection,
}

impl SiteClient {
    pub fn new(conn: SiteConnection) -> Result<SiteClient, SiteError> {
        let http = reqwest::Client::builder()
            .timeout(conn.timeout)
            .build()
            .map_err(|e| SiteError::Unreachable {
                url: conn.url.clone(),
                message: e.to_string(),
            })?;
        Ok(SiteClient { http, conn })
    }

    /// Calls `method` with `payload` (`Null` for none) and returns its `results`.
    pub async fn call(&self, method: &str, payload: Value) -> Result<Value, SiteError> {
        let auth = json!({"script_name": self.conn.script_name, "script_key": self.conn.api_key});
        let request = Request {
            method_name: method.into(),
            auth: auth.as_object().cloned().unwrap_or_default(),
            payload,
        };
        let url = format!("{}/api3/json", self.conn.url);
        let unreachable = |e: reqwest::Error| SiteError::Unreachable {
            url: self.conn.url.clone(),
            message: with_causes(&e.without_url()),
        };
        let response = self
            .http
            .post(&url)
            .json(&request.to_value())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(SiteError::Status {
                method: method.into(),
                status: status.as_u16(),
            });
        }
        let body: Value = response.json().await.map_err(|e| SiteError::BadBody {
            method: method.into(),
            message: e.without_url().to_string(),
        })?;
        if is_error_body(&body) {
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error");
            return Err(SiteError::Api {
                method: method.into(),
                message: message.to_string(),
            });
        }
        Ok(match body {
            Value::Object(mut m) if m.contains_key("results") => {
                m.remove("results").unwrap_or_default()
            }
            other => other,
        })
    }

    /// The site schema: `schema_read` and `schema_entity_read`.
    pub async fn schema(&self) -> Result<SiteSchema, SiteError> {
        // Neither answer needs the other: one round trip to the site, not two. Both are
        // awaited, so when both fail (a refused key) the error is always schema_read's.
        let (fields, entities) = tokio::join!(
            self.call("schema_read", Value::Null),
            self.call("schema_entity_read", Value::Null)
        );
        let (fields, entities) = (fields?, entities?);
        Ok(SiteSchema::from_api(&fields, Some(&entities))?)
    }
}

/// An error and its causes on one line: reqwest's own text ("error sending request") does not
/// say why (refused, unknown host, TLS).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
