//! The REST front-end (axum): routes of the V2 protocol and Triton's extensions, nothing else. A model named in
//! a path is checked by the `Target` extractor before any handler runs.
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::binary::{decode_request, encode_response, HEADER_LENGTH};
use super::Api;
use crate::admin::{Authorized, Caller};
use crate::error::{InferError, InferResult};
use crate::lifecycle::LoadRequest;
use crate::model_name::{ModelName, ModelRef};
use crate::repository::config::to_json;
use crate::repository::{LoadError, LoadFailure};
use crate::request::{Protocol, REQUEST_ID, ROUTING_KEY};
use crate::request_log;
use crate::request_trace::{TraceParent, TRACEPARENT, TRACESTATE};
use crate::traffic::TrafficPolicy;

#[derive(Deserialize)]
struct ModelPath {
    model: String,
    version: Option<String>,
}

/// The model (and version) a route's path names, checked.
struct Target(ModelRef);

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = InferError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, InferError> {
        let Path(p) = Path::<ModelPath>::from_request_parts(parts, state)
            .await
            .map_err(|e| InferError::invalid(e.body_text()))?;
        Ok(Target(ModelRef::parse(&p.model, p.version.as_deref())?))
    }
}

/// Who sent a request: its connection's peer and its `Authorization` header.
fn caller(parts: &Parts) -> Caller<'_> {
    Caller {
        peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        authorization: parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
    }
}

/// An admin route's request: its caller authorized before anything else of the request is read (the model
/// name included), then the model its path names, checked.
struct AdminTarget {
    by: Authorized,
    model: ModelName,
}

impl FromRequestParts<Api> for AdminTarget {
    type Rejection = InferError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, InferError> {
        let what = format!("{} {}", parts.method, parts.uri.path());
        let by = api.admin.authorize(&caller(parts), &what)?;
        let Target(m) = Target::from_request_parts(parts, api).await?;
        Ok(AdminTarget { by, model: m.name })
    }
}

pub fn router(api: Api, max_body_bytes: usize) -> Router {
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
        .route("/v2/models/{model}/drift", get(model_drift))
        .route("/v2/models/{model}/versions/{version}/drift", get(model_drift))
        .route("/v2/models/{model}/traffic", get(get_traffic).put(put_traffic))
        .route("/dashboard", super::dashboard::route(&api))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route("/v2/repository/models/{model}/unload", post(repository_unload))
        .merge(super::http_shared_memory::routes())
        .merge(super::http_trace::routes())
        .merge(super::http_logging::routes())
        .merge(super::openai::routes())
        .merge(super::tei::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}

fn status_only(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn live(State(api): State<Api>) -> StatusCode {
    status_only(api.serving.is_live())
}

async fn ready(State(api): State<Api>) -> StatusCode {
    status_only(api.serving.is_ready())
}

/// No route matched. A route that names a model with the name left empty (`/v2/models//infer`) is refused for
/// the name, as any other bad name is.
async fn not_found(uri: Uri) -> InferError {
    let empty_name = ["/v2/models//", "/v2/repository/models//"]
        .iter()
        .any(|prefix| uri.path().starts_with(prefix));
    match ModelName::parse("") {
        Err(e) if empty_name => e.into(),
        _ => InferError::NotFound("no such endpoint".into()),
    }
}

async fn server_metadata(State(api): State<Api>) -> Json<serde_json::Value> {
    Json(to_json(
        &api.serving.server_metadata(),
        "inference.ServerMetadataResponse",
    ))
}

async fn model_metadata(State(api): State<Api>, Target(m): Target) -> InferResult<Json<serde_json::Value>> {
    let md = api.serving.model_metadata(&m)?;
    Ok(Json(to_json(&md, "inference.ModelMetadataResponse")))
}

async fn model_ready(State(api): State<Api>, Target(m): Target) -> InferResult<StatusCode> {
    Ok(status_only(api.serving.model_ready(&m)?))
}

async fn model_config(State(api): State<Api>, Target(m): Target) -> InferResult<Json<serde_json::Value>> {
    let cfg = api.serving.model_config(&m)?;
    Ok(Json(to_json(&cfg, "inference.ModelConfig")))
}

async fn all_stats(State(api): State<Api>) -> InferResult<Json<serde_json::Value>> {
    Ok(Json(to_json(
        &api.serving.model_statistics(None)?,
        "inference.ModelStatisticsResponse",
    )))
}

async fn model_stats(State(api): State<Api>, Target(m): Target) -> InferResult<Json<serde_json::Value>> {
    let stats = api.serving.model_statistics(Some(&m))?;
    Ok(Json(to_json(&stats, "inference.ModelStatisticsResponse")))
}

async fn model_drift(State(api): State<Api>, Target(m): Target) -> InferResult<Json<serde_json::Value>> {
    Ok(Json(api.serving.drift(&m)?))
}

/// A body axum would not read: too large for `--http-max-body-bytes` (413), or unreadable.
fn body_error(rejection: BytesRejection) -> InferError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        InferError::TooLarge("the request body is larger than the server accepts (--http-max-body-bytes)".into())
    } else {
        InferError::invalid(format!("cannot read the request body: {}", rejection.body_text()))
    }
}

