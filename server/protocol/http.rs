//! The REST front-end (axum): routes of the V2 protocol and Triton's extensions, nothing else.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::binary::{decode_request, encode_response, HEADER_LENGTH};
use crate::core::Core;
use crate::error::{InferError, InferResult};
use crate::repository::config::to_json;
use crate::request::{Protocol, REQUEST_ID, ROUTING_KEY};
use crate::request_log;
use crate::traffic::TrafficPolicy;

#[derive(Deserialize)]
struct ModelPath {
    model: String,
    version: Option<String>,
}

pub fn router(core: Arc<Core>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(model_config))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route("/v2/models/{model}/versions/{version}/stats", get(model_stats))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer))
        .route("/v2/models/{model}/traffic", get(get_traffic).put(put_traffic))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route("/v2/repository/models/{model}/unload", post(repository_unload))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(core)
}

fn status_only(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn live(State(core): State<Arc<Core>>) -> StatusCode {
    status_only(core.is_live())
}

async fn ready(State(core): State<Arc<Core>>) -> StatusCode {
    status_only(core.is_ready())
}

async fn not_found() -> InferError {
    InferError::NotFound("no such endpoint".into())
}

async fn server_metadata(State(core): State<Arc<Core>>) -> Json<serde_json::Value> {
    Json(to_json(&core.server_metadata(), "inference.ServerMetadataResponse"))
}

async fn model_metadata(
    State(core): State<Arc<Core>>,
    Path(p): Path<ModelPath>,
) -> InferResult<Json<serde_json::Value>> {
    let md = core.model_metadata(&p.model, p.version.as_deref())?;
    Ok(Json(to_json(&md, "inference.ModelMetadataResponse")))
}

async fn model_ready(State(core): State<Arc<Core>>, Path(p): Path<ModelPath>) -> InferResult<StatusCode> {
    Ok(status_only(core.model_ready(&p.model, p.version.as_deref())?))
}

async fn model_config(State(core): State<Arc<Core>>, Path(p): Path<ModelPath>) -> InferResult<Json<serde_json::Value>> {
    let cfg = core.model_config(&p.model, p.version.as_deref())?;
    Ok(Json(to_json(&cfg, "inference.ModelConfig")))
}

async fn all_stats(State(core): State<Arc<Core>>) -> InferResult<Json<serde_json::Value>> {
    Ok(Json(to_json(
        &core.model_statistics("", None)?,
        "inference.ModelStatisticsResponse",
    )))
}

async fn model_stats(State(core): State<Arc<Core>>, Path(p): Path<ModelPath>) -> InferResult<Json<serde_json::Value>> {
    let stats = core.model_statistics(&p.model, p.version.as_deref())?;
    Ok(Json(to_json(&stats, "inference.ModelStatisticsResponse")))
}

/// A body axum would not read: too large for `--http-max-body-bytes` (413), or unreadable.
fn body_error(rejection: BytesRejection) -> InferError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        InferError::TooLarge("the request body is larger than the server accepts (--http-max-body-bytes)".into())
    } else {
        InferError::invalid(format!("cannot read the request body: {}", rejection.body_text()))
    }
}

async fn infer(
    State(core): State<Arc<Core>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> InferResult<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let header_length = match header(HEADER_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| InferError::invalid("Inference-Header-Content-Length must be a non-negative integer")),
    };
    let mut decoded = body
        .map_err(body_error)
        .and_then(|body| header_length.and_then(|len| decode_request(&body, len)))
        .inspect_err(|e| request_log::undecodable(Protocol::Http, &p.model, header(REQUEST_ID), e))?;
    let request = &mut decoded.request;
    request.model = p.model;
    request.version = p.version;
    request.routing_key = header(ROUTING_KEY).map(str::to_string);
    if request.id.is_empty() {
        request.id = header(REQUEST_ID).unwrap_or_default().to_string();
    }
    let response = core.infer(decoded.request).await?;
    let (body, json_len) = encode_response(&response, &decoded.binary, decoded.binary_default);
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    match json_len {
        Some(n) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(resp)
}

/// A repository request's optional JSON body (`{}` or nothing is the same as defaults).
fn body_json(body: &Bytes) -> InferResult<serde_json::Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_slice(body).map_err(|e| InferError::invalid(format!("failed to parse the request JSON: {e}")))
}

async fn repository_index(State(core): State<Arc<Core>>, body: Bytes) -> InferResult<Json<serde_json::Value>> {
    let ready = body_json(&body)?
        .get("ready")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    // Triton leaves empty fields out of each entry.
    let entries = core
        .repository_index(ready)?
        .into_iter()
        .map(|m| {
            let mut e = serde_json::json!({ "name": m.name, "state": m.state });
            if !m.version.is_empty() {
                e["version"] = m.version.into();
            }
            if !m.reason.is_empty() {
                e["reason"] = m.reason.into();
            }
            e
        })
        .collect();
    Ok(Json(serde_json::Value::Array(entries)))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

async fn repository_load(
    State(core): State<Arc<Core>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Bytes,
) -> InferResult<StatusCode> {
    core.authorize_admin(authorization(&headers))?;
    let body = body_json(&body)?;
    let config = match body.pointer("/parameters/config") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // Accept the config as a JSON object too, not only as a string holding JSON.
        Some(v @ serde_json::Value::Object(_)) => Some(v.to_string()),
        Some(_) => return Err(InferError::invalid("parameters.config must be a JSON string")),
    };
    // Triton's `file:<version>/<name>` parameters carry model files, base64-encoded in JSON.
    let mut files = Vec::new();
    if let Some(params) = body.get("parameters").and_then(serde_json::Value::as_object) {
        for (key, value) in params {
            let Some(rel) = key.strip_prefix("file:") else { continue };
            let text = value
                .as_str()
                .ok_or_else(|| InferError::invalid(format!("parameter '{key}' must be a base64 string")))?;
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                .map_err(|e| InferError::invalid(format!("parameter '{key}' is not valid base64: {e}")))?;
            files.push((rel.to_string(), bytes));
        }
    }
    core.load(&p.model, config.as_deref(), files).await?;
    Ok(StatusCode::OK)
}

async fn repository_unload(
    State(core): State<Arc<Core>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
) -> InferResult<StatusCode> {
    core.authorize_admin(authorization(&headers))?;
    core.unload(&p.model).await?;
    Ok(StatusCode::OK)
}

async fn get_traffic(State(core): State<Arc<Core>>, Path(p): Path<ModelPath>) -> InferResult<Json<TrafficPolicy>> {
    Ok(Json(core.traffic(&p.model)?))
}

async fn put_traffic(
    State(core): State<Arc<Core>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Bytes,
) -> InferResult<StatusCode> {
    core.authorize_admin(authorization(&headers))?;
    let policy: TrafficPolicy =
        serde_json::from_slice(&body).map_err(|e| InferError::invalid(format!("invalid traffic policy: {e}")))?;
    core.set_traffic(&p.model, policy).await?;
    Ok(StatusCode::OK)
}
