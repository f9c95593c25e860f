//! The REST routes of Triton's shared memory extension: register, status and unregister of system shared memory
//! regions (`/v2/systemsharedmemory/...`), and the CUDA ones (`/v2/cudasharedmemory/...`), which this build
//! answers without CUDA IPC: no region is ever listed, and registering one is refused with the reason.
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Api;
use crate::error::{InferError, InferResult};

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/v2/systemsharedmemory/status", get(status_all))
        .route("/v2/systemsharedmemory/region/{name}/status", get(status_one))
        .route("/v2/systemsharedmemory/region/{name}/register", post(register))
        .route("/v2/systemsharedmemory/unregister", post(unregister_all))
        .route("/v2/systemsharedmemory/region/{name}/unregister", post(unregister_one))
        .route("/v2/cudasharedmemory/status", get(cuda_status_all))
        .route("/v2/cudasharedmemory/region/{name}/status", get(cuda_status_one))
        .route("/v2/cudasharedmemory/region/{name}/register", post(cuda_register))
        .route("/v2/cudasharedmemory/unregister", post(cuda_unregister))
        .route("/v2/cudasharedmemory/region/{name}/unregister", post(cuda_unregister))
}

fn status(api: &Api, name: Option<&str>) -> InferResult<Json<Value>> {
    let regions = api.serving.shared_memory().status(name)?;
    Ok(Json(Value::Array(
        regions
            .into_iter()
            .map(|r| json!({ "name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size }))
            .collect(),
    )))
}

async fn status_all(State(api): State<Api>) -> InferResult<Json<Value>> {
    status(&api, None)
}

async fn status_one(State(api): State<Api>, Path(name): Path<String>) -> InferResult<Json<Value>> {
    status(&api, Some(&name))
}

#[derive(Deserialize)]
struct RegisterJson {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

async fn register(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> InferResult<Json<Value>> {
    let r: RegisterJson = serde_json::from_slice(&body).map_err(|e| {
        InferError::invalid(format!(
            "failed to register shared memory region '{name}': the request body must be JSON \
             {{\"key\": string, \"offset\": number, \"byte_size\": number}}: {e}"
        ))
    })?;
    api.serving
        .shared_memory()
        .register(&name, &r.key, r.offset, r.byte_size)?;
    Ok(Json(json!({})))
}

async fn unregister_all(State(api): State<Api>) -> InferResult<Json<Value>> {
    api.serving.shared_memory().unregister(None)?;
    Ok(Json(json!({})))
}

async fn unregister_one(State(api): State<Api>, Path(name): Path<String>) -> InferResult<Json<Value>> {
    api.serving.shared_memory().unregister(Some(&name))?;
    Ok(Json(json!({})))
}

async fn cuda_status_all(State(api): State<Api>) -> InferResult<Json<Value>> {
    api.serving.shared_memory().cuda_status(None)?;
    Ok(Json(json!([])))
}

async fn cuda_status_one(State(api): State<Api>, Path(name): Path<String>) -> InferResult<Json<Value>> {
    api.serving.shared_memory().cuda_status(Some(&name))?;
    Ok(Json(json!([])))
}

async fn cuda_register(State(api): State<Api>, Path(name): Path<String>) -> InferResult<Json<Value>> {
    api.serving.shared_memory().cuda_register(&name)?;
    Ok(Json(json!({})))
}

/// Nothing is ever registered as CUDA shared memory, so there is nothing to unregister (as in Triton, an
/// unknown name is not an error).
async fn cuda_unregister() -> Json<Value> {
    Json(json!({}))
}