/// The headers an infer request reads, taken from the request without copying the whole header map.
struct InferHeaders {
    header_length: InferResult<Option<usize>>,
    request_id: Option<String>,
    routing_key: Option<String>,
    trace_parent: Option<TraceParent>,
}

impl<S: Send + Sync> FromRequestParts<S> for InferHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let header_length = match header(HEADER_LENGTH) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| InferError::invalid("Inference-Header-Content-Length must be a non-negative integer")),
        };
        Ok(Self {
            header_length,
            request_id: header(REQUEST_ID).map(str::to_string),
            routing_key: header(ROUTING_KEY).map(str::to_string),
            trace_parent: header(TRACEPARENT).and_then(|p| TraceParent::parse(p, header(TRACESTATE))),
        })
    }
}

async fn infer(
    State(api): State<Api>,
    Target(m): Target,
    headers: InferHeaders,
    body: Result<Bytes, BytesRejection>,
) -> InferResult<Response> {
    let model = m.name.clone();
    let header_length = headers.header_length;
    let mut decoded = body
        .map_err(body_error)
        .and_then(|body| header_length.and_then(|len| decode_request(m, &body, len)))
        .inspect_err(|e| request_log::undecodable(Protocol::Http, &model, headers.request_id.as_deref(), e))?;
    let request = &mut decoded.request;
    request.routing_key = headers.routing_key;
    if request.id.is_empty() {
        request.id = headers.request_id.unwrap_or_default();
    }
    request.trace_parent = headers.trace_parent;
    // A failed request's trace ends as it is dropped.
    let (response, trace) = api.serving.infer_traced(decoded.request).await;
    let response = response?;
    let (body, json_len) = encode_response(&response, &decoded.binary);
    if let Some(trace) = trace {
        trace.finish();
    }
    let mut resp = axum::body::Body::new(body).into_response();
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

async fn repository_index(State(api): State<Api>, body: Bytes) -> InferResult<Json<serde_json::Value>> {
    let ready = body_json(&body)?
        .get("ready")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    // Triton leaves empty fields out of each entry.
    let entries = api
        .admin
        .repository_index(ready)
        .await?
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

/// Triton's load parameters from a JSON body: `config` (a string holding JSON, or the object itself) and
/// `file:<version>/<name>` files, base64-encoded.
fn load_request(body: &Bytes) -> Result<LoadRequest, LoadError> {
    let body = body_json(body).map_err(|e| LoadError::Parameter(e.to_string()))?;
    let config = match body.pointer("/parameters/config") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(v @ serde_json::Value::Object(_)) => Some(v.to_string()),
        Some(_) => return Err(LoadError::Parameter("parameters.config must be a JSON string".into())),
    };
    let mut files = Vec::new();
    if let Some(params) = body.get("parameters").and_then(serde_json::Value::as_object) {
        for (key, value) in params {
            let Some(rel) = key.strip_prefix("file:") else { continue };
            let text = value
                .as_str()
                .ok_or_else(|| LoadError::Parameter(format!("parameter '{key}' must be a base64 string")))?;
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                .map_err(|e| LoadError::Parameter(format!("parameter '{key}' is not valid base64: {e}")))?;
            files.push((rel.to_string(), bytes));
        }
    }
    Ok(LoadRequest { config, files })
}

async fn repository_load(State(api): State<Api>, admin: AdminTarget, body: Bytes) -> InferResult<StatusCode> {
    let request = load_request(&body).map_err(|error| LoadFailure {
        model: admin.model.clone(),
        error,
    })?;
    api.admin.load(admin.by, &admin.model, request).await?;
    Ok(StatusCode::OK)
}

async fn repository_unload(State(api): State<Api>, admin: AdminTarget) -> InferResult<StatusCode> {
    api.admin.unload(admin.by, &admin.model).await?;
    Ok(StatusCode::OK)
}

async fn get_traffic(State(api): State<Api>, Target(m): Target) -> InferResult<Json<TrafficPolicy>> {
    Ok(Json(api.admin.traffic(&m.name)?))
}

async fn put_traffic(State(api): State<Api>, admin: AdminTarget, body: Bytes) -> InferResult<StatusCode> {
    let policy: TrafficPolicy =
        serde_json::from_slice(&body).map_err(|e| InferError::invalid(format!("invalid traffic policy: {e}")))?;
    api.admin.set_traffic(admin.by, &admin.model, policy).await?;
    Ok(StatusCode::OK)
}
