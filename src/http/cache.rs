//! `POST /api/cache/purge`: the explicit purge over plain HTTP, for deploy hooks and CMS webhooks.
//!
//! Body `{"tags": ["Post:7", "Post:list"]}` with an admin's bearer token; answers `{"purged": n}`, `purgeCache`'s count.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, header};
use serde::Deserialize;

use super::state::AppState;
use crate::error::AppError;
use crate::graphql::cache::check_purge_tags;

#[derive(Deserialize)]
pub struct PurgeBody {
    tags: Vec<String>,
}

pub async fn purge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PurgeBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let viewer = state.auth.viewer(authorization).await?;
    viewer.require_user()?;
    if !viewer.is_admin() {
        return Err(AppError::Forbidden(
            "Only admins may purge the cache.".into(),
        ));
    }
    let Json(body) = body.map_err(|e| {
        AppError::bad_input(format!(
            "The body must be JSON like {{\"tags\": [\"Post:7\"]}}: {}",
            e.body_text()
        ))
    })?;
    check_purge_tags(&body.tags)?;
    let tags: Vec<String> = body.tags.into_iter().map(|t| t.trim().to_owned()).collect();
    let purged = state.cache.purge(&tags).await?;
    Ok(Json(serde_json::json!({ "purged": purged })))
}
