//! Writes: forwarded to the site; on success the written entities are refreshed in the cache
//! so reads through the proxy see their own writes.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use sgcache::api3;

use super::api3::{note_site_answer, unreachable_response, Outcome};
use super::auth::credential_key;
use super::AppState;

pub async fn write(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    req: &api3::Request,
) -> Outcome {
    let key = credential_key(&req.auth);
    match state.site.post(path, headers, body).await {
        Ok(resp) => {
            note_site_answer(state, Some(&key), &resp);
            (resp.into_response(), "site", "write")
        }
        // Never retried or synthesised as 502/504: the write may have reached the site.
        Err(e) => (unreachable_response(state, &e.0), "error", "write"),
    }
}
